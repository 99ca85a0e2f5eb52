//! Policy unit tests (`veil test`): case files, and what a policy made of
//! each case's input compared with what the case expects (pure: the CLI
//! reads the files and prints).
//!
//! A case file is a YAML list of `{name, input, expect}`:
//! - `input`: an event as a mapping (written as compact JSON), or a string
//!   taken as the raw bytes of the message;
//! - `expect`: the clean event, where `{pseudonym: V}` stands for the
//!   pseudonym of `V` (a string's UTF-8, a number's or boolean's text) under
//!   the fixed test key [`crate::keys::test_key`]; or `{dropped: REASON}`;
//!   or `{dead_letter: REASON}`.
//!
//! Invariant: a case passes only when the verdict is the expected one and,
//! for a forwarded event, the output equals the expected event exactly
//! (numbers by value, objects whatever their key order).

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};

use crate::engine::{CompiledPolicy, Scratch};
use crate::outcome::{DropReason, Outcome, RejectReason};
use crate::policy::Diagnostic;
use crate::pseudonym::Pseudonymiser;

/// The reject reasons a case may expect: those the engine gives (the
/// others come from a broker).
const DEAD_LETTER_REASONS: [RejectReason; 7] = [
    RejectReason::InvalidJson,
    RejectReason::InvalidUtf8,
    RejectReason::NotObject,
    RejectReason::TooDeep,
    RejectReason::TooLarge,
    RejectReason::DuplicateKey,
    RejectReason::InternalError,
];

/// One case, checked and ready to run.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Where the case starts: `file:line`.
    pub file: String,
    pub line: u64,
    pub input: Vec<u8>,
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The clean event, pseudonym markers not yet expanded.
    Forwarded(Value),
    Dropped(DropReason),
    DeadLetter(RejectReason),
}

/// A case file that cannot be read as cases.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::policy::error::render(diagnostics, "case file"))]
pub struct CaseError {
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    input: Spanned<Value>,
    expect: Spanned<Value>,
}

/// Read a case file's text; `file` names it in diagnostics.
pub fn parse(text: &str, file: &str) -> Result<Vec<Case>, CaseError> {
    let diag = |at: &Location, message: String, hint: Option<&str>| Diagnostic {
        file: file.to_owned(),
        line: at.line(),
        column: at.column(),
        message,
        hint: hint.map(str::to_owned),
    };
    let raw: Vec<RawCase> = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = e.without_snippet().to_string();
        CaseError {
            diagnostics: vec![Diagnostic {
                file: file.to_owned(),
                line,
                column,
                message: crate::policy::validate::strip_location_prefix(&message),
                hint: Some(
                    "a case file is a list of `{name, input, expect}` (see docs/testing-policies.md)"
                        .to_owned(),
                ),
            }],
        }
    })?;
    let mut diagnostics = Vec::new();
    let mut cases = Vec::new();
    let mut names = std::collections::HashSet::new();
    for r in raw {
        let at = &r.name.referenced;
        if !names.insert(r.name.value.clone()) {
            diagnostics.push(diag(
                at,
                format!("a second case named `{}`", r.name.value),
                Some("give every case its own name, so a failure names one case"),
            ));
        }
        let input = match &r.input.value {
            Value::Object(_) => r.input.value.to_string().into_bytes(),
            Value::String(s) => s.clone().into_bytes(),
            other => {
                diagnostics.push(diag(
                    &r.input.referenced,
                    format!(
                        "`input` is {}; it must be an event (a mapping) or a string of raw bytes",
                        kind(other)
                    ),
                    None,
                ));
                continue;
            }
        };
        let expect = match expectation(&r.expect.value) {
            Ok(e) => e,
            Err((message, hint)) => {
                diagnostics.push(diag(&r.expect.referenced, message, hint));
                continue;
            }
        };
        cases.push(Case {
            name: r.name.value,
            file: file.to_owned(),
            line: at.line(),
            input,
            expect,
        });
    }
    if diagnostics.is_empty() {
        Ok(cases)
    } else {
        Err(CaseError { diagnostics })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

type Problem = (String, Option<&'static str>);

fn expectation(v: &Value) -> Result<Expect, Problem> {
    let Value::Object(map) = v else {
        return Err((
            format!(
                "`expect` is {}; it must be an event (a mapping), `{{dropped: REASON}}` or `{{dead_letter: REASON}}`",
                kind(v)
            ),
            None,
        ));
    };
    let single = (map.len() == 1).then(|| map.iter().next()).flatten();
    match single {
        Some((k, reason)) if k == "dropped" => {
            let codes: Vec<&str> = DropReason::ALL.iter().map(|r| r.code()).collect();
            reason
                .as_str()
                .and_then(|s| DropReason::ALL.into_iter().find(|r| r.code() == s))
                .map(Expect::Dropped)
                .ok_or_else(|| {
                    (
                        format!(
                            "unknown drop reason {reason}; expected one of: {}",
                            codes.join(", ")
                        ),
                        None,
                    )
                })
        }
        Some((k, reason)) if k == "dead_letter" => {
            let codes: Vec<&str> = DEAD_LETTER_REASONS.iter().map(|r| r.code()).collect();
            reason
                .as_str()
                .and_then(|s| DEAD_LETTER_REASONS.into_iter().find(|r| r.code() == s))
                .map(Expect::DeadLetter)
                .ok_or_else(|| {
                    (
                        format!(
                            "unknown dead-letter reason {reason}; expected one of: {}",
                            codes.join(", ")
                        ),
                        None,
                    )
                })
        }
        _ => {
            check_markers(v)?;
            Ok(Expect::Forwarded(v.clone()))
        }
    }
}

/// A `{pseudonym: V}` marker's value, if `v` is one.
fn marker(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("pseudonym"),
        _ => None,
    }
}

fn check_markers(v: &Value) -> Result<(), Problem> {
    if let Some(raw) = marker(v) {
        return match raw {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
            other => Err((
                format!(
                    "`{{pseudonym: ...}}` holds {}; it takes the raw string, number or boolean whose pseudonym is expected",
                    kind(other)
                ),
                Some("a null stays null: write `null` instead of a marker"),
            )),
        };
    }
    match v {
        Value::Object(m) => m.values().try_for_each(check_markers),
        Value::Array(a) => a.iter().try_for_each(check_markers),
        _ => Ok(()),
    }
}

/// `expected` with every `{pseudonym: V}` replaced by V's pseudonym.
pub fn expand(expected: &Value, p: &Pseudonymiser) -> Value {
    if let Some(raw) = marker(expected) {
        let bytes = match raw {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Value::String(p.pseudonym(bytes.as_bytes()));
    }
    match expected {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), expand(v, p)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| expand(v, p)).collect()),
        other => other.clone(),
    }
}

/// One difference between the expected and the clean event.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Where: `context.ip`, `products[0].sku`; empty for the whole event.
    pub path: String,
    /// `None`: the case expects nothing there.
    pub expected: Option<Value>,
    /// `None`: the policy wrote nothing there.
    pub got: Option<Value>,
}

/// Why a case failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseFailure {
    /// Another verdict than the expected one (`forwarded`, `dropped
    /// (no_consent)`, `dead letter (invalid_json)`).
    Verdict { expected: String, got: String },
    /// Forwarded, but not as expected.
    Fields(Vec<Mismatch>),
}

/// Run one case; `None` when it passes.
pub fn run(policy: &CompiledPolicy, case: &Case, scratch: &mut Scratch) -> Option<CaseFailure> {
    let mut out = Vec::new();
    let verdict = policy.apply(&case.input, &mut out, scratch);
    let got = verdict_text(&verdict.outcome);
    let expected = match &case.expect {
        Expect::Forwarded(_) => "forwarded".to_owned(),
        Expect::Dropped(r) => format!("dropped ({})", r.code()),
        Expect::DeadLetter(r) => format!("dead letter ({})", r.code()),
    };
    match (&case.expect, verdict.outcome) {
        (Expect::Forwarded(want), Outcome::Forwarded) => {
            let want = expand(want, policy.pseudonymiser());
            let got: Value = match serde_json::from_slice(&out) {
                Ok(v) => v,
                Err(_) => {
                    return Some(CaseFailure::Verdict {
                        expected,
                        got: "output that is not JSON (a bug in veil)".to_owned(),
                    });
                }
            };
            let mut mismatches = Vec::new();
            compare(&mut String::new(), Some(&want), Some(&got), &mut mismatches);
            (!mismatches.is_empty()).then_some(CaseFailure::Fields(mismatches))
        }
        _ if got == expected => None,
        _ => Some(CaseFailure::Verdict { expected, got }),
    }
}

fn verdict_text(o: &Outcome) -> String {
    match o {
        Outcome::Forwarded => "forwarded".to_owned(),
        Outcome::Dropped(r) => format!("dropped ({})", r.code()),
        Outcome::Rejected(r) => format!("dead letter ({})", r.reason.code()),
    }
}

/// Every place where `want` and `got` differ, in sorted key order.
fn compare(path: &mut String, want: Option<&Value>, got: Option<&Value>, out: &mut Vec<Mismatch>) {
    match (want, got) {
        (Some(Value::Object(w)), Some(Value::Object(g))) => {
            let keys: std::collections::BTreeSet<&String> = w.keys().chain(g.keys()).collect();
            for k in keys {
                let len = path.len();
                push_key(path, k);
                compare(path, w.get(k), g.get(k), out);
                path.truncate(len);
            }
        }
        (Some(Value::Array(w)), Some(Value::Array(g))) if w.len() == g.len() => {
            for (i, (w, g)) in w.iter().zip(g).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                compare(path, Some(w), Some(g), out);
                path.truncate(len);
            }
        }
        (w, g) if w == g => {}
        (w, g) => out.push(Mismatch {
            path: path.clone(),
            expected: w.cloned(),
            got: g.cloned(),
        }),
    }
}

/// A key appended to a path as the policy language writes it (quoted
/// when it holds anything but letters, digits, `_`, `-`, `$`, `@`).
pub fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '$' | '@'));
    if plain {
        path.push_str(key);
    } else {
        path.push('"');
        path.push_str(&key.replace('\\', "\\\\").replace('"', "\\\""));
        path.push('"');
    }
}

/// A failure as lines for a terminal or a CI log, each indented by two
/// spaces: `path: expected X, got Y`.
pub fn describe(failure: &CaseFailure) -> Vec<String> {
    match failure {
        CaseFailure::Verdict { expected, got } => {
            vec![format!("  verdict: expected {expected}, got {got}")]
        }
        CaseFailure::Fields(ms) => ms
            .iter()
            .map(|m| {
                let at = if m.path.is_empty() {
                    "(the event)"
                } else {
                    &m.path
                };
                let show = |v: &Option<Value>| match v {
                    Some(v) => v.to_string(),
                    None => "nothing".to_owned(),
                };
                let note = match (&m.expected, &m.got) {
                    (Some(_), None) => "  (missing)",
                    (None, Some(_)) => "  (not expected)",
                    _ => "",
                };
                format!(
                    "  {at}: expected {}, got {}{note}",
                    show(&m.expected),
                    show(&m.got)
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
