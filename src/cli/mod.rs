//! Command-line adapters around the pure core: files and stdio in, files
//! and stdio out. Each subcommand lives in its own module.

mod apply;
mod check;
mod hash;
mod lines;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes (sysexits.h).
pub const EX_USAGE: u8 = 64;
pub const EX_NOINPUT: u8 = 66;
pub const EX_IOERR: u8 = 74;

/// A failure with the exit code it maps to. Messages never carry key
/// material or event content.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

pub type CliResult = Result<(), Failure>;

pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EX_USAGE,
        error: error.into(),
    }
}

pub fn io(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EX_IOERR,
        error: error.into(),
    }
}

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Pseudonymise, minimise and consent-filter JSON events by policy",
    long_about = "veil applies a declarative policy to JSON events: only allowlisted fields \
                  pass, identifiers become keyed pseudonyms, IPs/URLs/times are generalised, \
                  and events without consent for the purpose are dropped."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy and print a one-screen summary.
    Check {
        /// Policy file (YAML).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Apply a policy to NDJSON events: one clean line per forwarded event.
    Apply(apply::Args),
    /// Print the pseudonym of each value (to find a subject's rows).
    Hash(hash::Args),
    /// Write a new random 32-byte key to DIR/ID.key (mode 0600).
    Keygen {
        /// Key directory (created if missing, mode 0700).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Key id: letters, digits, `.`, `_`, `-`.
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Print the policy as a data inventory for humans (or JSON for tools).
    Explain {
        /// Policy file (YAML).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        #[arg(long, value_enum, default_value_t = ExplainFormat::Markdown)]
        format: ExplainFormat,
    },
    /// Print the JSON Schema of policy files (for editors).
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExplainFormat {
    Markdown,
    Json,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Check { policy } => check::run(&policy),
        Command::Apply(args) => apply::run(args),
        Command::Hash(args) => hash::run(args),
        Command::Keygen { dir, id } => veil::keys::generate(&dir, &id)
            .map(|path| {
                eprintln!(
                    "wrote {} (mode 0600); keep it secret, back it up",
                    path.display()
                )
            })
            .map_err(usage),
        Command::Explain { policy, format } => explain(&policy, format),
        Command::Schema => {
            print!("{}", veil::schema::policy_schema_json());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("veil: error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn explain(path: &std::path::Path, format: ExplainFormat) -> CliResult {
    let policy = veil::policy::load(path).map_err(usage)?;
    match format {
        ExplainFormat::Markdown => print!("{}", veil::explain::markdown(&policy)),
        ExplainFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&veil::explain::json(&policy)).map_err(io)?
        ),
    }
    Ok(())
}
