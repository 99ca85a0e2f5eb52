//! Where the commands write: stdout without panics, output files through
//! [`veil::files`], and the quiet exit on a closed pipe.
//!
//! `println!` panics when stdout is a closed pipe (`veil hash … | head -1`);
//! every command writes through [`print`] or an [`Output`] instead, and
//! [`super::main`] turns a broken pipe into exit 141 (128 + SIGPIPE, what a
//! shell reports for `cat` in the same place) without a message.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use veil::files::{Output, Role, clashes};

use super::{CliResult, Failure, io, usage};

/// Exit status after a closed pipe: 128 + SIGPIPE.
pub const EX_PIPE: u8 = 141;

/// Write to stdout, flushed; errors are returned, never a panic.
pub fn print(text: fmt::Arguments) -> CliResult {
    let mut out = io::stdout().lock();
    out.write_fmt(text)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
        .map_err(io)
}

/// Write to stderr, ignoring failure (there is nowhere left to report it).
pub fn note(text: fmt::Arguments) {
    let _ = io::stderr().lock().write_fmt(text);
}

/// Whether the failure is a write to a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        let kind = match e.downcast_ref::<io::Error>() {
            Some(e) => Some(e.kind()),
            None => e
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

/// Refuse (exit 64) a run whose inputs and outputs overlap; `places` are
/// (role, path, the option or setting that named it).
pub fn refuse_clashes(places: &[(Role, &Path, &str)]) -> CliResult {
    let paths: Vec<(Role, &Path)> = places.iter().map(|(r, p, _)| (*r, *p)).collect();
    match clashes(&paths).first() {
        None => Ok(()),
        Some(c) => {
            let shown = |(role, path, what): (Role, &Path, &str)| match role {
                _ if path != Path::new("-") => format!("{what} {}", path.display()),
                Role::Input => format!("{what} - (standard input)"),
                Role::Output => format!("{what} - (standard output)"),
            };
            Err(usage(anyhow::anyhow!(
                "{} and {}: {}; give each output a file of its own",
                shown(places[c.second]),
                shown(places[c.first]),
                c.why
            )))
        }
    }
}

/// Open an output (see [`Output::open`]); `what` names it in messages.
pub fn create(path: &Path, what: &str) -> Result<BufWriter<Output>, Failure> {
    let output = Output::open(path)
        .with_context(|| format!("cannot create {what} {}", path.display()))
        .map_err(io)?;
    Ok(BufWriter::with_capacity(1 << 16, output))
}

/// The run succeeded: make an output final (a replaced file is renamed
/// into place only now).
pub fn commit(w: BufWriter<Output>, path: &Path, what: &str) -> CliResult {
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(Output::commit)
        .with_context(|| format!("cannot write {what} {}", path.display()))
        .map_err(io)
}
