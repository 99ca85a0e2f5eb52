//! The cost of shadow mode (`routes[].shadow`): the shipped policy's stage
//! alone, with itself as its shadow (every output the same: the byte
//! comparison), and with a candidate that differs on every event (a wider
//! IP prefix, so both outputs are parsed and walked), in interleaved rounds.
//!
//! Run: `cargo bench --bench shadow` (add `-- ROUNDS`, default 15).

use std::path::Path;

#[path = "../tests/support/data.rs"]
mod data;
mod support;

use support::{interleaved, median};
use veil::config::{MessageKey, StageConfig};
use veil::stage::{Origin, Processed, Stage};
use veil::{Limits, Scratch};

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 15 } else { 1 });
    let events = data::example_events();
    let text = std::fs::read_to_string("config/policy.yaml").unwrap();
    let policy = || veil::Policy::parse(&text, "config/policy.yaml").unwrap();
    let wider = text.replace("v4: 24, v6: 48", "v4: 16, v6: 32");
    assert_ne!(wider, text, "the candidate differs");
    let candidate = veil::Policy::parse(&wider, "candidate.yaml").unwrap();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let config = StageConfig {
        message_key: MessageKey::Drop,
        keep_headers: Vec::new(),
        include_payload: false,
        limits: Limits::default(),
    };
    let stage = |shadow: Option<veil::Policy>| {
        let s = Stage::new(&config, vec![("analytics".into(), policy())], &ring).unwrap();
        s.shadowing(shadow.map(|p| (0, p)).into_iter().collect(), &ring)
            .unwrap()
    };
    let stages = [stage(None), stage(Some(policy())), stage(Some(candidate))];
    let names = ["live policy only", "shadow: same policy", "shadow: differs"];
    let mut out = Processed::default();
    let mut scratch = Scratch::default();
    let mut differed = [0usize; 3];
    let times = interleaved(rounds, stages.len(), |v| {
        for (i, e) in events.iter().enumerate() {
            stages[v].process(e, None, Origin::Line(i as u64), &mut out, &mut scratch);
            differed[v] += out.shadow.routes().filter(|(_, d)| !d.is_empty()).count();
        }
    });
    let n = events.len() as f64;
    println!(
        "{} events, {rounds} interleaved rounds, median per round:",
        events.len()
    );
    for ((name, t), d) in names.iter().zip(&times).zip(differed) {
        let m = median(t.clone());
        println!(
            "  {name:<22} {:>8.2} ms  {:>9.0} events/s  (inputs that differed: {})",
            m * 1e3,
            n / m,
            d / rounds
        );
    }
    for v in 1..stages.len() {
        let r = median(times[v].iter().zip(&times[0]).map(|(a, b)| a / b).collect());
        println!("  {} / live only: {r:.2}x the time", names[v]);
    }
}
