//! Raw policy -> [`Policy`]: every check that needs more than the YAML shape.
//! All problems are collected, so one run of `veil check` shows them all.

use regex::Regex;
use serde_saphyr::{Location, Spanned};

use super::error::{Diagnostic, PolicyError};
use super::number::Decimal;
use super::path::FieldPath;
use super::spec::{RawAction, RawCondition, RawFields, RawPolicy};
use super::spec::{RawConsent, RawTcf};
use super::trie::{self, Exposure};
use super::{Action, Buckets, Condition, Consent, FieldRule, FieldSet, Policy, Rule, Scalar, Tcf};

mod guardrails;
mod structure;

struct Checker<'a> {
    file: &'a str,
    warnings: Vec<Diagnostic>,
    /// The policy text, to read condition scalars exactly as written.
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// The comment that explains each line, if any (see [`line_notes`]).
    notes: Vec<Option<String>>,
}

impl Checker<'_> {
    /// A condition value as its author wrote it. YAML 1.1 reads plain `NO`,
    /// `on` or `y` as booleans and `0x10` or `01234` as numbers: a condition
    /// must compare what the author meant, so such scalars are refused with a
    /// hint to quote them, and numbers are kept exactly as written.
    fn condition_value(
        &mut self,
        key: &str,
        value: &serde_json::Value,
        at: &Location,
    ) -> Option<Scalar> {
        use serde_json::Value;
        let raw = at
            .span()
            .byte_offset()
            .zip(at.span().byte_len())
            .and_then(|(s, n)| {
                self.source
                    .get(usize::try_from(s).ok()?..usize::try_from(s + n).ok()?)
            })
            .map(str::trim);
        let problem = match (value, raw) {
            (Value::String(s), _) => return Some(Scalar::String(s.clone())),
            (Value::Bool(b), Some("true" | "false")) => return Some(Scalar::Bool(*b)),
            (Value::Null, Some("null")) => return Some(Scalar::Null),
            (Value::Number(_), Some(raw)) => match Decimal::parse(raw) {
                Some(d) => return Some(Scalar::Number(d)),
                None => {
                    format!("`{raw}` is not a plain decimal number; YAML would read it as {value}")
                }
            },
            (Value::Array(_) | Value::Object(_), _) => {
                self.error(
                    at,
                    format!("condition on `{key}` must be a value or a list of values (strings, numbers, booleans, null)"),
                    None,
                );
                return None;
            }
            (_, Some(raw)) => format!("`{raw}` is ambiguous: YAML reads it as {value}"),
            (_, None) => format!("this value is ambiguous: YAML reads it as {value}"),
        };
        self.error(
            at,
            format!("condition on `{key}`: {problem}"),
            Some("quote it (`\"NO\"`) to compare text; write `true`, `false`, `null` or a JSON number (`16`, `1234`) otherwise"),
        );
        None
    }

    /// Line and column of `key` inside the mapping that starts at `at` (for a
    /// diagnostic on one option of a mapping); those of `at` if not found.
    fn key_within(&self, at: &Location, key: &str) -> (u64, u64) {
        let found = at
            .span()
            .byte_offset()
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| Some(s + self.source.get(s..)?.find(key)?));
        let Some(before) = found.and_then(|offset| self.source.get(..offset)) else {
            return (at.line(), at.column());
        };
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        (line as u64, column as u64)
    }

    fn error(&mut self, at: &Location, message: impl Into<String>, hint: Option<&str>) {
        self.error_at((at.line(), at.column()), message, hint);
    }

    fn error_at(
        &mut self,
        (line, column): (u64, u64),
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    fn warning_at(&mut self, (line, column): (u64, u64), message: String, hint: Option<String>) {
        self.warnings.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message,
            hint,
        });
    }

    fn path(&mut self, raw: &Spanned<String>, what: &str) -> Option<FieldPath> {
        match FieldPath::parse(&raw.value) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(
                    &raw.referenced,
                    format!("bad {what} path `{}`: {e}", raw.value),
                    Some("paths are dot-separated keys, `*` for any one key, `[]` for every array element, and \"quotes\" around keys that contain a dot"),
                );
                None
            }
        }
    }

    fn exact_path(&mut self, raw: &Spanned<String>, what: &str) -> Option<FieldPath> {
        let path = self.path(raw, what)?;
        if !path.is_exact() {
            self.error(
                &raw.referenced,
                format!(
                    "{what} path `{}` must name one place; `*` and `[]` are not allowed here",
                    raw.value
                ),
                None,
            );
            return None;
        }
        Some(path)
    }
}

pub(super) fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = e.without_snippet().to_string();
        let message = strip_location_prefix(&message);
        // A key written without a value is YAML's null: say so plainly.
        let message = if message.starts_with("cannot deserialize null") {
            "this key has no value (YAML reads an empty value as null)".to_owned()
        } else {
            message
        };
        let hint = if message.contains("unknown field") {
            Some(unknown_field_hint(&message, "docs/policy.md for every key a policy may have"))
        } else if message.contains("has no value")
            || message.contains("expected mapping start")
            || message.contains("expected sequence start")
        {
            Some("give the key its value, or remove the key: an empty key never stands for an absent check".to_owned())
        } else if message.contains("duplicate mapping key") {
            Some("each key may appear once in a mapping; merge the two entries".to_owned())
        } else {
            None
        };
        let first = Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message,
            hint,
        };
        // serde stops at the first problem: report every other unknown key
        // and action too, each once (the first one's line is already told).
        let mut diagnostics: Vec<Diagnostic> = structure::problems(text, file)
            .into_iter()
            .filter(|d| d.line != first.line)
            .collect();
        diagnostics.push(first);
        diagnostics.sort_by_key(|d| (d.line, d.column));
        PolicyError::Invalid { diagnostics }
    })?;
    let mut c = Checker {
        file,
        source: text,
        diagnostics: Vec::new(),
        warnings: Vec::new(),
        notes: line_notes(text),
    };
    let policy = check(&mut c, raw, super::sha256_hex(text.as_bytes()));
    match policy {
        Some(mut p) if c.diagnostics.is_empty() => {
            p.warnings = c.warnings;
            Ok(p)
        }
        _ => Err(PolicyError::Invalid {
            diagnostics: c.diagnostics,
        }),
    }
}

/// serde-saphyr prefixes messages with `error: line L column C: `; we print
/// the place ourselves, in `file:line:col` form.
pub(crate) fn strip_location_prefix(message: &str) -> String {
    let m = message.trim();
    // Some messages end with the place too.
    let m = match m.rfind(" at line ") {
        Some(i) if m[i..].contains(", column ") => &m[..i],
        _ => m,
    };
    let m = m
        .strip_suffix(", set DuplicateKeyPolicy in Options if acceptable")
        .unwrap_or(m);
    let m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        return rest[idx + 2..].to_owned();
    }
    m.to_owned()
}

/// The "why" of each line, from the policy's own comments: a comment at the
/// end of the line, or else the comment block that opens the group of lines
/// it belongs to (a group ends at a blank line). Index = 1-based line.
fn line_notes(text: &str) -> Vec<Option<String>> {
    let mut notes = vec![None];
    let mut group: Option<String> = None;
    let mut in_comment_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            group = None;
            in_comment_block = false;
            notes.push(None);
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            group = match (in_comment_block, group.take()) {
                (true, Some(g)) => Some(format!("{g} {comment}")),
                _ => Some(comment.to_owned()),
            };
            in_comment_block = true;
            notes.push(None);
            continue;
        }
        in_comment_block = false;
        // A trailing comment: ` #` outside quotes (good enough for policy lines).
        let trailing = line
            .find(" #")
            .filter(|i| line[..*i].matches(['"', '\'']).count() % 2 == 0)
            .map(|i| line[i + 2..].trim().to_owned());
        notes.push(trailing.or_else(|| group.clone()).filter(|n| !n.is_empty()));
    }
    notes
}

/// The candidate closest to `word`, if one is close enough to be a typo
/// (`ip_prefx` → `ip_prefix`, `consnet` → `consent`).
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The hint for serde's "unknown field `x`, expected one of a, b" (or
/// "expected `a` or `b`"): the nearest valid key when it looks like a typo,
/// then where to read about them all.
pub(crate) fn unknown_field_hint(message: &str, see: &str) -> String {
    let unknown = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("unknown field `"));
    let candidates: Vec<&str> = message
        .split_once("expected ")
        .map(|(_, rest)| rest.trim_start_matches("one of "))
        .map(|rest| {
            rest.split([',', ' '])
                .map(|w| w.trim_matches('`'))
                .filter(|w| !w.is_empty() && *w != "or")
                .collect()
        })
        .unwrap_or_default();
    match unknown.and_then(|u| did_you_mean(u, &candidates)) {
        Some(s) => format!("did you mean `{s}`? see {see}"),
        None => format!("see {see}"),
    }
}

/// The rule for a policy's `name` and `purpose` (also `veil hash --purpose`).
pub fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check(c: &mut Checker, raw: RawPolicy, sha256: String) -> Option<Policy> {
    // `version: "1"` is a string that serde reads as a number: the docs
    // promise an integer, so the file must say one.
    let version_at = &raw.version.referenced;
    let quoted = version_at
        .span()
        .byte_offset()
        .and_then(|o| c.source.get(usize::try_from(o).ok()?..))
        .is_some_and(|rest| rest.starts_with(['"', '\'']));
    if quoted {
        c.error(
            version_at,
            "`version` must be an integer, not a string",
            Some("write `version: 1`, without quotes"),
        );
    }
    for (field, value) in [("name", &raw.name), ("purpose", &raw.purpose)] {
        if !name_ok(&value.value) {
            c.error(
                &value.referenced,
                format!(
                    "`{field}` must be letters, digits, `.`, `_` or `-`; got `{}`",
                    value.value
                ),
                None,
            );
        }
    }
    let p = &raw.pseudonyms.value;
    if !(16..=32).contains(&p.truncate_bytes) {
        let at = c.key_within(&raw.pseudonyms.referenced, "truncate_bytes");
        c.error_at(
            at,
            format!(
                "pseudonyms.truncate_bytes is {}; it must be between 16 and 32",
                p.truncate_bytes
            ),
            Some("fewer than 16 bytes (128 bits) makes pseudonyms collide and guessable"),
        );
    }

    let consent = raw
        .consent
        .as_ref()
        .and_then(|rc| consent(c, rc, &raw.purpose.value));

    let subject: Vec<(FieldPath, Location)> = raw
        .subject
        .iter()
        .filter_map(|s| Some((c.path(s, "subject")?, s.referenced)))
        .collect();

    let fields = raw.fields.as_ref().map(|f| field_set(c, f));
    let mut rules = Vec::new();
    for (i, spanned_rule) in raw.rules.iter().enumerate() {
        let rr = &spanned_rule.value;
        let rule_at = spanned_rule.referenced;
        let line = rule_at.line();
        let mut when = Vec::new();
        if rr.when.is_empty() {
            c.error(
                &rule_at,
                format!(
                    "rule {} has an empty `when`; it would match every event",
                    i + 1
                ),
                Some("put such a default in the top-level `fields` instead"),
            );
        }
        for (k, v) in &rr.when {
            let Some(path) = c.exact_path(k, "rule condition") else {
                continue;
            };
            let written: Vec<(&serde_json::Value, &Location)> = match &v.value {
                RawCondition::One(value) => vec![(value, &v.defined)],
                RawCondition::AnyOf(items) => {
                    items.iter().map(|i| (&i.value, &i.defined)).collect()
                }
            };
            let any_of: Option<Vec<Scalar>> = written
                .into_iter()
                .map(|(value, at)| c.condition_value(&k.value, value, at))
                .collect();
            if let Some(any_of) = any_of {
                when.push(Condition { path, any_of });
            }
        }
        let rule_fields = rr.fields.as_ref().map(|f| field_set(c, f));
        if !rr.drop && rule_fields.is_none() && fields.is_none() {
            c.error(
                &rule_at,
                format!(
                    "rule {} has no `fields` and there is no top-level `fields` to fall back on",
                    i + 1
                ),
                Some("give the rule `fields:`, or `drop: true`"),
            );
        }
        if rr.drop && rr.fields.is_some() {
            c.error(
                &rule_at,
                format!(
                    "rule {} has `drop: true` and `fields`; a dropped event has no fields",
                    i + 1
                ),
                None,
            );
        }
        rules.push(Rule {
            when,
            fields: rule_fields,
            drop: rr.drop,
            line,
        });
    }
    if raw.fields.is_none() && raw.rules.is_empty() {
        c.error(
            &raw.name.referenced,
            "the policy has neither `fields` nor `rules`, so it would drop every event",
            Some("add a `fields:` allowlist"),
        );
    }

    let subject_paths: Vec<FieldPath> = subject.iter().map(|(p, _)| p.clone()).collect();
    let plan = trie::plan(
        fields.as_ref(),
        &rules,
        consent.as_ref(),
        &subject_paths,
        false,
        raw.scan,
    );
    let allowlists: Vec<(String, &FieldSet, &trie::Node)> = fields
        .iter()
        .zip(plan.default.iter())
        .map(|(f, n)| ("`fields`".to_owned(), f, n))
        .chain(
            plan.rules
                .iter()
                .zip(&rules)
                .enumerate()
                .filter_map(|(i, (r, rule))| {
                    Some((
                        format!("rule {}", i + 1),
                        rule.fields.as_ref()?,
                        r.fields.as_ref()?,
                    ))
                }),
        )
        .collect();
    // Subject identifiers must never pass in clear, under any rule. The
    // error points at the entry that lets the identifier through.
    for (where_, set, tree) in &allowlists {
        for (path, at) in &subject {
            let exact = trie::exposure(tree, path);
            let reshaped = exact.is_none() && trie::reshaped_exposure(tree, path).is_some();
            if reshaped {
                c.error_at(
                    (at.line(), at.column()),
                    format!(
                        "subject identifier `{path}` (declared at line {}) passes in clear under {where_} when an event sends its way in another shape: an array where the path names an object member, or an object where it names an array, walked by an entry that keeps it",
                        at.line()
                    ),
                    Some(
                        "give the other shape the identifier's own rule too (for `a.b` with `a[]: keep`, add `a[].b: pseudonymise`), or do not keep it",
                    ),
                );
                continue;
            }
            let (what, hint) = match exact {
                None => continue,
                Some(Exposure::Kept) => (
                    "kept in clear".to_owned(),
                    "pseudonymise it (`pseudonymise`) or leave it out of the allowlist; keeping it would publish the raw identifier",
                ),
                Some(Exposure::Generalised(action)) => (
                    format!("generalised with `{action}`"),
                    "a subject identifier may only be pseudonymised or dropped: a generaliser can leave it unchanged (an exact IP, a value no pattern matches) and is no pseudonym",
                ),
                Some(Exposure::ContentKept) => (
                    "partly kept (something inside it is kept or generalised)".to_owned(),
                    "list the identifier's own fields as subjects, or drop or pseudonymise everything inside it",
                ),
            };
            let place = guardrails::responsible(set, path)
                .map_or((at.line(), at.column()), |e| (e.line, e.column));
            c.error_at(
                place,
                format!(
                    "subject identifier `{path}` (declared at line {}) is {what} by {where_}",
                    at.line()
                ),
                Some(hint),
            );
        }
    }

    // A `*` inside a kept parent changes what the parent keeps.
    for (where_, set, tree) in &allowlists {
        let entries = set.entries.iter().map(|e| (&e.path, (e.line, e.column)));
        let subjects = subject.iter().map(|(p, at)| (p, (at.line(), at.column())));
        let mut warned: Vec<&FieldPath> = Vec::new();
        for (path, at) in entries.chain(subjects) {
            let Some(parent) = trie::wildcard_under_kept_parent(tree, path) else {
                continue;
            };
            if warned.contains(&path) {
                continue;
            }
            warned.push(path);
            c.warning_at(
                at,
                format!(
                    "`{path}` reaches into every member of `{parent}`, so {where_} expects each to be an object: the scalar and array members `{parent}` keeps are removed (type_mismatch)"
                ),
                Some(format!(
                    "write the path once per object that holds it instead of `*` (`{parent}.<object>.…`)"
                )),
            );
        }
    }

    let waivers = guardrails::check(c, &allowlists, &raw.waivers);

    Some(Policy {
        waivers,
        warnings: Vec::new(),
        name: raw.name.value,
        version: raw.version.value,
        purpose: raw.purpose.value,
        consent,
        subject: subject.into_iter().map(|(p, _)| p).collect(),
        pseudonyms: raw.pseudonyms.value,
        fields,
        rules,
        sha256,
        plan,
        scan: raw.scan,
    })
}

fn field_set(c: &mut Checker, raw: &RawFields) -> FieldSet {
    let mut entries: Vec<(FieldRule, Location)> = Vec::new();
    for (key, raw_action) in raw {
        let action = raw_action;
        let Some(path) = c.path(key, "field") else {
            continue;
        };
        let Some(action) = compile_action(c, &action.value, &action.referenced) else {
            continue;
        };
        // Same place, two actions (`a.b` and `a."b"`).
        if let Some((other, other_at)) = entries.iter().find(|(e, _)| e.path == path) {
            let (message, hint) = match (other.action.name(), action.name()) {
                ("keep", "pseudonymise") | ("pseudonymise", "keep") => (
                    format!(
                        "`{path}` is both kept and pseudonymised (also at line {})",
                        other_at.line()
                    ),
                    "keeping it would publish the raw identifier; keep only the `pseudonymise` entry",
                ),
                (a, b) => (
                    format!(
                        "conflicting actions for `{path}`: `{a}` (line {}) and `{b}`",
                        other_at.line()
                    ),
                    "give each path one action",
                ),
            };
            c.error(&key.referenced, message, Some(hint));
            continue;
        }
        entries.push((
            FieldRule {
                path,
                action,
                scan: match &raw_action.value {
                    RawAction::Keep(o) => o.scan,
                    RawAction::Url(o) => o.scan,
                    _ => None,
                },
                line: key.referenced.line(),
                column: key.referenced.column(),
                note: c
                    .notes
                    .get(key.referenced.line() as usize)
                    .cloned()
                    .flatten(),
            },
            key.referenced,
        ));
    }
    // A transform rewrites a scalar: nothing can be listed below it.
    for (t, _) in entries.iter().filter(|(e, _)| e.action.is_transform()) {
        for (e, at) in &entries {
            if overlaps_below(&t.path, &e.path) {
                c.error(
                    at,
                    format!(
                        "`{}` lies inside `{}`, which is `{}` (a scalar action) at line {}",
                        e.path,
                        t.path,
                        t.action.name(),
                        t.line
                    ),
                    Some("a transformed value has no fields of its own; use `keep` on the parent with per-field entries instead"),
                );
            }
        }
    }
    FieldSet {
        entries: entries.into_iter().map(|(e, _)| e).collect(),
    }
}

/// Whether some event place named by `upper` is a proper ancestor of one named by `lower`.
fn overlaps_below(upper: &FieldPath, lower: &FieldPath) -> bool {
    use super::path::Segment::*;
    lower.0.len() > upper.0.len()
        && upper.0.iter().zip(&lower.0).all(|(u, l)| match (u, l) {
            (Key(a), Key(b)) => a == b,
            (Any, Key(_)) | (Key(_), Any) | (Any, Any) => true,
            (Each, Each) => true,
            _ => false,
        })
}

fn compile_action(c: &mut Checker, raw: &RawAction, at: &Location) -> Option<Action> {
    Some(match raw {
        RawAction::Keep(_) => Action::Keep,
        RawAction::Drop => Action::Drop,
        RawAction::Pseudonymise(o) => Action::Pseudonymise {
            normalise: o.normalise.clone(),
        },
        RawAction::IpPrefix(o) => {
            if o.v4 > 32 || o.v6 > 128 {
                c.error(
                    at,
                    format!(
                        "ip_prefix lengths out of range: v4 {} (0-32), v6 {} (0-128)",
                        o.v4, o.v6
                    ),
                    Some("typical values are v4: 24, v6: 48"),
                );
                return None;
            }
            if o.v4 == 32 || o.v6 == 128 {
                c.error(
                    at,
                    format!(
                        "ip_prefix with v4 {} and v6 {} keeps whole addresses unchanged (v4 32 or v6 128 is the full address)",
                        o.v4, o.v6
                    ),
                    Some("a generaliser must generalise: use v4: 24 and v6: 48 (or shorter), `pseudonymise` to link visits, or `drop`"),
                );
                return None;
            }
            Action::IpPrefix { v4: o.v4, v6: o.v6 }
        }
        RawAction::Url(o) => Action::Url {
            keep_query: o.keep_query.clone(),
            matcher: super::glob::Globs::new(&o.keep_query),
        },
        RawAction::TruncateTime(unit) => Action::TruncateTime(*unit),
        RawAction::Bucket(o) => match (&o.edges, o.width) {
            (Some(edges), None) => {
                let ascending = edges.windows(2).all(|w| w[0] < w[1]);
                if edges.is_empty() || !ascending || edges.iter().any(|e| !e.is_finite()) {
                    c.error(at, "bucket edges must be a non-empty list of finite numbers in ascending order", Some("e.g. `{ bucket: { edges: [0, 18, 25, 35, 50, 65] } }`"));
                    return None;
                }
                Action::Bucket(Buckets::Edges(edges.clone()))
            }
            (None, Some(w)) if w.is_finite() && w > 1.0 => Action::Bucket(Buckets::Width(w)),
            (None, Some(w)) if w.is_finite() && w > 0.0 => {
                c.error(
                    at,
                    format!("bucket width {w} leaves whole numbers unchanged"),
                    Some("use a width above 1 (e.g. `{ bucket: { width: 10 } }`) or `edges`; a width of 1 or less is no generalisation for integer values"),
                );
                return None;
            }
            (None, Some(w)) => {
                c.error(
                    at,
                    format!("bucket width must be a positive number; got {w}"),
                    None,
                );
                return None;
            }
            _ => {
                c.error(
                    at,
                    "bucket takes exactly one of `edges` and `width`",
                    Some("e.g. `{ bucket: { width: 10 } }`"),
                );
                return None;
            }
        },
        RawAction::Redact(o) => {
            if o.patterns.is_empty() {
                c.error(at, "redact needs at least one pattern", None);
                return None;
            }
            let mut patterns = Vec::new();
            for p in &o.patterns {
                match Regex::new(p) {
                    Ok(r) => patterns.push(r),
                    Err(e) => {
                        let first = e.to_string().lines().last().unwrap_or_default().to_owned();
                        c.error(
                            at,
                            format!("bad redact pattern `{p}`: {first}"),
                            Some("patterns use Rust regex syntax (https://docs.rs/regex)"),
                        );
                        return None;
                    }
                }
            }
            Action::Redact {
                patterns,
                replacement: o.replacement.clone(),
            }
        }
    })
}

/// The consent section: at least one check, each well formed.
fn consent(c: &mut Checker<'_>, rc: &Spanned<RawConsent>, purpose: &str) -> Option<Consent> {
    let raw = &rc.value;
    if raw.purposes.is_none()
        && raw.tcf.is_none()
        && raw.opt_out.is_none()
        && raw.opt_out_header.is_none()
    {
        c.error(
            &rc.referenced,
            "consent names no check",
            Some("give `purposes` (where granted purposes are), `tcf` (an IAB TC string), `opt_out` or `opt_out_header`; or remove `consent`"),
        );
        return None;
    }
    let purposes = raw
        .purposes
        .as_ref()
        .map(|p| c.exact_path(p, "consent.purposes"));
    let opt_out = raw
        .opt_out
        .as_ref()
        .map(|p| c.exact_path(p, "consent.opt_out"));
    let category = match &raw.category {
        Some(cat) if cat.value.trim().is_empty() || cat.value.trim() != cat.value => {
            c.error(
                &cat.referenced,
                "consent.category is empty or has surrounding white space",
                Some(
                    "write the consent platform's name for this purpose exactly, e.g. `Analytics`",
                ),
            );
            None
        }
        Some(_) if raw.purposes.is_none() => {
            let at = raw.category.as_ref().map(|cat| cat.referenced);
            if let Some(at) = at {
                c.error(
                    &at,
                    "consent.category without consent.purposes",
                    Some("category names this purpose among the granted ones at `purposes`: add `purposes`, or remove `category`"),
                );
            }
            None
        }
        Some(cat) => Some(cat.value.clone()),
        None => Some(purpose.to_owned()),
    };
    let opt_out_header = match &raw.opt_out_header {
        Some(h) if !valid_header_name(&h.value) => {
            c.error(
                &h.referenced,
                format!("consent.opt_out_header `{}` is not a header name", h.value),
                Some("write the input record's header name, e.g. `sec-gpc` for Global Privacy Control"),
            );
            None
        }
        Some(h) => Some(Some(h.value.to_ascii_lowercase())),
        None => Some(None),
    };
    let tcf = raw.tcf.as_ref().map(|t| tcf(c, t));
    // Each check reads its own place: one inside another could never pass
    // (an object read as an opt-out opts everyone out; a TC string read as
    // a purposes list grants nothing) and would silently drop every event.
    let places: Vec<(&str, &Spanned<String>, Option<&FieldPath>)> = [
        (
            "consent.purposes",
            raw.purposes.as_ref(),
            purposes.as_ref().and_then(Option::as_ref),
        ),
        (
            "consent.opt_out",
            raw.opt_out.as_ref(),
            opt_out.as_ref().and_then(Option::as_ref),
        ),
        (
            "consent.tcf.path",
            raw.tcf.as_ref().map(|t| &t.path),
            tcf.as_ref().and_then(Option::as_ref).map(|t| &t.path),
        ),
    ]
    .into_iter()
    .filter_map(|(what, at, path)| Some((what, at?, path)))
    .collect();
    for (i, (what, at, path)) in places.iter().enumerate() {
        for (other, _, other_path) in places.iter().take(i) {
            let (Some(a), Some(b)) = (path, other_path) else {
                continue;
            };
            if a.0.starts_with(&b.0) || b.0.starts_with(&a.0) {
                c.error(
                    &at.referenced,
                    format!("{what} `{a}` and {other} `{b}` overlap: one is read inside the other"),
                    Some("each consent check needs a place of its own in the event; no event could pass both"),
                );
            }
        }
    }
    Some(Consent {
        purposes: checked(purposes)?,
        opt_out: checked(opt_out)?,
        category: category?,
        opt_out_header: opt_out_header?,
        tcf: checked(tcf)?,
    })
}

/// An optional part, checked: `None` when it was given and is wrong,
/// `Some(None)` when it was not given.
fn checked<T>(part: Option<Option<T>>) -> Option<Option<T>> {
    part.map_or(Some(None), |v| v.map(Some))
}

/// A header name veil can match: visible ASCII without separators.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A TCF v2.2 purpose number (1 to 11).
fn purpose_number(c: &mut Checker<'_>, n: &Spanned<u64>, what: &str) -> Option<u8> {
    let max = crate::tcf::PURPOSES.len() as u64;
    if (1..=max).contains(&n.value) {
        return u8::try_from(n.value).ok();
    }
    c.error(
        &n.referenced,
        format!("{what} {} is not a TCF purpose", n.value),
        Some("TCF v2.2 purposes are numbered 1 to 11 (see `veil explain` for their names)"),
    );
    None
}

/// The TCF rule: purposes 1 to 11, legitimate interest only where TCF 2.2
/// allows it and among the purposes, a vendor id that fits the string.
fn tcf(c: &mut Checker<'_>, raw: &RawTcf) -> Option<Tcf> {
    use crate::tcf::{CONSENT_ONLY, Rule};
    let path = c.exact_path(&raw.path, "consent.tcf.path");
    let mut ok = true;
    let mut purposes: Vec<u8> = Vec::new();
    for n in &raw.purposes.value {
        match purpose_number(c, n, "consent.tcf.purposes:") {
            Some(p) => purposes.push(p),
            None => ok = false,
        }
    }
    let mut legitimate_interest = Vec::new();
    for n in &raw.legitimate_interest {
        let Some(p) = purpose_number(c, n, "consent.tcf.legitimate_interest:") else {
            ok = false;
            continue;
        };
        if CONSENT_ONLY.contains(&p) {
            c.error(
                &n.referenced,
                format!("purpose {p} cannot rest on legitimate interest"),
                Some("TCF 2.2 allows only consent for purposes 1, 3, 4, 5 and 6: remove it from legitimate_interest"),
            );
            ok = false;
        } else if !raw.purposes.value.iter().any(|q| q.value == n.value) {
            c.error(
                &n.referenced,
                format!("purpose {p} is in legitimate_interest but not in purposes"),
                Some("legitimate_interest says how a required purpose may be granted: add it to purposes, or remove it here"),
            );
            ok = false;
        } else {
            legitimate_interest.push(p);
        }
    }
    if raw.purposes.value.is_empty() {
        c.error(
            &raw.purposes.referenced,
            "consent.tcf.purposes is empty",
            Some("list the TCF purposes this use of the data needs, e.g. `[1, 8]` (store on device, measure content performance)"),
        );
        ok = false;
    }
    let vendor = match &raw.vendor {
        Some(v) => match u16::try_from(v.value) {
            Ok(id) if id >= 1 => Some(id),
            _ => {
                c.error(
                    &v.referenced,
                    format!("consent.tcf.vendor {} is not a vendor id", v.value),
                    Some("Global Vendor List ids run from 1 to 65535"),
                );
                ok = false;
                None
            }
        },
        None => None,
    };
    purposes.sort_unstable();
    purposes.dedup();
    legitimate_interest.sort_unstable();
    legitimate_interest.dedup();
    let bits = |ps: &[u8]| ps.iter().fold(0u32, |m, p| m | 1 << (p - 1));
    let rule = Rule {
        purposes: bits(&purposes),
        legitimate_interest: bits(&legitimate_interest),
        vendor,
    };
    (ok && path.is_some()).then_some(())?;
    Some(Tcf {
        path: path?,
        purposes,
        legitimate_interest,
        vendor,
        rule,
    })
}
