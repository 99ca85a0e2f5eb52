//! Kafka test harness: a real broker over TCP (Tansu when `VEIL_TEST_BROKER`
//! names one, else librdkafka's mock cluster), uniquely named topics, a
//! producer that reports where each record landed, a reader that follows
//! topics, and the `veil` binary run as a child process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A broker the tests and the `veil` child process both reach over TCP.
pub enum Broker {
    /// An external broker (Tansu in CI), at this address.
    External(String),
    /// librdkafka's mock cluster, in this process, listening on 127.0.0.1.
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl Broker {
    /// Tansu (or any broker) at `VEIL_TEST_BROKER`, else the mock cluster.
    pub fn start() -> Broker {
        match std::env::var("VEIL_TEST_BROKER") {
            Ok(addr) if !addr.is_empty() => {
                eprintln!("test broker: {addr} (VEIL_TEST_BROKER)");
                Broker::External(addr)
            }
            _ => {
                eprintln!(
                    "test broker: librdkafka mock cluster (set VEIL_TEST_BROKER to use Tansu)"
                );
                Broker::mock()
            }
        }
    }

    /// Always the mock cluster: for fault injection only it can do.
    pub fn mock() -> Broker {
        Broker::mock_with(1)
    }

    /// The mock cluster with `brokers` brokers (ids 1 to `brokers`): for
    /// faults on one broker while the others serve.
    pub fn mock_with(brokers: i32) -> Broker {
        Broker::Mock(MockCluster::new(brokers).expect("start mock cluster"))
    }

    /// The mock cluster, to inject faults; panics on an external broker.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        match self {
            Broker::Mock(m) => m,
            Broker::External(a) => panic!("fault injection needs the mock cluster, not {a}"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Broker::External(_) => "external",
            Broker::Mock(_) => "mock",
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::External(a) => a.clone(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    /// Create a topic named `<prefix>-<unique>`; returns its name.
    pub fn topic(&self, prefix: &str, partitions: i32) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000
        );
        match self {
            Broker::Mock(m) => m.create_topic(&name, partitions, 1).expect("create topic"),
            Broker::External(addr) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", addr)
                    .create()
                    .expect("admin client");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
                let results = rt
                    .block_on(admin.create_topics(
                        [&topic],
                        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                    ))
                    .expect("create topics");
                for r in results {
                    r.expect("topic created");
                }
            }
        }
        // Wait until the topic's metadata shows every partition.
        let c = consumer(&self.bootstrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(md) = c.fetch_metadata(Some(&name), Duration::from_secs(5))
                && md.topics().first().is_some_and(|t| {
                    t.error().is_none() && t.partitions().len() == partitions as usize
                })
            {
                return name;
            }
            assert!(Instant::now() < deadline, "topic {name} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "veil-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// What a failed delivery test should say about the broker: offsets the
/// reader was served twice with different records (a broker that reused
/// an offset it had acknowledged, overwriting a record), and the offsets
/// the consumer `group` committed on `topic`.
pub fn broker_evidence(bootstrap: &str, records: &[Rec], group: &str, topic: &str) -> String {
    let mut seen: BTreeMap<(i32, i64), &[u8]> = BTreeMap::new();
    let mut reused = Vec::new();
    for r in records {
        match seen.insert((r.partition, r.offset), &r.value) {
            Some(v) if v != r.value.as_slice() => reused.push((r.partition, r.offset)),
            _ => {}
        }
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let committed = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()
        .and_then(|md| {
            let mut tpl = TopicPartitionList::new();
            for p in md.topics().first()?.partitions() {
                tpl.add_partition(topic, p.id());
            }
            c.committed_offsets(tpl, Duration::from_secs(10)).ok()
        })
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
                .collect::<Vec<_>>()
        });
    let read_twice = records.len() - seen.len();
    format!(
        "broker evidence: {read_twice} output offsets read more than once, {} of them holding different records (offsets reused: {:?}); group {group} committed on {topic}: {committed:?}",
        reused.len(),
        reused.iter().take(10).collect::<Vec<_>>()
    )
}

/// Where each produced record landed.
struct Landed(Mutex<Vec<Option<(i32, i64)>>>);

impl ClientContext for Landed {}

impl ProducerContext for Landed {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, i: Box<usize>) {
        let m = result.as_ref().expect("test record delivered");
        self.0.lock().unwrap()[*i] = Some((m.partition(), m.offset()));
    }
}

/// Produce `records` (key, value) to `topic`; returns each one's (partition, offset).
/// Keyed records go where the key hashes (murmur2, as the Java client);
/// records without a key go round the partitions in turn, so every partition
/// holds its share, whatever the timing. Panics if the broker then no longer
/// holds all of them (see [`assert_nothing_deleted`]).
///
/// librdkafka's default for keyless records (sticky runs, and all that were
/// queued before the topic's metadata arrived into one partition, many
/// under CPU load) put up to 5.9 MB of the kill -9 test's 15 MB in one
/// partition, over the mock cluster's 5 MiB partition log (issue 9, 4b).
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
) -> Vec<(i32, i64)> {
    produce_with_headers(bootstrap, topic, records, |_| None)
}

/// [`produce`], each record `i` with the headers `headers(i)` gives, if any.
pub fn produce_with_headers(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    headers: impl Fn(usize) -> Option<rdkafka::message::OwnedHeaders>,
) -> Vec<(i32, i64)> {
    produce_batched(
        bootstrap,
        topic,
        records,
        headers,
        Batches::AsTheClientGathers,
    )
}

/// [`produce`], every record in a record batch of its own, so that every
/// offset is the start of a batch. For a test that restarts a consumer from
/// a commit made mid-stream on Tansu: Tansu serves a fetch from inside a
/// batch from the next batch (docs/testing.md), so a restart from a commit
/// inside a batch of a hundred records would never see the rest of it.
/// Only where it is needed: one record per batch makes Tansu's fetches
/// small, too slow for the high-volume tests.
pub fn produce_one_per_batch(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
) -> Vec<(i32, i64)> {
    produce_batched(bootstrap, topic, records, |_| None, Batches::OneRecordEach)
}

#[derive(Clone, Copy, PartialEq)]
enum Batches {
    AsTheClientGathers,
    OneRecordEach,
}

fn produce_batched(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    headers: impl Fn(usize) -> Option<rdkafka::message::OwnedHeaders>,
    batches: Batches,
) -> Vec<(i32, i64)> {
    let landed = Landed(Mutex::new(vec![None; records.len()]));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    if batches == Batches::OneRecordEach {
        config.set("batch.num.messages", "1");
    }
    let producer: ThreadedProducer<Landed> = config.create_with_context(landed).expect("producer");
    let partitions = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata")
        .topics()[0]
        .partitions()
        .len() as i32;
    assert!(partitions > 0, "{topic} has partitions");
    let mut keyless = 0;
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = BaseRecord::<Vec<u8>, Vec<u8>, Box<usize>>::with_opaque_to(topic, Box::new(i))
            .payload(value);
        if let Some(h) = headers(i) {
            r = r.headers(h);
        }
        match key {
            Some(k) => r = r.key(k),
            None => {
                r = r.partition(keyless % partitions);
                keyless += 1;
            }
        }
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let out = producer.context().0.lock().unwrap().clone();
    let landed = out
        .into_iter()
        .map(|o| o.expect("every record delivered"))
        .collect();
    assert_nothing_deleted(bootstrap, topic);
    landed
}

/// Every record ever written to `topic` is still in it. The mock cluster
/// keeps at most 5 MiB per partition and silently deletes the oldest
/// records beyond that (`rdkafka_mock.c`, `max_size`): a test whose data
/// outgrew it would blame veil for inputs it could never read, or for
/// outputs deleted before the test read them. The test topics are fresh and
/// nothing else deletes, so every partition must still start at offset 0.
pub fn assert_nothing_deleted(bootstrap: &str, topic: &str) {
    let c = consumer(bootstrap);
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    for p in md.topics()[0].partitions() {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(
            low,
            0,
            "the broker deleted the oldest {low} of {high} records of {topic} [{}] \
             (the mock cluster keeps 5 MiB per partition): the test's data does not fit, \
             nothing here says anything about veil",
            p.id()
        );
    }
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl Rec {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .get(k)
            .map(|v| std::str::from_utf8(v).expect("utf-8 header"))
    }

    /// The input this output came from: (source partition, source offset).
    pub fn source(&self) -> (i32, i64) {
        (
            self.header("veil-source-partition")
                .expect("source partition")
                .parse()
                .unwrap(),
            self.header("veil-source-offset")
                .expect("source offset")
                .parse()
                .unwrap(),
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("record is JSON")
    }
}

/// Follows every partition of a topic from the beginning, without a group.
pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<Rec>,
}

impl Reader {
    pub fn new(bootstrap: &str, topic: &str) -> Reader {
        let consumer = consumer(bootstrap);
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        Reader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Records in the topic now, by its watermarks.
    pub fn in_topic(&self) -> i64 {
        let a = self.consumer.assignment().unwrap();
        a.elements()
            .iter()
            .map(|e| {
                let (lo, hi) = self
                    .consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                    .unwrap();
                hi - lo
            })
            .sum()
    }

    /// Read whatever arrives within `d`.
    pub fn poll_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            let Some(m) = self.consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let m = match m {
                Ok(m) => m,
                // A broker the chaos tests took down: read on when it is back.
                Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                    | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
                )) => continue,
                Err(e) => panic!("read record: {e}"),
            };
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            self.records.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }

    /// Read until `done(records)` holds; false if `timeout` passes first.
    pub fn wait_until(&mut self, timeout: Duration, done: impl Fn(&[Rec]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(&self.records) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.poll_for(Duration::from_millis(200));
        }
    }
}

/// The `veil` binary running `veil run --config`, stderr to a log file.
pub struct Veil {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Veil {
    pub fn start(config: &Path, log: &Path) -> Veil {
        let child = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "VEIL_LOG",
                std::env::var("VEIL_TEST_LOG").unwrap_or("info,librdkafka=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start veil");
        Veil {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// `kill -9`: no drain, no commit.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().expect("SIGKILL");
        c.wait().expect("reap");
    }

    /// Wait for exit; panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let c = self.child.as_mut().expect("running");
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait().expect("try_wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < end,
                "veil did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Veil {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
