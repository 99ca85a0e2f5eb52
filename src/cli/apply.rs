//! `veil apply`: NDJSON in, NDJSON out, in input order; rejected lines to
//! the dead-letter file; a summary to stderr.
//!
//! Invariant: a rejected or dropped line never reaches the output, and a
//! dead-letter record carries the line number, the reason code and a detail
//! without field values; the raw line only with `--dead-letter-payload`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use veil::files::{Output, Role};
use veil::metrics::{Metrics, StageCounters};
use veil::outcome::Reject;
use veil::stage::{Origin, apply_one};
use veil::{CompiledPolicy, Limits, Outcome, RejectReason, Scratch, compile};

use super::lines::{Line, read_line};
use super::output::{commit, create, note, refuse_clashes};
use super::{CliResult, EX_NOINPUT, Failure, io, usage};

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
    /// Where rejected lines are recorded (JSON lines with line, reason, detail).
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// Also copy the raw rejected line into its dead-letter record (may hold personal data).
    #[arg(long, requires = "dead_letter")]
    dead_letter_payload: bool,
    /// Reject lines larger than this many bytes (the `\n` or `\r\n` not counted).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Reject events nested deeper than this.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_depth)]
    max_depth: u32,
    /// No summary on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Serve /metrics, /healthz and /readyz on this address while running
    /// (the same metrics as `veil run`; the route label is the policy name).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The run's counters: the ones `/metrics` serves, which the summary reads.
struct Counting {
    metrics: Metrics,
    counters: StageCounters,
    route: String,
}

pub(super) fn open_input(path: &Path) -> Result<(Box<dyn BufRead>, Option<u64>), Failure> {
    if path == Path::new("-") {
        return Ok((
            Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
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
    places.push((Role::Output, args.output.as_path(), "--output"));
    if let Some(d) = &args.dead_letter {
        places.push((Role::Output, d.as_path(), "--dead-letter"));
    }
    refuse_clashes(&places)?;
    let engine = compile(policy, ring.active(), limits);
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(io)?;
    let route = engine.policy().name.clone();
    metrics.set_live_routes([(route.as_str(), &engine)], engine.key_id());
    let counting = Counting {
        counters: StageCounters::for_routes(&metrics, [route.as_str()]),
        metrics,
        route,
    };
    let _endpoint = super::serve_file_run(
        args.metrics_listen,
        "--metrics-listen",
        registry,
        &counting.metrics,
    )?;
    let (mut input, len) = open_input(&args.input)?;
    let mut output = create(&args.output, "output")?;
    let mut dead = match &args.dead_letter {
        Some(p) => Some(create(p, "dead-letter file")?),
        None => None,
    };
    let bar = progress(len);
    let started = Instant::now();
    let lines = process(
        &engine,
        &args,
        &counting,
        &mut input,
        &mut output,
        dead.as_mut(),
        &bar,
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
                &engine,
                &counting,
                lines,
                started.elapsed(),
                args.dead_letter.is_some()
            )
        ));
    }
    Ok(())
}

/// Returns the number of lines read.
fn process(
    engine: &CompiledPolicy,
    args: &Args,
    counting: &Counting,
    input: &mut dyn BufRead,
    output: &mut impl Write,
    mut dead: Option<&mut BufWriter<Output>>,
    bar: &ProgressBar,
) -> Result<u64, Failure> {
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut line = Vec::new();
    let mut out = Vec::with_capacity(4096);
    let mut scratch = Scratch::default();
    let limit = engine.limits().max_message_bytes;
    let policy_id = engine.policy_id();
    let mut input = input;
    loop {
        let read = read_line(&mut input, &mut line, limit)
            .context("cannot read input")
            .map_err(io)?;
        let Some(read) = read else { break };
        lines += 1;
        let (outcome, size) = match read {
            Line::Complete => {
                out.clear();
                let v = apply_one(engine, &line, Origin::Line(lines), &mut out, &mut scratch);
                if v.outcome == Outcome::Forwarded {
                    out.push(b'\n');
                    output
                        .write_all(&out)
                        .context("cannot write output")
                        .map_err(io)?;
                }
                if !matches!(v.outcome, Outcome::Rejected(_)) {
                    counting
                        .counters
                        .route(0, v.outcome, &v.counts, out.len().saturating_sub(1));
                }
                (v.outcome, line.len())
            }
            Line::TooLong { len } => (
                Outcome::Rejected(Reject {
                    reason: RejectReason::TooLarge,
                    offset: limit,
                    what: "message larger than the limit",
                }),
                len,
            ),
        };
        bytes += size as u64;
        counting.counters.input(size);
        if let Outcome::Rejected(r) = outcome {
            counting.counters.rejected(r.reason);
            if let Some(d) = dead.as_deref_mut() {
                let mut record = json!({
                    "line": lines,
                    "reason": r.reason.code(),
                    "detail": r.to_string(),
                    "policy": policy_id,
                });
                if args.dead_letter_payload && matches!(read, Line::Complete) {
                    match std::str::from_utf8(&line) {
                        Ok(s) => record["payload"] = json!(s),
                        Err(_) => {
                            record["payload_base64"] =
                                json!(base64::engine::general_purpose::STANDARD.encode(&line))
                        }
                    }
                }
                serde_json::to_writer(&mut *d, &record)
                    .context("cannot write dead-letter file")
                    .map_err(io)?;
                d.write_all(b"\n")
                    .context("cannot write dead-letter file")
                    .map_err(io)?;
            }
        }
        if lines % 4096 == 0 {
            bar.set_position(bytes);
            let secs = bar.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} events/s", lines as f64 / secs));
        }
    }
    Ok(lines)
}

fn breakdown(parts: impl Iterator<Item = (&'static str, u64)>) -> String {
    let parts: Vec<String> = parts.map(|(code, n)| format!("{code} {n}")).collect();
    if parts.is_empty() {
        return String::new();
    }
    format!("  ({})", parts.join(", "))
}

fn summary(
    engine: &CompiledPolicy,
    counting: &Counting,
    lines: u64,
    elapsed: Duration,
    has_dead_letter: bool,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let t = counting.metrics.route_totals(&counting.route);
    let rejected = counting.metrics.dead_letter_totals();
    let mut s = format!(
        "veil apply: policy {}, key {}\n  read        {:>9} events, {:.2} MB in {:.2} s ({:.0} events/s)\n  forwarded   {:>9}\n  dropped     {:>9}{}\n  rejected    {:>9}{}\n",
        engine.policy_id(),
        engine.key_id(),
        lines,
        counting.metrics.input_bytes.get() as f64 / 1e6,
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
    if t.dead_lettered > 0 && !has_dead_letter {
        s.push_str(
            "  note: rejected lines were not recorded; pass --dead-letter FILE to keep them\n",
        );
    }
    s
}
