//! A [`Stage`] over NDJSON lines: the one loop behind `veil apply` (a
//! one-route stage) and `veil run` with a file source. Each line goes
//! through every route; clean lines go to each route's output and rejected
//! lines to the dead letters, in input order; everything is counted on the
//! counters `/metrics` serves and the summaries read.
//!
//! Invariants:
//! - A rejected or dropped line never reaches a route's output, and its
//!   dead-letter record is the one [`Stage::dead_letter`] builds for every
//!   mode (line number, reason code, a detail without field values, the
//!   policies; the raw line only when the stage includes payloads).
//! - With `threads > 1` ([`run_parallel`]) the outputs are byte for byte
//!   those of one thread: lines are read in batches, processed by any
//!   thread, and written in input order.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};

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
/// Lines per batch handed to a thread (`run_parallel`).
const BATCH_LINES: usize = 1024;
/// Bytes per batch, at most (a batch of long lines is cut earlier).
const BATCH_BYTES: usize = 1 << 20;

/// Where one line's records go.
trait Sink {
    fn route(&mut self, route: usize, line: &[u8]) -> std::io::Result<()>;
    fn dead(&mut self, record: &[u8]) -> std::io::Result<()>;
}

/// One line read: complete (its bytes) or too long (its length; not held).
enum Read<'a> {
    Complete(&'a [u8]),
    TooLong(usize),
}

/// Apply the stage to one line, count it, and hand its records to `sink`.
fn one_line(
    stage: &Stage,
    counters: &StageCounters,
    read: Read<'_>,
    number: u64,
    (processed, scratch): (&mut Processed, &mut Scratch),
    sink: &mut impl Sink,
) -> std::io::Result<()> {
    let origin = Origin::Line(number);
    let (reject, payload) = match read {
        Read::Complete(line) => {
            stage.process(line, None, origin, processed, scratch);
            counters.record(line.len(), processed.tally());
            counters.shadow(processed.shadow.routes());
            (processed.rejected, Some(line))
        }
        // Not held in memory, so there is no payload to record.
        Read::TooLong(len) => {
            counters.rejected(len, RejectReason::TooLarge);
            let reject = Reject {
                reason: RejectReason::TooLarge,
                offset: stage.limits().max_message_bytes,
                what: "message larger than the limit",
            };
            (Some(reject), None)
        }
    };
    match reject {
        Some(r) => sink.dead(&stage.dead_letter(&r, origin, payload)),
        None => {
            for (route, o) in processed.outputs.iter().enumerate() {
                if o.outcome == RouteOutcome::Forwarded {
                    sink.route(route, processed.value(o))?;
                }
            }
            Ok(())
        }
    }
}

/// Writes straight to the files (one thread).
struct Files<'a, 'b> {
    routes: &'a mut [BufWriter<Output>],
    dead_letter: Option<&'b mut BufWriter<Output>>,
    /// Which failed: a route's output or the dead letters.
    failed_dead: bool,
}

impl Sink for Files<'_, '_> {
    fn route(&mut self, route: usize, line: &[u8]) -> std::io::Result<()> {
        self.failed_dead = false;
        match self.routes.get_mut(route) {
            Some(w) => write_line(w, line),
            None => Ok(()), // (one output per route, made from the same stage)
        }
    }

    fn dead(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.failed_dead = true;
        match self.dead_letter.as_deref_mut() {
            Some(d) => write_line(d, record),
            None => Ok(()),
        }
    }
}

/// Run `stage` over every line of `input` (with a pseudonym cache of
/// `cache` entries; 0: none); `routes` holds one output per route, in route order; rejected lines are recorded in `dead_letter`
/// when there is one (and counted either way). `progress(lines, bytes)` is
/// called every few thousand lines. Returns the number of lines read.
pub fn run(
    stage: &Stage,
    counters: &StageCounters,
    cache: usize,
    input: &mut dyn BufRead,
    routes: &mut [BufWriter<Output>],
    dead_letter: Option<&mut BufWriter<Output>>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, Failure> {
    let limit = stage.limits().max_message_bytes;
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut line = Vec::new();
    let mut processed = Processed::default();
    let mut scratch = Scratch::with_pseudonym_cache(cache);
    let mut files = Files {
        routes,
        dead_letter,
        failed_dead: false,
    };
    // `&mut dyn BufRead` is itself a (sized) reader.
    let mut input = input;
    while let Some(read) = read_line(&mut input, &mut line, limit)
        .context("cannot read input")
        .map_err(io)?
    {
        lines += 1;
        let read = match read {
            Line::Complete => {
                bytes += line.len() as u64;
                Read::Complete(&line)
            }
            Line::TooLong { len } => {
                bytes += len as u64;
                Read::TooLong(len)
            }
        };
        let state = (&mut processed, &mut scratch);
        if let Err(e) = one_line(stage, counters, read, lines, state, &mut files) {
            return Err(write_failure(e, files.failed_dead));
        }
        if lines % PROGRESS_EVERY == 0 {
            progress(lines, bytes);
        }
    }
    Ok(lines)
}

fn write_failure(e: std::io::Error, dead: bool) -> Failure {
    io(anyhow::Error::new(e).context(if dead {
        "cannot write dead-letter file"
    } else {
        "cannot write output"
    }))
}

/// How [`run_parallel`] applies the stage.
#[derive(Debug, Clone, Copy)]
pub struct Threads {
    /// Threads applying the stage (1: the calling thread, as [`run`]).
    pub threads: usize,
    /// Pseudonym cache entries per thread (0: none).
    pub cache: usize,
}

/// Lines read together, for one thread to process.
struct Batch {
    seq: u64,
    /// The number of its first line.
    first: u64,
    data: Vec<u8>,
    /// Each line: its bytes in `data`, or the length of a line too long to hold.
    lines: Vec<Result<Range<usize>, usize>>,
    bytes: u64,
}

/// What a thread made of a batch: each route's lines and the dead letters,
/// ready to write.
#[derive(Default)]
struct Made {
    routes: Vec<Vec<u8>>,
    dead: Vec<u8>,
}

impl Sink for Made {
    fn route(&mut self, route: usize, line: &[u8]) -> std::io::Result<()> {
        if let Some(out) = self.routes.get_mut(route) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        Ok(())
    }

    fn dead(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.dead.extend_from_slice(record);
        self.dead.push(b'\n');
        Ok(())
    }
}

/// [`run`] on `threads` threads (1: [`run`] itself). One thread reads
/// batches of lines, `threads` apply the stage, and the calling thread
/// writes each batch's records in input order, so the output is the same as
/// with one thread. At most `2 * threads` batches (1 MiB each at most) are
/// held at once.
pub fn run_parallel(
    stage: &Stage,
    counters: &StageCounters,
    Threads { threads, cache }: Threads,
    input: &mut (dyn BufRead + Send),
    routes: &mut [BufWriter<Output>],
    mut dead_letter: Option<&mut BufWriter<Output>>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, Failure> {
    if threads <= 1 {
        return run(stage, counters, cache, input, routes, dead_letter, progress);
    }
    let limit = stage.limits().max_message_bytes;
    let (to_workers, batches) = sync_channel::<Batch>(threads * 2);
    let (to_writer, made) = sync_channel::<(u64, u64, u64, Made)>(threads * 2);
    let batches = Mutex::new(batches);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_batches(input, limit, &to_workers));
        for _ in 0..threads {
            let to_writer = to_writer.clone();
            let batches = &batches;
            scope.spawn(move || work(stage, counters, cache, batches, &to_writer));
        }
        drop(to_writer);
        let written = write_in_order(&made, routes, &mut dead_letter, &mut progress);
        // A write failure stops the writer: dropping `made` ends the
        // workers, which ends the reader.
        drop(made);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the reading thread failed")));
        let lines = written?;
        read.context("cannot read input").map_err(io)?;
        Ok(lines)
    })
}

/// Read `input` into batches until its end or until nobody takes them.
fn read_batches(
    mut input: &mut (dyn BufRead + Send),
    limit: usize,
    to_workers: &std::sync::mpsc::SyncSender<Batch>,
) -> anyhow::Result<()> {
    let mut line = Vec::new();
    let (mut seq, mut number) = (0u64, 0u64);
    loop {
        let mut batch = Batch {
            seq,
            first: number + 1,
            data: Vec::with_capacity(BATCH_BYTES.min(64 << 10)),
            lines: Vec::with_capacity(BATCH_LINES),
            bytes: 0,
        };
        let mut end = false;
        while batch.lines.len() < BATCH_LINES && batch.data.len() < BATCH_BYTES {
            match read_line(&mut input, &mut line, limit)? {
                None => {
                    end = true;
                    break;
                }
                Some(Line::Complete) => {
                    let start = batch.data.len();
                    batch.data.extend_from_slice(&line);
                    batch.lines.push(Ok(start..batch.data.len()));
                    batch.bytes += line.len() as u64;
                }
                Some(Line::TooLong { len }) => {
                    batch.lines.push(Err(len));
                    batch.bytes += len as u64;
                }
            }
            number += 1;
        }
        if !batch.lines.is_empty() && to_workers.send(batch).is_err() {
            return Ok(()); // the writer stopped; it reports why
        }
        if end {
            return Ok(());
        }
        seq += 1;
    }
}

/// Process batches until there are none left or the writer stopped.
fn work(
    stage: &Stage,
    counters: &StageCounters,
    cache: usize,
    batches: &Mutex<Receiver<Batch>>,
    to_writer: &std::sync::mpsc::SyncSender<(u64, u64, u64, Made)>,
) {
    let mut processed = Processed::default();
    let mut scratch = Scratch::with_pseudonym_cache(cache);
    loop {
        let next = batches.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = next else { return };
        let mut made = Made {
            routes: vec![Vec::with_capacity(batch.data.len()); stage.routes().len()],
            dead: Vec::new(),
        };
        for (i, l) in batch.lines.iter().enumerate() {
            let read = match l {
                Ok(r) => Read::Complete(batch.data.get(r.clone()).unwrap_or_default()),
                Err(len) => Read::TooLong(*len),
            };
            let number = batch.first + i as u64;
            let state = (&mut processed, &mut scratch);
            // Writing to memory cannot fail.
            let _ = one_line(stage, counters, read, number, state, &mut made);
        }
        let lines = batch.lines.len() as u64;
        if to_writer
            .send((batch.seq, lines, batch.bytes, made))
            .is_err()
        {
            return;
        }
    }
}

/// Write the batches' records in input order; returns the lines written.
fn write_in_order(
    made: &Receiver<(u64, u64, u64, Made)>,
    routes: &mut [BufWriter<Output>],
    dead_letter: &mut Option<&mut BufWriter<Output>>,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64, Failure> {
    let mut waiting: BTreeMap<u64, (u64, u64, Made)> = BTreeMap::new();
    let (mut next, mut lines, mut bytes) = (0u64, 0u64, 0u64);
    let mut reported = 0u64;
    for (seq, n, b, m) in made {
        waiting.insert(seq, (n, b, m));
        while let Some((n, b, m)) = waiting.remove(&next) {
            for (w, out) in routes.iter_mut().zip(&m.routes) {
                w.write_all(out).map_err(|e| write_failure(e, false))?;
            }
            if let Some(d) = dead_letter.as_deref_mut() {
                d.write_all(&m.dead).map_err(|e| write_failure(e, true))?;
            }
            lines += n;
            bytes += b;
            next += 1;
            if lines / PROGRESS_EVERY > reported {
                reported = lines / PROGRESS_EVERY;
                progress(lines, bytes);
            }
        }
    }
    Ok(lines)
}

fn write_line(w: &mut impl Write, line: &[u8]) -> std::io::Result<()> {
    w.write_all(line)?;
    w.write_all(b"\n")
}
