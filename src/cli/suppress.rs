//! `veil suppress`: the token lines of identifiers, for a suppression topic
//! or file, so that no raw identifier has to be put on a topic.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::anyhow;
use veil::policy;
use veil::suppression::{Tokeniser, all_variants, lines_for};

use super::{CliResult, io, print, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Key directory (`<key_id>.key` files).
    #[arg(long, value_name = "DIR", env = "VEIL_KEYS")]
    keys: PathBuf,
    /// Key the tokens are made with; default: the only key in the directory.
    /// veil checks each token under the key it names, so keep that key in
    /// the key directory for as long as the token is on the list.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// Policy whose subject paths' normalisations apply (repeatable): one
    /// token per identifier and normalisation in use. Without any, each
    /// identifier is hashed exactly as given.
    #[arg(long, value_name = "FILE")]
    policy: Vec<PathBuf>,
    /// Identifiers to suppress (surrounding white space is not part of an
    /// identifier, as in a suppression file). Without any, they are read
    /// from stdin, one per line, `#` comments and blank lines ignored
    /// (which keeps them out of shell history and process lists).
    #[arg(value_name = "IDENTIFIER")]
    identifiers: Vec<String>,
}

pub fn run(args: Args) -> CliResult {
    let mut policies = Vec::new();
    for p in &args.policy {
        policies.push(policy::load(p).map_err(usage)?);
    }
    let ring = veil::keys::load_dir(&args.keys, args.key_id.as_deref()).map_err(usage)?;
    super::warn_keys(&ring);
    let tokeniser = Tokeniser::new(ring.active());
    let variants = all_variants(&policies);
    let from_stdin;
    let identifiers: Vec<&str> = if args.identifiers.is_empty() {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(line.map_err(io)?);
        }
        from_stdin = lines;
        from_stdin
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    } else {
        args.identifiers
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .collect()
    };
    if identifiers.is_empty() {
        return Err(usage(anyhow!(
            "no identifiers (give them as arguments or on stdin)"
        )));
    }
    for id in identifiers {
        for line in lines_for(&tokeniser, id, &variants) {
            print(format_args!("{line}\n"))?;
        }
    }
    Ok(())
}
