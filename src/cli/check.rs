//! `veil check`: validate a policy and summarise it on one screen.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use veil::config::Pipeline;
use veil::explain::class_name;
use veil::kafka::topics::{self, TopicsError};
use veil::policy::{self, FieldSet, Policy};

use super::{CliResult, EX_UNAVAILABLE, Failure, print, usage};

/// How long `check --connect` waits for the broker's answer, in all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pipeline config: the config itself, every route's policy, the keys,
/// and the librdkafka properties (checked by building the clients, which
/// connects nowhere). With `connect`, then the broker: every topic the
/// config names must exist.
pub fn run_config(path: &Path, connect: bool) -> CliResult {
    let config = veil::config::load(path).map_err(usage)?;
    let (stage, ring) = veil::stage::load(&config).map_err(usage)?;
    super::warn_kept_keys(&config);
    super::warn_keys(&ring);
    let suppressed = veil::stage::suppression_entries(&config, &ring, &stage)
        .map_err(usage)?
        .map(|entries| entries.len());
    if let Pipeline::Kafka(kafka) = &config.pipeline {
        veil::kafka::check_client_config(&kafka.source).map_err(usage)?;
        if stage.uses_public_demo_key() {
            tracing::warn!("{}", super::run::DEMO_KEY_REFUSED);
        }
    }
    let topics_line = if connect {
        Some(topics_exist(&config)?)
    } else {
        None
    };
    print(format_args!(
        "OK {}: {} route(s), active key `{}` ({} key(s) loaded)\n",
        path.display(),
        stage.routes().len(),
        stage.key_id(),
        ring.ids().count()
    ))?;
    let destinations: Vec<String> = match &config.pipeline {
        Pipeline::Kafka(k) => k.routes.iter().map(|r| format!("topic {}", r.to)).collect(),
        Pipeline::Files(f) => f
            .routes
            .iter()
            .map(|r| format!("file {}", r.to.display()))
            .collect(),
    };
    let routes = config.policies().into_iter().zip(stage.routes());
    for (((name, policy), r), to) in routes.zip(&destinations) {
        print(format_args!(
            "  route {name}: policy {} ({}), key {} -> {to}\n",
            r.engine.policy_id(),
            policy.display(),
            r.engine.key_id()
        ))?;
    }
    let shadow_files = config.shadows();
    for ((_, name, policy, _), (_, file)) in stage.shadows().iter().zip(&shadow_files) {
        print(format_args!(
            "  route {name}: shadow policy {policy} ({}), compared, never produced\n",
            file.display()
        ))?;
    }
    if let (Some(entries), Some(s)) = (suppressed, &config.suppression) {
        let topic = s
            .topic
            .as_ref()
            .map(|t| format!(" and topic {t}"))
            .unwrap_or_default();
        print(format_args!(
            "  suppression: {entries} entries from {} file(s){topic}\n",
            s.files.len()
        ))?;
    }
    if let Some(line) = topics_line {
        print(format_args!("  {line}\n"))?;
    }
    Ok(())
}

/// `check --connect`: every topic exists (exit 64 naming each missing
/// one), or the broker could not be asked (exit 69). Returns the line
/// the summary ends with.
fn topics_exist(config: &veil::config::PipelineConfig) -> Result<String, Failure> {
    let Pipeline::Kafka(kafka) = &config.pipeline else {
        return Err(usage(anyhow::anyhow!(
            "--connect checks a Kafka pipeline's topics; {} reads a file",
            config.file.display()
        )));
    };
    let wanted = topics::wanted(config);
    match topics::check(&kafka.source, &wanted, CONNECT_TIMEOUT) {
        Ok(()) => Ok(format!(
            "topics: all {} exist on the broker ({})",
            wanted.len(),
            kafka.source.bootstrap_servers
        )),
        Err(e @ TopicsError::Missing { .. }) => Err(usage(e)),
        Err(e @ TopicsError::Unreachable { .. }) => Err(Failure {
            code: EX_UNAVAILABLE,
            error: e.into(),
        }),
    }
}

pub fn run(path: &Path) -> CliResult {
    let policy = policy::load(path).map_err(usage)?;
    super::warn_policy(&policy);
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
            let mut checks: Vec<String> = Vec::new();
            if let Some(p) = &c.purposes {
                checks.push(format!("`{}` must be in {p}", c.category));
            }
            if let Some(t) = &c.tcf {
                let ps: Vec<String> = t.purposes.iter().map(u8::to_string).collect();
                let vendor = t
                    .vendor
                    .map(|v| format!(", vendor {v}"))
                    .unwrap_or_default();
                checks.push(format!(
                    "TC string at {} must grant TCF purposes {}{vendor}",
                    t.path,
                    ps.join(", ")
                ));
            }
            if let Some(o) = &c.opt_out {
                checks.push(format!("opted out when {o} is true"));
            }
            if let Some(h) = &c.opt_out_header {
                checks.push(format!("opted out when header {h} is set"));
            }
            out.push_str(&format!("  consent:  {}\n", checks.join("; ")));
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
    let overrides = policy
        .fields
        .iter()
        .chain(policy.rules.iter().filter_map(|r| r.fields.as_ref()))
        .flat_map(|f| &f.entries)
        .filter(|e| e.scan.is_some())
        .count();
    out.push_str(&format!(
        "  scan:     {} on kept strings and URLs (e-mail, phone, card, IBAN, IP, token){}\n",
        policy.scan.code(),
        match overrides {
            0 => String::new(),
            1 => "; 1 entry sets its own".to_owned(),
            n => format!("; {n} entries set their own"),
        }
    ));
    out.push_str("  anything not listed is removed\n");
    out
}
