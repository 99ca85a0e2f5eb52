//! Secret keys: one file per key, `<key_id>.key`, holding the key as hex text.
//!
//! Invariant: key bytes never reach a log, an error message or a panic. The
//! [`SecretKey`] type prints a fixed marker in `Debug`, is zeroed on drop, and
//! errors describe what is wrong with a file (length, position of a bad
//! character) without quoting its content.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Minimum key length in bytes (64 hex characters).
pub const MIN_KEY_BYTES: usize = 32;

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
}

/// Why a key could not be used. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key directory {}: {source}", dir.display())]
    DirUnreadable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read key file {}: {source}", path.display())]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("cannot write key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Every key of a directory, and the active one.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, Key>,
    active: String,
}

impl KeyRing {
    /// A ring holding one key, which is active.
    pub fn single(key: Key) -> KeyRing {
        let active = key.id.clone();
        KeyRing {
            keys: BTreeMap::from([(active.clone(), key)]),
            active,
        }
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
}

pub fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parse hex key text (surrounding white space allowed). `path` is only for messages.
pub fn parse_key(id: &str, text: &[u8], path: &Path) -> Result<Key, KeyError> {
    let text = text.trim_ascii();
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
    })
}

/// Load every `<key_id>.key` in `dir`; the active key is `active`, or the
/// only key when `active` is `None`. Other files are ignored.
pub fn load_dir(dir: &Path, active: Option<&str>) -> Result<KeyRing, KeyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| KeyError::DirUnreadable {
        dir: dir.to_owned(),
        source,
    })?;
    let mut keys = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| KeyError::DirUnreadable {
            dir: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Kubernetes secret volumes hold `..data` links and dot-directories: skip them.
        let Some(id) = name.strip_suffix(".key") else {
            continue;
        };
        if !id_ok(id) || !path.is_file() {
            continue;
        }
        let text =
            Zeroizing::new(
                std::fs::read(&path).map_err(|source| KeyError::FileUnreadable {
                    path: path.clone(),
                    source,
                })?,
            );
        keys.insert(id.to_owned(), parse_key(id, &text, &path)?);
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
    Ok(KeyRing { keys, active })
}

/// Write a new random 32-byte key to `dir/<id>.key` with mode 0600. Creates
/// `dir` (mode 0700) if needed; never overwrites an existing key.
pub fn generate(dir: &Path, id: &str) -> Result<PathBuf, KeyError> {
    use std::io::Write;
    if !id_ok(id) {
        return Err(KeyError::BadId { id: id.to_owned() });
    }
    let path = dir.join(format!("{id}.key"));
    let write_err = |source| KeyError::Write {
        path: path.clone(),
        source,
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
    let mut text = Zeroizing::new(hex::encode(&bytes[..]));
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
}
