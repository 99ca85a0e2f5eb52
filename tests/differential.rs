//! Differential test: veil's engine against an independent oracle
//! (`tests/support/oracle.rs`, written from `docs/policy.md`), over random
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
//! Cases: `DEFAULT_CASES` in CI (about a minute in debug on 2 cores);
//! `PROPTEST_CASES=200000 cargo test --release --test differential` for a
//! release run. `VEIL_DIFF_COLLECT=1` reports every distinct kind of failure
//! (smallest example of each) instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{Map, Value};
use veil::keys::parse_key;
use veil::policy::Policy;
use veil::{DropReason, Limits, Outcome, Scratch, compile};

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{
    Act, Cond, Dropped, Fields, Forbidden, Model, Norm, Oracle, Rule, Seg, Unit, Verdict,
};

/// Cases per CI run: about a minute in a debug build on the 2-core CI machine.
const DEFAULT_CASES: u32 = 3000;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A small alphabet, shared by policies and events, so they collide often.
const KEYS: &[&str] = &["a", "b", "c", "id", "ip", "a.b", "é"];

// ------------------------------------------------------------- policies

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

fn pattern() -> impl Strategy<Value = Vec<Seg>> {
    let first = prop_oneof![6 => key().prop_map(Seg::Key), 1 => Just(Seg::Any)];
    let seg = prop_oneof![
        5 => key().prop_map(Seg::Key),
        1 => Just(Seg::Any),
        2 => Just(Seg::Each),
    ];
    (first, prop::collection::vec(seg, 0..3)).prop_map(|(f, mut rest)| {
        rest.insert(0, f);
        rest
    })
}

fn action() -> impl Strategy<Value = Act> {
    let norm = prop::sample::subsequence(vec![Norm::Trim, Norm::Lower], 0..=2);
    prop_oneof![
        6 => Just(Act::Keep),
        3 => Just(Act::Drop),
        4 => norm.prop_map(Act::Pseudo),
        2 => (prop::sample::select(vec![8u8, 16, 24, 24, 24, 31, 32]), prop::sample::select(vec![32u8, 48, 48, 48, 64, 127, 128]))
            .prop_map(|(v4, v6)| Act::Ip { v4, v6 }),
        2 => prop::sample::select(vec![
            vec!["utm_*".to_owned()],
            vec![],
            vec!["q".to_owned(), "utm_?ource".to_owned()],
            vec!["*".to_owned()],
        ])
        .prop_map(Act::Url),
        1 => prop::sample::select(vec![Unit::Second, Unit::Minute, Unit::Hour, Unit::Day]).prop_map(Act::Time),
        1 => prop::sample::select(vec![vec![0.0, 18.0, 25.0, 35.0], vec![-1e6, 0.0, 1e6]]).prop_map(Act::Edges),
        1 => prop::sample::select(vec![10.0, 2.5, 1000.0, 60.0, 10.0, 1.0, 0.5]).prop_map(Act::Width),
        1 => (
            prop::sample::subsequence(vec![r"\d{3,}", "[a-z]+@[a-z.]+", "p[0-9]+", "zzz"], 1..=2),
            prop::sample::select(vec!["[redacted]", "X"]),
        )
            .prop_map(|(p, r)| Act::Redact(p.into_iter().map(str::to_owned).collect(), r.to_owned())),
    ]
}

/// Whether some place named by `upper` is a proper ancestor of one named by `lower`.
fn overlaps_below(upper: &[Seg], lower: &[Seg]) -> bool {
    lower.len() > upper.len()
        && upper.iter().zip(lower).all(|(u, l)| match (u, l) {
            (Seg::Key(a), Seg::Key(b)) => a == b,
            (Seg::Each, Seg::Each) => true,
            (Seg::Any, Seg::Key(_)) | (Seg::Key(_), Seg::Any) | (Seg::Any, Seg::Any) => true,
            _ => false,
        })
}

/// Entries in families: a parent (mostly `keep` or `drop`) and children
/// below it, so that kept parents with child transforms are common. What the
/// docs call invalid (the same place twice, an entry below a transformed
/// value) is left out, so that most generated policies compile.
fn fields() -> impl Strategy<Value = Fields> {
    let tail = prop::collection::vec(
        prop_oneof![
            5 => key().prop_map(Seg::Key),
            1 => Just(Seg::Any),
            2 => Just(Seg::Each),
        ],
        1..3,
    );
    let parent_action = prop_oneof![4 => Just(Act::Keep), 1 => Just(Act::Drop), 1 => action()];
    let family = (
        pattern(),
        parent_action,
        prop::collection::vec((tail, action()), 0..4),
    );
    prop::collection::vec(family, 1..4).prop_map(|families| {
        let mut raw = Vec::new();
        for (parent, a, children) in families {
            for (t, ca) in children {
                let mut p = parent.clone();
                p.extend(t);
                raw.push((p, ca));
            }
            raw.push((parent, a));
        }
        let mut out: Vec<(Vec<Seg>, Act)> = Vec::new();
        for (p, a) in raw {
            let clash = out.iter().any(|(q, b)| {
                *q == p
                    || (b.is_transform() && overlaps_below(q, &p))
                    || (a.is_transform() && overlaps_below(&p, q))
            });
            if !clash {
                out.push((p, a));
            }
        }
        Fields(out)
    })
}

fn cond() -> impl Strategy<Value = Cond> {
    prop::sample::select(vec![
        Cond::Str("track".into()),
        Cond::Str("page".into()),
        Cond::Num(1.0),
        Cond::Bool(true),
        Cond::Null,
    ])
}

fn rule() -> impl Strategy<Value = Rule> {
    let when_path = prop::sample::select(vec![
        vec!["type".to_owned()],
        vec!["a".to_owned()],
        vec!["c".to_owned(), "b".to_owned()],
    ]);
    (
        prop::collection::vec((when_path, prop::collection::vec(cond(), 1..3)), 1..3),
        0..3u8,
        fields(),
    )
        .prop_map(|(when, kind, f)| {
            let mut seen = BTreeSet::new();
            let when = when
                .into_iter()
                .filter(|(p, _)| seen.insert(p.clone()))
                .collect();
            Rule {
                when,
                fields: (kind == 1).then_some(f),
                drop: kind == 0,
            }
        })
}

fn model() -> impl Strategy<Value = Model> {
    let consent = prop::option::weighted(
        0.25,
        (
            prop::sample::select(vec![
                vec!["consent".to_owned(), "p".to_owned()],
                vec!["a".to_owned(), "p".to_owned()],
                vec!["c".to_owned()],
            ]),
            prop::option::of(prop::sample::select(vec![
                vec!["consent".to_owned(), "o".to_owned()],
                vec!["b".to_owned()],
            ])),
        ),
    );
    let subject = prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec(pattern(), 1..3),
    ];
    let rules = prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(rule(), 1..3)];
    (
        consent,
        subject,
        (any::<u8>(), 16usize..=32),
        fields(),
        rules,
        any::<bool>(),
    )
        .prop_map(
            |(consent, subject, (opts, truncate), f, rules, no_default)| {
                let fields = if rules.is_empty() || !no_default {
                    Some(f)
                } else {
                    None
                };
                let mut rules = rules;
                if fields.is_none() {
                    // A rule without fields needs the top-level ones.
                    for r in &mut rules {
                        if !r.drop && r.fields.is_none() {
                            r.drop = true;
                        }
                    }
                }
                Model {
                    purpose: "analytics".into(),
                    consent,
                    subject,
                    base64: opts % 5 == 0,
                    key_id_prefix: opts % 7 == 0,
                    truncate_bytes: truncate,
                    fields,
                    rules,
                }
            },
        )
}

// --------------------------------------------------------------- events

/// A scalar or empty container; numbered when the event is built, so that
/// every marker value is unique in its event.
#[derive(Debug, Clone)]
enum Leaf {
    Null,
    Bool(bool),
    Small(u8),
    Marker(u8),
    Email(u8),
    Ip(u8),
    Url(u8),
    Time(u8),
    Cond(u8),
    Purposes(u8),
    EmptyObj,
    EmptyArr,
}

#[derive(Debug, Clone)]
enum Shape {
    Leaf(Leaf),
    Obj(Vec<(String, Shape)>),
    Arr(Vec<Shape>),
}

/// How an injected path's shape is made to disagree with the policy.
#[derive(Debug, Clone)]
enum Perturb {
    /// `x` becomes `[x]`.
    Wrap,
    /// `[x]` becomes `[[x]]`.
    Nest,
    /// `[x, y]` becomes `{"a": x, "b": y}`.
    ToObject,
    /// The value becomes a scalar.
    ToScalar(Leaf),
    /// The value becomes `{}` or `[]`.
    Empty,
}

/// What a path of the policy is for, so the injected value fits it (mostly).
#[derive(Debug, Clone)]
enum Flavour {
    Action(Act),
    Subject,
    Purposes,
    OptOut,
    Condition,
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        1 => Just(Leaf::Null),
        1 => any::<bool>().prop_map(Leaf::Bool),
        1 => any::<u8>().prop_map(Leaf::Small),
        3 => any::<u8>().prop_map(Leaf::Marker),
        2 => any::<u8>().prop_map(Leaf::Email),
        2 => any::<u8>().prop_map(Leaf::Ip),
        2 => any::<u8>().prop_map(Leaf::Url),
        2 => any::<u8>().prop_map(Leaf::Time),
        1 => any::<u8>().prop_map(Leaf::Cond),
        1 => Just(Leaf::EmptyObj),
        1 => Just(Leaf::EmptyArr),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    leaf()
        .prop_map(Shape::Leaf)
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec((key(), inner.clone()), 1..4)
                    .prop_map(|m| Shape::Obj(dedup(m))),
                prop::collection::vec(inner, 1..3).prop_map(Shape::Arr),
            ]
        })
}

fn dedup(m: Vec<(String, Shape)>) -> Vec<(String, Shape)> {
    let mut seen = BTreeSet::new();
    m.into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect()
}

fn perturb() -> impl Strategy<Value = Perturb> {
    prop_oneof![
        Just(Perturb::Wrap),
        Just(Perturb::Nest),
        Just(Perturb::ToObject),
        leaf().prop_map(Perturb::ToScalar),
        Just(Perturb::Empty),
    ]
}

#[derive(Debug, Clone)]
struct Injection {
    path: Index,
    choices: Vec<u8>,
    perturb: Option<(u8, Perturb)>,
    pick: u8,
    other: Shape,
}

fn injection() -> impl Strategy<Value = Injection> {
    (
        any::<Index>(),
        prop::collection::vec(any::<u8>(), 4),
        prop::option::weighted(0.5, (1..5u8, perturb())),
        any::<u8>(),
        shape(),
    )
        .prop_map(|(path, choices, perturb, pick, other)| Injection {
            path,
            choices,
            perturb,
            pick,
            other,
        })
}

/// The paths an event should meet: every entry, subject, consent and condition path.
fn policy_paths(m: &Model) -> Vec<(Vec<Seg>, Flavour)> {
    let exact = |p: &Vec<String>| p.iter().map(|k| Seg::Key(k.clone())).collect::<Vec<_>>();
    let mut out = Vec::new();
    for f in m
        .fields
        .iter()
        .chain(m.rules.iter().filter_map(|r| r.fields.as_ref()))
    {
        out.extend(
            f.0.iter()
                .map(|(p, a)| (p.clone(), Flavour::Action(a.clone()))),
        );
    }
    out.extend(m.subject.iter().map(|p| (p.clone(), Flavour::Subject)));
    if let Some((p, o)) = &m.consent {
        out.push((exact(p), Flavour::Purposes));
        if let Some(o) = o {
            out.push((exact(o), Flavour::OptOut));
        }
    }
    for r in &m.rules {
        out.extend(r.when.iter().map(|(p, _)| (exact(p), Flavour::Condition)));
    }
    out
}

/// The value injected at a policy path: fitting its flavour three times in four.
fn fitting(flavour: &Flavour, pick: u8, other: &Shape) -> Shape {
    if pick % 4 == 0 {
        return other.clone();
    }
    let p = pick / 4;
    let general = [
        Leaf::Marker(p),
        Leaf::Email(p),
        Leaf::Ip(p),
        Leaf::Url(p),
        Leaf::Time(p),
        Leaf::Bool(p % 2 == 0),
        Leaf::Null,
        Leaf::Small(p),
    ];
    let l = match flavour {
        Flavour::Action(Act::Ip { .. }) => Leaf::Ip(p),
        Flavour::Action(Act::Url(_)) => Leaf::Url(p),
        Flavour::Action(Act::Time(_)) => Leaf::Time(p),
        Flavour::Action(Act::Edges(_) | Act::Width(_)) => {
            if p % 3 == 0 {
                Leaf::Small(p)
            } else {
                Leaf::Marker(p)
            }
        }
        Flavour::Purposes => Leaf::Purposes(p),
        Flavour::OptOut => [
            Leaf::Bool(true),
            Leaf::Bool(false),
            Leaf::Null,
            Leaf::Small(p),
        ][usize::from(p % 4)]
        .clone(),
        Flavour::Condition => Leaf::Cond(p),
        _ => general[usize::from(p) % general.len()].clone(),
    };
    Shape::Leaf(l)
}

/// Write `value` at the place `segs` names (choosing keys for `*` and
/// elements for `[]` by `choices`), creating or reshaping containers on the
/// way, then apply `perturb` to the value at that depth of the route.
fn inject(
    node: &mut Shape,
    segs: &[Seg],
    depth: usize,
    choices: &[u8],
    perturb: &Option<(u8, Perturb)>,
    value: &Shape,
) {
    match segs.split_first() {
        None => *node = value.clone(),
        Some((seg, rest)) => {
            let c = usize::from(choices.get(depth).copied().unwrap_or(0));
            match seg {
                Seg::Key(_) | Seg::Any => {
                    let k = match seg {
                        Seg::Key(k) => k.clone(),
                        _ => KEYS[c % KEYS.len()].to_owned(),
                    };
                    if !matches!(node, Shape::Obj(_)) {
                        *node = Shape::Obj(Vec::new());
                    }
                    let Shape::Obj(m) = node else { unreachable!() };
                    let i = match m.iter().position(|(mk, _)| *mk == k) {
                        Some(i) => i,
                        None => {
                            m.push((k, Shape::Leaf(Leaf::Null)));
                            m.len() - 1
                        }
                    };
                    inject(&mut m[i].1, rest, depth + 1, choices, perturb, value);
                }
                Seg::Each => {
                    if !matches!(node, Shape::Arr(a) if !a.is_empty()) {
                        *node = Shape::Arr(vec![Shape::Leaf(Leaf::Null)]);
                    }
                    let Shape::Arr(a) = node else { unreachable!() };
                    if c % 3 == 0 {
                        a.push(Shape::Leaf(Leaf::Null));
                    }
                    let i = c % a.len();
                    inject(&mut a[i], rest, depth + 1, choices, perturb, value);
                }
            }
        }
    }
    if let Some((level, p)) = perturb
        && usize::from(*level) == depth
    {
        let taken = std::mem::replace(node, Shape::Leaf(Leaf::Null));
        *node = match (p, taken) {
            (Perturb::Wrap, x) => Shape::Arr(vec![x]),
            (Perturb::Nest, Shape::Arr(a)) => {
                Shape::Arr(a.into_iter().map(|x| Shape::Arr(vec![x])).collect())
            }
            (Perturb::Nest, x) => Shape::Arr(vec![Shape::Arr(vec![x])]),
            (Perturb::ToObject, Shape::Arr(a)) => Shape::Obj(
                a.into_iter()
                    .zip(KEYS)
                    .map(|(x, k)| ((*k).to_owned(), x))
                    .collect(),
            ),
            (Perturb::ToObject, x) => Shape::Obj(vec![("a".to_owned(), x)]),
            (Perturb::ToScalar(l), _) => Shape::Leaf(l.clone()),
            (Perturb::Empty, Shape::Arr(_)) => Shape::Leaf(Leaf::EmptyArr),
            (Perturb::Empty, _) => Shape::Leaf(Leaf::EmptyObj),
        };
    }
}

/// An event: random members, then values injected at the policy's paths.
#[derive(Debug, Clone)]
struct Event {
    /// Purposes written at the consent path first, if the policy reads consent.
    consent: Option<u8>,
    base: Vec<(String, Shape)>,
    injections: Vec<Injection>,
    escape: bool,
}

fn event() -> impl Strategy<Value = Event> {
    (
        prop::option::weighted(0.8, any::<u8>()),
        prop::collection::vec((key(), shape()), 0..4),
        prop::collection::vec(injection(), 0..5),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(consent, base, injections, escape)| Event {
            consent,
            base: dedup(base),
            injections,
            escape,
        })
}

impl Event {
    fn shape(&self, m: &Model) -> Shape {
        let paths = policy_paths(m);
        let mut root = Shape::Obj(self.base.clone());
        if let (Some(p), Some((path, _))) = (self.consent, &m.consent) {
            let segs: Vec<Seg> = path.iter().map(|k| Seg::Key(k.clone())).collect();
            inject(
                &mut root,
                &segs,
                0,
                &[],
                &None,
                &Shape::Leaf(Leaf::Purposes(p % 2 * 5)),
            );
        }
        if !paths.is_empty() {
            for inj in &self.injections {
                let (segs, flavour) = &paths[inj.path.index(paths.len())];
                let value = fitting(flavour, inj.pick, &inj.other);
                inject(&mut root, segs, 0, &inj.choices, &inj.perturb, &value);
            }
        }
        root
    }
}

fn leaf_value(l: &Leaf, id: u32, markers: &mut BTreeSet<String>) -> Value {
    let s = |t: String, markers: &mut BTreeSet<String>| {
        let v = Value::String(t);
        markers.insert(v.to_string());
        v
    };
    let o = (id % 250) as u8; // an octet unique within an event of < 250 scalars
    match l {
        Leaf::Null => Value::Null,
        Leaf::Bool(b) => Value::Bool(*b),
        Leaf::Small(p) => {
            [0.0, 18.0, 25.0, 10.0, -1.0, 35.0, 12.5, -0.5][usize::from(*p) % 8].into()
        }
        Leaf::Marker(p) => match p % 5 {
            0 | 1 => {
                let n = i64::from(id) * 1000 + 1;
                let v = Value::from(if p % 2 == 0 { n } else { -n });
                markers.insert(v.to_string());
                v
            }
            2 => s(format!("s{id}"), markers),
            3 => s(format!("  Mixed Case S{id} "), markers),
            _ => s(format!("call 0{id}23456 é☕"), markers),
        },
        Leaf::Email(p) => match p % 2 {
            0 => s(format!("farid.mueller{id}@example.com"), markers),
            _ => s(format!(" Ana{id}@Example.COM "), markers),
        },
        Leaf::Ip(p) => {
            let v4 = u32::from_be_bytes([198, 51, o, 77]);
            let t = !v4;
            s(
                match p % 12 {
                    0 => format!("198.51.{o}.77"),
                    1 => format!("10.9.{o}.0"),
                    2 => format!("2001:db8:{id:x}:8d3::1"),
                    3 => format!("::ffff:198.51.{o}.77"),
                    4 => format!("::198.51.{o}.77"),
                    5 => format!("2002:c633:{o:02x}4d::1"),
                    6 => format!("64:ff9b::198.51.{o}.77"),
                    7 => format!("2001:0:4136:e378:8000:63bf:{:x}:{:x}", t >> 16, t & 0xffff),
                    8 => format!("198.51.{o}.77/24"),
                    9 => format!("not-an-ip-{id}"),
                    10 => format!("fe80::{id:x}%eth0"),
                    _ => format!("2001:db8::{id:x}"),
                },
                markers,
            )
        }
        Leaf::Url(p) => s(
            match p % 15 {
                0 => format!(
                    "https://shop.example.com/p{id}?utm_source=a{id}&email=x{id}%40example.com#f{id}"
                ),
                1 => format!("http://ana:pw{id}@h.example/p{id}?q=1;utm_medium=b{id}"),
                2 => format!("https://h.example/p{id}"),
                3 => format!("/cart/{id}?utm%5Fsource=x&email=a{id}@b.c;utm_c=1"),
                4 => format!("/p{id}"),
                5 => format!("https://h.example/p{id}?utm_source=a{id}"),
                6 => format!("farid.mueller{id}@example.org"),
                7 => format!("Farid Mueller +44 7764{id:06}"),
                8 => format!("?utm_source=a{id}&email=x"),
                9 => format!("mailto:a{id}@example.com"),
                10 => format!("//evil.example/p{id}?utm_a=1"),
                11 => format!("data:text/plain,{id}"),
                12 => format!("ftp://h.example/p{id}"),
                13 => format!("cart/{id}"),
                _ => format!("javascript:alert({id})"),
            },
            markers,
        ),
        Leaf::Time(p) => {
            if p % 9 == 3 {
                // Issue 9's timestamp: year 10000 in UTC. Not unique, so not a marker.
                return Value::String("9999-12-31T23:59:59-01:00".into());
            }
            let (mm, ss) = (1 + id / 59 % 59, 1 + id % 59);
            s(
                match p % 9 {
                    0 => format!("2026-11-05T23:47:12.{id:06}+02:00"),
                    1 => format!("2026-11-06T00:{mm:02}:12.{id:03}Z"),
                    2 => format!("2025-01-02T03:{mm:02}:{ss:02}Z"),
                    4 => format!("0000-01-01T00:30:00.{id}+01:00"),
                    5 => format!("yesterday {id}"),
                    6 => format!("2026-02-29T00:00:00.{id}Z"),
                    7 => format!("2026-11-05T10:00:00.{id}"),
                    _ => format!("2024-02-29T23:59:59.{id}-23:59"),
                },
                markers,
            )
        }
        Leaf::Cond(p) => match p % 6 {
            0 => "track".into(),
            1 => "page".into(),
            2 => 1.into(),
            3 => serde_json::json!(1.0),
            4 => true.into(),
            _ => Value::Null,
        },
        Leaf::Purposes(p) => match p % 6 {
            0 => serde_json::json!(["analytics"]),
            1 => serde_json::json!(["marketing", "analytics"]),
            2 => serde_json::json!(["marketing"]),
            3 => serde_json::json!("analytics"),
            4 => serde_json::json!([]),
            _ => serde_json::json!([null, "analytics"]),
        },
        Leaf::EmptyObj => Value::Object(Map::new()),
        Leaf::EmptyArr => Value::Array(Vec::new()),
    }
}

fn to_value(s: &Shape, id: &mut u32, markers: &mut BTreeSet<String>) -> Value {
    match s {
        Shape::Leaf(l) => {
            *id += 1;
            leaf_value(l, *id, markers)
        }
        Shape::Obj(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), to_value(v, id, markers)))
                .collect(),
        ),
        Shape::Arr(a) => Value::Array(a.iter().map(|v| to_value(v, id, markers)).collect()),
    }
}

/// JSON text; with `escape`, the first character of every key and string is
/// written as a `\u` escape (veil compares keys after unescaping).
fn write_json(v: &Value, escape: bool, out: &mut String) {
    let string = |s: &str, out: &mut String| {
        let mut chars = s.chars();
        match chars.next() {
            Some(c) if escape && (c as u32) < 0x10000 => {
                out.push_str(&format!("\"\\u{:04x}", c as u32));
                let rest = serde_json::to_string(chars.as_str()).unwrap();
                out.push_str(&rest[1..]);
            }
            _ => out.push_str(&serde_json::to_string(s).unwrap()),
        }
    };
    match v {
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                write_json(x, escape, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(x, escape, out);
            }
            out.push(']');
        }
        Value::String(s) => string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

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
    assert!(
        s.forwarded_nonempty * 5 > s.cases,
        "only {} of {} events forwarded with content",
        s.forwarded_nonempty,
        s.cases
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
