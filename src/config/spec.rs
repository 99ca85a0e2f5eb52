//! The pipeline config file as written: serde types that mirror the YAML.
//! [`super::validate`] turns a [`RawConfig`] into a [`super::PipelineConfig`].

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A veil pipeline config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where raw events come from: `{ kafka: {...} }` or `{ file: PATH }`.
    pub source: Spanned<RawSource>,
    /// One or more purposes, each with its policy and destination.
    pub routes: Spanned<Vec<RawRoute>>,
    /// `pseudonymise` (default), `drop`, `{ from: <path> }`, or `keep`
    /// (refused when a route's policy names subject identifiers, unless
    /// written `{ keep: { reason: "..." } }`).
    #[serde(default)]
    pub message_key: Option<Spanned<RawMessageKey>>,
    /// Input headers to copy to outputs (default: none).
    #[serde(default)]
    pub headers: RawHeaders,
    /// Where rejected inputs are recorded.
    pub dead_letter: Spanned<RawDeadLetter>,
    /// Secret keys.
    pub keys: Spanned<RawKeys>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Policy-applying threads (default: one per core).
    #[serde(default)]
    pub workers: Option<Spanned<u64>>,
    /// The suppression (opt-out) list: subjects whose events never flow.
    #[serde(default)]
    pub suppression: Option<Spanned<RawSuppression>>,
    /// `at_least_once` (default) or `exactly_once` (Kafka only: outputs,
    /// dead letters and input offsets committed in one transaction).
    #[serde(default)]
    pub delivery: Option<Spanned<String>>,
    /// How large `delivery: exactly_once` transactions grow.
    #[serde(default)]
    pub exactly_once: Option<Spanned<RawExactlyOnce>>,
}

/// `exactly_once:`: a transaction commits when it holds `max_events`
/// inputs or is `max_ms` old, whichever comes first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExactlyOnce {
    /// Inputs per transaction, at most (default 1000).
    #[serde(default)]
    pub max_events: Option<Spanned<u64>>,
    /// Milliseconds a transaction stays open, at most (default 100).
    #[serde(default)]
    pub max_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuppression {
    /// Files of raw identifiers, one per line (`#` comments); re-read on SIGHUP.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// A compacted Kafka topic of token lines (record keys; a tombstone
    /// removes one), read from the beginning by every instance.
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// The key the files' identifiers are hashed with (default: `keys.active`).
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawSource {
    Kafka(Box<RawKafka>),
    File(Spanned<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub bootstrap_servers: Spanned<String>,
    pub topics: Spanned<Vec<Spanned<String>>>,
    pub group_id: Spanned<String>,
    /// librdkafka properties for both clients, passed through.
    #[serde(default)]
    pub librdkafka: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
    /// librdkafka properties for the producer only.
    #[serde(default)]
    pub producer: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub policy: Spanned<String>,
    /// The key this route's pseudonyms are made with (default: `keys.active`).
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// A candidate policy run beside `policy` on live traffic, never produced.
    #[serde(default)]
    pub shadow: Option<Spanned<String>>,
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    #[serde(default)]
    pub file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum RawMessageKey {
    /// `keep`, `drop`, `pseudonymise`.
    Mode(String),
    /// `{ from: <path> }`: the value at that path of the clean event.
    From { from: String },
    /// `{ keep: { reason: "..." } }`: raw keys in clear, on purpose.
    Keep { keep: RawKeepKey },
}

/// The opt-in to copying raw Kafka keys in clear.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeepKey {
    /// Why the raw keys hold no personal data (e.g. "keys are
    /// collector-assigned random ids"); must not be empty.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default)]
    pub keep: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    #[serde(default)]
    pub include_payload: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub dir: Spanned<String>,
    #[serde(default)]
    pub active: Option<Spanned<String>>,
    /// Age in days after which a key in use should be rotated
    /// (`veil_key_max_age_seconds`, alert `VeilKeyTooOld`).
    #[serde(default)]
    pub max_age_days: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub max_message_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub max_depth: Option<Spanned<u64>>,
    #[serde(default)]
    pub max_in_flight: Option<Spanned<u64>>,
    /// Seconds an assigned partition may hold inputs without progress
    /// before it is reported stalled (not ready, gauge, log line).
    #[serde(default)]
    pub stall_after_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `host:port`; omit to disable.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// Seconds to wait for in-flight deliveries on shutdown and revoke.
    #[serde(default)]
    pub drain_timeout_seconds: Option<Spanned<u64>>,
}
