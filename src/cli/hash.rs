//! `veil hash`: the pseudonym of given values, as the engine would write them.

use std::path::PathBuf;

use anyhow::anyhow;
use veil::engine::normalise_into;
use veil::policy::{self, Normalise, PseudonymOptions};
use veil::pseudonym::Pseudonymiser;

use super::{CliResult, print, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Key directory (`<key_id>.key` files).
    #[arg(long, value_name = "DIR", env = "VEIL_KEYS")]
    keys: PathBuf,
    /// Key to use; default: the only key in the directory.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// Purpose the pseudonyms are for (default: the policy's, with --policy):
    /// letters, digits, `.`, `_`, `-`, as a policy's `purpose`.
    #[arg(long, value_name = "PURPOSE")]
    purpose: Option<String>,
    /// Take purpose and pseudonym options (encoding, prefix, length) from this policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Normalisation before hashing, as in the policy: trim, lowercase.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "STEPS")]
    normalise: Vec<NormaliseArg>,
    /// Values to pseudonymise (hashed as given: numbers and booleans as their JSON text).
    #[arg(required = true, value_name = "VALUE")]
    values: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NormaliseArg {
    Trim,
    Lowercase,
}

pub fn run(args: Args) -> CliResult {
    let (purpose, options) = match &args.policy {
        Some(path) => {
            let p = policy::load(path).map_err(usage)?;
            (args.purpose.clone().unwrap_or(p.purpose), p.pseudonyms)
        }
        None => (
            args.purpose.clone().ok_or_else(|| {
                usage(anyhow!(
                    "give --purpose (or --policy to take it from a policy)"
                ))
            })?,
            PseudonymOptions::default(),
        ),
    };
    if !policy::name_ok(&purpose) {
        return Err(usage(anyhow!(
            "--purpose must be letters, digits, `.`, `_` or `-`, as a policy's `purpose`; got `{purpose}`"
        )));
    }
    let ring = veil::keys::load_dir(&args.keys, args.key_id.as_deref()).map_err(usage)?;
    super::warn_keys(&ring);
    let p = Pseudonymiser::new(ring.active(), &purpose, &options);
    let steps: Vec<Normalise> = args
        .normalise
        .iter()
        .map(|n| match n {
            NormaliseArg::Trim => Normalise::Trim,
            NormaliseArg::Lowercase => Normalise::Lowercase,
        })
        .collect();
    let mut bytes = Vec::new();
    for v in &args.values {
        bytes.clear();
        normalise_into(v, &steps, &mut bytes);
        print(format_args!("{}\n", p.pseudonym(&bytes)))?;
    }
    Ok(())
}
