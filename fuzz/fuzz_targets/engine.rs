//! Fuzz the engine with the shipped policy: no input may panic, a forwarded
//! event must be valid JSON, and nothing is written for any other outcome.
//!
//! Run: `cargo fuzz run engine -- -max_total_time=60` from the crate root
//! (cargo-fuzz needs a nightly compiler, or RUSTC_BOOTSTRAP=1 on stable).
//! Seed corpus: tests/cases/*/input.ndjson lines.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veil::{CompiledPolicy, Limits, Outcome, Scratch, compile};

fn engine() -> &'static CompiledPolicy {
    static ENGINE: OnceLock<CompiledPolicy> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let policy = veil::policy::load(&root.join("config/policy.yaml")).unwrap();
        let ring = veil::keys::load_dir(&root.join("tests/keys"), None).unwrap();
        compile(policy, ring.active(), Limits::default())
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let verdict = engine().apply(data, &mut out, &mut Scratch::default());
    if verdict.outcome == Outcome::Forwarded {
        serde_json::from_slice::<serde_json::Value>(&out).expect("forwarded output is JSON");
    } else {
        assert!(out.is_empty());
    }
});
