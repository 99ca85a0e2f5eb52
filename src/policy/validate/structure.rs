//! Every structural problem in one run. serde stops at the first unknown
//! key or action; when it does, this pass reads the file again as a plain
//! tree of spanned nodes and reports every unknown key and action it can
//! find, each at its place, so three typos take one run of `veil check`.

use std::fmt;

use indexmap::IndexMap;
use serde::de::value::StrDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::did_you_mean;
use crate::policy::error::Diagnostic;
use crate::policy::spec::{ACTION_NAMES, RawAction};

/// A YAML value with the place of every key and value in it.
enum Node {
    Map(IndexMap<Spanned<String>, Spanned<Node>>),
    Seq(Vec<Spanned<Node>>),
    Scalar(Option<String>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut m = IndexMap::new();
        while let Some(k) = map.next_key::<Spanned<String>>()? {
            let v = map.next_value::<Spanned<Node>>()?;
            m.insert(k, v);
        }
        Ok(Node::Map(m))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Some(v.to_owned())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Some(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Some(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Some(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Some(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
}

const TOP: &[&str] = &[
    "name",
    "version",
    "purpose",
    "consent",
    "subject",
    "pseudonyms",
    "fields",
    "rules",
    "waivers",
    "scan",
];
const CONSENT: &[&str] = &["purposes", "category", "opt_out", "opt_out_header", "tcf"];
const TCF: &[&str] = &["path", "purposes", "legitimate_interest", "vendor"];
const PSEUDONYMS: &[&str] = &["encoding", "key_id_prefix", "truncate_bytes"];
const RULE: &[&str] = &["when", "fields", "drop"];
const WAIVER: &[&str] = &["category", "reason"];

/// The option keys of each action that takes a map of options.
fn action_options(action: &str) -> Option<&'static [&'static str]> {
    Some(match action {
        "keep" => &["scan"],
        "pseudonymise" => &["normalise"],
        "ip_prefix" => &["v4", "v6"],
        "url" => &["keep_query", "scan"],
        "bucket" => &["edges", "width"],
        "redact" => &["patterns", "replacement"],
        _ => return None,
    })
}

struct Walk<'a> {
    file: &'a str,
    found: Vec<Diagnostic>,
}

impl Walk<'_> {
    fn at(&mut self, at: &Location, message: String, hint: Option<String>) {
        self.found.push(Diagnostic {
            file: self.file.to_owned(),
            line: at.line(),
            column: at.column(),
            message,
            hint,
        });
    }

    /// Unknown keys of a mapping that allows `known`.
    fn keys(&mut self, map: &IndexMap<Spanned<String>, Spanned<Node>>, known: &[&str], what: &str) {
        for k in map.keys() {
            if !known.contains(&k.value.as_str()) {
                let hint = did_you_mean(&k.value, known).map_or_else(
                    || format!("{what} may have: {}", known.join(", ")),
                    |s| format!("did you mean `{s}`? {what} may have: {}", known.join(", ")),
                );
                self.at(
                    &k.referenced,
                    format!("unknown key `{}` in {what}", k.value),
                    Some(hint),
                );
            }
        }
    }

    fn policy(&mut self, top: &IndexMap<Spanned<String>, Spanned<Node>>) {
        self.keys(top, TOP, "a policy");
        for (k, v) in top {
            match (k.value.as_str(), &v.value) {
                ("consent", Node::Map(m)) => {
                    self.keys(m, CONSENT, "`consent`");
                    for (k, v) in m {
                        if let ("tcf", Node::Map(t)) = (k.value.as_str(), &v.value) {
                            self.keys(t, TCF, "`consent.tcf`");
                        }
                    }
                }
                ("pseudonyms", Node::Map(m)) => self.keys(m, PSEUDONYMS, "`pseudonyms`"),
                ("fields", Node::Map(m)) => self.fields(m),
                ("rules", Node::Seq(rules)) => {
                    for r in rules {
                        if let Node::Map(m) = &r.value {
                            self.keys(m, RULE, "a rule");
                            for (k, v) in m {
                                if let ("fields", Node::Map(f)) = (k.value.as_str(), &v.value) {
                                    self.fields(f);
                                }
                            }
                        }
                    }
                }
                ("waivers", Node::Map(m)) => {
                    for w in m.values() {
                        if let Node::Map(w) = &w.value {
                            self.keys(w, WAIVER, "a waiver");
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn fields(&mut self, fields: &IndexMap<Spanned<String>, Spanned<Node>>) {
        for action in fields.values() {
            match &action.value {
                Node::Scalar(Some(name)) if !ACTION_NAMES.contains(&name.as_str()) => {
                    self.unknown_action(&action.referenced, name);
                }
                Node::Map(m) => {
                    for (name, options) in m {
                        if !ACTION_NAMES.contains(&name.value.as_str()) {
                            self.unknown_action(&name.referenced, &name.value);
                        } else if let (Some(known), Node::Map(o)) =
                            (action_options(&name.value), &options.value)
                        {
                            self.keys(o, known, &format!("`{}`", name.value));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn unknown_action(&mut self, at: &Location, name: &str) {
        // The strict parser's message for it, so both passes say the same.
        let read = RawAction::deserialize(StrDeserializer::<de::value::Error>::new(name));
        let message = read
            .err()
            .map_or_else(|| format!("unknown action `{name}`"), |e| e.to_string());
        self.at(at, message, None);
    }
}

/// Every unknown key and action in `text`, at its place. Empty when the
/// text is not YAML at all (the strict parser's error says why).
pub(super) fn problems(text: &str, file: &str) -> Vec<Diagnostic> {
    let Ok(Node::Map(top)) = serde_saphyr::from_str::<Node>(text) else {
        return Vec::new();
    };
    let mut walk = Walk {
        file,
        found: Vec::new(),
    };
    walk.policy(&top);
    walk.found
}
