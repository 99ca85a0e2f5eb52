//! Shadow mode (`routes[].shadow`, issue 13): a candidate policy applied
//! beside the live one, compared, never produced.
//!
//! The oracle is written from the documented semantics, apart from veil:
//! the live policy truncates IPv4 addresses to /24 and the candidate to
//! /16, so an address's value differs exactly when its third octet is not 0
//! (computed here with `std::net`); the candidate keeps `referrer` (added
//! wherever an event has one) and drops `ping` events (now dropped). A line
//! that is not JSON is dead-lettered by the live policy and not compared.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::http;
use support::kafka::{Broker, Reader, Veil, produce};

const LIVE: &str = "name: live\nversion: 1\npurpose: analytics\nfields:\n  id: keep\n  type: keep\n  ip: { ip_prefix: { v4: 24, v6: 48 } }\n";
const CANDIDATE: &str = "name: candidate\nversion: 2\npurpose: analytics\nfields:\n  id: keep\n  type: keep\n  ip: { ip_prefix: { v4: 16, v6: 32 } }\n  referrer: keep\nrules:\n  - when: { type: ping }\n    drop: true\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The inputs, and what the oracle expects of them:
/// (inputs compared, inputs that differ, ip changed, referrer added, now dropped).
fn events(n: usize) -> (Vec<String>, [u64; 5]) {
    let mut lines = Vec::new();
    let (mut compared, mut differ, mut ip, mut referrer, mut dropped) = (0, 0, 0, 0, 0);
    for i in 0..n {
        if i % 17 == 16 {
            lines.push(format!("{{\"id\": {i}, \"type\""));
            continue;
        }
        compared += 1;
        let addr = Ipv4Addr::new(10, (i % 5) as u8, (i % 3) as u8, (i % 250) as u8);
        let ping = i % 7 == 0;
        let with_referrer = i % 4 == 0;
        let mut e = json!({"id": i, "type": if ping { "ping" } else { "page" }, "ip": addr.to_string(), "secret": "s3cret"});
        if with_referrer {
            e["referrer"] = json!("https://example.com/");
        }
        lines.push(e.to_string());
        if ping {
            dropped += 1;
            differ += 1;
            continue;
        }
        let mask = |bits: u32| u32::from(addr) & (u32::MAX << (32 - bits));
        let ip_differs = mask(24) != mask(16);
        ip += u64::from(ip_differs);
        referrer += u64::from(with_referrer);
        differ += u64::from(ip_differs || with_referrer);
    }
    (lines, [compared, differ, ip, referrer, dropped])
}

/// Every IP address the events carry (none may show in a log or a metric).
fn ips(lines: &[String]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["ip"].as_str().map(str::to_owned))
        .collect()
}

fn write_policies(dir: &Path) -> (PathBuf, PathBuf) {
    let (live, candidate) = (dir.join("live.yaml"), dir.join("candidate.yaml"));
    std::fs::write(&live, LIVE).unwrap();
    std::fs::write(&candidate, CANDIDATE).unwrap();
    (live, candidate)
}

/// `veil run` over files, with or without the shadow; returns the clean
/// output, the dead letters and stderr.
fn run_files(dir: &Path, input: &Path, shadow: bool) -> (String, String, String) {
    let (live, candidate) = write_policies(dir);
    let tag = if shadow { "shadow" } else { "plain" };
    let (out, dead) = (
        dir.join(format!("{tag}-clean.ndjson")),
        dir.join(format!("{tag}-dead.ndjson")),
    );
    let shadow_line = if shadow {
        format!("    shadow: \"{}\"\n", candidate.display())
    } else {
        String::new()
    };
    let config = dir.join(format!("{tag}.yaml"));
    std::fs::write(
        &config,
        format!(
            "source:\n  file: \"{}\"\nroutes:\n  - name: analytics\n    policy: \"{}\"\n{shadow_line}    file: \"{}\"\n\
             dead_letter:\n  file: \"{}\"\nkeys:\n  dir: \"{}\"\n",
            input.display(),
            live.display(),
            out.display(),
            dead.display(),
            root().join("tests/keys").display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(dead).unwrap(),
        stderr,
    )
}

/// Invariant: a file run with a shadow policy writes byte for byte what the
/// run without it writes, and its summary says how many inputs the
/// candidate would have changed, and how, exactly as the oracle counts.
#[test]
fn a_file_run_with_a_shadow_writes_the_live_output_unchanged_and_counts_what_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, [compared, differ, ip, referrer, dropped]) = events(300);
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let (plain_out, plain_dead, _) = run_files(dir.path(), &input, false);
    let (shadow_out, shadow_dead, stderr) = run_files(dir.path(), &input, true);
    assert_eq!(shadow_out, plain_out, "the live output is unchanged");
    assert_eq!(shadow_dead, plain_dead, "the dead letters are unchanged");
    assert!(
        !plain_out.contains("referrer"),
        "the candidate is never produced"
    );

    let summary = format!(
        "shadow of route analytics (candidate@2): {differ} of {compared} inputs would come out differently"
    );
    assert!(stderr.contains(&summary), "want `{summary}` in:\n{stderr}");
    for part in [
        format!("ip changed x{ip}"),
        format!("referrer added x{referrer}"),
        format!("(event) now_dropped x{dropped}"),
    ] {
        assert!(stderr.contains(&part), "want `{part}` in:\n{stderr}");
    }
    assert!(!stderr.contains("s3cret"), "no values:\n{stderr}");
    for ip in ips(&lines) {
        assert!(!stderr.contains(&ip), "{ip} in:\n{stderr}");
    }
}

/// Invariant: a shadow policy that does not validate stops `veil check`
/// (exit 64) with its file, line and column and the route it shadows; one
/// naming the live policy itself is refused at its place in the config.
#[test]
fn an_invalid_shadow_policy_or_the_live_one_as_shadow_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = write_policies(dir.path());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nversion: 1\npurpose: analytics\nfields:\n  id: kep\n",
    )
    .unwrap();
    for (shadow, want) in [
        (
            bad.display().to_string(),
            "route `analytics`'s shadow policy".to_owned(),
        ),
        (
            live.display().to_string(),
            "shadow policy is its live policy".to_owned(),
        ),
    ] {
        let config = dir.path().join("c.yaml");
        std::fs::write(
            &config,
            format!(
                "source:\n  file: in.ndjson\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    shadow: \"{shadow}\"\n    file: out.ndjson\n\
                 dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: \"{}\"\n",
                live.display(),
                root().join("tests/keys").display()
            ),
        )
        .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(&want), "want `{want}` in:\n{stderr}");
    }
    // The bad policy's own place is named.
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  file: in.ndjson\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    shadow: \"{}\"\n    file: out.ndjson\n\
             dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: \"{}\"\n",
            live.display(),
            bad.display(),
            root().join("tests/keys").display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("bad.yaml:5:"), "{stderr}");
}

/// Invariant (on the test broker, Tansu in CI): with a shadow policy the
/// clean topic holds the same records, byte for byte, as a run without
/// one, and `/metrics` counts the candidate's differences by path class and
/// change exactly as the oracle does, with no value in any label.
#[test]
fn on_the_broker_the_live_output_is_unchanged_and_the_differences_are_scraped() {
    const N: usize = 400;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (live, candidate) = write_policies(dir.path());
    let (lines, [compared, differ, ip, referrer, dropped]) = events(N);
    let inputs: Vec<(Option<Vec<u8>>, Vec<u8>)> = lines
        .iter()
        .map(|l| (None, l.clone().into_bytes()))
        .collect();

    let mut outputs = Vec::new();
    for shadow in [false, true] {
        let (raw, clean, dead) = (
            broker.topic("raw", 1),
            broker.topic("clean", 1),
            broker.topic("dead", 1),
        );
        produce(&broker.bootstrap(), &raw, &inputs);
        let shadow_line = if shadow {
            format!("    shadow: \"{}\"\n", candidate.display())
        } else {
            String::new()
        };
        let config = dir.path().join(format!("pipeline-{shadow}.yaml"));
        std::fs::write(
            &config,
            format!(
                "source:\n  kafka:\n    bootstrap_servers: \"{}\"\n    topics: [{raw}]\n    group_id: {raw}-veil\n\
                 routes:\n  - name: analytics\n    policy: \"{}\"\n{shadow_line}    topic: {clean}\n\
                 dead_letter:\n  topic: {dead}\nkeys:\n  dir: \"{}\"\nmetrics:\n  listen: 127.0.0.1:0\n",
                broker.bootstrap(),
                live.display(),
                root().join("tests/keys").display()
            ),
        )
        .unwrap();
        let mut veil = Veil::start(&config, &dir.path().join(format!("veil-{shadow}.log")));
        let mut out = Reader::new(&broker.bootstrap(), &clean);
        let want = (compared - dropped) as usize; // the live policy drops none
        assert!(
            out.wait_until(Duration::from_secs(90), |r| r.len() >= want),
            "{} of {want} outputs; log:\n{}",
            out.records.len(),
            veil.log()
        );
        out.poll_for(Duration::from_millis(500));
        if shadow {
            let addr = http::served_addr(&veil.log()).expect("metrics address in the log");
            let (_, metrics) = http::get(&addr, "/metrics");
            let at = |labels: &[(&str, &str)]| {
                http::sum(&metrics, "veil_shadow_differences_total", labels)
            };
            let events = |result| {
                http::sum(
                    &metrics,
                    "veil_shadow_events_total",
                    &[("route", "analytics"), ("result", result)],
                )
            };
            assert_eq!(events("different"), differ as f64, "{metrics}");
            assert_eq!(events("same"), (compared - differ) as f64, "{metrics}");
            assert_eq!(
                at(&[("path_class", "ip"), ("change", "changed")]),
                ip as f64
            );
            assert_eq!(
                at(&[("path_class", "referrer"), ("change", "added")]),
                referrer as f64
            );
            assert_eq!(
                at(&[("path_class", "(event)"), ("change", "now_dropped")]),
                dropped as f64
            );
            assert_eq!(
                at(&[]),
                (ip + referrer + dropped) as f64,
                "no other difference:\n{metrics}"
            );
            assert!(!metrics.contains("s3cret"));
            for ip in ips(&lines) {
                assert!(!metrics.contains(&ip), "{ip} in the metrics");
            }
        }
        veil.signal("TERM");
        assert!(
            veil.wait(Duration::from_secs(60)).success(),
            "{}",
            veil.log()
        );
        let mut payloads: Vec<Vec<u8>> = out.records.iter().map(|r| r.value.clone()).collect();
        payloads.sort();
        outputs.push(payloads);
    }
    assert_eq!(outputs[0].len(), outputs[1].len());
    assert!(
        outputs[0] == outputs[1],
        "the live output is unchanged by the shadow"
    );
}
