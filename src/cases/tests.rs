use super::*;
use crate::engine::{Limits, compile};
use crate::policy::Policy;

const POLICY: &str = "name: t\nversion: 1\npurpose: analytics\nconsent: { purposes: c }\nfields:\n  a: keep\n  u: pseudonymise\n  n.x: keep\n";

fn policy() -> CompiledPolicy {
    let p = Policy::parse(POLICY, "t.yaml").unwrap();
    compile(p, &crate::keys::test_key(), Limits::default())
}

fn one(case: &str) -> Option<CaseFailure> {
    let cases = parse(case, "c.yaml").unwrap();
    run(&policy(), &cases[0], &mut Scratch::default())
}

#[test]
fn a_forwarded_case_with_a_pseudonym_passes() {
    let c = "- name: ok\n  input: {a: 1, u: ana, c: [analytics], z: 2}\n  expect: {a: 1, u: {pseudonym: ana}}\n";
    assert_eq!(one(c), None);
}

#[test]
fn mismatches_name_the_path_and_both_values() {
    let c = "- name: bad\n  input: {a: 1, u: ana, n: {x: 3}, c: [analytics]}\n  expect: {a: 2, u: {pseudonym: bob}, n: {}}\n";
    let Some(CaseFailure::Fields(ms)) = one(c) else {
        panic!("fields differ")
    };
    let paths: Vec<&str> = ms.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["a", "n.x", "u"]);
    assert_eq!(ms[1].expected, None);
    assert_eq!(ms[1].got, Some(serde_json::json!(3)));
    let lines = describe(&CaseFailure::Fields(ms));
    assert_eq!(lines[0], "  a: expected 2, got 1");
    assert_eq!(lines[1], "  n.x: expected nothing, got 3  (not expected)");
}

#[test]
fn verdicts_are_compared() {
    let drop = "- name: d\n  input: {a: 1}\n  expect: {dropped: no_consent}\n";
    assert_eq!(one(drop), None);
    let dead = "- name: d\n  input: '{\"a\": 1'\n  expect: {dead_letter: invalid_json}\n";
    assert_eq!(one(dead), None);
    let wrong = "- name: d\n  input: {a: 1}\n  expect: {a: 1}\n";
    assert_eq!(
        one(wrong),
        Some(CaseFailure::Verdict {
            expected: "forwarded".into(),
            got: "dropped (no_consent)".into()
        })
    );
}

#[test]
fn bad_case_files_name_line_and_column() {
    let e = parse(
        "- name: x\n  input: {a: 1}\n  expect: {dropped: nope}\n",
        "c.yaml",
    )
    .unwrap_err();
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.file.as_str()), (3, "c.yaml"));
    assert!(d.message.contains("no_consent"), "{}", d.message);
    let e = parse("- name: x\n  input: [1]\n  expect: {}\n", "c.yaml").unwrap_err();
    assert_eq!(e.diagnostics[0].line, 2);
    let e = parse("- name: x\n  inptu: {}\n  expect: {}\n", "c.yaml").unwrap_err();
    assert_eq!(e.diagnostics[0].line, 2, "{e}");
    let e = parse(
        "- name: x\n  input: {}\n  expect: {u: {pseudonym: [1]}}\n",
        "c.yaml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("pseudonym"), "{e}");
}

#[test]
fn a_path_quotes_keys_the_policy_language_would_quote() {
    let mut p = String::new();
    push_key(&mut p, "context");
    push_key(&mut p, "a.b");
    assert_eq!(p, "context.\"a.b\"");
}
