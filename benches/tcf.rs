//! The cost of an IAB TCF v2 consent check (`consent.tcf`): the shipped
//! policy on the example events, each carrying a TC string at
//! `context.gdpr.tc`, in interleaved rounds (A B, A B, ...) so a slow spell
//! of a shared machine hits both variants alike:
//!
//! - A `no_tcf`: the shipped policy (consent from `context.consent.purposes`);
//! - B `tcf`: the same policy plus a `consent.tcf` rule (three purposes, one
//!   on legitimate interest, a vendor) that the string grants, so both
//!   variants forward the same events and the difference is the decoding and
//!   the decision.
//!
//! The TC string is the longest granting line with a vendor of the
//! IAB-generated table `tests/support/oracle/tcf/vectors.jsonl`. Also reports
//! `Rule::grants` alone, per call.
//!
//! Run: `cargo bench --bench tcf` (add `-- ROUNDS`, default 15).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

#[path = "../tests/support/data.rs"]
mod data;
mod support;

use support::median;

use veil::{CompiledPolicy, Limits, Outcome, Policy, Scratch, compile};

/// One pass over `events`; returns how many were forwarded.
fn pass(
    engine: &CompiledPolicy,
    events: &[Vec<u8>],
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> usize {
    let mut forwarded = 0;
    for e in events {
        out.clear();
        if black_box(engine.apply(e, out, scratch)).outcome == Outcome::Forwarded {
            forwarded += 1;
        }
    }
    forwarded
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 15 } else { 1 });
    let passes = if benching { 10 } else { 1 };

    // The longest granted vector that names a vendor, and its rule.
    let vectors = std::fs::read_to_string("tests/support/oracle/tcf/vectors.jsonl").unwrap();
    let v: serde_json::Value = vectors
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| {
            v["granted"] == true
                && v["vendor"].is_u64()
                && v["purposes"].as_array().unwrap().len() >= 2
        })
        .max_by_key(|v| v["tc"].as_str().unwrap().len())
        .expect("a granted vector with a vendor");
    let tc = v["tc"].as_str().unwrap();
    let rule = format!(
        "  tcf: {{ path: context.gdpr.tc, purposes: {}, legitimate_interest: {}, vendor: {} }}\n",
        v["purposes"], v["legitimate_interest"], v["vendor"]
    );

    // Every example event carries the string.
    let events: Vec<Vec<u8>> = data::example_events()
        .into_iter()
        .map(|e| {
            let mut v: serde_json::Value = serde_json::from_slice(&e).unwrap();
            if let Some(c) = v.get_mut("context").and_then(|c| c.as_object_mut()) {
                c.insert("gdpr".into(), serde_json::json!({ "tc": tc }));
            }
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    let text = std::fs::read_to_string("config/policy.yaml").unwrap();
    let with_tcf = text.replacen("consent:\n", &format!("consent:\n{rule}"), 1);
    assert_ne!(text, with_tcf);
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let plain = compile(
        Policy::parse(&text, "policy.yaml").unwrap(),
        ring.active(),
        Limits::default(),
    );
    let tcf_policy = Policy::parse(&with_tcf, "policy.yaml").unwrap();
    let tcf_rule = tcf_policy
        .consent
        .as_ref()
        .and_then(|c| c.tcf.as_ref())
        .unwrap()
        .rule;
    let tcf = compile(tcf_policy, ring.active(), Limits::default());

    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(4096);
    let engines = [&plain, &tcf];
    let forwarded: Vec<usize> = engines
        .iter()
        .map(|e| pass(e, &events, &mut out, &mut scratch))
        .collect();
    assert_eq!(
        forwarded[0], forwarded[1],
        "the string grants: both forward the same events"
    );
    assert!(forwarded[0] > 0);

    let times = support::interleaved(rounds, engines.len(), |i| {
        for _ in 0..passes {
            black_box(pass(engines[i], &events, &mut out, &mut scratch));
        }
    });
    // The decision alone.
    let calls = if benching { 2_000_000 } else { 10_000 };
    let decide: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                assert_eq!(
                    black_box(tcf_rule).grants(black_box(tc.as_bytes())),
                    Ok(true)
                );
            }
            start.elapsed().as_secs_f64() / calls as f64
        })
        .collect();

    let per_round = (events.len() * passes) as f64;
    let ratio = median(times[1].iter().zip(&times[0]).map(|(b, a)| b / a).collect());
    let args: Vec<String> = std::env::args().collect();
    println!(
        "command: cargo bench --bench tcf (argv: {})",
        args.join(" ")
    );
    if !benching {
        println!("smoke run: 1 round; not a measurement");
    }
    println!(
        "{} events x {passes} passes per round, {rounds} interleaved rounds; shipped policy; \
         TC string of {} characters, rule {}",
        events.len(),
        tc.len(),
        rule.trim()
    );
    println!("| variant | median ns/event | events/s | ratio to A (median of rounds) |");
    println!("|---|---:|---:|---:|");
    for (name, t) in ["A no tcf", "B tcf"].iter().zip(&times) {
        let m = median(t.clone());
        let r = if *name == "B tcf" { ratio } else { 1.0 };
        println!(
            "| {name} | {:.0} | {:.0} | {r:.3} |",
            m / per_round * 1e9,
            per_round / m
        );
    }
    println!(
        "Rule::grants alone: median {:.0} ns per call over {rounds} rounds of {calls}",
        median(decide) * 1e9
    );
}
