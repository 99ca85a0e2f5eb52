//! `veil demo`: the whole Kafka pipeline with nothing to set up. Starts
//! librdkafka's in-process mock cluster, loads the example events into a raw
//! topic (keyed by user id, as collectors often do), runs the service with
//! the example policy and a throwaway key, then reads the clean and
//! dead-letter topics back and prints a before/after sample and the counts.
//! The example policy and events are built into the binary, so the demo
//! runs from anywhere; `--policy` and `--events` use files instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use veil::DropReason;
use veil::health::Health;
use veil::kafka::{Control, header};
use veil::metrics::Metrics;

use super::{CliResult, io, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Policy to apply [default: the example policy, config/policy.yaml,
    /// built into veil].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// NDJSON events to load into the raw topic (repeatable) [default: the
    /// example events and bad events, examples/events.ndjson and
    /// examples/bad-events.ndjson, built into veil].
    #[arg(long, value_name = "FILE")]
    events: Vec<PathBuf>,
    /// Partitions of the raw topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[command(flatten)]
    pub logging: super::Logging,
}

const RAW: &str = "demo.events.raw";
const CLEAN: &str = "demo.events.clean";
const DEAD: &str = "demo.events.dead-letter";
/// The route's name (the `route` label of its metrics).
const ROUTE: &str = "analytics";

/// The examples, built in: `veil demo` needs no checkout of the repository.
const EXAMPLE_POLICY: &str = include_str!("../../config/policy.yaml");
const EXAMPLE_EVENTS: [&[u8]; 2] = [
    include_bytes!("../../examples/events.ndjson"),
    include_bytes!("../../examples/bad-events.ndjson"),
];

pub fn run(args: Args) -> CliResult {
    let mut events = Vec::new();
    let mut add = |text: &[u8]| {
        events.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        )
    };
    if args.events.is_empty() {
        EXAMPLE_EVENTS.iter().for_each(|text| add(text));
    }
    for path in &args.events {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read events {}", path.display()))
            .map_err(usage)?;
        add(&text);
    }
    // The key and, unless given, the example policy live here for the run.
    let scratch = tempfile::tempdir().map_err(io)?;
    let policy = match &args.policy {
        Some(p) => std::fs::canonicalize(p)
            .with_context(|| format!("cannot find policy {}", p.display()))
            .map_err(usage)?,
        None => {
            let p = scratch.path().join("policy.yaml");
            std::fs::write(&p, EXAMPLE_POLICY).map_err(io)?;
            p
        }
    };

    let cluster = MockCluster::new(1).map_err(io)?;
    for (topic, partitions) in [(RAW, args.partitions), (CLEAN, args.partitions), (DEAD, 1)] {
        cluster.create_topic(topic, partitions, 1).map_err(io)?;
    }
    let bootstrap = cluster.bootstrap_servers();
    super::note(format_args!(
        "mock Kafka cluster at {bootstrap}; topics {RAW} -> {CLEAN}, {DEAD}\n"
    ));

    let keys = scratch.path().join("keys");
    veil::keys::generate(&keys, "demo").map_err(io)?;
    let yaml = format!(
        "source:\n  kafka:\n    bootstrap_servers: \"{bootstrap}\"\n    topics: [{RAW}]\n    group_id: veil-demo\n\
         routes:\n  - name: {ROUTE}\n    policy: \"{}\"\n    topic: {CLEAN}\n\
         dead_letter:\n  topic: {DEAD}\n\
         keys:\n  dir: \"{}\"\n",
        policy.display(),
        keys.display()
    );
    let config = veil::config::parse(&yaml, "demo.yaml".as_ref(), scratch.path()).map_err(usage)?;
    let (stage, _ring) = veil::stage::load(&config).map_err(usage)?;

    load_raw(&bootstrap, &events)?;
    super::note(format_args!(
        "loaded {} raw events; running veil\n",
        events.len()
    ));

    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(io)?;
    let control = Control::default();
    let runtime = super::runtime()?;
    let started = Instant::now();
    let total = events.len() as u64;
    let summary = runtime.block_on(async {
        let running = veil::kafka::start(
            &config,
            stage,
            None,
            metrics.clone(),
            Arc::new(Health::for_kafka()),
            control.clone(),
        )
        .await?;
        while control.completed() < total && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        control.stop();
        running.drain().await
    });
    let summary = summary.map_err(usage)?;
    let elapsed = started.elapsed();
    if summary.completed < total {
        return Err(io(anyhow!(
            "only {} of {total} events were processed within 60 s",
            summary.completed
        )));
    }

    let clean = read_all(&bootstrap, CLEAN)?;
    let dead = read_all(&bootstrap, DEAD)?;
    let dropped = metrics.route_totals(ROUTE).dropped;
    super::print(format_args!(
        "{}",
        report(&events, &clean, &dead, &dropped, total, elapsed)
    ))
}

fn load_raw(bootstrap: &str, events: &[Vec<u8>]) -> CliResult {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .map_err(io)?;
    for e in events {
        // Collectors often key by user id: veil pseudonymises the key too.
        let key = serde_json::from_slice::<serde_json::Value>(e)
            .ok()
            .and_then(|v| v.get("userId").and_then(|u| u.as_str()).map(str::to_owned));
        let mut record = BaseRecord::<String, Vec<u8>>::to(RAW).payload(e);
        if let Some(k) = &key {
            record = record.key(k);
        }
        producer.send(record).map_err(|(e, _)| io(e))?;
    }
    producer.flush(Duration::from_secs(10)).map_err(io)?;
    Ok(())
}

/// A record read back: value, key and headers.
struct Record {
    value: Vec<u8>,
    key: Option<Vec<u8>>,
    headers: BTreeMap<String, String>,
}

/// Every record of `topic`, read by partition up to its high watermark.
fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<Record>, super::Failure> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "veil-demo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(io)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(io)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(io)?;
        remaining += high - low;
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .map_err(io)?;
    }
    consumer.assign(&tpl).map_err(io)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while remaining > 0 && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(io)?;
        remaining -= 1;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_owned(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            value: m.payload().unwrap_or_default().to_vec(),
            key: m.key().map(<[u8]>::to_vec),
            headers,
        });
    }
    Ok(out)
}

fn report(
    raw: &[Vec<u8>],
    clean: &[Record],
    dead: &[Record],
    dropped: &[(DropReason, u64)],
    total: u64,
    elapsed: Duration,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "veil demo: {total} events through the mock cluster in {:.2} s",
        elapsed.as_secs_f64()
    );
    if let Some(sample) = clean.first() {
        let offset = sample.headers.get(header::SOURCE_OFFSET);
        let partition = sample.headers.get(header::SOURCE_PARTITION);
        let _ = writeln!(
            out,
            "\nsample: {RAW} partition {} offset {}",
            partition.map_or("?", String::as_str),
            offset.map_or("?", String::as_str)
        );
        // The raw topic was loaded in file order; find the sample's input by its value.
        if let Some(input) = raw.iter().find(|r| {
            let clean: serde_json::Value =
                serde_json::from_slice(&sample.value).unwrap_or_default();
            let raw: serde_json::Value = serde_json::from_slice(r).unwrap_or_default();
            raw.get("messageId").is_some() && raw.get("messageId") == clean.get("messageId")
        }) {
            let _ = writeln!(out, "  before: {}", String::from_utf8_lossy(input));
        }
        let _ = writeln!(out, "  after:  {}", String::from_utf8_lossy(&sample.value));
        let _ = writeln!(
            out,
            "  key:    {}",
            sample
                .key
                .as_deref()
                .map_or("(none)".into(), String::from_utf8_lossy)
        );
        for (k, v) in &sample.headers {
            let _ = writeln!(out, "  header: {k}: {v}");
        }
    }
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for d in dead {
        *reasons
            .entry(d.headers.get(header::REASON).map_or("?", String::as_str))
            .or_default() += 1;
    }
    let _ = writeln!(out, "\ncounts:");
    let _ = writeln!(out, "  read            {total:>6}");
    let _ = writeln!(out, "  forwarded       {:>6}  -> {CLEAN}", clean.len());
    let _ = writeln!(
        out,
        "  dropped         {:>6}{}",
        dropped.iter().map(|(_, n)| n).sum::<u64>(),
        super::breakdown(dropped.iter().map(|(d, n)| (d.code(), *n)))
    );
    let _ = writeln!(out, "  dead-lettered   {:>6}  -> {DEAD}", dead.len());
    for (reason, n) in reasons {
        let _ = writeln!(out, "    {reason:<14}{n:>6}");
    }
    out
}
