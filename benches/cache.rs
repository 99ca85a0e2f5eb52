//! The pseudonym cache (`Scratch::with_pseudonym_cache`): the engine with
//! the shipped policy, without a cache and with one, on two streams in
//! interleaved rounds:
//! - the reference events, whose identifiers barely repeat (the worst case:
//!   every lookup misses);
//! - the same events with `userId`, `anonymousId` and the e-mail traits
//!   drawn from 100,000 users with a Zipf distribution (s = 1.1), as in
//!   real traffic where a few users make many events.
//!
//! Run: `cargo bench --bench cache` (add `-- ROUNDS`, default 15).

use std::path::Path;

#[path = "../tests/support/data.rs"]
mod data;
mod support;

use support::{interleaved, median};
use veil::{Limits, Scratch, compile};

/// xorshift64*: a fixed, seedable stream (no dependency for a bench).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` draws from Zipf(s) over `users` users (inverse CDF).
fn zipf(users: usize, s: f64, n: usize, seed: u64) -> Vec<usize> {
    let mut cdf: Vec<f64> = (1..=users).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = cdf.iter().sum();
    let mut acc = 0.0;
    for c in &mut cdf {
        acc += *c / total;
        *c = acc;
    }
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let u = rng.next_f64();
            cdf.partition_point(|c| *c < u).min(users - 1)
        })
        .collect()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 15 } else { 1 });
    let reference = data::example_events();
    let draws = zipf(100_000, 1.1, reference.len(), 0x5eed);
    let zipfian: Vec<Vec<u8>> = reference
        .iter()
        .zip(&draws)
        .map(|(e, u)| {
            let mut v: serde_json::Value = serde_json::from_slice(e).unwrap();
            for (path, value) in [
                ("/userId", format!("user-{u}")),
                ("/anonymousId", format!("anon-{u}")),
                ("/context/traits/email", format!("user{u}@example.com")),
                ("/traits/email", format!("user{u}@example.com")),
            ] {
                if let Some(slot) = v.pointer_mut(path) {
                    *slot = serde_json::Value::String(value);
                }
            }
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    let distinct = draws
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let engine = compile(policy, ring.active(), Limits::default());
    let streams = [("reference", &reference), ("zipf", &zipfian)];
    let caches = [0usize, 4096];
    let mut scratches: Vec<Scratch> = (0..streams.len() * caches.len())
        .map(|i| Scratch::with_pseudonym_cache(caches[i % caches.len()]))
        .collect();
    let mut out = Vec::with_capacity(4096);
    let times = interleaved(rounds, scratches.len(), |v| {
        let events = streams[v / caches.len()].1;
        let scratch = &mut scratches[v];
        for e in events.iter() {
            out.clear();
            std::hint::black_box(engine.apply(e, &mut out, scratch));
        }
    });
    println!(
        "{} events per stream ({distinct} distinct users in the zipf one), {rounds} interleaved rounds, median per round:",
        reference.len()
    );
    for (v, t) in times.iter().enumerate() {
        let (name, events) = streams[v / caches.len()];
        let entries = caches[v % caches.len()];
        let m = median(t.clone());
        let hit = scratches[v]
            .cache_hits_and_misses()
            .map(|(h, m)| format!(", {:.0}% hits", 100.0 * h as f64 / (h + m).max(1) as f64))
            .unwrap_or_default();
        println!(
            "  {name:<10} cache {entries:>5}  {:>7.2} ms  {:>9.0} events/s{hit}",
            m * 1e3,
            events.len() as f64 / m
        );
    }
    for (s, (name, _)) in streams.iter().enumerate() {
        let (a, b) = (s * caches.len(), s * caches.len() + 1);
        let r = median(times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect());
        println!("  {name}: with the cache {r:.2}x as fast as without");
    }
}
