//! How fast do SIMD JSON parsers go on veil's reference events, beside
//! veil's own pass that validates everything (RFC 8259, UTF-8, depth,
//! duplicate keys after unescaping) and skips what a one-field policy does
//! not keep? Answers whether a SIMD structural pass could close issue 14's
//! gap. Interleaved rounds (A B C D E, A B C D E, ...), medians printed.
//!
//! Run from the repository root (pin it for steadier numbers):
//! `taskset -c 1 cargo run --release --manifest-path tools/parser_probe/Cargo.toml [ROUNDS]`

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    let text =
        std::fs::read_to_string("examples/events.ndjson").expect("run from the repository root");
    let events: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let n = events.len() as f64;
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let compile = |yaml: &str| {
        let policy = veil::Policy::parse(yaml, "probe").unwrap();
        veil::compile(policy, ring.active(), veil::Limits::default())
    };
    let skip = compile("name: a\nversion: 1\npurpose: a\nfields:\n  type: keep\n");
    let shipped = {
        let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
        veil::compile(policy, ring.active(), veil::Limits::default())
    };
    let mut scratch = veil::Scratch::default();
    let mut out = Vec::with_capacity(4096);
    let mut buffers = simd_json::Buffers::default();
    let mut copy = Vec::with_capacity(4096);

    let names = [
        "serde_json IgnoredAny (validate, no duplicate-key check)",
        "sonic-rs Value",
        "simd-json tape (on a copy: it parses in place)",
        "veil validate + skip (policy keeps `type`)",
        "veil shipped policy",
    ];
    let mut times = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for (k, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            let mut ok = 0usize;
            for e in &events {
                ok += match k {
                    0 => serde_json::from_slice::<serde::de::IgnoredAny>(e).is_ok(),
                    1 => sonic_rs::from_slice::<sonic_rs::Value>(e).is_ok(),
                    2 => {
                        copy.clear();
                        copy.extend_from_slice(e);
                        simd_json::to_tape_with_buffers(&mut copy, &mut buffers).is_ok()
                    }
                    3 | 4 => {
                        out.clear();
                        let engine = if k == 3 { &skip } else { &shipped };
                        !matches!(
                            engine.apply(e, &mut out, &mut scratch).outcome,
                            veil::Outcome::Rejected(_)
                        )
                    }
                    _ => unreachable!(),
                } as usize;
            }
            black_box(ok);
            t.push(start.elapsed().as_secs_f64() / n * 1e6);
        }
    }
    println!(
        "{} events ({} bytes on average), {rounds} interleaved rounds, median µs per event:",
        events.len(),
        text.len() / events.len()
    );
    for (name, t) in names.iter().zip(times) {
        println!("  {:<58} {:>5.2}", name, median(t));
    }
}
