//! Noise-robust ratios: the four variants of `benches/engine.rs`, run in
//! interleaved rounds (A B C D, A B C D, ...) so a slow spell of a shared
//! machine hits all of them alike; reports the median per variant and the
//! median of the per-round ratios.
//!
//! Run: `cargo bench --bench ratio` (add `-- ROUNDS`, default 15).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

#[path = "../tests/support/data.rs"]
mod data;
mod support;

use support::median;

use veil::{Limits, Scratch, compile};

#[path = "../tests/support/reference.rs"]
mod reference;

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this is a one-round smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 15 } else { 1 });
    let events: Vec<Vec<u8>> = data::example_events();
    let n = events.len() as f64;
    // VEIL_BENCH_POLICY: another policy file, e.g. an older version of the
    // shipped one, to compare engine changes on the same work.
    let policy_path = std::env::var("VEIL_BENCH_POLICY").unwrap_or("config/policy.yaml".into());
    let policy = veil::policy::load(Path::new(&policy_path)).unwrap();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    // The same policy with the content scan off (issue 13): what scanning
    // kept strings costs, measured side by side.
    let text = std::fs::read_to_string(&policy_path).unwrap();
    let unscanned = veil::Policy::parse(&format!("{text}\nscan: off\n"), &policy_path).unwrap();
    assert_eq!(
        policy.scan,
        veil::policy::ScanMode::Redact,
        "the shipped policy scans"
    );
    let unscanned = compile(unscanned, ring.active(), Limits::default());
    let engine = compile(policy, ring.active(), Limits::default());
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(4096);
    let mut hashes = 0u64;
    for e in &events {
        out.clear();
        hashes += engine.apply(e, &mut out, &mut scratch).counts.pseudonymised;
    }
    let p = engine.pseudonymiser();
    let mut dst = vec![0u8; p.len()];

    let names = [
        "serde_json_roundtrip",
        "value_policy",
        "veil_engine",
        "hmac_floor",
        "veil_engine_scan_off",
    ];
    // `VEIL_BENCH_ONLY=<name>` runs one variant (for instruction counts under
    // callgrind: benches/instructions.sh).
    let only = std::env::var("VEIL_BENCH_ONLY").ok();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for (i, t) in times.iter_mut().enumerate() {
            if only.as_deref().is_some_and(|o| o != names[i]) {
                t.push(1.0);
                continue;
            }
            let start = Instant::now();
            match i {
                0 => {
                    for e in &events {
                        let v: serde_json::Value = serde_json::from_slice(e).unwrap();
                        black_box(serde_json::to_vec(&v).unwrap());
                    }
                }
                1 => {
                    for e in &events {
                        black_box(reference::apply(&engine, e));
                    }
                }
                2 => {
                    for e in &events {
                        out.clear();
                        black_box(engine.apply(e, &mut out, &mut scratch));
                    }
                }
                4 => {
                    for e in &events {
                        out.clear();
                        black_box(unscanned.apply(e, &mut out, &mut scratch));
                    }
                }
                _ => {
                    for _ in 0..hashes {
                        p.write(black_box(b"0f8fad5b-d9cb-469f-a165-70867728950e"), &mut dst);
                    }
                }
            }
            t.push(start.elapsed().as_secs_f64());
        }
    }
    println!(
        "{} events, {rounds} interleaved rounds, median per round:",
        events.len()
    );
    for (name, t) in names.iter().zip(&times) {
        let m = median(t.clone());
        println!("  {name:<22} {:>8.2} ms  {:>9.0} events/s", m * 1e3, n / m);
    }
    let ratio =
        |a: usize, b: usize| median(times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect());
    println!(
        "  veil vs value_policy:          {:.2}x faster",
        ratio(1, 2)
    );
    println!(
        "  veil vs serde_json round trip: {:.2}x faster",
        ratio(0, 2)
    );
    println!(
        "  content scan cost:             {:+.1}% of veil's time (scan: redact vs off)",
        100.0 * (ratio(2, 4) - 1.0)
    );
    println!(
        "  HMAC share of veil's time:     {:.0}% ({} pseudonyms, {:.2} per event)",
        100.0 * ratio(3, 2),
        hashes,
        hashes as f64 / n
    );
}
