//! Random events for the differential test: random members, then values
//! written at the policy's own paths, with the shape on the way made to
//! disagree (wrapped in arrays, nested, turned into objects, scalars or
//! empty containers). Every scalar is numbered so that marker values are
//! unique within an event.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

use crate::oracle::{Act, Model, Seg};
use crate::policies::{KEYS, key};

/// A scalar or empty container; numbered when the event is built, so that
/// every marker value is unique in its event.
#[derive(Debug, Clone)]
pub(crate) enum Leaf {
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
pub(crate) enum Shape {
    Leaf(Leaf),
    Obj(Vec<(String, Shape)>),
    Arr(Vec<Shape>),
}

/// How an injected path's shape is made to disagree with the policy.
#[derive(Debug, Clone)]
pub(crate) enum Perturb {
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
pub(crate) enum Flavour {
    Action(Act),
    Subject,
    Purposes,
    OptOut,
    Condition,
}

pub(crate) fn leaf() -> impl Strategy<Value = Leaf> {
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

pub(crate) fn shape() -> impl Strategy<Value = Shape> {
    leaf()
        .prop_map(Shape::Leaf)
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec((event_key(), inner.clone()), 1..4)
                    .prop_map(|m| Shape::Obj(dedup(m))),
                prop::collection::vec(inner, 1..3).prop_map(Shape::Arr),
            ]
        })
}

pub(crate) fn dedup(m: Vec<(String, Shape)>) -> Vec<(String, Shape)> {
    let mut seen = BTreeSet::new();
    m.into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect()
}

pub(crate) fn perturb() -> impl Strategy<Value = Perturb> {
    prop_oneof![
        Just(Perturb::Wrap),
        Just(Perturb::Nest),
        Just(Perturb::ToObject),
        leaf().prop_map(Perturb::ToScalar),
        Just(Perturb::Empty),
    ]
}

#[derive(Debug, Clone)]
pub(crate) struct Injection {
    path: Index,
    choices: Vec<u8>,
    perturb: Option<(u8, Perturb)>,
    pick: u8,
    other: Shape,
}

pub(crate) fn injection() -> impl Strategy<Value = Injection> {
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
pub(crate) fn policy_paths(m: &Model) -> Vec<(Vec<Seg>, Flavour)> {
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
pub(crate) fn fitting(flavour: &Flavour, pick: u8, other: &Shape) -> Shape {
    if pick.is_multiple_of(4) {
        return other.clone();
    }
    let p = pick / 4;
    let general = [
        Leaf::Marker(p),
        Leaf::Email(p),
        Leaf::Ip(p),
        Leaf::Url(p),
        Leaf::Time(p),
        Leaf::Bool(p.is_multiple_of(2)),
        Leaf::Null,
        Leaf::Small(p),
    ];
    let l = match flavour {
        Flavour::Action(Act::Ip { .. }) => Leaf::Ip(p),
        Flavour::Action(Act::Url(_)) => Leaf::Url(p),
        Flavour::Action(Act::Time(_)) => Leaf::Time(p),
        Flavour::Action(Act::Edges(_) | Act::Width(_)) => {
            if p.is_multiple_of(3) {
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
pub(crate) fn inject(
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
pub(crate) struct Event {
    /// Purposes written at the consent path first, if the policy reads consent.
    consent: Option<u8>,
    base: Vec<(String, Shape)>,
    injections: Vec<Injection>,
    pub(crate) escape: bool,
}

pub(crate) fn event() -> impl Strategy<Value = Event> {
    (
        prop::option::weighted(0.8, any::<u8>()),
        prop::collection::vec((event_key(), shape()), 0..4),
        prop::collection::vec(injection(), 1..6),
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
    pub(crate) fn shape(&self, m: &Model) -> Shape {
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

pub(crate) fn leaf_value(l: &Leaf, id: u32, markers: &mut BTreeSet<String>) -> Value {
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
        Leaf::Marker(p) => match p % 6 {
            // A card number written as a JSON number: the content scan's.
            5 => {
                let v = Value::from(card_number(id));
                markers.insert(v.to_string());
                v
            }
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
            match p % 20 {
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
                14 => format!("javascript:alert({id})"),
                // Personal data in the path and in kept parameters, plain
                // and percent-encoded: the content scan's business.
                16 => format!(
                    "https://h.example/u/ana{id}@example.com/o?utm_source=b{id}%40example.org&q=x"
                ),
                17 => format!("/s?q=call+020+7946+{id:04}&utm_term=%2B44%2020%207946%20{id:04}"),
                18 => format!(
                    "https://h.example/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1{id}In0.c2lnbmF0dXJl{id}?utm_x=1"
                ),
                19 => format!(
                    "https://h.example/p/%61na{id}%40example%2Ecom?utm_source=4111111111111111"
                ),
                _ => format!("/ Farid Mueller {id} <farid@example.com>"),
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

/// A Visa-shaped 16-digit number unique to `id`, its last digit the Luhn
/// check digit (computed here, apart from veil's detector).
fn card_number(id: u32) -> u64 {
    let body = 400_000_000_000_000 + u64::from(id); // 15 digits
    let digits: Vec<u64> = body
        .to_string()
        .bytes()
        .map(|b| u64::from(b - b'0'))
        .collect();
    // From the right of the body, every first digit is doubled (the check
    // digit will take the rightmost place).
    let sum: u64 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    body * 10 + (10 - sum % 10) % 10
}

/// A key of an event: mostly the policies' alphabet, sometimes one that
/// holds personal data (no policy names it: it is data, scanned).
pub(crate) fn event_key() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => key(),
        1 => prop::sample::select(&["ana@example.com", "ana%40example.com", "198.51.100.7"][..])
            .prop_map(str::to_owned),
    ]
}

pub(crate) fn to_value(s: &Shape, id: &mut u32, markers: &mut BTreeSet<String>) -> Value {
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
pub(crate) fn write_json(v: &Value, escape: bool, out: &mut String) {
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
