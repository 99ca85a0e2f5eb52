//! Engine throughput on the reference data (examples/events.ndjson, made by
//! `python3 tools/gen_events.py 1000 7`), side by side in one run:
//!
//! - `serde_json_roundtrip`: parse each event to a Value and serialise it.
//! - `value_policy`: the same policy implemented on serde_json::Value
//!   (tests/support/reference.rs): parse, consent, build, serialise.
//! - `veil_engine`: veil's streaming engine with the shipped policy.
//! - `hmac_floor`: only the HMAC-SHA256 computations veil must do for the
//!   same events (one per pseudonymised value), for attribution.
//!
//! Run: `cargo bench --bench engine`; see BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
#[path = "../tests/support/data.rs"]
mod data;

use veil::{Limits, Outcome, Scratch, compile};

#[path = "../tests/support/reference.rs"]
mod reference;

fn bench(c: &mut Criterion) {
    let events = data::example_events();
    let bytes: usize = events.iter().map(Vec::len).sum();
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let engine = compile(policy, ring.active(), Limits::default());

    // Sanity: both implementations forward the same events.
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let mut hashes = 0u64;
    for e in &events {
        out.clear();
        let v = engine.apply(e, &mut out, &mut scratch);
        assert_eq!(
            v.outcome == Outcome::Forwarded,
            reference::apply(&engine, e).is_some()
        );
        hashes += v.counts.pseudonymised;
    }

    let mut g = c.benchmark_group("segment_events_x1000");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(30);
    g.bench_function("serde_json_roundtrip", |b| {
        b.iter(|| {
            for e in &events {
                let v: serde_json::Value = serde_json::from_slice(e).unwrap();
                black_box(serde_json::to_vec(&v).unwrap());
            }
        })
    });
    g.bench_function("value_policy", |b| {
        b.iter(|| {
            for e in &events {
                black_box(reference::apply(&engine, e));
            }
        })
    });
    g.bench_function("veil_engine", |b| {
        let mut scratch = Scratch::default();
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            for e in &events {
                out.clear();
                black_box(engine.apply(e, &mut out, &mut scratch));
            }
        })
    });
    g.bench_function("hmac_floor", |b| {
        let p = engine.pseudonymiser();
        let mut dst = vec![0u8; p.len()];
        let value = b"0f8fad5b-d9cb-469f-a165-70867728950e";
        b.iter(|| {
            for _ in 0..hashes {
                p.write(black_box(value), &mut dst);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
