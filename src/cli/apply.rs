//! `veil apply`: NDJSON in, NDJSON out, in input order; rejected lines to
//! the dead-letter file; a summary to stderr. The policy runs as a
//! one-route [`Stage`] through the same loop as a file-source `veil run`
//! ([`super::ndjson`]), so both write the same dead-letter records.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use veil::Limits;
use veil::config::{MessageKey, StageConfig};
use veil::files::Role;
use veil::metrics::Metrics;
use veil::stage::Stage;

use super::output::{commit, create, note, refuse_clashes};
use super::{CliResult, EX_NOINPUT, Failure, breakdown, io, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (YAML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Key directory (`<key_id>.key` files).
    #[arg(long, value_name = "DIR", env = "VEIL_KEYS")]
    keys: PathBuf,
    /// Active key; default: the only key in the directory.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// NDJSON input file, or `-` for stdin.
    #[arg(long, value_name = "FILE", default_value = "-")]
    input: PathBuf,
    /// NDJSON output file, or `-` for stdout. A file is written aside and
    /// renamed into place only when the run succeeds; it may not be the
    /// input or the dead-letter file (compared by file identity).
    #[arg(long, value_name = "FILE", default_value = "-")]
    output: PathBuf,
    /// Where rejected lines are recorded: JSON lines with reason, detail,
    /// policies and line, as every veil dead letter (docs/pipeline.md).
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// Also copy the raw rejected line into its dead-letter record (may hold personal data).
    #[arg(long, requires = "dead_letter")]
    dead_letter_payload: bool,
    /// Reject lines larger than this many bytes (the `\n` or `\r\n` not counted).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Suppression (opt-out) file: one raw identifier per line, `#`
    /// comments and blank lines ignored. Events whose subject (a policy
    /// `subject` path, after its normalisation) is listed are dropped as
    /// `suppressed`. Repeatable.
    #[arg(long = "suppress", value_name = "FILE")]
    suppress: Vec<PathBuf>,
    /// Reject events nested deeper than this.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_depth)]
    max_depth: u32,
    /// Threads applying the policy (lines are read in batches and written
    /// in input order, so the output is the same for any number).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Cache the pseudonyms of up to about N repeated values per thread
    /// (0: none). Bounded (~200 bytes per entry) and zeroed when done; it
    /// pays only where identifiers repeat and HMAC is dear (no SHA
    /// extensions): see BENCHMARKS.md, "Pseudonym cache".
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=(1 << 24)))]
    pseudonym_cache: u32,
    /// No summary on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Serve /metrics, /healthz and /readyz on this address while running
    /// (the same metrics as `veil run`; the route label is the policy name).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub logging: super::Logging,
}

pub(super) fn open_input(path: &Path) -> Result<(Box<dyn BufRead + Send>, Option<u64>), Failure> {
    if path == Path::new("-") {
        // `Stdin` (not its lock) so that a reading thread may own it.
        return Ok((
            Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
            None,
        ));
    }
    let file = File::open(path)
        .with_context(|| format!("cannot open input {}", path.display()))
        .map_err(|error| Failure {
            code: EX_NOINPUT,
            error,
        })?;
    let len = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(BufReader::with_capacity(1 << 16, file)), len))
}

fn progress(len: Option<u64>) -> ProgressBar {
    // Only on a terminal, and only where it is worth drawing.
    if !io::stderr().is_terminal() || len.is_some_and(|l| l < 8 << 20) {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(l) => ProgressBar::new(l).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} eta {eta}")
                .expect("static template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {msg}").expect("static template"),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    bar
}

pub fn run(args: Args) -> CliResult {
    super::run::quiet_panics();
    let policy = veil::policy::load(&args.policy).map_err(usage)?;
    super::warn_policy(&policy);
    let ring = veil::keys::load_dir(&args.keys, args.key_id.as_deref()).map_err(usage)?;
    super::warn_keys(&ring);
    if args.max_message_bytes == 0 || args.max_message_bytes > Limits::MAX_MESSAGE_BYTES {
        return Err(usage(anyhow::anyhow!(
            "--max-message-bytes must be between 1 and {}",
            Limits::MAX_MESSAGE_BYTES
        )));
    }
    if args.max_depth == 0 || args.max_depth > Limits::MAX_DEPTH {
        return Err(usage(anyhow::anyhow!(
            "--max-depth must be between 1 and {}",
            Limits::MAX_DEPTH
        )));
    }
    let limits = Limits {
        max_message_bytes: args.max_message_bytes,
        max_depth: args.max_depth,
    };
    // Everything read (the events, the policy, the keys) against everything written.
    let key_files = veil::keys::key_file_paths(&args.keys);
    let mut places = vec![
        (Role::Input, args.input.as_path(), "--input"),
        (Role::Input, args.policy.as_path(), "--policy"),
    ];
    places.extend(
        key_files
            .iter()
            .map(|k| (Role::Input, k.as_path(), "key file")),
    );
    places.extend(
        args.suppress
            .iter()
            .map(|f| (Role::Input, f.as_path(), "--suppress")),
    );
    places.push((Role::Output, args.output.as_path(), "--output"));
    if let Some(d) = &args.dead_letter {
        places.push((Role::Output, d.as_path(), "--dead-letter"));
    }
    refuse_clashes(&places)?;
    // One route, named after its policy: the `route` label of its metrics.
    let route = policy.name.clone();
    let suppression = if args.suppress.is_empty() {
        None
    } else if policy.subject.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "--suppress needs a policy that declares `subject` paths ({} declares none): without them no event can be matched to the list",
            args.policy.display()
        )));
    } else {
        let list = veil::suppression::SuppressionList::new(&ring);
        let tokeniser = veil::suppression::Tokeniser::new(ring.active());
        let entries =
            veil::suppression::read_files(&args.suppress, &tokeniser, &ring).map_err(|e| {
                Failure {
                    code: EX_NOINPUT,
                    error: e.into(),
                }
            })?;
        list.replace(veil::suppression::Source::Files, entries);
        Some(std::sync::Arc::new(list))
    };
    let stage = Stage::new(
        &StageConfig {
            // Files have no Kafka keys.
            message_key: MessageKey::Drop,
            keep_headers: Vec::new(),
            include_payload: args.dead_letter_payload,
            limits,
        },
        vec![(route.clone(), policy)],
        &ring,
    )
    .map_err(usage)?;
    let stage = match &suppression {
        Some(list) => stage.suppressing(list),
        None => stage,
    };
    super::warn_opt_out_headers(&stage);
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(io)?;
    metrics.key_max_age(std::time::Duration::from_secs(
        veil::config::KeysConfig::DEFAULT_MAX_AGE_DAYS * 86_400,
    ));
    let counters = metrics
        .live(&stage.policies(), &stage.key_ids(), stage.key_times())
        .with_shadows(&metrics, &stage.shadows());
    if let Some(list) = &suppression {
        metrics.suppression(
            veil::suppression::Source::Files,
            args.suppress.len() as u64,
            list.len(),
        );
    }
    let _endpoint =
        super::serve_file_run(args.metrics_listen, "--metrics-listen", registry, &metrics)?;
    let (mut input, len) = open_input(&args.input)?;
    let mut output = create(&args.output, "output")?;
    let mut dead = match &args.dead_letter {
        Some(p) => Some(create(p, "dead-letter file")?),
        None => None,
    };
    let bar = progress(len);
    let started = Instant::now();
    let lines = super::ndjson::run_parallel(
        &stage,
        &counters,
        super::ndjson::Threads {
            threads: usize::from(args.threads),
            cache: args.pseudonym_cache as usize,
        },
        &mut input,
        std::slice::from_mut(&mut output),
        dead.as_mut(),
        |lines, bytes| {
            bar.set_position(bytes);
            let secs = bar.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} events/s", lines as f64 / secs));
        },
    )?;
    // Only now, the whole input read, do the files take their final names.
    commit(output, &args.output, "output")?;
    if let (Some(d), Some(path)) = (dead, &args.dead_letter) {
        commit(d, path, "dead-letter file")?;
    }
    bar.finish_and_clear();
    if !args.quiet {
        note(format_args!(
            "{}",
            summary(
                &stage,
                &metrics,
                &route,
                lines,
                started.elapsed(),
                args.dead_letter.is_some()
            )
        ));
    }
    Ok(())
}

fn summary(
    stage: &Stage,
    metrics: &Metrics,
    route: &str,
    lines: u64,
    elapsed: Duration,
    has_dead_letter: bool,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let t = metrics.route_totals(route);
    let rejected = metrics.dead_letter_totals();
    let policies: Vec<String> = stage
        .policies()
        .iter()
        .map(|(_, engine)| engine.policy_id())
        .collect();
    let mut s = format!(
        "veil apply: policy {}, key {}\n  read        {:>9} events, {:.2} MB in {:.2} s ({:.0} events/s)\n  forwarded   {:>9}\n  dropped     {:>9}{}\n  rejected    {:>9}{}\n",
        policies.join(", "),
        stage.key_id(),
        lines,
        metrics.input_bytes_total() as f64 / 1e6,
        secs,
        lines as f64 / secs,
        t.forwarded,
        t.dropped(),
        breakdown(t.dropped.iter().map(|(r, n)| (r.code(), *n))),
        t.dead_lettered,
        breakdown(rejected.iter().map(|(r, n)| (r.code(), *n))),
    );
    let values: Vec<String> = t.fields.iter().map(|(k, n)| format!("{k} {n}")).collect();
    s.push_str(&format!("  values      {}\n", values.join(", ")));
    if !t.scan.is_empty() {
        // Kinds and counts only: a matched value never reaches a summary.
        let found: Vec<String> = t
            .scan
            .iter()
            .map(|(kind, action, n)| format!("{} {n} ({})", kind.code(), action.code()))
            .collect();
        s.push_str(&format!("  scan found  {}\n", found.join(", ")));
    }
    if t.consent_invalid > 0 {
        s.push_str(&format!(
            "  note: {} of the no_consent events carried a TC string that could not be read\n",
            t.consent_invalid
        ));
    }
    if t.dead_lettered > 0 && !has_dead_letter {
        s.push_str(
            "  note: rejected lines were not recorded; pass --dead-letter FILE to keep them\n",
        );
    }
    s
}
