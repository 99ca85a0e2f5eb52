//! `veil check --config` and `veil run --config` without a broker: file
//! mode end to end, and the start-up errors that must exit 64.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("run veil")
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, body).unwrap();
    path
}

fn kafka_config(librdkafka: &str, keys: &Path) -> String {
    format!(
        "source:\n  kafka:\n    bootstrap_servers: 127.0.0.1:1\n    topics: [raw]\n    group_id: g\n    librdkafka: {{ {librdkafka} }}\n\
         routes:\n  - name: analytics\n    policy: \"{}\"\n    topic: clean\n\
         dead_letter:\n  topic: dead\nkeys:\n  dir: \"{}\"\n",
        root().join("config/policy.yaml").display(),
        keys.display()
    )
}

#[test]
fn file_mode_writes_each_route_and_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        &format!(
            "source:\n  file: \"{}\"\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    file: clean.ndjson\n\
             dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: \"{}\"\n",
            root().join("examples/bad-events.ndjson").display(),
            root().join("config/policy.yaml").display(),
            root().join("tests/keys").display()
        ),
    );
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = std::fs::read_to_string(d.join("dead.ndjson")).unwrap();
    let bad = std::fs::read(root().join("examples/bad-events.ndjson")).unwrap();
    let bad_lines = bad
        .strip_suffix(b"\n")
        .unwrap_or(&bad)
        .split(|b| *b == b'\n')
        .count();
    assert_eq!(
        dead.lines().count(),
        bad_lines,
        "every bad line is dead-lettered"
    );
    for line in dead.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["reason"].is_string() && v["line"].is_u64(), "{line}");
        assert!(v.get("payload").is_none());
    }
    assert_eq!(std::fs::read_to_string(d.join("clean.ndjson")).unwrap(), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dead-lettered"), "{stderr}");
}

#[test]
fn check_config_accepts_the_shipped_pipelines() {
    for c in ["config/pipeline.yaml", "config/pipeline-files.yaml"] {
        let out = veil(&["check", "--config", root().join(c).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK "));
    }
}

#[test]
fn an_unknown_librdkafka_property_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &kafka_config("no.such.property: 1", &root().join("tests/keys")),
    );
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no.such.property"), "{stderr}");
}

#[test]
fn run_with_a_missing_key_directory_exits_64_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kafka_config("", &dir.path().join("nokeys")));
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nokeys"), "{stderr}");
}

#[test]
fn a_reserved_librdkafka_property_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &kafka_config("enable.auto.commit: false", &root().join("tests/keys")),
    );
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline.yaml:6:"), "{stderr}");
    assert!(stderr.contains("enable.auto.commit"), "{stderr}");
}

// Regression tests for issue 9 (items 3 and 13).

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file-mode config in `dir` reading `in.ndjson` (a copy of the example
/// events, returned as bytes) with these route files and dead-letter file.
fn files_config(dir: &Path, routes: &[&str], dead_letter: &str) -> (PathBuf, Vec<u8>) {
    let bytes = std::fs::read(root().join("examples/events.ndjson")).unwrap();
    std::fs::write(dir.join("in.ndjson"), &bytes).unwrap();
    let mut yaml = "source:\n  file: in.ndjson\nroutes:\n".to_owned();
    for (i, file) in routes.iter().enumerate() {
        yaml += &format!(
            "  - name: r{i}\n    policy: \"{}\"\n    file: \"{file}\"\n",
            root().join("config/policy.yaml").display()
        );
    }
    yaml += &format!(
        "dead_letter:\n  file: \"{dead_letter}\"\nkeys:\n  dir: \"{}\"\n",
        root().join("tests/keys").display()
    );
    (write_config(dir, &yaml), bytes)
}

#[test]
fn a_route_file_that_is_the_source_file_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (config, bytes) = files_config(d, &["./in.ndjson"], "dead.ndjson");
    let want = format!(
        "veil: error: {}:6:11: route `r0` file `./in.ndjson` and source.file `in.ndjson`: they are one file, and the output would overwrite the input while it is read\n  hint: give each route and the dead letters a file of their own, apart from source.file\n1 error in config\n",
        config.display()
    );
    for command in ["check", "run"] {
        let out = veil(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{command}");
        assert_eq!(stderr(&out), want, "{command}");
        assert_eq!(std::fs::read(d.join("in.ndjson")).unwrap(), bytes);
    }
    // Nor may a route write over its policy or a key.
    let keys = d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(root().join("tests/keys/k1.key"), keys.join("k1.key")).unwrap();
    let yaml = "source:\n  file: in.ndjson\nroutes:\n  - name: a\n    policy: policy.yaml\n    file: policy.yaml\n\
         dead_letter:\n  file: keys/k1.key\nkeys:\n  dir: keys\n";
    std::fs::copy(root().join("config/policy.yaml"), d.join("policy.yaml")).unwrap();
    let config = write_config(d, yaml);
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let e = stderr(&out);
    assert!(
        e.contains(":6:11: route `a` file `policy.yaml` and route `a` policy `policy.yaml`: they are one file"),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            ":8:9: dead_letter.file `keys/k1.key` and key file `{}`: they are one file",
            keys.join("k1.key").display()
        )),
        "{e}"
    );
    // A hard link to the input is the input too.
    std::fs::hard_link(d.join("in.ndjson"), d.join("hard")).unwrap();
    let (config, _) = files_config(d, &["hard"], "dead.ndjson");
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(std::fs::read(d.join("in.ndjson")).unwrap(), bytes);
}

#[test]
fn two_routes_writing_one_file_under_different_spellings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let absolute = d.join("out.ndjson");
    let (config, _) = files_config(
        d,
        &["out.ndjson", "./out.ndjson"],
        absolute.to_str().unwrap(),
    );
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let file = config.display();
    assert_eq!(
        stderr(&out),
        format!(
            "veil: error: {file}:9:11: route `r1` file `./out.ndjson` and route `r0` file `out.ndjson`: they are one file, and two outputs would interleave into a corrupt file\n  hint: give each route and the dead letters a file of their own, apart from source.file\n\
             {file}:11:9: dead_letter.file `{}` and route `r0` file `out.ndjson`: they are one file, and two outputs would interleave into a corrupt file\n  hint: give each route and the dead letters a file of their own, apart from source.file\n\
             2 errors in config\n",
            absolute.display()
        )
    );
    assert!(!absolute.exists());
}

#[test]
fn a_failed_file_run_leaves_the_previous_outputs_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (config, _) = files_config(d, &["clean.ndjson"], "dead.ndjson");
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let clean = std::fs::read(d.join("clean.ndjson")).unwrap();
    assert!(clean.len() > 1000);
    // The input becomes unreadable mid-run (a directory opens, then fails).
    std::fs::remove_file(d.join("in.ndjson")).unwrap();
    std::fs::create_dir(d.join("in.ndjson")).unwrap();
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("clean.ndjson")).unwrap(), clean);
    let mut names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["clean.ndjson", "dead.ndjson", "in.ndjson", "pipeline.yaml"]
    );
}

#[test]
fn run_refuses_the_public_demo_key_against_a_broker_unless_allowed() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kafka_config("", &root().join("examples/keys")));
    let config = config.to_str().unwrap();
    let out = veil(&["run", "--config", config]);
    assert_eq!(out.status.code(), Some(64));
    let e = stderr(&out);
    assert!(e.contains("is veil's PUBLIC demo key"), "{e}");
    assert!(
        e.ends_with("veil: error: veil run refuses the public demo key against a Kafka broker: its pseudonyms protect nobody; make a key with `veil keygen` (or pass --allow-demo-key for a demo or a test)\n"),
        "{e}"
    );
    // `check` says the same, as a warning.
    let out = veil(&["check", "--config", config]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("veil run refuses the public demo key"),
        "{}",
        stderr(&out)
    );
    // Allowed explicitly, it starts (and would consume).
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["run", "--config", config, "--allow-demo-key"])
        .env("VEIL_LOG", "info,librdkafka=off,rdkafka=off")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("veil is consuming"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(started);
}

// Regression tests for issue 10.

#[test]
fn a_config_mixing_kafka_and_files_is_refused_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let keys = root().join("tests/keys");
    let policy = root().join("config/policy.yaml");
    let config = write_config(
        dir.path(),
        &format!(
            "source:\n  kafka:\n    bootstrap_servers: 127.0.0.1:1\n    topics: [raw]\n    group_id: g\n\
             routes:\n  - name: analytics\n    policy: \"{}\"\n    file: clean.ndjson\n\
             dead_letter:\n  file: dead.ndjson\nkeys:\n  dir: \"{}\"\n",
            policy.display(),
            keys.display()
        ),
    );
    let file = config.display();
    for command in ["check", "run"] {
        let out = veil(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{command}");
        assert_eq!(
            stderr(&out),
            format!(
                "veil: error: {file}:9:11: route `analytics` writes to a file but the source is Kafka\n  hint: with a Kafka source, write to `topic:`\n\
                 {file}:11:9: dead_letter writes to a file but the source is Kafka\n  hint: with a Kafka source, write to `topic:`\n\
                 2 errors in config\n"
            ),
            "{command}"
        );
    }
    // And the other way round.
    let config = write_config(
        dir.path(),
        &format!(
            "source:\n  file: in.ndjson\nroutes:\n  - name: analytics\n    policy: \"{}\"\n    topic: clean\n\
             dead_letter:\n  topic: dead\nkeys:\n  dir: \"{}\"\n",
            policy.display(),
            keys.display()
        ),
    );
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out),
        format!(
            "veil: error: {file}:6:12: route `analytics` writes to a topic but the source is a file\n  hint: with `source: {{ file: ... }}`, write to `file:` too\n\
             {file}:8:10: dead_letter writes to a topic but the source is a file\n  hint: with `source: {{ file: ... }}`, write to `file:` too\n\
             2 errors in config\n"
        )
    );
}

#[test]
fn check_refuses_an_output_in_a_missing_directory_that_run_would_fail_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (config, _) = files_config(d, &["out/clean.ndjson"], "dead.ndjson");
    let want = format!(
        "veil: error: {}:6:11: route `r0` file `out/clean.ndjson`: directory `{}` does not exist\n  hint: create the directory first (veil does not create directories), or write somewhere that exists\n1 error in config\n",
        config.display(),
        d.join("out").display()
    );
    for command in ["check", "run"] {
        let out = veil(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{command}");
        assert_eq!(stderr(&out), want, "{command}");
    }
    assert!(!d.join("out").exists() && !d.join("dead.ndjson").exists());
    // A file where the directory should be is no directory either.
    std::fs::write(d.join("out"), "").unwrap();
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains(&format!(
            ":6:11: route `r0` file `out/clean.ndjson`: directory `{}` is not a directory\n",
            d.join("out").display()
        )),
        "{}",
        stderr(&out)
    );
}

/// The files of the repository a fresh clone has under `dirs`, copied into
/// `to` (nothing built, nothing ignored by git). `None` without git.
fn fresh_clone(to: &Path, dirs: &[&str]) -> Option<()> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["ls-files", "-z", "--"])
        .args(dirs)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        let dest = to.join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(root().join(name), &dest).unwrap();
    }
    Some(())
}

#[test]
fn the_shipped_files_pipeline_runs_in_a_fresh_clone_without_target() {
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path();
    if fresh_clone(clone, &["config", "examples"]).is_none() {
        eprintln!("skipped: git cannot list the repository's files");
        return;
    }
    assert!(!clone.join("target").exists());
    let config = clone.join("config/pipeline-files.yaml");
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let clean = std::fs::read_to_string(clone.join("examples/out/clean-analytics.ndjson")).unwrap();
    // 698 of the 1,000 example events are forwarded (BENCHMARKS.md).
    assert_eq!(clean.lines().count(), 698);
    assert_eq!(
        std::fs::read_to_string(clone.join("examples/out/dead-letter.ndjson")).unwrap(),
        ""
    );
}

// Issue 15: `message_key` against the routes' policies.

/// The Kafka config of [`kafka_config`] plus a second route `other` (its
/// policy keeps only `event` and names no subject), and `message_key: <mk>`
/// on line 18 (its value at column 14).
fn message_key_config(dir: &Path, mk: &str) -> PathBuf {
    std::fs::write(
        dir.join("other.yaml"),
        "name: other\nversion: 1\npurpose: other\nfields:\n  event: keep\n",
    )
    .unwrap();
    let yaml = kafka_config("", &root().join("tests/keys")) + &format!("message_key: {mk}\n");
    let yaml = yaml.replace(
        "dead_letter:",
        "  - name: other\n    policy: other.yaml\n    topic: other\ndead_letter:",
    );
    write_config(dir, &yaml)
}

#[test]
fn message_key_keep_is_refused_when_a_policy_pseudonymises_without_declaring_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let config = message_key_config(dir.path(), "keep");
    // Only the second route: a policy that pseudonymises `userId` and
    // declares no subject.
    std::fs::write(
        dir.path().join("other.yaml"),
        "name: other\nversion: 1\npurpose: other\nfields:\n  event: keep\n  userId: pseudonymise\n",
    )
    .unwrap();
    let yaml = std::fs::read_to_string(&config).unwrap();
    let only_other = yaml.replace(
        &root().join("config/policy.yaml").display().to_string(),
        "other.yaml",
    );
    std::fs::write(&config, only_other).unwrap();
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("route `other` (other@1, pseudonymised: userId)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn message_key_keep_with_subject_policies_is_refused_by_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = message_key_config(dir.path(), "keep");
    let want = format!(
        "veil: error: {}:18:14: message_key `keep` copies each input's raw Kafka key in clear into every route's topic, \
         but the policies name subject identifiers (or pseudonymise fields), which collectors often use as the key: \
         route `analytics` (web-analytics@5: userId, anonymousId, context.traits.email, traits.email)\n  \
         hint: use `pseudonymise` (the default: a keyed HMAC of the raw key) or `drop`; \
         if the keys hold no personal data, say why: \
         `message_key: {{ keep: {{ reason: \"keys are collector-assigned random ids\" }} }}`\n1 error in config\n",
        config.display()
    );
    for command in ["check", "run"] {
        let out = veil(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{command}: {}", stderr(&out));
        assert!(stderr(&out).ends_with(&want), "{command}: {}", stderr(&out));
    }
}

#[test]
fn message_key_keep_needs_a_reason_that_says_something() {
    let dir = tempfile::tempdir().unwrap();
    for mk in ["{ keep: { reason: \"  \" } }", "{ keep: {} }"] {
        let config = message_key_config(dir.path(), mk);
        let out = veil(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{mk}");
        assert!(
            stderr(&out).contains(&format!(
                "{}:18:14: message_key `keep` needs a reason: it copies raw Kafka keys in clear",
                config.display()
            )),
            "{mk}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn message_key_keep_with_a_reason_is_accepted_and_the_reason_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = message_key_config(
        dir.path(),
        "{ keep: { reason: \"keys are collector-assigned random ids\" } }",
    );
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK "));
    let e = stderr(&out);
    assert!(
        e.contains("message_key keep: raw Kafka keys are copied in clear")
            && e.contains("keys are collector-assigned random ids"),
        "{e}"
    );
}

#[test]
fn message_key_from_a_path_a_route_never_outputs_names_the_route_and_path() {
    let dir = tempfile::tempdir().unwrap();
    // `userId` is pseudonymised by the shipped policy, never output by `other`.
    let config = message_key_config(dir.path(), "{ from: userId }");
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out),
        format!(
            "veil: error: {}:18:14: message_key path `userId`: route `other`'s policy other@1 never outputs a scalar there, \
             so none of its records would have a key\n  \
             hint: name a path the policy keeps, pseudonymises or generalises (`veil explain --policy FILE` lists them), \
             or use `pseudonymise` or `drop`\n1 error in config\n",
            config.display()
        )
    );
    // An object (entries below it) is no key either, on both routes.
    let config = message_key_config(dir.path(), "{ from: context }");
    let out = veil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let e = stderr(&out);
    assert!(
        e.contains("route `analytics`'s policy web-analytics@5 never outputs a scalar there"),
        "{e}"
    );
    assert!(e.contains("route `other`'s policy other@1"), "{e}");
    // A path both write passes.
    std::fs::write(
        dir.path().join("other.yaml"),
        "name: other\nversion: 1\npurpose: other\nfields:\n  event: keep\n  userId: pseudonymise\n",
    )
    .unwrap();
    let config = dir.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("from: context", "from: userId");
    std::fs::write(&config, text).unwrap();
    let out = veil(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn suppression_config_mistakes_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let keys = root().join("tests/keys");
    let check = |suppression: &str| {
        let config = write_config(
            dir.path(),
            &format!("{}{suppression}", kafka_config("", &keys)),
        );
        let out = veil(&["check", "--config", config.to_str().unwrap()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (suppression, want) in [
        ("suppression: {}\n", "suppression names no source"),
        (
            "suppression:\n  topic: raw\n",
            "suppression topic `raw` is also consumed or produced to",
        ),
        (
            "suppression:\n  topic: dead\n",
            "suppression topic `dead` is also consumed or produced to",
        ),
        (
            "suppression:\n  files: [nowhere.txt]\n",
            "cannot read suppression file",
        ),
        (
            "suppression:\n  files: []\n  topic: s\n  key: \"k 1\"\n",
            "suppression.key `k 1` is not a key id",
        ),
        (
            "suppression:\n  topic: s\n  key: k9\n",
            "suppression.key `k9` is not in the key directory",
        ),
    ] {
        let (code, stderr) = check(suppression);
        assert_eq!(code, Some(64), "{suppression}: {stderr}");
        assert!(stderr.contains(want), "{suppression}: {stderr}");
    }
    let (code, stderr) = check("suppression:\n  topic: s\n  filez: []\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("pipeline.yaml:"),
        "file:line:column: {stderr}"
    );
}

#[test]
fn route_key_mistakes_exit_64_naming_the_route_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = root().join("tests/keys");
    let check = |route_key: &str, keys_extra: &str| {
        let yaml = kafka_config("", &keys).replace(
            "    topic: clean\n",
            &format!("    topic: clean\n{route_key}"),
        ) + keys_extra;
        let config = write_config(dir.path(), &yaml);
        let out = veil(&["check", "--config", config.to_str().unwrap()]);
        (out.status.code(), stderr(&out))
    };
    let (code, e) = check("    key: k9\n", "");
    assert_eq!(code, Some(64), "{e}");
    assert!(
        e.contains(
            "route `analytics` names key `k9`, which is not in the key directory (keys: k1)"
        ),
        "{e}"
    );
    let (code, e) = check("    key: \"k 9\"\n", "");
    assert_eq!(code, Some(64), "{e}");
    assert!(
        e.contains("pipeline.yaml:11:10: ")
            && e.contains("route `analytics` key `k 9` is not a key id"),
        "{e}"
    );
    let (code, e) = check("", "  max_age_days: 0\n");
    assert_eq!(code, Some(64), "{e}");
    assert!(
        e.contains("keys.max_age_days is 0; it must be between 1 and 36500"),
        "{e}"
    );
    let (code, e) = check("    key: k1\n", "  max_age_days: 90\n");
    assert_eq!(code, Some(0), "{e}");
}

#[test]
fn run_refuses_the_public_demo_key_as_a_route_key_too() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(root().join("tests/keys/k1.key"), keys.join("k1.key")).unwrap();
    std::fs::copy(root().join("examples/keys/demo.key"), keys.join("demo.key")).unwrap();
    let yaml = kafka_config("", &keys)
        .replace("    topic: clean\n", "    topic: clean\n    key: demo\n")
        + "  active: k1\n";
    let config = write_config(dir.path(), &yaml);
    let config = config.to_str().unwrap();
    let out = veil(&["run", "--config", config]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("veil run refuses the public demo key against a Kafka broker"));
    let out = veil(&["check", "--config", config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("route analytics: policy") && text.contains(", key demo -> topic clean"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("veil run refuses the public demo key"),
        "{}",
        stderr(&out)
    );
}
