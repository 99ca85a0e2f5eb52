//! Policies: the YAML a platform team writes, validated into a [`Policy`]
//! that cannot be invalid, and planned into the tries the engine walks.
//!
//! - [`spec`]: the file as written (serde types, also the JSON Schema source).
//! - [`path`]: field path syntax.
//! - [`validate`]: raw -> [`Policy`], collecting every problem with its place.
//! - [`trie`]: a field set compiled into the lookup tree the engine walks.
//! - [`diff`]: what changes from one policy to another, and whether it
//!   widens what flows (`veil diff`).
//!
//! Only [`load`] touches the file system.

pub mod diff;
pub mod error;
pub mod glob;
pub mod number;
pub mod path;
pub mod sensitive;
pub mod spec;
pub mod trie;
pub(crate) mod validate;

use std::path::Path;

use regex::Regex;
use sha2::{Digest, Sha256};

pub use error::{Diagnostic, PolicyError};
pub use path::{FieldPath, Segment};
pub use spec::{Encoding, Normalise, PseudonymOptions, ScanMode, TimeUnit};
pub use trie::Plan;
pub use validate::name_ok;

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub version: u64,
    pub purpose: String,
    pub consent: Option<Consent>,
    pub subject: Vec<FieldPath>,
    pub pseudonyms: PseudonymOptions,
    /// The default allowlist (events matching no rule), if any.
    pub fields: Option<FieldSet>,
    pub rules: Vec<Rule>,
    /// Lowercase hex SHA-256 of the policy file's bytes.
    pub sha256: String,
    /// The compiled lookup trees.
    pub plan: Plan,
    /// Written decisions to let a sensitive path through, as the policy states them.
    pub waivers: Vec<Waiver>,
    /// Problems that do not make the policy invalid (`veil check` prints
    /// them; `run` and `apply` log them at load).
    pub warnings: Vec<Diagnostic>,
    /// The content scan of kept strings, unless an entry says otherwise.
    pub scan: ScanMode,
}

/// A waiver of the sensitive-category guardrail.
#[derive(Debug, Clone)]
pub struct Waiver {
    pub path: FieldPath,
    pub category: &'static sensitive::Category,
    pub reason: String,
    pub line: u64,
}

/// Where consent is read from.
#[derive(Debug, Clone)]
pub struct Consent {
    pub purposes: Option<FieldPath>,
    pub opt_out: Option<FieldPath>,
    /// The name looked for at `purposes` (the purpose, unless mapped).
    pub category: String,
    /// Input header (lowercase) that signals an opt-out (`veil run` only).
    pub opt_out_header: Option<String>,
    pub tcf: Option<Tcf>,
}

/// Where the TC string is, and what it must grant.
#[derive(Debug, Clone)]
pub struct Tcf {
    pub path: FieldPath,
    /// Purpose numbers, ascending.
    pub purposes: Vec<u8>,
    pub legitimate_interest: Vec<u8>,
    pub vendor: Option<u16>,
    pub rule: crate::tcf::Rule,
}

/// An allowlist: ordered entries as written.
#[derive(Debug, Clone, Default)]
pub struct FieldSet {
    pub entries: Vec<FieldRule>,
}

/// One allowlist entry.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pub path: FieldPath,
    pub action: Action,
    /// `keep` only: the entry's own content scan (`{ keep: { scan: off } }`),
    /// for the value and everything nested in it not named by a deeper entry.
    pub scan: Option<ScanMode>,
    /// Line and column of the entry in the policy file (for explanations
    /// and diagnostics).
    pub line: u64,
    pub column: u64,
    /// Why, in the policy author's words: the entry's comment (see `veil explain`).
    pub note: Option<String>,
}

/// A per-event-type rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub when: Vec<Condition>,
    /// `None` means the top-level `fields`.
    pub fields: Option<FieldSet>,
    pub drop: bool,
    pub line: u64,
}

/// `path` must hold one of `any_of`.
#[derive(Debug, Clone)]
pub struct Condition {
    pub path: FieldPath,
    pub any_of: Vec<Scalar>,
}

/// A JSON scalar to compare event values against.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    /// Compared exactly: `1` matches `1.0`, and big integers keep every digit.
    Number(number::Decimal),
    String(String),
}

/// What happens to a value, validated and ready to run.
#[derive(Debug, Clone)]
pub enum Action {
    Keep,
    Drop,
    Pseudonymise {
        normalise: Vec<Normalise>,
    },
    IpPrefix {
        v4: u8,
        v6: u8,
    },
    Url {
        keep_query: Vec<String>,
        matcher: glob::Globs,
    },
    TruncateTime(TimeUnit),
    Bucket(Buckets),
    Redact {
        patterns: Vec<Regex>,
        replacement: String,
    },
}

/// How `bucket` coarsens a number.
#[derive(Debug, Clone, PartialEq)]
pub enum Buckets {
    /// Ascending edges; a value becomes the largest edge not above it.
    Edges(Vec<f64>),
    /// A value becomes `floor(value / width) * width`.
    Width(f64),
}

/// The kind of change an action makes, as counted in metrics and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionClass {
    Kept,
    Pseudonymised,
    Generalised,
    Redacted,
    Dropped,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::Pseudonymise { .. } => "pseudonymise",
            Action::IpPrefix { .. } => "ip_prefix",
            Action::Url { .. } => "url",
            Action::TruncateTime(_) => "truncate_time",
            Action::Bucket(_) => "bucket",
            Action::Redact { .. } => "redact",
        }
    }

    pub fn class(&self) -> ActionClass {
        match self {
            Action::Keep => ActionClass::Kept,
            Action::Drop => ActionClass::Dropped,
            Action::Pseudonymise { .. } => ActionClass::Pseudonymised,
            Action::IpPrefix { .. }
            | Action::Url { .. }
            | Action::TruncateTime(_)
            | Action::Bucket(_) => ActionClass::Generalised,
            Action::Redact { .. } => ActionClass::Redacted,
        }
    }

    /// Actions that rewrite a scalar (everything but keep and drop).
    pub fn is_transform(&self) -> bool {
        !matches!(self, Action::Keep | Action::Drop)
    }
}

impl Policy {
    /// Parse and validate policy text. `file` names the source in diagnostics.
    pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
        validate::parse(text, file)
    }

    /// `name@version`, as stamped in headers and reported in metrics.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Read and validate a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let bytes = std::fs::read(path).map_err(|cause| PolicyError::Io {
        path: path.to_owned(),
        cause,
    })?;
    let file = path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|e| PolicyError::Invalid {
        diagnostics: vec![Diagnostic {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!(
                "the file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            hint: Some("save the policy as UTF-8".to_owned()),
        }],
    })?;
    Policy::parse(&text, &file)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
