//! The cost of the suppression (opt-out) list check: the shipped policy on
//! the example events, in interleaved rounds (A B C, A B C, ...) so a slow
//! spell of a shared machine hits every variant alike:
//!
//! - A `no_suppression`: the policy as compiled;
//! - B `empty_list`: `suppressing` an empty list (nothing is checked);
//! - C `list_1m`: `suppressing` a list of 1,000,000 synthetic identifiers
//!   (`user-{i}@example.com`, under the active key and every normalisation
//!   of the policy) plus a few `userId`s of the example events, so some
//!   events are dropped as `suppressed`.
//!
//! Reports the median time per event of each variant, the median of the
//! per-round ratios to A, how long the list took to build and how much
//! memory (VmRSS) it holds.
//!
//! Run: `cargo bench --bench suppression` (add `-- ROUNDS`, default 15).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[path = "../tests/support/data.rs"]
mod data;
mod support;

use support::median;

use veil::suppression::{Source, SuppressionList, Tokeniser, entries_for};
use veil::{CompiledPolicy, DropReason, Limits, Outcome, Scratch, compile};

/// A field of /proc/self/status, in kB (Linux only).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Hand freed heap memory back to the system, so that RSS shows what is
/// still in use rather than what the allocator keeps for later.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // glibc's malloc_trim only releases free memory; always safe to call.
    unsafe { malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() -> bool {
    false
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
}

fn delta(after: Option<u64>, before: Option<u64>) -> String {
    match (after, before) {
        (Some(a), Some(b)) => format!("{:+.1} MB", (a as f64 - b as f64) / 1024.0),
        _ => "n/a".into(),
    }
}

/// One pass over `events`; returns how many were dropped as `suppressed`.
fn pass(
    engine: &CompiledPolicy,
    events: &[Vec<u8>],
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> usize {
    let mut suppressed = 0;
    for e in events {
        out.clear();
        let v = black_box(engine.apply(e, out, scratch));
        if v.outcome == Outcome::Dropped(DropReason::Suppressed) {
            suppressed += 1;
        }
    }
    suppressed
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this is a one-round
    // smoke run with a small list.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 15 } else { 1 });
    let synthetic: usize = if benching { 1_000_000 } else { 10_000 };
    // Passes over the events per variant and round, so that a round of one
    // variant lasts tens of milliseconds.
    let passes = if benching { 10 } else { 1 };

    let events: Vec<Vec<u8>> = data::example_events();
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let plain = compile(policy.clone(), ring.active(), Limits::default());
    let empty = compile(policy.clone(), ring.active(), Limits::default())
        .suppressing(Arc::new(SuppressionList::new(&ring)));

    // Real subjects to put on the list: the `userId` of every 100th event.
    let real: Vec<String> = events
        .iter()
        .step_by(100)
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_slice(e).ok()?;
            Some(v.get("userId")?.as_str()?.to_owned())
        })
        .collect();

    // Build the big list, measuring time and resident memory.
    trim_heap();
    let rss_before = status_kb("VmRSS:");
    let build = Instant::now();
    let list = Arc::new(SuppressionList::new(&ring));
    let (hash_s, insert_s) = {
        let mut ids = String::with_capacity(synthetic * 24);
        for i in 0..synthetic {
            ids.push_str(&format!("user-{i}@example.com\n"));
        }
        for r in &real {
            ids.push_str(r);
            ids.push('\n');
        }
        let t = Instant::now();
        let tokeniser = Tokeniser::new(ring.active());
        let entries = entries_for(&tokeniser, ids.lines());
        let hash_s = t.elapsed().as_secs_f64();
        drop(ids);
        let t = Instant::now();
        list.replace(Source::Files, entries);
        (hash_s, t.elapsed().as_secs_f64())
    };
    let build_s = build.elapsed().as_secs_f64();
    let rss_after = status_kb("VmRSS:");
    let trimmed = trim_heap();
    let rss_trimmed = status_kb("VmRSS:");
    let peak = status_kb("VmHWM:");
    let full = compile(policy, ring.active(), Limits::default()).suppressing(Arc::clone(&list));

    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(4096);
    let engines = [&plain, &empty, &full];
    let suppressed: Vec<usize> = engines
        .iter()
        .map(|e| pass(e, &events, &mut out, &mut scratch))
        .collect();
    assert_eq!(suppressed[..2], [0, 0], "A and B check nothing");
    assert!(suppressed[2] > 0, "listed userIds are dropped");

    let names = [
        "A no suppression",
        "B suppressing, empty list",
        "C suppressing, big list",
    ];
    let times = support::interleaved(rounds, engines.len(), |i| {
        for _ in 0..passes {
            black_box(pass(engines[i], &events, &mut out, &mut scratch));
        }
    });

    let per_round = (events.len() * passes) as f64;
    let ratio =
        |a: usize, b: usize| median(times[b].iter().zip(&times[a]).map(|(x, y)| x / y).collect());
    let args: Vec<String> = std::env::args().collect();
    println!(
        "command: cargo bench --bench suppression (argv: {})",
        args.join(" ")
    );
    if !benching {
        println!("smoke run: 1 round, small list; not a measurement");
    }
    println!(
        "{} events x {passes} passes per round, {rounds} interleaved rounds; shipped policy; \
         each listed identifier hashed in its distinct forms (as given, trimmed, lowercased)\n",
        events.len(),
    );
    println!("| variant | median ns/event | events/s | ratio to A (median of rounds) |");
    println!("|---|---:|---:|---:|");
    for (i, (name, t)) in names.iter().zip(&times).enumerate() {
        let m = median(t.clone());
        println!(
            "| {name} | {:.0} | {:.0} | {:.3} |",
            m / per_round * 1e9,
            per_round / m,
            ratio(0, i)
        );
    }
    println!(
        "\nlist C: {} entries ({synthetic} synthetic identifiers + {} userIds of the events); \
         {} of {} events per pass dropped as suppressed",
        list.len(),
        real.len(),
        suppressed[2],
        events.len()
    );
    println!(
        "list build: {build_s:.2} s (hashing, entries_for: {hash_s:.2} s; list.replace: {insert_s:.2} s)"
    );
    println!(
        "VmRSS before build {}, after (temporaries dropped) {} ({}), after malloc_trim {} ({}){}; \
         peak VmHWM {}",
        mb(rss_before),
        mb(rss_after),
        delta(rss_after, rss_before),
        mb(rss_trimmed),
        delta(rss_trimmed, rss_before),
        if trimmed {
            ""
        } else {
            " (no malloc_trim here)"
        },
        mb(peak)
    );
}
