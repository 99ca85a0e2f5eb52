//! `veil run --config FILE`: the pipeline stage. A Kafka source runs the
//! long-lived service (`veil::kafka`); a file source runs the same
//! [`Stage`] over NDJSON lines once and exits.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use veil::config::{FilesPipeline, KafkaPipeline, Pipeline, PipelineConfig};
use veil::health::Health;
use veil::kafka::topics::{self, TopicsError};
use veil::kafka::{Control, ServiceError};
use veil::metrics::Metrics;
use veil::stage::Stage;
use veil::suppression::{Source, SuppressionList};

use super::output::{commit, create, note};
use super::{CliResult, Failure, breakdown, io, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config (YAML): source, routes, dead letters, keys.
    #[arg(long, value_name = "FILE", env = "VEIL_CONFIG")]
    config: PathBuf,
    /// Run against a Kafka broker even with veil's public demo key (whose
    /// pseudonyms anyone can recompute): for demos and tests only.
    #[arg(long, env = "VEIL_ALLOW_DEMO_KEY", value_parser = clap::builder::BoolishValueParser::new())]
    allow_demo_key: bool,
    #[command(flatten)]
    pub logging: super::Logging,
}

/// Why `veil run` refuses the demo key against a broker (also warned by `veil check`).
pub const DEMO_KEY_REFUSED: &str = "veil run refuses the public demo key against a Kafka broker: \
     its pseudonyms protect nobody; make a key with `veil keygen` \
     (or pass --allow-demo-key for a demo or a test)";

/// Exit code when a worker or retry thread died (sysexits EX_SOFTWARE):
/// non-zero so that an orchestrator restarts veil.
const EX_SOFTWARE: u8 = 70;

pub fn run(args: Args) -> CliResult {
    quiet_panics();
    let config = veil::config::load(&args.config).map_err(usage)?;
    let (stage, ring) = veil::stage::load(&config).map_err(usage)?;
    super::warn_kept_keys(&config);
    super::warn_keys(&ring);
    let (stage, suppression) = suppression(&config, &ring, stage)?;
    match &config.pipeline {
        // The active key or any route's: each would make pseudonyms anyone can recompute.
        Pipeline::Kafka(_) if stage.uses_public_demo_key() && !args.allow_demo_key => {
            Err(usage(anyhow::anyhow!(DEMO_KEY_REFUSED)))
        }
        Pipeline::Kafka(kafka) => run_kafka(&config, kafka, stage, suppression),
        Pipeline::Files(files) => run_files(&config, files, &stage, suppression.as_deref()),
    }
}

/// The config's suppression list with its files read, and the stage
/// checking it; `None` without `suppression:`.
fn suppression(
    config: &PipelineConfig,
    ring: &veil::keys::KeyRing,
    stage: Stage,
) -> Result<(Stage, Option<Arc<SuppressionList>>), Failure> {
    match veil::stage::suppression_entries(config, ring, &stage).map_err(usage)? {
        None => Ok((stage, None)),
        Some(entries) => {
            let list = Arc::new(SuppressionList::new(ring));
            let stage = veil::stage::with_suppression(&list, ring, entries, stage);
            Ok((stage, Some(list)))
        }
    }
}

/// How long `veil run` waits at start for the broker to say which topics
/// exist before it starts anyway (a reachable broker answers in
/// milliseconds).
const TOPICS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn run_kafka(
    config: &PipelineConfig,
    kafka: &KafkaPipeline,
    stage: Stage,
    suppression: Option<Arc<SuppressionList>>,
) -> CliResult {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(io)?;
    metrics.key_max_age(config.keys.max_age);
    if let Some(list) = &suppression {
        metrics.suppression(Source::Files, 1, list.len());
    }
    let health = Arc::new(Health::for_kafka());
    let _endpoint = match config.metrics.listen {
        Some(addr) => Some(super::serve_endpoint(
            addr,
            "metrics.listen",
            registry.clone(),
            health.clone(),
        )?),
        None => None,
    };
    // After the endpoint is up, so that liveness answers while the broker
    // is asked.
    topics_exist(config, kafka)?;
    let control = Control::default();
    super::runtime()?.block_on(async {
        spawn_signal_handlers(control.clone()).map_err(io)?;
        let running = veil::kafka::start(config, stage, suppression, metrics, health, control)
            .await
            .map_err(usage)?;
        match running.drain().await {
            Ok(_) => Ok(()),
            Err(e @ ServiceError::ThreadDied { .. }) => Err(Failure {
                code: EX_SOFTWARE,
                error: e.into(),
            }),
            Err(e) => Err(usage(e)),
        }
    })
}

/// Refuse to start (exit 64) when a topic the config names is missing: the
/// service would otherwise stall on the first input routed to it. A
/// broker that cannot be asked yet is not fatal: the service waits it out
/// (see `docs/pipeline.md`, delivery semantics), so veil starts anyway.
fn topics_exist(config: &PipelineConfig, kafka: &KafkaPipeline) -> CliResult {
    let wanted = topics::wanted(config);
    match topics::check(&kafka.source, &wanted, TOPICS_CHECK_TIMEOUT) {
        Ok(()) => Ok(()),
        Err(e @ TopicsError::Missing { .. }) => Err(usage(e)),
        Err(e @ TopicsError::Unreachable { .. }) => {
            tracing::warn!(
                error = %e,
                "could not check that the topics exist; starting anyway, a missing topic will stall its partitions"
            );
            Ok(())
        }
    }
}

/// Replace the default panic hook, which prints the panic message, with one
/// that logs the thread and the code location only. A panic message is
/// built from whatever the failing code had at hand (an error that quotes
/// its input, a formatted value) and may hold event data, which logs must
/// never carry. The panic itself is then contained per input
/// ([`veil::stage::contain`]) or ends the thread (see `veil::kafka`). A
/// backtrace (function names and code locations only) follows when
/// `RUST_BACKTRACE` asks for one, for the first panic only: capturing one
/// takes tens of milliseconds, and a stream of inputs that each panic must
/// not slow veil down by that much per input. Installed by `run` and
/// `apply`, the commands that read events.
pub(super) fn quiet_panics() {
    static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location,
            "panic (its message is not logged: it may hold event data)"
        );
        if FIRST.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                eprintln!("{backtrace}");
            }
        }
    }));
}

/// SIGTERM and SIGINT stop (drain, commit, exit 0); SIGHUP reloads.
fn spawn_signal_handlers(control: Control) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); control.stop() }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); control.stop() }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading policies and keys"); control.reload() }
            }
        }
    });
    Ok(())
}

/// File mode: each line through every route ([`super::ndjson`]); clean
/// lines to each route's file, rejected lines to the dead-letter file; a
/// per-route summary.
fn run_files(
    config: &PipelineConfig,
    files: &FilesPipeline,
    stage: &Stage,
    suppression: Option<&SuppressionList>,
) -> CliResult {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(io)?;
    metrics.key_max_age(config.keys.max_age);
    super::warn_opt_out_headers(stage);
    let counters = metrics
        .live(&stage.policies(), &stage.key_ids(), stage.key_times())
        .with_shadows(&metrics, &stage.shadows());
    if let Some(list) = suppression {
        metrics.suppression(Source::Files, 1, list.len());
    }
    let _endpoint = super::serve_file_run(
        config.metrics.listen,
        "metrics.listen",
        registry.clone(),
        &metrics,
    )?;
    let (mut reader, _len) = super::apply::open_input(&files.input)?;
    let mut outputs = files
        .routes
        .iter()
        .map(|r| create(&r.to, &format!("route `{}` file", r.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dead = create(&files.dead_letter_file, "dead-letter file")?;
    let lines = super::ndjson::run(
        stage,
        &counters,
        0,
        &mut reader,
        &mut outputs,
        Some(&mut dead),
        |_, _| {},
    )?;
    // Only now, the whole input read, do the files take their final names.
    for (w, r) in outputs.into_iter().zip(&files.routes) {
        commit(w, &r.to, &format!("route `{}` file", r.name))?;
    }
    commit(dead, &files.dead_letter_file, "dead-letter file")?;
    note(format_args!("{}", file_summary(stage, &metrics, lines)));
    for s in counters.shadow_summaries(5) {
        let top: Vec<String> = s
            .top
            .iter()
            .map(|(class, change, n)| format!("{class} {change} x{n}"))
            .collect();
        note(format_args!(
            "  shadow of route {} ({}): {} of {} inputs would come out differently{}",
            s.route,
            s.policy,
            s.differed,
            s.compared,
            if top.is_empty() {
                String::new()
            } else {
                format!("; most: {}", top.join(", "))
            }
        ));
    }
    Ok(())
}

/// Inputs read and dead-lettered (by reason), then per route what was
/// forwarded and dropped (by reason), from the counters `/metrics` serves.
fn file_summary(stage: &Stage, m: &Metrics, lines: u64) -> String {
    let dead = m.dead_letter_totals();
    let mut s = format!(
        "veil run: {lines} events read, {} dead-lettered{}\n",
        dead.iter().map(|(_, n)| n).sum::<u64>(),
        breakdown(dead.iter().map(|(r, n)| (r.code(), *n))),
    );
    for r in stage.routes() {
        let t = m.route_totals(&r.name);
        s.push_str(&format!(
            "  route {:<12} policy {:<24} forwarded {:>8}  dropped {:>8}{}\n",
            r.name,
            r.engine.policy_id(),
            t.forwarded,
            t.dropped(),
            breakdown(t.dropped.iter().map(|(d, n)| (d.code(), *n))),
        ));
    }
    s
}
