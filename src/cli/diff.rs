//! `veil diff OLD NEW`: what a policy change does to the data that flows
//! ([`veil::policy::diff`]), optionally measured on sample events
//! ([`veil::replay`]). Exit 0 when nothing widens, 1 when anything widens
//! what flows or weakens protection, 64 on an invalid policy.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use serde_json::json;
use veil::engine::{Limits, Scratch, compile};
use veil::policy::diff::{self, Change, Effect};
use veil::replay::Replay;

use super::{CliResult, Failure, io, print, usage};

/// Exit status when the change widens what flows.
pub const EX_WIDENS: u8 = 1;

#[derive(clap::Args)]
pub struct Args {
    /// The policy as it is (YAML).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The policy as proposed (YAML).
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Replay these NDJSON events through both policies and count, per
    /// path, the values that would change.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> CliResult {
    let old = veil::policy::load(&args.old).map_err(usage)?;
    let new = veil::policy::load(&args.new).map_err(usage)?;
    let changes = diff::diff(&old, &new);
    let widens = diff::widens(&changes);
    let replay = match &args.events {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read events {}", path.display()))
                .map_err(usage)?;
            let key = veil::keys::test_key();
            let a = compile(old.clone(), &key, Limits::default());
            let b = compile(new.clone(), &key, Limits::default());
            let mut scratch = Scratch::default();
            let mut r = Replay::default();
            for line in bytes.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.trim_ascii().is_empty() {
                    r.add(&a, &b, line, &mut scratch);
                }
            }
            Some(r)
        }
    };
    match args.format {
        Format::Json => {
            let doc = json!({
                "old": { "id": old.id(), "file": args.old.display().to_string(), "sha256": old.sha256 },
                "new": { "id": new.id(), "file": args.new.display().to_string(), "sha256": new.sha256 },
                "widens": widens,
                "changes": changes,
                "events": replay,
            });
            print(format_args!(
                "{}\n",
                serde_json::to_string_pretty(&doc).map_err(io)?
            ))?;
        }
        Format::Text => print(format_args!(
            "{}",
            text(&old.id(), &new.id(), &changes, replay.as_ref())
        ))?,
    }
    if widens {
        let n = changes
            .iter()
            .filter(|c| c.effect == Effect::Widens)
            .count();
        return Err(Failure {
            code: EX_WIDENS,
            error: anyhow!(
                "{n} change{} widen what flows or weaken protection",
                if n == 1 { "" } else { "s" }
            ),
        });
    }
    Ok(())
}

fn text(old: &str, new: &str, changes: &[Change], replay: Option<&Replay>) -> String {
    let mut out = format!("veil diff {old} -> {new}\n");
    if changes.is_empty() {
        out.push_str("no change to what flows\n");
    }
    for effect in [Effect::Widens, Effect::BreaksJoins, Effect::Narrows] {
        let these: Vec<&Change> = changes.iter().filter(|c| c.effect == effect).collect();
        if these.is_empty() {
            continue;
        }
        out.push_str(&format!("{} ({}):\n", effect.label(), these.len()));
        for c in these {
            let at = c.path.as_ref().map(|p| format!(" {p}")).unwrap_or_default();
            out.push_str(&format!("  {}{at}: {} [{}]\n", c.scope, c.detail, c.kind));
            if c.old.is_some() || c.new.is_some() {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
                out.push_str(&format!(
                    "      was: {}\n      now: {}\n",
                    show(&c.old),
                    show(&c.new)
                ));
            }
        }
    }
    if let Some(r) = replay {
        out.push_str(&format!("events replayed: {}\n", r.events));
        for (v, n) in &r.verdicts {
            out.push_str(&format!("  verdict {v}: {n}\n"));
        }
        if r.values.is_empty() {
            out.push_str("  no value changes in events both forward\n");
        } else {
            out.push_str("  values that change, per path (events):\n");
            let width = r.values.keys().map(String::len).max().unwrap_or(0);
            for (path, n) in &r.values {
                out.push_str(&format!("    {path:width$}  {n}\n"));
            }
        }
    }
    out
}
