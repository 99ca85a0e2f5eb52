//! The test key directory, `tests/keys`. Git keeps no 0600, so in a clone
//! the key file is 0644 and veil would warn (a timestamped log line) that
//! other users can read it: make it private first, as an operator would.

// Each test crate that includes this uses a part of it.
#![allow(dead_code)]

use std::path::Path;

/// `tests/keys`, relative to the crate root (the tests' working directory),
/// with its key made private.
pub fn private_keys() -> &'static str {
    static PRIVATE: std::sync::Once = std::sync::Once::new();
    PRIVATE.call_once(|| {
        chmod(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/k1.key"),
            0o600,
        )
    });
    "tests/keys"
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
