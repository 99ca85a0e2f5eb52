//! The pipeline config (`veil run --config FILE`): where events come from,
//! which routes (purpose, policy, destination) they go to, and how the
//! service behaves. Parsed from YAML into [`spec`] types, then validated into
//! a [`PipelineConfig`] that cannot be invalid; every problem is reported
//! with file, line and column, all at once.
//!
//! Validation reads no file: it only compares the files of a file-mode
//! config by identity ([`crate::files::clashes`], metadata only), so no
//! output can be the input or another output. [`load`] reads the config;
//! policies and keys named by it are read by [`crate::stage::load`].

mod spec;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::Limits;
use crate::policy::{Diagnostic, FieldPath};

pub use spec::RawConfig;

/// A validated pipeline config.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The config file, as given (for messages).
    pub file: PathBuf,
    pub source: Source,
    pub routes: Vec<RouteConfig>,
    pub message_key: MessageKey,
    /// Input headers copied to outputs; all others are dropped.
    pub keep_headers: Vec<String>,
    pub dead_letter: DeadLetterConfig,
    pub keys: KeysConfig,
    pub limits: Limits,
    /// Input messages being processed or awaiting acknowledgement, at most.
    pub max_in_flight: usize,
    /// Threads applying policies; partitions are spread across them.
    pub workers: usize,
    /// On shutdown or revoke, how long to wait for in-flight deliveries.
    pub drain_timeout: Duration,
    pub metrics: MetricsConfig,
}

/// Where raw events come from.
#[derive(Debug, Clone)]
pub enum Source {
    Kafka(KafkaSource),
    /// NDJSON, one event per line; `-` is stdin.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub bootstrap_servers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// librdkafka properties for the consumer and the producer (TLS, SASL, ...).
    pub librdkafka: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    pub producer: BTreeMap<String, String>,
}

/// One purpose: a policy and where its clean events go.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub policy: PathBuf,
    pub sink: Sink,
}

/// Where a route's (or the dead letters') records go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sink {
    Topic(String),
    /// NDJSON; `-` is stdout.
    File(PathBuf),
}

/// What the output record's Kafka key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKey {
    /// The input key, unchanged.
    Keep,
    /// No key.
    Drop,
    /// HMAC-SHA256 of the raw key bytes under the route's purpose key, as 64
    /// hex characters (a missing key stays missing).
    Pseudonymise,
    /// The value at this path of the route's clean event (so a pseudonym if
    /// the policy pseudonymises it); no key where the path is absent.
    From(FieldPath),
}

#[derive(Debug, Clone)]
pub struct DeadLetterConfig {
    pub sink: Sink,
    /// Copy the raw input into the dead-letter record (may hold personal data).
    pub include_payload: bool,
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    pub dir: PathBuf,
    pub active: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/healthz`, `/readyz` here; `None` disables it.
    pub listen: Option<SocketAddr>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The I/O error is in the message, not a `source()`: `{:#}` would
    // print it twice.
    #[error("cannot read config file {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}", crate::policy::error::render(diagnostics, "config"))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

impl ConfigError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid { diagnostics } => diagnostics,
            ConfigError::Io { .. } => &[],
        }
    }
}

/// Read and validate a config file. Relative paths in it (policies, keys,
/// files) are resolved against the file's directory.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_owned(),
        error,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate::parse(&text, path, base)
}

/// Parse config text; `file` names it in messages, `base` resolves relative paths.
pub fn parse(text: &str, file: &Path, base: &Path) -> Result<PipelineConfig, ConfigError> {
    validate::parse(text, file, base)
}
