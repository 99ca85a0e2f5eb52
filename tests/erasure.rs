//! `veil erase` against an independent oracle (tests/support/oracle/
//! erasure.py: Python's hmac, hashlib and base64), under two keys and two
//! policies with different pseudonym options; its pseudonyms against what
//! `veil apply` writes; `--suppress-file` against `veil apply --suppress`;
//! and the worked example of docs/erasure.md, run as written.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const K2: &str = "f0e0d0c0b0a090807060504030201000ffeeddccbbaa99887766554433221100";

const ANALYTICS: &str = r#"version: 3
name: web
purpose: analytics
subject: [user.email, user.id]
fields:
  user.email: { pseudonymise: { normalise: [trim, lowercase] } }
  user.id: pseudonymise
"#;

const MARKETING: &str = r#"version: 1
name: crm
purpose: marketing
subject: [email]
pseudonyms:
  encoding: base64url
  key_id_prefix: true
  truncate_bytes: 16
fields:
  email: { pseudonymise: { normalise: [lowercase] } }
"#;

fn oracle_policies() -> Value {
    json!([
        {"id": "web@3", "purpose": "analytics", "encoding": "hex", "key_id_prefix": false,
         "truncate_bytes": 32, "subjects": [
            {"path": "user.email", "normalise": ["trim", "lowercase"]},
            {"path": "user.id", "normalise": []}]},
        {"id": "crm@1", "purpose": "marketing", "encoding": "base64url", "key_id_prefix": true,
         "truncate_bytes": 16, "subjects": [{"path": "email", "normalise": ["lowercase"]}]},
    ])
}

fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn veil(args: &[&str], stdin: Option<&[u8]>) -> Output {
    run(env!("CARGO_BIN_EXE_veil"), args, stdin)
}

fn setup(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for (id, hex) in [("k1", K1), ("k2", K2)] {
        let f = dir.join(format!("keys/{id}.key"));
        std::fs::write(&f, hex).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("web.yaml"), ANALYTICS).unwrap();
    std::fs::write(dir.join("crm.yaml"), MARKETING).unwrap();
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const IDENTIFIERS: [&str; 3] = [" Alice@Example.COM", "u-1", "Émile@example.com"];

#[test]
fn erase_prints_every_pseudonym_the_oracle_computes_under_every_key_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let mut args = vec![
        "erase".to_owned(),
        "--keys".into(),
        p(dir, "keys"),
        "--key-id".into(),
        "k2".into(),
        "--policy".into(),
        p(dir, "web.yaml"),
        "--policy".into(),
        p(dir, "crm.yaml"),
    ];
    args.extend(IDENTIFIERS.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = lines(&veil(&args, None));

    let request = json!({
        "keys": {"k1": K1, "k2": K2},
        "identifiers": IDENTIFIERS,
        "policies": oracle_policies(),
    });
    let out = run(
        "python3",
        &["tests/support/oracle/erasure.py"],
        Some(request.to_string().as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    // 3 identifiers x (2 + 1 subject paths) x 2 keys.
    assert_eq!(want.len(), 18);
    let as_set = |v: &[Value]| v.iter().map(Value::to_string).collect::<BTreeSet<_>>();
    assert_eq!(as_set(&got), as_set(&want));
    assert_eq!(got.len(), want.len(), "no line twice");
    // No identifier appears in the output: only its index.
    let text = got.iter().map(Value::to_string).collect::<String>();
    for id in IDENTIFIERS {
        assert!(!text.contains(id.trim()), "{id}");
    }
}

#[test]
fn erase_finds_the_pseudonyms_apply_wrote_and_its_suppress_file_stops_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let event = br#"{"user":{"email":"  alice@EXAMPLE.com","id":"u-1"}}"#;
    let other = br#"{"user":{"email":"bob@example.com","id":"u-2"}}"#;
    let input = [&event[..], b"\n", other, b"\n"].concat();
    let apply = |extra: &[&str]| {
        let keys = p(dir, "keys");
        let policy = p(dir, "web.yaml");
        let mut args = vec![
            "apply", "--policy", &policy, "--keys", &keys, "--key-id", "k1",
        ];
        args.extend(extra);
        let out = veil(&args, Some(&input));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let clean = apply(&[]);
    let first: Value = serde_json::from_str(clean.lines().next().unwrap()).unwrap();

    let found = lines(&veil(
        &[
            "erase",
            "--keys",
            &p(dir, "keys"),
            "--key-id",
            "k2",
            "--policy",
            &p(dir, "web.yaml"),
            "--suppress-file",
            &p(dir, "optout.txt"),
            "Alice@example.com",
            "u-1",
        ],
        None,
    ));
    let by_k1: BTreeSet<&str> = found
        .iter()
        .filter(|f| f["key_id"] == "k1")
        .map(|f| f["pseudonym"].as_str().unwrap())
        .collect();
    for path in ["email", "id"] {
        let written = first["user"][path].as_str().unwrap();
        assert!(
            by_k1.contains(written),
            "apply wrote {written} for user.{path}"
        );
    }

    // The appended token lines are a suppression file veil reads as it is.
    let tokens = std::fs::read_to_string(dir.join("optout.txt")).unwrap();
    assert!(
        tokens
            .lines()
            .all(|l| l.starts_with("k2:") && l.len() == 67),
        "{tokens}"
    );
    assert!(!tokens.to_lowercase().contains("alice"));
    let suppressed = apply(&["--suppress", &p(dir, "optout.txt")]);
    assert_eq!(
        suppressed.lines().count(),
        1,
        "only bob's event: {suppressed}"
    );
    assert!(!suppressed.contains(first["user"]["email"].as_str().unwrap()));
}

#[test]
fn the_worked_example_in_docs_erasure_md_runs_as_written() {
    let doc = std::fs::read_to_string("docs/erasure.md").unwrap();
    let section = doc
        .split("## Worked example")
        .nth(1)
        .expect("a worked example section");
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a sh block");
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_veil")).parent().unwrap();
    let repo = std::env::current_dir().unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("VEIL_REPO", &repo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("erasure verified"), "{stdout}");
}

#[test]
fn keys_list_shows_each_key_by_fingerprint_never_by_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let out = veil(
        &["keys", "list", "--dir", &p(dir, "keys"), "--key-id", "k2"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The fingerprint, independently: HMAC-SHA256(key, "veil/v1/fingerprint")[..8].
    let script = "import hmac,hashlib,sys\n\
                  for h in sys.argv[1:]:\n    \
                  print(hmac.new(bytes.fromhex(h), b'veil/v1/fingerprint', hashlib.sha256).hexdigest()[:16])";
    let py = run("python3", &["-c", script, K1, K2], None);
    assert!(py.status.success());
    let want: Vec<String> = String::from_utf8(py.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (row, (id, fp)) in rows.iter().zip([("k1", &want[0]), ("k2", &want[1])]) {
        assert_eq!((row[0], row[3]), (id, fp.as_str()), "{text}");
    }
    assert!(rows[0][4].starts_with("retired"), "{text}");
    assert!(rows[1][4].starts_with("active"), "{text}");
    assert_eq!(rows[1][2], "0", "made just now: 0 days old");
    for secret in [K1, K2] {
        assert!(!text.contains(&secret[..16]), "no key bytes: {text}");
    }
}
