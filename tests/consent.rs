//! Consent in the shapes real events carry: IAB TCF v2 strings and the
//! header form of Global Privacy Control.
//!
//! The TCF oracle is the IAB Tech Lab's own JavaScript library
//! (`@iabtechlabtcf/core`): tests/support/oracle/tcf/generate.mjs encodes
//! random consent models, mutates them, decodes every string with the IAB
//! decoder and writes down what the documented rule (docs/policy.md) decides.
//! `tests/support/oracle/tcf/vectors.jsonl` is its output for seed 1, committed; when
//! node and the library are installed (`.ci/run` installs them) a fresh seed
//! is generated and checked too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use veil::keys::parse_key;
use veil::{CompiledPolicy, DropReason, Limits, Outcome, Policy, Scratch, compile};

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One line of the oracle's output.
#[derive(Debug)]
struct Vector {
    name: String,
    tc: String,
    purposes: Vec<u64>,
    legitimate_interest: Vec<u64>,
    vendor: Option<u64>,
    granted: bool,
    invalid: bool,
}

fn parse_vectors(text: &str) -> Vec<Vector> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let nums = |k: &str| -> Vec<u64> {
                v[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
                    .collect()
            };
            Vector {
                name: v["name"].as_str().unwrap().to_owned(),
                tc: v["tc"].as_str().unwrap().to_owned(),
                purposes: nums("purposes"),
                legitimate_interest: nums("legitimate_interest"),
                vendor: v["vendor"].as_u64(),
                granted: v["granted"].as_bool().unwrap(),
                invalid: v["invalid"].as_bool().unwrap(),
            }
        })
        .collect()
}

fn tcf_policy(purposes: &[u64], li: &[u64], vendor: Option<u64>) -> String {
    let list = |ns: &[u64]| ns.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let vendor = vendor
        .map(|v| format!("    vendor: {v}\n"))
        .unwrap_or_default();
    format!(
        "name: tcf-test\nversion: 1\npurpose: ads\nconsent:\n  tcf:\n    path: gdpr.tc\n    purposes: [{}]\n    legitimate_interest: [{}]\n{vendor}fields:\n  id: keep\n",
        list(purposes),
        list(li)
    )
}

fn engine(yaml: &str) -> CompiledPolicy {
    let policy = Policy::parse(yaml, "tcf.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let key = parse_key("k1", KEY_HEX.as_bytes(), Path::new("k1.key")).unwrap();
    compile(policy, &key, Limits::default())
}

/// Run every vector through the engine (one compiled policy per distinct
/// rule) and return the mismatches.
fn mismatches(vectors: &[Vector]) -> Vec<String> {
    let mut engines: HashMap<String, CompiledPolicy> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut failures = Vec::new();
    for v in vectors {
        let yaml = tcf_policy(&v.purposes, &v.legitimate_interest, v.vendor);
        let engine = engines.entry(yaml.clone()).or_insert_with(|| engine(&yaml));
        let event = json!({"id": 1, "gdpr": {"tc": v.tc}}).to_string();
        let mut out = Vec::new();
        let verdict = engine.apply(event.as_bytes(), &mut out, &mut scratch);
        let granted = match verdict.outcome {
            Outcome::Forwarded => true,
            Outcome::Dropped(DropReason::NoConsent) => false,
            other => {
                failures.push(format!("{}: unexpected {other:?} for {}", v.name, v.tc));
                continue;
            }
        };
        let invalid = verdict.consent_invalid.is_some();
        if (granted, invalid) != (v.granted, v.invalid) {
            failures.push(format!(
                "{}: veil granted={granted} invalid={invalid} ({:?}), IAB granted={} invalid={}: tc={} purposes={:?} li={:?} vendor={:?}",
                v.name,
                verdict.consent_invalid,
                v.granted,
                v.invalid,
                v.tc,
                v.purposes,
                v.legitimate_interest,
                v.vendor
            ));
        }
    }
    failures
}

fn committed_vectors() -> Vec<Vector> {
    let text =
        std::fs::read_to_string(root().join("tests/support/oracle/tcf/vectors.jsonl")).unwrap();
    parse_vectors(&text)
}

#[test]
fn tcf_decisions_match_the_iab_library_on_the_committed_vectors() {
    let vectors = committed_vectors();
    let granted = vectors.iter().filter(|v| v.granted).count();
    let invalid = vectors.iter().filter(|v| v.invalid).count();
    // The table exercises every branch: grants, refusals and unreadable strings.
    assert!(vectors.len() >= 400, "{} vectors", vectors.len());
    assert!(
        granted >= vectors.len() / 5,
        "{granted} granted of {}",
        vectors.len()
    );
    assert!(invalid >= 50, "{invalid} invalid");
    assert!(vectors.len() - granted - invalid >= 50);
    let failures = mismatches(&vectors);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tcf_decisions_match_the_iab_library_on_a_fresh_seed() {
    let dir = root().join("tests/support/oracle/tcf");
    if !dir.join("node_modules/@iabtechlabtcf/core").exists() {
        // .ci/run installs the library; elsewhere the committed table suffices.
        assert!(
            std::env::var_os("CI").is_none(),
            "the IAB library is not installed: run `npm ci --prefix {}`",
            dir.display()
        );
        eprintln!("skipped: npm ci --prefix {} to run it", dir.display());
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 1_000_000;
    let out = Command::new("node")
        .arg("generate.mjs")
        .args(["--seed", &seed.to_string(), "--count", "300"])
        .current_dir(&dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "generator failed (seed {seed})");
    let vectors = parse_vectors(std::str::from_utf8(&out.stdout).unwrap());
    assert!(
        vectors.len() >= 200,
        "seed {seed}: {} vectors",
        vectors.len()
    );
    let failures = mismatches(&vectors);
    assert!(
        failures.is_empty(),
        "seed {seed}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A string the IAB library decodes as granting its rule's purposes to its
/// vendor (the first such line of the committed table), with that rule.
fn a_granting_string() -> (String, Vec<u64>, Vec<u64>, Option<u64>) {
    let v = committed_vectors()
        .into_iter()
        .find(|v| v.granted && v.vendor.is_some())
        .expect("a granted vector with a vendor");
    (v.tc, v.purposes, v.legitimate_interest, v.vendor)
}

#[test]
fn a_tc_string_in_any_other_shape_grants_nothing() {
    let (tc, purposes, li, vendor) = a_granting_string();
    let engine = engine(&tcf_policy(&purposes, &li, vendor));
    let mut scratch = Scratch::default();
    let mut run = |gdpr: Value| {
        let event = json!({"id": 1, "gdpr": gdpr}).to_string();
        let v = engine.apply(event.as_bytes(), &mut Vec::new(), &mut scratch);
        (v.outcome, v.consent_invalid.map(|i| i.code()))
    };
    let forwarded = (Outcome::Forwarded, None);
    let no_consent = (Outcome::Dropped(DropReason::NoConsent), None);
    let malformed = (Outcome::Dropped(DropReason::NoConsent), Some("malformed"));
    assert_eq!(run(json!({"tc": tc})), forwarded);
    // Missing, null or empty: no consent string, nothing to count as invalid.
    assert_eq!(run(json!({})), no_consent);
    assert_eq!(run(json!({"tc": null})), no_consent);
    assert_eq!(run(json!({"tc": ""})), no_consent);
    assert_eq!(run(json!("not an object")), no_consent);
    // Not a string: unreadable.
    for odd in [json!(1), json!(true), json!([tc]), json!({"s": tc})] {
        assert_eq!(run(json!({"tc": odd})), malformed, "{odd}");
    }
    // White space or padding around it is not base64url.
    assert_eq!(run(json!({"tc": format!(" {tc}")})), malformed);
    assert_eq!(run(json!({"tc": format!("{tc}==")})), malformed);
}

#[test]
fn an_escaped_tc_string_is_read_after_unescaping() {
    let (tc, purposes, li, vendor) = a_granting_string();
    let engine = engine(&tcf_policy(&purposes, &li, vendor));
    // Every character as \u00XX: the same string to any JSON reader.
    let escaped: String = tc.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let event = format!(r#"{{"id":1,"gdpr":{{"tc":"{escaped}"}}}}"#);
    assert_eq!(
        serde_json::from_str::<Value>(&event).unwrap()["gdpr"]["tc"],
        tc
    );
    let v = engine.apply(event.as_bytes(), &mut Vec::new(), &mut Scratch::default());
    assert_eq!(v.outcome, Outcome::Forwarded);
}

#[test]
fn tcf_and_a_purposes_list_must_both_grant() {
    let (tc, purposes, li, vendor) = a_granting_string();
    let yaml = tcf_policy(&purposes, &li, vendor).replace(
        "consent:\n",
        "consent:\n  purposes: consent.categories\n  category: Advertising\n  opt_out: consent.gpc\n",
    );
    let engine = engine(&yaml);
    let mut scratch = Scratch::default();
    let mut run = |consent: Value| {
        let event = json!({"id": 1, "gdpr": {"tc": tc}, "consent": consent}).to_string();
        engine
            .apply(event.as_bytes(), &mut Vec::new(), &mut scratch)
            .outcome
    };
    assert_eq!(
        run(json!({"categories": {"Advertising": true}})),
        Outcome::Forwarded
    );
    assert_eq!(
        run(json!({"categories": {"Advertising": false}})),
        Outcome::Dropped(DropReason::NoConsent)
    );
    assert_eq!(
        run(json!({"categories": ["Advertising"], "gpc": true})),
        Outcome::Dropped(DropReason::OptedOut)
    );
}

#[test]
fn explain_and_check_state_the_tcf_rule_by_purpose_number_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("ads.yaml");
    std::fs::write(
        &policy,
        "name: ads\nversion: 2\npurpose: ads\nconsent:\n  tcf:\n    path: context.gdpr.tc\n    purposes: [1, 7]\n    legitimate_interest: [7]\n    vendor: 755\n  opt_out_header: Sec-GPC\nfields:\n  id: keep\n",
    )
    .unwrap();
    let veil = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let p = policy.to_str().unwrap();
    let md = veil(&["explain", "--policy", p]);
    // The names are TCF v2.2's (IAB Tech Lab, Appendix A of the policies).
    for phrase in [
        "IAB TCF v2 consent string at `context.gdpr.tc`",
        "purpose 1 (Store and/or access information on a device) by consent;",
        "purpose 7 (Measure advertising performance) by consent or legitimate interest",
        "to vendor 755",
        "header `sec-gpc`",
    ] {
        assert!(md.contains(phrase), "{phrase} not in:\n{md}");
    }
    let json: Value =
        serde_json::from_str(&veil(&["explain", "--policy", p, "--format", "json"])).unwrap();
    let tcf = &json["consent"]["tcf"];
    assert_eq!(tcf["path"], "context.gdpr.tc");
    assert_eq!(tcf["vendor"], 755);
    assert_eq!(
        tcf["purposes"],
        json!([
            {"id": 1, "name": "Store and/or access information on a device", "legitimate_interest": false},
            {"id": 7, "name": "Measure advertising performance", "legitimate_interest": true},
        ])
    );
    assert_eq!(json["consent"]["opt_out_header"], "sec-gpc");
    let check = veil(&["check", "--policy", p]);
    assert!(
        check.contains("TC string at context.gdpr.tc must grant TCF purposes 1, 7, vendor 755; opted out when header sec-gpc is set"),
        "{check}"
    );
}

#[test]
fn veil_apply_forwards_exactly_what_the_iab_library_grants_and_counts_unreadable_strings() {
    // The rules the table uses most, each run end to end through `veil apply`.
    let vectors = committed_vectors();
    let mut groups: HashMap<String, Vec<&Vector>> = HashMap::new();
    for v in &vectors {
        groups
            .entry(tcf_policy(&v.purposes, &v.legitimate_interest, v.vendor))
            .or_default()
            .push(v);
    }
    let mut groups: Vec<(String, Vec<&Vector>)> = groups.into_iter().collect();
    groups.sort_by_key(|(yaml, g)| (std::cmp::Reverse(g.len()), yaml.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (yaml, group) in groups.iter().take(6) {
        let policy = dir.path().join("tcf.yaml");
        std::fs::write(&policy, yaml).unwrap();
        let input: String = group
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": i, "gdpr": {"tc": v.tc}}).to_string() + "\n")
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(["apply", "--policy", policy.to_str().unwrap(), "--keys"])
            .arg(root().join("tests/keys"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{summary}");
        let forwarded: Vec<u64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let want: Vec<u64> = (0..group.len() as u64)
            .filter(|&i| group[i as usize].granted)
            .collect();
        assert_eq!(forwarded, want, "{yaml}");
        let invalid = group.iter().filter(|v| v.invalid).count();
        let refused = group.len() - want.len();
        if refused > 0 {
            assert!(
                summary.contains(&format!("(no_consent {refused})")),
                "{summary}"
            );
        }
        let note = format!(
            "note: {invalid} of the no_consent events carried a TC string that could not be read"
        );
        assert_eq!(summary.contains(&note), invalid > 0, "{summary}");
        checked += group.len();
    }
    assert!(checked >= 30, "{checked} lines checked end to end");
}
