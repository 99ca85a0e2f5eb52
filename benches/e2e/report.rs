//! What the end-to-end bench prints. A measurement (`cargo bench --bench
//! e2e`, optimised) reports speeds, CPU, memory, latency and the veil /
//! relay ratios. A smoke run (`cargo test`, which builds the bench
//! unoptimised and runs it on a tiny load) only checks that both
//! contestants deliver exactly what they should: its speeds would be those
//! of a debug build under a test harness, so it prints none, and says so.
//! Kept apart from the bench so that `tests/benchmarks.rs` can check that.

use std::collections::HashMap;
use std::fmt::Write;

/// One contestant's measured run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub events_per_s: f64,
    pub mb_per_s: f64,
    pub cpu_s_per_m: f64,
    pub peak_rss_mb: f64,
}

/// Latency of one contestant on one broker: p50 and p99 in ms, events timed.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub broker: &'static str,
    pub who: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub events: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Measure,
    Smoke,
}

impl Mode {
    /// A measurement only when asked for (`cargo bench` passes `--bench`)
    /// and built optimised.
    pub fn new(bench_flag: bool, optimised: bool) -> Mode {
        if bench_flag && optimised {
            Mode::Measure
        } else {
            Mode::Smoke
        }
    }
}

/// The line after each round.
pub fn round(mode: Mode, round: usize, who: &str, run: &Run) -> String {
    match mode {
        Mode::Measure => format!("round {round} {who}: {run:?}"),
        Mode::Smoke => format!("round {round} {who}: delivered every expected output"),
    }
}

/// The line after each latency phase.
pub fn latency(mode: Mode, l: &Latency) -> String {
    match mode {
        Mode::Measure => format!(
            "latency {} on {}: p50 {:.0} ms, p99 {:.0} ms ({} events)",
            l.who, l.broker, l.p50_ms, l.p99_ms, l.events
        ),
        Mode::Smoke => format!(
            "latency {} on {}: read back all {} events",
            l.who, l.broker, l.events
        ),
    }
}

/// Everything a run concludes, on stdout.
pub struct Summary<'a> {
    pub results: &'a HashMap<&'static str, Vec<Run>>,
    pub latency: &'a [Latency],
    pub events: usize,
    pub input_bytes: usize,
    pub rounds: usize,
    pub partitions: i32,
    /// The latency phase's rate (events/s) and length (s).
    pub rate: usize,
    pub seconds: usize,
    pub broker: &'static str,
}

pub fn report(mode: Mode, s: &Summary<'_>) -> String {
    let mut out = String::new();
    if mode == Mode::Smoke {
        let _ = writeln!(
            out,
            "\nsmoke run ({} events, {} round(s), {} broker): relay and veil delivered exactly \
             what they should. No speeds or ratios: this build is not the one to measure \
             (run `cargo bench --bench e2e` or `bash benches/e2e.sh`).",
            s.events, s.rounds, s.broker
        );
        return out;
    }
    let median = |who: &str, f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = s.results[who].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let _ = writeln!(
        out,
        "\n{} events ({:.1} MB), {} partitions, broker: {}, {} round(s), medians\n",
        s.events,
        s.input_bytes as f64 / 1e6,
        s.partitions,
        s.broker,
        s.rounds
    );
    let _ = writeln!(
        out,
        "| | events/s | MB/s | CPU-s / M events | peak RSS MB | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|"
    );
    for who in ["relay", "veil"] {
        let Some(l) = s
            .latency
            .iter()
            .find(|l| l.broker == s.broker && l.who == who)
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {who} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
            median(who, |r| r.events_per_s),
            median(who, |r| r.mb_per_s),
            median(who, |r| r.cpu_s_per_m),
            median(who, |r| r.peak_rss_mb),
            l.p50_ms,
            l.p99_ms,
        );
    }
    let per_round: Vec<f64> = s.results["veil"]
        .iter()
        .zip(&s.results["relay"])
        .map(|(v, r)| v.events_per_s / r.events_per_s)
        .collect();
    let mut sorted = per_round.clone();
    sorted.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "\nveil / relay throughput: {:.2} (median of per-round ratios {per_round:.2?}); CPU per event: {:.2}x the relay's",
        sorted[sorted.len() / 2],
        median("veil", |r| r.cpu_s_per_m) / median("relay", |r| r.cpu_s_per_m)
    );
    let _ = writeln!(
        out,
        "latency at {} events/s for {} s: send to read back, including both Kafka hops",
        s.rate, s.seconds
    );
    for l in s.latency.iter().filter(|l| l.broker != s.broker) {
        let _ = writeln!(
            out,
            "latency on the {} cluster: {} p50 {:.0} ms, p99 {:.0} ms ({} events)",
            l.broker, l.who, l.p50_ms, l.p99_ms, l.events
        );
    }
    out
}
