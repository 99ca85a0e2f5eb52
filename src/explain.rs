//! A policy explained to a human: the data inventory a privacy team
//! publishes. For each field path, what happens to it and why; what is
//! removed; the consent rule. Markdown for people, JSON for tools, and a
//! self-contained HTML page to publish ([`html`]). With a pipeline config,
//! the deployment too ([`deployment`]): routes, keys, suppression.

pub mod deployment;
pub mod html;

use serde_json::{Value, json};

use crate::policy::{
    Action, ActionClass, Buckets, FieldRule, FieldSet, Normalise, Policy, Scalar, ScanMode,
};

/// The content scan of a kept entry or a `url` entry (`None` for other actions).
fn entry_scan(e: &FieldRule, default: ScanMode) -> Option<ScanMode> {
    matches!(e.action, Action::Keep | Action::Url { .. }).then(|| e.scan.unwrap_or(default))
}

/// The policy's content scan setting, as a sentence.
fn scan_sentence(policy: &Policy) -> String {
    format!(
        "Strings and integers kept in clear, object keys the policy does not spell out, and the path and query of URLs (not pseudonyms or other generalised values) are scanned: `scan: {}`, {}, unless a field says otherwise.",
        policy.scan.code(),
        scan_phrase(policy.scan)
    )
}

/// What the content scan does, as a phrase.
fn scan_phrase(mode: ScanMode) -> &'static str {
    match mode {
        ScanMode::Off => "strings not scanned",
        ScanMode::Count => "strings scanned, detections counted only",
        ScanMode::Redact => {
            "e-mail addresses, phone, card and IBAN numbers, IP addresses and tokens in strings replaced by `[redacted:<kind>]`"
        }
        ScanMode::DropEvent => {
            "an event is dropped when a string holds an e-mail address, phone, card or IBAN number, IP address or token"
        }
    }
}

/// One sentence on what an action does to a value.
pub fn describe(action: &Action) -> String {
    match action {
        Action::Keep => "kept as sent".to_owned(),
        Action::Drop => "removed".to_owned(),
        Action::Pseudonymise { normalise } => {
            let mut s =
                "replaced by a keyed pseudonym (HMAC-SHA256 under a per-purpose key)".to_owned();
            if !normalise.is_empty() {
                let steps: Vec<&str> = normalise
                    .iter()
                    .map(|n| match n {
                        Normalise::Trim => "trimmed",
                        Normalise::Lowercase => "lowercased",
                    })
                    .collect();
                s.push_str(&format!(", {} first", steps.join(" and ")));
            }
            s
        }
        Action::IpPrefix { v4, v6 } => {
            format!("truncated to its network: /{v4} for IPv4, /{v6} for IPv6")
        }
        Action::Url { keep_query, .. } => {
            if keep_query.is_empty() {
                "URL kept without fragment, user info or any query parameter".to_owned()
            } else {
                format!(
                    "URL kept without fragment, user info or query parameters other than {}",
                    keep_query
                        .iter()
                        .map(|g| format!("`{g}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        Action::TruncateTime(unit) => {
            format!("timestamp truncated to the {} (UTC)", unit_name(*unit))
        }
        Action::Bucket(Buckets::Edges(edges)) => format!(
            "number replaced by the lower edge of its bucket ({}); values below the first edge removed",
            edges
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::Bucket(Buckets::Width(w)) => format!("number rounded down to a multiple of {w}"),
        Action::Redact {
            patterns,
            replacement,
        } => format!(
            "kept, with matches of {} pattern{} replaced by `{replacement}`",
            patterns.len(),
            if patterns.len() == 1 { "" } else { "s" }
        ),
    }
}

fn unit_name(unit: crate::policy::TimeUnit) -> &'static str {
    use crate::policy::TimeUnit::*;
    match unit {
        Second => "second",
        Minute => "minute",
        Hour => "hour",
        Day => "day",
    }
}

pub fn class_name(class: ActionClass) -> &'static str {
    match class {
        ActionClass::Kept => "kept",
        ActionClass::Pseudonymised => "pseudonymised",
        ActionClass::Generalised => "generalised",
        ActionClass::Redacted => "redacted",
        ActionClass::Dropped => "dropped",
    }
}

fn scalar_text(s: &Scalar) -> String {
    match s {
        Scalar::Null => "null".to_owned(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Number(n) => n.to_string(),
        Scalar::String(s) => format!("`{s}`"),
    }
}

fn consent_sentence(policy: &Policy) -> String {
    let Some(c) = &policy.consent else {
        return "No consent check: every event that passes the rules is forwarded.".to_owned();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(p) = &c.purposes {
        let mut s = format!(
            "`{p}` grants `{}`: an array containing it, or an object mapping it to `true` (as consent platforms write, e.g. `{{\"{}\": true}}`)",
            c.category, c.category
        );
        if c.category != policy.purpose {
            s.push_str(&format!(
                " (`{}` is the consent platform's name for the purpose `{}`)",
                c.category, policy.purpose
            ));
        }
        parts.push(s);
    }
    if let Some(t) = &c.tcf {
        parts.push(tcf_sentence(t));
    }
    let mut s = if parts.is_empty() {
        "Consent to the purpose is not checked.".to_owned()
    } else {
        format!(
            "An event is forwarded only if {}; events without it, or with anything else there, are dropped.",
            parts.join(", and ")
        )
    };
    if let Some(o) = &c.opt_out {
        s.push_str(&format!(
            " Subjects who opted out (`{o}` is true, or anything but false/null) are suppressed."
        ));
    }
    if let Some(h) = &c.opt_out_header {
        s.push_str(&format!(
            " In `veil run`, an input record with the header `{h}` (any value but `0` or `false`; Global Privacy Control sends `1`) is an opt-out too."
        ));
    }
    s
}

/// The TCF rule in words: each purpose by number and name.
fn tcf_sentence(t: &crate::policy::Tcf) -> String {
    let purposes: Vec<String> = t
        .purposes
        .iter()
        .map(|&p| {
            let name = crate::tcf::purpose_name(p).unwrap_or("?");
            let basis = if t.legitimate_interest.contains(&p) {
                "consent or legitimate interest"
            } else {
                "consent"
            };
            format!("purpose {p} ({name}) by {basis}")
        })
        .collect();
    let vendor = match t.vendor {
        Some(v) => format!(
            ", to vendor {v} as well as to the purposes, and no publisher restriction forbids it"
        ),
        None => String::new(),
    };
    format!(
        "the IAB TCF v2 consent string at `{}` grants {}{vendor} (a missing, malformed or non-v2 string grants nothing)",
        t.path,
        purposes.join("; ")
    )
}

fn fields_table(out: &mut String, fields: &FieldSet, scan: ScanMode) {
    out.push_str("| Field | Treatment | What reaches the recipient | Why |\n|---|---|---|---|\n");
    for e in &fields.entries {
        let mut what = describe(&e.action);
        if let Some(mode) = entry_scan(e, scan) {
            what.push_str(&format!(" (scan `{}`: {})", mode.code(), scan_phrase(mode)));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            e.path.to_string().replace('|', "\\|"),
            class_name(e.action.class()),
            what.replace('|', "\\|"),
            e.note.as_deref().unwrap_or("").replace('|', "\\|"),
        ));
    }
    out.push_str("| *anything else* | removed | nothing: fields not listed are deleted | data minimisation |\n");
}

/// The inventory as Markdown.
pub fn markdown(policy: &Policy) -> String {
    let mut out = format!(
        "# Data inventory: {} (version {})\n\nPurpose: **{}**. Policy file SHA-256: `{}`.\n\n",
        policy.name, policy.version, policy.purpose, policy.sha256
    );
    out.push_str("## Consent\n\n");
    out.push_str(&consent_sentence(policy));
    out.push_str("\n\n## Identifiers\n\n");
    if policy.subject.is_empty() {
        out.push_str("No subject identifiers are declared.\n\n");
    } else {
        out.push_str(&format!(
            "The data subject is identified by {}. None of these is ever forwarded in clear. Where veil runs with a suppression (opt-out) list, an event any of whose identifiers is on it is dropped (reason `suppressed`) before consent and rules are looked at; identifiers are compared as keyed tokens, after the normalisation this policy applies to each path.\n\n",
            policy
                .subject
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str(&format!(
        "Pseudonyms are {} ({} bytes of HMAC-SHA256{}), derived with a key specific to the purpose `{}`: the same person gets unrelated pseudonyms for other purposes.\n\n",
        match policy.pseudonyms.encoding {
            crate::policy::Encoding::Hex => "hexadecimal",
            crate::policy::Encoding::Base64url => "base64url",
        },
        policy.pseudonyms.truncate_bytes,
        if policy.pseudonyms.key_id_prefix { ", prefixed with the key id" } else { "" },
        policy.purpose
    ));
    if let Some(fields) = &policy.fields {
        out.push_str(if policy.rules.is_empty() {
            "## Fields\n\n"
        } else {
            "## Fields (events matching no rule)\n\n"
        });
        fields_table(&mut out, fields, policy.scan);
        out.push('\n');
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let when: Vec<String> = rule
            .when
            .iter()
            .map(|c| {
                let values: Vec<String> = c.any_of.iter().map(scalar_text).collect();
                format!("`{}` is {}", c.path, values.join(" or "))
            })
            .collect();
        out.push_str(&format!(
            "## Rule {}: when {}\n\n",
            i + 1,
            when.join(" and ")
        ));
        if rule.drop {
            out.push_str("Such events are dropped entirely.\n\n");
        } else if let Some(f) = &rule.fields {
            fields_table(&mut out, f, policy.scan);
            out.push('\n');
        } else {
            out.push_str("Such events use the default fields above.\n\n");
        }
    }
    if !policy.rules.is_empty() && policy.fields.is_none() {
        out.push_str("Events matching no rule are dropped.\n\n");
    }
    out.push_str(&format!("## Content scan\n\n{}\n\n", scan_sentence(policy)));
    out.push_str("## Sensitive data waivers\n\n");
    if policy.waivers.is_empty() {
        out.push_str("None: no field of a special category (GDPR Art. 9), precise location, government identifier, payment data or credential is kept or generalised.\n\n");
    } else {
        out.push_str("These fields of sensitive categories flow by a written decision:\n\n| Field | Category | Reason | Line |\n|---|---|---|---|\n");
        for w in &policy.waivers {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                w.path,
                w.category.label,
                w.reason.replace('|', "\\|").replace('\n', " "),
                w.line
            ));
        }
        out.push('\n');
    }
    out.push_str("Every forwarded event carries the header `veil-policy: ");
    out.push_str(&policy.id());
    out.push_str("`, so each row in the warehouse can be traced to this document.\n");
    out
}

fn fields_json(fields: &FieldSet, scan: ScanMode) -> Value {
    Value::Array(
        fields
            .entries
            .iter()
            .map(|e| {
                json!({
                    "path": e.path.to_string(),
                    "action": e.action.name(),
                    "treatment": class_name(e.action.class()),
                    "description": describe(&e.action),
                    "why": e.note,
                    "scan": entry_scan(e, scan).map(ScanMode::code),
                    "line": e.line,
                })
            })
            .collect(),
    )
}

/// The inventory as JSON.
pub fn json(policy: &Policy) -> Value {
    json!({
        "policy": {
            "name": policy.name,
            "version": policy.version,
            "id": policy.id(),
            "purpose": policy.purpose,
            "sha256": policy.sha256,
        },
        "consent": policy.consent.as_ref().map(|c| json!({
            "purposes": c.purposes.as_ref().map(|p| p.to_string()),
            "category": c.purposes.as_ref().map(|_| c.category.as_str()),
            "opt_out": c.opt_out.as_ref().map(|p| p.to_string()),
            "opt_out_header": c.opt_out_header,
            "tcf": c.tcf.as_ref().map(|t| json!({
                "path": t.path.to_string(),
                "purposes": t.purposes.iter().map(|&p| json!({
                    "id": p,
                    "name": crate::tcf::purpose_name(p),
                    "legitimate_interest": t.legitimate_interest.contains(&p),
                })).collect::<Vec<_>>(),
                "vendor": t.vendor,
            })),
            "summary": consent_sentence(policy),
        })),
        "subject": policy.subject.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "pseudonyms": policy.pseudonyms,
        "scan": policy.scan.code(),
        "scan_summary": scan_sentence(policy),
        "fields": policy.fields.as_ref().map(|f| fields_json(f, policy.scan)),
        "rules": policy.rules.iter().map(|r| json!({
            "when": r.when.iter().map(|c| json!({
                "path": c.path.to_string(),
                "any_of": c.any_of.iter().map(|s| match s {
                    Scalar::Null => Value::Null,
                    Scalar::Bool(b) => json!(b),
                    Scalar::Number(n) => json!(n.as_f64()),
                    Scalar::String(s) => json!(s),
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "drop": r.drop,
            "fields": r.fields.as_ref().map(|f| fields_json(f, policy.scan)),
            "line": r.line,
        })).collect::<Vec<_>>(),
        "waivers": policy.waivers.iter().map(|w| json!({
            "path": w.path.to_string(),
            "category": w.category.id,
            "category_label": w.category.label,
            "reason": w.reason,
            "line": w.line,
        })).collect::<Vec<_>>(),
        "unlisted_fields": "removed",
    })
}
