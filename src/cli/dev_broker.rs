//! `veil dev-broker`: librdkafka's mock cluster, in this process, as a
//! zero-install Kafka broker for other processes on this machine (tests,
//! a first try of `veil run`). It listens on 127.0.0.1 only, supports
//! transactions, and keeps everything in memory until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use rdkafka::mocking::MockCluster;

use super::{CliResult, io, note, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Topics to create at start (comma-separated, or repeat the flag).
    /// Others are created when first produced to.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    topics: Vec<String>,
    /// Partitions of each topic created at start.
    #[arg(long, value_name = "N", default_value_t = 1)]
    partitions: i32,
    /// Brokers in the cluster (each on its own 127.0.0.1 port).
    #[arg(long, value_name = "N", default_value_t = 1)]
    brokers: i32,
    /// Also write the bootstrap address to FILE (whole, once the cluster
    /// is up; removed at exit), for scripts to wait on.
    #[arg(long, value_name = "FILE")]
    address_file: Option<PathBuf>,
    #[command(flatten)]
    pub logging: super::Logging,
}

/// The longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;

pub fn run(args: Args) -> CliResult {
    if !(1..=100_000).contains(&args.partitions) {
        return Err(usage(anyhow!(
            "--partitions {} is out of range: give 1 to 100000",
            args.partitions
        )));
    }
    if !(1..=16).contains(&args.brokers) {
        return Err(usage(anyhow!(
            "--brokers {} is out of range: give 1 to 16",
            args.brokers
        )));
    }
    if let Some(bad) = args.topics.iter().find(|t| !topic_name_ok(t)) {
        return Err(usage(anyhow!(
            "topic `{bad}` is not a valid name: use 1 to {MAX_TOPIC_NAME} letters, digits, `.`, `_` or `-`"
        )));
    }
    let cluster = MockCluster::new(args.brokers).map_err(io)?;
    for topic in &args.topics {
        cluster
            .create_topic(topic, args.partitions, 1)
            .with_context(|| format!("cannot create topic {topic}"))
            .map_err(io)?;
    }
    let bootstrap = cluster.bootstrap_servers();
    if !bootstrap.split(',').all(|b| b.starts_with("127.0.0.1:")) {
        return Err(io(anyhow!(
            "the mock cluster listens on {bootstrap}, not on 127.0.0.1 only; refusing to serve"
        )));
    }
    if let Some(path) = &args.address_file {
        write_whole(path, &format!("{bootstrap}\n"))
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(io)?;
    }
    super::print(format_args!("{bootstrap}\n"))?;
    note(format_args!(
        "veil dev-broker: {} broker(s) at {bootstrap}; topics: {}; in memory only, until SIGTERM or SIGINT\n",
        args.brokers,
        if args.topics.is_empty() {
            "none yet (created when first produced to)".to_owned()
        } else {
            format!(
                "{} ({} partition(s) each)",
                args.topics.join(", "),
                args.partitions
            )
        }
    ));
    let runtime = super::runtime()?;
    let stopped = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    });
    if let Some(path) = &args.address_file {
        let _ = std::fs::remove_file(path);
    }
    // Destroying the mock cluster waits for its clients to go (tens of
    // seconds while one stays connected); its memory goes with the process.
    std::mem::forget(cluster);
    stopped.map_err(io)
}

fn topic_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Write `text` to a temporary file beside `path`, then rename it into
/// place: a reader never sees half an address.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
