//! Properties over arbitrary events and policies (proptest), and a
//! differential test of the streaming engine against the Value oracle.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value};
use veil::keys::parse_key;
use veil::policy::Policy;
use veil::{Limits, Outcome, Scratch, compile};

mod support;
use support::reference;

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

/// Small key alphabet so generated paths and events meet often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a"),
        Just("b"),
        Just("c"),
        Just("id"),
        Just("a.b"),
        Just("é")
    ]
    .prop_map(str::to_owned)
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z0-9 @.\"\\\\é]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn event() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), json(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Any,
    Each,
}

fn path() -> impl Strategy<Value = Vec<Seg>> {
    let seg = prop_oneof![
        4 => key().prop_map(Seg::Key),
        1 => Just(Seg::Any),
        1 => Just(Seg::Each),
    ];
    (key(), prop::collection::vec(seg, 0..3)).prop_map(|(first, mut rest)| {
        rest.insert(0, Seg::Key(first));
        rest
    })
}

fn path_text(p: &[Seg]) -> String {
    let mut s = String::new();
    for (i, seg) in p.iter().enumerate() {
        match seg {
            Seg::Each => s.push_str("[]"),
            Seg::Any | Seg::Key(_) if i > 0 => s.push('.'),
            _ => {}
        }
        match seg {
            Seg::Key(k) => s.push_str(&format!("\"{k}\"")),
            Seg::Any => s.push('*'),
            Seg::Each => {}
        }
    }
    s
}

/// Policies of `keep` / `drop` / `pseudonymise` entries; invalid combinations are filtered out.
fn policy() -> impl Strategy<Value = (String, Vec<(Vec<Seg>, &'static str)>)> {
    prop::collection::vec(
        (
            path(),
            prop_oneof![Just("keep"), Just("drop"), Just("pseudonymise")],
        ),
        1..5,
    )
    .prop_map(|entries| {
        let mut yaml = "name: p\nversion: 1\npurpose: analytics\nfields:\n".to_owned();
        for (p, a) in &entries {
            yaml.push_str(&format!("  '{}': {a}\n", path_text(p)));
        }
        (yaml, entries)
    })
}

fn matches(pattern: &[Seg], path: &[String]) -> bool {
    // A pattern segment `Each` matches an array index written as "[]".
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(s, p)| match s {
            Seg::Key(k) => k == p,
            Seg::Any => p != "[]",
            Seg::Each => p == "[]",
        })
}

/// Every path from the root to a scalar or empty container.
fn leaf_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(k.clone());
                leaf_paths(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for c in a {
                prefix.push("[]".into());
                leaf_paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn engine(yaml: &str, key: &str) -> Option<veil::CompiledPolicy> {
    let policy = Policy::parse(yaml, "p.yaml").ok()?;
    let key = parse_key("k", key.as_bytes(), Path::new("k.key")).unwrap();
    Some(compile(policy, &key, Limits::default()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Nothing outside the allowlist reaches the output, and the output is JSON.
    #[test]
    fn no_unlisted_path_reaches_the_output((yaml, entries) in policy(), ev in event()) {
        let Some(e) = engine(&yaml, KEY_A) else { return Ok(()) };
        let input = serde_json::to_vec(&ev).unwrap();
        let mut out = Vec::new();
        let v = e.apply(&input, &mut out, &mut Scratch::default());
        prop_assert_eq!(v.outcome, Outcome::Forwarded);
        let output: Value = serde_json::from_slice(&out).expect("output is valid JSON");
        let mut leaves = Vec::new();
        leaf_paths(&output, &mut Vec::new(), &mut leaves);
        let allowing: Vec<&Vec<Seg>> = entries.iter().filter(|(_, a)| *a != "drop").map(|(p, _)| p).collect();
        for leaf in leaves.iter().filter(|l| !l.is_empty()) {
            // Some keep/pseudonymise entry names the leaf or one of its ancestors.
            let allowed = (1..=leaf.len()).any(|n| allowing.iter().any(|p| matches(p, &leaf[..n])));
            prop_assert!(allowed, "{:?} reached the output under\n{}", leaf, yaml);
        }
        // The streaming engine agrees with the Value oracle.
        let expected: Value = serde_json::from_slice(&reference::apply(&e, &input).unwrap()).unwrap();
        prop_assert_eq!(output, expected);
    }

    /// Under `scan: redact` (the default) a planted e-mail address, card,
    /// IBAN, phone number, IP address or JWT never reaches the output from a
    /// kept string, JSON- or percent-escaped or not, inside a kept parent or not; as an object
    /// key it takes its member out. The engine agrees with the
    /// Value oracle, which redacts through the same detector.
    #[test]
    fn planted_values_in_kept_strings_are_redacted(
        secret in prop::sample::select(vec![
            "ana.smith@example.com", "4111 1111 1111 1111", "5500-0000-0000-0004",
            "GB82WEST12345698765432", "+44 20 7946 0958", "(415) 555-2671", "203.0.113.77",
            "2001:db8:85a3::8a2e:370:7334",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        ]),
        before in "[a-z ]{0,8}",
        after in "([ ,.][a-z ,.]{0,7})?",
        escape in any::<bool>(),
        percent in any::<bool>(),
        nested in any::<bool>(),
    ) {
        let e = engine("name: p\nversion: 1\npurpose: analytics\nfields:\n  t: keep\n  c: keep\n  c.x: drop\n", KEY_A).unwrap();
        let mut value = format!("{before} {secret}{after}");
        if percent {
            // The last `@`, `.` or digit written as a percent-escape.
            if let Some(i) = value.rfind(|c: char| c == '@' || c == '.' || c.is_ascii_digit()) {
                value = format!("{}%{:02x}{}", &value[..i], value.as_bytes()[i], &value[i + 1..]);
            }
        }
        let mut text = serde_json::to_string(&value).unwrap();
        if escape {
            // The first digit or `@` written as a \u escape.
            if let Some(i) = text.find(|c: char| c == '@' || c.is_ascii_digit()) {
                let c = text.as_bytes()[i];
                text = format!("{}\\u{:04x}{}", &text[..i], c, &text[i + 1..]);
            }
        }
        let input = if nested {
            format!(r#"{{"c":{{"y":[{text}],"{secret}":1}}}}"#)
        } else {
            format!(r#"{{"t":{text}}}"#)
        };
        let mut out = Vec::new();
        let v = e.apply(input.as_bytes(), &mut out, &mut Scratch::default());
        prop_assert_eq!(v.outcome, Outcome::Forwarded);
        let output: Value = serde_json::from_slice(&out).unwrap();
        let strings = if nested { output["c"]["y"][0].clone() } else { output["t"].clone() };
        let s = strings.as_str().unwrap();
        prop_assert!(!s.contains(secret), "{} in {}", secret, s);
        prop_assert!(!s.contains(&value), "{} in {}", value, s);
        prop_assert!(s.contains("[redacted:"), "{}", s);
        // Nested, the secret is also a key of the kept parent: its member is
        // taken out, a second detection.
        prop_assert_eq!(v.counts.scan.total(), if nested { 2 } else { 1 });
        if nested {
            prop_assert!(output["c"].get(secret).is_none(), "the key reached the output: {}", output);
            prop_assert_eq!(output["c"].as_object().unwrap().len(), 1, "{}", output);
        }
        let expected: Value = serde_json::from_slice(&reference::apply(&e, input.as_bytes()).unwrap()).unwrap();
        prop_assert_eq!(output, expected);
    }

    /// The same planted values in the path of a URL, or in a query parameter
    /// `keep_query` keeps, in a sentence or as the whole segment, spelled with percent-escapes (some or all of
    /// their characters) and `+` for a space in the query: read as a server
    /// reads them, none reaches the output, one detection is counted, and
    /// the engine agrees with the Value oracle.
    #[test]
    fn planted_values_in_urls_are_redacted(
        secret in prop::sample::select(vec![
            "ana.smith@example.com", "4111 1111 1111 1111", "5500-0000-0000-0004",
            "GB82WEST12345698765432", "+44 20 7946 0958", "(415) 555-2671", "203.0.113.77",
            "2001:db8:85a3::8a2e:370:7334",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        ]),
        before in "[a-z ]{0,8}",
        after in "([ ,.][a-z ,.]{0,7})?",
        in_query in any::<bool>(),
        escape_all in any::<bool>(),
        plus in any::<bool>(),
        glued in any::<bool>(),
    ) {
        let e = engine("name: p\nversion: 1\npurpose: analytics\nfields:\n  u: { url: { keep_query: [q] } }\n", KEY_A).unwrap();
        // Glued: the value is the whole path segment or parameter value
        // (`/p/203.0.113.77/z`, `q=203.0.113.77`).
        let value = if glued { format!("{secret}{after}") } else { format!("{before} {secret}{after}") };
        let spelled: String = value
            .bytes()
            .map(|b| match b {
                b' ' if in_query && plus => "+".to_owned(),
                b if !escape_all && (b.is_ascii_alphanumeric() || b"-._~@:,".contains(&b)) => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect();
        let url = if in_query {
            format!("https://h.example/s?x=1&q={spelled}&y=2#top")
        } else {
            format!("https://h.example/p/{spelled}/z?x=1")
        };
        let input = serde_json::to_vec(&serde_json::json!({ "u": url })).unwrap();
        let mut out = Vec::new();
        let v = e.apply(&input, &mut out, &mut Scratch::default());
        prop_assert_eq!(v.outcome, Outcome::Forwarded);
        let output: Value = serde_json::from_slice(&out).unwrap();
        let got = output["u"].as_str().unwrap();
        // Decoded as a server would: `%XX`, and `+` in the query.
        let (path, query) = got.split_once('?').unwrap_or((got, ""));
        let decode = |t: &str, plus_space: bool| -> String {
            let (b, mut out, mut i) = (t.as_bytes(), Vec::new(), 0);
            while i < b.len() {
                let hex = t.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                match (b[i], hex) {
                    (b'%', Some(x)) => { out.push(x); i += 3; }
                    (b'+', _) if plus_space => { out.push(b' '); i += 1; }
                    (c, _) => { out.push(c); i += 1; }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        let read = format!("{}?{}", decode(path, false), decode(query, true));
        prop_assert!(!read.contains(secret), "{} in {} ({})", secret, got, url);
        prop_assert!(got.contains("[redacted:"), "{} ({})", got, url);
        prop_assert!(!got.contains("x=1") && !got.contains('#'), "{}", got);
        prop_assert_eq!(v.counts.scan.total(), 1);
        let expected: Value = serde_json::from_slice(&reference::apply(&e, &input).unwrap()).unwrap();
        prop_assert_eq!(output, expected);
    }

    /// Same key and value: same pseudonym. Another key or purpose: another one.
    #[test]
    fn pseudonyms_are_deterministic_and_keyed(value in "[ -~]{0,40}") {
        let yaml = "name: p\nversion: 1\npurpose: analytics\nfields:\n  id: pseudonymise\n";
        let yaml_m = yaml.replace("analytics", "marketing");
        let (a, b, m) = (engine(yaml, KEY_A).unwrap(), engine(yaml, KEY_B).unwrap(), engine(&yaml_m, KEY_A).unwrap());
        let input = serde_json::to_vec(&serde_json::json!({ "id": value })).unwrap();
        let run = |e: &veil::CompiledPolicy| {
            let mut out = Vec::new();
            e.apply(&input, &mut out, &mut Scratch::default());
            let v: Value = serde_json::from_slice(&out).unwrap();
            v["id"].as_str().unwrap().to_owned()
        };
        prop_assert_eq!(run(&a), run(&a));
        prop_assert_eq!(run(&a).len(), 64);
        prop_assert_ne!(run(&a), run(&b));
        prop_assert_ne!(run(&a), run(&m));
        prop_assert!(!run(&a).contains(&value) || value.len() < 4);
    }

    /// Arbitrary bytes never panic; whatever is forwarded is valid JSON.
    #[test]
    fn arbitrary_bytes_are_an_outcome(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let e = engine("name: p\nversion: 1\npurpose: a\nfields:\n  a: keep\n  b: pseudonymise\n", KEY_A).unwrap();
        let mut out = Vec::new();
        if e.apply(&bytes, &mut out, &mut Scratch::default()).outcome == Outcome::Forwarded {
            serde_json::from_slice::<Value>(&out).expect("valid JSON out");
        } else {
            prop_assert!(out.is_empty());
        }
    }
}

/// The shipped policy on the bundled events: the engine and the oracle agree on every event.
#[test]
fn shipped_policy_matches_the_value_oracle_on_the_example_events() {
    let policy = veil::policy::load(Path::new("config/policy.yaml")).unwrap();
    let key = parse_key("k1", KEY_A.as_bytes(), Path::new("k1.key")).unwrap();
    let e = compile(policy, &key, Limits::default());
    let mut scratch = Scratch::default();
    let mut forwarded = BTreeSet::new();
    for (i, line) in std::fs::read_to_string("examples/events.ndjson")
        .unwrap()
        .lines()
        .enumerate()
    {
        let mut out = Vec::new();
        let v = e.apply(line.as_bytes(), &mut out, &mut scratch);
        let oracle = reference::apply(&e, line.as_bytes());
        match (v.outcome, oracle) {
            (Outcome::Forwarded, Some(expected)) => {
                let got: Value = serde_json::from_slice(&out).unwrap();
                let want: Value = serde_json::from_slice(&expected).unwrap();
                assert_eq!(got, want, "event {i}");
                forwarded.insert(i);
            }
            (Outcome::Dropped(_), None) => {}
            (got, want) => panic!("event {i}: engine {got:?}, oracle {want:?}"),
        }
    }
    assert!(forwarded.len() > 600, "{}", forwarded.len());
}
