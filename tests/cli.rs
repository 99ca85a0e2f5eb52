//! The `veil` command end to end, as a data engineer runs it.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

#[path = "support/keys.rs"]
mod test_keys;

use test_keys::{chmod, private_keys as keys};

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("run veil")
}

/// A child's stderr without the warning every run with the test key gives
/// (`tests/keys/k1.key` is the public test-vector key; the warning has its
/// own test below).
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .split_inclusive('\n')
        .filter(|line| !line.contains(PUBLIC_KEY_WARNING))
        .collect()
}

const PUBLIC_KEY_WARNING: &str = "is the PUBLIC key of veil's published test vectors";

#[test]
fn the_public_test_key_is_warned_about_once_even_under_quiet() {
    let apply = [
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        keys(),
        "--input",
        "examples/events.ndjson",
        "--output",
        "/dev/null",
    ];
    for quiet in [&[][..], &["--quiet"][..]] {
        let o = veil(&[&apply[..], quiet].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let all = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            all.matches(PUBLIC_KEY_WARNING).count(),
            1,
            "{quiet:?}: {all}"
        );
        assert!(
            all.starts_with("20") && all.contains(" WARN "),
            "{quiet:?}: {all}"
        );
    }
}

/// `veil apply` with the shipped policy and the test key, to be run as a child.
fn apply_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_veil"));
    c.args(["apply", "--policy", "config/policy.yaml", "--keys", keys()]);
    c
}

/// `veil apply` with the shipped policy and the test key, plus `extra` arguments.
fn apply(input: &str, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        keys(),
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
        summary.contains("web-analytics@5") && summary.contains("key k1"),
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
    let h = veil(&["hash", "--keys", keys(), "--purpose", "analytics", anon]);
    assert_eq!(
        String::from_utf8(h.stdout).unwrap().trim(),
        first["anonymousId"]
    );
    let h = veil(&[
        "hash",
        "--keys",
        keys(),
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
        // The dead-letter record of every mode (docs/pipeline.md, "Dead
        // letters"): reason, detail, policies and the line; no payload unless asked.
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["detail", "line", "policies", "reason"], "{r}");
        assert!(r["detail"].as_str().unwrap().contains("at byte"));
        assert_eq!(r["policies"], serde_json::json!(["web-analytics@5"]));
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
        keys(),
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
    // The key says when it was made (for veil_key_age_seconds), then the hex.
    let text = std::fs::read_to_string(keys.join("k7.key")).unwrap();
    let (first, hex) = text.split_once('\n').unwrap();
    let made = first.strip_prefix("# created: ").expect("a created line");
    let made =
        time::OffsetDateTime::parse(made, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(
        (time::OffsetDateTime::now_utc() - made)
            .whole_seconds()
            .abs()
            < 60,
        "{first}"
    );
    assert_eq!(hex.trim().len(), 64);
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
    assert_eq!(j["policy"]["id"], "web-analytics@5");
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
    assert!(stderr(&o).is_empty(), "--quiet prints nothing but warnings");
    let h = veil(&["hash", "--keys", keys(), "--purpose", "analytics", "u1"]);
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

/// The address a child veil serves its endpoint on, from its log (stderr,
/// read on a thread so that a missing line fails the test instead of
/// hanging it); then the log so far, the rest of it, and the reader thread.
fn endpoint_of(
    child: &mut std::process::Child,
) -> (
    String,
    String,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{BufRead, BufReader};
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut log = String::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no endpoint line; log:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if let Some(addr) = http::served_addr(&line) {
            return (addr, log, rx, reader);
        }
    }
}

#[test]
fn apply_serves_its_counters_over_http_while_running_and_summarises_the_same() {
    use std::io::Write;
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
    let (addr, log, rx, reader) = endpoint_of(&mut child);
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
    let text = http::scrape_after(
        &addr,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(100),
        |text| http::sum(text, "veil_events_total", &route) >= 1006.0,
    );
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

// Regression tests for issue 9 (items 3, 8, 9, 10, 11, 13).

/// An input file and a copy of its bytes, to prove it survived.
fn input_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("in.ndjson");
    let bytes: Vec<u8> = std::fs::read("examples/events.ndjson").unwrap()[..20_000].to_vec();
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
fn apply_refuses_an_output_that_is_its_input_however_named_and_leaves_it_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (input, bytes) = input_file(d);
    std::os::unix::fs::symlink(&input, d.join("link")).unwrap();
    std::fs::hard_link(&input, d.join("hard")).unwrap();
    // Run from the input's directory, so that paths are spelt as a user would.
    let cwd_relative = |input: &str, output: &str| {
        let root = std::env::current_dir().unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_veil"));
        c.current_dir(d).arg("apply");
        c.arg("--policy").arg(root.join("config/policy.yaml"));
        c.arg("--keys").arg(root.join(keys()));
        c.args(["--input", input, "--output", output]);
        c
    };
    let absolute = input.to_str().unwrap().to_owned();
    for output in [
        "in.ndjson",
        "./in.ndjson",
        &absolute,
        "link",
        "hard",
        "sub/../in.ndjson",
    ] {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let o = cwd_relative("in.ndjson", output).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{output}: {}", stderr(&o));
        assert_eq!(
            stderr(&o),
            format!(
                "veil: error: --output {output} and --input in.ndjson: they are one file, and the output would overwrite the input while it is read; give each output a file of its own\n"
            )
        );
        assert_eq!(std::fs::read(&input).unwrap(), bytes, "{output}");
    }
    // The same file behind the shell's redirections: `< in` with `--output in`,
    // and `>> in` with the default stdout.
    let o = cwd_relative("-", "in.ndjson")
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--input - (standard input)"),
        "{}",
        stderr(&o)
    );
    let appending = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    let o = cwd_relative("in.ndjson", "-")
        .stdout(appending)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--output - (standard output)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&input).unwrap(), bytes);
}

#[test]
fn apply_refuses_two_outputs_in_one_file_and_two_names_of_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = input_file(dir.path());
    let x = dir.path().join("x");
    let dotted = dir.path().join(".").join("x");
    let o = apply(
        input.to_str().unwrap(),
        &x,
        &["--dead-letter", dotted.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        format!(
            "veil: error: --dead-letter {} and --output {}: they are one file, and two outputs would interleave into a corrupt file; give each output a file of its own\n",
            dotted.display(),
            x.display()
        )
    );
    assert!(!x.exists(), "nothing created");
    let o = apply(
        input.to_str().unwrap(),
        Path::new("-"),
        &["--dead-letter", "/dev/stdout"],
    );
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        "veil: error: --dead-letter /dev/stdout and --output - (standard output): both write to standard output, where their lines would interleave; give each output a file of its own\n"
    );
    assert!(o.stdout.is_empty());
    // /dev/null may take both.
    let o = apply(
        input.to_str().unwrap(),
        Path::new("/dev/null"),
        &["--dead-letter", "/dev/null", "--quiet"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_failed_apply_leaves_the_previous_output_whole_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    std::fs::write(&out, "previous run\n").unwrap();
    // A directory opens, then fails to read: an I/O error mid-run.
    let input = dir.path().join("a-directory");
    std::fs::create_dir(&input).unwrap();
    let o = apply(input.to_str().unwrap(), &out, &[]);
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot read input"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous run\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    // A successful run replaces it, keeping its mode.
    chmod(&out, 0o640);
    let (input, _) = input_file(dir.path());
    let o = apply(input.to_str().unwrap(), &out, &["--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lines(&out).len() > 5);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn apply_into_a_directory_or_a_missing_directory_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = input_file(dir.path());
    let o = apply(input.to_str().unwrap(), dir.path(), &[]);
    assert_eq!(o.status.code(), Some(74));
    assert_eq!(
        stderr(&o),
        format!(
            "veil: error: cannot create output {}: it is a directory; give a file name\n",
            dir.path().display()
        )
    );
    let missing = dir.path().join("missing/out.ndjson");
    let o = apply(input.to_str().unwrap(), &missing, &[]);
    assert_eq!(o.status.code(), Some(74));
    assert_eq!(
        stderr(&o),
        format!(
            "veil: error: cannot create output {}: in directory {}: No such file or directory (os error 2)\n",
            missing.display(),
            dir.path().join("missing").display()
        )
    );
}

#[test]
fn dead_letters_to_dev_stdout_keep_what_stdout_already_holds() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{bad\n").unwrap();
    let log = dir.path().join("log");
    // `>` (not `>>`): veil must write at the shell's offset, not truncate.
    let script = format!(
        "echo first; {} apply --policy config/policy.yaml --keys {} --input {} --output /dev/null --dead-letter /dev/stdout --quiet; echo last",
        env!("CARGO_BIN_EXE_veil"),
        keys(),
        bad.display()
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "first\n{\"detail\":\"expected a key (a string) at byte 1\",\"line\":1,\"policies\":[\"web-analytics@5\"],\"reason\":\"invalid_json\"}\nlast\n"
    );
}

#[test]
fn every_command_exits_141_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("files.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  file: {}\nroutes:\n  - name: a\n    policy: {}\n    file: \"-\"\ndead_letter:\n  file: {}\nkeys:\n  dir: {}\n",
            std::fs::canonicalize("examples/events.ndjson").unwrap().display(),
            std::fs::canonicalize("config/policy.yaml").unwrap().display(),
            dir.path().join("dl").display(),
            std::fs::canonicalize(keys()).unwrap().display(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let commands: [&[&str]; 8] = [
        &["hash", "--keys", keys(), "--purpose", "a", "v1", "v2"],
        &["schema"],
        &["explain", "--policy", "config/policy.yaml"],
        &[
            "explain",
            "--policy",
            "config/policy.yaml",
            "--format",
            "json",
        ],
        &["check", "--policy", "config/policy.yaml"],
        &["check", "--config", config],
        &[
            "apply",
            "--policy",
            "config/policy.yaml",
            "--keys",
            keys(),
            "--input",
            "examples/events.ndjson",
        ],
        &["run", "--config", config],
    ];
    for args in commands {
        // A pipe whose reading end is already closed: every write fails
        // with EPIPE, deterministically.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(141), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("panicked") && !stderr(&o).contains("error"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_line_of_exactly_the_limit_followed_by_crlf_is_not_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let event = r#"{"type":"track","context":{"consent":{"purposes":["analytics"]}}}"#;
    let longer = event.replacen(':', ": ", 1);
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, format!("{event}\r\n{longer}\r\n")).unwrap();
    let out = dir.path().join("out.ndjson");
    let dl = dir.path().join("dl.ndjson");
    let limit = event.len().to_string();
    let o = apply(
        input.to_str().unwrap(),
        &out,
        &[
            "--dead-letter",
            dl.to_str().unwrap(),
            "--max-message-bytes",
            &limit,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"type\":\"track\"}\n"
    );
    let dead = lines(&dl);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0]["line"].as_u64(), dead[0]["reason"].as_str()),
        (Some(2), Some("too_large"))
    );
}

#[test]
fn key_directories_anyone_can_write_are_refused_and_readable_keys_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let o = veil(&["keygen", "--dir", keys.to_str().unwrap(), "--id", "k1"]);
    assert!(o.status.success());
    let key = keys.join("k1.key");
    let hash = || {
        veil(&[
            "hash",
            "--keys",
            keys.to_str().unwrap(),
            "--purpose",
            "a",
            "v",
        ])
    };
    chmod(&keys, 0o777);
    let o = hash();
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        format!(
            "veil: error: key directory {} is writable by every user (mode 0777): anyone could add or replace keys; run `chmod o-w {}` (or `chmod 700`)\n",
            keys.display(),
            keys.display()
        )
    );
    assert!(o.stdout.is_empty());
    chmod(&keys, 0o755);
    chmod(&key, 0o666);
    let o = hash();
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains(&format!(
            "key file {} is writable by every user (mode 0666)",
            key.display()
        )),
        "{}",
        stderr(&o)
    );
    // What a clone with umask 022 gives: works, with the fix spelt out.
    chmod(&key, 0o644);
    let o = hash();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("key file {} is open to other users (mode 0644); make it private: `chmod 600 {}` (Kubernetes: mount the Secret with `defaultMode: 0400`)", key.display(), key.display())),
        "{e}"
    );
    chmod(&key, 0o600);
    assert!(hash().stderr.is_empty());
}

#[test]
fn a_missing_key_directory_is_reported_once() {
    let o = veil(&["hash", "--keys", "/nonexistent/keys", "--purpose", "a", "v"]);
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        "veil: error: cannot read key directory /nonexistent/keys: No such file or directory (os error 2)\n"
    );
}

#[test]
fn hash_refuses_an_empty_purpose() {
    for purpose in ["", "a b"] {
        let o = veil(&["hash", "--keys", keys(), "--purpose", purpose, "v"]);
        assert_eq!(o.status.code(), Some(64), "{purpose:?}");
        assert_eq!(
            stderr(&o),
            format!(
                "veil: error: --purpose must be letters, digits, `.`, `_` or `-`, as a policy's `purpose`; got `{purpose}`\n"
            )
        );
        assert!(o.stdout.is_empty());
    }
}

/// A private copy (mode 0600) of the public demo key in a key directory of
/// its own; keep the TempDir alive while the directory is used.
fn demo_key_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy("examples/keys/demo.key", keys.join("demo.key")).unwrap();
    chmod(&keys.join("demo.key"), 0o600);
    (dir, keys)
}

#[test]
fn apply_with_the_public_demo_key_warns_loudly_without_printing_it() {
    let (_dir, keys) = demo_key_dir();
    let o = veil(&[
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        keys.to_str().unwrap(),
        "--input",
        "examples/bad-events.ndjson",
        "--output",
        "/dev/null",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("key `demo` ({}) is veil's PUBLIC demo key: anyone can recompute its pseudonyms and re-identify people; make your own with `veil keygen --dir DIR --id k1`", keys.join("demo.key").display())),
        "{e}"
    );
    let secret = std::fs::read_to_string("examples/keys/demo.key").unwrap();
    assert!(!e.contains(&secret.trim()[..16]));
}

#[test]
fn apply_metrics_say_ready_and_name_the_live_policy_and_key() {
    use std::process::Stdio;
    let mut child = apply_command()
        .args(["--output", "/dev/null", "--metrics-listen", "127.0.0.1:0"])
        .env("VEIL_LOG", "info")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, log, _rx, reader) = endpoint_of(&mut child);
    let (status, text) = http::get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(http::get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(http::sum(&text, "veil_ready", &[]), 1.0, "{text}");
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let version = policy.version.to_string();
    let info = [
        ("route", "web-analytics"),
        ("policy", "web-analytics"),
        ("version", version.as_str()),
        ("sha256", policy.sha256.as_str()),
    ];
    assert_eq!(http::sum(&text, "veil_policy_info", &info), 1.0, "{text}");
    assert_eq!(
        http::sum(&text, "veil_key_info", &[("key_id", "k1")]),
        1.0,
        "{text}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "{log}");
    reader.join().unwrap();
}

#[test]
fn apply_refuses_to_write_over_its_policy_or_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy = d.join("policy.yaml");
    std::fs::copy("config/policy.yaml", &policy).unwrap();
    let keys = d.join("keys");
    veil(&["keygen", "--dir", keys.to_str().unwrap(), "--id", "k1"]);
    let key = keys.join("k1.key");
    let before = (
        std::fs::read(&policy).unwrap(),
        std::fs::read(&key).unwrap(),
    );
    for (output, what) in [(&policy, "--policy"), (&key, "key file")] {
        let o = veil(&[
            "apply",
            "--policy",
            policy.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
            "--input",
            "examples/events.ndjson",
            "--dead-letter",
            output.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(64));
        assert_eq!(
            stderr(&o),
            format!(
                "veil: error: --dead-letter {} and {what} {}: they are one file, and the output would overwrite the input while it is read; give each output a file of its own\n",
                output.display(),
                output.display()
            )
        );
    }
    assert_eq!(
        (
            std::fs::read(&policy).unwrap(),
            std::fs::read(&key).unwrap()
        ),
        before
    );
}

// Regression tests for issue 10.

#[test]
fn apply_writes_the_same_dead_letter_records_as_a_file_run() {
    // `apply` used to write `"policy": "name@version"` where `run` (files
    // and Kafka) writes `"policies": [...]`: one shape now, as documented.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.ndjson");
    let mut bytes = std::fs::read("examples/bad-events.ndjson").unwrap();
    bytes.extend_from_slice(format!("{{\"type\":\"{}\"}}\n", "x".repeat(2000)).as_bytes());
    std::fs::write(&input, &bytes).unwrap();
    let root = std::env::current_dir().unwrap();
    let config = d.join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  file: in.ndjson\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    file: run-clean.ndjson\n\
             dead_letter:\n  file: run-dead.ndjson\n  include_payload: true\nkeys:\n  dir: \"{}\"\n\
             limits:\n  max_message_bytes: 1000\n",
            root.join("config/policy.yaml").display(),
            root.join(keys()).display()
        ),
    )
    .unwrap();
    let o = veil(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dl = d.join("apply-dead.ndjson");
    let o = apply(
        input.to_str().unwrap(),
        &d.join("apply-clean.ndjson"),
        &[
            "--dead-letter",
            dl.to_str().unwrap(),
            "--dead-letter-payload",
            "--max-message-bytes",
            "1000",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let applied = std::fs::read_to_string(&dl).unwrap();
    assert_eq!(
        applied,
        std::fs::read_to_string(d.join("run-dead.ndjson")).unwrap()
    );
    let records = lines(&dl);
    assert_eq!(records.len(), 7);
    let mut first = records[0].clone();
    let detail = first.as_object_mut().unwrap().remove("detail").unwrap();
    assert!(detail.as_str().unwrap().contains(" at byte "), "{detail}");
    assert_eq!(
        first,
        serde_json::json!({
            "reason": "invalid_json",
            "policies": ["web-analytics@5"],
            "line": 1,
            "payload": r#"{"type":"track","userId":"u1""#,
        })
    );
    // A line too long to hold is recorded without a payload, never an empty one.
    assert_eq!(
        records[6],
        serde_json::json!({
            "reason": "too_large",
            "detail": "message larger than the limit at byte 1000",
            "policies": ["web-analytics@5"],
            "line": 7,
        })
    );
}

#[test]
fn a_file_run_summary_breaks_drops_and_dead_letters_down_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut bytes = std::fs::read("examples/events.ndjson").unwrap();
    bytes.extend(std::fs::read("examples/bad-events.ndjson").unwrap());
    std::fs::write(d.join("in.ndjson"), bytes).unwrap();
    let root = std::env::current_dir().unwrap();
    let config = d.join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  file: in.ndjson\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    file: clean.ndjson\n\
             dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: \"{}\"\n",
            root.join("config/policy.yaml").display(),
            root.join(keys()).display()
        ),
    )
    .unwrap();
    let o = veil(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The same numbers as `apply`'s summary of the same events (above).
    assert_eq!(
        stderr(&o),
        "veil run: 1006 events read, 6 dead-lettered  (invalid_json 2, invalid_utf8 1, not_object 1, too_deep 1, duplicate_key 1)\n  \
         route analytics    policy web-analytics@5          forwarded      698  dropped      302  (no_consent 211, opted_out 91)\n"
    );
}

#[test]
fn demo_runs_outside_the_repository_with_the_examples_built_in() {
    // It used to fail with "cannot read examples/events.ndjson" anywhere
    // but the repository's root; its summary did not break drops down.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("demo")
        .current_dir(elsewhere.path())
        .env("VEIL_LOG", "warn,librdkafka=off,rdkafka=off")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    // The counts of the example events as `apply` summarises them (above),
    // dead letters by reason code in alphabetical order.
    assert!(
        stdout.ends_with(
            "\ncounts:\n  read              1006\n  forwarded          698  -> demo.events.clean\n  \
             dropped            302  (no_consent 211, opted_out 91)\n  \
             dead-lettered        6  -> demo.events.dead-letter\n    duplicate_key      1\n    \
             invalid_json       2\n    invalid_utf8       1\n    not_object         1\n    \
             too_deep           1\n"
        ),
        "{stdout}"
    );
    // `--events` still reads files, and says which one it cannot read.
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["demo", "--events", "missing.ndjson"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).starts_with("veil: error: cannot read events missing.ndjson: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn log_format_is_offered_only_by_the_commands_that_log() {
    for command in ["run", "demo", "apply"] {
        let o = veil(&[command, "--help"]);
        let help = String::from_utf8(o.stdout).unwrap();
        assert!(
            help.contains("--log-format <LOG_FORMAT>"),
            "{command}:\n{help}"
        );
    }
    for command in ["keygen", "schema", "explain", "hash", "check"] {
        let o = veil(&[command, "--help"]);
        assert!(o.status.success(), "{command}");
        let help = String::from_utf8(o.stdout).unwrap();
        assert!(!help.contains("log-format"), "{command}:\n{help}");
    }
    let top = String::from_utf8(veil(&["--help"]).stdout).unwrap();
    assert!(!top.contains("log-format"), "{top}");
    // Where it means nothing it is refused, and the environment variable
    // (set for a whole container, say) is ignored.
    let o = veil(&["schema", "--log-format", "json"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).starts_with("error: unexpected argument '--log-format' found"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("schema")
        .env("VEIL_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Where it does something, it does it: apply's warnings as JSON.
    let (_dir, keys) = demo_key_dir();
    let o = veil(&[
        "apply",
        "--policy",
        "config/policy.yaml",
        "--keys",
        keys.to_str().unwrap(),
        "--input",
        "examples/bad-events.ndjson",
        "--output",
        "/dev/null",
        "--quiet",
        "--log-format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warning: Value = serde_json::from_str(stderr(&o).lines().next().unwrap()).unwrap();
    assert_eq!(warning["level"], "WARN", "{warning}");
}

#[test]
fn a_key_dated_in_the_future_is_refused_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k1.key");
    std::fs::write(
        &key,
        "# created: 2999-01-01T00:00:00Z\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .unwrap();
    let o = veil(&["keys", "list", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "key file {}: its `# created:` line is in the future",
            key.display()
        )),
        "{e}"
    );
    assert!(!e.contains("000102030405"), "no key bytes: {e}");
}

/// The content scan (issue 13): detections per route, kind and action on
/// `/metrics`, a `drop_event` hit counted as `dropped_scan`, the summary
/// naming kinds, and no matched value anywhere but nowhere.
#[test]
fn apply_counts_scan_detections_over_http_and_in_its_summary() {
    use std::io::Write;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("scan.yaml");
    std::fs::write(
        &policy,
        "name: scan\nversion: 1\npurpose: analytics\nfields:\n  title: keep\n  note: { keep: { scan: drop_event } }\n  ua: { keep: { scan: count } }\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["apply", "--policy"])
        .arg(&policy)
        .args(["--keys", keys(), "--input", "-", "--output", "-"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("VEIL_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, log, rx, reader) = endpoint_of(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            concat!(
                r#"{"title":"Hi ana@example.com, card 4111 1111 1111 1111"}"#,
                "\n",
                r#"{"title":"ok","note":"IBAN GB82WEST12345698765432"}"#,
                "\n",
                r#"{"title":"plain","ua":"from 203.0.113.9"}"#,
                "\n",
            )
            .as_bytes(),
        )
        .unwrap();
    stdin.flush().unwrap();
    let route = [("route", "scan")];
    let text = http::scrape_after(
        &addr,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(100),
        |text| http::sum(text, "veil_events_total", &route) >= 3.0,
    );
    let found = |kind: &str, action: &str| {
        http::sum(
            &text,
            "veil_scan_detections_total",
            &[("route", "scan"), ("kind", kind), ("action", action)],
        )
    };
    assert_eq!(found("email", "redact"), 1.0);
    assert_eq!(found("card", "redact"), 1.0);
    assert_eq!(found("iban", "drop_event"), 1.0);
    assert_eq!(found("ip", "count"), 1.0);
    assert_eq!(http::sum(&text, "veil_scan_detections_total", &route), 4.0);
    assert_eq!(
        http::sum(
            &text,
            "veil_events_total",
            &[("route", "scan"), ("outcome", "dropped_scan")]
        ),
        1.0
    );
    drop(stdin);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    reader.join().unwrap();
    let rest: String = rx.try_iter().map(|l| l + "\n").collect();
    assert_eq!(
        stdout,
        concat!(
            r#"{"title":"Hi [redacted:email], card [redacted:card]"}"#,
            "\n",
            r#"{"title":"plain","ua":"from 203.0.113.9"}"#,
            "\n",
        )
    );
    assert!(rest.contains("dropped             1  (scan 1)"), "{rest}");
    assert!(
        rest.contains(
            "scan found  email 1 (redact), card 1 (redact), iban 1 (drop_event), ip 1 (count)"
        ),
        "{rest}"
    );
    for secret in ["ana@example.com", "4111", "GB82", "203.0.113.9"] {
        assert!(
            !rest.contains(secret) && !log.contains(secret),
            "{secret} in the log"
        );
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}
