//! Fuzz the engine under several policies (the first input byte picks one;
//! the rest is the event) and check what a fuzzer can check on any input:
//!
//! - nothing panics; a rejected or dropped event writes nothing;
//! - a forwarded event is a JSON object, the same with a reused and a fresh
//!   `Scratch` (no state leaks between events);
//! - every value in the output sits where the policy allows one: its
//!   nearest listed place is `keep`, or a transform at the value itself;
//! - the shape invariant of issue 9: on the way to every output value, each
//!   place the policy has paths beneath is an object where they name keys
//!   and an array where they use `[]`;
//! - subject identifiers appear only as pseudonyms (or `null`);
//! - every transformed value is a possible result of its transform (host
//!   bits zero, no fragment or unlisted query parameter, a truncated UTC
//!   timestamp, a bucket edge or multiple, no redact match left).
//!
//! The policy semantics come from the independent oracle of the
//! differential test (`tests/support/oracle/mod.rs`); the policies are read with
//! veil's parser and translated into the oracle's model.
//!
//! Run from the crate root (stable toolchain; cargo-fuzz needs nightly
//! flags), with the seeds and the dictionary (docs/testing.md):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run engine fuzz/corpus/engine fuzz/seeds/engine -- -dict=fuzz/engine.dict -max_total_time=60`

#![no_main]

#[path = "../../tests/support/oracle/mod.rs"]
mod oracle;

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oracle::{Act, Cond, Dropped, Fields, Model, Norm, Oracle, Rule, Seg, Step, Unit};
use serde_json::Value;
use veil::policy::{
    Action, Buckets, FieldPath, FieldSet, Normalise, Policy, Scalar, Segment, TimeUnit,
};
use veil::{CompiledPolicy, Limits, Outcome, Scratch, compile};

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The shipped policy, then three written to meet fuzzed events often.
const POLICIES: &[&str] = &[
    include_str!("../../config/policy.yaml"),
    // Kept parents with child transforms, wildcards, `[]`, subjects.
    r#"
name: parents
version: 1
purpose: analytics
subject: [userId, context.traits.email, "device.*.id"]
fields:
  type: keep
  userId: pseudonymise
  sentAt: { truncate_time: hour }
  context: keep
  context.ip: { ip_prefix: { v4: 24, v6: 48 } }
  context.traits: drop
  context.traits.email: { pseudonymise: { normalise: [trim, lowercase] } }
  context.traits.plan: keep
  context.page.url: { url: { keep_query: ["utm_*"] } }
  device: keep
  device.*.id: pseudonymise
  device.*.secret: drop
  properties: keep
  properties.products[].sku: keep
  properties.products[].email: drop
  properties.products[].*.card: drop
  properties.age: { bucket: { edges: [0, 18, 25, 35, 50, 65] } }
  properties.note: { redact: { patterns: ['\d{6,}', '[^@\s]+@[^@\s]+'] } }
"#,
    // Consent and rules.
    r#"
name: rules
version: 1
purpose: analytics
consent: { purposes: context.consent.purposes, opt_out: context.consent.gpc }
subject: [userId, anonymousId]
pseudonyms: { encoding: base64url, key_id_prefix: true, truncate_bytes: 16 }
fields:
  type: keep
  event: keep
  userId: pseudonymise
  anonymousId: pseudonymise
  context: keep
  context.consent: drop
  context.ip: ip_prefix
rules:
  - when: { type: identify }
    fields: { traits: keep, traits.email: drop, userId: pseudonymise }
  - when: { type: track, event: [Order Completed, Order Refunded] }
    drop: true
  - when: { type: page, context.page.n: [1, true, null] }
    fields:
      context.page.url: { url: { keep_query: [q] } }
      properties: keep
      properties.items[][].id: pseudonymise
"#,
    // A four-key alphabet, so that random events collide with it.
    r#"
name: small
version: 1
purpose: analytics
subject: [b]
fields:
  a: keep
  a.b: { ip_prefix: { v4: 16, v6: 32 } }
  a.c[]: { truncate_time: minute }
  b: pseudonymise
  c[]: keep
  c[].a: { url: { keep_query: ["a*"] } }
  c[][].b: { bucket: { width: 10 } }
  d: drop
  d.*: keep
  d.*.a: drop
  d.b[]: keep
  "*": drop
"#,
];

struct Case {
    engine: CompiledPolicy,
    oracle: Oracle,
}

fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let key = veil::keys::parse_key("k1", KEY_HEX.as_bytes(), Path::new("k1.key")).unwrap();
        let bytes = hex::decode(KEY_HEX).unwrap();
        POLICIES
            .iter()
            .map(|yaml| {
                let policy = Policy::parse(yaml, "fuzz.yaml").expect("fuzz policies compile");
                let oracle = Oracle::new(model(&policy), "k1", &bytes);
                Case {
                    engine: compile(policy, &key, Limits::default()),
                    oracle,
                }
            })
            .collect()
    })
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let case = &cases()[usize::from(pick) % POLICIES.len()];
    let mut out = b"prefix".to_vec();
    let verdict = SCRATCH.with(|s| case.engine.apply(input, &mut out, &mut s.borrow_mut()));
    let mut fresh = b"prefix".to_vec();
    let again = case
        .engine
        .apply(input, &mut fresh, &mut Scratch::default());
    assert_eq!(verdict, again, "a reused Scratch changes the verdict");
    assert_eq!(out, fresh, "a reused Scratch changes the output");
    assert!(
        out.starts_with(b"prefix"),
        "the caller's bytes were changed"
    );
    if verdict.outcome != Outcome::Forwarded {
        assert_eq!(out, b"prefix", "a withheld event wrote output");
        return;
    }
    // The grammar first (numbers beyond f64, such as `1e400`, are valid JSON
    // that veil keeps as written), then the value where serde_json can hold it.
    serde_json::from_slice::<serde::de::IgnoredAny>(&out[6..]).expect("forwarded output is JSON");
    assert_eq!(out.get(6), Some(&b'{'), "forwarded output is an object");
    let Ok(output) = serde_json::from_slice::<Value>(&out[6..]) else {
        return;
    };
    // The allowlist that applied, when serde_json reads the event as veil did.
    let event: Option<Value> = serde_json::from_slice(input).ok();
    // (serde_json reads numbers as f64 where veil compares rule conditions
    // exactly, so a routing difference is not a finding here: the
    // differential test checks routing. Every value must still be allowed by
    // some allowlist of the policy.)
    if output.as_object().is_some_and(|o| o.is_empty()) {
        return; // nothing left: `{}`
    }
    let routed = match event.as_ref().map(|e| case.oracle.fields_for(e)) {
        Some(Err(d @ (Dropped::NoConsent | Dropped::OptedOut))) => {
            panic!("veil forwarded an event without consent ({d:?})")
        }
        Some(Ok(f)) => Some(f),
        _ => None,
    };
    let mut path = Vec::new();
    if let Some(f) = routed
        && check(&case.oracle, &[f], &mut path, &output).is_ok()
    {
        return;
    }
    let mut path = Vec::new();
    if let Err(why) = check(&case.oracle, &case.oracle.all_fields(), &mut path, &output) {
        panic!("{why}\n  output: {output}");
    }
});

/// Every value in `v` (at `path`) must be allowed by one of the allowlists `sets`.
fn check(o: &Oracle, sets: &[&Fields], path: &mut Vec<Step>, v: &Value) -> Result<(), String> {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                path.push(Step::K(k.clone()));
                check(o, sets, path, x)?;
                path.pop();
            }
            Ok(())
        }
        Value::Array(a) if !a.is_empty() => {
            path.push(Step::I);
            for x in a {
                check(o, sets, path, x)?;
            }
            path.pop();
            Ok(())
        }
        leaf => {
            let mut why = String::new();
            for f in sets {
                match allowed(o, f, path, leaf) {
                    Ok(()) => return Ok(()),
                    Err(e) => why = e,
                }
            }
            Err(format!("{} = {leaf}: {why}", steps(path)))
        }
    }
}

fn allowed(o: &Oracle, f: &Fields, path: &[Step], leaf: &Value) -> Result<(), String> {
    // Shape: each container on the way has the shape the paths beneath expect.
    for n in 0..path.len() {
        let (keys, each) = o.expects(f, &path[..n]);
        let fits = match path[n] {
            Step::K(_) => keys,
            Step::I => each,
        };
        if (keys || each) && !fits {
            return Err(format!(
                "the shape at {} differs from the policy's",
                steps(&path[..n])
            ));
        }
    }
    let (keys, each) = o.expects(f, path);
    let fits = match leaf {
        Value::Object(_) => keys,
        Value::Array(_) => each,
        _ => false,
    };
    if (keys || each) && !fits {
        return Err("a scalar where the policy has paths beneath".into());
    }
    // Allowlist: the nearest listed place decides.
    let decision = (0..=path.len())
        .rev()
        .find_map(|n| o.decide(f, &path[..n]).map(|a| (n, a)));
    match decision {
        Some((_, Act::Keep)) => {}
        Some((n, a)) if a.is_transform() && n == path.len() => {
            oracle::check_domain(a, leaf)?;
            if matches!(a, Act::Pseudo(_))
                && !leaf.is_null()
                && !leaf.as_str().is_some_and(|s| o.looks_like_pseudonym(s))
            {
                return Err("not a pseudonym".into());
            }
        }
        _ => return Err("not allowed by the policy".into()),
    }
    if o.is_subject(path)
        && !leaf.is_null()
        && !leaf.as_str().is_some_and(|s| o.looks_like_pseudonym(s))
    {
        return Err("a subject identifier in clear".into());
    }
    Ok(())
}

fn steps(p: &[Step]) -> String {
    p.iter()
        .map(|s| match s {
            Step::K(k) => format!(".{k}"),
            Step::I => "[]".into(),
        })
        .collect()
}

// --------------------------------------- veil's parsed policy as the oracle's model

fn segs(p: &FieldPath) -> Vec<Seg> {
    p.0.iter()
        .map(|s| match s {
            Segment::Key(k) => Seg::Key(k.clone()),
            Segment::Any => Seg::Any,
            Segment::Each => Seg::Each,
        })
        .collect()
}

fn keys(p: &FieldPath) -> Vec<String> {
    segs(p)
        .into_iter()
        .map(|s| match s {
            Seg::Key(k) => k,
            _ => panic!("exact paths only"),
        })
        .collect()
}

fn act(a: &Action) -> Act {
    match a {
        Action::Keep => Act::Keep,
        Action::Drop => Act::Drop,
        Action::Pseudonymise { normalise } => Act::Pseudo(
            normalise
                .iter()
                .map(|n| match n {
                    Normalise::Trim => Norm::Trim,
                    Normalise::Lowercase => Norm::Lower,
                })
                .collect(),
        ),
        Action::IpPrefix { v4, v6 } => Act::Ip { v4: *v4, v6: *v6 },
        Action::Url { keep_query, .. } => Act::Url(keep_query.clone()),
        Action::TruncateTime(u) => Act::Time(match u {
            TimeUnit::Second => Unit::Second,
            TimeUnit::Minute => Unit::Minute,
            TimeUnit::Hour => Unit::Hour,
            TimeUnit::Day => Unit::Day,
        }),
        Action::Bucket(Buckets::Edges(e)) => Act::Edges(e.clone()),
        Action::Bucket(Buckets::Width(w)) => Act::Width(*w),
        Action::Redact {
            patterns,
            replacement,
        } => Act::Redact(
            patterns.iter().map(|r| r.as_str().to_owned()).collect(),
            replacement.clone(),
        ),
    }
}

fn fields(f: &FieldSet) -> Fields {
    Fields(
        f.entries
            .iter()
            .map(|e| (segs(&e.path), act(&e.action)))
            .collect(),
    )
}

fn model(p: &Policy) -> Model {
    Model {
        purpose: p.purpose.clone(),
        // The fuzzed policies' consent is a purposes list (with an opt-out);
        // the oracle models no other check.
        consent: p.consent.as_ref().map(|c| {
            assert!(c.tcf.is_none() && c.opt_out_header.is_none(), "not modelled");
            let purposes = c.purposes.as_ref().expect("a purposes path");
            (keys(purposes), c.opt_out.as_ref().map(keys))
        }),
        subject: p.subject.iter().map(segs).collect(),
        base64: p.pseudonyms.encoding == veil::policy::Encoding::Base64url,
        key_id_prefix: p.pseudonyms.key_id_prefix,
        truncate_bytes: usize::from(p.pseudonyms.truncate_bytes),
        fields: p.fields.as_ref().map(fields),
        rules: p
            .rules
            .iter()
            .map(|r| Rule {
                when: r
                    .when
                    .iter()
                    .map(|c| {
                        let any = c
                            .any_of
                            .iter()
                            .map(|s| match s {
                                Scalar::Null => Cond::Null,
                                Scalar::Bool(b) => Cond::Bool(*b),
                                Scalar::Number(n) => Cond::Num(n.as_f64()),
                                Scalar::String(s) => Cond::Str(s.clone()),
                            })
                            .collect();
                        (keys(&c.path), any)
                    })
                    .collect(),
                fields: r.fields.as_ref().map(fields),
                drop: r.drop,
            })
            .collect(),
    }
}
