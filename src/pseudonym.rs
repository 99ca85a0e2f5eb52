//! Keyed pseudonyms, with the exact semantics published in `docs/policy.md`:
//!
//! - purpose key = HKDF-SHA256(ikm = key bytes, salt = empty,
//!   info = "veil/v1/purpose/" + purpose, length = 32) (RFC 5869);
//! - pseudonym = encode(truncate(HMAC-SHA256(purpose key, value bytes), n)),
//!   optionally prefixed with `<key_id>:`.
//!
//! The keyed HMAC state (both pad blocks absorbed) is computed once per key
//! and purpose and cloned per value, so each value costs two SHA-256 blocks
//! (for values up to 55 bytes).

use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::Key;
use crate::policy::{Encoding, PseudonymOptions};

/// The HKDF `info` prefix; the purpose follows it.
pub const PURPOSE_INFO_PREFIX: &str = "veil/v1/purpose/";

/// Computes the pseudonyms of one purpose under one key.
#[derive(Clone)]
pub struct Pseudonymiser {
    /// Unique per [`Pseudonymiser::new`] (clones share it): what a
    /// pseudonym cache keys its entries by, besides the value.
    identity: u64,
    mac: Hmac<Sha256>,
    encoding: Encoding,
    prefix: Option<String>,
    truncate: usize,
    len: usize,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymiser")
            .field("encoding", &self.encoding)
            .field("prefix", &self.prefix)
            .field("truncate", &self.truncate)
            .finish_non_exhaustive()
    }
}

impl Pseudonymiser {
    pub fn new(key: &Key, purpose: &str, options: &PseudonymOptions) -> Pseudonymiser {
        let hk = Hkdf::<Sha256>::new(Some(&[]), key.secret.expose());
        let mut purpose_key = Zeroizing::new([0u8; 32]);
        let info = format!("{PURPOSE_INFO_PREFIX}{purpose}");
        hk.expand(info.as_bytes(), &mut purpose_key[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&purpose_key[..])
            .expect("HMAC accepts keys of any length");
        let truncate = usize::from(options.truncate_bytes).clamp(16, 32);
        let prefix = options.key_id_prefix.then(|| format!("{}:", key.id));
        let encoded = match options.encoding {
            Encoding::Hex => truncate * 2,
            Encoding::Base64url => (truncate * 4).div_ceil(3),
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Pseudonymiser {
            identity: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            mac,
            encoding: options.encoding,
            len: prefix.as_ref().map_or(0, String::len) + encoded,
            prefix,
            truncate,
        }
    }

    /// Unique to this pseudonymiser (and its clones), never 0.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// Length in bytes of every pseudonym this produces (all ASCII).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write the pseudonym of `value` into `dst`, which is exactly [`Self::len`] bytes.
    pub fn write(&self, value: &[u8], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), self.len);
        let mut mac = self.mac.clone();
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let digest = &digest[..self.truncate];
        let mut at = 0;
        if let Some(p) = &self.prefix {
            dst[..p.len()].copy_from_slice(p.as_bytes());
            at = p.len();
        }
        match self.encoding {
            Encoding::Hex => {
                hex::encode_to_slice(digest, &mut dst[at..]).expect("length computed in new()");
            }
            Encoding::Base64url => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode_slice(digest, &mut dst[at..])
                    .expect("length computed in new()");
            }
        }
    }

    /// The pseudonym of `value` as a string.
    pub fn pseudonym(&self, value: &[u8]) -> String {
        let mut out = vec![0u8; self.len];
        self.write(value, &mut out);
        String::from_utf8(out).expect("pseudonyms are ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::parse_key;
    use std::path::Path;

    fn key() -> Key {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        parse_key("k1", hex.as_bytes(), Path::new("k1.key")).unwrap()
    }

    /// Independent computation with the hkdf/hmac crates' one-shot APIs.
    fn reference(purpose: &str, value: &[u8]) -> String {
        let hk = Hkdf::<Sha256>::new(None, key().secret.expose());
        let mut okm = [0u8; 32];
        hk.expand(format!("veil/v1/purpose/{purpose}").as_bytes(), &mut okm)
            .unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&okm).unwrap();
        mac.update(value);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn hex_pseudonym_matches_the_definition() {
        let p = Pseudonymiser::new(&key(), "analytics", &PseudonymOptions::default());
        let got = p.pseudonym(b"user-42");
        assert_eq!(got.len(), 64);
        assert_eq!(got, reference("analytics", b"user-42"));
    }

    #[test]
    fn purposes_give_unrelated_pseudonyms() {
        let a = Pseudonymiser::new(&key(), "analytics", &PseudonymOptions::default());
        let m = Pseudonymiser::new(&key(), "marketing", &PseudonymOptions::default());
        assert_ne!(a.pseudonym(b"x"), m.pseudonym(b"x"));
    }

    #[test]
    fn encoding_truncation_and_prefix() {
        let opts = PseudonymOptions {
            encoding: Encoding::Base64url,
            key_id_prefix: true,
            truncate_bytes: 16,
        };
        let p = Pseudonymiser::new(&key(), "analytics", &opts);
        let got = p.pseudonym(b"user-42");
        assert_eq!(got.len(), p.len());
        assert_eq!(p.len(), 3 + 22);
        let full = hex::decode(reference("analytics", b"user-42")).unwrap();
        let expected = format!(
            "k1:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&full[..16])
        );
        assert_eq!(got, expected);
    }
}
