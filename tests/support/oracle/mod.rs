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

mod apply;
mod compare;
mod generalise;
mod paths;

pub use apply::*;
pub use compare::*;
pub use generalise::*;
pub use paths::*;

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

pub(crate) fn quote_key(k: &str) -> String {
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

pub(crate) fn exact_text(p: &[String]) -> String {
    p.iter().map(|k| quote_key(k)).collect::<Vec<_>>().join(".")
}

pub(crate) fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn num_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

pub(crate) fn act_yaml(a: &Act) -> String {
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

pub(crate) fn cond_yaml(c: &Cond) -> String {
    match c {
        Cond::Null => "null".into(),
        Cond::Bool(b) => b.to_string(),
        Cond::Num(x) => num_text(*x),
        Cond::Str(s) => serde_json::to_string(s).unwrap(),
    }
}

pub(crate) fn fields_yaml(out: &mut String, f: &Fields, indent: &str) {
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
