//! The policy file as written: serde types that mirror the YAML exactly.
//!
//! Nothing here is validated beyond its shape; [`super::validate`] turns a
//! [`RawPolicy`] into a [`super::Policy`] that cannot be invalid. Spans
//! (`Spanned<T>`) are kept wherever a later check needs to point at a line.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::fmt;

/// A field path as written in the policy (`context.page.url`, `products[].sku`),
/// with its place in the file.
pub type SpannedPath = Spanned<String>;

/// The allowlist: field path -> what happens to the value found there.
pub type RawFields = IndexMap<SpannedPath, Spanned<RawAction>>;

/// A veil policy file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "veil policy",
    description = "What veil lets through to one purpose, and how."
)]
pub struct RawPolicy {
    /// Name of the policy, reported with every output as `name@version`.
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: Spanned<String>,
    /// Integer version, bumped on every change; reported with every output.
    #[schemars(with = "u64")]
    pub version: Spanned<u64>,
    /// The purpose the receiving system serves (`analytics`, `marketing`, ...).
    /// Pseudonyms are derived per purpose, and consent is checked for it.
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub purpose: Spanned<String>,
    /// When present, events must carry consent for `purpose`, or they are dropped.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<RawConsent>")]
    pub consent: Option<Spanned<RawConsent>>,
    /// Paths of the identifiers of the data subject (for suppression and
    /// erasure). veil refuses a policy that keeps any of them in clear.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub subject: Vec<SpannedPath>,
    /// How pseudonyms are written.
    #[serde(default = "default_pseudonyms")]
    #[schemars(with = "PseudonymOptions")]
    pub pseudonyms: Spanned<PseudonymOptions>,
    /// The default allowlist: anything not matched here is removed. Used for
    /// events that match no rule; without it such events are dropped (`no_rule`).
    #[serde(default)]
    #[schemars(with = "Option<IndexMap<String, RawAction>>")]
    pub fields: Option<RawFields>,
    /// Per-event-type allowlists; the first rule whose `when` matches decides.
    #[serde(default)]
    #[schemars(with = "Vec<RawRule>")]
    pub rules: Vec<Spanned<RawRule>>,
    /// Written decisions to let a path of a sensitive category through
    /// (special categories, precise location, government ids, payment data,
    /// credentials): path -> `{ category, reason }`. Without one, keeping or
    /// generalising such a path is an error. `veil explain` lists them all.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, RawWaiver>")]
    pub waivers: IndexMap<SpannedPath, Spanned<RawWaiver>>,
    /// What happens when a string the policy keeps in clear looks like an
    /// e-mail address, phone, card or IBAN number, IP address or token:
    /// `off`, `count`, `redact` (the default: the match becomes
    /// `[redacted:<kind>]`) or `drop_event`. A `keep` entry may override it:
    /// `{ keep: { scan: off } }`.
    #[serde(default)]
    pub scan: ScanMode,
}

/// What the content scanner does with a match in a kept string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanMode {
    /// Not scanned.
    Off,
    /// Counted (`veil_scan_detections_total`), passed unchanged.
    Count,
    /// Counted, and each match replaced by `[redacted:<kind>]`.
    #[default]
    Redact,
    /// Counted, and the whole event dropped (reason `scan`).
    DropEvent,
}

impl ScanMode {
    pub const ALL: [ScanMode; 4] = [
        ScanMode::Off,
        ScanMode::Count,
        ScanMode::Redact,
        ScanMode::DropEvent,
    ];

    /// The name as written in a policy, and the `action` metric label.
    pub fn code(self) -> &'static str {
        match self {
            ScanMode::Off => "off",
            ScanMode::Count => "count",
            ScanMode::Redact => "redact",
            ScanMode::DropEvent => "drop_event",
        }
    }
}

/// Options of `keep`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeepOptions {
    /// The content scan of the strings kept here (and in everything nested
    /// in the value), overriding the policy's `scan`.
    #[serde(default)]
    pub scan: Option<ScanMode>,
}

/// A waiver of the sensitive-category guardrail for one path.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWaiver {
    /// The category veil found (`health`, `precise_geolocation`, ...).
    #[schemars(with = "String")]
    pub category: Spanned<String>,
    /// Why this data may flow, for the reviewers and the data inventory.
    #[schemars(with = "String")]
    pub reason: Spanned<String>,
}

/// Where consent lives in the event.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    /// Path to the granted purposes: an array of names, or an object
    /// mapping names to booleans (`{"Analytics": true}`).
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub purposes: Option<SpannedPath>,
    /// The name the consent platform gives this policy's purpose (default:
    /// the `purpose` itself), e.g. `Analytics` for Segment's categories.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub category: Option<Spanned<String>>,
    /// Optional path to a boolean; `true` means the subject opted out.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub opt_out: Option<SpannedPath>,
    /// `veil run` only: the input record header whose presence (with any
    /// value but `0` or `false`) means the subject opted out, e.g. `sec-gpc`
    /// for Global Privacy Control.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub opt_out_header: Option<Spanned<String>>,
    /// An IAB TCF v2 consent string (TC string) that must grant the purposes.
    #[serde(default, deserialize_with = "present")]
    pub tcf: Option<RawTcf>,
}

/// An IAB TCF v2 rule: the TC string at `path` must grant every purpose.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTcf {
    /// Path to the TC string in the event.
    #[schemars(with = "String")]
    pub path: SpannedPath,
    /// TCF purpose numbers (1 to 11), every one of which must be granted.
    #[schemars(with = "Vec<u8>")]
    pub purposes: Spanned<Vec<Spanned<u64>>>,
    /// Purposes (among `purposes`) that legitimate interest may grant
    /// instead of consent; never 1, 3, 4, 5 or 6 (TCF 2.2).
    #[serde(default)]
    #[schemars(with = "Vec<u8>")]
    pub legitimate_interest: Vec<Spanned<u64>>,
    /// A Global Vendor List id: the vendor must be granted each purpose too.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<u16>")]
    pub vendor: Option<Spanned<u64>>,
}

/// One per-event-type rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Conditions, all of which must hold: path -> value, or a list of values (any of).
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub when: IndexMap<SpannedPath, Spanned<RawCondition>>,
    /// The allowlist for matching events; defaults to the top-level `fields`.
    #[serde(default)]
    #[schemars(with = "Option<IndexMap<String, RawAction>>")]
    pub fields: Option<RawFields>,
    /// `true` drops matching events (reason `dropped_by_rule`).
    #[serde(default)]
    pub drop: bool,
}

/// How pseudonyms are encoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PseudonymOptions {
    /// `hex` (lowercase) or `base64url` (no padding).
    #[serde(default)]
    pub encoding: Encoding,
    /// Prefix each pseudonym with `<key_id>:` so rotated keys can be told apart.
    #[serde(default)]
    pub key_id_prefix: bool,
    /// How many bytes of the 32-byte HMAC to keep (16 to 32).
    #[serde(default = "default_truncate_bytes")]
    #[schemars(range(min = 16, max = 32))]
    pub truncate_bytes: u8,
}

fn default_pseudonyms() -> Spanned<PseudonymOptions> {
    Spanned::new(
        PseudonymOptions::default(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_truncate_bytes() -> u8 {
    32
}

impl Default for PseudonymOptions {
    fn default() -> Self {
        PseudonymOptions {
            encoding: Encoding::default(),
            key_id_prefix: false,
            truncate_bytes: default_truncate_bytes(),
        }
    }
}

/// Text encoding of pseudonym bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase hexadecimal.
    #[default]
    Hex,
    /// URL-safe base64 without padding (RFC 4648 section 5).
    Base64url,
}

/// What happens to the value at a path.
///
/// Written either as a bare name (`keep`, `pseudonymise`) or as a one-key
/// map with options (`{ ip_prefix: { v4: 24, v6: 48 } }`).
#[derive(Debug, Clone, PartialEq)]
pub enum RawAction {
    /// Pass the value through unchanged, including anything nested in it
    /// (its strings scanned as `scan` says).
    Keep(KeepOptions),
    /// Remove the value (the default for anything unlisted; explicit to
    /// document a decision or to override a wildcard).
    Drop,
    /// Replace the value with its keyed pseudonym.
    Pseudonymise(PseudonymiseOptions),
    /// Truncate an IP address to its network prefix.
    IpPrefix(IpPrefixOptions),
    /// Strip a URL's fragment, userinfo and non-allowlisted query parameters.
    Url(UrlOptions),
    /// Truncate an RFC 3339 timestamp.
    TruncateTime(TimeUnit),
    /// Coarsen a number into buckets.
    Bucket(BucketOptions),
    /// Replace regex matches inside a kept string.
    Redact(RedactOptions),
}

/// Options of `pseudonymise`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PseudonymiseOptions {
    /// Steps applied to a string before hashing, in order.
    #[serde(default)]
    pub normalise: Vec<Normalise>,
}

/// A normalisation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Normalise {
    /// Remove leading and trailing Unicode white space.
    Trim,
    /// Unicode lowercase mapping.
    Lowercase,
}

/// Options of `ip_prefix`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpPrefixOptions {
    /// Prefix length kept for IPv4 addresses (0 to 32).
    #[serde(default = "default_v4")]
    pub v4: u8,
    /// Prefix length kept for IPv6 addresses (0 to 128).
    #[serde(default = "default_v6")]
    pub v6: u8,
}

fn default_v4() -> u8 {
    24
}
fn default_v6() -> u8 {
    48
}

impl Default for IpPrefixOptions {
    fn default() -> Self {
        IpPrefixOptions {
            v4: default_v4(),
            v6: default_v6(),
        }
    }
}

/// Options of `url`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlOptions {
    /// Glob patterns (`*`, `?`) of query parameter names to keep.
    #[serde(default)]
    pub keep_query: Vec<String>,
    /// The content scan of the kept path and query, overriding the
    /// policy's `scan`.
    #[serde(default)]
    pub scan: Option<ScanMode>,
}

/// Unit for `truncate_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    Second,
    Minute,
    Hour,
    Day,
}

/// Options of `bucket`: either `edges` or `width`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketOptions {
    /// Ascending bucket edges; a value becomes the largest edge not above it.
    #[serde(default)]
    pub edges: Option<Vec<f64>>,
    /// Bucket width; a value becomes `floor(value / width) * width`.
    #[serde(default)]
    pub width: Option<f64>,
}

/// Options of `redact`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactOptions {
    /// Regular expressions (Rust `regex` syntax) whose matches are replaced.
    pub patterns: Vec<String>,
    /// Replacement text.
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    "[redacted]".to_owned()
}

/// The action names, as written; also the order of the list printed in errors.
pub const ACTION_NAMES: &[&str] = &[
    "keep",
    "drop",
    "pseudonymise",
    "ip_prefix",
    "url",
    "truncate_time",
    "bucket",
    "redact",
];

impl<'de> Deserialize<'de> for RawAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ActionVisitor)
    }
}

struct ActionVisitor;

fn unknown_action<E: de::Error>(name: &str) -> E {
    let suggestion = match name {
        "pseudonymize" | "hash" => Some("pseudonymise"),
        "remove" | "delete" => Some("drop"),
        "allow" | "pass" => Some("keep"),
        _ => super::validate::did_you_mean(name, ACTION_NAMES),
    };
    if let Some(first) = name.split_whitespace().next()
        && name.contains(char::is_whitespace)
        && ACTION_NAMES.contains(&first)
    {
        // `type: keep` followed by a line indented further (`  event: keep`)
        // is one YAML scalar, `keep event`: a slip of indentation.
        return E::custom(format!(
            "`{name}` is not an action: the line after this one is indented further, so YAML reads it as the rest of this value; indent it like this line"
        ));
    }
    let hint = suggestion
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    E::custom(format!(
        "unknown action `{name}`{hint}; expected one of: {}",
        ACTION_NAMES.join(", ")
    ))
}

impl<'de> Visitor<'de> for ActionVisitor {
    type Value = RawAction;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an action: one of {} or a one-key map such as `{{ ip_prefix: {{ v4: 24 }} }}`",
            ACTION_NAMES.join(", ")
        )
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<RawAction, E> {
        Ok(match name {
            "keep" => RawAction::Keep(KeepOptions::default()),
            "drop" => RawAction::Drop,
            "pseudonymise" => RawAction::Pseudonymise(PseudonymiseOptions::default()),
            "ip_prefix" => RawAction::IpPrefix(IpPrefixOptions::default()),
            "url" => RawAction::Url(UrlOptions::default()),
            "truncate_time" => {
                return Err(E::custom(
                    "`truncate_time` needs a unit, e.g. `{ truncate_time: hour }` (second, minute, hour or day)",
                ));
            }
            "bucket" => {
                return Err(E::custom(
                    "`bucket` needs options, e.g. `{ bucket: { edges: [0, 10, 100] } }` or `{ bucket: { width: 10 } }`",
                ));
            }
            "redact" => {
                return Err(E::custom(
                    "`redact` needs patterns, e.g. `{ redact: { patterns: [\"\\\\d{6,}\"] } }`",
                ));
            }
            other => return Err(unknown_action(other)),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawAction, A::Error> {
        let Some(name) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "empty action map; write an action such as `keep` or `{ pseudonymise: {} }`",
            ));
        };
        let action = match name.as_str() {
            "keep" => RawAction::Keep(map.next_value::<Option<KeepOptions>>()?.unwrap_or_default()),
            "drop" => {
                map.next_value::<de::IgnoredAny>()?;
                RawAction::Drop
            }
            "pseudonymise" => RawAction::Pseudonymise(
                map.next_value::<Option<PseudonymiseOptions>>()?
                    .unwrap_or_default(),
            ),
            "ip_prefix" => RawAction::IpPrefix(
                map.next_value::<Option<IpPrefixOptions>>()?
                    .unwrap_or_default(),
            ),
            "url" => RawAction::Url(map.next_value::<Option<UrlOptions>>()?.unwrap_or_default()),
            "truncate_time" => RawAction::TruncateTime(map.next_value()?),
            "bucket" => RawAction::Bucket(map.next_value()?),
            "redact" => RawAction::Redact(map.next_value()?),
            other => return Err(unknown_action(other)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "an action map has exactly one key; found `{name}` and `{extra}`"
            )));
        }
        Ok(action)
    }
}

impl RawAction {
    /// The action's name as written in a policy.
    pub fn name(&self) -> &'static str {
        match self {
            RawAction::Keep(_) => "keep",
            RawAction::Drop => "drop",
            RawAction::Pseudonymise(_) => "pseudonymise",
            RawAction::IpPrefix(_) => "ip_prefix",
            RawAction::Url(_) => "url",
            RawAction::TruncateTime(_) => "truncate_time",
            RawAction::Bucket(_) => "bucket",
            RawAction::Redact(_) => "redact",
        }
    }
}

// The schema of an action, described with mirror types because the real
// type has a hand-written `Deserialize` (for its error messages).
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum BareActionSchema {
    Keep,
    Drop,
    Pseudonymise,
    IpPrefix,
    Url,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ConfiguredActionSchema {
    Keep(Option<KeepOptions>),
    Drop(Option<()>),
    Pseudonymise(Option<PseudonymiseOptions>),
    IpPrefix(Option<IpPrefixOptions>),
    Url(Option<UrlOptions>),
    TruncateTime(TimeUnit),
    Bucket(BucketOptions),
    Redact(RedactOptions),
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(untagged)]
enum ActionSchema {
    Bare(BareActionSchema),
    Configured(ConfiguredActionSchema),
}

impl JsonSchema for RawAction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Action".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ActionSchema::json_schema(generator)
    }
}

/// The value(s) a rule condition accepts, each with its place in the file so
/// that validation can read the scalar exactly as written (YAML would turn
/// `NO` into `false` and `0x10` into 16).
#[derive(Debug, Clone, PartialEq)]
pub enum RawCondition {
    One(serde_json::Value),
    AnyOf(Vec<Spanned<serde_json::Value>>),
}

impl<'de> Deserialize<'de> for RawCondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ConditionVisitor)
    }
}

struct ConditionVisitor;

impl<'de> Visitor<'de> for ConditionVisitor {
    type Value = RawCondition;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value (string, number, boolean or null) or a list of values")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawCondition, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<serde_json::Value>>()? {
            items.push(item);
        }
        Ok(RawCondition::AnyOf(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCondition, A::Error> {
        let value = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(RawCondition::One(value))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawCondition, E> {
        Ok(RawCondition::One(v.into()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawCondition, E> {
        Ok(RawCondition::One(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawCondition, E> {
        Ok(RawCondition::One(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawCondition, E> {
        Ok(RawCondition::One(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCondition, E> {
        Ok(RawCondition::One(v.into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawCondition, E> {
        Ok(RawCondition::One(serde_json::Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<RawCondition, E> {
        Ok(RawCondition::One(serde_json::Value::Null))
    }
}

/// An optional key that, when written, must hold a value: absent is `None`,
/// but `key:` with nothing after it (YAML's null) or `key: null` is an error,
/// never a silently missing check.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
