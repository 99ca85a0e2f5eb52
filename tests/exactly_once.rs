//! `delivery: exactly_once` (issue 12), veil run as a child process.
//!
//! Always on librdkafka's mock cluster, whatever `VEIL_TEST_BROKER` says:
//! Tansu 0.6 has no transactions, so on it these tests could only fail.
//! Each test says so on stderr ("exactly-once tests: mock cluster").
//!
//! Two things the mock cannot show, stated here and in docs/pipeline.md:
//! - It does not hide aborted records from `read_committed` consumers (see
//!   `dev_broker_serves_veil_run_and_transactions_over_tcp_until_sigterm`
//!   in tests/kafka.rs), so after an abort the outputs read back hold the
//!   aborted attempt too. Where a test aborts (a crash, an injected error)
//!   it asserts what holds anyway: nothing is lost, every input below the
//!   group's committed offset has its outputs (commits never run ahead of
//!   outputs), and the committed offsets reach the end. Where nothing
//!   aborts (the happy path, a rebalance) each input's outputs are read
//!   exactly once, and that is asserted.
//! - It keeps no offsets sent in a transaction (its TxnOffsetCommit
//!   handler answers without storing them), so the committed offsets read
//!   here are the ones veil commits again through its consumer right
//!   after each transaction commits (see `kafka/transact.rs`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;
use support::http;
use support::kafka::{Broker, Reader, Rec, Veil, produce};

const MINUTE: Duration = Duration::from_secs(60);
const POLICY: &str = "name: eos\nversion: 1\npurpose: analytics\nfields:\n  id: keep\n  a: keep\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mock() -> Broker {
    eprintln!(
        "exactly-once tests: mock cluster, whatever VEIL_TEST_BROKER says (Tansu has no transactions)"
    );
    Broker::mock()
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    raw: String,
    clean: String,
    dead: String,
}

impl Setup {
    /// `raw` (of `partitions`) -> the policy -> `clean`, dead letters to
    /// `dead`, exactly once with `settings` (YAML under `exactly_once:`).
    fn new(broker: &Broker, partitions: i32, settings: &str) -> Setup {
        let (raw, clean, dead) = (
            broker.topic("raw", partitions),
            broker.topic("clean", partitions),
            broker.topic("dead", 1),
        );
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let yaml = format!(
            "source:\n  kafka:\n    bootstrap_servers: \"{}\"\n    topics: [{raw}]\n    group_id: {raw}-veil\n    \
             librdkafka:\n      session.timeout.ms: 6000\n      heartbeat.interval.ms: 500\n\
             routes:\n  - name: r\n    policy: \"{}\"\n    topic: {clean}\n\
             dead_letter:\n  topic: {dead}\nkeys:\n  dir: \"{}\"\nshutdown:\n  drain_timeout_seconds: 10\n\
             metrics:\n  listen: 127.0.0.1:0\ndelivery: exactly_once\nexactly_once: {{ {settings} }}\n",
            broker.bootstrap(),
            policy.display(),
            root().join("tests/keys").display()
        );
        let config = dir.path().join("pipeline.yaml");
        std::fs::write(&config, yaml).unwrap();
        Setup {
            dir,
            config,
            raw,
            clean,
            dead,
        }
    }

    fn start(&self, name: &str) -> Veil {
        let veil = Veil::start(&self.config, &self.dir.path().join(format!("{name}.log")));
        assert!(
            veil.wait_for_log("veil is consuming", MINUTE),
            "log:\n{}",
            veil.log()
        );
        veil
    }
}

/// Inputs `{"id": i, ...}`; every `bad_every`-th is not JSON (a dead letter).
fn inputs(from: usize, n: usize, bad_every: usize) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    (from..from + n)
        .map(|i| {
            let v = if bad_every > 0 && i % bad_every == bad_every - 1 {
                format!("{{\"id\": {i}, \"a\"").into_bytes()
            } else {
                json!({"id": i, "a": "x", "b": "y"})
                    .to_string()
                    .into_bytes()
            };
            (None, v)
        })
        .collect()
}

/// The input each record was made of: (source partition, source offset),
/// from a clean record's headers or a dead letter's `source`.
fn source_of(r: &Rec) -> (i32, i64) {
    match r.header("veil-source-partition") {
        Some(_) => r.source(),
        None => {
            let s = &r.json()["source"];
            (
                s["partition"].as_i64().unwrap() as i32,
                s["offset"].as_i64().unwrap(),
            )
        }
    }
}

/// How many records each input has, clean and dead letters together.
fn per_input(clean: &[Rec], dead: &[Rec]) -> BTreeMap<(i32, i64), usize> {
    let mut seen = BTreeMap::new();
    for r in clean.iter().chain(dead) {
        *seen.entry(source_of(r)).or_insert(0) += 1;
    }
    seen
}

fn group(broker: &Broker, raw: &str) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("{raw}-veil"))
        .create()
        .unwrap()
}

/// veil's committed offset of each partition of `raw` (0 where none).
fn committed(broker: &Broker, raw: &str, partitions: i32) -> Vec<i64> {
    let c = group(broker, raw);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(raw, p);
    }
    let t = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    t.elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .collect()
}

/// The end offset of each partition of `topic`.
fn ends(broker: &Broker, topic: &str, partitions: i32) -> Vec<i64> {
    let c = group(broker, topic);
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

fn wait_committed_to_end(broker: &Broker, raw: &str, partitions: i32, veil: &Veil) {
    let end = ends(broker, raw, partitions);
    let deadline = Instant::now() + MINUTE;
    loop {
        let at = committed(broker, raw, partitions);
        if at == end {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {at:?}, end {end:?}; log:\n{}",
            veil.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric(veil: &Veil, name: &str, labels: &[(&str, &str)]) -> f64 {
    let addr = http::served_addr(&veil.log()).expect("metrics address in the log");
    http::sum(&http::get(&addr, "/metrics").1, name, labels)
}

fn stop(mut veil: Veil) -> String {
    veil.signal("TERM");
    assert!(veil.wait(MINUTE).success(), "log:\n{}", veil.log());
    veil.log()
}

/// Invariant: with nothing aborted, N inputs make exactly N records (one
/// output or one dead letter each, none twice), the group's committed
/// offsets reach the end of every input partition, and the records were
/// produced in transactions (counted committed, none aborted; the
/// transactional producer's id is logged).
#[test]
fn n_inputs_make_exactly_n_outputs_and_dead_letters_and_offsets_reach_the_end() {
    const N: usize = 3000;
    let broker = mock();
    let s = Setup::new(&broker, 3, "max_events: 200, max_ms: 50");
    let sent = inputs(0, N, 10);
    produce(&broker.bootstrap(), &s.raw, &sent);
    let veil = s.start("veil");
    let (mut clean, mut dead) = (
        Reader::new(&broker.bootstrap(), &s.clean),
        Reader::new(&broker.bootstrap(), &s.dead),
    );
    let deadline = Instant::now() + 2 * MINUTE;
    while clean.records.len() + dead.records.len() < N {
        assert!(Instant::now() < deadline, "log:\n{}", veil.log());
        clean.poll_for(Duration::from_millis(200));
        dead.poll_for(Duration::from_millis(10));
    }
    wait_committed_to_end(&broker, &s.raw, 3, &veil);
    clean.poll_for(Duration::from_secs(1));
    dead.poll_for(Duration::from_millis(200));
    assert_eq!(clean.records.len(), N - N / 10, "one output per good input");
    assert_eq!(dead.records.len(), N / 10, "one dead letter per bad input");
    let seen = per_input(&clean.records, &dead.records);
    assert_eq!(seen.len(), N);
    assert!(seen.values().all(|&n| n == 1), "none twice");
    let ids: BTreeSet<u64> = clean
        .records
        .iter()
        .map(|r| r.json()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), N - N / 10);

    let committed_txns = metric(&veil, "veil_transactions_total", &[("result", "committed")]);
    assert!(committed_txns >= 3.0, "transactions: {committed_txns}");
    assert!(
        committed_txns <= (N / 3) as f64,
        "{committed_txns} transactions for {N} inputs: they hold runs of inputs"
    );
    assert_eq!(
        metric(&veil, "veil_transactions_total", &[("result", "aborted")]),
        0.0
    );
    let log = stop(veil);
    for p in 0..3 {
        assert!(
            log.contains(&format!("transactional_id={}-veil:{}:{p}", s.raw, s.raw)),
            "partition {p}'s producer is transactional; log:\n{log}"
        );
    }
    assert!(
        log.contains(&format!("veil stopped completed={N} abandoned=0")),
        "log:\n{log}"
    );
    assert_eq!(committed(&broker, &s.raw, 3), ends(&broker, &s.raw, 3));
}

/// Invariant: killed with SIGKILL at 5 random moments of a stream and
/// restarted each time, veil loses nothing, and after every kill the
/// group's committed offset of each partition has the records of every
/// input below it (commits never run ahead of outputs). At the end every
/// input has its record and the offsets reach the end. Records of a
/// transaction open at a kill are made again after the restart; the mock
/// shows both attempts (it does not filter aborted records), so repeats
/// are counted and bounded, not forbidden: at most the inputs of two
/// transactions per partition per kill.
#[test]
fn kill_9_at_random_moments_loses_nothing_and_commits_never_run_ahead_of_outputs() {
    const N: usize = 20_000;
    const KILLS: usize = 5;
    const PARTITIONS: i32 = 4;
    const MAX_EVENTS: usize = 250;
    let broker = mock();
    let s = Setup::new(
        &broker,
        PARTITIONS,
        &format!("max_events: {MAX_EVENTS}, max_ms: 100"),
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = seed | 1;
    let mut below = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut clean, mut dead) = (
        Reader::new(&broker.bootstrap(), &s.clean),
        Reader::new(&broker.bootstrap(), &s.dead),
    );
    let mut landed = Vec::new();
    for round in 0..KILLS {
        let chunk = inputs(round * N / KILLS, N / KILLS, 50);
        landed.extend(produce(&broker.bootstrap(), &s.raw, &chunk));
        let mut veil = s.start(&format!("veil-{round}"));
        let before = clean.records.len();
        assert!(
            clean.wait_until(2 * MINUTE, |r| r.len() > before),
            "round {round}: no progress; log:\n{}",
            veil.log()
        );
        std::thread::sleep(Duration::from_millis(below(300)));
        veil.kill9();
        // Whatever was committed when it died has its records.
        let at = committed(&broker, &s.raw, PARTITIONS);
        clean.poll_for(Duration::from_millis(500));
        dead.poll_for(Duration::from_millis(100));
        let seen = per_input(&clean.records, &dead.records);
        for (p, &c) in at.iter().enumerate() {
            let without: Vec<i64> = (0..c)
                .filter(|o| !seen.contains_key(&(p as i32, *o)))
                .collect();
            assert!(
                without.is_empty(),
                "round {round}: partition {p} committed to {c}, but inputs {:?}... have no record",
                &without[..without.len().min(5)]
            );
        }
        eprintln!(
            "round {round}: committed {at:?}, {} records so far",
            seen.len()
        );
    }
    let veil = s.start("veil-final");
    let deadline = Instant::now() + 3 * MINUTE;
    while per_input(&clean.records, &dead.records).len() < N {
        assert!(
            Instant::now() < deadline,
            "{} of {N} inputs have records; log:\n{}",
            per_input(&clean.records, &dead.records).len(),
            veil.log()
        );
        clean.poll_for(Duration::from_millis(300));
        dead.poll_for(Duration::from_millis(10));
    }
    wait_committed_to_end(&broker, &s.raw, PARTITIONS, &veil);
    stop(veil);
    clean.poll_for(Duration::from_millis(500));
    dead.poll_for(Duration::from_millis(200));
    let seen = per_input(&clean.records, &dead.records);
    let want: BTreeSet<(i32, i64)> = landed.iter().copied().collect();
    let got: BTreeSet<(i32, i64)> = seen.keys().copied().collect();
    assert_eq!(
        got, want,
        "every input has a record, and no record is of another"
    );
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{N} inputs, {repeats} records repeated after {KILLS} kills (aborted attempts the mock shows)"
    );
    assert!(
        repeats <= KILLS * PARTITIONS as usize * 2 * MAX_EVENTS,
        "{repeats} repeats: more than two transactions per partition per kill"
    );
    for r in &clean.records {
        let v = r.json();
        assert_eq!(v, json!({"id": v["id"], "a": "x"}), "the policy's output");
    }
}

/// Invariant: a rebalance while transactions are open (max_ms far away)
/// commits them before the partitions go: the revoke commits one per
/// partition, nothing is aborted, nothing is lost, and the committed
/// offsets reach the end.
#[test]
fn a_rebalance_with_open_transactions_commits_them_before_the_partitions_go() {
    const N: usize = 1000;
    let broker = mock();
    let s = Setup::new(&broker, 4, "max_events: 1000000, max_ms: 20000");
    produce(&broker.bootstrap(), &s.raw, &inputs(0, N, 0));
    let a = s.start("a");
    let mut clean = Reader::new(&broker.bootstrap(), &s.clean);
    assert!(
        clean.wait_until(MINUTE, |r| r.len() >= N),
        "log:\n{}",
        a.log()
    );
    // Processed and sent, not committed: the transactions are open (the
    // mock shows their records before the commit).
    assert_eq!(
        committed(&broker, &s.raw, 4),
        vec![0; 4],
        "log:\n{}",
        a.log()
    );
    let b = s.start("b");
    let revoked = |log: &str| log.contains("partitions revoked");
    let deadline = Instant::now() + MINUTE;
    while !revoked(&a.log()) {
        assert!(Instant::now() < deadline, "no rebalance; a:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The revoke committed every open transaction (one per partition)
    // before it let the partitions go (its log line comes last).
    assert_eq!(
        metric(&a, "veil_transactions_total", &[("result", "committed")]),
        4.0,
        "a:\n{}",
        a.log()
    );
    produce(&broker.bootstrap(), &s.raw, &inputs(N, N, 0));
    assert!(
        clean.wait_until(MINUTE, |r| r.len() >= 2 * N),
        "a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    for v in [&a, &b] {
        assert_eq!(
            metric(v, "veil_transactions_total", &[("result", "aborted")]),
            0.0
        );
    }
    // One at a time: a stop during the other's rebalance would meet the
    // mock's refusal of commits while a group rebalances.
    let la = stop(a);
    let deadline = Instant::now() + MINUTE;
    let holds_all = |log: &str| {
        log.lines()
            .rev()
            .find(|l| l.contains("partitions assigned"))
            .is_some_and(|l| l.matches(&format!("{}/", s.raw)).count() == 4)
    };
    while !holds_all(&b.log()) {
        assert!(
            Instant::now() < deadline,
            "b never took over; b:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_committed_to_end(&broker, &s.raw, 4, &b);
    let lb = stop(b);
    assert!(
        !la.contains("abandoned=") || la.contains("abandoned=0"),
        "a:\n{la}"
    );
    assert_eq!(
        committed(&broker, &s.raw, 4),
        ends(&broker, &s.raw, 4),
        "b:\n{lb}"
    );
    clean.poll_for(Duration::from_secs(1));
    let seen = per_input(&clean.records, &[]);
    assert_eq!(seen.len(), 2 * N, "nothing lost");
    // On Kafka each input's record would be read once. The mock keeps no
    // transactional offsets and refuses veil's commit of the same offsets
    // while the group rebalances (RebalanceInProgress), so after each of
    // the two rebalances (b joins, a leaves) the new owners may re-read
    // their partitions from where the last commit outside a rebalance was:
    // repeats are counted, bounded by a re-read of everything per
    // rebalance, and nothing is lost.
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{repeats} repeats of {} inputs after two rebalances (the mock's)",
        2 * N
    );
    assert!(repeats <= 2 * 2 * N, "{repeats}");
}

/// Invariant: a record the broker does not take (one injected
/// non-retriable Produce error) aborts its transaction, which is counted
/// with reason `produce`; the partition is rewound and processed again,
/// so nothing is lost and the offsets reach the end.
#[test]
fn a_produce_error_aborts_rewinds_and_processes_the_inputs_again() {
    injected_error_aborts(
        RDKafkaApiKey::Produce,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
        "produce",
    );
}

/// Invariant: offsets the group coordinator refuses for the transaction
/// (ILLEGAL_GENERATION on TxnOffsetCommit: a member of an old generation)
/// abort it, counted with reason `send_offsets`; nothing is lost.
#[test]
fn refused_transaction_offsets_abort_and_the_inputs_are_processed_again() {
    injected_error_aborts(
        RDKafkaApiKey::TxnOffsetCommit,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        "send_offsets",
    );
}

fn injected_error_aborts(api: RDKafkaApiKey, error: RDKafkaRespErr, reason: &str) {
    const N: usize = 200;
    let broker = mock();
    let s = Setup::new(&broker, 1, "max_events: 50, max_ms: 100");
    let landed = produce(&broker.bootstrap(), &s.raw, &inputs(0, N, 0));
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    cluster.request_errors(api, &[error]);
    let veil = s.start("veil");
    let mut clean = Reader::new(&broker.bootstrap(), &s.clean);
    assert!(
        clean.wait_until(MINUTE, |r| per_input(r, &[]).len() >= N),
        "log:\n{}",
        veil.log()
    );
    wait_committed_to_end(&broker, &s.raw, 1, &veil);
    assert_eq!(
        metric(
            &veil,
            "veil_transaction_aborts_total",
            &[("reason", reason)]
        ),
        1.0,
        "log:\n{}",
        veil.log()
    );
    // After an aborted batch the mock refuses the next one's sequence
    // numbers once (OUT_OF_ORDER_SEQUENCE_NUMBER, an abortable error) when
    // the error was on Produce: that abort is veil recovering too.
    let aborted = metric(&veil, "veil_transactions_total", &[("result", "aborted")]);
    assert!(
        (1.0..=2.0).contains(&aborted),
        "{aborted} aborts; log:\n{}",
        veil.log()
    );
    let log = stop(veil);
    assert!(log.contains("transaction aborted"), "log:\n{log}");
    assert!(
        log.contains(&format!("reason=\"{reason}\"")) || log.contains(&format!("reason={reason}")),
        "log:\n{log}"
    );
    let seen = per_input(&clean.records, &[]);
    let want: BTreeSet<(i32, i64)> = landed.into_iter().collect();
    assert_eq!(
        seen.keys().copied().collect::<BTreeSet<_>>(),
        want,
        "nothing lost"
    );
    assert!(!log.contains("\"b\""), "no event content in the log");
}

/// Invariant: a record the broker refuses for good (INVALID_RECORD on
/// three Produce requests in a row: the first input's record is in each)
/// does not stall its partition by aborting every transaction that holds
/// it: after three refusals a dead letter (reason `rejected_by_broker`,
/// the input's coordinates, no event) takes its place inside the
/// transaction, which commits. Every input ends in exactly one place, clean
/// or refused, among the committed records, the offsets reach the end, and
/// the dead letters are counted.
#[test]
fn a_record_refused_for_good_becomes_a_dead_letter_and_its_transaction_commits() {
    const N: usize = 200;
    let broker = mock();
    let s = Setup::new(&broker, 1, "max_events: 50, max_ms: 100");
    let landed = produce(&broker.bootstrap(), &s.raw, &inputs(0, N, 0));
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 3],
    );
    let veil = s.start("veil");
    let mut clean = Reader::new(&broker.bootstrap(), &s.clean);
    let mut dead = Reader::new(&broker.bootstrap(), &s.dead);
    assert!(
        dead.wait_until(MINUTE, |r| !r.is_empty()),
        "no dead letter; log:\n{}",
        veil.log()
    );
    wait_committed_to_end(&broker, &s.raw, 1, &veil);
    clean.poll_for(Duration::from_millis(500));
    dead.poll_for(Duration::from_millis(500));
    let refused: BTreeSet<(i32, i64)> = dead.records.iter().map(source_of).collect();
    assert!(
        refused.contains(&landed[0]),
        "the first input was refused: {refused:?}"
    );
    for r in &dead.records {
        let letter = r.json();
        assert_eq!(letter["reason"], "rejected_by_broker", "{letter}");
        assert_eq!(letter["route"], "r", "{letter}");
        assert!(
            letter["detail"].as_str().unwrap().contains("InvalidRecord"),
            "{letter}"
        );
        assert_eq!(r.header("veil-reason"), Some("rejected_by_broker"));
        assert!(
            letter.get("event").is_none() && !letter.to_string().contains("\"b\""),
            "no event in {letter}"
        );
    }
    // Nothing lost: every input has a clean record or a dead letter. (The
    // mock shows aborted records too, so "not both" cannot be read here.)
    let forwarded: BTreeSet<(i32, i64)> = clean.records.iter().map(source_of).collect();
    for input in &landed {
        assert!(
            refused.contains(input) || forwarded.contains(input),
            "input {input:?} lost; log:\n{}",
            veil.log()
        );
    }
    let refusals = metric(
        &veil,
        "veil_dead_letters_total",
        &[("reason", "rejected_by_broker")],
    );
    assert_eq!(refusals, refused.len() as f64, "log:\n{}", veil.log());
    assert!(
        metric(
            &veil,
            "veil_transaction_aborts_total",
            &[("reason", "produce")]
        ) >= 3.0,
        "three refusals, three aborts; log:\n{}",
        veil.log()
    );
    let log = stop(veil);
    assert!(log.contains("a dead letter takes its place"), "log:\n{log}");
    assert!(!log.contains("\"b\""), "no event content in the log");
}

/// Invariant: a producer fenced by another with its transactional id (a
/// newer instance taking over the partition; injected as the broker's
/// PRODUCER_FENCED) never goes on as a zombie:
/// veil stops with exit 70 saying why; restarted, it finishes the stream
/// with nothing lost and the offsets at the end.
#[test]
fn a_fenced_producer_stops_veil_with_exit_70_and_a_restart_finishes_the_stream() {
    const N: usize = 100;
    let broker = mock();
    let s = Setup::new(&broker, 1, "max_events: 10, max_ms: 50");
    produce(&broker.bootstrap(), &s.raw, &inputs(0, N, 0));
    let mut veil = s.start("veil");
    let mut clean = Reader::new(&broker.bootstrap(), &s.clean);
    assert!(
        clean.wait_until(MINUTE, |r| r.len() >= N),
        "log:\n{}",
        veil.log()
    );
    wait_committed_to_end(&broker, &s.raw, 1, &veil);
    // What a broker answers a producer whose transactional id a newer
    // one has taken (the mock does not fence by itself: its InitProducerId
    // hands each producer a new id and keeps the old ones valid).
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    cluster.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    produce(&broker.bootstrap(), &s.raw, &inputs(N, N, 0));
    let status = veil.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(70), "log:\n{}", veil.log());
    let log = veil.log();
    assert!(log.contains("cannot go on"), "log:\n{log}");
    let again = s.start("again");
    assert!(
        clean.wait_until(MINUTE, |r| per_input(r, &[]).len() >= 2 * N),
        "log:\n{}",
        again.log()
    );
    wait_committed_to_end(&broker, &s.raw, 1, &again);
    stop(again);
    let seen = per_input(&clean.records, &[]);
    assert_eq!(seen.len(), 2 * N, "nothing lost");
}

// Config validation: every problem with its place, before anything runs.

fn check(yaml: &str) -> Result<veil::config::PipelineConfig, String> {
    veil::config::parse(yaml, Path::new("p.yaml"), &root()).map_err(|e| e.to_string())
}

const KAFKA: &str = "source:\n  kafka:\n    bootstrap_servers: \"127.0.0.1:9\"\n    topics: [raw]\n    group_id: g\n";
const REST: &str = "routes:\n  - name: r\n    policy: p.yaml\n    topic: clean\ndead_letter:\n  topic: dead\nkeys:\n  dir: keys\n";

#[test]
fn exactly_once_is_off_by_default_and_on_with_its_defaults_when_asked() {
    use veil::config::{Delivery, Pipeline, TxnLimits};
    let kafka = |c: veil::config::PipelineConfig| match c.pipeline {
        Pipeline::Kafka(k) => k.source.delivery,
        Pipeline::Files(_) => panic!("kafka"),
    };
    assert_eq!(
        kafka(check(&format!("{KAFKA}{REST}")).unwrap()),
        Delivery::AtLeastOnce
    );
    assert_eq!(
        kafka(check(&format!("{KAFKA}{REST}delivery: at_least_once\n")).unwrap()),
        Delivery::AtLeastOnce
    );
    assert_eq!(
        kafka(check(&format!("{KAFKA}{REST}delivery: exactly_once\n")).unwrap()),
        Delivery::ExactlyOnce(TxnLimits::default())
    );
    assert_eq!(
        kafka(
            check(&format!(
                "{KAFKA}{REST}delivery: exactly_once\nexactly_once:\n  max_events: 7\n  max_ms: 9\n"
            ))
            .unwrap()
        ),
        Delivery::ExactlyOnce(TxnLimits {
            max_events: 7,
            max_age: Duration::from_millis(9)
        })
    );
}

/// Each bad config is refused with exactly one message, at its place.
#[test]
fn exactly_once_configs_that_cannot_hold_are_refused_with_their_place() {
    let files = "source:\n  file: in.ndjson\nroutes:\n  - name: r\n    policy: p.yaml\n    file: out.ndjson\n\
                 dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: keys\ndelivery: exactly_once\n";
    let props = |k: &str, v: &str| {
        format!(
            "{KAFKA}    librdkafka:\n      {k}: {v}\n{REST}delivery: exactly_once\nexactly_once: {{ max_ms: 500 }}\n"
        )
    };
    let producer = |k: &str, v: &str| {
        format!("{KAFKA}    producer:\n      {k}: {v}\n{REST}delivery: exactly_once\n")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            files.to_owned(),
            "p.yaml:11:11:",
            "delivery `exactly_once` needs a Kafka source",
        ),
        (
            props("enable.idempotence", "false"),
            "p.yaml:7:7:",
            "`enable.idempotence` is `false`",
        ),
        (
            producer("enable.idempotence", "false"),
            "p.yaml:7:7:",
            "`enable.idempotence` is `false`",
        ),
        (
            props("isolation.level", "read_uncommitted"),
            "p.yaml:7:7:",
            "`isolation.level` is `read_uncommitted`",
        ),
        (props("acks", "1"), "p.yaml:7:7:", "`acks` is `1`"),
        (
            props("transaction.timeout.ms", "500"),
            "p.yaml:7:7:",
            "greater than exactly_once.max_ms (500)",
        ),
        (
            format!("{KAFKA}{REST}delivery: exactly_twice\n"),
            "p.yaml:14:11:",
            "unknown delivery `exactly_twice`",
        ),
        (
            format!("{KAFKA}{REST}exactly_once: {{ max_events: 10 }}\n"),
            "p.yaml:14:15:",
            "`exactly_once` settings are given, but delivery is `at_least_once`",
        ),
        (
            format!("{KAFKA}{REST}delivery: exactly_once\nexactly_once: {{ max_events: 0 }}\n"),
            "p.yaml:15:29:",
            "exactly_once.max_events is 0",
        ),
        (
            format!("{KAFKA}{REST}delivery: exactly_once\nexactly_once: {{ max_ms: 60000 }}\n"),
            "p.yaml:15:25:",
            "exactly_once.max_ms is 60000; it must be between 1 and 30000",
        ),
        (
            format!("{KAFKA}    librdkafka:\n      transactional.id: x\n{REST}"),
            "p.yaml:7:7:",
            "`transactional.id` is set by veil",
        ),
    ];
    for (yaml, place, message) in cases {
        let e = check(&yaml).expect_err(&yaml);
        let first = e.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(place) && first.contains(message),
            "want `{place} ...{message}...`, got:\n{e}\nfor:\n{yaml}"
        );
        assert_eq!(
            e.lines().filter(|l| l.starts_with("p.yaml:")).count(),
            1,
            "one problem: {e}"
        );
    }
    // Properties that agree with exactly once are accepted.
    check(&props("enable.idempotence", "true")).unwrap();
    check(&props("transaction.timeout.ms", "30000")).unwrap();
    check(&props("isolation.level", "read_committed")).unwrap();
}

#[test]
fn veil_check_refuses_exactly_once_over_files_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        "source:\n  file: in.ndjson\nroutes:\n  - name: r\n    policy: p.yaml\n    file: out.ndjson\n\
         dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: keys\ndelivery: exactly_once\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.yaml:11:11: delivery `exactly_once` needs a Kafka source"),
        "{stderr}"
    );
}
