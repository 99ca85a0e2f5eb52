//! Command-line adapters around the pure core: files and stdio in, files
//! and stdio out. Each subcommand lives in its own module.

mod apply;
mod check;
mod demo;
mod dev_broker;
mod diff;
mod erase;
mod hash;
mod keys;
mod lines;
mod ndjson;
mod output;
mod run;
mod suppress;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes (sysexits.h).
pub const EX_USAGE: u8 = 64;
pub const EX_NOINPUT: u8 = 66;
/// A service veil needs cannot be reached (the broker, for `check --connect`).
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_IOERR: u8 = 74;

/// A failure with the exit code it maps to. Messages never carry key
/// material or event content.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

pub type CliResult = Result<(), Failure>;

use output::{note, print};

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

/// `--log-format`, on the commands that log (`run`, `demo`, `apply`); the
/// others only print their result and, at most, a warning about keys.
#[derive(clap::Args)]
pub struct Logging {
    /// Log format of logs and warnings (stderr). Levels: VEIL_LOG, e.g. `info,veil=debug`.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, env = "VEIL_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Pretty,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The operations endpoint (`/metrics`, `/healthz`, `/readyz`), served
/// from its own one-thread runtime until dropped, so a busy pipeline never
/// starves a scrape or a probe.
pub struct Endpoint {
    _runtime: tokio::runtime::Runtime,
}

/// Bind `addr` now (a taken port fails at start, naming `setting`), then
/// serve in the background. Logs the bound address (useful with port 0).
pub fn serve_endpoint(
    addr: std::net::SocketAddr,
    setting: &'static str,
    registry: prometheus::Registry,
    health: std::sync::Arc<veil::health::Health>,
) -> Result<Endpoint, Failure> {
    let listener = veil::endpoint::bind(addr, setting).map_err(usage)?;
    let bound = listener.local_addr().map_err(io)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("veil-http")
        .enable_all()
        .build()
        .map_err(io)?;
    runtime.spawn(async move {
        if let Err(e) = veil::endpoint::serve(listener, registry, health).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    Ok(Endpoint { _runtime: runtime })
}

/// The endpoint of a one-shot file run (`apply`, `run` over files), if
/// asked for. Call once policies and keys are loaded and published with
/// [`veil::metrics::Metrics::live`]: such a run is ready from then on,
/// and `veil_ready` says what `/readyz` says.
pub fn serve_file_run(
    listen: Option<std::net::SocketAddr>,
    setting: &'static str,
    registry: prometheus::Registry,
    metrics: &veil::metrics::Metrics,
) -> Result<Option<Endpoint>, Failure> {
    let health = std::sync::Arc::new(veil::health::Health::default());
    health.set_loaded(true);
    metrics.set_ready(&health);
    listen
        .map(|addr| serve_endpoint(addr, setting, registry, health))
        .transpose()
}

/// `  (code n, code n)`: a count broken down by reason code, for the
/// summaries; empty when there is nothing to break down.
pub fn breakdown(parts: impl Iterator<Item = (&'static str, u64)>) -> String {
    let parts: Vec<String> = parts.map(|(code, n)| format!("{code} {n}")).collect();
    if parts.is_empty() {
        return String::new();
    }
    format!("  ({})", parts.join(", "))
}

/// A route whose policy reads an opt-out from a record header cannot check
/// it on lines of a file (`veil apply`, file-mode `veil run`): said once per
/// route, at `warn`, so that no one takes the check for done.
pub fn warn_opt_out_headers(stage: &veil::stage::Stage) {
    for (route, header) in stage.opt_out_headers() {
        tracing::warn!(
            route,
            header,
            "consent.opt_out_header is not checked here: lines of a file have no headers; \
             carry the opt-out in the event (consent.opt_out) where events also go through files"
        );
    }
}

/// A `keep` of raw message keys opted into with a reason is said once, at
/// `warn`, with that reason (`veil::stage::load` has checked `message_key`
/// against the policies: exit 64 when it does not fit them).
pub fn warn_kept_keys(config: &veil::config::PipelineConfig) {
    let kafka = matches!(config.pipeline, veil::config::Pipeline::Kafka(_));
    if let Some(reason) = config.keep_key_reason.as_ref().filter(|_| kafka) {
        tracing::warn!(
            reason = reason.as_str(),
            "message_key keep: raw Kafka keys are copied in clear to every route's topic"
        );
    }
}

/// A policy's warnings (guessable identifiers pseudonymised, ...), logged.
pub fn warn_policy(policy: &veil::Policy) {
    for w in &policy.warnings {
        tracing::warn!("policy: {w}");
    }
}

/// Tell the operator what is wrong with the keys that were loaded anyway
/// (key files other users can read, the public demo key).
pub fn warn_keys(ring: &veil::keys::KeyRing) {
    for w in ring.warnings() {
        tracing::warn!("{w}");
    }
}

/// The async runtime of the Kafka commands: signals, timers, the consumer.
/// Policy work runs on veil's own worker threads, so two suffice.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io)
}

/// Logs go to stderr; fields are codes, names and counts, never event content.
/// Levels from `VEIL_LOG`, else `RUST_LOG`, else `default`.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VEIL_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy, or a pipeline config and every policy and key it names.
    #[command(group = clap::ArgGroup::new("what").required(true))]
    Check {
        /// Policy file (YAML).
        #[arg(long, value_name = "FILE", group = "what")]
        policy: Option<PathBuf>,
        /// Pipeline config (YAML).
        #[arg(long, value_name = "FILE", group = "what")]
        config: Option<PathBuf>,
        /// With --config: also ask the broker that every source, route and
        /// dead-letter topic exists (a missing one: exit 64; no broker
        /// within 10 s: exit 69).
        #[arg(long, requires = "config")]
        connect: bool,
    },
    /// Run the pipeline stage a config describes (Kafka service, or files once).
    Run(run::Args),
    /// Run the whole Kafka pipeline on an in-process mock cluster with the example events.
    Demo(demo::Args),
    /// Serve an in-memory Kafka cluster (librdkafka's mock) on 127.0.0.1 until SIGTERM.
    DevBroker(dev_broker::Args),
    /// Apply a policy to NDJSON events: one clean line per forwarded event.
    Apply(apply::Args),
    /// Print the pseudonym of each value (to find a subject's rows).
    Hash(hash::Args),
    /// Print the token lines of identifiers for a suppression topic or file.
    Suppress(suppress::Args),
    /// Print every pseudonym identifiers have or had, for deleting a subject's rows.
    Erase(erase::Args),
    /// Inspect keys: `veil keys list --dir DIR` (never prints key bytes).
    Keys(keys::Args),
    /// Write a new random 32-byte key to DIR/ID.key (mode 0600).
    Keygen {
        /// Key directory (created if missing, mode 0700).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Key id: letters, digits, `.`, `_`, `-`.
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Print the policy (or a pipeline config's routes) as a data inventory:
    /// Markdown, JSON for tools, or one HTML page to publish.
    Explain {
        /// Policy file (YAML).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "config",
            conflicts_with = "config"
        )]
        policy: Option<PathBuf>,
        /// Pipeline config: every route's policy, plus where its data goes,
        /// its key id, shadow, suppression and dead-letter settings (keys
        /// themselves are not read).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// `html`: one self-contained page (no script, no external asset) to publish.
        #[arg(long, value_enum, default_value_t = ExplainFormat::Markdown)]
        format: ExplainFormat,
    },
    /// Print the JSON Schema of policy files (for editors).
    Schema,
    /// What a policy change does to what flows (exit 1 if it widens anything).
    Diff(diff::Args),
    /// Run policy unit tests: case files of inputs and expected outputs (exit 1 if any fails).
    Test(test::Args),
}

#[derive(Clone, Copy, ValueEnum)]
enum ExplainFormat {
    Markdown,
    Json,
    Html,
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
    // The long-running commands log at info; the others only print veil's
    // warnings (about keys, and `apply`'s contained panics), their output
    // being their report.
    let (format, default) = match &cli.command {
        Command::Run(args) => (args.logging.log_format, "info"),
        Command::Demo(args) => (args.logging.log_format, "info"),
        Command::DevBroker(args) => (args.logging.log_format, "warn"),
        Command::Apply(args) => (args.logging.log_format, "veil=warn"),
        _ => (LogFormat::Pretty, "veil=warn"),
    };
    init_logging(format, default);
    let result = match cli.command {
        Command::Check {
            policy,
            config,
            connect,
        } => match (policy, config) {
            (Some(p), _) => check::run(&p),
            (None, Some(c)) => check::run_config(&c, connect),
            (None, None) => unreachable!("clap requires one"),
        },
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DevBroker(args) => dev_broker::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Hash(args) => hash::run(args),
        Command::Suppress(args) => suppress::run(args),
        Command::Erase(args) => erase::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Keygen { dir, id } => veil::keys::generate(&dir, &id)
            .map(|path| {
                note(format_args!(
                    "wrote {} (mode 0600); keep it secret, back it up\n",
                    path.display()
                ))
            })
            .map_err(usage),
        Command::Explain {
            policy,
            config,
            format,
        } => match policy {
            Some(policy) => explain(&policy, format),
            // clap requires one of the two.
            None => explain_config(&config.unwrap_or_default(), format),
        },
        Command::Schema => print(format_args!("{}", veil::schema::policy_schema_json())),
        Command::Test(args) => test::run(args),
        Command::Diff(args) => diff::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`veil hash … | head -1`): stop quietly.
        Err(f) if output::is_broken_pipe(&f.error) => ExitCode::from(output::EX_PIPE),
        Err(f) => {
            note(format_args!("veil: error: {:#}\n", f.error));
            ExitCode::from(f.code)
        }
    }
}

fn explain(path: &std::path::Path, format: ExplainFormat) -> CliResult {
    let policy = veil::policy::load(path).map_err(usage)?;
    match format {
        ExplainFormat::Markdown => print(format_args!("{}", veil::explain::markdown(&policy))),
        ExplainFormat::Json => print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&veil::explain::json(&policy)).map_err(io)?
        )),
        ExplainFormat::Html => print(format_args!(
            "{}",
            veil::explain::html::policy_page(&veil::explain::json(&policy))
        )),
    }
}

/// `explain --config`: the deployment and each route's inventory.
fn explain_config(path: &std::path::Path, format: ExplainFormat) -> CliResult {
    let config = veil::config::load(path).map_err(usage)?;
    let policies = config
        .policies()
        .into_iter()
        .map(|(_, p)| veil::policy::load(p).map_err(usage))
        .collect::<Result<Vec<_>, _>>()?;
    let deployment = veil::explain::deployment::json(&config, &policies);
    match format {
        ExplainFormat::Markdown => print(format_args!(
            "{}",
            veil::explain::deployment::markdown(&deployment, &policies)
        )),
        ExplainFormat::Json => print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&deployment).map_err(io)?
        )),
        ExplainFormat::Html => print(format_args!(
            "{}",
            veil::explain::html::deployment_page(&deployment)
        )),
    }
}
