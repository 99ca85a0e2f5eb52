//! Shadow mode (pure): what a candidate policy would have made of an input,
//! compared with what the route's live policy made of it.
//!
//! A route with `shadow: FILE` applies both policies to every input; only
//! the live output is produced. [`compare`] names each difference by a
//! fixed [`Change`] and a [`PathClasses`] class: the most specific path
//! either policy names that covers the differing field (`(other)` when none
//! does, `(event)` for the whole event). Neither ever holds a value or a
//! key the event brought, so the metric's labels are bounded by the two
//! policies and never carry personal data.

// On the data path: no input may reach an `unwrap`, `expect`, `panic!` or
// unchecked index here (tests are exempt).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;

use crate::policy::{FieldPath, FieldSet, Policy, Segment};

/// How the shadow policy's result differs from the live one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// A field the shadow output has and the live one does not.
    Added,
    /// A field the live output has and the shadow one does not.
    Removed,
    /// A field both have, with different values (or types).
    Changed,
    /// Live forwards the event; the shadow policy drops it.
    NowDropped,
    /// Live drops the event; the shadow policy forwards it.
    NowForwarded,
    /// Live takes the event; the shadow policy rejects it (a dead letter).
    NowDeadLettered,
}

impl Change {
    pub const ALL: [Change; 6] = [
        Change::Added,
        Change::Removed,
        Change::Changed,
        Change::NowDropped,
        Change::NowForwarded,
        Change::NowDeadLettered,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
            Change::NowDropped => "now_dropped",
            Change::NowForwarded => "now_forwarded",
            Change::NowDeadLettered => "now_dead_lettered",
        }
    }
}

/// One difference: the class of its path (an index into
/// [`PathClasses::labels`]) and what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    pub class: usize,
    pub change: Change,
}

/// What one policy made of an input, as far as shadow mode compares it.
#[derive(Debug, Clone, Copy)]
pub enum Side<'a> {
    /// The clean event.
    Forwarded(&'a [u8]),
    Dropped,
    Rejected,
}

/// The path classes of a live policy and its shadow: every path either
/// names in an allowlist, then `(other)` and `(event)`.
#[derive(Debug, Clone)]
pub struct PathClasses {
    paths: Vec<FieldPath>,
    labels: Vec<String>,
}

/// Label of a difference under no path either policy names.
pub const OTHER: &str = "(other)";
/// Label of a difference of the whole event (its outcome).
pub const EVENT: &str = "(event)";

impl PathClasses {
    pub fn new(live: &Policy, shadow: &Policy) -> PathClasses {
        let mut paths: Vec<FieldPath> = [live, shadow]
            .into_iter()
            .flat_map(|p| {
                p.fields
                    .iter()
                    .chain(p.rules.iter().filter_map(|r| r.fields.as_ref()))
                    .flat_map(|s: &FieldSet| s.entries.iter().map(|e| e.path.clone()))
            })
            .collect();
        paths.sort();
        paths.dedup();
        let mut labels: Vec<String> = paths.iter().map(ToString::to_string).collect();
        labels.push(OTHER.to_owned());
        labels.push(EVENT.to_owned());
        PathClasses { paths, labels }
    }

    /// Every class label, in class order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    fn other(&self) -> usize {
        self.paths.len()
    }

    fn event(&self) -> usize {
        self.paths.len() + 1
    }

    /// The class of the field at `at`: the longest named path that covers
    /// it (is it, or one of its parents), else `(other)`.
    fn classify(&self, at: &[Step<'_>]) -> usize {
        let mut best: Option<(usize, usize)> = None;
        for (i, path) in self.paths.iter().enumerate() {
            let n = path.0.len();
            if n > at.len() || best.is_some_and(|(_, len)| len >= n) {
                continue;
            }
            let covers = path.0.iter().zip(at).all(|(seg, step)| match (seg, step) {
                (Segment::Key(k), Step::Key(s)) => k == s,
                (Segment::Any, Step::Key(_)) => true,
                (Segment::Each, Step::Index) => true,
                _ => false,
            });
            if covers {
                best = Some((i, n));
            }
        }
        best.map_or(self.other(), |(i, _)| i)
    }
}

/// One step down a JSON value.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index,
}

/// Push every difference between what the live policy and the shadow one
/// made of an input to `out`. The same outcome with the same bytes is no
/// difference; two different drop reasons are none either (both drop).
pub fn compare(live: Side<'_>, shadow: Side<'_>, classes: &PathClasses, out: &mut Vec<Difference>) {
    let whole = |change| Difference {
        class: classes.event(),
        change,
    };
    match (live, shadow) {
        (Side::Rejected, _) | (Side::Dropped, Side::Dropped) => {}
        (_, Side::Rejected) => out.push(whole(Change::NowDeadLettered)),
        (Side::Forwarded(_), Side::Dropped) => out.push(whole(Change::NowDropped)),
        (Side::Dropped, Side::Forwarded(_)) => out.push(whole(Change::NowForwarded)),
        (Side::Forwarded(a), Side::Forwarded(b)) if a == b => {}
        (Side::Forwarded(a), Side::Forwarded(b)) => {
            let (Ok(a), Ok(b)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
                // Both are veil's own output, so always UTF-8 JSON; were one
                // not, the events differ as a whole.
                return out.push(whole(Change::Changed));
            };
            if walk_raw(a, b, &mut Vec::new(), classes, out).is_err() {
                out.push(whole(Change::Changed));
            }
        }
    }
}

/// The differences between two JSON texts at `at`, descending only into
/// members whose bytes differ. Both come from the same engine, which
/// writes a value the same way every time (member order, numbers,
/// escapes), so equal bytes are equal values and a member is read only
/// when it differs. A part holding an escaped key (which cannot be
/// borrowed) is compared as values instead. `Err`: not JSON.
fn walk_raw<'v>(
    live: &'v str,
    shadow: &'v str,
    at: &mut Vec<Step<'v>>,
    classes: &PathClasses,
    out: &mut Vec<Difference>,
) -> Result<(), serde_json::Error> {
    use serde_json::value::RawValue;
    type Members<'v> = Vec<(&'v str, &'v RawValue)>;
    if live == shadow {
        return Ok(());
    }
    let kind = |s: &str| s.trim_start().as_bytes().first().copied();
    match (kind(live), kind(shadow)) {
        (Some(b'{'), Some(b'{')) => {
            let (Ok(a), Ok(b)) = (
                serde_json::from_str::<OrderedMembers<'v>>(live),
                serde_json::from_str::<OrderedMembers<'v>>(shadow),
            ) else {
                return walk_values(live, shadow, at, classes, out);
            };
            let (a, b): (Members<'v>, Members<'v>) = (a.0, b.0);
            for (k, va) in &a {
                at.push(Step::Key(k));
                match b.iter().find(|(kb, _)| kb == k) {
                    Some((_, vb)) => walk_raw(va.get(), vb.get(), at, classes, out)?,
                    None => one_sided_text(va.get(), at, Change::Removed, classes, out)?,
                }
                at.pop();
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.iter().any(|(ka, _)| ka == k)) {
                at.push(Step::Key(k));
                one_sided_text(vb.get(), at, Change::Added, classes, out)?;
                at.pop();
            }
            Ok(())
        }
        (Some(b'['), Some(b'[')) => {
            let a: Vec<&'v RawValue> = serde_json::from_str(live)?;
            let b: Vec<&'v RawValue> = serde_json::from_str(shadow)?;
            at.push(Step::Index);
            for (va, vb) in a.iter().zip(b.iter()) {
                walk_raw(va.get(), vb.get(), at, classes, out)?;
            }
            let common = a.len().min(b.len());
            for v in a.iter().skip(common) {
                one_sided_text(v.get(), at, Change::Removed, classes, out)?;
            }
            for v in b.iter().skip(common) {
                one_sided_text(v.get(), at, Change::Added, classes, out)?;
            }
            at.pop();
            Ok(())
        }
        _ => walk_values(live, shadow, at, classes, out),
    }
}

/// [`one_sided`] of a JSON text read as a value.
fn one_sided_text(
    text: &str,
    at: &[Step<'_>],
    change: Change,
    classes: &PathClasses,
    out: &mut Vec<Difference>,
) -> Result<(), serde_json::Error> {
    let v: Value = serde_json::from_str(text)?;
    let mut here: Vec<Step<'_>> = at.to_vec();
    one_sided(&v, &mut here, change, classes, out);
    Ok(())
}

/// [`walk`] over two JSON texts read as values.
fn walk_values(
    live: &str,
    shadow: &str,
    at: &mut [Step<'_>],
    classes: &PathClasses,
    out: &mut Vec<Difference>,
) -> Result<(), serde_json::Error> {
    let (a, b): (Value, Value) = (serde_json::from_str(live)?, serde_json::from_str(shadow)?);
    let mut here: Vec<Step<'_>> = at.to_vec();
    walk(&a, &b, &mut here, classes, out);
    Ok(())
}

/// An object's members in order, keys borrowed (so a key with an escape
/// fails, and the caller reads the object as a value instead).
struct OrderedMembers<'v>(Vec<(&'v str, &'v serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for OrderedMembers<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = m.next_entry()? {
                    members.push(member);
                }
                Ok(OrderedMembers(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The differences between `live` and `shadow` at `at`.
fn walk<'v>(
    live: &'v Value,
    shadow: &'v Value,
    at: &mut Vec<Step<'v>>,
    classes: &PathClasses,
    out: &mut Vec<Difference>,
) {
    let push = |out: &mut Vec<Difference>, at: &[Step<'_>], change| {
        out.push(Difference {
            class: classes.classify(at),
            change,
        });
    };
    match (live, shadow) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                at.push(Step::Key(k));
                match b.get(k) {
                    Some(vb) => walk(va, vb, at, classes, out),
                    None => one_sided(va, at, Change::Removed, classes, out),
                }
                at.pop();
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                at.push(Step::Key(k));
                one_sided(vb, at, Change::Added, classes, out);
                at.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            at.push(Step::Index);
            for pair in a.iter().zip(b.iter()) {
                walk(pair.0, pair.1, at, classes, out);
            }
            let common = a.len().min(b.len());
            for v in a.iter().skip(common) {
                one_sided(v, at, Change::Removed, classes, out);
            }
            for v in b.iter().skip(common) {
                one_sided(v, at, Change::Added, classes, out);
            }
            at.pop();
        }
        (a, b) if a == b => {}
        _ => push(out, at, Change::Changed),
    }
}

/// A value only one side has: one difference per scalar leaf in it (an
/// empty object or array is a leaf), each classed by its own path.
fn one_sided<'v>(
    v: &'v Value,
    at: &mut Vec<Step<'v>>,
    change: Change,
    classes: &PathClasses,
    out: &mut Vec<Difference>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                at.push(Step::Key(k));
                one_sided(v, at, change, classes, out);
                at.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            at.push(Step::Index);
            for v in a {
                one_sided(v, at, change, classes, out);
            }
            at.pop();
        }
        _ => out.push(Difference {
            class: classes.classify(at),
            change,
        }),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    fn policy(fields: &str) -> Policy {
        let yaml = format!("name: p\nversion: 1\npurpose: analytics\nfields:\n{fields}");
        Policy::parse(&yaml, "p.yaml").unwrap()
    }

    fn classes() -> PathClasses {
        PathClasses::new(
            &policy("  a: keep\n  ctx: keep\n  items[].sku: keep\n"),
            &policy("  a: keep\n  ctx.ip: { ip_prefix: { v4: 24, v6: 48 } }\n  \"m.*\": keep\n"),
        )
    }

    /// The differences as (class label, change label), sorted.
    fn diff(live: Side<'_>, shadow: Side<'_>) -> Vec<(String, &'static str)> {
        let c = classes();
        let mut out = Vec::new();
        compare(live, shadow, &c, &mut out);
        let mut named: Vec<_> = out
            .iter()
            .map(|d| (c.labels()[d.class].clone(), d.change.label()))
            .collect();
        named.sort();
        named
    }

    fn fwd(json: &str) -> Side<'_> {
        Side::Forwarded(json.as_bytes())
    }

    #[test]
    fn the_classes_are_every_named_path_then_other_and_event() {
        assert_eq!(
            classes().labels(),
            ["a", "ctx", "ctx.ip", "items[].sku", "m.*", OTHER, EVENT]
        );
    }

    #[test]
    fn the_same_output_or_two_drops_are_no_difference() {
        assert!(diff(fwd(r#"{"a":1}"#), fwd(r#"{"a":1}"#)).is_empty());
        assert!(diff(fwd(r#"{"a":1,"b":2}"#), fwd(r#"{"b":2,"a":1}"#)).is_empty());
        assert!(diff(Side::Dropped, Side::Dropped).is_empty());
        assert!(
            diff(Side::Rejected, fwd("{}")).is_empty(),
            "live rejects: not compared"
        );
    }

    #[test]
    fn outcome_changes_are_of_the_whole_event() {
        assert_eq!(
            diff(fwd("{}"), Side::Dropped),
            [(EVENT.into(), "now_dropped")]
        );
        assert_eq!(
            diff(Side::Dropped, fwd("{}")),
            [(EVENT.into(), "now_forwarded")]
        );
        assert_eq!(
            diff(fwd("{}"), Side::Rejected),
            [(EVENT.into(), "now_dead_lettered")]
        );
        assert_eq!(
            diff(Side::Dropped, Side::Rejected),
            [(EVENT.into(), "now_dead_lettered")]
        );
    }

    #[test]
    fn fields_added_removed_and_changed_are_named_by_the_most_specific_covering_path() {
        let live = r#"{"a":"x","ctx":{"ip":"1.2.3.4","ua":"u"},"gone":1}"#;
        let shadow = r#"{"a":"y","ctx":{"ip":"1.2.3.0"},"m":{"k":true},"new":[1]}"#;
        assert_eq!(
            diff(fwd(live), fwd(shadow)),
            [
                ("(other)".into(), "added"),
                ("(other)".into(), "removed"),
                ("a".into(), "changed"),
                ("ctx".into(), "removed"),
                ("ctx.ip".into(), "changed"),
                ("m.*".into(), "added"),
            ]
        );
    }

    #[test]
    fn array_elements_are_compared_by_index_and_extra_ones_counted_leaf_by_leaf() {
        let live = r#"{"items":[{"sku":"a"},{"sku":"b"}]}"#;
        let shadow = r#"{"items":[{"sku":"a"},{"sku":"c"},{"sku":"d"}]}"#;
        assert_eq!(
            diff(fwd(live), fwd(shadow)),
            [
                ("items[].sku".into(), "added"),
                ("items[].sku".into(), "changed")
            ],
            "the extra element is classed by its own path"
        );
        assert_eq!(
            diff(fwd(r#"{"items":[1,2]}"#), fwd(r#"{"items":[]}"#)),
            [("(other)".into(), "removed"), ("(other)".into(), "removed")]
        );
    }

    #[test]
    fn a_change_of_type_is_a_change_and_labels_never_hold_event_keys_or_values() {
        let c = classes();
        let mut out = Vec::new();
        let secret = r#"{"alice@example.com":"s3cret","a":{"x":1}}"#;
        compare(fwd(r#"{"a":1}"#), fwd(secret), &c, &mut out);
        assert_eq!(out.len(), 2);
        for d in &out {
            let label = &c.labels()[d.class];
            assert!(
                !label.contains("alice") && !label.contains("s3cret"),
                "{label}"
            );
        }
        assert!(
            out.iter()
                .any(|d| d.change == Change::Changed && c.labels()[d.class] == "a")
        );
    }

    /// The byte-level walk (what `compare` does) against a plain walk of
    /// the two texts as `serde_json::Value`s, over pairs of canonical JSON
    /// (as the engine writes it): the same differences, whatever the shape,
    /// escaped keys included.
    #[test]
    fn the_byte_walk_finds_what_a_walk_of_values_finds() {
        let texts = [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"a":"1"}"#,
            r#"{"a":[1,2,{"b":null}]}"#,
            r#"{"a":[1,{"b":true},3,4]}"#,
            r#"{"ctx":{"ip":"1.2.3.0","ua":"x"},"m":{"k":[]}}"#,
            r#"{"ctx":{"ip":"1.2.0.0"},"m":{"k":[{}],"j":{"x":1}}}"#,
            r#"{"ctx":"flat","items":[{"sku":"a"}]}"#,
            r#"{"items":[{"sku":"b","n":2}],"a\u00e9":1}"#,
            r#"{"a\"q":{"b":1},"a":{}}"#,
            r#"[1,2]"#,
            r#""s""#,
        ];
        let c = classes();
        let sorted = |mut v: Vec<Difference>| {
            v.sort_by_key(|d| (d.class, d.change));
            v
        };
        for a in texts {
            for b in texts {
                let mut by_bytes = Vec::new();
                compare(fwd(a), fwd(b), &c, &mut by_bytes);
                let (va, vb): (Value, Value) = (
                    serde_json::from_str(a).unwrap(),
                    serde_json::from_str(b).unwrap(),
                );
                let mut by_values = Vec::new();
                walk(&va, &vb, &mut Vec::new(), &c, &mut by_values);
                assert_eq!(sorted(by_bytes), sorted(by_values), "{a} vs {b}");
            }
        }
    }
}
