//! Erasure look-up: every pseudonym an identifier has or had, so that a
//! warehouse job can find and delete a subject's rows (`veil erase`).
//!
//! For each policy, each of its subject paths, each normalisation that
//! path's values are hashed with ([`crate::suppression::variants`]) and each
//! key of the ring (active and retired), the pseudonym exactly as `veil
//! apply` would write it: the policy's encoding, key-id prefix and
//! truncation. Pure: no I/O.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::keys::KeyRing;
use crate::policy::{Normalise, Policy};
use crate::pseudonym::Pseudonymiser;

/// One pseudonym of one identifier.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    /// Which identifier (its position in the request), never the identifier.
    pub identifier_index: usize,
    /// `name@version`.
    pub policy: String,
    pub purpose: String,
    pub key_id: String,
    /// The subject path the pseudonym stands in for.
    pub path: String,
    /// The normalisation applied before hashing (`trim`, `lowercase`).
    pub normalise: Vec<&'static str>,
    pub pseudonym: String,
}

fn step_name(n: &Normalise) -> &'static str {
    match n {
        Normalise::Trim => "trim",
        Normalise::Lowercase => "lowercase",
    }
}

/// Every pseudonym of `identifiers` under `policies` and every key of
/// `ring`, in request, policy, path, normalisation and key order.
/// Surrounding white space is not part of an identifier (as in
/// suppression files).
pub fn pseudonyms(identifiers: &[&str], policies: &[Policy], ring: &KeyRing) -> Vec<Found> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (i, identifier) in identifiers.iter().enumerate() {
        let identifier = identifier.trim();
        for policy in policies {
            let hashers: Vec<(String, Pseudonymiser)> = ring
                .ids()
                .filter_map(|id| ring.get(id))
                .map(|k| {
                    (
                        k.id.clone(),
                        Pseudonymiser::new(k, &policy.purpose, &policy.pseudonyms),
                    )
                })
                .collect();
            let variants = crate::suppression::variants(policy);
            for (path, steps_of_path) in policy.subject.iter().zip(variants) {
                for steps in steps_of_path {
                    buf.clear();
                    crate::engine::normalise_into(identifier, &steps, &mut buf);
                    for (key_id, hasher) in &hashers {
                        out.push(Found {
                            identifier_index: i,
                            policy: policy.id(),
                            purpose: policy.purpose.clone(),
                            key_id: key_id.clone(),
                            path: path.to_string(),
                            normalise: steps.iter().map(step_name).collect(),
                            pseudonym: hasher.pseudonym(&buf),
                        });
                    }
                }
            }
        }
    }
    out
}
