//! The oracle: routing (consent, rules), the walk that builds the expected
//! output, and the compile-time refusals.

use std::collections::BTreeSet;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::*;

// ------------------------------------------------------ expected outputs

/// What the output must hold at one place.
#[derive(Debug, Clone)]
pub enum Exp {
    /// Exactly this value (numbers compared as f64).
    Exact(Value),
    /// A value the oracle cannot predict byte for byte; `check` says what is
    /// acceptable. `may_vanish`: removal is acceptable too.
    Check {
        check: Check,
        may_vanish: bool,
    },
    Obj(Vec<(String, Exp)>),
    Arr(Vec<Exp>),
}

#[derive(Debug, Clone)]
pub enum Check {
    /// An IPv6 address embedding an IPv4 one: the embedded address must not
    /// keep its host bits beyond the v4 prefix.
    EmbeddedIp { input: String, v4: u8 },
    /// A URL: fragment, user info and unlisted parameters gone, the rest as is.
    Url { base: String, params: Vec<String> },
}

/// Why an input value may not appear in the output as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forbidden {
    /// No entry allows it (or its shape is wrong).
    Unlisted,
    /// A subject identifier.
    Subject,
    /// A transform applies and its result differs from the input.
    Transform(&'static str),
}

/// Every scalar of the input: its JSON text and whether it may appear verbatim.
pub type Leaves = Vec<(String, Result<(), Forbidden>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    NoConsent,
    OptedOut,
    NoRule,
    ByRule,
}

#[derive(Debug)]
pub enum Verdict {
    Forward(Exp),
    Drop(Dropped),
}

// ------------------------------------------------------------- the oracle

pub struct Oracle {
    pub model: Model,
    key_id: String,
    purpose_key: [u8; 32],
    markers: Vec<Vec<Seg>>,
}

pub(crate) fn at<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

pub(crate) fn cond_holds(v: &Value, any: &[Cond]) -> bool {
    any.iter().any(|c| match (c, v) {
        (Cond::Null, Value::Null) => true,
        (Cond::Bool(b), Value::Bool(x)) => b == x,
        (Cond::Num(n), Value::Number(x)) => x.as_f64() == Some(*n),
        (Cond::Str(s), Value::String(x)) => s == x,
        _ => false,
    })
}

impl Oracle {
    pub fn new(model: Model, key_id: &str, key: &[u8]) -> Oracle {
        let info = format!("veil/v1/purpose/{}", model.purpose);
        let mut purpose_key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(&[]), key)
            .expand(info.as_bytes(), &mut purpose_key)
            .expect("32 bytes is a valid HKDF length");
        let markers = model.markers();
        Oracle {
            model,
            key_id: key_id.to_owned(),
            purpose_key,
            markers,
        }
    }

    /// The documented pseudonym of `bytes`.
    pub fn pseudonym(&self, bytes: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.purpose_key).expect("any key length");
        mac.update(bytes);
        let digest = mac.finalize().into_bytes();
        let cut = &digest[..self.model.truncate_bytes];
        let enc = if self.model.base64 {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cut)
        } else {
            cut.iter().map(|b| format!("{b:02x}")).collect()
        };
        if self.model.key_id_prefix {
            format!("{}:{enc}", self.key_id)
        } else {
            enc
        }
    }

    /// Why the corrected semantics refuse this policy, if they do: (kind, detail).
    pub fn refusal(&self) -> Option<(String, String)> {
        for f in self.model.field_sets() {
            for (p, a) in &f.0 {
                match a {
                    Act::Ip { v4, v6 } if *v4 == 32 || *v6 == 128 => {
                        return Some(("identity ip_prefix".into(), path_text(p)));
                    }
                    Act::Width(w) if *w <= 1.0 => {
                        return Some(("identity bucket width".into(), path_text(p)));
                    }
                    _ => {}
                }
            }
        }
        let universe = self.universe();
        for f in self.model.field_sets() {
            let tree = Tree {
                entries: &f.0,
                markers: &self.markers,
            };
            for s in &self.model.subject {
                for p in universe.iter().filter(|p| names_any_shape(s, p)) {
                    for q in universe.iter().filter(|q| q.starts_with(p)) {
                        if let Some(how) = exposure(&tree, q) {
                            return Some((
                                format!("subject {how}"),
                                format!("subject {} at {}", path_text(s), steps_text(q)),
                            ));
                        }
                    }
                }
            }
        }
        None
    }

    /// Concrete places that stand for every place the policy can treat
    /// differently: each pattern with `*` replaced by every key the policy
    /// names or a fresh one, and each such place extended by a fresh key
    /// and by an array element.
    fn universe(&self) -> BTreeSet<Vec<Step>> {
        let mut keys: BTreeSet<String> = BTreeSet::new();
        let mut patterns: Vec<&Vec<Seg>> = self.markers.iter().collect();
        for f in self.model.field_sets() {
            patterns.extend(f.0.iter().map(|(p, _)| p));
        }
        for p in &patterns {
            for s in p.iter() {
                if let Seg::Key(k) = s {
                    keys.insert(k.clone());
                }
            }
        }
        keys.insert("\u{1}fresh".into());
        let mut out = BTreeSet::new();
        for p in patterns {
            let mut partial: Vec<Vec<Step>> = vec![Vec::new()];
            for s in p {
                let mut next = Vec::new();
                for q in &partial {
                    let choices: Vec<Step> = match s {
                        Seg::Key(k) => vec![Step::K(k.clone())],
                        Seg::Any => keys.iter().map(|k| Step::K(k.clone())).collect(),
                        Seg::Each => vec![Step::I],
                    };
                    for c in choices {
                        let mut q = q.clone();
                        q.push(c);
                        next.push(q);
                    }
                }
                partial = next;
                for q in &partial {
                    out.insert(q.clone());
                    let mut a = q.clone();
                    a.push(Step::K("\u{1}fresh".into()));
                    out.insert(a);
                    let mut b = q.clone();
                    b.push(Step::I);
                    out.insert(b);
                }
            }
        }
        // Each subject in other shapes: its array steps left out, and up to
        // two arrays wrapped around each step of the way.
        for s in &self.model.subject {
            let mut partial: Vec<Vec<Step>> = vec![Vec::new()];
            for seg in s.iter().filter(|g| !matches!(g, Seg::Each)) {
                let choices: Vec<Step> = match seg {
                    Seg::Key(k) => vec![Step::K(k.clone())],
                    _ => keys.iter().map(|k| Step::K(k.clone())).collect(),
                };
                let mut next = Vec::new();
                for q in &partial {
                    for c in &choices {
                        for wraps in 0..=2 {
                            let mut q = q.clone();
                            q.push(c.clone());
                            q.extend(std::iter::repeat_n(Step::I, wraps));
                            next.push(q);
                        }
                    }
                }
                partial = next;
            }
            for q in partial {
                // The last step's wrapping is the identifier's own content.
                for n in 1..=q.len() {
                    out.insert(q[..n].to_vec());
                }
            }
        }
        out
    }

    /// Apply the policy to one event, recording every input scalar's fate in `leaves`.
    pub fn apply(&self, event: &Value, leaves: &mut Leaves) -> Verdict {
        let fields = match self.fields_for(event) {
            Ok(f) => f,
            Err(d) => return Verdict::Drop(d),
        };
        let tree = self.tree(fields);
        let Value::Object(members) = event else {
            panic!("events are objects")
        };
        let mut path = Vec::new();
        let out = self.members(&tree, &mut path, members, leaves);
        Verdict::Forward(out.unwrap_or(Exp::Obj(Vec::new())))
    }

    /// Consent, then the first matching rule: the allowlist that applies, or why the event is dropped.
    pub fn fields_for(&self, event: &Value) -> Result<&Fields, Dropped> {
        let m = &self.model;
        if let Some((purposes, opt_out)) = &m.consent {
            if let Some(o) = opt_out.as_ref().and_then(|o| at(event, o))
                && !matches!(o, Value::Bool(false) | Value::Null)
            {
                return Err(Dropped::OptedOut);
            }
            // An array holding the purpose, or an object mapping it to true.
            let granted = match at(event, purposes) {
                Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(m.purpose.as_str())),
                Some(Value::Object(o)) => o.get(m.purpose.as_str()) == Some(&Value::Bool(true)),
                _ => false,
            };
            if !granted {
                return Err(Dropped::NoConsent);
            }
        }
        let rule = m.rules.iter().find(|r| {
            r.when
                .iter()
                .all(|(p, any)| at(event, p).is_some_and(|v| cond_holds(v, any)))
        });
        let fields = match rule {
            Some(r) if r.drop => return Err(Dropped::ByRule),
            Some(r) => r.fields.as_ref().or(m.fields.as_ref()),
            None => m.fields.as_ref(),
        };
        fields.ok_or(Dropped::NoRule)
    }

    fn tree<'f>(&'f self, fields: &'f Fields) -> Tree<'f> {
        Tree {
            entries: &fields.0,
            markers: &self.markers,
        }
    }

    /// Every allowlist of the policy (the default one, then each rule's).
    pub fn all_fields(&self) -> Vec<&Fields> {
        self.model.field_sets()
    }

    /// The entry of `fields` that decides the place `path` itself, if any.
    pub fn decide<'f>(&'f self, fields: &'f Fields, path: &[Step]) -> Option<&'f Act> {
        self.tree(fields).action_at(path)
    }

    /// What the paths beneath `path` expect there: (object keys, array elements).
    pub fn expects(&self, fields: &Fields, path: &[Step]) -> (bool, bool) {
        self.tree(fields).beneath(path)
    }

    /// Whether a subject path names `path` or one of its ancestors, in any
    /// shape ([`covers_any_shape`]).
    pub fn is_subject(&self, path: &[Step]) -> bool {
        self.model.subject.iter().any(|s| covers_any_shape(s, path))
    }

    /// Whether `s` has the form of a pseudonym under this policy's options.
    pub fn looks_like_pseudonym(&self, s: &str) -> bool {
        let s = match self.model.key_id_prefix {
            true => match s.strip_prefix(&format!("{}:", self.key_id)) {
                Some(rest) => rest,
                None => return false,
            },
            false => s,
        };
        let n = self.model.truncate_bytes;
        if self.model.base64 {
            s.len() == (n * 4).div_ceil(3)
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        } else {
            s.len() == 2 * n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
    }

    fn members(
        &self,
        tree: &Tree,
        path: &mut Vec<Step>,
        members: &Map<String, Value>,
        leaves: &mut Leaves,
    ) -> Option<Exp> {
        let mut out = Vec::new();
        for (k, v) in members {
            path.push(Step::K(k.clone()));
            if let Some(x) = self.walk(tree, path, v, leaves) {
                // A key the policy does not spell out is data: one holding a
                // detection takes its member out.
                if tree.names_key(path) || !holds_a_detection(k) {
                    out.push((k.clone(), x));
                }
            }
            path.pop();
        }
        (!out.is_empty()).then_some(Exp::Obj(out))
    }

    fn walk(
        &self,
        tree: &Tree,
        path: &mut Vec<Step>,
        v: &Value,
        leaves: &mut Leaves,
    ) -> Option<Exp> {
        if let Some(a) = tree.action_at(path).filter(|a| a.is_transform()) {
            return self.transform(a, path, v, leaves);
        }
        let (keys, each) = tree.beneath(path);
        if !keys && !each {
            if tree.keeps(path) {
                self.record(path, v, Ok(()), leaves);
                return scanned(v).map(Exp::Exact);
            }
            self.record(path, v, Err(Forbidden::Unlisted), leaves);
            return None;
        }
        match v {
            Value::Object(m) if keys => {
                if m.is_empty() {
                    return tree.keeps(path).then(|| Exp::Exact(v.clone()));
                }
                self.members(tree, path, m, leaves)
            }
            Value::Array(items) if each => {
                if items.is_empty() {
                    return tree.keeps(path).then(|| Exp::Exact(v.clone()));
                }
                path.push(Step::I);
                let out: Vec<Exp> = items
                    .iter()
                    .filter_map(|x| self.walk(tree, path, x, leaves))
                    .collect();
                path.pop();
                (!out.is_empty()).then_some(Exp::Arr(out))
            }
            // The shape differs from what the paths beneath expect (`null`
            // included: docs/policy.md, "a scalar (string, number, boolean or
            // `null`) where entries lie beneath").
            _ => {
                self.record(path, v, Err(Forbidden::Unlisted), leaves);
                None
            }
        }
    }

    /// Record the scalars of `v` (at `path`), with `fate` unless a subject covers them.
    fn record(
        &self,
        path: &mut Vec<Step>,
        v: &Value,
        fate: Result<(), Forbidden>,
        leaves: &mut Leaves,
    ) {
        let fate = if self.model.subject.iter().any(|s| covers_any_shape(s, path)) {
            Err(Forbidden::Subject)
        } else {
            fate
        };
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    path.push(Step::K(k.clone()));
                    self.record(path, c, fate, leaves);
                    path.pop();
                }
            }
            Value::Array(a) => {
                path.push(Step::I);
                for c in a {
                    self.record(path, c, fate, leaves);
                }
                path.pop();
            }
            _ => leaves.push((v.to_string(), fate)),
        }
    }

    fn transform(
        &self,
        a: &Act,
        path: &mut Vec<Step>,
        v: &Value,
        leaves: &mut Leaves,
    ) -> Option<Exp> {
        let forbidden = Err(Forbidden::Transform(a.name()));
        let result = match (a, v) {
            (_, Value::Null) => Some(Exp::Exact(Value::Null)),
            (_, Value::Object(_) | Value::Array(_)) => None,
            (Act::Pseudo(norm), Value::String(s)) => {
                let mut t = s.clone();
                for n in norm {
                    t = match n {
                        Norm::Trim => t.trim().to_owned(),
                        Norm::Lower => t.to_lowercase(),
                    };
                }
                Some(Exp::Exact(Value::String(self.pseudonym(t.as_bytes()))))
            }
            // Numbers and booleans are hashed as their JSON text (the
            // differential test writes numbers exactly as `Number` displays them).
            (Act::Pseudo(_), Value::Number(n)) => Some(Exp::Exact(Value::String(
                self.pseudonym(n.to_string().as_bytes()),
            ))),
            (Act::Pseudo(_), Value::Bool(b)) => Some(Exp::Exact(Value::String(
                self.pseudonym(b.to_string().as_bytes()),
            ))),
            (Act::Ip { v4, v6 }, Value::String(s)) => ip_prefix(s, *v4, *v6),
            (Act::Url(keep), Value::String(s)) => url(s, keep),
            (Act::Time(u), Value::String(s)) => {
                truncate_time(s, *u).map(|t| Exp::Exact(Value::String(t)))
            }
            (Act::Edges(_) | Act::Width(_), Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                let b = match a {
                    Act::Edges(e) => e.iter().copied().rfind(|e| *e <= x),
                    Act::Width(w) => Some((x / w).floor() * w).filter(|b| b.is_finite()),
                    _ => unreachable!(),
                };
                b.map(|b| Exp::Exact(serde_json::json!(b)))
            }
            (Act::Redact(patterns, replacement), Value::String(s)) => {
                let mut t = s.clone();
                for p in patterns {
                    let re = regex::Regex::new(p).expect("generated patterns compile");
                    t = re
                        .replace_all(&t, regex::NoExpand(replacement))
                        .into_owned();
                }
                Some(Exp::Exact(Value::String(t)))
            }
            _ => None,
        };
        // The input may appear as it is only where the documented result equals it.
        let same = result.as_ref().is_some_and(|r| matches(r, v).is_ok());
        self.record(path, v, if same { Ok(()) } else { forbidden }, leaves);
        result
    }
}

pub(crate) fn steps_text(p: &[Step]) -> String {
    let segs: Vec<Seg> = p
        .iter()
        .map(|s| match s {
            Step::K(k) => Seg::Key(k.clone()),
            Step::I => Seg::Each,
        })
        .collect();
    path_text(&segs)
}

/// How a scalar at `q` could reach the output other than as a pseudonym.
pub(crate) fn exposure(tree: &Tree, q: &[Step]) -> Option<&'static str> {
    for n in 0..=q.len() {
        if let Some(a) = tree.action_at(&q[..n]).filter(|a| a.is_transform()) {
            // Above `q`: a container there is removed. At `q`: the transform decides.
            return (n == q.len() && !matches!(a, Act::Pseudo(_))).then_some("generalised");
        }
        // Where paths lie beneath, a step of the other shape (an array where
        // only keys are named, or the reverse) is a mismatch, removed.
        let (keys, each) = tree.beneath(&q[..n]);
        let fits = match q.get(n) {
            Some(Step::I) => each,
            Some(Step::K(_)) => keys,
            None => true,
        };
        if (keys || each) && !fits {
            return None;
        }
    }
    let (keys, each) = tree.beneath(q);
    (!keys && !each && tree.keeps(q)).then_some("kept in clear")
}

/// A kept value as `scan: redact` (the default, and the generated policies
/// set no other) writes it: every string value read with its `%XX` escapes
/// decoded, with what the content detector finds replaced by
/// `[redacted:<kind>]`; every integer read as its digits, and one holding a
/// detection written as the string of its redaction; every member whose
/// key holds a detection taken out. The detector itself is held to its
/// labelled corpus (tests/scan_corpus.rs); here it only says where the
/// matches are.
fn scanned(v: &Value) -> Option<Value> {
    Some(match v {
        Value::String(s) => Value::String(redacted_decoded(s, false)),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let digits = n.to_string();
            let r = redacted_decoded(&digits, false);
            if r == digits {
                v.clone()
            } else {
                Value::String(r)
            }
        }
        // A container that loses every member this way goes with them, as
        // filtering removes what it empties; one that came empty stays.
        Value::Array(items) => {
            let out: Vec<Value> = items.iter().filter_map(scanned).collect();
            if out.is_empty() && !items.is_empty() {
                return None;
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !holds_a_detection(k))
                .filter_map(|(k, x)| Some((k.clone(), scanned(x)?)))
                .collect();
            if out.is_empty() && !m.is_empty() {
                return None;
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Whether the content detector finds anything in `text`, read as a kept
/// string is.
fn holds_a_detection(text: &str) -> bool {
    redacted_decoded(text, false) != text
}
