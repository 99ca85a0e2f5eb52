//! Policy behaviour as data: each directory under tests/cases holds
//! `policy.yaml`, `input.ndjson` and `expected.ndjson`. Each expected line is
//! the clean event, or `{"dropped":"<code>"}`, or `{"rejected":"<code>"}`.
//! The key is tests/keys/k1.key. Regenerate deliberately with
//! `VEIL_BLESS=1 cargo test --test cases`, then review the diff.

use std::path::Path;

use veil::{Limits, Outcome, Scratch, compile};

fn run_case(dir: &Path) -> String {
    let policy = veil::policy::load(&dir.join("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let engine = compile(policy, ring.active(), Limits::default());
    let input = std::fs::read(dir.join("input.ndjson")).unwrap();
    let mut scratch = Scratch::default();
    let mut expected = String::new();
    for line in input
        .strip_suffix(b"\n")
        .unwrap_or(&input)
        .split(|b| *b == b'\n')
    {
        let mut out = Vec::new();
        let v = engine.apply(line, &mut out, &mut scratch);
        match v.outcome {
            Outcome::Forwarded => expected.push_str(std::str::from_utf8(&out).unwrap()),
            Outcome::Dropped(d) => expected.push_str(&format!(r#"{{"dropped":"{}"}}"#, d.code())),
            Outcome::Rejected(r) => {
                expected.push_str(&format!(r#"{{"rejected":"{}"}}"#, r.reason.code()))
            }
        }
        expected.push('\n');
    }
    expected
}

#[test]
fn policy_cases() {
    let bless = std::env::var_os("VEIL_BLESS").is_some();
    let mut dirs: Vec<_> = std::fs::read_dir("tests/cases")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4);
    let mut failures = Vec::new();
    for dir in &dirs {
        let got = run_case(dir);
        let path = dir.join("expected.ndjson");
        if bless {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- expected\n{want}--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
