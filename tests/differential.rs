//! Differential test: veil's engine against an independent oracle
//! (`tests/support/oracle/mod.rs`, written from `docs/policy.md`), over random
//! policies and random events whose shapes disagree with the policy at every
//! level.
//!
//! Properties, for every policy veil accepts and every event:
//! - (a) no value at a place the policy does not allow reaches the output;
//! - (b) no subject identifier reaches the output in clear;
//! - (c) no raw value under a transform reaches the output unchanged, unless
//!   the transform's documented result equals it;
//! - (d) nothing panics;
//! - (e) the output equals the oracle's (exactly for keep, drop,
//!   pseudonymise, truncate_time, bucket, redact and plain IPs; by property
//!   for URLs and IPv6 addresses embedding IPv4);
//! - and veil refuses every policy the oracle refuses (subjects kept or
//!   generalised, identity generalisations).
//!
//! (a)-(c) use markers: every scalar of an event is unique, so a scalar of
//! the output that equals an input scalar came from that place.
//!
//! Cases: `DEFAULT_CASES` in CI (about a minute of one core in debug);
//! `PROPTEST_CASES=200000 cargo test --release --test differential` for a
//! release run. `VEIL_DIFF_COLLECT=1` reports every distinct kind of failure
//! (smallest example of each) instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;

use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::Value;
use veil::keys::parse_key;
use veil::policy::Policy;
use veil::{DropReason, Limits, Outcome, Scratch, compile};

#[path = "support/events.rs"]
mod events;
#[path = "support/oracle/mod.rs"]
mod oracle;
#[path = "support/policies.rs"]
mod policies;

use events::{Event, event, to_value, write_json};
use oracle::{Act, Dropped, Fields, Forbidden, Model, Oracle, Seg, Unit, Verdict};
use policies::model;

/// Cases per CI run: about a minute of one core in a debug build (docs/testing.md).
const DEFAULT_CASES: u32 = 12_000;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

// ----------------------------------------------------------- the check

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    refused: u64,
    refused_as_oracle: u64,
    oracle_refuses: u64,
    forwarded: u64,
    forwarded_nonempty: u64,
    dropped: BTreeMap<&'static str, u64>,
    leaves_clear: u64,
    leaves_transformed: u64,
    leaves_removed: u64,
}

#[derive(Debug)]
struct Failure {
    kind: String,
    detail: String,
}

fn fail(kind: impl Into<String>, detail: impl Into<String>) -> Result<(), Failure> {
    Err(Failure {
        kind: kind.into(),
        detail: detail.into(),
    })
}

fn scalars(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.values().for_each(|x| scalars(x, out)),
        Value::Array(a) => a.iter().for_each(|x| scalars(x, out)),
        x => out.push(x.to_string()),
    }
}

fn drop_code(d: Dropped) -> DropReason {
    match d {
        Dropped::NoConsent => DropReason::NoConsent,
        Dropped::OptedOut => DropReason::OptedOut,
        Dropped::NoRule => DropReason::NoRule,
        Dropped::ByRule => DropReason::ByRule,
    }
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Every failure of one case (several kinds may show at once).
fn check(model: &Model, ev: &Event, stats: &Mutex<Stats>) -> Vec<Failure> {
    let yaml = model.to_yaml();
    let mut markers = BTreeSet::new();
    let event = to_value(&ev.shape(model), &mut 0, &mut markers);
    let mut text = String::new();
    write_json(&event, ev.escape, &mut text);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        event,
        "the event writer"
    );
    stats.lock().unwrap().cases += 1;

    let oracle = Oracle::new(model.clone(), "k1", &hex::decode(KEY_HEX).unwrap());
    let refusal = oracle.refusal();
    stats.lock().unwrap().oracle_refuses += u64::from(refusal.is_some());
    let policy = match catch_unwind(|| Policy::parse(&yaml, "differential.yaml")) {
        Err(e) => {
            return vec![Failure {
                kind: "(d) panic compiling a policy".into(),
                detail: panic_text(e),
            }];
        }
        Ok(Err(_)) => {
            let mut s = stats.lock().unwrap();
            s.refused += 1;
            s.refused_as_oracle += u64::from(refusal.is_some());
            return Vec::new();
        }
        Ok(Ok(p)) => p,
    };
    let mut failures = Vec::new();
    if let Err(f) = check_apply(policy, &oracle, &event, &text, &markers, stats) {
        failures.push(f);
    }
    if let Some((kind, detail)) = refusal {
        failures.push(Failure {
            kind: format!("accepted a policy to refuse: {kind}"),
            detail,
        });
    }
    failures
}

/// Apply an accepted policy and hold the output to the oracle's.
fn check_apply(
    policy: Policy,
    oracle: &Oracle,
    event: &Value,
    text: &str,
    markers: &BTreeSet<String>,
    stats: &Mutex<Stats>,
) -> Result<(), Failure> {
    let key = parse_key("k1", KEY_HEX.as_bytes(), Path::new("k1.key")).unwrap();
    let engine = compile(policy, &key, Limits::default());
    let mut out = Vec::new();
    let verdict = catch_unwind(AssertUnwindSafe(|| {
        engine.apply(text.as_bytes(), &mut out, &mut Scratch::default())
    }))
    .map_err(|e| Failure {
        kind: "(d) panic applying a policy".into(),
        detail: format!("{}; input {text}", panic_text(e)),
    })?;

    let mut leaves = Vec::new();
    let expected = oracle.apply(event, &mut leaves);
    {
        let mut s = stats.lock().unwrap();
        for (_, fate) in &leaves {
            match fate {
                Ok(()) => s.leaves_clear += 1,
                Err(Forbidden::Transform(_)) => s.leaves_transformed += 1,
                Err(_) => s.leaves_removed += 1,
            }
        }
    }
    let output = match (verdict.outcome, &expected) {
        (Outcome::Dropped(got), Verdict::Drop(want)) if got == drop_code(*want) => {
            *stats.lock().unwrap().dropped.entry(got.code()).or_default() += 1;
            return Ok(());
        }
        (Outcome::Forwarded, Verdict::Forward(_)) => match serde_json::from_slice::<Value>(&out) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return fail(
                    "forwarded output is not a JSON object",
                    String::from_utf8_lossy(&out),
                );
            }
        },
        (got, want) => {
            return fail(
                "verdict differs",
                format!("engine {got:?}, oracle {want:?}"),
            );
        }
    };
    {
        let mut s = stats.lock().unwrap();
        s.forwarded += 1;
        s.forwarded_nonempty += u64::from(output.as_object().is_some_and(|o| !o.is_empty()));
    }

    // (a)-(c): a marker in the output must come from a place allowed to show it.
    let mut seen = Vec::new();
    scalars(&output, &mut seen);
    for s in seen.iter().filter(|s| markers.contains(*s)) {
        let fates: Vec<_> = leaves
            .iter()
            .filter(|(l, _)| l == s)
            .map(|(_, f)| *f)
            .collect();
        if fates.iter().all(|f| f.is_err())
            && let Some(Err(why)) = fates.first()
        {
            let kind = match why {
                Forbidden::Unlisted => "(a) a value not allowed there (unlisted, or the wrong shape) reached the output".to_owned(),
                Forbidden::Subject => "(b) a subject identifier reached the output in clear".to_owned(),
                Forbidden::Transform(a) => format!("(c) a raw value under `{a}` reached the output unchanged"),
            };
            return fail(kind, format!("{s} in {output}"));
        }
    }

    // (e): the output is the oracle's.
    let Verdict::Forward(exp) = expected else {
        unreachable!()
    };
    oracle::matches_event(&exp, &output).or_else(|why| {
        let what = if why.contains("should not be there") {
            "a member the oracle removes is in the output"
        } else if why.contains("is missing") {
            "a member the oracle keeps is missing"
        } else if why.contains("ip_prefix of") {
            "an ip_prefix result leaks the embedded IPv4 address"
        } else if why.contains("url gave") {
            "a url result"
        } else if why.contains("does not fit") {
            "an array differs"
        } else {
            "a value differs"
        };
        fail(
            format!("(e) the output differs from the oracle's: {what}"),
            format!(
                "{why}\n   output: {output}\n   oracle: {}",
                oracle::describe(&exp)
            ),
        )
    })
}

#[test]
fn engine_agrees_with_the_independent_oracle() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let collect = std::env::var_os("VEIL_DIFF_COLLECT").is_some();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    });
    let stats = Mutex::new(Stats::default());
    let found: Mutex<BTreeMap<String, (usize, String)>> = Mutex::new(BTreeMap::new());
    // Panics are caught and reported as failures; keep the default hook's noise out.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let strategy = (model(), event());
    let result = runner.run(&strategy, |(model, ev)| {
        let failures = check(&model, &ev, &stats);
        if !collect {
            return match failures.into_iter().next() {
                Some(f) => Err(TestCaseError::fail(format!("{}\n{}", f.kind, f.detail))),
                None => Ok(()),
            };
        }
        let yaml = model.to_yaml();
        let event = to_value(&ev.shape(&model), &mut 0, &mut BTreeSet::new());
        let size = yaml.len() + event.to_string().len();
        let mut found = found.lock().unwrap();
        for f in failures {
            let slot = found.entry(f.kind).or_insert((usize::MAX, String::new()));
            if size < slot.0 {
                *slot = (size, format!("policy:\n{yaml}event: {event}\n{}", f.detail));
            }
        }
        Ok(())
    });
    std::panic::set_hook(hook);
    let s = stats.into_inner().unwrap();
    eprintln!("differential: {s:?}");
    for (kind, (_, example)) in found.into_inner().unwrap() {
        eprintln!("\n=== {kind}\n{example}");
    }
    match result {
        Err(TestError::Fail(why, (model, ev))) => {
            let mut markers = BTreeSet::new();
            let event = to_value(&ev.shape(&model), &mut 0, &mut markers);
            let mut text = String::new();
            write_json(&event, ev.escape, &mut text);
            panic!("{why}\nminimal policy:\n{}event: {text}", model.to_yaml());
        }
        Err(e) => panic!("{e}"),
        Ok(()) => {}
    }
    // The generator must stay meaningful: most policies compile, many events pass.
    assert!(
        s.refused * 10 < s.cases * 8,
        "veil refused {} of {} policies",
        s.refused,
        s.cases
    );
    let accepted = s.cases - s.refused;
    assert!(
        s.forwarded_nonempty * 5 > accepted,
        "only {} of {} events under accepted policies forwarded with content",
        s.forwarded_nonempty,
        accepted
    );
}

/// The oracle's pseudonyms are the published test vectors (docs/policy.md).
#[test]
fn oracle_pseudonyms_match_the_published_vectors() {
    let model = |purpose: &str, base64: bool, prefix: bool, truncate: usize| Model {
        purpose: purpose.into(),
        consent: None,
        subject: Vec::new(),
        base64,
        key_id_prefix: prefix,
        truncate_bytes: truncate,
        fields: None,
        rules: Vec::new(),
    };
    let key = hex::decode(KEY_HEX).unwrap();
    let a = Oracle::new(model("analytics", false, false, 32), "k1", &key);
    let m = Oracle::new(model("marketing", false, false, 32), "k1", &key);
    let b = Oracle::new(model("analytics", true, true, 16), "k1", &key);
    assert_eq!(
        a.pseudonym(b"user-42"),
        "5b250ced399f4ea0b50b0577228cb926cdce545187d4f9c1d34ca59bdbba3c53"
    );
    assert_eq!(
        m.pseudonym(b"user-42"),
        "0603937f1ef800c9668a2847078041cb22d3701b588584b6a2959fd3bdd6d62b"
    );
    assert_eq!(
        a.pseudonym("café ☕".as_bytes()),
        "e5891158f15a921cebe2adca3cd2a83808b574136d829ece32110c4a4e2f62b3"
    );
    assert_eq!(
        a.pseudonym(b"12345"),
        "63cb5df5ca108d9ad357527246e48fc0bb0fd0d545f93a7119fe0bcf33ce1a36"
    );
    assert_eq!(b.pseudonym(b"user-42"), "k1:WyUM7TmfTqC1CwV3Ioy5Jg");
}

/// The oracle's own reading of the documented examples, so a wrong oracle
/// fails here rather than blaming the engine.
#[test]
fn oracle_follows_the_documented_examples() {
    assert_eq!(
        oracle::truncate_time("2026-11-05T23:47:12.345+02:00", Unit::Hour).as_deref(),
        Some("2026-11-05T21:00:00Z")
    );
    assert_eq!(
        oracle::truncate_time("2026-11-05T23:47:12.345+02:00", Unit::Day).as_deref(),
        Some("2026-11-05T00:00:00Z")
    );
    assert_eq!(
        oracle::truncate_time("9999-12-31T23:59:59-01:00", Unit::Second),
        None
    );
    assert_eq!(
        oracle::truncate_time("0000-01-01T00:30:00+01:00", Unit::Second),
        None
    );
    assert_eq!(
        oracle::truncate_time("2024-02-29T23:59:59.5-23:59", Unit::Second).as_deref(),
        Some("2024-03-01T23:58:59Z")
    );
    assert_eq!(
        oracle::truncate_time("2026-02-29T00:00:00Z", Unit::Second),
        None
    );
    assert!(oracle::glob("utm_*", "utm_source") && oracle::glob("utm_?ource", "utm_source"));
    assert!(!oracle::glob("q", "qq") && oracle::glob("*", ""));
    for embedded in [
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "2002:102:304::1",
        "64:ff9b::1.2.3.4",
        "2001:0:4136:e378:8000:63bf:fefd:fcfb",
    ] {
        assert!(
            oracle::embedded_v4(embedded.parse().unwrap()).is_some(),
            "{embedded}"
        );
    }
    assert!(oracle::embedded_v4("2001:db8::1".parse().unwrap()).is_none());
    assert!(oracle::check_embedded("2002:c633:114d::1", 24, &"2002:c633:1100::".into()).is_ok());
    assert!(oracle::check_embedded("2002:c633:114d::1", 24, &"2002:c633:114d::".into()).is_err());
    assert!(
        oracle::check_embedded(
            "2001:0:4136:e378:8000:63bf:39cc:eeb2",
            24,
            &"2001:0:4136::".into()
        )
        .is_ok()
    );

    // `context: keep` + `context.ip: ip_prefix` with `context` an array: nothing passes.
    let model = Model {
        purpose: "analytics".into(),
        consent: None,
        subject: Vec::new(),
        base64: false,
        key_id_prefix: false,
        truncate_bytes: 32,
        fields: Some(Fields(vec![
            (vec![Seg::Key("context".into())], Act::Keep),
            (
                vec![Seg::Key("context".into()), Seg::Key("ip".into())],
                Act::Ip { v4: 24, v6: 48 },
            ),
            (vec![Seg::Key("items".into())], Act::Keep),
            (
                vec![
                    Seg::Key("items".into()),
                    Seg::Each,
                    Seg::Key("email".into()),
                ],
                Act::Drop,
            ),
        ])),
        rules: Vec::new(),
    };
    let o = Oracle::new(model, "k1", &hex::decode(KEY_HEX).unwrap());
    let run = |e: Value| match o.apply(&e, &mut Vec::new()) {
        Verdict::Forward(x) => oracle::describe(&x),
        Verdict::Drop(d) => format!("{d:?}"),
    };
    assert_eq!(
        run(serde_json::json!({"context": [{"ip": "203.0.113.77"}]})),
        "{}"
    );
    assert_eq!(run(serde_json::json!({"items": {"email": "x"}})), "{}");
    assert_eq!(run(serde_json::json!({"items": [[{"email": "x"}]]})), "{}");
    assert_eq!(
        run(
            serde_json::json!({"context": {"ip": "203.0.113.77", "x": 1}, "items": [{"email": "x", "n": 2}]})
        ),
        r#"{"context":{"ip":"203.0.113.0","x":1},"items":[{"n":2}]}"#
    );
}
