//! A [`Stage`] over NDJSON lines: the one loop behind `veil apply` (a
//! one-route stage) and `veil run` with a file source. Each line goes
//! through every route; clean lines go to each route's output and rejected
//! lines to the dead letters, in input order; everything is counted on the
//! counters `/metrics` serves and the summaries read.
//!
//! Invariant: a rejected or dropped line never reaches a route's output,
//! and its dead-letter record is the one [`Stage::dead_letter`] builds for
//! every mode (line number, reason code, a detail without field values, the
//! policies; the raw line only when the stage includes payloads).

use std::io::{BufRead, BufWriter, Write};

use anyhow::Context;
use veil::files::Output;
use veil::metrics::StageCounters;
use veil::outcome::Reject;
use veil::stage::{Origin, Processed, Stage};
use veil::{RejectReason, RouteOutcome, Scratch};

use super::lines::{Line, read_line};
use super::{Failure, io};

/// How often, in lines, `progress` hears how far the run got.
const PROGRESS_EVERY: u64 = 4096;

/// Run `stage` over every line of `input`; `routes` holds one output per
/// route, in route order; rejected lines are recorded in `dead_letter`
/// when there is one (and counted either way). `progress(lines, bytes)` is
/// called every few thousand lines. Returns the number of lines read.
pub fn run(
    stage: &Stage,
    counters: &StageCounters,
    input: &mut dyn BufRead,
    routes: &mut [BufWriter<Output>],
    mut dead_letter: Option<&mut BufWriter<Output>>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, Failure> {
    let limit = stage.limits().max_message_bytes;
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut line = Vec::new();
    let mut processed = Processed::default();
    let mut scratch = Scratch::default();
    // `&mut dyn BufRead` is itself a (sized) reader.
    let mut input = input;
    while let Some(read) = read_line(&mut input, &mut line, limit)
        .context("cannot read input")
        .map_err(io)?
    {
        lines += 1;
        let origin = Origin::Line(lines);
        let (reject, payload) = match read {
            Line::Complete => {
                bytes += line.len() as u64;
                stage.process(&line, None, origin, &mut processed, &mut scratch);
                counters.record(line.len(), processed.tally());
                counters.shadow(processed.shadow.routes());
                (processed.rejected, Some(line.as_slice()))
            }
            // Not held in memory, so there is no payload to record.
            Line::TooLong { len } => {
                bytes += len as u64;
                counters.rejected(len, RejectReason::TooLarge);
                let reject = Reject {
                    reason: RejectReason::TooLarge,
                    offset: limit,
                    what: "message larger than the limit",
                };
                (Some(reject), None)
            }
        };
        match reject {
            Some(r) => {
                if let Some(d) = dead_letter.as_deref_mut() {
                    let record = stage.dead_letter(&r, origin, payload);
                    write_line(d, &record).context("cannot write dead-letter file")
                } else {
                    Ok(())
                }
            }
            None => processed
                .outputs
                .iter()
                .zip(routes.iter_mut())
                .filter(|(o, _)| o.outcome == RouteOutcome::Forwarded)
                .try_for_each(|(o, w)| write_line(w, processed.value(o)))
                .context("cannot write output"),
        }
        .map_err(io)?;
        if lines % PROGRESS_EVERY == 0 {
            progress(lines, bytes);
        }
    }
    Ok(lines)
}

fn write_line(w: &mut impl Write, line: &[u8]) -> std::io::Result<()> {
    w.write_all(line)?;
    w.write_all(b"\n")
}
