//! The suppression (opt-out) list, end to end through `veil apply` and
//! `veil suppress`, against an independent oracle written in Python from
//! docs/erasure.md (tests/support/oracle/suppression.py: hmac and hashlib
//! only). The events are generated to disagree with the policy as often as
//! they fit it: subjects as numbers, booleans, nulls, objects and arrays,
//! escaped strings, case and white-space variants, wildcard and `[]`
//! paths, and an event with more subject values than veil checks.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

const POLICY: &str = r#"version: 1
name: optout-test
purpose: analytics
subject: [user.email, user.id, "identities[].id", "accounts.*.login"]
fields:
  id: keep
  user.email: { pseudonymise: { normalise: [trim, lowercase] } }
  user.id: pseudonymise
  identities[].id: pseudonymise
  accounts.*.login: { pseudonymise: { normalise: [lowercase] } }
"#;

/// What the oracle is told about the policy's subject paths (from the
/// policy text above, not from veil).
fn subjects() -> Value {
    json!([
        {"path": "user.email", "normalise": ["trim", "lowercase"]},
        {"path": "user.id", "normalise": []},
        {"path": "identities[].id", "normalise": []},
        {"path": "accounts.*.login", "normalise": ["lowercase"]},
    ])
}

const LISTED: [&str; 7] = [
    "alice@example.com",
    " BOB@example.com",
    "user-1",
    "42",
    "ÉVE@EXAMPLE.COM",
    "true",
    "dora@example.com",
];

fn veil(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn oracle(identifiers: &[&str], events: &[String]) -> Value {
    let request = json!({
        "key_hex": KEY_HEX,
        "key_id": "k1",
        "identifiers": identifiers,
        "subjects": subjects(),
        "events": events,
    });
    let mut child = Command::new("python3")
        .arg("tests/support/oracle/suppression.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (the oracle) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "oracle failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// An identifier-ish JSON value: listed ones in other cases and with white
/// space, escaped, unlisted ones, and values of every other JSON type.
fn identifier(r: &mut Rng) -> String {
    let base = *r.pick(&[
        "alice@example.com",
        "bob@example.com",
        "éve@example.com",
        "user-1",
        "user-2",
        "dora@example.com",
        "carol@example.com",
    ]);
    match r.below(12) {
        0 => json!(base.to_uppercase()).to_string(),
        1 => json!(format!("  {base}\t")).to_string(),
        2 => json!(format!(" {}", base.to_uppercase())).to_string(),
        // The same string with its first letter escaped.
        3 => {
            let mut chars = base.chars();
            let first = chars.next().unwrap();
            format!("\"\\u{:04x}{}\"", first as u32, chars.as_str())
        }
        4 => "42".into(),
        5 => r.pick(&["42.0", "4.2e1", "-42", "7"]).to_string(),
        6 => r.pick(&["true", "false", "null"]).to_string(),
        7 => format!("{{\"v\":{}}}", json!(base)),
        8 => format!("[{}]", json!(base)),
        _ => json!(base).to_string(),
    }
}

fn event(r: &mut Rng, id: usize) -> String {
    let mut members = vec![format!("\"id\":{id}")];
    match r.below(8) {
        0 => members.push(format!("\"user\":{}", identifier(r))),
        1 => {}
        _ => members.push(format!(
            "\"user\":{{\"email\":{},\"id\":{}}}",
            identifier(r),
            identifier(r)
        )),
    }
    match r.below(6) {
        0 => members.push(format!("\"identities\":{{\"id\":{}}}", identifier(r))),
        1 => {}
        _ => {
            let n = r.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| format!("{{\"id\":{}}}", identifier(r)))
                .collect();
            members.push(format!("\"identities\":[{}]", items.join(",")));
        }
    }
    if r.below(2) == 0 {
        members.push(format!(
            "\"accounts\":{{\"shop\":{{\"login\":{}}},\"forum\":{{\"login\":{},\"karma\":3}}}}",
            identifier(r),
            identifier(r)
        ));
    }
    format!("{{{}}}", members.join(","))
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let key = dir.join("keys/k1.key");
    std::fs::write(&key, KEY_HEX).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

#[test]
fn veil_drops_exactly_the_events_the_oracle_finds_suppressed_and_leaks_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut events: Vec<String> = (0..3000).map(|i| event(&mut r, i)).collect();
    // More subject values than veil checks: dropped whatever they are.
    let many: Vec<String> = (0..300)
        .map(|i| format!("{{\"id\":\"nobody-{i}\"}}"))
        .collect();
    events.push(format!(
        "{{\"id\":3000,\"identities\":[{}]}}",
        many.join(",")
    ));
    std::fs::write(dir.join("events.ndjson"), events.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("optout.txt"),
        format!("# opt-outs, one per line\n\n{}\n", LISTED.join("\n")),
    )
    .unwrap();

    let out = veil(
        &[
            "apply",
            "--policy",
            &path(dir, "policy.yaml"),
            "--keys",
            &path(dir, "keys"),
            "--input",
            &path(dir, "events.ndjson"),
            "--suppress",
            &path(dir, "optout.txt"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = oracle(&LISTED, &events);
    let suppressed: BTreeSet<usize> = expected["suppressed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert!(
        suppressed.len() > 300 && suppressed.len() < 2700,
        "a test that exercises both sides: {} of {} suppressed",
        suppressed.len(),
        events.len()
    );
    assert!(
        suppressed.contains(&3000),
        "the event with 300 subject values"
    );

    let stdout = String::from_utf8(out.stdout).unwrap();
    let forwarded: BTreeSet<usize> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    let want: BTreeSet<usize> = (0..events.len())
        .filter(|i| !suppressed.contains(i))
        .collect();
    let wrongly_dropped: Vec<_> = want.difference(&forwarded).take(5).collect();
    let leaked: Vec<_> = forwarded.difference(&want).take(5).collect();
    assert!(
        wrongly_dropped.is_empty() && leaked.is_empty(),
        "forwarded but suppressed: {:?}; dropped but not suppressed: {:?}",
        leaked.iter().map(|&&i| &events[i]).collect::<Vec<_>>(),
        wrongly_dropped
            .iter()
            .map(|&&i| &events[i])
            .collect::<Vec<_>>(),
    );
    assert!(
        stderr.contains(&format!("suppressed {}", suppressed.len())),
        "the summary counts them: {stderr}"
    );

    // No output byte carries a listed identifier's pseudonym, under any of
    // the normalisations in use.
    let mut pseudonyms = Vec::new();
    for steps in [&[][..], &["trim", "lowercase"], &["lowercase"]] {
        let mut args = vec![
            "hash",
            "--keys",
            dir.join("keys").to_str().unwrap(),
            "--purpose",
            "analytics",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if !steps.is_empty() {
            args.push(format!("--normalise={}", steps.join(",")));
        }
        // Surrounding white space is not part of a listed identifier.
        args.extend(LISTED.iter().map(|s| s.trim().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = veil(&args, None);
        assert!(out.status.success());
        pseudonyms.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    for p in &pseudonyms {
        assert!(
            !stdout.contains(p.as_str()),
            "a suppressed subject's pseudonym {p} leaked"
        );
    }
}

#[test]
fn veil_suppress_prints_the_token_lines_the_oracle_computes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let expected = oracle(&LISTED, &[]);
    let keys = path(dir, "keys");
    let mut args = vec!["suppress", "--keys", &keys];
    args.extend(LISTED);
    let from_args = veil(&args, None);
    assert!(from_args.status.success());
    let stdin = format!("# comment\n\n{}\n", LISTED.join("\n"));
    let from_stdin = veil(&["suppress", "--keys", &keys], Some(stdin.as_bytes()));
    assert!(from_stdin.status.success());
    let want: Vec<String> = LISTED
        .iter()
        .flat_map(|id| {
            expected["tokens"][id]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let got: Vec<String> = String::from_utf8(from_args.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        want.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(got.len(), want.len(), "one line per distinct form");
    assert_eq!(
        String::from_utf8(from_stdin.stdout).unwrap(),
        got.join("\n") + "\n"
    );
    // No identifier appears in the token lines (those that are not made
    // of hex digits, which a token may contain by chance).
    for l in &got {
        let clear = LISTED.iter().filter(|id| id.contains(['@', '-']));
        assert!(!clear.clone().any(|id| l.contains(id.trim())), "{l}");
    }
}

#[test]
fn suppress_with_a_policy_that_declares_no_subject_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    std::fs::write(
        dir.join("nosubject.yaml"),
        "version: 1\nname: n\npurpose: analytics\nfields:\n  id: keep\n",
    )
    .unwrap();
    std::fs::write(dir.join("optout.txt"), "alice@example.com\n").unwrap();
    let out = veil(
        &[
            "apply",
            "--policy",
            &path(dir, "nosubject.yaml"),
            "--keys",
            &path(dir, "keys"),
            "--suppress",
            &path(dir, "optout.txt"),
        ],
        Some(b"{\"id\":1}\n"),
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("declares none"), "{stderr}");
    assert!(!stderr.contains("alice"), "never quotes the list: {stderr}");
}

#[test]
fn identifiers_inside_a_subject_container_or_where_one_was_expected_are_found() {
    // A subject path whose value is a container the policy pseudonymises
    // inside (recipients[], user.*), and one under a path the policy
    // pseudonymises whole (user: pseudonymise with subject user.id).
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    std::fs::write(
        dir.join("inside.yaml"),
        "version: 1\nname: inside\npurpose: analytics\nsubject: [recipients, user]\nfields:\n  type: keep\n  \
         recipients[]: pseudonymise\n  user.id: pseudonymise\n  \
         user.email: { pseudonymise: { normalise: [trim, lowercase] } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("above.yaml"),
        "version: 1\nname: above\npurpose: analytics\nsubject: [user.id]\nfields:\n  type: keep\n  \
         user: { pseudonymise: { normalise: [lowercase] } }\n",
    )
    .unwrap();
    std::fs::write(dir.join("optout.txt"), "alice\nalice@x\n").unwrap();
    let cases: [(&str, &str, bool); 7] = [
        (
            "inside.yaml",
            r#"{"type":"1","recipients":["alice"]}"#,
            true,
        ),
        ("inside.yaml", r#"{"type":"2","user":{"id":"alice"}}"#, true),
        (
            "inside.yaml",
            r#"{"type":"3","user":{"email":" Alice@X"}}"#,
            true,
        ),
        (
            "inside.yaml",
            r#"{"type":"4","recipients":[["bob"]],"user":{"id":"bob"}}"#,
            false,
        ),
        ("above.yaml", r#"{"type":"5","user":"ALICE"}"#, true),
        ("above.yaml", r#"{"type":"6","user":{"id":"alice"}}"#, true),
        ("above.yaml", r#"{"type":"7","user":"bob"}"#, false),
    ];
    for (policy, event, dropped) in cases {
        let out = veil(
            &[
                "apply",
                "--policy",
                &path(dir, policy),
                "--keys",
                &path(dir, "keys"),
                "--suppress",
                &path(dir, "optout.txt"),
                "-q",
            ],
            Some(format!("{event}\n").as_bytes()),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let forwarded = !out.stdout.is_empty();
        assert_eq!(
            forwarded,
            !dropped,
            "{policy} {event}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn a_file_line_that_looks_like_a_token_but_is_not_one_is_refused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let broken = format!("k1:{}", "ab".repeat(31)); // 62 hex digits
    std::fs::write(
        dir.join("optout.txt"),
        format!("\u{feff}alice@example.com\n{broken}\n"),
    )
    .unwrap();
    let out = veil(
        &[
            "apply",
            "--policy",
            &path(dir, "policy.yaml"),
            "--keys",
            &path(dir, "keys"),
            "--suppress",
            &path(dir, "optout.txt"),
        ],
        Some(b"{\"id\":1}\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains("optout.txt:2: looks like a token line"),
        "{stderr}"
    );
    assert!(!stderr.contains("alice"), "{stderr}");
}
