//! What each class of action costs: the shipped policy against variants
//! with one class of action replaced, best of 20 passes over the example
//! events, plus a policy that keeps almost nothing (the cost of validating
//! and skipping). Run: `cargo run --release --example action_costs`.

use std::path::Path;
use std::time::Instant;

#[path = "../tests/support/data.rs"]
mod data;

use veil::{Limits, Scratch, compile};

fn main() {
    let events: Vec<Vec<u8>> = data::example_events();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let base = std::fs::read_to_string("config/policy.yaml").unwrap();
    let variants = [
        ("shipped policy", base.clone()),
        (
            "urls kept as is",
            base.replace("{ url: { keep_query: [\"utm_*\"] } }", "keep")
                .replace("{ url: { keep_query: [] } }", "keep"),
        ),
        (
            "time kept as is",
            base.replace("{ truncate_time: second }", "keep"),
        ),
        (
            "ip kept as is",
            base.replace("{ ip_prefix: { v4: 24, v6: 48 } }", "keep"),
        ),
        (
            "identifiers dropped",
            base.replace("{ pseudonymise: { normalise: [trim, lowercase] } }", "drop")
                .replace(": pseudonymise", ": drop"),
        ),
        (
            "validate + skip only",
            "name: a\nversion: 1\npurpose: a\nfields:\n  type: keep\n".to_owned(),
        ),
    ];
    for (name, yaml) in variants {
        let policy = veil::Policy::parse(&yaml, name).unwrap();
        let engine = compile(policy, ring.active(), Limits::default());
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        let mut best = f64::MAX;
        let passes: usize = std::env::var("PASSES")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(20);
        for _ in 0..passes {
            let t = Instant::now();
            for e in &events {
                out.clear();
                engine.apply(e, &mut out, &mut scratch);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:<22} {:>6.2} µs/event",
            best * 1e6 / events.len() as f64
        );
    }
}
