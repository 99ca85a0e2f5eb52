//! Secret keys: one file per key, `<key_id>.key`, holding the key as hex text.
//!
//! Invariant: key bytes never reach a log, an error message or a panic. The
//! [`SecretKey`] type prints a fixed marker in `Debug`, is zeroed on drop, and
//! errors describe what is wrong with a file (length, position of a bad
//! character) without quoting its content.
//!
//! Loading refuses what anyone could tamper with: a key file or key
//! directory writable by every user (unless on a read-only mount, as a
//! Kubernetes Secret volume is, whose directory mode is 1777). It warns,
//! through [`KeyRing::warnings`], about key files other users can read and
//! about veil's public demo key, recognised by the SHA-256 of its bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Minimum key length in bytes (64 hex characters).
pub const MIN_KEY_BYTES: usize = 32;

/// SHA-256 of the bytes of `examples/keys/demo.key`, the demo key published
/// with veil's source: a fingerprint, so the key itself is not repeated here.
const DEMO_KEY_SHA256: &str = "e0aab28d000ce0f9589868405c5f80c420dd90fc64251235b69beee89363af16";
/// SHA-256 of the key of the published test vectors (docs/policy.md,
/// `tests/keys/k1.key`: the bytes 0x00 to 0x1f).
const TEST_VECTOR_KEY_SHA256: &str =
    "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd";

/// Key bytes. `Debug` never shows them.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    /// Expose the bytes to the code that derives from them (HKDF).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A named key.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: SecretKey,
    /// When the key was made: the `# created:` line `veil keygen` writes,
    /// else the key file's modification time (`None` for keys not read
    /// from a file).
    pub created: Option<std::time::SystemTime>,
}

/// The HMAC message of a key's fingerprint.
pub const FINGERPRINT_MESSAGE: &[u8] = b"veil/v1/fingerprint";

impl Key {
    /// A short name for the key that says nothing of it: the first 8 bytes
    /// of HMAC-SHA256(key, `veil/v1/fingerprint`), as hex. Two places that
    /// show the same fingerprint hold the same key.
    pub fn fingerprint(&self) -> String {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.secret.expose()) else {
            return String::new();
        };
        mac.update(FINGERPRINT_MESSAGE);
        hex::encode(mac.finalize().into_bytes().get(..8).unwrap_or_default())
    }

    /// Whether this is veil's public demo key (`examples/keys/demo.key`):
    /// anyone can recompute its pseudonyms, so they protect nobody.
    pub fn is_public_demo(&self) -> bool {
        self.sha256() == DEMO_KEY_SHA256
    }

    /// Whether this is the key of veil's published test vectors
    /// (docs/policy.md, `tests/keys/k1.key`): as public as the demo key.
    pub fn is_public_test_vector(&self) -> bool {
        self.sha256() == TEST_VECTOR_KEY_SHA256
    }

    fn sha256(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.secret.expose()))
    }
}

/// Why a key could not be used. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key file {}: its `# created:` line is in the future; write the time the key was made (RFC 3339, e.g. 2026-11-23T21:50:00Z)",
        path.display()
    )]
    CreatedInFuture { path: PathBuf },
    // The I/O error is part of the message and deliberately not a
    // `source()`: `{:#}` would print it twice.
    #[error("cannot read key directory {}: {error}", dir.display())]
    DirUnreadable { dir: PathBuf, error: std::io::Error },
    #[error("cannot read key file {}: {error}", path.display())]
    FileUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("key directory {} is writable by every user (mode {mode:04o}): anyone could add or replace keys; run `chmod o-w {}` (or `chmod 700`)", dir.display(), dir.display())]
    DirWorldWritable { dir: PathBuf, mode: u32 },
    #[error("key file {} is writable by every user (mode {mode:04o}): anyone could have replaced the key; check it, then run `chmod 600 {}`", path.display(), path.display())]
    FileWorldWritable { path: PathBuf, mode: u32 },
    #[error("key file {}: character {position} is not a hex digit (a key file holds only hex text)", path.display())]
    NotHex { path: PathBuf, position: usize },
    #[error("key file {}: {hex_chars} hex characters is an odd number; every byte takes two", path.display())]
    OddLength { path: PathBuf, hex_chars: usize },
    #[error("key file {}: the key is {bytes} bytes; at least {MIN_KEY_BYTES} bytes ({} hex characters) are required (generate one with `veil keygen`)", path.display(), MIN_KEY_BYTES * 2)]
    TooShort { path: PathBuf, bytes: usize },
    #[error("key file {}: every byte of the key is the same; that is a placeholder, not a secret (generate one with `veil keygen`)", path.display())]
    Weak { path: PathBuf },
    #[error("key id `{id}` is not usable as a file name; use letters, digits, `.`, `_` and `-`")]
    BadId { id: String },
    #[error("no key files (`<key_id>.key`) in {}; create one with `veil keygen --dir {} --id k1`", dir.display(), dir.display())]
    NoKeys { dir: PathBuf },
    #[error("{} holds several keys ({}); choose the active one with --key-id", dir.display(), ids.join(", "))]
    Ambiguous { dir: PathBuf, ids: Vec<String> },
    #[error("no key `{id}` in {}; available: {}", dir.display(), available.join(", "))]
    UnknownId {
        id: String,
        dir: PathBuf,
        available: Vec<String>,
    },
    #[error("key file {} already exists; refusing to overwrite a key", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write key file {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("key file {} holds veil's public TEST key (SHA-256 of `{TEST_KEY_SEED}`), which only `veil test` may use: anyone can recompute its pseudonyms; make a key with `veil keygen --dir DIR --id k1`", path.display())]
    TestKey { path: PathBuf },
}

/// The bytes the test key is the SHA-256 of.
pub const TEST_KEY_SEED: &str = "veil/v1/test-key";

/// The id of [`test_key`], as `key_id_prefix` writes it.
pub const TEST_KEY_ID: &str = "test";

/// The fixed, public key of `veil test`: SHA-256(`veil/v1/test-key`), so
/// that the pseudonyms in policy test cases can be written as raw values
/// and recomputed by anyone. It exists only in memory: [`load_dir`]
/// refuses a key file holding it, so no run can pseudonymise with it.
pub fn test_key() -> Key {
    use sha2::Digest;
    let bytes = sha2::Sha256::digest(TEST_KEY_SEED.as_bytes());
    Key {
        id: TEST_KEY_ID.to_owned(),
        secret: SecretKey(Zeroizing::new(bytes.to_vec())),
        created: None,
    }
}

/// Something about the keys worth a warning; they are still used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyWarning {
    #[error("key file {} is open to other users (mode {mode:04o}); make it private: `chmod 600 {}` (Kubernetes: mount the Secret with `defaultMode: 0400`)", path.display(), path.display())]
    Readable { path: PathBuf, mode: u32 },
    #[error("key `{id}` ({}) is veil's PUBLIC demo key: anyone can recompute its pseudonyms and re-identify people; make your own with `veil keygen --dir DIR --id k1`", path.display())]
    PublicDemo { id: String, path: PathBuf },
    #[error("key `{id}` ({}) is the PUBLIC key of veil's published test vectors (docs/policy.md): anyone can recompute its pseudonyms and re-identify people; use it for tests only, and make a key with `veil keygen --dir DIR --id k1`", path.display())]
    PublicTestVector { id: String, path: PathBuf },
}

/// Every key of a directory, and the active one.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, Key>,
    active: String,
    warnings: Vec<KeyWarning>,
}

impl KeyRing {
    /// A ring holding one key, which is active.
    pub fn single(key: Key) -> KeyRing {
        let active = key.id.clone();
        KeyRing {
            keys: BTreeMap::from([(active.clone(), key)]),
            active,
            warnings: Vec::new(),
        }
    }

    /// A ring of `keys` with `active` the active one; `None` if no key
    /// has that id.
    pub fn from_keys(keys: Vec<Key>, active: &str) -> Option<KeyRing> {
        let keys: BTreeMap<String, Key> = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        keys.contains_key(active).then(|| KeyRing {
            keys,
            active: active.to_owned(),
            warnings: Vec::new(),
        })
    }

    /// What the caller should tell the operator (loading does not print).
    pub fn warnings(&self) -> &[KeyWarning] {
        &self.warnings
    }

    pub fn active(&self) -> &Key {
        &self.keys[&self.active]
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Every key, by id.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.values()
    }
}

pub fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parse key text: hex (surrounding white space allowed), after any
/// comment lines (`#`); a `# created: <RFC 3339 time>` line, as `veil
/// keygen` writes, sets [`Key::created`]. `path` is only for messages.
pub fn parse_key(id: &str, text: &[u8], path: &Path) -> Result<Key, KeyError> {
    let mut text = text.trim_ascii();
    let mut created = None;
    while text.first() == Some(&b'#') {
        let end = text
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(text.len());
        let (line, rest) = text.split_at(end);
        created = created.or_else(|| created_line(line));
        text = rest.trim_ascii();
    }
    if let Some(position) = text.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(KeyError::NotHex {
            path: path.to_owned(),
            position: position + 1,
        });
    }
    if text.len() % 2 == 1 {
        return Err(KeyError::OddLength {
            path: path.to_owned(),
            hex_chars: text.len(),
        });
    }
    let bytes = Zeroizing::new(hex::decode(text).map_err(|_| KeyError::NotHex {
        path: path.to_owned(),
        position: 0,
    })?);
    if bytes.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort {
            path: path.to_owned(),
            bytes: bytes.len(),
        });
    }
    if bytes.iter().all(|b| *b == bytes[0]) {
        return Err(KeyError::Weak {
            path: path.to_owned(),
        });
    }
    Ok(Key {
        id: id.to_owned(),
        secret: SecretKey(bytes),
        created,
    })
}

/// The time of a `# created: <RFC 3339>` comment line.
fn created_line(line: &[u8]) -> Option<std::time::SystemTime> {
    let text = std::str::from_utf8(line).ok()?;
    let value = text
        .strip_prefix('#')?
        .trim()
        .strip_prefix("created:")?
        .trim();
    let t =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.into())
}

/// Load every `<key_id>.key` in `dir`; the active key is `active`, or the
/// only key when `active` is `None`. Other files are ignored.
pub fn load_dir(dir: &Path, active: Option<&str>) -> Result<KeyRing, KeyError> {
    let unreadable = |error| KeyError::DirUnreadable {
        dir: dir.to_owned(),
        error,
    };
    let meta = std::fs::metadata(dir).map_err(unreadable)?;
    if let Some(mode) = world_writable(&meta, dir) {
        return Err(KeyError::DirWorldWritable {
            dir: dir.to_owned(),
            mode,
        });
    }
    let mut keys = BTreeMap::new();
    let mut warnings = Vec::new();
    for (id, path, meta) in key_files(dir).map_err(unreadable)? {
        let id = id.as_str();
        if let Some(mode) = world_writable(&meta, &path) {
            return Err(KeyError::FileWorldWritable { path, mode });
        }
        let text =
            Zeroizing::new(
                std::fs::read(&path).map_err(|error| KeyError::FileUnreadable {
                    path: path.clone(),
                    error,
                })?,
            );
        let mut key = parse_key(id, &text, &path)?;
        if key.secret.expose() == test_key().secret.expose() {
            return Err(KeyError::TestKey { path });
        }
        // A key dated in the future would look young forever (its age
        // alert never firing): refused, past a day of clock skew.
        let skew = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
        if key.created.is_some_and(|t| t > skew) {
            return Err(KeyError::CreatedInFuture { path });
        }
        key.created = key.created.or_else(|| meta.modified().ok());
        if let Some(mode) = others_may_read(&meta) {
            warnings.push(KeyWarning::Readable {
                path: path.clone(),
                mode,
            });
        }
        if key.is_public_demo() {
            warnings.push(KeyWarning::PublicDemo {
                id: id.to_owned(),
                path: path.clone(),
            });
        }
        if key.is_public_test_vector() {
            warnings.push(KeyWarning::PublicTestVector {
                id: id.to_owned(),
                path: path.clone(),
            });
        }
        keys.insert(id.to_owned(), key);
    }
    let ids: Vec<String> = keys.keys().cloned().collect();
    let active = match active {
        Some(id) if keys.contains_key(id) => id.to_owned(),
        Some(id) => {
            return Err(KeyError::UnknownId {
                id: id.to_owned(),
                dir: dir.to_owned(),
                available: ids,
            });
        }
        None => match ids.as_slice() {
            [] => {
                return Err(KeyError::NoKeys {
                    dir: dir.to_owned(),
                });
            }
            [only] => only.clone(),
            _ => {
                return Err(KeyError::Ambiguous {
                    dir: dir.to_owned(),
                    ids,
                });
            }
        },
    };
    Ok(KeyRing {
        keys,
        active,
        warnings,
    })
}

/// The key files of `dir`: `<id>.key` regular files (through symbolic
/// links, as Kubernetes links `k1.key` to `..data/k1.key`) with a valid id;
/// the `..data` links and dot-directories of a Secret volume are skipped.
fn key_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, std::fs::Metadata)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"))
            .filter(|id| id_ok(id))
            .map(str::to_owned)
        else {
            continue;
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push((id, path, meta)),
            _ => continue,
        }
    }
    Ok(files)
}

/// The paths of the key files [`load_dir`] would read (none if the
/// directory cannot be read), so that no output is written over one.
pub fn key_file_paths(dir: &Path) -> Vec<PathBuf> {
    key_files(dir)
        .map(|files| files.into_iter().map(|(_, path, _)| path).collect())
        .unwrap_or_default()
}

/// The mode, if every user may write this file or directory. A read-only
/// mount is safe whatever the mode (Kubernetes Secret volumes are 1777).
#[cfg(unix)]
fn world_writable(meta: &std::fs::Metadata, path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o002 != 0 && !on_read_only_mount(path)).then_some(mode)
}

#[cfg(not(unix))]
fn world_writable(_: &std::fs::Metadata, _: &Path) -> Option<u32> {
    None
}

/// The mode, if users other than the owner may read this key file.
#[cfg(unix)]
fn others_may_read(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn others_may_read(_: &std::fs::Metadata) -> Option<u32> {
    None
}

/// Whether `path` lies on a file system mounted read-only (Linux:
/// `/proc/self/mountinfo`; elsewhere, or if unknown, `false`).
fn on_read_only_mount(path: &Path) -> bool {
    let (Ok(path), Ok(info)) = (
        path.canonicalize(),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return false;
    };
    mount_is_read_only(&info, &path)
}

/// From mountinfo text: whether the mount holding `path` (the longest
/// mount point above it; the later line for a mount on top of another) is
/// read-only. Fields: id, parent, dev, root, mount point, options, ...
fn mount_is_read_only(mountinfo: &str, path: &Path) -> bool {
    let mut best: Option<(usize, bool)> = None;
    for line in mountinfo.lines() {
        let mut fields = line.split(' ').skip(4);
        let (Some(point), Some(options)) = (fields.next(), fields.next()) else {
            continue;
        };
        // Spaces and the like are octal escapes (`\040`).
        let point = unescape_octal(point);
        if path.starts_with(&point) && best.is_none_or(|(len, _)| point.len() >= len) {
            best = Some((point.len(), options.split(',').any(|o| o == "ro")));
        }
    }
    best.is_some_and(|(_, ro)| ro)
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], digits) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Write a new random 32-byte key to `dir/<id>.key` with mode 0600. Creates
/// `dir` (mode 0700) if needed; never overwrites an existing key.
pub fn generate(dir: &Path, id: &str) -> Result<PathBuf, KeyError> {
    use std::io::Write;
    if !id_ok(id) {
        return Err(KeyError::BadId { id: id.to_owned() });
    }
    let path = dir.join(format!("{id}.key"));
    let write_err = |error| KeyError::Write {
        path: path.clone(),
        error,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(write_err)?;
    let mut bytes = Zeroizing::new([0u8; MIN_KEY_BYTES]);
    getrandom::fill(&mut bytes[..]).map_err(|e| KeyError::Random(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let created = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut text = Zeroizing::new(format!("# created: {created}\n"));
    text.push_str(&hex::encode(&bytes[..]));
    text.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.clone() }
        } else {
            write_err(e)
        }
    })?;
    file.write_all(text.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_with_surrounding_whitespace() {
        let k = parse_key("k1", format!("  {HEX}\n").as_bytes(), Path::new("k1.key")).unwrap();
        assert_eq!(k.secret.expose().len(), 32);
        assert_eq!(k.secret.expose()[31], 0x1f);
    }

    #[test]
    fn comment_lines_come_first_and_a_created_line_dates_the_key() {
        let text = format!("# made for the web route\n# created: 2026-01-02T03:04:05Z\n{HEX}\n");
        let k = parse_key("k1", text.as_bytes(), Path::new("k1.key")).unwrap();
        let want = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_323_045);
        assert_eq!(k.created, Some(want));
        assert_eq!(k.secret.expose()[31], 0x1f);
        // An unreadable date is no date (the file time is used instead).
        let text = format!("# created: yesterday\n{HEX}");
        let k = parse_key("k1", text.as_bytes(), Path::new("k1.key")).unwrap();
        assert_eq!(k.created, None);
        // Old Mac line endings end a comment line too.
        let text = format!("# created: 2026-01-02T03:04:05Z\r{HEX}\r");
        let k = parse_key("k1", text.as_bytes(), Path::new("k1.key")).unwrap();
        assert_eq!(k.created, Some(want));
        // A comment after the hex is not a key.
        let text = format!("{HEX}\n# created: 2026-01-02T03:04:05Z\n");
        assert!(parse_key("k1", text.as_bytes(), Path::new("k1.key")).is_err());
    }

    #[test]
    fn rejects_bad_keys_without_quoting_them() {
        let secretish = "zz".to_owned() + &HEX[2..];
        let cases: [(&str, &str); 4] = [
            (&secretish, "character 1 is not a hex digit"),
            (&HEX[..63], "odd number"),
            (&HEX[..62], "31 bytes"),
            (&"ab".repeat(32), "every byte of the key is the same"),
        ];
        for (text, expected) in cases {
            let e = parse_key("k", text.as_bytes(), Path::new("k.key")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains(&text[4..20]), "message leaks key text: {msg}");
        }
    }

    #[test]
    fn debug_of_a_key_is_redacted() {
        let k = parse_key("k1", HEX.as_bytes(), Path::new("k1.key")).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("1f") && !shown.contains("31"), "{shown}");
    }

    #[test]
    fn keygen_then_load_chooses_the_only_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), "k1").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            generate(dir.path(), "k1"),
            Err(KeyError::Exists { .. })
        ));
        let ring = load_dir(dir.path(), None).unwrap();
        assert_eq!(ring.active().id, "k1");
        generate(dir.path(), "k2").unwrap();
        assert!(matches!(
            load_dir(dir.path(), None),
            Err(KeyError::Ambiguous { .. })
        ));
        assert_eq!(load_dir(dir.path(), Some("k2")).unwrap().active().id, "k2");
        assert!(matches!(
            load_dir(dir.path(), Some("k9")),
            Err(KeyError::UnknownId { .. })
        ));
    }

    #[test]
    fn empty_directory_says_how_to_make_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let msg = load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(msg.contains("veil keygen"), "{msg}");
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn world_writable_key_files_and_directories_are_refused_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), "k1").unwrap();
        chmod(&path, 0o646);
        let msg = load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(msg.contains("writable by every user (mode 0646)"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        chmod(&path, 0o600);
        chmod(dir.path(), 0o1777);
        let msg = load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(
            msg.contains("key directory") && msg.contains("mode 1777") && msg.contains("chmod o-w"),
            "{msg}"
        );
        chmod(dir.path(), 0o700);
        let ring = load_dir(dir.path(), None).unwrap();
        assert!(ring.warnings().is_empty(), "{:?}", ring.warnings());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_other_users_can_read_load_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), "k1").unwrap();
        // What a fresh clone with umask 022 gives.
        chmod(&path, 0o644);
        let ring = load_dir(dir.path(), None).unwrap();
        let warnings: Vec<String> = ring.warnings().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [format!(
                "key file {} is open to other users (mode 0644); make it private: `chmod 600 {}` (Kubernetes: mount the Secret with `defaultMode: 0400`)",
                path.display(),
                path.display()
            )]
        );
    }

    #[test]
    fn the_public_demo_key_is_recognised_by_fingerprint() {
        let demo = std::fs::read("examples/keys/demo.key").unwrap();
        let k = parse_key("demo", &demo, Path::new("demo.key")).unwrap();
        assert!(k.is_public_demo());
        let other = parse_key("k1", HEX.as_bytes(), Path::new("k1.key")).unwrap();
        assert!(!other.is_public_demo());
        let ring = load_dir(Path::new("examples/keys"), None).unwrap();
        let shown: Vec<String> = ring.warnings().iter().map(|w| w.to_string()).collect();
        assert!(
            shown
                .iter()
                .any(|w| w.contains("PUBLIC demo key") && w.contains("veil keygen")),
            "{shown:?}"
        );
        let secret = std::str::from_utf8(&demo.trim_ascii()[..16]).unwrap();
        assert!(!shown.concat().contains(secret), "never print key material");
    }

    #[test]
    fn the_test_vector_key_is_recognised_and_warned_about() {
        let ring = load_dir(Path::new("tests/keys"), None).unwrap();
        assert!(ring.active().is_public_test_vector());
        assert!(!ring.active().is_public_demo());
        let shown: Vec<String> = ring.warnings().iter().map(|w| w.to_string()).collect();
        assert!(
            shown
                .iter()
                .any(|w| w.contains("PUBLIC key of veil's published test vectors")),
            "{shown:?}"
        );
        assert!(
            !shown.concat().contains("000102030405"),
            "never print key material"
        );
        let other = parse_key(
            "k2",
            b"1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100",
            Path::new("k2.key"),
        )
        .unwrap();
        assert!(!other.is_public_test_vector());
    }

    #[test]
    fn a_missing_key_directory_names_the_cause_once() {
        let e = load_dir(Path::new("/nonexistent/keys"), None).unwrap_err();
        let all = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(all.matches("No such file or directory").count(), 1, "{all}");
        assert!(
            all.starts_with("cannot read key directory /nonexistent/keys: "),
            "{all}"
        );
    }

    #[test]
    fn read_only_mounts_are_found_in_mountinfo() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    40 27 0:40 / /etc/veil/my\\040keys ro,relatime - tmpfs tmpfs rw\n\
                    41 27 0:41 / /etc/veil/other rw,relatime - tmpfs tmpfs rw\n\
                    42 41 0:42 / /etc/veil/other ro,relatime - tmpfs tmpfs rw\n";
        assert!(mount_is_read_only(info, Path::new("/etc/veil/my keys")));
        assert!(mount_is_read_only(
            info,
            Path::new("/etc/veil/my keys/..data")
        ));
        assert!(
            mount_is_read_only(info, Path::new("/etc/veil/other")),
            "the mount on top"
        );
        assert!(!mount_is_read_only(info, Path::new("/etc/veil")));
        assert!(!mount_is_read_only(info, Path::new("/etc/veil/my")));
    }
}
