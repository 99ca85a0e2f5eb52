//! An optional cache of pseudonyms for identifiers that repeat (a user id
//! within a session): a fixed number of slots, direct-mapped by a hash of
//! the value, so memory is bounded and nothing is ever allocated after it
//! is made. A slot holds the raw value (to tell a hit from a collision) and
//! its pseudonym; both are zeroed when a slot is overwritten and when the
//! cache is dropped, so raw identifiers do not linger in freed memory.
//!
//! Each [`Pseudonymiser`] has its own identity (its key, purpose and
//! options), part of every slot's key, so routes, policies and reloads that
//! share one [`super::Scratch`] never read one another's pseudonyms.

use zeroize::Zeroize;

use crate::pseudonym::Pseudonymiser;

/// Values longer than this are not cached (identifiers are short).
const MAX_VALUE: usize = 64;
/// Pseudonyms longer than this are not cached (64 hex digits plus a key id).
const MAX_PSEUDONYM: usize = 112;

struct Slot {
    /// The pseudonymiser's identity; 0: empty.
    owner: u64,
    value_len: u8,
    pseudonym_len: u8,
    value: [u8; MAX_VALUE],
    pseudonym: [u8; MAX_PSEUDONYM],
}

impl Slot {
    const EMPTY: Slot = Slot {
        owner: 0,
        value_len: 0,
        pseudonym_len: 0,
        value: [0; MAX_VALUE],
        pseudonym: [0; MAX_PSEUDONYM],
    };

    fn clear(&mut self) {
        self.owner = 0;
        self.value_len = 0;
        self.pseudonym_len = 0;
        self.value.zeroize();
        self.pseudonym.zeroize();
    }
}

pub struct PseudonymCache {
    slots: Box<[Slot]>,
    mask: usize,
    pub hits: u64,
    pub misses: u64,
}

impl std::fmt::Debug for PseudonymCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the slots: they hold raw identifiers.
        f.debug_struct("PseudonymCache")
            .field("slots", &self.slots.len())
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

/// FxHash-style mixing over 8-byte words (collisions only cost a miss).
fn hash(owner: u64, value: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = owner.wrapping_mul(K);
    let mut chunks = value.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(chunks.remainder()) {
        *d = *s;
    }
    h = (h.rotate_left(5) ^ u64::from_le_bytes(w) ^ value.len() as u64).wrapping_mul(K);
    h ^ (h >> 29)
}

impl PseudonymCache {
    /// A cache of at least `entries` slots (rounded up to a power of two;
    /// about 200 bytes each).
    pub fn new(entries: usize) -> PseudonymCache {
        let n = entries.max(1).next_power_of_two();
        let slots: Vec<Slot> = (0..n).map(|_| Slot::EMPTY).collect();
        PseudonymCache {
            slots: slots.into_boxed_slice(),
            mask: n - 1,
            hits: 0,
            misses: 0,
        }
    }

    pub fn entries(&self) -> usize {
        self.slots.len()
    }

    /// Write the pseudonym of `value` into `dst` (exactly `p.len()`
    /// bytes), from the cache when it holds it, else from `p` (and keep it).
    pub fn write(&mut self, p: &Pseudonymiser, value: &[u8], dst: &mut [u8]) {
        let owner = p.identity();
        let cacheable = value.len() <= MAX_VALUE && dst.len() <= MAX_PSEUDONYM;
        if !cacheable {
            return p.write(value, dst);
        }
        let i = (hash(owner, value) as usize) & self.mask;
        let Some(slot) = self.slots.get_mut(i) else {
            return p.write(value, dst);
        };
        let held = (
            slot.value.get(..usize::from(slot.value_len)),
            slot.pseudonym.get(..usize::from(slot.pseudonym_len)),
        );
        if slot.owner == owner
            && let (Some(v), Some(ps)) = held
            && v == value
            && ps.len() == dst.len()
        {
            self.hits += 1;
            dst.copy_from_slice(ps);
            return;
        }
        self.misses += 1;
        p.write(value, dst);
        slot.clear();
        if let (Some(v), Some(ps)) = (
            slot.value.get_mut(..value.len()),
            slot.pseudonym.get_mut(..dst.len()),
        ) {
            v.copy_from_slice(value);
            ps.copy_from_slice(dst);
            slot.owner = owner;
            // Both lengths are bounded by the arrays above (≤ 112).
            slot.value_len = value.len() as u8;
            slot.pseudonym_len = dst.len() as u8;
        }
    }
}

impl Drop for PseudonymCache {
    fn drop(&mut self) {
        for s in self.slots.iter_mut() {
            s.clear();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::keys::Key;
    use crate::policy::PseudonymOptions;

    fn pseudonymiser(purpose: &str, secret: u8) -> Pseudonymiser {
        let hex: String = (0..32u8)
            .map(|i| format!("{:02x}", i.wrapping_mul(37).wrapping_add(secret)))
            .collect();
        let key: Key =
            crate::keys::parse_key("k1", hex.as_bytes(), std::path::Path::new("k1.key")).unwrap();
        Pseudonymiser::new(&key, purpose, &PseudonymOptions::default())
    }

    fn via(cache: &mut PseudonymCache, p: &Pseudonymiser, v: &[u8]) -> String {
        let mut dst = vec![0u8; p.len()];
        cache.write(p, v, &mut dst);
        String::from_utf8(dst).unwrap()
    }

    #[test]
    fn a_cached_pseudonym_is_the_computed_one_for_every_value_and_owner() {
        let (a, b) = (pseudonymiser("analytics", 1), pseudonymiser("marketing", 1));
        let c = pseudonymiser("analytics", 2);
        // Two slots: collisions and evictions on every few values.
        let mut cache = PseudonymCache::new(2);
        for round in 0..3 {
            for i in 0..50u32 {
                let v = format!("user-{}", i % 7);
                for p in [&a, &b, &c] {
                    // Twice in a row: the second is a hit (nothing evicts
                    // it in between), whatever slots the values share.
                    for _ in 0..2 {
                        assert_eq!(
                            via(&mut cache, p, v.as_bytes()),
                            p.pseudonym(v.as_bytes()),
                            "round {round}"
                        );
                    }
                }
            }
        }
        assert!(cache.hits >= 3 * 50 * 3, "{cache:?}");
        assert!(cache.misses >= 3 * 7, "{cache:?}");
        let long = vec![b'x'; MAX_VALUE + 1];
        assert_eq!(
            via(&mut cache, &a, &long),
            a.pseudonym(&long),
            "not cached, still right"
        );
    }

    #[test]
    fn a_repeated_value_is_a_hit_and_the_debug_output_holds_no_value() {
        let p = pseudonymiser("analytics", 1);
        let mut cache = PseudonymCache::new(1024);
        via(&mut cache, &p, b"alice@example.com");
        via(&mut cache, &p, b"alice@example.com");
        assert_eq!((cache.hits, cache.misses), (1, 1));
        assert!(!format!("{cache:?}").contains("alice"));
    }
}
