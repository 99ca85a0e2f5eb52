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

mod message_key;
mod spec;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::Limits;
use crate::policy::{Diagnostic, FieldPath};

pub use message_key::check_message_key;
pub use spec::RawConfig;

/// A validated pipeline config.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The config file, as given (for messages).
    pub file: PathBuf,
    /// Where events come from and where they go: Kafka topics or files,
    /// never a mix.
    pub pipeline: Pipeline,
    /// What the stage does with each input, in either mode.
    pub stage: StageConfig,
    pub keys: KeysConfig,
    pub metrics: MetricsConfig,
    /// `None` when the config has no `suppression:`.
    pub suppression: Option<SuppressionConfig>,
    /// `message_key: { keep: { reason } }`: why raw Kafka keys may be
    /// copied in clear although a policy names subject identifiers.
    pub keep_key_reason: Option<String>,
    /// Where settings are written in the file, for later messages
    /// (checks against policies and against the broker).
    pub places: Places,
}

/// A line and column of the config file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub line: u64,
    pub column: u64,
}

/// Where the settings checked after validation are written.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// The `message_key` value, if written.
    pub message_key: Option<Place>,
    /// Each topic a Kafka pipeline names (source, route, dead letters), by
    /// name; the first place a name is written.
    pub topics: BTreeMap<String, Place>,
}

/// The two kinds of pipeline. A Kafka source writes to topics and a file
/// source to files; validation refuses a mix, so no other combination can
/// be represented.
#[derive(Debug, Clone)]
pub enum Pipeline {
    Kafka(KafkaPipeline),
    Files(FilesPipeline),
}

/// `veil run` as a service: topics in, topics out.
#[derive(Debug, Clone)]
pub struct KafkaPipeline {
    pub source: KafkaSource,
    /// Each route's output topic.
    pub routes: Vec<RouteConfig<String>>,
    pub dead_letter_topic: String,
    /// Input messages being processed or awaiting acknowledgement, at most.
    pub max_in_flight: usize,
    /// Threads applying policies; partitions are spread across them.
    pub workers: usize,
    /// On shutdown or revoke, how long to wait for in-flight deliveries.
    pub drain_timeout: Duration,
    /// A partition holding inputs without progress for this long is stalled.
    pub stall_after: Duration,
}

/// `veil run` once over NDJSON: a file in, files out.
#[derive(Debug, Clone)]
pub struct FilesPipeline {
    /// NDJSON, one event per line; `-` is stdin.
    pub input: PathBuf,
    /// Each route's output file (NDJSON; `-` is stdout).
    pub routes: Vec<RouteConfig<PathBuf>>,
    pub dead_letter_file: PathBuf,
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
    /// How outputs and input offsets are committed (the top-level
    /// `delivery`); here because both clients are configured by it.
    pub delivery: Delivery,
}

/// `delivery:`: what a crash or a rebalance may do to the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Offsets committed after every output is acknowledged: nothing is
    /// lost, a crash may duplicate (the default).
    #[default]
    AtLeastOnce,
    /// Outputs, dead letters and input offsets committed in one Kafka
    /// transaction per input partition: `read_committed` consumers see each
    /// input's outputs once.
    ExactlyOnce(TxnLimits),
}

/// `exactly_once: { max_events, max_ms }`: when an open transaction is
/// committed (see [`crate::transaction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimits {
    /// Inputs per transaction, at most.
    pub max_events: usize,
    /// How long a transaction stays open, at most.
    pub max_age: Duration,
}

impl TxnLimits {
    pub const DEFAULT_MAX_EVENTS: u64 = 1000;
    pub const DEFAULT_MAX_MS: u64 = 100;
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            max_events: Self::DEFAULT_MAX_EVENTS as usize,
            max_age: Duration::from_millis(Self::DEFAULT_MAX_MS),
        }
    }
}

/// One purpose: a policy and where its clean events go (`To`: a topic or
/// a file, as the [`Pipeline`] says).
#[derive(Debug, Clone)]
pub struct RouteConfig<To> {
    pub name: String,
    pub policy: PathBuf,
    pub to: To,
    /// The key id of the route's pseudonyms; `None`: the active key.
    pub key: Option<String>,
    /// A candidate policy applied beside `policy`, compared, never produced.
    pub shadow: Option<PathBuf>,
}

/// What the stage does with each input, whatever the pipeline's kind.
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub message_key: MessageKey,
    /// Input headers copied to outputs; all others are dropped.
    pub keep_headers: Vec<String>,
    /// Copy the raw input into the dead-letter record (may hold personal data).
    pub include_payload: bool,
    pub limits: Limits,
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
pub struct KeysConfig {
    pub dir: PathBuf,
    pub active: Option<String>,
    /// Keys in use older than this should be rotated (alerted on, not enforced).
    pub max_age: Duration,
}

impl KeysConfig {
    /// `keys.max_age_days` when not given.
    pub const DEFAULT_MAX_AGE_DAYS: u64 = 365;
}

/// The suppression list's sources (`suppression:` in the config).
#[derive(Debug, Clone, Default)]
pub struct SuppressionConfig {
    /// Identifier files, resolved against the config's directory.
    pub files: Vec<PathBuf>,
    /// The suppression topic (Kafka pipelines only).
    pub topic: Option<String>,
    /// Key id the files' identifiers are hashed with; `None`: the active key.
    pub key: Option<String>,
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

impl PipelineConfig {
    /// `file:line:column` of a place in this config.
    pub fn at(&self, place: Place) -> String {
        format!("{}:{}:{}", self.file.display(), place.line, place.column)
    }

    /// A problem at `place` (or at the top of the file), as validation
    /// reports it.
    pub fn diagnostic(&self, place: Option<Place>, message: String, hint: &str) -> Diagnostic {
        let Place { line, column } = place.unwrap_or(Place { line: 1, column: 1 });
        Diagnostic {
            file: self.file.display().to_string(),
            line,
            column,
            message,
            hint: Some(hint.to_owned()),
        }
    }

    /// Every route's name and policy file, in route order.
    pub fn policies(&self) -> Vec<(&str, &Path)> {
        self.route_keys()
            .into_iter()
            .map(|(name, policy, _)| (name, policy))
            .collect()
    }

    /// Each route with a shadow policy: its index and the shadow policy file.
    pub fn shadows(&self) -> Vec<(usize, &Path)> {
        fn of<T>(routes: &[RouteConfig<T>]) -> Vec<(usize, &Path)> {
            routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((i, r.shadow.as_deref()?)))
                .collect()
        }
        match &self.pipeline {
            Pipeline::Kafka(k) => of(&k.routes),
            Pipeline::Files(f) => of(&f.routes),
        }
    }

    /// Each route's name, policy file and key id (`None`: the active key).
    pub fn route_keys(&self) -> Vec<(&str, &Path, Option<&str>)> {
        fn of<T>(routes: &[RouteConfig<T>]) -> Vec<(&str, &Path, Option<&str>)> {
            routes
                .iter()
                .map(|r| (r.name.as_str(), r.policy.as_path(), r.key.as_deref()))
                .collect()
        }
        match &self.pipeline {
            Pipeline::Kafka(k) => of(&k.routes),
            Pipeline::Files(f) => of(&f.routes),
        }
    }
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
