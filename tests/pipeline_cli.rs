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
