//! The per-input panic guard. A panic is injected through the engine-call
//! parameter of `process_using`: the shipped code paths
//! pass `CompiledPolicy::apply`, so nothing here can be triggered in production.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::keys::parse_key;
use crate::outcome::RejectReason;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const POLICY: &str =
    "version: 1\nname: t\npurpose: analytics\nfields:\n  type: keep\n  userId: pseudonymise\n";
/// Stands for event content: it must never reach a log line or a dead letter.
const SECRET: &str = "ana@example.com";

/// Two routes, `a` and `b`, with the same policy; Kafka keys pseudonymised
/// (a config's default).
fn stage() -> Stage {
    let config = StageConfig {
        message_key: MessageKey::Pseudonymise,
        keep_headers: Vec::new(),
        include_payload: false,
        limits: Limits::default(),
    };
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    let ring = KeyRing::single(key);
    let policies = ["a", "b"]
        .iter()
        .map(|n| {
            let p = crate::Policy::parse(POLICY, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
            (n.to_string(), p)
        })
        .collect();
    Stage::new(&config, policies, &ring).unwrap()
}

fn event(user: &str) -> Vec<u8> {
    format!(r#"{{"type":"track","userId":"{user}","email":"{SECRET}"}}"#).into_bytes()
}

const AT: Origin<'static> = Origin::Kafka {
    topic: "raw",
    partition: 3,
    offset: 41,
};

/// The engine call of `stage`'s second route: it writes, fills the scratch
/// buffers, then panics with event content in its message; the first
/// route's call is the real one and forwards.
fn second_route_panics(
    stage: &Stage,
) -> impl Fn(&CompiledPolicy, &[u8], &mut Vec<u8>, &mut Scratch) -> Verdict + '_ {
    let second = &stage.routes()[1].engine;
    move |engine, input, out, scratch| {
        let v = engine.apply(input, out, scratch);
        if std::ptr::eq(engine, second) {
            out.extend_from_slice(b"half-written");
            panic!("cannot handle {}", String::from_utf8_lossy(input));
        }
        v
    }
}

#[test]
fn a_panic_in_any_route_dead_letters_the_input_as_internal_error_with_nothing_forwarded() {
    let stage = stage();
    let mut out = Processed::default();
    let mut scratch = Scratch::default();
    let input = event("u1");
    stage.process_using(
        second_route_panics(&stage),
        &input,
        Some(b"k"),
        AT,
        &mut out,
        &mut scratch,
    );
    assert_eq!(out.rejected, Some(Reject::INTERNAL_ERROR));
    assert!(
        out.outputs.is_empty(),
        "the first route's output is withdrawn"
    );
    assert_eq!(
        out.buf.capacity(),
        0,
        "the buffers the panic touched are replaced, not cleared"
    );

    let record = stage.dead_letter(out.rejected.as_ref().unwrap(), AT, Some(&input));
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["reason"], "internal_error");
    assert_eq!(record["source"]["offset"], 41);
    let detail = record["detail"].as_str().unwrap();
    assert!(!detail.contains("at byte"), "{detail}");
    assert!(!record.to_string().contains(SECRET));
}

#[test]
fn after_a_contained_panic_the_next_input_is_processed_as_if_nothing_happened() {
    let stage = stage();
    let (mut out, mut scratch) = (Processed::default(), Scratch::default());
    stage.process_using(
        second_route_panics(&stage),
        &event("u1"),
        None,
        AT,
        &mut out,
        &mut scratch,
    );
    assert!(out.rejected.is_some());

    let next = event("u2");
    stage.process(&next, None, Origin::Line(2), &mut out, &mut scratch);
    let (mut fresh, mut fresh_scratch) = (Processed::default(), Scratch::default());
    stage.process(&next, None, Origin::Line(2), &mut fresh, &mut fresh_scratch);
    assert_eq!(out.rejected, None);
    assert_eq!(out.outputs, fresh.outputs);
    assert_eq!(out.outputs.len(), 2);
    for o in &out.outputs {
        assert_eq!(o.outcome, RouteOutcome::Forwarded);
        assert_eq!(out.value(o), fresh.value(o));
    }
}

/// A one-route stage, as `veil apply` runs: `include_payload` as given.
fn one_route_stage(include_payload: bool) -> Stage {
    let config = StageConfig {
        message_key: MessageKey::Drop,
        keep_headers: Vec::new(),
        include_payload,
        limits: Limits::default(),
    };
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    let policy = crate::Policy::parse(POLICY, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    Stage::new(&config, vec![("t".into(), policy)], &KeyRing::single(key)).unwrap()
}

#[test]
fn a_one_route_stage_contains_a_panic_as_apply_needs() {
    let stage = one_route_stage(false);
    let (mut out, mut scratch) = (Processed::default(), Scratch::default());
    stage.process_using(
        |e, input, out, scratch| {
            e.apply(input, out, scratch);
            panic!("at {SECRET}")
        },
        &event("u1"),
        None,
        Origin::Line(7),
        &mut out,
        &mut scratch,
    );
    assert_eq!(out.rejected, Some(Reject::INTERNAL_ERROR));
    assert_eq!(out.tally().err(), Some(RejectReason::InternalError));

    // And without a panic it is exactly the engine's apply, with no key.
    stage.process(
        &event("u1"),
        Some(b"k"),
        Origin::Line(8),
        &mut out,
        &mut scratch,
    );
    let mut want = Vec::new();
    let engine = &stage.routes()[0].engine;
    let w = engine.apply(&event("u1"), &mut want, &mut Scratch::default());
    assert_eq!(out.outputs.len(), 1);
    let o = &out.outputs[0];
    assert_eq!((o.outcome, o.counts), (RouteOutcome::Forwarded, w.counts));
    assert_eq!(out.value(o), want);
    assert_eq!(out.key(o), None);
}

#[test]
fn dead_letters_have_one_shape_in_every_mode() {
    // docs/pipeline.md, "Dead letters": reason, detail, policies, and the
    // line (files) or the source coordinates (Kafka); the payload only
    // when asked for and kept.
    let reject = Reject {
        reason: RejectReason::InvalidJson,
        offset: 3,
        what: "expected `:`",
    };
    let record = |stage: &Stage, origin, payload| -> serde_json::Value {
        serde_json::from_slice(&stage.dead_letter(&reject, origin, payload)).unwrap()
    };
    let one = one_route_stage(false);
    assert_eq!(
        record(&one, Origin::Line(4), Some(b"{\"a\" 1}")),
        serde_json::json!({
            "reason": "invalid_json",
            "detail": "expected `:` at byte 3",
            "policies": ["t@1"],
            "line": 4,
        })
    );
    assert_eq!(
        record(&stage(), AT, Some(b"{\"a\" 1}")),
        serde_json::json!({
            "reason": "invalid_json",
            "detail": "expected `:` at byte 3",
            "policies": ["t@1", "t@1"],
            "source": {"topic": "raw", "partition": 3, "offset": 41},
        })
    );
    let with_payload = one_route_stage(true);
    assert_eq!(
        record(&with_payload, Origin::Line(4), Some(b"{\"a\" 1}"))["payload"],
        "{\"a\" 1}"
    );
    assert_eq!(
        record(&with_payload, Origin::Line(4), Some(b"\xff"))["payload_base64"],
        "/w=="
    );
    let unkept = record(&with_payload, Origin::Line(4), None);
    assert!(unkept.get("payload").is_none() && unkept.get("payload_base64").is_none());
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_contained_panic_is_logged_with_its_coordinates_and_without_its_message() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Other tests of this binary reach the same log line at the same time
    // with no subscriber, and tracing may cache that no one listens to it
    // (a race in its callsite cache, not in veil). So the panic is
    // contained up to 5 times until one is logged; every attempt must be
    // contained, and the line checked below is the one logged.
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..5 {
            tracing::callsite::rebuild_interest_cache();
            let result: Result<(), Reject> = contain(AT, || panic!("value was {SECRET}"));
            assert_eq!(result, Err(Reject::INTERNAL_ERROR));
            if !logs.0.lock().unwrap().is_empty() {
                break;
            }
        }
    });
    assert_eq!(contain(AT, || 5), Ok(5));
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("internal_error"), "{logs}");
    assert!(
        logs.contains("topic=\"raw\"") || logs.contains("topic=raw"),
        "{logs}"
    );
    assert!(
        logs.contains("partition=3") && logs.contains("offset=41"),
        "{logs}"
    );
    assert!(!logs.contains(SECRET), "{logs}");
    assert_eq!(logs.lines().count(), 1, "{logs}");
}

#[test]
fn internal_error_is_a_reason_with_a_fixed_label() {
    assert!(RejectReason::ALL.contains(&RejectReason::InternalError));
    assert_eq!(RejectReason::InternalError.code(), "internal_error");
    assert_eq!(Reject::INTERNAL_ERROR.reason, RejectReason::InternalError);
}

/// Two routes with their own policies (`web@3`, `ads@12`), key `k7`, and
/// the input header `trace-id` kept.
fn split_stage() -> Stage {
    let config = StageConfig {
        message_key: MessageKey::Pseudonymise,
        keep_headers: vec!["trace-id".into()],
        include_payload: false,
        limits: Limits::default(),
    };
    let key = parse_key("k7", KEY.as_bytes(), Path::new("k7.key")).unwrap();
    let ring = KeyRing::single(key);
    let plain = |name: &str, version: u32| {
        let text = format!(
            "version: {version}\nname: {name}\npurpose: analytics\nfields:\n  type: keep\n  userId: pseudonymise\n"
        );
        crate::Policy::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    };
    Stage::new(
        &config,
        vec![
            ("a".into(), plain("web", 3)),
            ("b".into(), plain("ads", 12)),
        ],
        &ring,
    )
    .unwrap()
}

#[test]
fn an_input_awaits_one_acknowledgement_per_forwarded_route_or_one_for_its_dead_letter() {
    let stage = split_stage();
    let mut out = Processed::default();
    let mut scratch = Scratch::default();
    stage.process(&event("u1"), Some(b"k"), AT, &mut out, &mut scratch);
    assert_eq!(out.records(), 2, "both routes forward");
    assert_eq!(out.forwarded().map(|(i, _)| i).collect::<Vec<_>>(), [0, 1]);
    stage.process(b"{not json", None, AT, &mut out, &mut scratch);
    assert_eq!(out.records(), 1, "rejected: its one dead-letter record");
    assert_eq!(out.forwarded().count(), 0);
}

#[test]
fn an_input_every_route_drops_awaits_nothing() {
    // No consent field: a policy that requires consent drops every event.
    let config = StageConfig {
        message_key: MessageKey::Drop,
        keep_headers: Vec::new(),
        include_payload: false,
        limits: Limits::default(),
    };
    let ring = KeyRing::single(parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap());
    let text = "version: 1\nname: c\npurpose: analytics\nconsent:\n  purposes: consent.purposes\nfields:\n  type: keep\n";
    let p = crate::Policy::parse(text, "c.yaml").unwrap_or_else(|e| panic!("{e}"));
    let stage = Stage::new(&config, vec![("a".into(), p)], &ring).unwrap();
    let mut out = Processed::default();
    stage.process(&event("u1"), None, AT, &mut out, &mut Scratch::default());
    assert!(out.rejected.is_none());
    assert!(matches!(out.outputs[0].outcome, RouteOutcome::Dropped(_)));
    assert_eq!(out.records(), 0);
}

#[test]
fn route_records_carry_their_policy_the_key_id_and_their_source() {
    let stage = split_stage();
    let source = Source::new("raw", 3, 41);
    let headers = |route| stage.route_headers(route, &source).unwrap().to_vec();
    assert_eq!(
        headers(1),
        [
            ("veil-policy", "ads@12"),
            ("veil-key-id", "k7"),
            ("veil-source-topic", "raw"),
            ("veil-source-partition", "3"),
            ("veil-source-offset", "41"),
        ]
    );
    assert_eq!(headers(0)[0], ("veil-policy", "web@3"));
    assert!(stage.route_headers(2, &source).is_none(), "no third route");
}

#[test]
fn dead_letter_records_carry_their_reason_instead_of_a_policy() {
    let stage = split_stage();
    let source = Source::new("raw", 0, 9_007_199_254_740_993);
    assert_eq!(
        stage.dead_letter_headers("invalid_json", &source).to_vec(),
        [
            ("veil-reason", "invalid_json"),
            ("veil-key-id", "k7"),
            ("veil-source-topic", "raw"),
            ("veil-source-partition", "0"),
            ("veil-source-offset", "9007199254740993"),
        ]
    );
}

#[test]
fn only_configured_input_headers_are_kept() {
    let stage = split_stage();
    assert!(stage.keeps_header("trace-id"));
    assert!(
        !stage.keeps_header("Trace-Id"),
        "header names are case-sensitive in Kafka"
    );
    assert!(!stage.keeps_header("veil-policy"));
}

#[test]
fn a_clean_event_larger_than_the_record_limit_rejects_the_input_as_output_too_large() {
    let input = event(&"u".repeat(600));
    let mut out = Processed::default();
    let mut scratch = Scratch::default();
    // userId is pseudonymised (64 hex), `type` kept: the clean event is
    // about 90 bytes, plus a 64-byte pseudonymised key.
    let fits = stage().limit_records(200);
    fits.process(&input, Some(b"k"), AT, &mut out, &mut scratch);
    assert!(out.rejected.is_none());
    let clean = out.value(&out.outputs[0]).len() + out.key(&out.outputs[0]).unwrap().len();
    assert!(clean <= 200, "{clean}");

    let tight = stage().limit_records(clean - 1);
    tight.process(&input, Some(b"k"), AT, &mut out, &mut scratch);
    assert_eq!(out.rejected, Some(Reject::OUTPUT_TOO_LARGE));
    assert_eq!(out.records(), 1, "one dead letter, no route output");
    assert!(out.outputs.is_empty());
    // Exactly at the limit still fits.
    stage()
        .limit_records(clean)
        .process(&input, Some(b"k"), AT, &mut out, &mut scratch);
    assert!(out.rejected.is_none());
}

#[test]
fn a_dead_letter_too_large_to_send_keeps_its_pointer_and_drops_the_payload() {
    let input = [
        b"{\"userId\":\"".as_slice(),
        SECRET.as_bytes(),
        &[0xff; 3000],
    ]
    .concat();
    let reject = Reject {
        reason: RejectReason::InvalidUtf8,
        offset: 27,
        what: "invalid UTF-8",
    };
    let letter = |limit| -> serde_json::Value {
        let stage = one_route_stage(true).limit_records(limit);
        let bytes = stage.dead_letter(&reject, AT, Some(&input));
        assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
        serde_json::from_slice(&bytes).unwrap()
    };
    let roomy = letter(10_000);
    assert!(roomy["payload_base64"].is_string(), "fits: payload kept");
    assert!(roomy.get("payload_omitted").is_none());

    let tight = letter(1_000);
    assert!(tight.get("payload_base64").is_none());
    assert!(tight.get("payload").is_none());
    assert!(
        tight["payload_omitted"]
            .as_str()
            .unwrap()
            .contains("1000 bytes"),
        "{tight}"
    );
    assert_eq!(tight["reason"], "invalid_utf8");
    assert_eq!(tight["source"]["offset"], 41, "the pointer stays");
    assert_eq!(tight["source"]["topic"], "raw");
}

#[test]
fn a_refused_record_is_replaced_by_a_letter_naming_route_code_and_source_never_content() {
    let stage = stage();
    let letter: serde_json::Value = serde_json::from_slice(&stage.refused_letter(
        RejectReason::RejectedByBroker,
        Some("b"),
        "InvalidRecord",
        AT,
    ))
    .unwrap();
    assert_eq!(letter["reason"], "rejected_by_broker");
    assert_eq!(letter["route"], "b");
    assert_eq!(letter["source"]["partition"], 3);
    assert_eq!(letter["source"]["offset"], 41);
    let detail = letter["detail"].as_str().unwrap();
    assert!(
        detail.contains("route `b`") && detail.contains("InvalidRecord"),
        "{detail}"
    );
    assert!(letter.get("payload").is_none());
}

#[test]
fn an_input_keyed_by_a_suppressed_subject_is_dropped_on_every_route_whatever_its_body() {
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    let ring = KeyRing::single(key.clone());
    let list = std::sync::Arc::new(crate::suppression::SuppressionList::new(&ring));
    let t = crate::suppression::Tokeniser::new(&key);
    list.replace(
        crate::suppression::Source::Files,
        crate::suppression::entries_for(&t, ["u-ana"]),
    );
    // The policy declares no subject: only the key can tell.
    let stage = stage().suppressing(&list);
    let mut out = Processed::default();
    let mut scratch = Scratch::default();
    let body = br#"{"type":"track"}"#;
    for k in [&b"u-ana"[..], b"U-ANA", b" u-ana "] {
        stage.process(body, Some(k), AT, &mut out, &mut scratch);
        assert_eq!(out.records(), 0, "{}", String::from_utf8_lossy(k));
        assert!(
            out.outputs
                .iter()
                .all(|o| o.outcome == RouteOutcome::Dropped(crate::outcome::DropReason::Suppressed))
        );
    }
    stage.process(body, Some(b"u-ben"), AT, &mut out, &mut scratch);
    assert_eq!(out.records(), 2, "another subject flows on both routes");
    // A bad input is still dead-lettered, whatever its key.
    stage.process(b"{not json", Some(b"u-ana"), AT, &mut out, &mut scratch);
    assert_eq!(
        out.rejected.map(|r| r.reason),
        Some(RejectReason::InvalidJson)
    );
}

/// Headers as a Kafka record carries them: (name, value) in order.
struct Record<'a>(&'a [(&'a str, Option<&'a [u8]>)]);

impl InputHeaders for Record<'_> {
    fn each(&self, visit: &mut dyn FnMut(&str, Option<&[u8]>)) {
        for (name, value) in self.0 {
            visit(name, *value);
        }
    }
}

#[test]
fn an_opt_out_header_drops_the_input_on_the_routes_whose_policy_names_it_only() {
    let config = StageConfig {
        message_key: MessageKey::Drop,
        keep_headers: Vec::new(),
        include_payload: false,
        limits: Limits::default(),
    };
    let ring = KeyRing::single(parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap());
    let gpc = POLICY.replace("fields:", "consent:\n  opt_out_header: Sec-GPC\nfields:");
    let policies = [("gpc", gpc.as_str()), ("plain", POLICY)]
        .iter()
        .map(|(n, text)| (n.to_string(), crate::Policy::parse(text, "t.yaml").unwrap()))
        .collect();
    let stage = Stage::new(&config, policies, &ring).unwrap();
    assert_eq!(
        stage.opt_out_headers().collect::<Vec<_>>(),
        [("gpc", "sec-gpc")]
    );
    let mut out = Processed::default();
    let mut scratch = Scratch::default();
    let mut outcomes = |headers: &[(&str, Option<&[u8]>)], value: &[u8]| {
        stage.process_record(value, None, &Record(headers), AT, &mut out, &mut scratch);
        if out.rejected.is_some() {
            return None;
        }
        Some(out.outputs.iter().map(|o| o.outcome).collect::<Vec<_>>())
    };
    let fwd = RouteOutcome::Forwarded;
    let opted = RouteOutcome::Dropped(DropReason::OptedOut);
    let e = event("u1");
    assert_eq!(outcomes(&[], &e), Some(vec![fwd, fwd]));
    assert_eq!(outcomes(&[("other", Some(b"1"))], &e), Some(vec![fwd, fwd]));
    for value in [Some(&b"1"[..]), Some(b""), Some(b" yes "), None] {
        assert_eq!(
            outcomes(&[("SEC-gpc", value)], &e),
            Some(vec![opted, fwd]),
            "{value:?}"
        );
    }
    for value in [&b"0"[..], b" false ", b"FALSE"] {
        assert_eq!(
            outcomes(&[("sec-gpc", Some(value))], &e),
            Some(vec![fwd, fwd])
        );
    }
    // Any one of several headers of that name opts out.
    let two: [(&str, Option<&[u8]>); 2] = [("sec-gpc", Some(b"0")), ("Sec-GPC", Some(b"1"))];
    assert_eq!(outcomes(&two, &e), Some(vec![opted, fwd]));
    // A bad input is still dead-lettered, header or not.
    assert_eq!(outcomes(&[("sec-gpc", Some(b"1"))], b"{not json"), None);
}
