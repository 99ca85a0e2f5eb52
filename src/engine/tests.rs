use super::*;
use crate::keys::parse_key;
use crate::policy::ScanMode;
use std::path::Path;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn engine(yaml: &str) -> CompiledPolicy {
    let policy = Policy::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    compile(policy, &key, Limits::default())
}

fn run(e: &CompiledPolicy, input: &str) -> Result<String, Outcome> {
    let mut out = b"PREFIX".to_vec();
    let v = e.apply(input.as_bytes(), &mut out, &mut Scratch::default());
    match v.outcome {
        Outcome::Forwarded => {
            assert!(out.starts_with(b"PREFIX"));
            let s = String::from_utf8(out[6..].to_vec()).unwrap();
            serde_json::from_str::<serde_json::Value>(&s).expect("output is JSON");
            Ok(s)
        }
        other => {
            assert_eq!(out, b"PREFIX", "buffer untouched on {other:?}");
            Err(other)
        }
    }
}

fn reason(r: Result<String, Outcome>) -> &'static str {
    match r {
        Err(Outcome::Rejected(r)) => r.reason.code(),
        Err(Outcome::Dropped(d)) => d.code(),
        other => panic!("expected a rejection or drop, got {other:?}"),
    }
}

fn pseudonym(e: &CompiledPolicy, v: &str) -> String {
    e.pseudonymiser().pseudonym(v.as_bytes())
}

const BASE: &str = "name: t\nversion: 1\npurpose: analytics\n";

#[test]
fn only_allowlisted_fields_pass() {
    let e = engine(&format!(
        "{BASE}fields:\n  type: keep\n  context.page.path: keep\n"
    ));
    let out = run(
        &e,
        r#"{"type":"track","secret":"x","context":{"page":{"path":"/a","title":"t"},"ip":"1.2.3.4"}}"#,
    );
    assert_eq!(
        out.unwrap(),
        r#"{"type":"track","context":{"page":{"path":"/a"}}}"#
    );
}

#[test]
fn keep_keeps_nested_values_verbatim() {
    let e = engine(&format!("{BASE}fields:\n  integrations: keep\n"));
    let input = r#"{"integrations": {"All": true, "x": [1, {"y": null}]}, "z": 1}"#;
    assert_eq!(
        run(&e, input).unwrap(),
        r#"{"integrations":{"All": true, "x": [1, {"y": null}]}}"#
    );
}

#[test]
fn emptied_objects_disappear_and_empty_event_is_an_empty_object() {
    let e = engine(&format!("{BASE}fields:\n  a.b: keep\n  type: keep\n"));
    assert_eq!(
        run(&e, r#"{"a":{"c":1},"type":"x"}"#).unwrap(),
        r#"{"type":"x"}"#
    );
    assert_eq!(run(&e, r#"{"q":1}"#).unwrap(), "{}");
}

#[test]
fn specific_path_wins_over_wildcard_and_wildcard_fills_the_rest() {
    let e = engine(&format!(
        "{BASE}fields:\n  context.campaign.*: keep\n  context.campaign.email: drop\n  context.*.id: keep\n  context.device.type: keep\n"
    ));
    let out = run(
        &e,
        r#"{"context":{"campaign":{"name":"a","email":"e@x"},"device":{"id":"d","type":"m","ad":"z"}}}"#,
    );
    assert_eq!(
        out.unwrap(),
        r#"{"context":{"campaign":{"name":"a"},"device":{"id":"d","type":"m"}}}"#
    );
}

#[test]
fn kept_parent_with_specific_overrides() {
    let e = engine(&format!(
        "{BASE}fields:\n  context: keep\n  context.traits.email: pseudonymise\n  context.ip: ip_prefix\n"
    ));
    let out = run(
        &e,
        r#"{"context":{"ip":"10.1.2.3","traits":{"email":"a@b","plan":"pro"}}}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        format!(
            r#"{{"context":{{"ip":"10.1.2.0","traits":{{"email":"{}","plan":"pro"}}}}}}"#,
            pseudonym(&e, "a@b")
        )
    );
}

#[test]
fn array_elements() {
    let e = engine(&format!(
        "{BASE}fields:\n  properties.products[].sku: keep\n"
    ));
    let out = run(
        &e,
        r#"{"properties":{"products":[{"sku":"a","name":"n"},{"name":"only"},"str",{"sku":2}]}}"#,
    );
    assert_eq!(
        out.unwrap(),
        r#"{"properties":{"products":[{"sku":"a"},{"sku":2}]}}"#
    );
    // An array where an object is expected, and vice versa, is removed.
    assert_eq!(
        run(&e, r#"{"properties":{"products":{"sku":"a"}}}"#).unwrap(),
        "{}"
    );
}

#[test]
fn keys_match_after_unescaping_and_are_written_as_received() {
    let e = engine(&format!(
        "{BASE}fields:\n  userId: keep\n  context.\"a.b\": keep\n"
    ));
    let out = run(
        &e,
        r#"{"user\u0049d":"u1","context":{"a.b":1,"a":{"b":2}}}"#,
    );
    assert_eq!(out.unwrap(), r#"{"user\u0049d":"u1","context":{"a.b":1}}"#);
}

#[test]
fn pseudonymise_types() {
    let e = engine(&format!(
        "{BASE}fields:\n  s: pseudonymise\n  n: pseudonymise\n  b: pseudonymise\n  z: pseudonymise\n  o: pseudonymise\n  a: pseudonymise\n  e: pseudonymise\n"
    ));
    let v = e.apply(
        br#"{"s":"x","n":12345,"b":true,"z":null,"o":{"k":1},"a":[1],"e":"caf\u00e9"}"#,
        &mut Vec::new(),
        &mut Scratch::default(),
    );
    assert_eq!(v.counts.type_mismatch, 2);
    assert_eq!(v.counts.pseudonymised, 4);
    let out = run(
        &e,
        r#"{"s":"x","n":12345,"b":true,"z":null,"o":{"k":1},"a":[1],"e":"caf\u00e9"}"#,
    )
    .unwrap();
    let expected = format!(
        r#"{{"s":"{}","n":"{}","b":"{}","z":null,"e":"{}"}}"#,
        pseudonym(&e, "x"),
        pseudonym(&e, "12345"),
        pseudonym(&e, "true"),
        pseudonym(&e, "café")
    );
    assert_eq!(out, expected);
}

#[test]
fn normalise_before_hashing() {
    let e = engine(&format!(
        "{BASE}fields:\n  email: {{ pseudonymise: {{ normalise: [trim, lowercase] }} }}\n"
    ));
    let a = run(&e, r#"{"email":"  Ana.Smith@Example.COM \n"}"#).unwrap();
    let b = run(&e, r#"{"email":"ana.smith@example.com"}"#).unwrap();
    assert_eq!(a, b);
    assert!(a.contains(&pseudonym(&e, "ana.smith@example.com")));
}

#[test]
fn generalisations() {
    let e = engine(&format!(
        "{BASE}fields:\n  ip: {{ ip_prefix: {{ v4: 24, v6: 48 }} }}\n  url: {{ url: {{ keep_query: [\"utm_*\"] }} }}\n  t: {{ truncate_time: hour }}\n  age: {{ bucket: {{ edges: [0, 18, 25, 35] }} }}\n  price: {{ bucket: {{ width: 10 }} }}\n  note: {{ redact: {{ patterns: ['\\d{{6,}}'] }} }}\n"
    ));
    let out = run(
        &e,
        r#"{"ip":"2001:db8:85a3:8d3::1","url":"https:\/\/a.example\/p?utm_source=x&email=a%40b#f","t":"2026-11-05T10:47:12.5Z","age":29,"price":123.45,"note":"card 4111111111111111 ok"}"#,
    );
    assert_eq!(
        out.unwrap(),
        r#"{"ip":"2001:db8:85a3::","url":"https://a.example/p?utm_source=x","t":"2026-11-05T10:00:00Z","age":25,"price":120,"note":"card [redacted] ok"}"#
    );
}

#[test]
fn unreadable_values_are_removed_not_passed() {
    let e = engine(&format!(
        "{BASE}fields:\n  ip: ip_prefix\n  url: url\n  t: {{ truncate_time: day }}\n  n: {{ bucket: {{ edges: [0] }} }}\n  keep: keep\n"
    ));
    let input = r#"{"ip":"not-an-ip","url":"mailto:a@b.c","t":"yesterday","n":-5,"keep":1}"#;
    let v = e.apply(input.as_bytes(), &mut Vec::new(), &mut Scratch::default());
    assert_eq!(v.counts.invalid, 4);
    assert_eq!(run(&e, input).unwrap(), r#"{"keep":1}"#);
}

#[test]
fn consent_and_opt_out_fail_closed() {
    let e = engine(&format!(
        "{BASE}consent:\n  purposes: context.consent.purposes\n  opt_out: context.consent.gpc\nfields:\n  type: keep\n"
    ));
    let ok = r#"{"type":"t","context":{"consent":{"purposes":["ads","analytics"],"gpc":false}}}"#;
    assert_eq!(run(&e, ok).unwrap(), r#"{"type":"t"}"#);
    for (input, why) in [
        (
            r#"{"type":"t","context":{"consent":{"purposes":["ads"]}}}"#,
            "no_consent",
        ),
        (r#"{"type":"t"}"#, "no_consent"),
        (
            r#"{"type":"t","context":{"consent":{"purposes":"analytics"}}}"#,
            "no_consent",
        ),
        (
            r#"{"type":"t","context":{"consent":{"purposes":[{"p":"analytics"}]}}}"#,
            "no_consent",
        ),
        (
            r#"{"context":{"consent":{"purposes":["analytics"],"gpc":true}}}"#,
            "opted_out",
        ),
        (
            r#"{"context":{"consent":{"purposes":["analytics"],"gpc":"no"}}}"#,
            "opted_out",
        ),
    ] {
        assert_eq!(reason(run(&e, input)), why, "{input}");
    }
    // Escaped purpose strings are compared unescaped.
    let esc = r#"{"type":"t","context":{"consent":{"purposes":["analytic\u0073"]}}}"#;
    assert!(run(&e, esc).is_ok());
}

#[test]
fn consent_given_as_an_object_grants_only_names_mapped_to_true() {
    let e = engine(&format!(
        "{BASE}consent:\n  purposes: c.prefs\nfields:\n  type: keep\n"
    ));
    let granted = [
        r#"{"type":"t","c":{"prefs":{"ads":false,"analytics":true}}}"#,
        r#"{"type":"t","c":{"prefs":{"analytic\u0073":true}}}"#,
        r#"{"type":"t","c":{"prefs":{"x":{"analytics":false},"analytics" : true }}}"#,
    ];
    for input in granted {
        assert!(run(&e, input).is_ok(), "{input}");
    }
    for input in [
        r#"{"type":"t","c":{"prefs":{"analytics":false}}}"#,
        r#"{"type":"t","c":{"prefs":{"analytics":"true"}}}"#,
        r#"{"type":"t","c":{"prefs":{"analytics":1}}}"#,
        r#"{"type":"t","c":{"prefs":{"analytics":null}}}"#,
        r#"{"type":"t","c":{"prefs":{"Analytics":true}}}"#,
        r#"{"type":"t","c":{"prefs":{"x":{"analytics":true}}}}"#,
        r#"{"type":"t","c":{"prefs":{}}}"#,
        r#"{"type":"t","c":{"prefs":true}}"#,
    ] {
        assert_eq!(reason(run(&e, input)), "no_consent", "{input}");
    }
}

#[test]
fn a_consent_category_maps_the_purpose_to_the_platforms_name() {
    let e = engine(&format!(
        "{BASE}consent:\n  purposes: c.prefs\n  category: Analytics\nfields:\n  type: keep\n"
    ));
    assert!(run(&e, r#"{"type":"t","c":{"prefs":{"Analytics":true}}}"#).is_ok());
    assert!(run(&e, r#"{"type":"t","c":{"prefs":["Analytics"]}}"#).is_ok());
    assert_eq!(
        reason(run(&e, r#"{"type":"t","c":{"prefs":{"analytics":true}}}"#)),
        "no_consent",
        "the platform's name, not the purpose"
    );
}

#[test]
fn consent_is_read_even_under_a_transform() {
    // The consent object is pseudonymised (a type mismatch): a probe pass
    // still reads consent.
    let e = engine(&format!(
        "{BASE}consent:\n  purposes: c.purposes\nfields:\n  c: pseudonymise\n  type: keep\n"
    ));
    assert!(e.policy().plan.probe.is_some());
    assert_eq!(
        run(&e, r#"{"type":"t","c":{"purposes":["analytics"]}}"#).unwrap(),
        r#"{"type":"t"}"#
    );
    assert_eq!(
        reason(run(&e, r#"{"type":"t","c":{"purposes":[]}}"#)),
        "no_consent"
    );
}

#[test]
fn rules_first_match_wins_and_unmatched_is_no_rule() {
    let e = engine(&format!(
        "{BASE}rules:\n  - when: {{ type: identify }}\n    fields: {{ traits.plan: keep, type: keep }}\n  - when: {{ type: track, event: [A, B] }}\n    fields: {{ event: keep }}\n  - when: {{ type: track }}\n    drop: true\n"
    ));
    assert_eq!(
        run(
            &e,
            r#"{"traits":{"plan":"p","email":"x"},"type":"identify"}"#
        )
        .unwrap(),
        r#"{"traits":{"plan":"p"},"type":"identify"}"#
    );
    assert_eq!(
        run(&e, r#"{"event":"B","type":"track"}"#).unwrap(),
        r#"{"event":"B"}"#
    );
    assert_eq!(
        reason(run(&e, r#"{"event":"C","type":"track"}"#)),
        "by_rule"
    );
    assert_eq!(reason(run(&e, r#"{"type":"page"}"#)), "no_rule");
}

#[test]
fn rules_fall_back_to_default_fields() {
    let e = engine(&format!(
        "{BASE}fields:\n  type: keep\nrules:\n  - when: {{ n: 1 }}\n    fields: {{ n: keep }}\n"
    ));
    assert_eq!(run(&e, r#"{"n":1.0,"type":"x"}"#).unwrap(), r#"{"n":1.0}"#);
    assert_eq!(run(&e, r#"{"n":2,"type":"x"}"#).unwrap(), r#"{"type":"x"}"#);
}

#[test]
fn bad_input_reasons() {
    let e = engine(&format!("{BASE}fields:\n  a: keep\n"));
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(70), "]".repeat(70));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"a\":".to_vec(), "invalid_json"),
        (b"".to_vec(), "invalid_json"),
        (b"{} x".to_vec(), "invalid_json"),
        (b"\xEF\xBB\xBF{}".to_vec(), "invalid_json"),
        (b"{\"a\":\"\xff\"}".to_vec(), "invalid_utf8"),
        (b"[1]".to_vec(), "not_object"),
        (b"\"str\"".to_vec(), "not_object"),
        (deep.into_bytes(), "too_deep"),
        (br#"{"a":1,"b":{"x":1,"x":2}}"#.to_vec(), "duplicate_key"),
        (br#"{"a":1,"\u0061":2}"#.to_vec(), "duplicate_key"),
    ];
    for (input, code) in cases {
        let v = e.apply(&input, &mut Vec::new(), &mut Scratch::default());
        match v.outcome {
            Outcome::Rejected(r) => assert_eq!(
                r.reason.code(),
                code,
                "{:?}",
                String::from_utf8_lossy(&input)
            ),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&input)),
        }
    }
}

#[test]
fn too_large_is_checked_before_anything_else() {
    let policy = Policy::parse(&format!("{BASE}fields:\n  a: keep\n"), "t").unwrap();
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    let e = compile(
        policy,
        &key,
        Limits {
            max_message_bytes: 10,
            max_depth: 64,
        },
    );
    let v = e.apply(
        b"{\"a\":\"0123456789\"}",
        &mut Vec::new(),
        &mut Scratch::default(),
    );
    assert!(matches!(v.outcome, Outcome::Rejected(r) if r.reason == RejectReason::TooLarge));
}

#[test]
fn reject_detail_never_contains_input() {
    let e = engine(&format!("{BASE}fields:\n  a: keep\n"));
    let v = e.apply(
        br#"{"secret@example.com" 1}"#,
        &mut Vec::new(),
        &mut Scratch::default(),
    );
    let Outcome::Rejected(r) = v.outcome else {
        panic!()
    };
    let detail = r.to_string();
    assert!(detail.contains("byte 22"), "{detail}");
    assert!(!detail.contains("secret"));
}

#[test]
fn numbers_keep_their_exact_text() {
    let e = engine(&format!("{BASE}fields:\n  n: keep\n  m: keep\n"));
    let out = run(&e, r#"{"n":123456789012345678901234567890,"m":1.50e+3}"#).unwrap();
    assert_eq!(out, r#"{"n":123456789012345678901234567890,"m":1.50e+3}"#);
}

#[test]
fn scratch_reuse_across_events_of_different_shapes() {
    let e = engine(&format!(
        "{BASE}consent:\n  purposes: c\nfields:\n  u: pseudonymise\n"
    ));
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for input in [
        r#"{"u":"a","c":["analytics"]}"#,
        "nope",
        r#"{"u":"b","c":[]}"#,
        r#"{"c":["analytics"],"u":"b"}"#,
    ] {
        e.apply(input.as_bytes(), &mut out, &mut scratch);
    }
    let expected = format!(
        r#"{{"u":"{}"}}{{"u":"{}"}}"#,
        pseudonym(&e, "a"),
        pseudonym(&e, "b")
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

// ---- Issue 9: reshaped events, timestamps, URLs, embedded IPv4 ----------

/// The counts of one forwarded event.
fn counts(e: &CompiledPolicy, input: &str) -> FieldCounts {
    let v = e.apply(input.as_bytes(), &mut Vec::new(), &mut Scratch::default());
    assert_eq!(v.outcome, Outcome::Forwarded, "{input}");
    v.counts
}

#[test]
fn kept_parent_as_an_array_is_walked_not_copied_whole() {
    let e = engine(&format!(
        "{BASE}subject: [context.traits.email]\nfields:\n  context: keep\n  context.ip: ip_prefix\n  context.traits.email: pseudonymise\n"
    ));
    let input = r#"{"context":[{"ip":"203.0.113.77","traits":{"email":"ana@example.com"}}]}"#;
    assert_eq!(run(&e, input).unwrap(), "{}");
    assert_eq!(counts(&e, input).type_mismatch, 1);
    // `traits` as an array under a kept, correctly shaped parent.
    let input =
        r#"{"context":{"ip":"203.0.113.77","app":"x","traits":[{"email":"ana@example.com"}]}}"#;
    assert_eq!(
        run(&e, input).unwrap(),
        r#"{"context":{"ip":"203.0.113.0","app":"x"}}"#
    );
    // A scalar (null too) where entries lie beneath.
    assert_eq!(
        run(&e, r#"{"context":{"traits":"ana@example.com"}}"#).unwrap(),
        "{}"
    );
    assert_eq!(
        run(&e, r#"{"context":{"traits":null,"app":null}}"#).unwrap(),
        r#"{"context":{"app":null}}"#
    );
}

#[test]
fn kept_array_with_element_rules_rejects_objects_and_nested_arrays() {
    let e = engine(&format!(
        "{BASE}fields:\n  items: keep\n  items[].email: drop\n"
    ));
    for input in [
        r#"{"items":{"email":"ana@example.com","sku":"a"}}"#,
        r#"{"items":[[{"email":"ana@example.com","sku":"a"}]]}"#,
    ] {
        let out = run(&e, input).unwrap();
        assert!(!out.contains("ana@"), "{input} -> {out}");
    }
    assert_eq!(
        run(&e, r#"{"items":{"email":"ana@example.com","sku":"a"}}"#).unwrap(),
        "{}"
    );
    assert_eq!(
        run(
            &e,
            r#"{"items":[[{"email":"a@b.c"}],{"email":"a@b.c","sku":"a"},3]}"#
        )
        .unwrap(),
        r#"{"items":[{"sku":"a"}]}"#
    );
}

#[test]
fn wildcard_keep_over_an_array_is_walked() {
    let e = engine(&format!(
        "{BASE}fields:\n  context: keep\n  context.*: keep\n  context.*.email: drop\n"
    ));
    let out = run(&e, r#"{"context":[{"a":{"email":"ana@example.com"}}]}"#).unwrap();
    assert_eq!(out, "{}");
    let out = run(
        &e,
        r#"{"context":{"a":[{"email":"ana@example.com"}],"b":{"email":"x@y.z","n":1}}}"#,
    )
    .unwrap();
    assert_eq!(out, r#"{"context":{"b":{"n":1}}}"#);
}

#[test]
fn consent_path_under_a_kept_parent_makes_its_shape_matter() {
    let e = engine(&format!(
        "{BASE}consent:\n  purposes: ctx.consent.purposes\nfields:\n  ctx: keep\n"
    ));
    let out = run(
        &e,
        r#"{"ctx":{"consent":{"purposes":["analytics"]},"a":1}}"#,
    );
    assert_eq!(
        out.unwrap(),
        r#"{"ctx":{"consent":{"purposes":["analytics"]},"a":1}}"#
    );
    // `consent` as an array: no consent can be read, so no event passes.
    assert_eq!(
        reason(run(
            &e,
            r#"{"ctx":{"consent":[{"purposes":["analytics"]}]}}"#
        )),
        "no_consent"
    );
}

#[test]
fn timestamp_beyond_year_9999_in_utc_is_invalid_not_a_panic() {
    let e = engine(&format!(
        "{BASE}fields:\n  sentAt: {{ truncate_time: hour }}\n  k: keep\n"
    ));
    let input = r#"{"sentAt":"9999-12-31T23:59:59-01:00","k":1}"#;
    assert_eq!(run(&e, input).unwrap(), r#"{"k":1}"#);
    assert_eq!(counts(&e, input).invalid, 1);
    assert_eq!(
        run(&e, r#"{"sentAt":"0000-01-01T00:00:00+01:00"}"#).unwrap(),
        "{}"
    );
}

#[test]
fn url_removes_strings_that_are_not_urls() {
    let e = engine(&format!(
        "{BASE}fields:\n  r: {{ url: {{ keep_query: [\"utm_*\"] }} }}\n"
    ));
    for not_a_url in [
        "farid.mueller405@example.com",
        "Farid Mueller +44 7764656492",
        "?utm_source=a",
        "shoes/running",
        "//cdn.example.com/x",
        "mailto:ana@example.com",
        "ftp://files.example.com/a",
        "javascript:alert(1)",
        "/Farid Mueller +44 7764656492",
        "/ana\"@example.com",
        "",
    ] {
        let input = serde_json::json!({ "r": not_a_url }).to_string();
        assert_eq!(run(&e, &input).unwrap(), "{}", "{not_a_url:?}");
    }
    let kept = |u: &str| {
        let input = serde_json::json!({ "r": u }).to_string();
        let out: serde_json::Value = serde_json::from_str(&run(&e, &input).unwrap()).unwrap();
        out["r"].as_str().map(str::to_owned)
    };
    assert_eq!(
        kept("/cart?utm_source=a&q=1").as_deref(),
        Some("/cart?utm_source=a")
    );
    assert_eq!(
        kept("HTTPS://Shop.Example.com/a?utm_source=x;email=a@b.c").as_deref(),
        Some("https://shop.example.com/a?utm_source=x")
    );
    assert_eq!(
        kept("https://shop.example.com/a?utm_source=x;email=a@b.c").as_deref(),
        Some("https://shop.example.com/a?utm_source=x")
    );
    assert_eq!(
        kept("/a?utm_a=1;utm_b=2&x=3").as_deref(),
        Some("/a?utm_a=1&utm_b=2")
    );
}

#[test]
fn ipv6_addresses_that_embed_ipv4_lose_its_host_part() {
    let e = engine(&format!(
        "{BASE}fields:\n  ip: {{ ip_prefix: {{ v4: 24, v6: 64 }} }}\n"
    ));
    let ip = |a: &str| run(&e, &format!(r#"{{"ip":"{a}"}}"#)).unwrap();
    // 6to4 2002:1094:9666::1 carries 16.148.150.102.
    assert_eq!(ip("2002:1094:9666::1"), r#"{"ip":"2002:1094:9600::"}"#);
    assert_eq!(
        ip("::ffff:16.148.150.102"),
        r#"{"ip":"::ffff:16.148.150.0"}"#
    );
    assert_eq!(ip("64:ff9b::1094:9666"), r#"{"ip":"64:ff9b::1094:9600"}"#);
}

#[test]
fn rule_conditions_compare_numbers_exactly() {
    let e = engine(&format!(
        "{BASE}rules:\n  - when: {{ id: 9007199254740993 }}\n    drop: true\nfields:\n  id: keep\n"
    ));
    assert_eq!(reason(run(&e, r#"{"id":9007199254740993}"#)), "by_rule");
    assert_eq!(reason(run(&e, r#"{"id":90071992547409930e-1}"#)), "by_rule");
    assert_eq!(
        run(&e, r#"{"id":9007199254740992}"#).unwrap(),
        r#"{"id":9007199254740992}"#
    );
}

#[test]
fn top_level_arrays_are_not_object_within_the_configured_depth() {
    let policy = Policy::parse(&format!("{BASE}fields:\n  a: keep\n"), "t.yaml").unwrap();
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for (max_depth, n, want) in [
        (64, 10, "not_object"),
        (64, 65, "too_deep"),
        (200, 100, "not_object"),
        (200, 201, "too_deep"),
    ] {
        let e = compile(
            policy.clone(),
            &key,
            Limits {
                max_depth,
                ..Limits::default()
            },
        );
        assert_eq!(
            reason(run(&e, &deep(n))),
            want,
            "depth {n} under limit {max_depth}"
        );
        // An object nested as deep agrees on too_deep.
        let obj =
            format!("{}{}", r#"{"a":"#.repeat(n), "}".repeat(n)).replace(r#"{"a":}"#, r#"{"a":1}"#);
        let obj_reason = match run(&e, &obj) {
            Ok(_) => "forwarded",
            r => reason(r),
        };
        assert_eq!(
            obj_reason == "too_deep",
            want == "too_deep",
            "objects {n} deep under {max_depth}"
        );
    }
}

/// The pseudonym cache changes no output: the example events through the
/// shipped policy with a tiny cache (collisions and evictions all the
/// time) and a large one, twice over (hits), against no cache; and two
/// policies sharing one scratch never get each other's pseudonyms.
#[test]
fn a_pseudonym_cache_changes_no_output() {
    let shipped = std::fs::read_to_string("config/policy.yaml").unwrap();
    let key = parse_key("k1", KEY.as_bytes(), Path::new("k1.key")).unwrap();
    let a = compile(
        Policy::parse(&shipped, "p.yaml").unwrap(),
        &key,
        Limits::default(),
    );
    let other = shipped.replace("purpose: analytics", "purpose: marketing");
    assert_ne!(other, shipped);
    let b = compile(
        Policy::parse(&other, "q.yaml").unwrap(),
        &key,
        Limits::default(),
    );
    let events = std::fs::read("examples/events.ndjson").unwrap();
    let lines: Vec<&[u8]> = events
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut plain = Scratch::default();
    for entries in [2, 1 << 16] {
        let mut cached = Scratch::with_pseudonym_cache(entries);
        for _ in 0..2 {
            for line in &lines {
                for e in [&a, &b] {
                    let (mut x, mut y) = (Vec::new(), Vec::new());
                    let vx = e.apply(line, &mut x, &mut plain);
                    let vy = e.apply(line, &mut y, &mut cached);
                    assert_eq!(vx.outcome, vy.outcome);
                    assert_eq!(x, y, "{}", String::from_utf8_lossy(line));
                }
            }
        }
        let (hits, misses) = cached.cache_hits_and_misses().unwrap();
        // With room for every value, the second pass is (nearly) all hits.
        assert!(
            misses > 0 && (entries == 2 || hits * 10 >= misses * 8),
            "{entries} entries: {hits} hits, {misses} misses"
        );
    }
    assert_eq!(plain.cache_hits_and_misses(), None);
}

fn scan_counts(e: &CompiledPolicy, input: &str) -> (Outcome, crate::outcome::Detections) {
    let mut out = Vec::new();
    let v = e.apply(input.as_bytes(), &mut out, &mut Scratch::default());
    (v.outcome, v.counts.scan)
}

#[test]
fn kept_strings_are_scanned_and_redacted_by_default() {
    let e = engine(&format!(
        "{BASE}fields:\n  title: keep\n  ctx: keep\n  ctx.ip: ip_prefix\n  uid: pseudonymise\n"
    ));
    let out = run(
        &e,
        r#"{"title":"Hi ana@example.com, card 4111 1111 1111 1111","ctx":{"ana@example.com":"x","q":"call +44 20 7946 0958","n":4111111111111111,"ip":"10.1.2.3"},"uid":"bob@example.com"}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["title"], "Hi [redacted:email], card [redacted:card]");
    // A key holding a match takes its member out; an integer holding one
    // becomes its redaction. Generalised and pseudonymised values are not scanned.
    assert!(v["ctx"].get("ana@example.com").is_none(), "{v}");
    assert_eq!(v["ctx"]["q"], "call [redacted:phone]");
    assert_eq!(v["ctx"]["n"], "[redacted:card]");
    assert_eq!(v["ctx"]["ip"], "10.1.2.0");
    assert_eq!(v["uid"].as_str().unwrap().len(), 64);
    let (_, d) = scan_counts(&e, r#"{"title":"a@b.co 10.0.0.1 c@d.io"}"#);
    assert_eq!(d.get(crate::detect::Kind::Email, ScanMode::Redact), 2);
    assert_eq!(d.get(crate::detect::Kind::Ip, ScanMode::Redact), 1);
    assert_eq!(d.total(), 3);
}

#[test]
fn escaped_strings_are_scanned_after_unescaping() {
    let e = engine(&format!("{BASE}fields:\n  t: keep\n"));
    assert_eq!(
        run(&e, r#"{"t":"x ana\u0040example.com \"q\""}"#).unwrap(),
        r#"{"t":"x [redacted:email] \"q\""}"#
    );
    // Without a match the bytes stay as sent, escapes included.
    assert_eq!(
        run(&e, r#"{"t":"caf\u00e9 \"q\""}"#).unwrap(),
        r#"{"t":"caf\u00e9 \"q\""}"#
    );
}

#[test]
fn kept_strings_are_scanned_with_percent_escapes_decoded() {
    let e = engine(&format!("{BASE}fields:\n  t: keep\n"));
    assert_eq!(
        run(&e, r#"{"t":"https://x.example/?r=ana%40example.com&n=1"}"#).unwrap(),
        r#"{"t":"https://x.example/?r=[redacted:email]&n=1"}"#
    );
    assert_eq!(
        run(
            &e,
            r#"{"t":"caf%C3%A9 4111%201111%201111%201111, 50% off"}"#
        )
        .unwrap(),
        r#"{"t":"caf%C3%A9 [redacted:card], 50% off"}"#
    );
    // `+` is a plus outside a `url` value's query, and nothing is decoded twice.
    assert_eq!(
        run(&e, r#"{"t":"call+020+7946+0958 ana%2540example.com"}"#).unwrap(),
        r#"{"t":"call+020+7946+0958 ana%2540example.com"}"#
    );
}

#[test]
fn scan_modes_per_policy_and_per_field() {
    let doc = r#"{"a":"ana@example.com","b":{"c":"ana@example.com","d":"ana@example.com"}}"#;
    let e = engine(&format!(
        "{BASE}scan: count\nfields:\n  a: keep\n  b: {{ keep: {{ scan: off }} }}\n  b.d: {{ keep: {{ scan: redact }} }}\n"
    ));
    assert_eq!(
        run(&e, doc).unwrap(),
        r#"{"a":"ana@example.com","b":{"c":"ana@example.com","d":"[redacted:email]"}}"#
    );
    let (_, d) = scan_counts(&e, doc);
    assert_eq!(d.get(crate::detect::Kind::Email, ScanMode::Count), 1);
    assert_eq!(d.get(crate::detect::Kind::Email, ScanMode::Redact), 1);
    assert_eq!(d.total(), 2);

    let off = engine(&format!("{BASE}scan: off\nfields:\n  a: keep\n  b: keep\n"));
    assert_eq!(run(&off, doc).unwrap(), doc);
}

#[test]
fn drop_event_drops_with_reason_scan_and_counts_it() {
    let e = engine(&format!(
        "{BASE}fields:\n  a: keep\n  b: {{ keep: {{ scan: drop_event }} }}\n"
    ));
    assert_eq!(
        run(&e, r#"{"a":"ana@example.com","b":"fine"}"#).unwrap(),
        r#"{"a":"[redacted:email]","b":"fine"}"#
    );
    let (outcome, d) = scan_counts(&e, r#"{"a":"x","b":"GB82WEST12345698765432"}"#);
    assert_eq!(outcome, Outcome::Dropped(DropReason::Scan));
    assert_eq!(d.get(crate::detect::Kind::Iban, ScanMode::DropEvent), 1);
    assert_eq!(reason(run(&e, r#"{"b":"GB82WEST12345698765432"}"#)), "scan");
    // The input is still validated whole: bad JSON after the match is rejected.
    assert_eq!(
        reason(run(&e, r#"{"b":"GB82WEST12345698765432","c":}"#)),
        "invalid_json"
    );
}

#[test]
fn consent_is_decided_before_the_scan() {
    let e = engine(&format!(
        "{BASE}scan: drop_event\nconsent:\n  purposes: c\nfields:\n  a: keep\n"
    ));
    assert_eq!(
        reason(run(&e, r#"{"a":"ana@example.com","c":[]}"#)),
        "no_consent"
    );
    assert_eq!(
        reason(run(&e, r#"{"a":"ana@example.com","c":["analytics"]}"#)),
        "scan"
    );
}

#[test]
fn url_paths_and_kept_parameters_are_scanned_as_a_server_reads_them() {
    let e = engine(&format!(
        "{BASE}fields:\n  u: {{ url: {{ keep_query: [q] }} }}\n  c: {{ url: {{ keep_query: [q], scan: count }} }}\n  o: {{ url: {{ scan: off }} }}\n  d: {{ url: {{ keep_query: [q], scan: drop_event }} }}\n"
    ));
    let out = run(
        &e,
        r#"{"u":"https://shop.example/users/ana%40example.com/orders?q=call+020+7946+0958&email=b@c.de#x","c":"/u/ana@example.com","o":"/u/ana@example.com"}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"u":"https://shop.example/users/[redacted:email]/orders?q=call+[redacted:phone]","c":"/u/ana@example.com","o":"/u/ana@example.com"}"#
    );
    let (_, d) = scan_counts(&e, r#"{"u":"/u/ana@example.com","c":"/u/ana@example.com"}"#);
    assert_eq!(d.get(crate::detect::Kind::Email, ScanMode::Redact), 1);
    assert_eq!(d.get(crate::detect::Kind::Email, ScanMode::Count), 1);
    assert_eq!(d.total(), 2);
    // The host names the site: not scanned.
    assert_eq!(
        run(&e, r#"{"u":"http://10.1.2.3:8080/a?q=1"}"#).unwrap(),
        r#"{"u":"http://10.1.2.3:8080/a?q=1"}"#
    );
    let (outcome, d) = scan_counts(
        &e,
        r#"{"d":"https://a.example/x?q=%2B44%2020%207946%200958"}"#,
    );
    assert_eq!(outcome, Outcome::Dropped(DropReason::Scan));
    assert_eq!(d.get(crate::detect::Kind::Phone, ScanMode::DropEvent), 1);
    // A JSON escape and a percent-escape together.
    assert_eq!(
        run(&e, r#"{"u":"/p/ana\u0025\u0034\u0030example.com"}"#).unwrap(),
        r#"{"u":"/p/[redacted:email]"}"#
    );
}

#[test]
fn a_kept_parameter_whose_name_holds_personal_data_is_removed() {
    for scan in ["redact", "off", "count"] {
        let e = engine(&format!(
            "{BASE}scan: {scan}\nfields:\n  u: {{ url: {{ keep_query: [\"utm_*\"] }} }}\n"
        ));
        assert_eq!(
            run(
                &e,
                r#"{"u":"/a?utm_ana@example.com=1&utm_source=x&utm_%20020%207946%200958=2"}"#
            )
            .unwrap(),
            r#"{"u":"/a?utm_source=x"}"#,
            "scan: {scan}"
        );
    }
}

#[test]
fn keys_that_are_data_are_scanned_names_the_policy_spells_are_not() {
    let e = engine(&format!(
        "{BASE}fields:\n  ctx: keep\n  ctx.ip: ip_prefix\n  users.*.plan: keep\n  props.*: pseudonymise\n  whole: keep\n"
    ));
    let out = run(
        &e,
        r#"{"ctx":{"ana@example.com":1,"a":2,"ana%40example.com":3},"users":{"bob@example.com":{"plan":"pro"},"u2":{"plan":"free"}},"props":{"4111111111111111":"x","y":"z"},"whole":{"first":{"203.0.113.7":true},"list":[{"cy@example.com":[1,2]},{"k":"v"}],"last":1}}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ctx"], serde_json::json!({"a": 2}), "{out}");
    assert_eq!(
        v["users"],
        serde_json::json!({"u2": {"plan": "free"}}),
        "{out}"
    );
    assert_eq!(v["props"].as_object().unwrap().len(), 1, "{out}");
    assert!(v["props"]["y"].is_string());
    // Inside a value kept whole, first, middle and last members alike; an
    // object or array emptied that way goes too, as filtering removes what
    // it empties.
    assert_eq!(
        v["whole"],
        serde_json::json!({"list": [{"k": "v"}], "last": 1}),
        "{out}"
    );
    // The removal is counted as a detection, once per key.
    let (_, d) = scan_counts(
        &e,
        r#"{"ctx":{"ana@example.com":1},"whole":{"x":{"b@c.io":1,"z":2}}}"#,
    );
    assert_eq!(d.get(crate::detect::Kind::Email, ScanMode::Redact), 2);
    // Under `count` and `drop_event` the key is counted and stays, or the
    // event goes.
    let count = engine(&format!("{BASE}scan: count\nfields:\n  ctx: keep\n"));
    let out = run(&count, r#"{"ctx":{"ana@example.com":1}}"#).unwrap();
    assert_eq!(out, r#"{"ctx":{"ana@example.com":1}}"#);
    let drop = engine(&format!("{BASE}scan: drop_event\nfields:\n  ctx: keep\n"));
    assert!(run(&drop, r#"{"ctx":{"ana@example.com":1}}"#).is_err());
    assert!(run(&drop, r#"{"ctx":{"ana":1}}"#).is_ok());
}

#[test]
fn integers_are_read_as_their_digits() {
    let e = engine(&format!(
        "{BASE}fields:\n  n: keep\n  m: keep\n  o: keep\n  f: keep\n"
    ));
    let out = run(
        &e,
        r#"{"n":4111111111111111,"m":[1,-4111111111111111,1700000000000],"o":{"a":5500000000000004},"f":4111111111111111.0}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["n"], "[redacted:card]");
    assert_eq!(
        v["m"],
        serde_json::json!([1, "-[redacted:card]", 1700000000000u64])
    );
    assert_eq!(v["o"]["a"], "[redacted:card]");
    // A fraction is a number, not an identifier.
    assert_eq!(v["f"], serde_json::json!(4111111111111111.0));
}

#[test]
fn a_kept_container_emptied_by_the_key_scan_is_removed_one_that_came_empty_stays() {
    let e = engine(&format!("{BASE}fields:\n  d: keep\n  n: keep\n"));
    for (input, want) in [
        (r#"{"d":{"ana@example.com":1},"n":1}"#, r#"{"n":1}"#),
        (
            r#"{"d":{"ana@example.com":1,"x":{"4111111111111111":2}},"n":1}"#,
            r#"{"n":1}"#,
        ),
        (
            r#"{"d":[{"a@b.co":1},{"x":1,"c@d.co":2}],"n":1}"#,
            r#"{"d":[{"x":1}],"n":1}"#,
        ),
        (
            r#"{"d":{"e":{},"f":[],"x":{"a@b.co":1}},"n":1}"#,
            r#"{"d":{"e":{},"f":[]},"n":1}"#,
        ),
        (r#"{"d":[[{"a@b.co":1}]]}"#, r#"{}"#),
        // Whitespace inside the kept value is not kept on this path.
        (
            r#"{"d": { "a@b.co" : 1 , "k" : [ 1 , "x" ] } }"#,
            r#"{"d":{"k":[1,"x"]}}"#,
        ),
    ] {
        assert_eq!(run(&e, input).unwrap(), want, "{input}");
    }
}
