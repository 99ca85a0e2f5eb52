//! An input that makes veil panic is dead-lettered as `internal_error` and
//! the stream goes on: in `veil apply`, file-mode `veil run` and the Kafka
//! service. The inputs are real ones that panicked in the engine
//! (`truncate_time` on `9999-12-31T23:59:59-01:00`, issue 9). Once the
//! engine removes such a time as `invalid` they no longer panic; the tests
//! then check that they were forwarded without it, and the guard itself
//! stays covered by the unit tests in `src/stage/tests.rs`, which inject a
//! panic through the engine-call parameter.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http;
use support::kafka::{Broker, Reader, Veil, produce};
use veil::{CompiledPolicy, Limits, Outcome, Scratch, compile};

/// Under `sentAt: { truncate_time: second }` this panicked in the engine.
const POISON_TIME: &str = "9999-12-31T23:59:59-01:00";
/// Stands for personal data in a poisoned input: it must never be logged.
const SECRET: &str = "user-raw-secret-4711";
const MINUTE: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_policy() -> CompiledPolicy {
    let policy = veil::policy::load(&root().join("config/policy.yaml")).unwrap();
    let ring = veil::keys::load_dir(&root().join("tests/keys"), None).unwrap();
    compile(policy, ring.active(), Limits::default())
}

/// `n` example events the shipped policy forwards, each with its clean output.
fn good(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let policy = shipped_policy();
    support::data::example_events()
        .into_iter()
        .filter_map(|e| {
            let mut out = Vec::new();
            let v = policy.apply(&e, &mut out, &mut Scratch::default());
            (v.outcome == Outcome::Forwarded).then_some((e, out))
        })
        .take(n)
        .collect()
}

/// A consented event with the time that panicked and a raw identifier.
fn poisoned(event: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(event).unwrap();
    v["sentAt"] = POISON_TIME.into();
    v["userId"] = SECRET.into();
    serde_json::to_vec(&v).unwrap()
}

/// good, poisoned, good, poisoned, ...: the good ones must flow past.
fn interleaved(good: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    good.iter()
        .flat_map(|(e, _)| [e.clone(), poisoned(e)])
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// No raw identifier and no raw time from a poisoned input.
fn assert_clean(what: &str, bytes: &[u8]) {
    assert!(
        !contains(bytes, SECRET) && !contains(bytes, POISON_TIME),
        "{what} holds poisoned content:\n{}",
        String::from_utf8_lossy(bytes)
    );
}

fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// File outputs of a run over `interleaved(good)`: every good input's
/// clean line is there, and each poisoned one (the even lines) is either
/// dead-lettered as `internal_error` or forwarded clean.
fn check_file_run(o: &Output, good: &[(Vec<u8>, Vec<u8>)], clean: &Path, dead: &Path) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_clean("stderr", &o.stderr);
    let out = std::fs::read(clean).unwrap();
    assert_clean("the output", &out);
    let lines: Vec<&[u8]> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for (_, want) in good {
        assert!(lines.contains(&want.as_slice()), "a good input was lost");
    }
    let dead_letters = ndjson(dead);
    assert_clean("the dead letters", &std::fs::read(dead).unwrap());
    for d in &dead_letters {
        assert_eq!(d["reason"], "internal_error", "{d}");
        assert_eq!(
            d["line"].as_u64().unwrap() % 2,
            0,
            "only poisoned lines: {d}"
        );
    }
    eprintln!(
        "poisoned inputs: {} dead-lettered, {} forwarded",
        dead_letters.len(),
        lines.len() - good.len()
    );
    assert_eq!(
        dead_letters.len() + (lines.len() - good.len()),
        good.len(),
        "each poisoned input either dead-lettered or forwarded, once"
    );
    if !dead_letters.is_empty() {
        assert!(
            stderr.contains(&format!("internal_error {}", dead_letters.len()))
                || stderr.contains(&format!("{} dead-lettered", dead_letters.len())),
            "the summary counts them:\n{stderr}"
        );
    }
}

#[test]
fn apply_dead_letters_an_input_that_panicked_and_carries_on() {
    let good = good(4);
    let dir = tempfile::tempdir().unwrap();
    let (input, clean, dead) = (
        dir.path().join("in.ndjson"),
        dir.path().join("out.ndjson"),
        dir.path().join("dead.ndjson"),
    );
    std::fs::write(&input, interleaved(&good).join(&b'\n')).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args([
            "apply",
            "--policy",
            "config/policy.yaml",
            "--keys",
            "tests/keys",
        ])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&clean)
        .arg("--dead-letter")
        .arg(&dead)
        .output()
        .unwrap();
    check_file_run(&o, &good, &clean, &dead);
}

#[test]
fn file_mode_run_dead_letters_an_input_that_panicked_and_carries_on() {
    let good = good(4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.ndjson"), interleaved(&good).join(&b'\n')).unwrap();
    let config = d.join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  file: in.ndjson\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    file: clean.ndjson\n\
             dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: \"{}\"\n",
            root().join("config/policy.yaml").display(),
            root().join("tests/keys").display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    check_file_run(&o, &good, &d.join("clean.ndjson"), &d.join("dead.ndjson"));
}

#[test]
fn kafka_dead_letters_an_input_that_panicked_and_the_partition_keeps_flowing() {
    let broker = Broker::start();
    let (raw, clean, dead) = (
        broker.topic("raw", 1),
        broker.topic("clean", 1),
        broker.topic("dead", 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  kafka:\n    bootstrap_servers: \"{}\"\n    topics: [{raw}]\n    group_id: {raw}-veil\n\
             routes:\n  - name: analytics\n    policy: \"{}\"\n    topic: {clean}\n\
             dead_letter:\n  topic: {dead}\nkeys:\n  dir: \"{}\"\nworkers: 1\n\
             shutdown:\n  drain_timeout_seconds: 10\nmetrics:\n  listen: 127.0.0.1:0\n",
            broker.bootstrap(),
            root().join("config/policy.yaml").display(),
            root().join("tests/keys").display()
        ),
    )
    .unwrap();
    let good = good(4);
    let records: Vec<(Option<Vec<u8>>, Vec<u8>)> = interleaved(&good)
        .into_iter()
        .map(|v| (Some(SECRET.as_bytes().to_vec()), v))
        .collect();
    let landed = produce(&broker.bootstrap(), &raw, &records);

    let mut veil = Veil::start(&config, &dir.path().join("veil.log"));
    let mut out = Reader::new(&broker.bootstrap(), &clean);
    let mut dl = Reader::new(&broker.bootstrap(), &dead);
    // Every input accounted for: outputs and dead letters together.
    let deadline = Instant::now() + MINUTE;
    while out.records.len() + dl.records.len() < records.len() {
        assert!(Instant::now() < deadline, "stalled; log:\n{}", veil.log());
        out.poll_for(Duration::from_millis(200));
        dl.poll_for(Duration::from_millis(200));
    }
    out.poll_for(Duration::from_secs(1));
    dl.poll_for(Duration::from_secs(1));
    assert_eq!(
        out.records.len() + dl.records.len(),
        records.len(),
        "one output or dead letter per input"
    );
    eprintln!(
        "poisoned inputs: {} dead-lettered, {} forwarded",
        dl.records.len(),
        out.records.len() - good.len()
    );
    let poisoned: BTreeSet<i64> = landed.iter().skip(1).step_by(2).map(|l| l.1).collect();
    for r in &out.records {
        assert_clean("a clean record", &r.value);
        assert!(!r.key.as_deref().is_some_and(|k| contains(k, SECRET)));
    }
    let goods_out = out
        .records
        .iter()
        .filter(|r| !poisoned.contains(&r.source().1))
        .count();
    assert_eq!(goods_out, good.len(), "every good input forwarded");
    for r in &dl.records {
        assert!(poisoned.contains(&r.source().1));
        assert_eq!(r.header("veil-reason"), Some("internal_error"));
        assert_eq!(r.json()["reason"], "internal_error");
        assert_clean("a dead letter", &r.value);
    }

    // Still alive and ready, and the metrics say what happened.
    assert!(veil.is_running(), "log:\n{}", veil.log());
    let addr = http::served_addr(&veil.log()).expect("endpoint address in the log");
    assert_eq!(http::get(&addr, "/readyz").0, 200);
    let (_, text) = http::get(&addr, "/metrics");
    assert_eq!(
        http::sum(
            &text,
            "veil_dead_letters_total",
            &[("reason", "internal_error")]
        ),
        dl.records.len() as f64
    );

    veil.signal("TERM");
    assert!(veil.wait(MINUTE).success(), "log:\n{}", veil.log());
    assert_clean("the log", veil.log().as_bytes());
}
