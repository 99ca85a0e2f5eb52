//! `veil erase`: every pseudonym identifiers have or had, as JSON lines for
//! a warehouse deletion job; optionally their token lines appended to a
//! suppression file, so that they stop flowing too (docs/erasure.md).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use veil::policy;
use veil::suppression::{Tokeniser, lines_for};

use super::{CliResult, Failure, io, print, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Key directory: pseudonyms are computed under every key in it, the
    /// active one and those retired but kept.
    #[arg(long, value_name = "DIR", env = "VEIL_KEYS")]
    keys: PathBuf,
    /// The key suppression tokens are made with (--suppress-file); default:
    /// the only key in the directory.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// Policy whose purposes and subject paths apply (repeatable; every
    /// policy the identifiers may have passed through).
    #[arg(long, value_name = "FILE", required = true)]
    policy: Vec<PathBuf>,
    /// Also append the identifiers' token lines to this suppression file
    /// (created if missing), so that their events stop flowing.
    #[arg(long, value_name = "FILE")]
    suppress_file: Option<PathBuf>,
    /// Identifiers (surrounding white space is not part of one). Without
    /// any, they are read from stdin, one per line, `#` comments ignored.
    #[arg(value_name = "IDENTIFIER")]
    identifiers: Vec<String>,
}

pub fn run(args: Args) -> CliResult {
    let mut policies = Vec::new();
    for p in &args.policy {
        policies.push(policy::load(p).map_err(usage)?);
    }
    let ring = veil::keys::load_dir(&args.keys, args.key_id.as_deref()).map_err(usage)?;
    super::warn_keys(&ring);
    let from_stdin: Vec<String> = if args.identifiers.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(io)?
    } else {
        Vec::new()
    };
    let identifiers: Vec<&str> = args
        .identifiers
        .iter()
        .chain(&from_stdin)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if identifiers.is_empty() {
        return Err(usage(anyhow!(
            "no identifiers (give them as arguments or on stdin)"
        )));
    }
    for found in veil::erasure::pseudonyms(&identifiers, &policies, &ring) {
        let line = serde_json::to_string(&found).map_err(io)?;
        print(format_args!("{line}\n"))?;
    }
    if let Some(path) = &args.suppress_file {
        let tokeniser = Tokeniser::new(ring.active());
        let mut text = String::new();
        for id in &identifiers {
            for line in lines_for(&tokeniser, id) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot append to {}", path.display()))
            .map_err(|error| Failure {
                code: super::EX_IOERR,
                error,
            })?;
    }
    Ok(())
}
