//! `message_key` against the routes' policies, once they are loaded
//! (config validation reads no file, so this cannot happen in
//! [`super::validate`]). Two mistakes pass validation and only show in the
//! output topics:
//!
//! - `keep` copies the raw Kafka key of every input, in clear, into every
//!   route's topic. Collectors commonly key events by user id or e-mail
//!   address, so when any route's policy names `subject` identifiers the
//!   config is refused unless it opts in with a written reason
//!   (`message_key: { keep: { reason: "..." } }`).
//! - `{ from: PATH }` where a route's policy never writes a scalar at
//!   PATH: all of that route's records would go without a key. "Writes a scalar at PATH" is [`trie::scalar_output`] on the
//!   compiled allowlists the engine walks: the default `fields` and every
//!   rule's own `fields` (not `drop: true` rules); PATH is output when any
//!   of them keeps it (an entry, or a kept parent that does not name it),
//!   pseudonymises, generalises or redacts it. An allowlist that lists
//!   entries *below* PATH writes an object there, never a scalar.
//!
//! Only a Kafka pipeline has keys: with a file source `message_key` is not
//! used, and not checked.

use super::{ConfigError, MessageKey, Pipeline, PipelineConfig};
use crate::policy::{FieldPath, Policy, trie};

/// Refuse a `message_key` that would leak raw keys or never find its path.
/// `policies` are the routes' `(name, policy)`, in route order.
pub fn check_message_key(
    config: &PipelineConfig,
    policies: &[(&str, &Policy)],
) -> Result<(), ConfigError> {
    if !matches!(config.pipeline, Pipeline::Kafka(_)) {
        return Ok(());
    }
    let at = config.places.message_key;
    let mut diagnostics = Vec::new();
    match &config.stage.message_key {
        MessageKey::Keep if config.keep_key_reason.is_none() => {
            let with_subjects: Vec<String> = policies
                .iter()
                .filter_map(|(route, p)| {
                    let (what, paths) = identifiers(p)?;
                    Some(format!(
                        "route `{route}` ({}{what}: {})",
                        p.id(),
                        paths.join(", ")
                    ))
                })
                .collect();
            if !with_subjects.is_empty() {
                diagnostics.push(config.diagnostic(
                    at,
                    format!(
                        "message_key `keep` copies each input's raw Kafka key in clear into every route's topic, \
                         but the policies name subject identifiers (or pseudonymise fields), which collectors often use as the key: {}",
                        with_subjects.join("; ")
                    ),
                    "use `pseudonymise` (the default: a keyed HMAC of the raw key) or `drop`; \
                     if the keys hold no personal data, say why: \
                     `message_key: { keep: { reason: \"keys are collector-assigned random ids\" } }`",
                ));
            }
        }
        MessageKey::From(path) => {
            for (route, policy) in policies {
                if outputs(policy, path).is_none() {
                    diagnostics.push(config.diagnostic(
                        at,
                        format!(
                            "message_key path `{path}`: route `{route}`'s policy {} never outputs a scalar there, \
                             so none of its records would have a key",
                            policy.id()
                        ),
                        "name a path the policy keeps, pseudonymises or generalises \
                         (`veil explain --policy FILE` lists them), or use `pseudonymise` or `drop`",
                    ));
                }
            }
        }
        _ => {}
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid { diagnostics })
    }
}

/// The action that writes a scalar at `path` in some allowlist of the
/// policy (see the module doc), if any does.
pub(crate) fn outputs(policy: &Policy, path: &FieldPath) -> Option<&'static str> {
    let plan = &policy.plan;
    let rules = plan
        .rules
        .iter()
        .filter(|r| !r.drop)
        .filter_map(|r| r.fields.as_ref());
    plan.default
        .iter()
        .chain(rules)
        .find_map(|tree| trie::scalar_output(tree, path))
}

/// What a policy treats as identifiers: its declared subjects, or else the
/// paths it pseudonymises (a policy need not declare `subject`, but what it
/// pseudonymises it holds to be identifying). `None` when neither.
fn identifiers(policy: &Policy) -> Option<(&'static str, Vec<String>)> {
    if !policy.subject.is_empty() {
        return Some(("", policy.subject.iter().map(ToString::to_string).collect()));
    }
    let mut paths: Vec<String> = policy
        .fields
        .iter()
        .chain(policy.rules.iter().filter_map(|r| r.fields.as_ref()))
        .flat_map(|set| &set.entries)
        .filter(|e| matches!(e.action, crate::policy::Action::Pseudonymise { .. }))
        .map(|e| e.path.to_string())
        .collect();
    paths.sort();
    paths.dedup();
    (!paths.is_empty()).then_some((", pseudonymised", paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(fields: &str) -> Policy {
        let text = format!("name: p\nversion: 1\npurpose: analytics\n{fields}");
        Policy::parse(&text, "p.yaml").unwrap()
    }

    fn out(p: &Policy, path: &str) -> Option<&'static str> {
        outputs(p, &FieldPath::parse(path).unwrap())
    }

    #[test]
    fn a_path_is_output_when_kept_transformed_or_under_a_kept_parent() {
        let p = policy(
            "fields:\n  userId: pseudonymise\n  context.ip: ip_prefix\n  properties: keep\n  \
             properties.secret: drop\n  context.page: { url: {} }\n",
        );
        assert_eq!(out(&p, "userId"), Some("pseudonymise"));
        assert_eq!(out(&p, "context.ip"), Some("ip_prefix"));
        assert_eq!(out(&p, "properties.order_id"), Some("keep"));
        assert_eq!(out(&p, "properties.secret"), None);
        assert_eq!(out(&p, "context.page"), Some("url"));
        // Not listed, below a transform, or an object (entries below it).
        assert_eq!(out(&p, "anonymousId"), None);
        assert_eq!(out(&p, "userId.x"), None);
        assert_eq!(out(&p, "context"), None);
    }

    #[test]
    fn rules_count_but_drop_rules_do_not() {
        let p = policy(
            "rules:\n  - when: { type: track }\n    fields: { event: keep }\n  \
             - when: { type: page }\n    drop: true\n",
        );
        assert_eq!(out(&p, "event"), Some("keep"));
        assert_eq!(out(&p, "type"), None);
    }
}
