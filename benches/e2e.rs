//! End to end on a real broker: `veil run` with the shipped policy vs. a
//! pass-through relay with the same librdkafka consumer and producer
//! settings and the same at-least-once bookkeeping, but no transform.
//!
//! Both read one preloaded raw topic (each with its own consumer group and
//! output topic), as child processes, in alternating rounds so a slow spell
//! of a shared machine hits both alike. Measured per run:
//! - throughput: inputs / (last output's timestamp - first output's), which
//!   leaves out process start and group join;
//! - CPU-seconds per million inputs (utime + stime of the child, from /proc)
//!   and peak RSS (VmHWM);
//! - latency: a second phase produces at a fixed rate to an idle pipeline
//!   and times each event from its send to its output being read back.
//!
//! Run: `bash benches/e2e.sh` (starts Tansu on 127.0.0.1 unless
//! `VEIL_TEST_BROKER` names a broker), or with a broker:
//! `VEIL_TEST_BROKER=127.0.0.1:9092 cargo bench --bench e2e -- [EVENTS] [ROUNDS]`.
//!
//! Two more modes reuse the same machinery:
//! - `scaling [EVENTS] [ROUNDS]` (`e2e/scaling.rs`): events/s and CPU with
//!   1, 2 and 4 partitions and workers, against the relay at each count;
//! - `soak [SECONDS] [RATE]` (`e2e/soak.rs`): veil's memory under a sustained
//!   load, sampled every 10 s;
//! - `delivery [EVENTS] [ROUNDS]` (`e2e/delivery.rs`): `exactly_once`
//!   against `at_least_once`, on the mock cluster.
//!
//! Under `cargo test` it is a small smoke run (mock cluster unless
//! `VEIL_TEST_BROKER` is set) that checks both contestants deliver exactly
//! what they should, and reports no speeds (see `e2e/report.rs`).

#[path = "../tests/support/data.rs"]
mod data;
#[path = "e2e/delivery.rs"]
mod delivery;
#[path = "../tests/support/kafka.rs"]
mod kafka;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/scaling.rs"]
mod scaling;
#[path = "e2e/soak.rs"]
mod soak;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use kafka::{Broker, produce};
use report::{Latency, Mode, Run, Summary};
use veil::offsets::{Ledger, Partition, Ticket};

const PARTITIONS: i32 = 4;
/// librdkafka's default is 500 ms; a broker that holds an idle fetch that
/// long (Tansu does) would make the latency phase measure only that.
const FETCH_WAIT_MS: u32 = 50;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("relay") {
        return relay(Path::new(&args[2]));
    }
    let benching = args.iter().any(|a| a == "--bench");
    let mode = Mode::new(benching, !cfg!(debug_assertions));
    let mut numbers = args.iter().skip(1).filter_map(|a| a.parse::<usize>().ok());
    if args.iter().any(|a| a == "scaling") {
        let events = numbers
            .next()
            .unwrap_or(if benching { 100_000 } else { 2_000 });
        let rounds = numbers.next().unwrap_or(if benching { 3 } else { 1 });
        return scaling::run(mode, events, rounds);
    }
    if args.iter().any(|a| a == "delivery") {
        let events = numbers
            .next()
            .unwrap_or(if benching { 10_000 } else { 1_000 });
        let rounds = numbers.next().unwrap_or(if benching { 3 } else { 1 });
        let (rate, seconds) = if benching { (300, 10) } else { (100, 2) };
        return delivery::run(events, rounds, rate, seconds);
    }
    if args.iter().any(|a| a == "soak") {
        let seconds = numbers.next().unwrap_or(if benching { 600 } else { 20 });
        let rate = numbers.next().unwrap_or(if benching { 3_000 } else { 500 });
        return soak::run(mode, seconds, rate);
    }
    let events = numbers
        .next()
        .unwrap_or(if benching { 200_000 } else { 2_000 });
    let rounds = numbers.next().unwrap_or(if benching { 3 } else { 1 });
    let (rate, seconds) = if benching { (2_000, 15) } else { (500, 2) };

    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let dir = log_dir();
    let examples = data::example_events();
    let load = Load::preload(&broker, &examples, events, PARTITIONS);
    let want_veil = forwarded_of(&examples, events);

    let mut results: HashMap<&'static str, Vec<Run>> = HashMap::new();
    for round in 0..rounds {
        for who in [Who::Relay, Who::Veil] {
            let out = broker.topic("bench-out", PARTITIONS);
            let dead = broker.topic("bench-dead", 1);
            let config = write_config(&dir, &bootstrap, &load.raw, &out, &dead, round, None);
            let want = match who {
                Who::Relay => events,
                Who::Veil => want_veil,
            };
            let mut child = who.start(&config);
            let group = format!("{out}-{round}");
            let run = measure(&bootstrap, &load, &group, &out, want, &mut child);
            kill(child);
            eprintln!("{}", report::round(mode, round, who.name(), &run));
            results.entry(who.name()).or_default().push(run);
        }
    }

    // Latency at a fixed rate, one idle pipeline each; also on librdkafka's
    // in-process mock cluster, whose fetches answer as soon as data arrives,
    // to separate the contestants' latency from the broker's.
    let mock;
    let mut latency_brokers = vec![&broker];
    if matches!(broker, Broker::External(_)) {
        mock = Broker::mock();
        latency_brokers.push(&mock);
    }
    let mut latency: Vec<Latency> = Vec::new();
    for b in latency_brokers {
        let bootstrap = b.bootstrap();
        for who in [Who::Relay, Who::Veil] {
            let raw = b.topic("bench-lat-raw", PARTITIONS);
            let out = b.topic("bench-lat-out", PARTITIONS);
            let dead = b.topic("bench-lat-dead", 1);
            let config = write_config(&dir, &bootstrap, &raw, &out, &dead, 99, None);
            let child = who.start(&config);
            let (p50_ms, p99_ms, n) =
                latencies(&bootstrap, &raw, &out, &examples, rate, seconds, who);
            kill(child);
            let measured = Latency {
                broker: b.name(),
                who: who.name(),
                p50_ms,
                p99_ms,
                events: n,
            };
            eprintln!("{}", report::latency(mode, &measured));
            latency.push(measured);
        }
    }

    let summary = Summary {
        results: &results,
        latency: &latency,
        events,
        input_bytes: load.input_bytes,
        rounds,
        partitions: PARTITIONS,
        rate,
        seconds,
        broker: broker.name(),
    };
    print!("{}", report::report(mode, &summary));
}

/// Where the contestants' configs and logs go; kept, for when a run goes wrong.
fn log_dir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("veil-e2e-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("configs and logs in {}", dir.display());
    dir
}

/// A preloaded raw topic: the example events cycled, keyed by user id.
struct Load {
    raw: String,
    partitions: i32,
    events: usize,
    input_bytes: usize,
}

impl Load {
    fn preload(broker: &Broker, examples: &[Vec<u8>], events: usize, partitions: i32) -> Load {
        let keyed = keyed(examples, events);
        let input_bytes: usize = keyed.iter().map(|(_, v)| v.len()).sum();
        let raw = broker.topic("bench-raw", partitions);
        eprintln!(
            "loading {events} events ({input_bytes} bytes) into {raw} ({partitions} partitions) on {}",
            broker.bootstrap()
        );
        produce(&broker.bootstrap(), &raw, &keyed);
        Load {
            raw,
            partitions,
            events,
            input_bytes,
        }
    }
}

/// The first `n` example events, cycled, each keyed by its user id.
fn keyed(examples: &[Vec<u8>], n: usize) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    examples
        .iter()
        .cycle()
        .take(n)
        .map(|e| (user_id(e), e.clone()))
        .collect()
}

/// How many of the first `n` example events, cycled, veil forwards.
fn forwarded_of(examples: &[Vec<u8>], n: usize) -> usize {
    forwarded(examples) * (n / examples.len()) + forwarded(&examples[..n % examples.len()])
}

#[derive(Clone, Copy)]
enum Who {
    Relay,
    Veil,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Relay => "relay",
            Who::Veil => "veil",
        }
    }

    fn start(self, config: &Path) -> Contestant {
        let mut cmd = match self {
            Who::Relay => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.arg("relay").arg(config);
                c
            }
            Who::Veil => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_veil"));
                c.args(["run", "--config"]).arg(config);
                c
            }
        };
        let log =
            std::fs::File::create(config.with_extension(format!("{}.log", self.name()))).unwrap();
        cmd.env("VEIL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Contestant)
            .expect("start contestant")
    }
}

fn user_id(event: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(event).ok()?;
    Some(v.get("userId")?.as_str()?.as_bytes().to_vec())
}

/// How many of `events` the shipped policy forwards.
fn forwarded(events: &[Vec<u8>]) -> usize {
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let engine = veil::compile(policy, ring.active(), veil::Limits::default());
    let mut scratch = veil::Scratch::default();
    let mut out = Vec::new();
    events
        .iter()
        .filter(|e| {
            out.clear();
            engine.apply(e, &mut out, &mut scratch).outcome == veil::Outcome::Forwarded
        })
        .count()
}

/// A pipeline config for both contestants (the relay reads only the source
/// and the first route). `workers`: veil's policy threads, or its default
/// (one per core) when `None`.
fn write_config(
    dir: &Path,
    bootstrap: &str,
    raw: &str,
    out: &str,
    dead: &str,
    round: usize,
    workers: Option<usize>,
) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut yaml = format!(
        "source:\n  kafka:\n    bootstrap_servers: \"{bootstrap}\"\n    topics: [{raw}]\n    \
         group_id: {out}-{round}\n    librdkafka:\n      fetch.wait.max.ms: {FETCH_WAIT_MS}\n\
         routes:\n  - name: analytics\n    policy: \"{}\"\n    topic: {out}\n\
         dead_letter:\n  topic: {dead}\nkeys:\n  dir: \"{}\"\nmetrics:\n  listen: 127.0.0.1:0\n",
        root.join("config/policy.yaml").display(),
        root.join("tests/keys").display()
    );
    if let Some(n) = workers {
        yaml.push_str(&format!("workers: {n}\n"));
    }
    let path = dir.join(format!("{out}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Wait until the contestant has committed every input, read its cost,
/// then read `out` back: exactly `want` records, and their time span.
/// (Completion is judged by the group's committed offsets, not by the
/// output's high watermark: Tansu 0.6 can report a high watermark below
/// the records it serves.)
/// `out` has as many partitions as the raw topic.
fn measure(
    bootstrap: &str,
    load: &Load,
    group: &str,
    out: &str,
    want: usize,
    child: &mut Contestant,
) -> Run {
    let (events, input_bytes) = (load.events, load.input_bytes);
    let broker_at_start = broker_cpu();
    let c = client(bootstrap, group);
    let deadline = Instant::now() + Duration::from_secs(60 + events as u64 / 500);
    loop {
        let committed: i64 = committed(&c, &load.raw, load.partitions).iter().sum();
        if committed as usize >= events {
            break;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "contestant exited early"
        );
        assert!(
            Instant::now() < deadline,
            "only {committed} of {events} inputs committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cpu_s, peak_rss_mb) = cost(child.0.id());
    let broker_cpu_s = broker_cpu()
        .zip(broker_at_start)
        .map(|(end, start)| end - start);

    let mut tpl = TopicPartitionList::new();
    for p in 0..load.partitions {
        tpl.add_partition_offset(out, p, Offset::Beginning).unwrap();
    }
    let reader = client(bootstrap, "veil-bench-reader");
    reader.assign(&tpl).unwrap();
    let (mut n, mut first, mut last) = (0usize, i64::MAX, i64::MIN);
    let mut quiet_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < quiet_until {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let ts = m.timestamp().to_millis().expect("record timestamp");
                first = first.min(ts);
                last = last.max(ts);
                n += 1;
                if n == want {
                    // Anything more would be a duplicate: look for a second.
                    quiet_until = Instant::now() + Duration::from_secs(1);
                }
            }
            Some(Err(e)) => panic!("read {out}: {e}"),
            None => {}
        }
    }
    assert_eq!(n, want, "outputs read back from {out}");
    let seconds = ((last - first) as f64 / 1000.0).max(0.001);
    Run {
        events_per_s: events as f64 / seconds,
        mb_per_s: input_bytes as f64 / seconds / 1e6,
        cpu_s_per_m: cpu_s / events as f64 * 1e6,
        peak_rss_mb,
        broker_cpu_s_per_m: broker_cpu_s.map(|b| b / events as f64 * 1e6),
    }
}

/// The broker's CPU seconds so far, when `benches/e2e.sh` started it and
/// passed its pid (`VEIL_BENCH_BROKER_PID`); `None` for a broker run elsewhere.
fn broker_cpu() -> Option<f64> {
    let pid = std::env::var("VEIL_BENCH_BROKER_PID").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(cpu_seconds(&stat))
}

fn client(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer")
}

/// The group's committed offset of each partition of `topic` (0 where none).
fn committed(c: &BaseConsumer, topic: &str, partitions: i32) -> Vec<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let mut at = vec![0; partitions as usize];
    if let Ok(t) = c.committed_offsets(tpl, Duration::from_secs(5)) {
        for e in t.elements() {
            if let Offset::Offset(o) = e.offset() {
                at[e.partition() as usize] = o;
            }
        }
    }
    at
}

/// (CPU seconds, peak RSS in MB) of a running process, from /proc.
fn cost(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    (cpu_seconds(&stat), status_mb(pid, "VmHWM"))
}

/// utime + stime from a `/proc/.../stat` line: the 14th and 15th fields
/// overall, counted after the parenthesised command name, in clock ticks
/// (100 per second on Linux).
fn cpu_seconds(stat: &str) -> f64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A `kB` field of `/proc/PID/status` (VmRSS, VmHWM), in MB (MiB).
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb / 1024.0
}

/// CPU seconds of each thread of a running process, by thread name (what
/// `/proc/PID/task/TID/comm` says), the process's first thread as `main`.
/// From `schedstat` (nanoseconds on the CPU) where the kernel has it: the
/// tick counts of `stat` read 0 for a thread that ran for a few ms.
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut threads = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let on_cpu_ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split(' ').next()?.parse::<f64>().ok());
        let name = if task.file_name() == pid.to_string().as_str() {
            "main".to_owned()
        } else {
            comm.trim().to_owned()
        };
        threads.push((name, on_cpu_ns.map_or(cpu_seconds(&stat), |ns| ns / 1e9)));
    }
    threads
}

/// A contestant's process, killed when dropped (also when a run panics).
struct Contestant(Child);

impl Drop for Contestant {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(child: Contestant) {
    drop(child);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Where each latency-phase input landed, and when it was sent.
struct Sent(Mutex<HashMap<(i32, i64), i64>>);

impl ClientContext for Sent {}

impl ProducerContext for Sent {
    type DeliveryOpaque = Box<i64>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ms: Box<i64>) {
        let m = result.as_ref().expect("latency input delivered");
        self.0
            .lock()
            .unwrap()
            .insert((m.partition(), m.offset()), *sent_ms);
    }
}

/// Produce `rate` events/s for `seconds` into an idle pipeline; returns
/// (p50 ms, p99 ms, samples) of send-to-read-back latency.
fn latencies(
    bootstrap: &str,
    raw: &str,
    out: &str,
    examples: &[Vec<u8>],
    rate: usize,
    seconds: usize,
    who: Who,
) -> (f64, f64, usize) {
    // Let the contestant join its group and start fetching first.
    let mut follower = kafka::Reader::new(bootstrap, out);
    let warmup: Vec<_> = examples
        .iter()
        .take(20)
        .map(|e| (user_id(e), e.clone()))
        .collect();
    let warm_forwarded = match who {
        Who::Relay => warmup.len(),
        Who::Veil => forwarded(&examples[..20]),
    };
    produce(bootstrap, raw, &warmup);
    assert!(
        follower.wait_until(Duration::from_secs(60), |r| r.len() >= warm_forwarded),
        "contestant never produced its warm-up outputs"
    );

    let producer: ThreadedProducer<Sent> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "0")
        .create_with_context(Sent(Mutex::new(HashMap::new())))
        .expect("producer");
    let consumer = client(bootstrap, "veil-bench-reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        // From the beginning, not the end: Tansu 0.6 can report a stale
        // high watermark, and "end" resolved late would skip outputs. The
        // warm-up outputs read first are not in `sent`, so they are ignored.
        tpl.add_partition_offset(out, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let received = Arc::new(Mutex::new(Vec::<((i32, i64), i64)>::new()));
    let stop = Arc::new(AtomicUsize::new(0));
    let reading = {
        let received = received.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while stop.load(Ordering::Relaxed) == 0 {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let now = now_ms();
                    let h = m.headers().expect("source headers");
                    let get = |k: &str| -> i64 {
                        let v = h.iter().find(|h| h.key == k).expect(k).value.unwrap();
                        std::str::from_utf8(v).unwrap().parse().unwrap()
                    };
                    let source = (
                        get("veil-source-partition") as i32,
                        get("veil-source-offset"),
                    );
                    received.lock().unwrap().push((source, now));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1)); // reader catches up with the warm-up
    let total = rate * seconds;
    let started = Instant::now();
    for (i, e) in examples.iter().cycle().take(total).enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = user_id(e);
        let mut r = BaseRecord::with_opaque_to(raw, Box::new(now_ms())).payload(e);
        if let Some(k) = &key {
            r = r.key(k);
        }
        producer.send(r).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let want = match who {
        Who::Relay => total,
        Who::Veil => forwarded_of(examples, total),
    };
    // Wait for the outputs of this phase's inputs (the reader also sees the
    // warm-up's, and maybe a duplicate).
    let read_back = || {
        let sent = producer.context().0.lock().unwrap();
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(source, _)| sent.contains_key(source))
            .map(|(source, _)| *source)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_back() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(1, Ordering::Relaxed);
    reading.join().unwrap();
    let sent = producer.context().0.lock().unwrap();
    // First sighting of each input's output (the broker may serve a record
    // twice; at-least-once allows duplicates).
    let mut first_seen: HashMap<(i32, i64), i64> = HashMap::new();
    for (source, at) in received.lock().unwrap().iter() {
        if sent.contains_key(source) {
            first_seen.entry(*source).or_insert(*at);
        }
    }
    let mut ms: Vec<f64> = first_seen
        .iter()
        .map(|(source, at)| (at - sent[source]) as f64)
        .collect();
    assert_eq!(ms.len(), want, "every latency input read back");
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    (q(0.5), q(0.99), ms.len())
}

// ---------------------------------------------------------------------------
// The pass-through relay: veil's consumer and producer settings and its
// offset ledger (commit an input only once its output is acknowledged),
// copying key and value unchanged and adding the same source headers.

struct Acks {
    ledger: Mutex<Ledger>,
    positions: Mutex<HashMap<Partition, i64>>,
    in_flight: AtomicUsize,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        if let Err((e, _)) = result {
            // The bench's broker is local; a failed delivery is a bench failure.
            eprintln!("relay: delivery failed: {e}");
            std::process::exit(1);
        }
        if let Some(position) = self.ledger.lock().unwrap().complete(&ticket) {
            self.positions
                .lock()
                .unwrap()
                .insert(ticket.partition.clone(), position);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn relay(config_path: &Path) {
    let config = veil::config::load(config_path).expect("pipeline config");
    let veil::config::Pipeline::Kafka(kafka) = &config.pipeline else {
        panic!("relay needs a Kafka pipeline");
    };
    let (src, out) = (&kafka.source, &kafka.routes[0].to);
    let max_in_flight = kafka.max_in_flight;
    // veil's settings, except the prefetch limit: veil's applies to each
    // partition's own queue, the relay has one queue for all partitions, so
    // it keeps librdkafka's default (64 MiB, more than veil's 8 MiB x 4).
    let consumer: BaseConsumer = veil::kafka::consumer_config(src)
        .set("queued.max.messages.kbytes", "65536")
        .create()
        .expect("consumer");
    let topics: Vec<&str> = src.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    let producer: ThreadedProducer<Acks> = veil::kafka::producer_config(src)
        .create_with_context(Acks {
            ledger: Mutex::new(Ledger::default()),
            positions: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
        })
        .expect("producer");
    let acks = producer.context().clone();
    let mut topic_names: HashMap<String, Arc<str>> = HashMap::new();
    let mut last_store = Instant::now();
    loop {
        if last_store.elapsed() >= Duration::from_millis(200) {
            let positions: Vec<_> = acks.positions.lock().unwrap().drain().collect();
            if !positions.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for ((t, p), o) in positions {
                    tpl.add_partition_offset(&t, p, Offset::Offset(o)).unwrap();
                }
                let _ = consumer.store_offsets(&tpl);
            }
            last_store = Instant::now();
        }
        if acks.in_flight.load(Ordering::Relaxed) >= max_in_flight {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("relay: consume error: {e}");
                continue;
            }
        };
        let topic = topic_names
            .entry(m.topic().to_owned())
            .or_insert_with(|| m.topic().into())
            .clone();
        let ticket = {
            // The relay never rebalances: a partition is assigned once, when
            // first seen.
            let mut ledger = acks.ledger.lock().unwrap();
            let p = (topic, m.partition());
            let g = match ledger.generation(&p) {
                Some(g) => g,
                None => ledger.assign(&p),
            };
            ledger.track(&p, g, m.offset()).expect("assigned just now")
        };
        acks.in_flight.fetch_add(1, Ordering::Relaxed);
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "veil-source-topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "veil-source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "veil-source-offset",
                value: Some(&offset),
            });
        let mut record = BaseRecord::with_opaque_to(out, Box::new(ticket))
            .payload(m.payload().unwrap_or_default())
            .headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
