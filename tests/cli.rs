//! The `veil` command end to end, as a data engineer runs it.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("run veil")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `veil apply` with the shipped policy and the test key, to be run as a child.
fn apply_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_veil"));
    c.args([
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        "tests/keys",
    ]);
    c
}

/// `veil apply` with the shipped policy and the test key, plus `extra` arguments.
fn apply(input: &str, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        "tests/keys",
        "--input",
        input,
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    veil(&args)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect()
}

fn get<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

#[test]
fn apply_on_the_example_forwards_only_consented_events_without_raw_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let o = apply("examples/events.ndjson", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input = lines(Path::new("examples/events.ndjson"));
    let output = lines(&out);

    // Exactly the consented, not-opted-out events, in input order.
    let consented: Vec<&Value> = input
        .iter()
        .filter(|e| {
            let c = &e["context"]["consent"];
            c["gpc"] != Value::Bool(true)
                && c["purposes"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from("analytics"))
        })
        .collect();
    assert_eq!(output.len(), consented.len());
    let ids: Vec<&Value> = output.iter().map(|e| &e["messageId"]).collect();
    let expected_ids: Vec<&Value> = consented.iter().map(|e| &e["messageId"]).collect();
    assert_eq!(ids, expected_ids);

    // No raw identifier or direct identifier anywhere in the output bytes.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut secrets = HashSet::new();
    for e in &input {
        for p in [
            "userId",
            "anonymousId",
            "context.device.id",
            "context.device.advertisingId",
            "context.traits.email",
            "context.traits.phone",
            "context.traits.name",
            "context.ip",
            "context.traits.birthday",
            "context.location.latitude",
        ] {
            if let Some(v) = get(e, p).filter(|v| !v.is_null()) {
                secrets.insert(v.to_string().trim_matches('"').to_owned());
            }
        }
    }
    assert!(secrets.len() > 3000);
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "raw identifier {s} leaked");
    }
    // E-mail addresses never survive, not even inside URLs.
    assert!(!text.contains("@example.com") && !text.contains("%40example.com"));

    // The summary is on stderr and adds up.
    let summary = stderr(&o);
    let forwarded_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("forwarded"))
        .unwrap();
    assert!(
        forwarded_line.ends_with(&format!(" {}", output.len())),
        "{summary}"
    );
    assert!(
        summary.contains("web-analytics@4") && summary.contains("key k1"),
        "{summary}"
    );
}

#[test]
fn hash_prints_the_pseudonyms_apply_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let o = apply("examples/events.ndjson", &out, &["--quiet"]);
    assert!(o.status.success());
    let input = lines(Path::new("examples/events.ndjson"));
    let first = &lines(&out)[0];
    let raw = input
        .iter()
        .find(|e| e["messageId"] == first["messageId"])
        .unwrap();
    let email = raw["context"]["traits"]["email"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let anon = raw["anonymousId"].as_str().unwrap();
    let h = veil(&[
        "hash",
        "--keys",
        "tests/keys",
        "--purpose",
        "analytics",
        anon,
    ]);
    assert_eq!(
        String::from_utf8(h.stdout).unwrap().trim(),
        first["anonymousId"]
    );
    let h = veil(&[
        "hash",
        "--keys",
        "tests/keys",
        "--policy",
        "config/policy.yaml",
        "--normalise",
        "trim,lowercase",
        &format!(" {email} "),
    ]);
    assert_eq!(
        String::from_utf8(h.stdout).unwrap().trim(),
        first["context"]["traits"]["email"]
    );
}

#[test]
fn bad_lines_go_to_the_dead_letter_file_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let dl = dir.path().join("dl.ndjson");
    let o = apply(
        "examples/bad-events.ndjson",
        &out,
        &["--dead-letter", dl.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    let records = lines(&dl);
    let reasons: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "invalid_json"),
            (2, "invalid_json"),
            (3, "not_object"),
            (4, "duplicate_key"),
            (5, "too_deep"),
            (6, "invalid_utf8"),
        ]
    );
    for r in &records {
        assert!(r.get("payload").is_none() && r.get("payload_base64").is_none());
        assert!(r["detail"].as_str().unwrap().contains("at byte"));
        assert_eq!(r["policy"], "web-analytics@4");
    }
    // The raw line only on request.
    let o = apply(
        "examples/bad-events.ndjson",
        &out,
        &[
            "--dead-letter",
            dl.to_str().unwrap(),
            "--dead-letter-payload",
        ],
    );
    assert!(o.status.success());
    let records = lines(&dl);
    assert_eq!(records[0]["payload"], r#"{"type":"track","userId":"u1""#);
    assert!(records[5]["payload_base64"].is_string());
}

#[test]
fn oversize_lines_are_rejected_without_being_buffered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let big = format!(
        "{{\"type\":\"{}\"}}\n{{\"type\":\"ok\"}}\n",
        "x".repeat(5000)
    );
    std::fs::write(&input, big).unwrap();
    let dl = dir.path().join("dl.ndjson");
    let o = apply(
        input.to_str().unwrap(),
        Path::new("-"),
        &[
            "--dead-letter",
            dl.to_str().unwrap(),
            "--max-message-bytes",
            "1000",
        ],
    );
    assert!(o.status.success());
    assert_eq!(lines(&dl)[0]["reason"], "too_large");
    assert_eq!(lines(&dl)[0]["line"], 1);
    // Line 2 has no consent: dropped, not rejected.
    assert!(stderr(&o).contains("no_consent 1"), "{}", stderr(&o));
}

#[test]
fn invalid_policy_exits_64_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "name: x\nversion: 1\npurpose: a\nfields:\n  a: hash\n").unwrap();
    let o = veil(&["check", "--policy", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{}:5:6: unknown action `hash`", p.display())),
        "{e}"
    );
    let o = veil(&["check", "--policy", "config/policy.yaml"]);
    assert!(o.status.success());
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(
        s.contains("5 pseudonymised") && s.contains("consent:"),
        "{s}"
    );
}

#[test]
fn unusable_keys_exit_64_without_printing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path().join("short.key"), secret).unwrap();
    let o = veil(&[
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        dir.path().to_str().unwrap(),
        "--input",
        "examples/events.ndjson",
    ]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    assert!(e.contains("16 bytes") && e.contains("veil keygen"), "{e}");
    assert!(!e.contains(secret));
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_arguments_exit_64_and_missing_input_66() {
    assert_eq!(veil(&["apply", "--policy"]).status.code(), Some(64));
    let o = veil(&[
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        "tests/keys",
        "--input",
        "/nonexistent",
    ]);
    assert_eq!(o.status.code(), Some(66));
    assert!(veil(&["--help"]).status.success());
}

#[test]
fn keygen_writes_a_usable_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let o = veil(&["keygen", "--dir", keys.to_str().unwrap(), "--id", "k7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = veil(&[
        "hash",
        "--keys",
        keys.to_str().unwrap(),
        "--purpose",
        "x",
        "v",
    ]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim().len(), 64);
    assert_eq!(
        veil(&["keygen", "--dir", keys.to_str().unwrap(), "--id", "k7"])
            .status
            .code(),
        Some(64)
    );
}

#[test]
fn explain_lists_every_field_and_the_consent_rule() {
    let o = veil(&["explain", "--policy", "config/policy.yaml"]);
    assert!(o.status.success());
    let md = String::from_utf8(o.stdout).unwrap();
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    for e in &policy.fields.as_ref().unwrap().entries {
        assert!(
            md.contains(&format!("| `{}` |", e.path)),
            "{} missing",
            e.path
        );
    }
    assert!(md.contains("context.consent.purposes") && md.contains("anything else"));
    // The policy's own comments are the "why".
    assert!(
        md.contains("| Who: pseudonyms only, so analysts can count and join without identities. |")
    );
    let o = veil(&[
        "explain",
        "--policy",
        "config/policy.yaml",
        "--format",
        "json",
    ]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["policy"]["id"], "web-analytics@4");
    assert_eq!(
        j["fields"].as_array().unwrap().len(),
        policy.fields.unwrap().entries.len()
    );
}

#[test]
fn schema_file_is_current() {
    let generated = veil::schema::policy_schema_json();
    if std::env::var_os("VEIL_BLESS").is_some() {
        std::fs::write("docs/policy.schema.json", &generated).unwrap();
    }
    let committed = std::fs::read_to_string("docs/policy.schema.json").unwrap_or_default();
    assert!(
        committed == generated,
        "docs/policy.schema.json is stale: run `VEIL_BLESS=1 cargo test --test cli schema`"
    );
    let o = veil(&["schema"]);
    assert_eq!(String::from_utf8(o.stdout).unwrap(), generated);
}

#[test]
fn apply_reads_stdin_and_writes_stdout_by_default() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = apply_command()
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = concat!(
        r#"{"type":"track","userId":"u1","context":{"consent":{"purposes":["analytics"]}}}"#,
        "\r\n",
        r#"{"type":"track","userId":"u2"}"#,
        "\n",
        r#"{"type":"page","context":{"consent":{"purposes":["analytics"]}}}"#,
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(o.stderr.is_empty(), "--quiet prints nothing");
    let h = veil(&[
        "hash",
        "--keys",
        "tests/keys",
        "--purpose",
        "analytics",
        "u1",
    ]);
    let u1 = String::from_utf8(h.stdout).unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!(
            "{{\"type\":\"track\",\"userId\":\"{}\"}}\n{{\"type\":\"page\"}}\n",
            u1.trim()
        )
    );
}

#[path = "support/http.rs"]
mod http;

#[test]
fn apply_serves_its_counters_over_http_while_running_and_summarises_the_same() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clean.ndjson");
    let mut child = apply_command()
        .args(["--input", "-", "--output"])
        .arg(&out)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("VEIL_LOG", "info")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The endpoint's address is in the first log lines (read on a thread,
    // so a missing line fails the test instead of hanging it).
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut log = String::new();
    let addr = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no endpoint line; log:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if let Some(a) = http::served_addr(&line) {
            break a;
        }
    };
    // Feed the example and the bad events, but keep stdin open: veil is
    // still running while it is scraped.
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&std::fs::read("examples/events.ndjson").unwrap())
        .unwrap();
    stdin
        .write_all(&std::fs::read("examples/bad-events.ndjson").unwrap())
        .unwrap();
    stdin.flush().unwrap();
    let route = [("route", "web-analytics")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let (status, text) = http::get(&addr, "/metrics");
        assert_eq!(status, 200);
        if http::sum(&text, "veil_events_total", &route) >= 1006.0 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let outcome = |o: &str| {
        http::sum(
            &text,
            "veil_events_total",
            &[("route", "web-analytics"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("forwarded"), 698.0);
    assert_eq!(outcome("dropped_no_consent"), 211.0);
    assert_eq!(outcome("dropped_opted_out"), 91.0);
    assert_eq!(outcome("dead_lettered"), 6.0);
    for (reason, n) in [
        ("invalid_json", 2.0),
        ("invalid_utf8", 1.0),
        ("not_object", 1.0),
        ("too_deep", 1.0),
        ("duplicate_key", 1.0),
    ] {
        assert_eq!(
            http::sum(&text, "veil_dead_letters_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    assert_eq!(
        http::sum(
            &text,
            "veil_fields_total",
            &[("route", "web-analytics"), ("action", "pseudonymised")]
        ),
        2569.0
    );
    assert_eq!(http::get(&addr, "/readyz"), (200, "ready\n".to_owned()));

    drop(stdin); // end of input: veil finishes and prints its summary
    assert!(child.wait().unwrap().success(), "{log}");
    reader.join().unwrap();
    let rest: String = rx.try_iter().map(|l| l + "\n").collect();
    assert!(rest.contains("read             1006 events"), "{rest}");
    assert!(rest.contains("forwarded         698"), "{rest}");
    assert!(
        rest.contains("dropped           302  (no_consent 211, opted_out 91)"),
        "{rest}"
    );
    assert!(
        rest.contains("rejected            6  (invalid_json 2, invalid_utf8 1, not_object 1, too_deep 1, duplicate_key 1)"),
        "{rest}"
    );
    assert_eq!(lines(&out).len(), 698);
}
