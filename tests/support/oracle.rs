//! An independent model of veil's policy semantics over `serde_json::Value`,
//! written from `docs/policy.md` and the corrected semantics of issue 9.
//!
//! It shares no code with `src/engine` or `src/policy`: a policy is a plain
//! list of (pattern, action) pairs, and every decision is made by matching
//! concrete paths against those patterns, not by walking a compiled trie.
//! Pseudonyms are computed here with the `hkdf`/`hmac`/`sha2` crates from
//! the documented construction; timestamps with a hand-written RFC 3339
//! reader; IP prefixes with `std::net`.
//!
//! The rules it encodes (each one a sentence of the docs or the issue):
//! - *Precedence.* Among entries whose pattern names a place, the one whose
//!   segments are more specific wins, compared from the last segment back
//!   (an exact key beats `*`); a deeper entry beats its ancestors.
//!   Unlisted values inherit `keep`/`drop` from the nearest listed ancestor;
//!   the event itself is `drop`.
//! - *Shape invariant.* A value is copied whole only when no entry, subject,
//!   consent or rule-condition path lies beneath it. Otherwise it is walked:
//!   an object only where paths beneath name keys, an array only where they
//!   use `[]`; any other shape (scalars and `null` included) is removed.
//!   Empty containers of the expected shape are kept only under `keep`;
//!   containers emptied by filtering are removed.
//! - *Transforms* apply to scalars; `null` stays `null`; containers and
//!   wrong scalar types are removed.
//! - *Refusals.* A subject (wildcards allowed) may only be pseudonymised or
//!   removed, in `fields` and in every rule; `ip_prefix` 32/128 and
//!   `bucket` width <= 1 are identity generalisations, refused.

#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

// ---------------------------------------------------------------- the model

/// One segment of a policy path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Any,
    Each,
}

/// One step of a concrete place in an event: an object member or an array element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    K(String),
    I,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Trim,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    Keep,
    Drop,
    Pseudo(Vec<Norm>),
    Ip { v4: u8, v6: u8 },
    Url(Vec<String>),
    Time(Unit),
    Edges(Vec<f64>),
    Width(f64),
    Redact(Vec<String>, String),
}

impl Act {
    pub fn is_transform(&self) -> bool {
        !matches!(self, Act::Keep | Act::Drop)
    }
    pub fn name(&self) -> &'static str {
        match self {
            Act::Keep => "keep",
            Act::Drop => "drop",
            Act::Pseudo(_) => "pseudonymise",
            Act::Ip { .. } => "ip_prefix",
            Act::Url(_) => "url",
            Act::Time(_) => "truncate_time",
            Act::Edges(_) | Act::Width(_) => "bucket",
            Act::Redact(..) => "redact",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(Vec<Seg>, Act)>);

#[derive(Debug, Clone)]
pub struct Rule {
    pub when: Vec<(Vec<String>, Vec<Cond>)>,
    pub fields: Option<Fields>,
    pub drop: bool,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub purpose: String,
    pub consent: Option<(Vec<String>, Option<Vec<String>>)>,
    pub subject: Vec<Vec<Seg>>,
    pub base64: bool,
    pub key_id_prefix: bool,
    pub truncate_bytes: usize,
    pub fields: Option<Fields>,
    pub rules: Vec<Rule>,
}

fn quote_key(k: &str) -> String {
    format!("\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn path_text(p: &[Seg]) -> String {
    let mut s = String::new();
    for (i, seg) in p.iter().enumerate() {
        match seg {
            Seg::Each => s.push_str("[]"),
            Seg::Key(k) => {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(&quote_key(k));
            }
            Seg::Any => {
                if i > 0 {
                    s.push('.');
                }
                s.push('*');
            }
        }
    }
    s
}

fn exact_text(p: &[String]) -> String {
    p.iter().map(|k| quote_key(k)).collect::<Vec<_>>().join(".")
}

fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn num_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn act_yaml(a: &Act) -> String {
    let list = |v: &[String]| v.iter().map(|s| yaml_str(s)).collect::<Vec<_>>().join(", ");
    match a {
        Act::Keep => "keep".into(),
        Act::Drop => "drop".into(),
        Act::Pseudo(n) if n.is_empty() => "pseudonymise".into(),
        Act::Pseudo(n) => {
            let steps: Vec<&str> = n
                .iter()
                .map(|s| match s {
                    Norm::Trim => "trim",
                    Norm::Lower => "lowercase",
                })
                .collect();
            format!(
                "{{ pseudonymise: {{ normalise: [{}] }} }}",
                steps.join(", ")
            )
        }
        Act::Ip { v4, v6 } => format!("{{ ip_prefix: {{ v4: {v4}, v6: {v6} }} }}"),
        Act::Url(k) => format!("{{ url: {{ keep_query: [{}] }} }}", list(k)),
        Act::Time(u) => format!(
            "{{ truncate_time: {} }}",
            match u {
                Unit::Second => "second",
                Unit::Minute => "minute",
                Unit::Hour => "hour",
                Unit::Day => "day",
            }
        ),
        Act::Edges(e) => format!(
            "{{ bucket: {{ edges: [{}] }} }}",
            e.iter()
                .map(|x| num_text(*x))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Act::Width(w) => format!("{{ bucket: {{ width: {} }} }}", num_text(*w)),
        Act::Redact(p, r) => format!(
            "{{ redact: {{ patterns: [{}], replacement: {} }} }}",
            list(p),
            yaml_str(r)
        ),
    }
}

fn cond_yaml(c: &Cond) -> String {
    match c {
        Cond::Null => "null".into(),
        Cond::Bool(b) => b.to_string(),
        Cond::Num(x) => num_text(*x),
        Cond::Str(s) => serde_json::to_string(s).unwrap(),
    }
}

fn fields_yaml(out: &mut String, f: &Fields, indent: &str) {
    for (p, a) in &f.0 {
        out.push_str(&format!(
            "{indent}{}: {}\n",
            yaml_str(&path_text(p)),
            act_yaml(a)
        ));
    }
}

impl Model {
    /// The policy file veil reads.
    pub fn to_yaml(&self) -> String {
        let mut y = format!(
            "name: differential\nversion: 1\npurpose: {}\npseudonyms: {{ encoding: {}, key_id_prefix: {}, truncate_bytes: {} }}\n",
            self.purpose,
            if self.base64 { "base64url" } else { "hex" },
            self.key_id_prefix,
            self.truncate_bytes
        );
        if let Some((p, o)) = &self.consent {
            y.push_str(&format!(
                "consent:\n  purposes: {}\n",
                yaml_str(&exact_text(p))
            ));
            if let Some(o) = o {
                y.push_str(&format!("  opt_out: {}\n", yaml_str(&exact_text(o))));
            }
        }
        if !self.subject.is_empty() {
            let s: Vec<String> = self
                .subject
                .iter()
                .map(|p| yaml_str(&path_text(p)))
                .collect();
            y.push_str(&format!("subject: [{}]\n", s.join(", ")));
        }
        if let Some(f) = &self.fields {
            y.push_str("fields:\n");
            fields_yaml(&mut y, f, "  ");
        }
        if !self.rules.is_empty() {
            y.push_str("rules:\n");
            for r in &self.rules {
                let conds: Vec<String> = r
                    .when
                    .iter()
                    .map(|(p, any)| {
                        let v = if any.len() == 1 {
                            cond_yaml(&any[0])
                        } else {
                            format!(
                                "[{}]",
                                any.iter().map(cond_yaml).collect::<Vec<_>>().join(", ")
                            )
                        };
                        format!("{}: {v}", yaml_str(&exact_text(p)))
                    })
                    .collect();
                y.push_str(&format!("  - when: {{ {} }}\n", conds.join(", ")));
                if r.drop {
                    y.push_str("    drop: true\n");
                }
                if let Some(f) = &r.fields {
                    y.push_str("    fields:\n");
                    fields_yaml(&mut y, f, "      ");
                }
            }
        }
        y
    }

    /// Every path the policy names outside its entries: subjects, consent, conditions.
    fn markers(&self) -> Vec<Vec<Seg>> {
        let exact = |p: &Vec<String>| p.iter().map(|k| Seg::Key(k.clone())).collect::<Vec<_>>();
        let mut m: Vec<Vec<Seg>> = self.subject.clone();
        if let Some((p, o)) = &self.consent {
            m.push(exact(p));
            if let Some(o) = o {
                m.push(exact(o));
            }
        }
        for r in &self.rules {
            for (p, _) in &r.when {
                m.push(exact(p));
            }
        }
        m
    }

    fn field_sets(&self) -> Vec<&Fields> {
        self.fields
            .iter()
            .chain(self.rules.iter().filter_map(|r| r.fields.as_ref()))
            .collect()
    }
}

// ------------------------------------------------------------ path matching

fn seg_matches(s: &Seg, c: &Step) -> bool {
    match (s, c) {
        (Seg::Key(k), Step::K(c)) => k == c,
        (Seg::Any, Step::K(_)) => true,
        (Seg::Each, Step::I) => true,
        _ => false,
    }
}

/// `pattern` names exactly the place `path`.
pub fn names(pattern: &[Seg], path: &[Step]) -> bool {
    pattern.len() == path.len() && pattern.iter().zip(path).all(|(s, c)| seg_matches(s, c))
}

/// `pattern` names `path` or one of its ancestors.
fn covers(pattern: &[Seg], path: &[Step]) -> bool {
    pattern.len() <= path.len() && names(pattern, &path[..pattern.len()])
}

/// Which of two patterns naming the same place wins: compared from the last
/// segment back, an exact key beats `*`.
fn specificity(a: &[Seg], b: &[Seg]) -> Ordering {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        let rank = |s: &Seg| matches!(s, Seg::Key(_)) as u8;
        match rank(x).cmp(&rank(y)) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

/// One allowlist, with everything else the policy names beneath places.
struct Tree<'m> {
    entries: &'m [(Vec<Seg>, Act)],
    markers: &'m [Vec<Seg>],
}

impl Tree<'_> {
    /// The entry that decides the place `path` itself, if any names it.
    fn action_at(&self, path: &[Step]) -> Option<&Act> {
        self.entries
            .iter()
            .filter(|(p, _)| names(p, path))
            .max_by(|(a, _), (b, _)| specificity(a, b))
            .map(|(_, a)| a)
    }

    /// Whether unlisted values at `path` are kept: the nearest listed
    /// `keep`/`drop` at or above it decides; the event itself is `drop`.
    fn keeps(&self, path: &[Step]) -> bool {
        for n in (1..=path.len()).rev() {
            match self.action_at(&path[..n]) {
                Some(Act::Keep) => return true,
                Some(Act::Drop) => return false,
                _ => {}
            }
        }
        false
    }

    /// What the paths beneath `path` expect there: (object keys, array elements).
    fn beneath(&self, path: &[Step]) -> (bool, bool) {
        let mut keys = false;
        let mut each = false;
        let all = self.entries.iter().map(|(p, _)| p).chain(self.markers);
        for p in all {
            if p.len() > path.len() && names(&p[..path.len()], path) {
                match p[path.len()] {
                    Seg::Each => each = true,
                    _ => keys = true,
                }
            }
        }
        (keys, each)
    }
}

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

fn at<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn cond_holds(v: &Value, any: &[Cond]) -> bool {
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
                for p in universe.iter().filter(|p| names(s, p)) {
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
        out
    }

    /// Apply the policy to one event, recording every input scalar's fate in `leaves`.
    pub fn apply(&self, event: &Value, leaves: &mut Leaves) -> Verdict {
        let m = &self.model;
        if let Some((purposes, opt_out)) = &m.consent {
            if let Some(o) = opt_out.as_ref().and_then(|o| at(event, o))
                && !matches!(o, Value::Bool(false) | Value::Null)
            {
                return Verdict::Drop(Dropped::OptedOut);
            }
            let granted = at(event, purposes)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(m.purpose.as_str())));
            if !granted {
                return Verdict::Drop(Dropped::NoConsent);
            }
        }
        let rule = m.rules.iter().find(|r| {
            r.when
                .iter()
                .all(|(p, any)| at(event, p).is_some_and(|v| cond_holds(v, any)))
        });
        let fields = match rule {
            Some(r) if r.drop => return Verdict::Drop(Dropped::ByRule),
            Some(r) => r.fields.as_ref().or(m.fields.as_ref()),
            None => m.fields.as_ref(),
        };
        let Some(fields) = fields else {
            return Verdict::Drop(Dropped::NoRule);
        };
        let tree = Tree {
            entries: &fields.0,
            markers: &self.markers,
        };
        let Value::Object(members) = event else {
            panic!("events are objects")
        };
        let mut path = Vec::new();
        let out = self.members(&tree, &mut path, members, leaves);
        Verdict::Forward(out.unwrap_or(Exp::Obj(Vec::new())))
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
                out.push((k.clone(), x));
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
                return Some(Exp::Exact(v.clone()));
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
            // The shape differs from what the paths beneath expect.
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
        let fate = if self.model.subject.iter().any(|s| covers(s, path)) {
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
                    Act::Edges(e) => e.iter().copied().filter(|e| *e <= x).last(),
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

fn steps_text(p: &[Step]) -> String {
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
fn exposure(tree: &Tree, q: &[Step]) -> Option<&'static str> {
    for n in 1..=q.len() {
        if let Some(a) = tree.action_at(&q[..n]).filter(|a| a.is_transform()) {
            // Above `q`: a container there is removed. At `q`: the transform decides.
            return (n == q.len() && !matches!(a, Act::Pseudo(_))).then_some("generalised");
        }
    }
    let (keys, each) = tree.beneath(q);
    (!keys && !each && tree.keeps(q)).then_some("kept in clear")
}

// ------------------------------------------------------------- transforms

fn mask32(x: u32, bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        x & (u32::MAX << (32 - u32::from(bits)))
    }
}

fn mask128(x: u128, bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        x & (u128::MAX << (128 - u32::from(bits)))
    }
}

/// Where an IPv6 address embeds an IPv4 one: (bit offset from the top, XOR applied).
pub fn embedded_v4(a: Ipv6Addr) -> Option<(u32, u32)> {
    let x = u128::from(a);
    let top96 = x >> 32;
    if top96 == 0xffff {
        return Some((96, 0)); // IPv4-mapped ::ffff:0:0/96
    }
    if top96 == 0 && (x as u32) > 1 {
        return Some((96, 0)); // IPv4-compatible ::a.b.c.d
    }
    if top96 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some((96, 0)); // NAT64 64:ff9b::/96
    }
    if x >> 112 == 0x2002 {
        return Some((16, 0)); // 6to4 2002:AABB:CCDD::/48
    }
    if x >> 96 == 0x2001_0000 {
        return Some((96, u32::MAX)); // Teredo: client address, inverted
    }
    None
}

fn bits_at(x: u128, offset: u32) -> u32 {
    (x >> (96 - offset)) as u32
}

fn ip_prefix(s: &str, v4: u8, v6: u8) -> Option<Exp> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(Exp::Exact(Value::String(
            Ipv4Addr::from(mask32(u32::from(a), v4)).to_string(),
        ))),
        IpAddr::V6(a) if embedded_v4(a).is_some() => Some(Exp::Check {
            check: Check::EmbeddedIp {
                input: s.to_owned(),
                v4,
            },
            may_vanish: true,
        }),
        IpAddr::V6(a) => Some(Exp::Exact(Value::String(
            Ipv6Addr::from(mask128(u128::from(a), v6)).to_string(),
        ))),
    }
}

/// `Err` says how an output leaks the host part of an embedded IPv4 address.
pub fn check_embedded(input: &str, v4: u8, out: &Value) -> Result<(), String> {
    let Some(text) = out.as_str() else {
        return Err(format!("ip_prefix of {input} gave a non-string {out}"));
    };
    let a: Ipv6Addr = input.parse().expect("checked when planned");
    let (offset, xor) = embedded_v4(a).expect("checked when planned");
    let host_in = (bits_at(u128::from(a), offset) ^ xor) & !mask32(u32::MAX, v4);
    // The output's bits where the input embeds its IPv4 address (all zero:
    // removed, whatever the encoding).
    let raw_out = match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(o)) => u32::from(o) ^ xor,
        Ok(IpAddr::V6(o)) => bits_at(u128::from(o), offset),
        Err(_) => {
            return Err(format!(
                "ip_prefix of {input} gave {text:?}, not an address"
            ));
        }
    };
    let host_out = (raw_out ^ xor) & !mask32(u32::MAX, v4);
    if host_in != 0 && raw_out != 0 && host_in == host_out {
        return Err(format!(
            "ip_prefix of {input} gave {text}: the embedded IPv4 address keeps its host bits beyond /{v4}"
        ));
    }
    Ok(())
}

/// `*` is any run of characters, `?` one character, everything else literal.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(&p, &n)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The documented `url` result: `None` for what is not an absolute http(s)
/// URL with a host or a path-absolute reference.
fn url(s: &str, keep: &[String]) -> Option<Exp> {
    let no_fragment = s.split('#').next().unwrap_or_default();
    let (before, query) = match no_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (no_fragment, None),
    };
    let base = if s.starts_with('/') && !s.starts_with("//") {
        before.to_owned()
    } else {
        let u = url::Url::parse(s).ok()?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
            return None;
        }
        let mut u = u;
        u.set_fragment(None);
        u.set_query(None);
        u.set_username("").ok()?;
        u.set_password(None).ok()?;
        u.to_string()
    };
    let params: Vec<String> = query
        .unwrap_or_default()
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = percent_decode(p.split('=').next().unwrap_or_default());
            keep.iter().any(|g| glob(g, &name))
        })
        .map(str::to_owned)
        .collect();
    Some(Exp::Check {
        check: Check::Url { base, params },
        may_vanish: false,
    })
}

pub fn check_url(base: &str, params: &[String], out: &Value) -> Result<(), String> {
    let Some(text) = out.as_str() else {
        return Err(format!("url gave a non-string {out}"));
    };
    let (b, q) = match text.split_once('?') {
        Some((b, q)) => (b, q),
        None => (text, ""),
    };
    let got: Vec<&str> = q.split(['&', ';']).filter(|p| !p.is_empty()).collect();
    if b != base || got != params || text.contains('#') || (params.is_empty() && text.contains('?'))
    {
        return Err(format!(
            "url gave {text:?}; want {base:?} with parameters {params:?}"
        ));
    }
    Ok(())
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 `date-time` to UTC, truncated; `None` when unreadable or when
/// the UTC result falls outside years 0000-9999.
pub fn truncate_time(s: &str, unit: Unit) -> Option<String> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > dim[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match &s[i..] {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    let step = match unit {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3600,
        Unit::Day => 86400,
    };
    let t = secs.div_euclid(step) * step;
    let (yy, mm, dd) = civil_from_days(t.div_euclid(86400));
    if !(0..=9999).contains(&yy) {
        return None;
    }
    let r = t.rem_euclid(86400);
    Some(format!(
        "{yy:04}-{mm:02}-{dd:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    ))
}

// -------------------------------------------------------------- comparing

/// JSON equality with numbers compared by value.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_value(v, w))
        }
        _ => a == b,
    }
}

fn may_vanish(e: &Exp) -> bool {
    match e {
        Exp::Exact(_) => false,
        Exp::Check { may_vanish, .. } => *may_vanish,
        Exp::Obj(m) => m.iter().all(|(_, e)| may_vanish(e)),
        Exp::Arr(a) => a.iter().all(may_vanish),
    }
}

/// Whether `out` is an acceptable output for `exp`; `Err` explains a difference.
pub fn matches(exp: &Exp, out: &Value) -> Result<(), String> {
    match (exp, out) {
        (Exp::Exact(x), _) if same_value(x, out) => Ok(()),
        (Exp::Check { check, .. }, _) => match check {
            Check::EmbeddedIp { input, v4 } => check_embedded(input, *v4, out),
            Check::Url { base, params } => check_url(base, params, out),
        },
        (Exp::Obj(m), Value::Object(o)) if !o.is_empty() => {
            for (k, v) in o {
                match m.iter().find(|(ek, _)| ek == k) {
                    Some((_, e)) => matches(e, v).map_err(|e| format!("{k}: {e}"))?,
                    None => return Err(format!("member {k:?} should not be there")),
                }
            }
            for (k, e) in m {
                if !o.contains_key(k) && !may_vanish(e) {
                    return Err(format!("member {k:?} is missing"));
                }
            }
            Ok(())
        }
        (Exp::Arr(a), Value::Array(o)) if !o.is_empty() => {
            fn fit(a: &[Exp], o: &[Value]) -> bool {
                match (a.split_first(), o.split_first()) {
                    (None, _) => o.is_empty(),
                    (Some((e, ra)), Some((v, ro))) if matches(e, v).is_ok() && fit(ra, ro) => true,
                    (Some((e, ra)), _) => may_vanish(e) && fit(ra, o),
                }
            }
            if fit(a, o) {
                Ok(())
            } else {
                Err(format!(
                    "array {out} does not fit the expected {}",
                    describe(exp)
                ))
            }
        }
        _ => Err(format!("got {out}, want {}", describe(exp))),
    }
}

/// Match the whole event: an event with nothing left is `{}`.
pub fn matches_event(exp: &Exp, out: &Value) -> Result<(), String> {
    match out {
        Value::Object(o) if o.is_empty() => {
            if may_vanish(exp) {
                Ok(())
            } else {
                Err(format!("got {{}}, want {}", describe(exp)))
            }
        }
        _ => matches(exp, out),
    }
}

/// The expected output as JSON-like text (checks shown as `<...>`).
pub fn describe(e: &Exp) -> String {
    match e {
        Exp::Exact(v) => v.to_string(),
        Exp::Check { check, may_vanish } => {
            let opt = if *may_vanish { " or removed" } else { "" };
            match check {
                Check::EmbeddedIp { input, v4 } => {
                    format!("<{input} with its IPv4 cut to /{v4}{opt}>")
                }
                Check::Url { base, params } => format!("<{base} with {params:?}{opt}>"),
            }
        }
        Exp::Obj(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), describe(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Exp::Arr(a) => format!("[{}]", a.iter().map(describe).collect::<Vec<_>>().join(",")),
    }
}
