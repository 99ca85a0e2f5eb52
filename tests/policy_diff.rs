//! `veil diff` over a table of policy pairs: the exit code (0 nothing
//! widens, 1 something widens or weakens protection, 64 invalid) and the
//! kinds of change reported, as docs/testing-policies.md defines them;
//! then `--format json` and `--events`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("run veil")
}

const BASE: &str = r#"name: t
version: 1
purpose: analytics
consent: { purposes: c.p, opt_out: c.gpc }
subject: [u]
fields:
  a: keep
  u: pseudonymise
  ip: { ip_prefix: { v4: 24, v6: 48 } }
  url: { url: { keep_query: ["utm_*"] } }
  ts: { truncate_time: hour }
  n: { bucket: { width: 10 } }
  e: { bucket: { edges: [0, 18, 65] } }
  txt: { redact: { patterns: ['\d{6,}'] } }
  obj: keep
  obj.x: drop
rules:
  - { when: { type: identify }, fields: { a: keep, tr.plan: keep } }
  - { when: { type: track }, drop: true }
"#;

/// BASE with each `(from, to)` replaced once (each `from` must occur).
fn variant(edits: &[(&str, &str)]) -> String {
    let mut s = BASE.to_owned();
    for (from, to) in edits {
        assert!(s.contains(from), "{from:?} not in the base policy");
        s = s.replacen(from, to, 1);
    }
    s
}

const NO_CONSENT: (&str, &str) = ("consent: { purposes: c.p, opt_out: c.gpc }\n", "");

struct Row {
    name: &'static str,
    old: &'static [(&'static str, &'static str)],
    new: &'static [(&'static str, &'static str)],
    exit: i32,
    kinds: &'static [&'static str],
}

const ROWS: &[Row] = &[
    Row {
        name: "the policy's scan turned off",
        old: &[],
        new: &[("purpose: analytics\n", "purpose: analytics\nscan: off\n")],
        exit: 1,
        kinds: &["scan_loosened"],
    },
    Row {
        name: "the policy's scan from redact to drop_event",
        old: &[],
        new: &[(
            "purpose: analytics\n",
            "purpose: analytics\nscan: drop_event\n",
        )],
        exit: 0,
        kinds: &["scan_tightened"],
    },
    Row {
        name: "one kept field's scan set to count",
        old: &[],
        new: &[("  a: keep\n", "  a: { keep: { scan: count } }\n")],
        exit: 1,
        kinds: &["scan_loosened"],
    },
    Row {
        name: "a url entry's scan turned off",
        old: &[(
            "  a: keep\n",
            "  a: keep\n  w: { url: { keep_query: [q] } }\n",
        )],
        new: &[(
            "  a: keep\n",
            "  a: keep\n  w: { url: { keep_query: [q], scan: off } }\n",
        )],
        exit: 1,
        kinds: &["scan_loosened"],
    },
    Row {
        name: "an explicit scan equal to the policy's is no change",
        old: &[],
        new: &[("  a: keep\n", "  a: { keep: { scan: redact } }\n")],
        exit: 0,
        kinds: &[],
    },
    Row {
        name: "same policy",
        old: &[],
        new: &[],
        exit: 0,
        kinds: &[],
    },
    Row {
        name: "version bump only",
        old: &[],
        new: &[("version: 1", "version: 2")],
        exit: 0,
        kinds: &[],
    },
    Row {
        name: "a path newly allowed",
        old: &[],
        new: &[("  a: keep\n", "  a: keep\n  b: keep\n")],
        exit: 1,
        kinds: &["newly_allowed"],
    },
    Row {
        name: "a path newly removed",
        old: &[],
        new: &[("  a: keep\n", "")],
        exit: 0,
        kinds: &["newly_removed"],
    },
    Row {
        name: "keep where it was generalised",
        old: &[],
        new: &[("ts: { truncate_time: hour }", "ts: keep")],
        exit: 1,
        kinds: &["action_changed"],
    },
    Row {
        name: "pseudonymise where it was kept",
        old: &[],
        new: &[("  a: keep\n", "  a: pseudonymise\n")],
        exit: 0,
        kinds: &["action_changed"],
    },
    Row {
        name: "pseudonymise where it was generalised",
        old: &[],
        new: &[("ip: { ip_prefix: { v4: 24, v6: 48 } }", "ip: pseudonymise")],
        exit: 1,
        kinds: &["action_changed"],
    },
    Row {
        name: "a longer IPv4 prefix",
        old: &[],
        new: &[("v4: 24", "v4: 28")],
        exit: 1,
        kinds: &["generalisation_loosened"],
    },
    Row {
        name: "a longer IPv6 prefix",
        old: &[],
        new: &[("v6: 48", "v6: 56")],
        exit: 1,
        kinds: &["generalisation_loosened"],
    },
    Row {
        name: "a shorter IPv4 prefix",
        old: &[],
        new: &[("v4: 24", "v4: 16")],
        exit: 0,
        kinds: &["generalisation_tightened"],
    },
    Row {
        name: "more query keys",
        old: &[],
        new: &[(r#"["utm_*"]"#, r#"["utm_*", "ref"]"#)],
        exit: 1,
        kinds: &["generalisation_loosened"],
    },
    Row {
        name: "fewer query keys",
        old: &[],
        new: &[(r#"["utm_*"]"#, "[]")],
        exit: 0,
        kinds: &["generalisation_tightened"],
    },
    Row {
        name: "finer time",
        old: &[],
        new: &[("truncate_time: hour", "truncate_time: minute")],
        exit: 1,
        kinds: &["generalisation_loosened"],
    },
    Row {
        name: "coarser time",
        old: &[],
        new: &[("truncate_time: hour", "truncate_time: day")],
        exit: 0,
        kinds: &["generalisation_tightened"],
    },
    Row {
        name: "narrower buckets",
        old: &[],
        new: &[("width: 10", "width: 5")],
        exit: 1,
        kinds: &["generalisation_loosened"],
    },
    Row {
        name: "wider buckets",
        old: &[],
        new: &[("width: 10", "width: 20")],
        exit: 0,
        kinds: &["generalisation_tightened"],
    },
    Row {
        name: "a new bucket edge",
        old: &[],
        new: &[("[0, 18, 65]", "[0, 18, 30, 65]")],
        exit: 1,
        kinds: &["generalisation_loosened"],
    },
    Row {
        name: "a bucket edge removed",
        old: &[],
        new: &[("[0, 18, 65]", "[0, 65]")],
        exit: 0,
        kinds: &["generalisation_tightened"],
    },
    Row {
        name: "a redaction pattern replaced",
        old: &[],
        new: &[(r"'\d{6,}'", r"'\d{9,}'")],
        exit: 1,
        kinds: &["redaction_loosened"],
    },
    Row {
        name: "a redaction pattern added",
        old: &[],
        new: &[(r"['\d{6,}']", r"['\d{6,}', '@']")],
        exit: 0,
        kinds: &["redaction_tightened"],
    },
    Row {
        name: "a drop under a kept parent removed",
        old: &[],
        new: &[("  obj.x: drop\n", "")],
        exit: 1,
        kinds: &["newly_allowed"],
    },
    Row {
        name: "consent removed",
        old: &[],
        new: &[NO_CONSENT],
        exit: 1,
        kinds: &["consent_removed"],
    },
    Row {
        name: "consent added",
        old: &[NO_CONSENT],
        new: &[],
        exit: 0,
        kinds: &["consent_added"],
    },
    Row {
        name: "opt-out removed",
        old: &[],
        new: &[(", opt_out: c.gpc", "")],
        exit: 1,
        kinds: &["consent_loosened"],
    },
    Row {
        name: "consent read elsewhere",
        old: &[],
        new: &[("purposes: c.p", "purposes: c.q")],
        exit: 1,
        kinds: &["consent_changed"],
    },
    Row {
        name: "consent platform category",
        old: &[],
        new: &[("purposes: c.p,", "purposes: c.p, category: Analytics,")],
        exit: 1,
        kinds: &["consent_changed"],
    },
    Row {
        name: "purpose changed",
        old: &[NO_CONSENT],
        new: &[NO_CONSENT, ("purpose: analytics", "purpose: marketing")],
        exit: 0,
        kinds: &["purpose_changed"],
    },
    Row {
        name: "pseudonym options changed",
        old: &[],
        new: &[(
            "subject: [u]\n",
            "subject: [u]\npseudonyms: { truncate_bytes: 16 }\n",
        )],
        exit: 0,
        kinds: &["pseudonyms_changed"],
    },
    Row {
        name: "normalisation changed",
        old: &[],
        new: &[(
            "u: pseudonymise",
            "u: { pseudonymise: { normalise: [lowercase] } }",
        )],
        exit: 0,
        kinds: &["normalise_changed"],
    },
    Row {
        name: "a subject path removed",
        old: &[],
        new: &[("subject: [u]\n", "")],
        exit: 1,
        kinds: &["subject_removed"],
    },
    Row {
        name: "a subject path added",
        old: &[],
        new: &[("subject: [u]", "subject: [u, a2]")],
        exit: 0,
        kinds: &["subject_added"],
    },
    Row {
        name: "a waiver added",
        old: &[],
        new: &[
            ("  a: keep\n", "  a: keep\n  health: keep\n"),
            (
                "rules:",
                "waivers:\n  health: { category: health, reason: \"DPIA-7\" }\nrules:",
            ),
        ],
        exit: 1,
        kinds: &["newly_allowed", "waiver_added"],
    },
    Row {
        name: "a drop rule turned off",
        old: &[],
        new: &[("drop: true", "drop: false")],
        exit: 1,
        kinds: &["rule_drop_removed"],
    },
    Row {
        name: "a drop rule removed",
        old: &[],
        new: &[("  - { when: { type: track }, drop: true }\n", "")],
        exit: 1,
        kinds: &["rule_removed"],
    },
    Row {
        name: "a drop rule added",
        old: &[],
        new: &[(
            "rules:\n",
            "rules:\n  - { when: { type: alias }, drop: true }\n",
        )],
        exit: 0,
        kinds: &["rule_added", "newly_removed"],
    },
    Row {
        name: "a rule's allowlist narrowed",
        old: &[],
        new: &[(", tr.plan: keep", "")],
        exit: 0,
        kinds: &["newly_removed"],
    },
    Row {
        name: "a rule's allowlist widened",
        old: &[],
        new: &[("tr.plan: keep", "tr.plan: keep, tr.name: keep")],
        exit: 1,
        kinds: &["newly_allowed"],
    },
    Row {
        name: "rules reordered",
        old: &[],
        new: &[(
            "  - { when: { type: identify }, fields: { a: keep, tr.plan: keep } }\n  - { when: { type: track }, drop: true }\n",
            "  - { when: { type: track }, drop: true }\n  - { when: { type: identify }, fields: { a: keep, tr.plan: keep } }\n",
        )],
        exit: 1,
        kinds: &["rules_reordered"],
    },
    Row {
        name: "an opt-out header added",
        old: &[],
        new: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, opt_out_header: sec-gpc",
        )],
        exit: 0,
        kinds: &["consent_tightened"],
    },
    Row {
        name: "a TCF check added",
        old: &[],
        new: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1, 7] }",
        )],
        exit: 0,
        kinds: &["consent_tightened"],
    },
    Row {
        name: "a TCF purpose no longer required",
        old: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1, 7] }",
        )],
        new: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1] }",
        )],
        exit: 1,
        kinds: &["consent_loosened"],
    },
    Row {
        name: "legitimate interest allowed for a TCF purpose",
        old: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1, 7] }",
        )],
        new: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1, 7], legitimate_interest: [7] }",
        )],
        exit: 1,
        kinds: &["consent_loosened"],
    },
    Row {
        name: "a TCF vendor required",
        old: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1] }",
        )],
        new: &[(
            ", opt_out: c.gpc",
            ", opt_out: c.gpc, tcf: { path: c.tc, purposes: [1], vendor: 755 }",
        )],
        exit: 0,
        kinds: &["consent_tightened"],
    },
    Row {
        name: "an invalid new policy",
        old: &[],
        new: &[("  a: keep\n", "  a: kep\n")],
        exit: 64,
        kinds: &[],
    },
    Row {
        name: "an invalid old policy",
        old: &[("version: 1", "version: one")],
        new: &[],
        exit: 64,
        kinds: &[],
    },
];

fn kinds(json: &Value) -> BTreeSet<String> {
    json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn diff_exit_codes_and_change_kinds_over_a_table_of_policy_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, row) in ROWS.iter().enumerate() {
        let old = dir.path().join(format!("{i}-old.yaml"));
        let new = dir.path().join(format!("{i}-new.yaml"));
        std::fs::write(&old, variant(row.old)).unwrap();
        std::fs::write(&new, variant(row.new)).unwrap();
        let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
        let o = veil(&["diff", old, new, "--format", "json"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.code() != Some(row.exit) {
            failures.push(format!(
                "{}: exit {:?}, want {}: {err}",
                row.name,
                o.status.code(),
                row.exit
            ));
            continue;
        }
        if row.exit == 64 {
            continue;
        }
        let json: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(json["widens"], row.exit == 1, "{}", row.name);
        let got = kinds(&json);
        let want: BTreeSet<String> = row.kinds.iter().map(|k| k.to_string()).collect();
        if !want.is_subset(&got) || (want.is_empty() && !got.is_empty()) {
            failures.push(format!("{}: kinds {got:?}, want {want:?}", row.name));
        }
        // The text form agrees on the exit code.
        let t = veil(&["diff", old, new]);
        assert_eq!(t.status.code(), Some(row.exit), "{}", row.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn text_output_says_what_widens_with_the_old_and_new_action() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    std::fs::write(&old, BASE).unwrap();
    std::fs::write(
        &new,
        variant(&[
            ("v4: 24", "v4: 28"),
            (
                "subject: [u]\n",
                "subject: [u]\npseudonyms: { encoding: base64url }\n",
            ),
        ]),
    )
    .unwrap();
    let o = veil(&["diff", old.to_str().unwrap(), new.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("widens (1):\n  fields ip: a longer IP prefix is kept [generalisation_loosened]\n      was: ip_prefix v4 /24, v6 /48\n      now: ip_prefix v4 /28, v6 /48\n"), "{out}");
    assert!(
        out.contains("breaks joins (1):\n  pseudonyms: every pseudonym is written differently"),
        "{out}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 change widen"), "{err}");
}

#[test]
fn events_replayed_through_both_count_changed_values_per_path() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    std::fs::write(&old, BASE).unwrap();
    std::fs::write(
        &new,
        variant(&[
            ("v4: 24", "v4: 16"),
            ("  a: keep\n", "  a: keep\n  b: keep\n"),
            (", opt_out: c.gpc", ""),
        ]),
    )
    .unwrap();
    let events = dir.path().join("events.ndjson");
    let c = r#""c":{"p":["analytics"]}"#;
    std::fs::write(
        &events,
        format!(
            "{{{c},\"a\":1,\"ip\":\"203.0.113.77\",\"b\":[1,2]}}\n\
             {{{c},\"a\":2,\"ip\":\"203.0.113.78\"}}\n\
             {{{c},\"a\":3,\"u\":\"x\"}}\n\
             {{\"c\":{{\"p\":[\"analytics\"],\"gpc\":true}},\"a\":4}}\n\
             not json\n\n"
        ),
    )
    .unwrap();
    let o = veil(&[
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ev = &json["events"];
    assert_eq!(ev["events"], 5, "{ev}");
    assert_eq!(ev["values"], serde_json::json!({"ip": 2, "b[]": 1}), "{ev}");
    assert_eq!(
        ev["verdicts"],
        serde_json::json!({"dropped (opted_out) -> forwarded": 1}),
        "{ev}"
    );
    let _ = Path::new("");
}
