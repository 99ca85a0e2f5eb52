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

use report::{Latency, Mode, Point, Run, Scaling, Soak, SoakSample, Summary};

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
    let run = |events_per_s, broker| Run {
        events_per_s,
        mb_per_s: 1.0,
        cpu_s_per_m: 100.0,
        peak_rss_mb: 50.0,
        broker_cpu_s_per_m: Some(broker),
    };
    let results = HashMap::from([
        ("relay", vec![run(1000.0, 8.0)]),
        ("veil", vec![run(70.0, 2.0)]),
    ]);
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
        report::round(Mode::Smoke, 0, "veil", &run(70.0, 2.0)),
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
    // The broker's share, where the bench knows its pid: 100 + 8 vs 100 + 2.
    assert!(
        measured.contains(
            "\nbroker CPU-s / M events while serving: relay 8.0, veil 2.0; \
             contestant + broker: relay 108.0, veil 102.0 (0.94x)\n"
        ),
        "{measured}"
    );
}

#[test]
fn smoke_runs_of_the_scaling_and_soak_modes_print_no_speed_and_no_memory() {
    let point = |who, workers: Option<usize>, events_per_s| Point {
        who,
        partitions: 1,
        workers,
        round: 0,
        run: Run {
            events_per_s,
            mb_per_s: 1.0,
            cpu_s_per_m: 100.0,
            peak_rss_mb: 50.0,
            broker_cpu_s_per_m: None,
        },
        worker_cpu_s: workers.map_or(vec![], |w| vec![1.0; w]),
        busiest: "main".into(),
        busiest_cpu_s: 1.0,
    };
    let points = [point("relay", None, 1000.0), point("veil", Some(1), 70.0)];
    let scaling = Scaling {
        points: &points,
        events: 2000,
        input_bytes: 3_000_000,
        rounds: 1,
        broker: "mock",
        cores: 2,
    };
    assert_eq!(
        report::scaling(Mode::Smoke, &scaling),
        "\nsmoke run (scaling, 2000 events, 1 round(s), mock broker): at every point \
         (partitions/workers 1/1) veil and the relay delivered exactly what they should. \
         No speeds or ratios: this build is not the one to measure \
         (run `bash benches/e2e.sh scaling`).\n"
    );
    assert_eq!(
        report::scaling_round(Mode::Smoke, &points[1]),
        "round 0 veil at 1 partition(s), 1 worker(s): delivered every expected output"
    );
    let measured = report::scaling(Mode::Measure, &scaling);
    assert!(
        measured.contains("\n| 1 | 1 | 70 | 1.00x | 100.0 | 100 | 3 (main) | 1000 | 1.00x | 100.0 | 50 (main) | 0.07 |\n"),
        "{measured}"
    );

    let sample = |t_s, rss_mb, drained| SoakSample {
        t_s,
        rss_mb,
        hwm_mb: 13.0,
        committed: 4,
        produced: 5,
        deleted_unread: 0,
        drained,
    };
    let samples = [
        sample(0.0, 10.0, false),
        sample(60.0, 11.0, false),
        sample(120.0, 12.0, false),
        sample(121.0, 12.5, true),
    ];
    let soak = Soak {
        samples: &samples,
        seconds: 120,
        rate: 500,
        broker: "mock",
        cpu_s_per_m: 66.0,
    };
    assert_eq!(
        report::soak(Mode::Smoke, &soak),
        "\nsoak smoke run (120 s at 500 events/s, mock broker): veil committed all 5 inputs; \
         4 samples taken. No memory or CPU figures: this build is not the one to measure \
         (run `bash benches/e2e.sh soak`).\n"
    );
    assert_eq!(
        report::soak_sample(Mode::Smoke, &samples[3]),
        "t 121 s (drained): committed 4 of 5"
    );
    let measured = report::soak(Mode::Measure, &soak);
    assert!(
        measured.contains(
            "RSS at 1 min: 11.0 MB; at the end: 12.5 MB; max sampled: 12.5 MB (VmHWM 13.0 MB); \
             slope over the second half: +1.00 MB/min"
        ),
        "{measured}"
    );
    assert!(!measured.contains("WARNING"), "{measured}");
}
