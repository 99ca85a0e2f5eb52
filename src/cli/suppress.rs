//! `veil suppress`: the token lines of identifiers, for a suppression topic
//! or file, so that no raw identifier has to be put on a topic.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::anyhow;
use veil::suppression::{Tokeniser, lines_for};

use super::{CliResult, Failure, io, print, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Key directory (`<key_id>.key` files).
    #[arg(
        long,
        value_name = "DIR",
        env = "VEIL_KEYS",
        required_unless_present = "config"
    )]
    keys: Option<PathBuf>,
    /// Take keys, `suppression.key` and the suppression topic from this
    /// pipeline config (instead of --keys and --key-id).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["keys", "key_id"])]
    config: Option<PathBuf>,
    /// Write the token lines to the config's suppression topic (a record
    /// each, the line as its key) instead of printing them.
    #[arg(long, requires = "config")]
    produce: bool,
    /// With --produce: take the identifiers off the list (a tombstone each).
    #[arg(long, requires = "produce")]
    remove: bool,
    /// Key the tokens are made with; default: the only key in the directory.
    /// veil checks each token under the key it names, so keep that key in
    /// the key directory for as long as the token is on the list.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// Identifiers to suppress (surrounding white space is not part of an
    /// identifier, as in a suppression file). Without any, they are read
    /// from stdin, one per line, `#` comments and blank lines ignored
    /// (which keeps them out of shell history and process lists).
    #[arg(value_name = "IDENTIFIER")]
    identifiers: Vec<String>,
}

pub fn run(args: Args) -> CliResult {
    let (ring, key_id, config) = match &args.config {
        Some(path) => {
            let config = veil::config::load(path).map_err(usage)?;
            let ring = veil::keys::load_dir(&config.keys.dir, config.keys.active.as_deref())
                .map_err(usage)?;
            let key_id = config.suppression.as_ref().and_then(|s| s.key.clone());
            (ring, key_id, Some(config))
        }
        None => {
            let dir = args.keys.clone().unwrap_or_default();
            let ring = veil::keys::load_dir(&dir, args.key_id.as_deref()).map_err(usage)?;
            (ring, None, None)
        }
    };
    super::warn_keys(&ring);
    let key = match &key_id {
        Some(id) => ring.get(id).ok_or_else(|| {
            usage(anyhow!(
                "suppression.key `{id}` is not in the key directory"
            ))
        })?,
        None => ring.active(),
    };
    let tokeniser = Tokeniser::new(key);
    let from_stdin;
    let identifiers: Vec<&str> = if args.identifiers.is_empty() {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(line.map_err(io)?);
        }
        from_stdin = lines;
        from_stdin
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    } else {
        args.identifiers
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .collect()
    };
    if identifiers.is_empty() {
        return Err(usage(anyhow!(
            "no identifiers (give them as arguments or on stdin)"
        )));
    }
    let lines: Vec<String> = identifiers
        .into_iter()
        .flat_map(|id| lines_for(&tokeniser, id))
        .collect();
    match config.filter(|_| args.produce) {
        Some(config) => produce(&config, &lines, !args.remove),
        None => {
            for line in lines {
                print(format_args!("{line}\n"))?;
            }
            Ok(())
        }
    }
}

/// Write `lines` to the config's suppression topic: a record each with the
/// line as its key, and a value to add it or none (a tombstone) to remove it.
fn produce(config: &veil::config::PipelineConfig, lines: &[String], add: bool) -> CliResult {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let veil::config::Pipeline::Kafka(kafka) = &config.pipeline else {
        return Err(usage(anyhow!(
            "--produce needs a config with a Kafka source"
        )));
    };
    let Some(topic) = config.suppression.as_ref().and_then(|s| s.topic.as_ref()) else {
        return Err(usage(anyhow!(
            "--produce needs `suppression.topic` in the config"
        )));
    };
    let producer: ThreadedProducer<DefaultProducerContext> =
        veil::kafka::producer_config(&kafka.source)
            .create()
            .map_err(usage)?;
    for line in lines {
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(line.as_str());
        if add {
            record = record.payload(b"1".as_slice());
        }
        producer.send(record).map_err(|(e, _)| io(e))?;
    }
    producer
        .flush(std::time::Duration::from_secs(30))
        .map_err(|e| Failure {
            code: super::EX_UNAVAILABLE,
            error: anyhow!("the broker did not acknowledge the records within 30 s: {e}"),
        })?;
    super::note(format_args!(
        "{} {} token line(s) {} {topic}\n",
        if add { "wrote" } else { "removed" },
        lines.len(),
        if add { "to" } else { "from" },
    ));
    Ok(())
}
