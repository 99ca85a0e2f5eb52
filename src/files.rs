//! The files a one-shot run reads and writes (`veil apply`, `veil run` with
//! a file source, checked by `veil check --config`): which paths name the
//! same file, and output files that never destroy anything.
//!
//! Invariants:
//! - No run writes a file it reads, and no two outputs share a file.
//!   [`clashes`] compares paths by what they name, not how they are
//!   spelled: device and inode for a file that exists (so `out`, `./out`,
//!   an absolute path, a symbolic link and a hard link are one file), the
//!   canonical parent directory plus the name for one that does not yet.
//! - A regular output file is written to a temporary file in its directory
//!   and renamed into place by [`Output::commit`] only when the run
//!   succeeded: a failed run leaves the previous file untouched and never a
//!   half-written file under the final name.
//! - Special outputs are written directly and never truncated, so what a
//!   shell redirection already holds is kept: `-`, `/dev/stdout` and
//!   `/dev/stderr` (and their `/dev/fd/N`, `/proc/self/fd/N` names) through
//!   veil's own descriptors, sharing the shell's offset; other links and
//!   devices under `/dev/` or `/proc/`, pipes and terminals opened for
//!   append.
//!
//! Unix only, like the rest of the command line (`-` is fd 0 or 1).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// How a run uses a path; `-` is stdin for an input, stdout for an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Input,
    Output,
}

/// Two places of a run that name the same file: indexes into the slice
/// given to [`clashes`] (`first < second`) and why that is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub first: usize,
    pub second: usize,
    pub why: &'static str,
}

/// What a path names, for comparison.
#[derive(Debug, PartialEq, Eq)]
enum Id {
    /// An existing file.
    Inode { dev: u64, ino: u64 },
    /// A file that does not exist yet: canonical directory and name.
    New(PathBuf),
}

#[derive(Debug)]
struct Identity {
    id: Id,
    /// Terminals and `/dev/null`: sharing one is harmless.
    char_device: bool,
    /// A socket may be both stdin and stdout (inetd style).
    socket: bool,
    /// Written as standard output by name (`-`, `/dev/stdout`, ...).
    stdout: bool,
}

const STDOUT_NAMES: [&str; 3] = ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"];
const STDERR_NAMES: [&str; 3] = ["/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"];

fn is_stdout_name(path: &Path) -> bool {
    STDOUT_NAMES.iter().any(|n| path == Path::new(n))
}

/// Paths written in place rather than replaced: stdio, and links and
/// devices under `/dev` and `/proc` (`/dev/stdout` leads to whatever stdout
/// is redirected to, which must not be replaced behind the shell's back).
/// A plain file there (`/dev/shm/out`) is an ordinary file.
fn is_special_name(path: &Path) -> bool {
    path == Path::new("-")
        || ((path.starts_with("/dev") || path.starts_with("/proc"))
            && path.symlink_metadata().is_ok_and(|m| !m.is_file()))
}

/// The metadata of the process's stdin or stdout (through a duplicate of
/// the descriptor, so nothing is closed).
fn stdio_metadata(role: Role) -> io::Result<Metadata> {
    use std::os::fd::AsFd;
    let fd = match role {
        Role::Input => io::stdin().as_fd().try_clone_to_owned()?,
        Role::Output => io::stdout().as_fd().try_clone_to_owned()?,
    };
    File::from(fd).metadata()
}

/// `None` when the path cannot be identified (a missing input or
/// directory): opening it reports that better than a comparison could.
fn identify(role: Role, path: &Path) -> Option<Identity> {
    let stdout = role == Role::Output && (path == Path::new("-") || is_stdout_name(path));
    let meta = if path == Path::new("-") {
        stdio_metadata(role)
    } else {
        std::fs::metadata(path)
    };
    let (id, char_device, socket) = match meta {
        Ok(m) => {
            let t = m.file_type();
            let id = Id::Inode {
                dev: m.dev(),
                ino: m.ino(),
            };
            (id, t.is_char_device(), t.is_socket())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && role == Role::Output => {
            (Id::New(new_file_name(path)?), false, false)
        }
        Err(_) => return None,
    };
    Some(Identity {
        id,
        char_device,
        socket,
        stdout,
    })
}

/// The name a file that does not exist yet will have: its canonical
/// directory and its name; where the directory is missing too (the run
/// will say so), the path made absolute with `.` and `..` folded away.
fn new_file_name(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = dir.canonicalize() {
        return Some(dir.join(name));
    }
    let mut folded = PathBuf::new();
    for part in std::path::absolute(path).ok()?.components() {
        match part {
            Component::ParentDir => {
                folded.pop();
            }
            Component::CurDir => {}
            other => folded.push(other),
        }
    }
    Some(folded)
}

/// Why `a` and `b` (in that order) must not both be used, if so.
fn clash(a: (Role, &Identity), b: (Role, &Identity)) -> Option<&'static str> {
    let ((ra, a), (rb, b)) = (a, b);
    if ra == Role::Input && rb == Role::Input {
        return None; // two routes may share a policy
    }
    let both_outputs = ra == Role::Output && rb == Role::Output;
    if both_outputs && a.stdout && b.stdout {
        return Some("both write to standard output, where their lines would interleave");
    }
    if a.id != b.id || a.char_device {
        return None;
    }
    if both_outputs {
        Some("they are one file, and two outputs would interleave into a corrupt file")
    } else if a.socket {
        None
    } else {
        Some("they are one file, and the output would overwrite the input while it is read")
    }
}

/// Every pair of `places` that must not be the same file: an input (the
/// events, but also a policy, a key or a config file) that is also an
/// output (unless a terminal, `/dev/null` or a socket), or two outputs
/// (unless `/dev/null` or a terminal, but never two names of stdout).
/// Paths that cannot be identified are skipped.
pub fn clashes(places: &[(Role, &Path)]) -> Vec<Clash> {
    let ids: Vec<Option<Identity>> = places.iter().map(|(r, p)| identify(*r, p)).collect();
    let mut found = Vec::new();
    for (second, b) in ids.iter().enumerate() {
        for (first, a) in ids[..second].iter().enumerate() {
            if let (Some(a), Some(b)) = (a, b)
                && let Some(why) = clash((places[first].0, a), (places[second].0, b))
            {
                found.push(Clash { first, second, why });
            }
        }
    }
    found
}

/// Why an output at `path` could not be created: the directory it would
/// go into, and what is wrong with it (`None` when the directory exists, or
/// cannot be examined here and is left to the run to report). `-` is
/// standard output and has no directory.
pub fn unusable_directory(path: &Path) -> Option<(PathBuf, &'static str)> {
    if path == Path::new("-") {
        return None;
    }
    let dir = match path.parent()? {
        d if d.as_os_str().is_empty() => Path::new("."),
        d => d,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some((dir.to_owned(), "is not a directory")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Some((dir.to_owned(), "does not exist"))
        }
        Err(_) => None,
    }
}

/// An output being written: see the module doc.
pub enum Output {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    /// A device, pipe or `/dev/...` path, opened for append.
    Direct(File),
    /// A regular file, written aside and renamed onto `dest` by [`Output::commit`].
    Replace {
        temp: NamedTempFile,
        dest: PathBuf,
    },
}

impl Output {
    /// Open `path` for writing (`-` is stdout). A regular file is not
    /// touched until [`Output::commit`]; dropping the output without
    /// committing removes the temporary file.
    pub fn open(path: &Path) -> io::Result<Output> {
        // Standard output and error by any name are written through the
        // descriptors veil already has, sharing the shell's file offset.
        if path == Path::new("-") || is_stdout_name(path) {
            return Ok(Output::Stdout(io::stdout()));
        }
        if STDERR_NAMES.iter().any(|n| path == Path::new(n)) {
            return Ok(Output::Stderr(io::stderr()));
        }
        let append = || {
            OpenOptions::new()
                .append(true)
                .open(path)
                .map(Output::Direct)
        };
        if is_special_name(path) {
            return append();
        }
        let (dest, mode) = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "it is a directory; give a file name",
                ));
            }
            // A pipe, a terminal, a device.
            Ok(m) if !m.is_file() => return append(),
            // Through symbolic links: the file they point to is replaced.
            Ok(m) => (path.canonicalize()?, Some(m.permissions().mode())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if path.symlink_metadata().is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "it is a symbolic link to a file that does not exist",
                    ));
                }
                (path.to_owned(), None)
            }
            Err(e) => return Err(e),
        };
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        // A new file gets the usual 0666 less the umask, not the 0600 of a
        // temporary file; a replaced one keeps its mode.
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| {
                // Name the directory, not the temporary file's random name
                // (which tempfile appends as ` at path "..."`).
                let text = e.to_string();
                let cause = text.split(" at path ").next().unwrap_or_default();
                io::Error::new(e.kind(), format!("in directory {}: {cause}", dir.display()))
            })?;
        if let Some(mode) = mode {
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        Ok(Output::Replace { temp, dest })
    }

    /// The run succeeded: flush, and put a replaced file in place (synced
    /// first, so a crash never leaves an empty file under the final name).
    pub fn commit(self) -> io::Result<()> {
        match self {
            Output::Stdout(mut s) => s.flush(),
            Output::Stderr(mut s) => s.flush(),
            Output::Direct(mut f) => f.flush(),
            Output::Replace { temp, dest } => {
                temp.as_file().sync_all()?;
                temp.persist(&dest).map_err(|e| e.error)?;
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(s) => s.write(buf),
            Output::Stderr(s) => s.write(buf),
            Output::Direct(f) => f.write(buf),
            Output::Replace { temp, .. } => temp.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.write_all(buf),
            Output::Stderr(s) => s.write_all(buf),
            Output::Direct(f) => f.write_all(buf),
            Output::Replace { temp, .. } => temp.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::Stderr(s) => s.flush(),
            Output::Direct(f) => f.flush(),
            Output::Replace { temp, .. } => temp.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(p: &Path) -> (Role, &Path) {
        (Role::Output, p)
    }

    #[test]
    fn spellings_links_and_new_files_of_one_file_clash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("in.ndjson");
        std::fs::write(&input, "{}\n").unwrap();
        std::os::unix::fs::symlink(&input, d.join("sym")).unwrap();
        std::fs::hard_link(&input, d.join("hard")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let dotted = d.join("sub/../in.ndjson");
        for other in [input.clone(), d.join("sym"), d.join("hard"), dotted] {
            let c = clashes(&[(Role::Input, &input), out(&other)]);
            assert_eq!(c.len(), 1, "{}", other.display());
            assert_eq!(
                c[0].why,
                "they are one file, and the output would overwrite the input while it is read"
            );
        }
        // Two spellings of a file that does not exist yet.
        let a = d.join("new.ndjson");
        let b = d.join("sub/../new.ndjson");
        let c = clashes(&[(Role::Input, &input), out(&a), out(&b)]);
        assert_eq!(
            c,
            [Clash {
                first: 1,
                second: 2,
                why: "they are one file, and two outputs would interleave into a corrupt file"
            }]
        );
        assert!(clashes(&[(Role::Input, &input), out(&a), out(&d.join("other"))]).is_empty());
        // In a directory that does not exist (yet), by spelling.
        let (a, b) = (d.join("no/dir/x"), d.join("no/./dir/../dir/x"));
        assert_eq!(clashes(&[out(&a), out(&b)]).len(), 1);
    }

    #[test]
    fn dev_null_and_terminals_may_be_shared_but_stdout_names_may_not() {
        let null = Path::new("/dev/null");
        assert!(clashes(&[(Role::Input, null), out(null), out(null)]).is_empty());
        let c = clashes(&[out(Path::new("-")), out(Path::new("/dev/stdout"))]);
        assert_eq!(c.len(), 1);
        assert!(c[0].why.contains("standard output"), "{c:?}");
    }

    #[test]
    fn a_failed_run_leaves_the_previous_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "previous\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut o = Output::open(&path).unwrap();
        o.write_all(b"half").unwrap();
        drop(o);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut o = Output::open(&path).unwrap();
        o.write_all(b"new\n").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "a replaced file keeps its mode");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symbolic_link_output_replaces_its_target_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut o = Output::open(&link).unwrap();
        o.write_all(b"new").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn directories_and_dangling_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Output::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("directory"), "{e}");
        let link = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &link).unwrap();
        let e = Output::open(&link).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = Output::open(&dir.path().join("missing/out")).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
