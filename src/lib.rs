//! veil: an event-stream pseudonymisation proxy.
//!
//! A small pure core surrounded by thin adapters:
//!
//! ```text
//! bytes in ──► engine (policy apply) ──► bytes out + Verdict
//!              (pure, synchronous: no I/O, no async, no globals)
//! ```
//!
//! Modules, and what each owns:
//! - [`policy`]: the policy language: YAML types, path syntax, validation
//!   with file/line/column diagnostics, and the compiled lookup trees.
//! - [`engine`]: applies a compiled policy to one JSON event's bytes in a
//!   single validating pass, writing the clean event into a caller's buffer.
//! - [`pseudonym`]: HKDF per-purpose keys and HMAC-SHA256 pseudonyms.
//! - [`keys`]: secret key files, the key ring, key generation; secrets never
//!   print.
//! - [`suppression`]: the opt-out list of keyed tokens (pure).
//! - [`erasure`]: every pseudonym an identifier has or had (pure).
//! - [`tcf`]: IAB TCF v2 consent strings, read in place, and the policy's
//!   decision from them (pure).
//! - [`detect`]: the content detector: e-mail addresses, phone, card and
//!   IBAN numbers, IP addresses and tokens in kept strings (pure).
//! - [`outcome`]: verdicts, drop and reject reason codes, field tallies.
//! - [`explain`]: the policy as a human-readable data inventory.
//! - [`cases`]: policy unit tests (`veil test`): case files, the verdict
//!   and clean event compared with the expected ones (pure).
//! - [`replay`]: sample events through two policies, the values that
//!   change per path (`veil diff --events`; pure).
//! - [`schema`]: the JSON Schema of the policy file.
//! - [`config`]: the pipeline config, validated with file/line/column into
//!   a `Pipeline::Kafka` or a `Pipeline::Files` (never a mix).
//! - [`stage`]: every route's policy applied to one input; output keys and
//!   dead-letter records (pure, shared by the Kafka adapter, file-mode
//!   `veil run` and `veil apply`, a one-route stage).
//! - [`offsets`]: the at-least-once ledger (pure).
//! - [`transaction`]: `delivery: exactly_once`'s decisions (pure): when a
//!   transaction commits, what a failed call leads to, transactional ids.
//! - [`files`]: file identity (no run writes what it reads) and output files
//!   replaced only when a run succeeds.
//! - [`kafka`]: the Kafka adapter (`veil run` with a Kafka source).
//! - [`metrics`], [`health`]: the metric families (one table) and the typed
//!   methods that record them and log; readiness state.
//! - [`endpoint`]: serves `/metrics`, `/healthz`, `/readyz` over HTTP.
//!
//! The command-line adapters (files, stdin/stdout, signals) live in the binary.

#![deny(unsafe_code)] // allowed in one module only: src/simd.rs

pub mod cases;
pub mod config;
pub mod detect;
pub mod endpoint;
pub mod engine;
pub mod erasure;
pub mod explain;
pub mod files;
pub mod health;
pub mod kafka;
pub mod keys;
pub mod metrics;
pub mod offsets;
pub mod outcome;
pub mod policy;
pub mod pseudonym;
pub mod replay;
pub mod schema;
pub mod shadow;
mod simd;
pub mod stage;
pub mod suppression;
pub mod tcf;
pub mod transaction;

pub use engine::{CompiledPolicy, Limits, Scratch, compile};
pub use outcome::{DropReason, FieldCounts, Outcome, Reject, RejectReason, RouteOutcome, Verdict};
pub use policy::Policy;
