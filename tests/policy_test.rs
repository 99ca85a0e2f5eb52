//! `veil test` end to end: the shipped cases pass against the shipped
//! policy, a failing case reads well in a terminal and in JUnit XML, bad
//! case files and policies exit 64 with their place, and the test key's
//! pseudonyms agree with Python's `hmac`/`hashlib` (an independent oracle).

use std::path::Path;
use std::process::{Command, Output};

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("run veil")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_owned()
}

const POLICY: &str = "name: t\nversion: 2\npurpose: analytics\nsubject: [userId]\nfields:\n  type: keep\n  userId: pseudonymise\n  context.ip: { ip_prefix: { v4: 24 } }\n";

#[test]
fn the_shipped_cases_pass_against_the_shipped_policy() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let o = veil(&[
        "test",
        "--policy",
        "config/policy.yaml",
        "--junit",
        junit.to_str().unwrap(),
        "config/policy.tests.yaml",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("for policy web-analytics@"), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"config/policy.tests.yaml\""),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn a_failing_case_names_the_case_the_path_and_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.yaml", POLICY);
    let cases = write(
        dir.path(),
        "c.yaml",
        "- name: passes\n  input: {type: page, userId: u1, email: a@b.c}\n  expect: {type: page, userId: {pseudonym: u1}}\n\
         - name: ip kept whole\n  input: {type: page, context: {ip: 203.0.113.77}}\n  expect: {type: page, context: {ip: 203.0.113.77}}\n\
         - name: expects a drop\n  input: {type: page}\n  expect: {dropped: no_consent}\n",
    );
    let junit = dir.path().join("junit.xml");
    let o = veil(&[
        "test",
        "--policy",
        &policy,
        "--junit",
        junit.to_str().unwrap(),
        &cases,
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("ok   passes\n"), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL ip kept whole ({cases}:4)\n  context.ip: expected \"203.0.113.77\", got \"203.0.113.0\"\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "FAIL expects a drop ({cases}:7)\n  verdict: expected dropped (no_consent), got forwarded\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("3 cases for policy t@2: 1 passed, 2 failed"),
        "{out}"
    );
    assert!(err.contains("2 of 3 policy test cases failed"), "{err}");
    let xml = std::fs::read_to_string(junit).unwrap();
    assert_eq!(xml.matches("<failure").count(), 2, "{xml}");
    assert!(
        xml.contains("the clean event differs at context.ip"),
        "{xml}"
    );
    assert!(xml.contains("tests=\"3\""), "{xml}");
}

#[test]
fn an_invalid_case_file_or_policy_exits_64_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.yaml", POLICY);
    let cases = write(
        dir.path(),
        "c.yaml",
        "- name: a\n  input: {type: page}\n  expect: {type: page}\n- name: b\n  input: {type: page}\n  expect: {dead_letter: broken}\n",
    );
    let o = veil(&["test", "--policy", &policy, &cases]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{out}{err}");
    assert!(err.contains(&format!("{cases}:6:")), "{err}");
    assert!(
        err.contains("invalid_json"),
        "lists the valid reasons: {err}"
    );
    assert!(out.is_empty(), "no case runs from an invalid file: {out}");

    let typo = write(
        dir.path(),
        "t.yaml",
        "- name: a\n  input: {}\n  expcet: {}\n",
    );
    let o = veil(&["test", "--policy", &policy, &typo]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains(&format!("{typo}:3:")), "{err}");

    let o = veil(&["test", "--policy", &policy, "--junit", &cases, &cases]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--junit"),
        "the report would replace a case file: {err}"
    );
    assert!(std::fs::read_to_string(&cases).unwrap().contains("broken"));

    let bad = write(
        dir.path(),
        "bad.yaml",
        "name: t\nversion: 1\npurpose: analytics\nfields: { a: kep }\n",
    );
    let o = veil(&["test", "--policy", &bad, &cases]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains(&format!("{bad}:4:")), "{err}");
}

/// The test key is SHA-256(`veil/v1/test-key`); pseudonyms are
/// HMAC-SHA256(HKDF-SHA256(key, info = veil/v1/purpose/<purpose>), value).
const ORACLE: &str = r#"
import hashlib, hmac, sys
key = hashlib.sha256(b"veil/v1/test-key").digest()
prk = hmac.new(b"", key, hashlib.sha256).digest()
okm = hmac.new(prk, b"veil/v1/purpose/" + sys.argv[1].encode() + b"\x01", hashlib.sha256).digest()
print(hmac.new(okm, sys.argv[2].encode(), hashlib.sha256).hexdigest())
"#;

#[test]
fn a_pseudonym_marker_is_the_hmac_python_computes_under_the_test_key() {
    let py = Command::new("python3")
        .args(["-c", ORACLE, "analytics", "user-15496"])
        .output()
        .expect("python3");
    assert!(py.status.success());
    let want = String::from_utf8(py.stdout).unwrap().trim().to_owned();
    assert_eq!(want.len(), 64);
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.yaml", POLICY);
    let cases = write(
        dir.path(),
        "c.yaml",
        &format!(
            "- name: marker\n  input: {{userId: user-15496}}\n  expect: {{userId: {{pseudonym: user-15496}}}}\n\
             - name: literal\n  input: {{userId: user-15496}}\n  expect: {{userId: \"{want}\"}}\n"
        ),
    );
    let o = veil(&["test", "--policy", &policy, &cases]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
}

#[test]
fn a_key_file_holding_the_test_key_is_refused_by_real_runs() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let py = Command::new("python3")
        .args([
            "-c",
            "import hashlib; print(hashlib.sha256(b'veil/v1/test-key').hexdigest())",
        ])
        .output()
        .unwrap();
    let key = keys.join("t.key");
    std::fs::write(&key, &py.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let policy = write(dir.path(), "p.yaml", POLICY);
    let input = write(dir.path(), "in.ndjson", "{\"userId\":\"u\"}\n");
    let o = veil(&[
        "apply",
        "--policy",
        &policy,
        "--keys",
        keys.to_str().unwrap(),
        "--input",
        &input,
        "--output",
        "/dev/null",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("public TEST key"), "{err}");
    let o = veil(&[
        "hash",
        "--keys",
        keys.to_str().unwrap(),
        "--purpose",
        "analytics",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(64));
}

/// Concrete paths of every leaf of an expected event (array elements as `[]`).
fn leaf_paths(
    v: &serde_json::Value,
    at: &mut Vec<veil::policy::Segment>,
    out: &mut Vec<veil::policy::FieldPath>,
) {
    use veil::policy::Segment;
    match v {
        serde_json::Value::Object(m) if m.len() == 1 && m.contains_key("pseudonym") => {
            out.push(veil::policy::FieldPath(at.clone()))
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                at.push(Segment::Key(k.clone()));
                leaf_paths(v, at, out);
                at.pop();
            }
        }
        serde_json::Value::Array(a) => {
            at.push(Segment::Each);
            for v in a {
                leaf_paths(v, at, out);
            }
            at.pop();
        }
        _ => out.push(veil::policy::FieldPath(at.clone())),
    }
}

#[test]
fn the_shipped_cases_reach_every_entry_of_the_shipped_policy() {
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let text = std::fs::read_to_string("config/policy.tests.yaml").unwrap();
    let cases = veil::cases::parse(&text, "config/policy.tests.yaml").unwrap();
    let fields = policy.fields.as_ref().unwrap();
    let mut reached = std::collections::BTreeSet::new();
    let mut verdicts = std::collections::BTreeSet::new();
    for case in &cases {
        match &case.expect {
            veil::cases::Expect::Forwarded(v) => {
                let mut paths = Vec::new();
                leaf_paths(v, &mut Vec::new(), &mut paths);
                for p in paths {
                    let (_, from) = veil::policy::diff::effective(Some(fields), &p)
                        .unwrap_or_else(|| panic!("{}: {p} is not allowed", case.name));
                    reached.insert(from.to_string());
                }
            }
            veil::cases::Expect::Dropped(r) => {
                verdicts.insert(r.code());
            }
            veil::cases::Expect::DeadLetter(r) => {
                verdicts.insert(r.code());
            }
        }
    }
    let missing: Vec<String> = fields
        .entries
        .iter()
        .map(|e| e.path.to_string())
        .filter(|p| !reached.contains(p))
        .collect();
    assert!(missing.is_empty(), "no case reaches {missing:?}");
    for v in ["no_consent", "opted_out", "invalid_json"] {
        assert!(verdicts.contains(v), "no case expects {v}");
    }
}

/// A bucket of a 17-digit number is compared to the last digit: the output
/// is read with exact float parsing, so 4000000000000027.5 (the bucket of
/// 4000000000000028 at width 2.5, as exact arithmetic gives it) is not
/// mistaken for 4000000000000027.
#[test]
fn a_bucket_of_a_seventeen_digit_number_is_compared_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.yaml",
        "name: t\nversion: 1\npurpose: analytics\nfields:\n  c: { bucket: { width: 2.5 } }\n",
    );
    let cases = write(
        dir.path(),
        "c.yaml",
        "- name: exact\n  input: {c: 4000000000000028}\n  expect: {c: 4000000000000027.5}\n\
         - name: one ulp below\n  input: {c: 4000000000000028}\n  expect: {c: 4000000000000027.0}\n",
    );
    let o = veil(&["test", "--policy", &policy, &cases]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("ok   exact\n"), "{out}");
    assert!(out.contains("FAIL one ulp below"), "{out}");
    assert!(
        out.contains("2 cases for policy t@1: 1 passed, 1 failed"),
        "{out}"
    );
}
