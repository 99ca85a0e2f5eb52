//! A straightforward serde_json::Value implementation of a veil policy:
//! parse to a Value, check consent, build the output Value, serialise.
//! It is the baseline of `benches/engine.rs` and the oracle of the
//! differential test in `tests/properties.rs`. It shares the compiled trie,
//! the generalisers and the pseudonymiser with the engine, but none of the
//! streaming code, and the content detector (its scan of kept strings).
//! Handles rule-free policies only (like the shipped one).

#![allow(dead_code)]

use serde_json::{Map, Value};
use std::cell::Cell;
use veil::CompiledPolicy;
use veil::engine::{bucket, ip_prefix, normalise_into, truncate_time, url};
use veil::policy::trie::{Mode, Node};
use veil::policy::{Action, FieldPath, ScanMode, Segment};

fn at<'v>(v: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    path.0.iter().try_fold(v, |v, seg| match seg {
        Segment::Key(k) => v.get(k.as_str()),
        _ => None,
    })
}

/// `None` when the event is dropped or not an object.
pub fn apply(policy: &CompiledPolicy, input: &[u8]) -> Option<Vec<u8>> {
    let event: Value = serde_json::from_slice(input).ok()?;
    if !event.is_object() {
        return None;
    }
    let p = policy.policy();
    if let Some(c) = &p.consent {
        if let Some(o) = c.opt_out.as_ref().and_then(|o| at(&event, o))
            && !matches!(o, Value::Bool(false) | Value::Null)
        {
            return None;
        }
        // An array holding the category, or an object mapping it to true.
        let granted = c.purposes.as_ref().is_none_or(|p| match at(&event, p) {
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(c.category.as_str())),
            Some(Value::Object(o)) => o.get(c.category.as_str()) == Some(&Value::Bool(true)),
            _ => false,
        });
        // The TC string's decision is shared with the engine (veil::tcf).
        let tcf = c.tcf.as_ref().is_none_or(|t| match at(&event, &t.path) {
            Some(Value::String(tc)) => t.rule.grants(tc.as_bytes()) == Ok(true),
            _ => false,
        });
        if !(granted && tcf) {
            return None;
        }
    }
    let root = p.plan.default.as_ref()?;
    let dropped = Cell::new(false);
    let out = walk(policy, root, &event, &dropped).unwrap_or_else(|| Value::Object(Map::new()));
    if dropped.get() {
        return None; // scan: drop_event
    }
    Some(serde_json::to_vec(&out).unwrap())
}

/// A kept value under `scan`: string values and integers with every
/// detection redacted (`redact`; an integer with one becomes the string
/// of its redaction), or marked for dropping (`drop_event`). A member whose
/// key holds a detection is removed under `redact`, and a container left
/// empty by that with it (`None`); one that came empty stays.
fn scanned(v: &Value, scan: ScanMode, dropped: &Cell<bool>) -> Option<Value> {
    Some(match (v, scan) {
        (_, ScanMode::Off | ScanMode::Count) => v.clone(),
        (Value::String(s), ScanMode::Redact | ScanMode::DropEvent) => {
            Value::String(redacted(s, false, scan, dropped))
        }
        (Value::Number(n), _) if n.is_i64() || n.is_u64() => {
            let text = n.to_string();
            let r = redacted(&text, false, scan, dropped);
            if r == text {
                v.clone()
            } else {
                Value::String(r)
            }
        }
        (Value::Array(items), _) => {
            let out: Vec<Value> = items
                .iter()
                .filter_map(|x| scanned(x, scan, dropped))
                .collect();
            if out.is_empty() && !items.is_empty() {
                return None;
            }
            Value::Array(out)
        }
        (Value::Object(m), _) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                // The value is read first: under `drop_event` it may mark the event.
                let x = scanned(x, scan, dropped);
                if let Some(x) = x.filter(|_| !key_removed(k, scan, dropped)) {
                    out.insert(k.clone(), x);
                }
            }
            if out.is_empty() && !m.is_empty() {
                return None;
            }
            Value::Object(out)
        }
        _ => v.clone(),
    })
}

/// Whether a kept parent's member with key `k` is removed: its key holds a
/// detection under `redact` (under `drop_event` the event is marked).
fn key_removed(k: &str, scan: ScanMode, dropped: &Cell<bool>) -> bool {
    match scan {
        ScanMode::Off | ScanMode::Count => false,
        _ => {
            redacted(k, false, ScanMode::Redact, dropped) != k && {
                dropped.set(dropped.get() || scan == ScanMode::DropEvent);
                scan == ScanMode::Redact
            }
        }
    }
}

fn walk(policy: &CompiledPolicy, node: &Node, v: &Value, dropped: &Cell<bool>) -> Option<Value> {
    match &node.mode {
        Mode::Keep => scanned(v, node.scan, dropped),
        Mode::Drop => None,
        Mode::Transform(a) => transform(policy, a, v, node.scan, dropped),
        // Shapes must be the ones the entries beneath name; anything else
        // (scalars and null included) is removed.
        Mode::Descend { keep_rest } => match v {
            Value::Object(_) if node.children.is_empty() && node.any.is_none() => None,
            Value::Object(m) if m.is_empty() => keep_rest.then(|| v.clone()),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, child) in m {
                    let kept = match node.child(k.as_bytes()) {
                        // A key `*` matched is data, scanned like a value.
                        Some(n)
                            if !node
                                .children
                                .iter()
                                .any(|(_, name, _)| **name == *k.as_bytes()) =>
                        {
                            walk(policy, n, child, dropped)
                                .filter(|_| !key_removed(k, n.scan, dropped))
                        }
                        Some(n) => walk(policy, n, child, dropped),
                        None if *keep_rest && key_removed(k, node.scan, dropped) => None,
                        None if *keep_rest => scanned(child, node.scan, dropped),
                        None => None,
                    };
                    if let Some(x) = kept {
                        out.insert(k.clone(), x);
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Value::Array(items) => {
                let each = node.each.as_deref()?;
                if items.is_empty() {
                    return keep_rest.then(|| v.clone());
                }
                let out: Vec<Value> = items
                    .iter()
                    .filter_map(|x| walk(policy, each, x, dropped))
                    .collect();
                (!out.is_empty()).then_some(Value::Array(out))
            }
            _ => None,
        },
    }
}

/// `text` under `scan` (`redact` or `drop_event`), read with its escapes
/// decoded as the detector's reader (`veil::detect::url`) decodes them.
fn redacted(text: &str, plus_in_query: bool, scan: ScanMode, dropped: &Cell<bool>) -> String {
    let mut matches = Vec::new();
    let mut bufs = veil::detect::url::UrlBuffers::default();
    veil::detect::url::find_decoded(text.as_bytes(), plus_in_query, &mut bufs, |m| {
        matches.push(m)
    });
    if scan != ScanMode::Redact {
        dropped.set(dropped.get() || (scan == ScanMode::DropEvent && !matches.is_empty()));
        return text.to_owned();
    }
    let mut out = String::new();
    let mut last = 0;
    for m in matches {
        out.push_str(&text[last..m.start]);
        out.push_str(m.kind.redaction());
        last = m.end;
    }
    out.push_str(&text[last..]);
    out
}

/// A `url` result under `scan`: its path and query (`veil::detect::url`).
fn scanned_url(u: String, scan: ScanMode, dropped: &Cell<bool>) -> String {
    let at = veil::detect::url::tail_start(u.as_bytes());
    format!("{}{}", &u[..at], redacted(&u[at..], true, scan, dropped))
}

fn transform(
    policy: &CompiledPolicy,
    action: &Action,
    v: &Value,
    scan: ScanMode,
    dropped: &Cell<bool>,
) -> Option<Value> {
    let text = match v {
        Value::Null => return Some(Value::Null),
        Value::Object(_) | Value::Array(_) => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match action {
        Action::Pseudonymise { normalise } => {
            let mut bytes = Vec::new();
            if v.is_string() {
                normalise_into(&text, normalise, &mut bytes);
            } else {
                bytes.extend_from_slice(text.as_bytes());
            }
            Some(Value::String(policy.pseudonymiser().pseudonym(&bytes)))
        }
        Action::IpPrefix { v4, v6 } if v.is_string() => {
            ip_prefix(&text, *v4, *v6).map(Value::String)
        }
        Action::Url { matcher, .. } if v.is_string() => {
            url(&text, matcher).map(|u| Value::String(scanned_url(u, scan, dropped)))
        }
        Action::TruncateTime(u) if v.is_string() => truncate_time(&text, *u).map(Value::String),
        Action::Bucket(b) if v.is_number() => {
            let x = bucket(v.as_f64()?, b)?;
            Some(if x.fract() == 0.0 {
                Value::from(x as i64)
            } else {
                Value::from(x)
            })
        }
        Action::Redact {
            patterns,
            replacement,
        } if v.is_string() => {
            let mut s = text;
            for p in patterns {
                s = p.replace_all(&s, regex::NoExpand(replacement)).into_owned();
            }
            Some(Value::String(s))
        }
        _ => None,
    }
}
