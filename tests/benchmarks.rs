//! BENCHMARKS.md can be reproduced from a clone: its reference data comes
//! from the generator in the repository, nothing refers to files outside
//! it, and a smoke run of the end-to-end bench (what `cargo test` runs)
//! prints no speed that could be mistaken for a measurement.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)] // the bench uses all of it; these tests only the report
#[path = "../benches/e2e/report.rs"]
mod report;

use report::{Latency, Mode, Run, Summary};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_in_repo_generator_reproduces_the_example_events_byte_for_byte() {
    let generated = match Command::new("python3")
        .arg(root().join("tools/gen_events.py"))
        .args(["1000", "7"])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: python3 not found");
            return;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let example = std::fs::read(root().join("examples/events.ndjson")).unwrap();
    assert!(
        generated.stdout == example,
        "tools/gen_events.py 1000 7 no longer writes examples/events.ndjson"
    );
}

/// Every text file of the repository (not built, not git's own).
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !["target", ".git", "corpus", "artifacts"].contains(&name.as_str()) {
                text_files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

#[test]
fn nothing_in_the_repository_refers_to_a_generator_outside_it() {
    // Spelt in two halves so that this file does not match itself.
    let outside = format!("{}/{}", "..", "shared/");
    let mut files = Vec::new();
    text_files(&root(), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&outside)))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "refer outside the repository: {offenders:?}"
    );
}

#[test]
fn a_smoke_run_prints_no_speed_and_no_ratio() {
    // A debug build on a tiny load once printed "veil / relay throughput: 0.07".
    let run = |events_per_s| Run {
        events_per_s,
        mb_per_s: 1.0,
        cpu_s_per_m: 100.0,
        peak_rss_mb: 50.0,
    };
    let results = HashMap::from([("relay", vec![run(1000.0)]), ("veil", vec![run(70.0)])]);
    let latency = [Latency {
        broker: "mock",
        who: "veil",
        p50_ms: 36.0,
        p99_ms: 66.0,
        events: 1000,
    }];
    let summary = Summary {
        results: &results,
        latency: &latency,
        events: 2000,
        input_bytes: 3_000_000,
        rounds: 1,
        partitions: 4,
        rate: 500,
        seconds: 2,
        broker: "mock",
    };
    // `cargo test` runs the bench unoptimised and without `--bench`.
    assert_eq!(Mode::new(false, false), Mode::Smoke);
    assert_eq!(Mode::new(true, false), Mode::Smoke);
    assert_eq!(Mode::new(false, true), Mode::Smoke);
    assert_eq!(
        report::report(Mode::Smoke, &summary),
        "\nsmoke run (2000 events, 1 round(s), mock broker): relay and veil delivered exactly \
         what they should. No speeds or ratios: this build is not the one to measure \
         (run `cargo bench --bench e2e` or `bash benches/e2e.sh`).\n"
    );
    assert_eq!(
        report::round(Mode::Smoke, 0, "veil", &run(70.0)),
        "round 0 veil: delivered every expected output"
    );
    assert_eq!(
        report::latency(Mode::Smoke, &latency[0]),
        "latency veil on mock: read back all 1000 events"
    );
    // `cargo bench` measures, and reports the ratio.
    assert_eq!(Mode::new(true, true), Mode::Measure);
    let measured = report::report(Mode::Measure, &summary);
    assert!(
        measured.contains("\nveil / relay throughput: 0.07 "),
        "{measured}"
    );
}
