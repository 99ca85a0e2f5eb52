//! `veil check`: validate a policy and summarise it on one screen.

use std::collections::BTreeMap;
use std::path::Path;

use veil::explain::class_name;
use veil::policy::{self, FieldSet, Policy};

use super::{CliResult, print, usage};

/// A pipeline config: the config itself, every route's policy, the keys,
/// and the librdkafka properties (checked by building the clients, which
/// connects nowhere).
pub fn run_config(path: &Path) -> CliResult {
    let config = veil::config::load(path).map_err(usage)?;
    let (stage, ring) = veil::stage::load(&config).map_err(usage)?;
    super::warn_keys(&ring);
    if let veil::config::Source::Kafka(src) = &config.source {
        veil::kafka::check_client_config(src).map_err(usage)?;
        if ring.active().is_public_demo() {
            tracing::warn!("{}", super::run::DEMO_KEY_REFUSED);
        }
    }
    print(format_args!(
        "OK {}: {} route(s), active key `{}` ({} key(s) loaded)\n",
        path.display(),
        stage.routes().len(),
        stage.key_id(),
        ring.ids().count()
    ))?;
    for (route, r) in config.routes.iter().zip(stage.routes()) {
        let to = match &route.sink {
            veil::config::Sink::Topic(t) => format!("topic {t}"),
            veil::config::Sink::File(f) => format!("file {}", f.display()),
        };
        print(format_args!(
            "  route {}: policy {} ({}) -> {to}\n",
            route.name,
            r.engine.policy_id(),
            route.policy.display()
        ))?;
    }
    Ok(())
}

pub fn run(path: &Path) -> CliResult {
    let policy = policy::load(path).map_err(usage)?;
    print(format_args!(
        "{}",
        summary(&policy, &path.display().to_string())
    ))
}

fn tally(fields: &FieldSet) -> String {
    let mut by_class: BTreeMap<_, usize> = BTreeMap::new();
    for e in &fields.entries {
        *by_class.entry(e.action.class()).or_default() += 1;
    }
    let parts: Vec<String> = by_class
        .iter()
        .map(|(c, n)| format!("{n} {}", class_name(*c)))
        .collect();
    format!("{} entries: {}", fields.entries.len(), parts.join(", "))
}

pub fn summary(policy: &Policy, file: &str) -> String {
    let mut out = format!(
        "OK {file}: policy {} for purpose `{}` (sha256 {})\n",
        policy.id(),
        policy.purpose,
        &policy.sha256[..16]
    );
    match &policy.fields {
        Some(f) => out.push_str(&format!("  fields:   {}\n", tally(f))),
        None => out.push_str("  fields:   none (events matching no rule are dropped)\n"),
    }
    for (i, r) in policy.rules.iter().enumerate() {
        let what = match (&r.fields, r.drop) {
            (_, true) => "drop".to_owned(),
            (Some(f), _) => tally(f),
            (None, _) => "default fields".to_owned(),
        };
        out.push_str(&format!("  rule {}:   line {}, {what}\n", i + 1, r.line));
    }
    match &policy.consent {
        Some(c) => {
            out.push_str(&format!(
                "  consent:  `{}` must be in {}",
                policy.purpose, c.purposes
            ));
            if let Some(o) = &c.opt_out {
                out.push_str(&format!("; opted out when {o} is true"));
            }
            out.push('\n');
        }
        None => out.push_str("  consent:  not checked\n"),
    }
    if !policy.subject.is_empty() {
        let s: Vec<String> = policy.subject.iter().map(|p| p.to_string()).collect();
        out.push_str(&format!(
            "  subject:  {} (never kept in clear)\n",
            s.join(", ")
        ));
    }
    out.push_str("  anything not listed is removed\n");
    out
}
