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
    /// The broker's CPU seconds per million inputs while serving this run,
    /// from the contestant's start until every input was committed (the
    /// broker is shared: this also holds the bench's own polling of the
    /// group's offsets); `None` where the broker's pid is unknown.
    pub broker_cpu_s_per_m: Option<f64>,
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
    // Where the broker runs on the same cores, its work is part of what
    // each contestant's throughput pays for.
    let broker_median = |who: &str| {
        let mut v: Vec<f64> = s.results[who]
            .iter()
            .filter_map(|r| r.broker_cpu_s_per_m)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    if let (Some(br), Some(bv)) = (broker_median("relay"), broker_median("veil")) {
        let (r, v) = (
            median("relay", |r| r.cpu_s_per_m),
            median("veil", |r| r.cpu_s_per_m),
        );
        let _ = writeln!(
            out,
            "broker CPU-s / M events while serving: relay {br:.1}, veil {bv:.1}; \
             contestant + broker: relay {:.1}, veil {:.1} ({:.2}x)",
            r + br,
            v + bv,
            (v + bv) / (r + br)
        );
    }
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

// ---------------------------------------------------------------------------
// Scaling: the same measurement at several partition and worker counts.

/// One contestant's run at one (partitions, workers) point.
#[derive(Debug, Clone)]
pub struct Point {
    pub who: &'static str,
    pub partitions: i32,
    /// veil's workers; `None` for the relay (one thread).
    pub workers: Option<usize>,
    pub round: usize,
    pub run: Run,
    /// CPU seconds of each of veil's worker threads (empty for the relay).
    pub worker_cpu_s: Vec<f64>,
    /// The thread that used the most CPU, and its CPU seconds.
    pub busiest: String,
    pub busiest_cpu_s: f64,
}

impl Point {
    fn at(&self) -> String {
        match self.workers {
            Some(w) => format!("{} partition(s), {w} worker(s)", self.partitions),
            None => format!("{} partition(s)", self.partitions),
        }
    }

    /// Each worker's share of the workers' CPU, in percent.
    fn worker_shares(&self) -> Vec<f64> {
        let total: f64 = self.worker_cpu_s.iter().sum();
        self.worker_cpu_s
            .iter()
            .map(|s| if total > 0.0 { s / total * 100.0 } else { 0.0 })
            .collect()
    }

    /// The busiest thread's CPU over the run's span, in percent of a core.
    fn busiest_load(&self, events: usize) -> f64 {
        self.busiest_cpu_s / (events as f64 / self.run.events_per_s) * 100.0
    }
}

pub struct Scaling<'a> {
    pub points: &'a [Point],
    pub events: usize,
    pub input_bytes: usize,
    pub rounds: usize,
    pub broker: &'static str,
    pub cores: usize,
}

/// The line after each run of the scaling mode.
pub fn scaling_round(mode: Mode, p: &Point) -> String {
    match mode {
        Mode::Measure => format!(
            "round {} {} at {}: {:.0} events/s, {:.1} CPU-s / M events, busiest thread {} \
             {:.2} CPU-s, workers' CPU {:.0?} %",
            p.round,
            p.who,
            p.at(),
            p.run.events_per_s,
            p.run.cpu_s_per_m,
            p.busiest,
            p.busiest_cpu_s,
            p.worker_shares()
        ),
        Mode::Smoke => format!(
            "round {} {} at {}: delivered every expected output",
            p.round,
            p.who,
            p.at()
        ),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn scaling(mode: Mode, s: &Scaling<'_>) -> String {
    let mut out = String::new();
    let mut at: Vec<(i32, Option<usize>)> = Vec::new();
    for p in s.points.iter().filter(|p| p.who == "veil") {
        if !at.contains(&(p.partitions, p.workers)) {
            at.push((p.partitions, p.workers));
        }
    }
    let list: Vec<String> = at
        .iter()
        .map(|(p, w)| format!("{p}/{}", w.unwrap_or(0)))
        .collect();
    if mode == Mode::Smoke {
        let _ = writeln!(
            out,
            "\nsmoke run (scaling, {} events, {} round(s), {} broker): at every point \
             (partitions/workers {}) veil and the relay delivered exactly what they should. \
             No speeds or ratios: this build is not the one to measure \
             (run `bash benches/e2e.sh scaling`).",
            s.events,
            s.rounds,
            s.broker,
            list.join(", ")
        );
        return out;
    }
    let runs = |who: &str, partitions: i32, workers: Option<usize>| -> Vec<&Point> {
        s.points
            .iter()
            .filter(|p| p.who == who && p.partitions == partitions && p.workers == workers)
            .collect()
    };
    let med = |points: &[&Point], f: &dyn Fn(&Point) -> f64| {
        median(points.iter().map(|p| f(p)).collect())
    };
    let eps = |p: &Point| p.run.events_per_s;
    let veil_1 = med(&runs("veil", 1, Some(1)), &eps);
    let relay_1 = med(&runs("relay", 1, None), &eps);
    let _ = writeln!(
        out,
        "\nscaling: {} events ({:.1} MB) per point, broker: {} on the same {} cores as veil \
         and the relay, {} round(s), medians\n",
        s.events,
        s.input_bytes as f64 / 1e6,
        s.broker,
        s.cores,
        s.rounds
    );
    let _ = writeln!(
        out,
        "| partitions | workers | veil events/s | speed-up | CPU-s / M events | workers' CPU % \
         | busiest thread, % of a core | relay events/s | speed-up | CPU-s / M events \
         | busiest thread, % of a core | veil / relay |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for &(partitions, workers) in &at {
        let veil = runs("veil", partitions, workers);
        let relay = runs("relay", partitions, None);
        let shares: Vec<String> = (0..workers.unwrap_or(0))
            .map(|i| {
                let mean =
                    veil.iter().map(|p| p.worker_shares()[i]).sum::<f64>() / veil.len() as f64;
                format!("{mean:.0}")
            })
            .collect();
        let busiest = |points: &[&Point]| {
            let mut v: Vec<(f64, &str)> = points
                .iter()
                .map(|p| (p.busiest_load(s.events), p.busiest.as_str()))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (load, name) = v[v.len() / 2];
            format!("{load:.0} ({name})")
        };
        // Per-round ratios against the relay at the same partition count.
        let ratios: Vec<f64> = veil
            .iter()
            .filter_map(|v| {
                let r = relay.iter().find(|r| r.round == v.round)?;
                Some(v.run.events_per_s / r.run.events_per_s)
            })
            .collect();
        let _ = write!(
            out,
            "| {partitions} | {} | {:.0} | {:.2}x | {:.1} | {} | {} ",
            workers.unwrap_or(0),
            med(&veil, &eps),
            med(&veil, &eps) / veil_1,
            med(&veil, &|p| p.run.cpu_s_per_m),
            shares.join(" / "),
            busiest(&veil),
        );
        if workers == Some(partitions as usize) && !relay.is_empty() {
            let _ = write!(
                out,
                "| {:.0} | {:.2}x | {:.1} | {} ",
                med(&relay, &eps),
                med(&relay, &eps) / relay_1,
                med(&relay, &|p| p.run.cpu_s_per_m),
                busiest(&relay),
            );
        } else {
            let _ = write!(out, "| | | | ");
        }
        if ratios.is_empty() {
            let _ = writeln!(out, "| |");
        } else {
            let _ = writeln!(out, "| {:.2} |", median(ratios));
        }
    }
    let _ = writeln!(
        out,
        "\nspeed-up: events/s relative to 1 partition (veil: 1 worker). veil / relay: median of \
         per-round ratios against the relay at the same partition count (rows with fewer \
         workers than partitions: against the relay's run beside veil's at that count).\n\
         workers' CPU %: each veil worker's share of the workers' CPU (a partition belongs to \
         one worker: a topic's partitions go round the workers; 0 is a worker that got none).\n\
         busiest thread: its CPU over the run's span (first to last output; its start-up work \
         counts too, which short runs overstate); near 100 it bounds throughput. The relay has \
         no workers: one loop (`main`) polls, copies and sends, rust-rdkafka's `producer \
         pollin(g)` thread runs its delivery callbacks, librdkafka's threads do the I/O.\n\
         The broker runs on the same cores: on a machine this small it competes with both."
    );
    out
}

// ---------------------------------------------------------------------------
// Soak: veil's memory under a sustained load.

/// veil's memory and progress at one moment of the soak.
#[derive(Debug, Clone, Copy)]
pub struct SoakSample {
    /// Seconds since the load started.
    pub t_s: f64,
    pub rss_mb: f64,
    pub hwm_mb: f64,
    /// Inputs veil's group has committed, and inputs the broker acknowledged.
    pub committed: u64,
    pub produced: u64,
    /// Inputs the broker deleted before veil's group committed them (the
    /// mock cluster's 5 MiB per partition; 0 on Tansu).
    pub deleted_unread: u64,
    /// Taken after the load, once veil had committed every input.
    pub drained: bool,
}

pub struct Soak<'a> {
    pub samples: &'a [SoakSample],
    pub seconds: usize,
    pub rate: usize,
    pub broker: &'static str,
    /// veil's CPU over the whole soak per million inputs.
    pub cpu_s_per_m: f64,
}

/// The line after each sample.
pub fn soak_sample(mode: Mode, s: &SoakSample) -> String {
    let when = if s.drained { " (drained)" } else { "" };
    match mode {
        Mode::Measure => format!(
            "t {:.0} s{when}: RSS {:.1} MB (peak {:.1}), committed {} of {}",
            s.t_s, s.rss_mb, s.hwm_mb, s.committed, s.produced
        ),
        Mode::Smoke => format!(
            "t {:.0} s{when}: committed {} of {}",
            s.t_s, s.committed, s.produced
        ),
    }
}

/// Least-squares slope of RSS over time, in MB per minute.
fn slope_mb_per_min(samples: &[&SoakSample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.t_s / 60.0).sum::<f64>() / n;
    let mean_m = samples.iter().map(|s| s.rss_mb).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for s in samples {
        let dt = s.t_s / 60.0 - mean_t;
        cov += dt * (s.rss_mb - mean_m);
        var += dt * dt;
    }
    (var > 0.0).then(|| cov / var)
}

pub fn soak(mode: Mode, s: &Soak<'_>) -> String {
    let mut out = String::new();
    let last = s.samples.last().expect("a soak has samples");
    let deleted = s
        .samples
        .iter()
        .map(|x| x.deleted_unread)
        .max()
        .unwrap_or(0);
    let deleted_line = format!(
        "WARNING: the {} broker deleted up to {deleted} inputs before veil's group committed \
         them (the mock cluster keeps 5 MiB per partition): veil fell behind by more than \
         the broker holds, so it may have skipped those; run on Tansu \
         (`bash benches/e2e.sh soak`).",
        s.broker
    );
    if mode == Mode::Smoke {
        let _ = writeln!(
            out,
            "\nsoak smoke run ({} s at {} events/s, {} broker): veil committed all {} inputs; \
             {} samples taken. No memory or CPU figures: this build is not the one to measure \
             (run `bash benches/e2e.sh soak`).",
            s.seconds,
            s.rate,
            s.broker,
            last.produced,
            s.samples.len()
        );
        if deleted > 0 {
            let _ = writeln!(out, "{deleted_line}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "\nsoak: {} events/s for {} s ({} inputs), broker: {}; veil's memory every 10 s, \
         then once it had committed every input\n",
        s.rate, s.seconds, last.produced, s.broker
    );
    let _ = writeln!(
        out,
        "| t s | RSS MB | peak RSS MB | committed | produced | lag |\n|---|---|---|---|---|---|"
    );
    for x in s.samples {
        let _ = writeln!(
            out,
            "| {:.0}{} | {:.1} | {:.1} | {} | {} | {} |",
            x.t_s,
            if x.drained { " (drained)" } else { "" },
            x.rss_mb,
            x.hwm_mb,
            x.committed,
            x.produced,
            x.produced.saturating_sub(x.committed)
        );
    }
    let loaded: Vec<&SoakSample> = s.samples.iter().filter(|x| !x.drained).collect();
    let at_1_min = loaded
        .iter()
        .find(|x| x.t_s >= 59.0)
        .map_or("n/a (shorter than 1 min)".to_owned(), |x| {
            format!("{:.1} MB", x.rss_mb)
        });
    let second_half: Vec<&SoakSample> = loaded
        .iter()
        .copied()
        .filter(|x| x.t_s >= s.seconds as f64 / 2.0)
        .collect();
    let slope = slope_mb_per_min(&second_half)
        .map_or("n/a (fewer than 2 samples)".to_owned(), |m| {
            format!("{m:+.2} MB/min")
        });
    let max = s.samples.iter().map(|x| x.rss_mb).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nRSS at 1 min: {at_1_min}; at the end: {:.1} MB; max sampled: {max:.1} MB \
         (VmHWM {:.1} MB); slope over the second half: {slope}",
        last.rss_mb, last.hwm_mb
    );
    let _ = writeln!(
        out,
        "veil's CPU over the soak: {:.1} CPU-s / M events (start and idle polling included). \
         lag: produced less committed; commits trail reads by about 1.2 s.",
        s.cpu_s_per_m
    );
    if deleted > 0 {
        let _ = writeln!(out, "{deleted_line}");
    }
    out
}
