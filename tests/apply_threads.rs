//! `veil apply --threads N` (issue 14): lines are read in batches, applied
//! on N threads and written in input order, so every output file is byte
//! for byte what one thread writes, dead letters (with their line numbers)
//! included, whatever the input holds: valid events, malformed lines,
//! lines over the size limit, blank lines, CRLF endings.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/keys.rs"]
mod keys;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An input of several batches (a batch is 1,024 lines), mixing the
/// example events, the bad ones and lines of every odd kind.
fn input(dir: &Path) -> PathBuf {
    let good = std::fs::read(root().join("examples/events.ndjson")).unwrap();
    let bad = std::fs::read(root().join("examples/bad-events.ndjson")).unwrap();
    let good: Vec<&[u8]> = good
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // Malformed JSON, wrong shapes and invalid UTF-8.
    let bad: Vec<&[u8]> = bad
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let huge = format!("{{\"type\":\"track\",\"pad\":\"{}\"}}", "x".repeat(5000));
    let mut text = Vec::new();
    for i in 0..4_500usize {
        match i % 97 {
            13 => text.extend_from_slice(bad[i % bad.len()]),
            29 => text.extend_from_slice(huge.as_bytes()),
            41 => {}
            53 => text.extend_from_slice(b"{\"type\":\"track\",\"event\":\"x\"}\r"),
            _ => text.extend_from_slice(good[i % good.len()]),
        }
        text.push(b'\n');
    }
    let path = dir.join("in.ndjson");
    std::fs::write(&path, text).unwrap();
    path
}

fn apply(input: &Path, dir: &Path, threads: &str) -> (Vec<u8>, Vec<u8>, String) {
    apply_with(input, dir, threads, "0")
}

fn apply_with(input: &Path, dir: &Path, threads: &str, cache: &str) -> (Vec<u8>, Vec<u8>, String) {
    // A 0644 key would add a timestamped warning that differs by run.
    keys::private_keys();
    let (out, dead) = (
        dir.join(format!("out-{threads}-{cache}.ndjson")),
        dir.join(format!("dead-{threads}-{cache}.ndjson")),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .current_dir(root())
        .args([
            "apply",
            "--policy",
            "config/policy.yaml",
            "--keys",
            "tests/keys",
        ])
        .args(["--max-message-bytes", "4096", "--threads", threads])
        .args(["--pseudonym-cache", cache])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (
        std::fs::read(out).unwrap(),
        std::fs::read(dead).unwrap(),
        stderr,
    )
}

/// The summary without its timing (events/s and seconds differ by run).
/// The summary without its timings, and its log lines without their timestamps.
fn counts(summary: &str) -> String {
    summary
        .lines()
        .filter(|l| !l.contains("events/s"))
        .map(|l| l.split_once(" WARN ").map_or(l, |(_, w)| w))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn any_number_of_threads_writes_what_one_thread_writes() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let (out1, dead1, sum1) = apply(&input, dir.path(), "1");
    let dead_lines = dead1
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(out1.len() > 100_000, "clean output: {} bytes", out1.len());
    assert!(dead_lines >= 90, "{dead_lines} dead letters");
    for threads in ["2", "3", "8"] {
        let (out, dead, sum) = apply(&input, dir.path(), threads);
        assert!(
            out == out1,
            "--threads {threads}: output differs from one thread's"
        );
        assert!(
            dead == dead1,
            "--threads {threads}: dead letters differ from one thread's"
        );
        assert_eq!(
            counts(&sum),
            counts(&sum1),
            "--threads {threads}: summary counts"
        );
    }
    // A pseudonym cache (tiny: evictions all the time; large: hits) changes
    // nothing either.
    for (threads, cache) in [("1", "4"), ("2", "65536")] {
        let (out, dead, _) = apply_with(&input, dir.path(), threads, cache);
        assert!(
            out == out1 && dead == dead1,
            "--threads {threads} --pseudonym-cache {cache}"
        );
    }
    // The dead letters name the input lines: the oversize ones are lines
    // 30, 127, ... (i % 97 == 29, counted from 1).
    let text = String::from_utf8(dead1).unwrap();
    assert!(
        text.contains("\"line\":30,") || text.contains("\"line\":30}"),
        "{text}"
    );
}

#[test]
fn zero_threads_is_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .current_dir(root())
        .args([
            "apply",
            "--policy",
            "config/policy.yaml",
            "--keys",
            "tests/keys",
            "--threads",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
