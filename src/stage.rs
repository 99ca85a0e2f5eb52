//! One pipeline stage: every route's compiled policy applied to one input
//! message, plus the output key and the dead-letter record. Pure and
//! synchronous like the engine (its one side effect is the error log line
//! of a contained panic); the Kafka adapter, file-mode `veil run` and
//! `veil apply` (a one-route stage) all call [`Stage::process`] and
//! [`Stage::dead_letter`], so they cannot disagree on what goes where or
//! on what a dead letter looks like.
//!
//! Invariants:
//! - An input is rejected (dead-lettered) as a whole or not at all: every
//!   route validates the full input under the same limits, so the first
//!   route's rejection stands for all.
//! - A dead-letter record holds a reason code, a detail (byte offset and what
//!   was expected) and the source coordinates, and the raw payload only when
//!   `include_payload` is set. Keys never appear in it.
//! - A panic while processing one input is contained ([`contain`]): that
//!   input is rejected as `internal_error` with nothing forwarded, the
//!   buffers it touched are replaced, and the caller goes on with the next.

// On the data path: no input or broker reply may reach an `unwrap`,
// `expect`, `panic!` or unchecked index here (tests are exempt).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ops::Range;
use std::panic::AssertUnwindSafe;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::config::{MessageKey, PipelineConfig, StageConfig};
use crate::engine::{CompiledPolicy, Limits, Scratch, compile};
use crate::keys::{KeyError, KeyRing};
use crate::outcome::{
    DropReason, FieldCounts, Outcome, Reject, RejectReason, RouteOutcome, Verdict,
};
use crate::policy::{Encoding, FieldPath, PolicyError, PseudonymOptions, Segment};
use crate::pseudonym::Pseudonymiser;

/// Output record headers veil sets. Input headers named `veil-*` are never
/// copied (see [`Stage::keeps_header`]), so these cannot be spoofed upstream.
pub mod header {
    /// `name@version` of the policy that made the record.
    pub const POLICY: &str = "veil-policy";
    /// Id of the key the pseudonyms were made with.
    pub const KEY_ID: &str = "veil-key-id";
    pub const SOURCE_TOPIC: &str = "veil-source-topic";
    pub const SOURCE_PARTITION: &str = "veil-source-partition";
    pub const SOURCE_OFFSET: &str = "veil-source-offset";
    /// Dead letters only: the reject reason code.
    pub const REASON: &str = "veil-reason";
}

/// One route, ready to apply.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub engine: CompiledPolicy,
    /// `name@version` of its policy, for the [`header::POLICY`] header.
    policy_tag: String,
    /// Pseudonymises Kafka keys: full-length hex, no prefix.
    key_hasher: Pseudonymiser,
    /// Id of the key this route's pseudonyms are made with.
    key_id: String,
    /// The candidate policy run beside this one (`routes[].shadow`).
    shadow: Option<Box<ShadowRoute>>,
}

/// A route's shadow policy: applied to every input, compared with the live
/// output, never produced.
#[derive(Debug, Clone)]
struct ShadowRoute {
    engine: CompiledPolicy,
    classes: crate::shadow::PathClasses,
}

impl Route {
    /// The record header its policy reads an opt-out from, if any.
    fn opt_out_header(&self) -> Option<&str> {
        self.engine
            .policy()
            .consent
            .as_ref()?
            .opt_out_header
            .as_deref()
    }
}

/// All routes, and what to do with keys and headers.
#[derive(Debug, Clone)]
pub struct Stage {
    routes: Vec<Route>,
    message_key: MessageKey,
    keep_headers: Vec<String>,
    include_payload: bool,
    limits: Limits,
    key_id: String,
    /// Whether any route uses veil's public demo key.
    public_demo_key: bool,
    /// Every key of the ring (id, when made), for the key age metric.
    key_times: Vec<(String, Option<std::time::SystemTime>)>,
    /// Whether any route's policy reads an opt-out from a record header.
    reads_headers: bool,
    /// Largest output record (clean event plus key, or dead-letter record).
    max_record_bytes: usize,
    /// The suppression list the routes check, if any.
    suppression: Option<std::sync::Arc<crate::suppression::SuppressionList>>,
}

/// The headers of an input record, as the stage reads them.
pub trait InputHeaders {
    /// Visit each header once, in order: its name and value (`None`: a
    /// header without one). A header whose name cannot be read is skipped.
    fn each(&self, visit: &mut dyn FnMut(&str, Option<&[u8]>));
}

/// An input without headers (a line of a file).
pub struct NoHeaders;

impl InputHeaders for NoHeaders {
    fn each(&self, _: &mut dyn FnMut(&str, Option<&[u8]>)) {}
}

/// Whether an opt-out header's value says the subject opted out: any value
/// but `0` or `false` (ignoring case and surrounding white space) does,
/// including none at all. Global Privacy Control sends `Sec-GPC: 1`.
pub fn header_opts_out(value: Option<&[u8]>) -> bool {
    let Some(v) = value else { return true };
    let v = v.trim_ascii();
    !(v == b"0" || v.eq_ignore_ascii_case(b"false"))
}

/// What one route made of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOutput {
    /// Rejections are in [`Processed::rejected`].
    pub outcome: RouteOutcome,
    pub counts: FieldCounts,
    /// Why the route's TC string could not be read, if so.
    pub consent_invalid: Option<crate::tcf::Invalid>,
    value: Range<usize>,
    key: Option<Range<usize>>,
}

/// The result of [`Stage::process`]; reuse one per worker.
#[derive(Debug, Default)]
pub struct Processed {
    buf: Vec<u8>,
    /// One entry per route, in route order; empty when rejected.
    pub outputs: Vec<RouteOutput>,
    pub rejected: Option<Reject>,
    /// What the routes' shadow policies made of the input, compared with
    /// the live outputs (empty when no route has one, or when rejected).
    pub shadow: ShadowResults,
    shadow_buf: Vec<u8>,
}

/// The shadow comparisons of one input.
#[derive(Debug, Default)]
pub struct ShadowResults {
    /// The routes compared, in route order, each with where its
    /// differences are in `differences`.
    compared: Vec<(usize, Range<usize>)>,
    differences: Vec<crate::shadow::Difference>,
}

impl ShadowResults {
    fn clear(&mut self) {
        self.compared.clear();
        self.differences.clear();
    }

    /// Each route compared, in route order, with its differences (none:
    /// the shadow policy made the same of the input).
    pub fn routes(&self) -> impl Iterator<Item = (usize, &[crate::shadow::Difference])> {
        self.compared
            .iter()
            .map(|(route, r)| (*route, self.differences.get(r.clone()).unwrap_or_default()))
    }
}

impl Processed {
    /// The clean event of a forwarded output.
    pub fn value(&self, o: &RouteOutput) -> &[u8] {
        // The ranges are made by `process` over this very buffer, so `get`
        // always finds them; it is here so that a bug is never a panic.
        self.buf.get(o.value.clone()).unwrap_or_default()
    }

    /// The output record's key, if it has one.
    pub fn key(&self, o: &RouteOutput) -> Option<&[u8]> {
        o.key.clone().and_then(|r| self.buf.get(r))
    }

    /// How many records this input produces, each awaiting one
    /// acknowledgement before the input is complete: one per forwarding
    /// route, or its one dead-letter record; none when every route dropped it.
    pub fn records(&self) -> usize {
        if self.rejected.is_some() {
            1
        } else {
            self.forwarded().count()
        }
    }

    /// The forwarded outputs with their route index, in route order.
    pub fn forwarded(&self) -> impl Iterator<Item = (usize, &RouteOutput)> {
        self.outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.outcome == RouteOutcome::Forwarded)
    }

    /// What to count for this input ([`crate::metrics::StageCounters::record`]):
    /// the reason it was rejected, or per route, in route order, its
    /// outcome, value tallies and clean bytes.
    pub fn tally(
        &self,
    ) -> Result<impl Iterator<Item = crate::metrics::RouteTally<'_>> + '_, RejectReason> {
        match &self.rejected {
            Some(r) => Err(r.reason),
            None => Ok(self.outputs.iter().map(|o| crate::metrics::RouteTally {
                outcome: o.outcome,
                counts: &o.counts,
                output_len: o.value.len(),
                consent_invalid: o.consent_invalid,
            })),
        }
    }
}

/// Where a rejected input came from, for its dead-letter record.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    Kafka {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    /// 1-based line of an NDJSON file.
    Line(u64),
}

/// A Kafka input's coordinates as header text, made once per input and
/// shared by all its output records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    pub topic: &'a str,
    partition: String,
    offset: String,
}

impl<'a> Source<'a> {
    pub fn new(topic: &'a str, partition: i32, offset: i64) -> Source<'a> {
        Source {
            topic,
            partition: partition.to_string(),
            offset: offset.to_string(),
        }
    }
}

/// The headers veil sets on one output record, in order (input headers the
/// stage keeps come after them).
pub type Headers<'a> = [(&'static str, &'a str); 5];

/// Why the policies or keys a config names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("route `{route}`: {source}")]
    Policy {
        route: String,
        #[source]
        source: PolicyError,
    },
    #[error("route `{route}`'s shadow policy: {source}")]
    Shadow {
        route: String,
        #[source]
        source: PolicyError,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// `message_key` does not fit the policies (see
    /// [`crate::config::check_message_key`]).
    #[error(transparent)]
    MessageKey(#[from] crate::config::ConfigError),
    #[error(
        "route `{route}`: its policy declares no `subject` paths, so no event of it can be matched to the suppression list; declare the subject's identifiers in the policy"
    )]
    SuppressionWithoutSubject { route: String },
    #[error(
        "route `{route}` names key `{key}`, which is not in the key directory (keys: {})",
        available.join(", ")
    )]
    RouteKey {
        route: String,
        key: String,
        available: Vec<String>,
    },
    #[error("suppression.key `{key}` is not in the key directory")]
    SuppressionKey { key: String },
    #[error(transparent)]
    SuppressionFile(#[from] crate::suppression::FileError),
}

/// The suppression file entries a config names, raw identifiers hashed
/// under `suppression.key` (else the active key) in each of their forms;
/// `None` when the config has no suppression. Refused when a route's
/// policy declares no subject, or a token line names a key not loaded.
pub fn suppression_entries(
    config: &PipelineConfig,
    ring: &KeyRing,
    stage: &Stage,
) -> Result<Option<Vec<crate::suppression::Entry>>, StageError> {
    let Some(s) = &config.suppression else {
        return Ok(None);
    };
    for route in &stage.routes {
        if route.engine.policy().subject.is_empty() {
            return Err(StageError::SuppressionWithoutSubject {
                route: route.name.clone(),
            });
        }
    }
    let key = match &s.key {
        Some(id) => ring
            .get(id)
            .ok_or_else(|| StageError::SuppressionKey { key: id.clone() })?,
        None => ring.active(),
    };
    let tokeniser = crate::suppression::Tokeniser::new(key);
    Ok(Some(crate::suppression::read_files(
        &s.files, &tokeniser, ring,
    )?))
}

/// Put file `entries` ([`suppression_entries`]) on `list`, check it under
/// `ring`'s keys, and have `stage` drop what it lists.
pub fn with_suppression(
    list: &std::sync::Arc<crate::suppression::SuppressionList>,
    ring: &KeyRing,
    entries: Vec<crate::suppression::Entry>,
    stage: Stage,
) -> Stage {
    list.rekey(ring);
    list.replace(crate::suppression::Source::Files, entries);
    stage.suppressing(list)
}

/// Read the policies and keys a config names and compile the stage.
pub fn load(config: &PipelineConfig) -> Result<(Stage, KeyRing), StageError> {
    let ring = crate::keys::load_dir(&config.keys.dir, config.keys.active.as_deref())?;
    let mut policies = Vec::new();
    for (name, path) in config.policies() {
        let policy = crate::policy::load(path).map_err(|source| StageError::Policy {
            route: name.to_owned(),
            source,
        })?;
        for w in &policy.warnings {
            tracing::warn!(route = name, "policy: {w}");
        }
        policies.push((name.to_owned(), policy));
    }
    let named: Vec<(&str, &crate::Policy)> =
        policies.iter().map(|(n, p)| (n.as_str(), p)).collect();
    crate::config::check_message_key(config, &named)?;
    let keyed = policies
        .into_iter()
        .zip(config.route_keys())
        .map(|((name, policy), (_, _, key))| (name, policy, key.map(str::to_owned)))
        .collect();
    let mut shadows = Vec::new();
    for (i, path) in config.shadows() {
        let route = config.policies().get(i).map_or("", |(n, _)| *n).to_owned();
        let policy = crate::policy::load(path).map_err(|source| StageError::Shadow {
            route: route.clone(),
            source,
        })?;
        for w in &policy.warnings {
            tracing::warn!(route, "shadow policy: {w}");
        }
        shadows.push((i, policy));
    }
    let stage = Stage::keyed(&config.stage, keyed, &ring)?.shadowing(shadows, &ring)?;
    Ok((stage, ring))
}

impl Stage {
    /// Compile `policies` (one per route, in route order) under the ring's active key.
    pub fn new(
        config: &StageConfig,
        policies: Vec<(String, crate::Policy)>,
        ring: &KeyRing,
    ) -> Result<Stage, StageError> {
        let keyed = policies.into_iter().map(|(n, p)| (n, p, None)).collect();
        Stage::keyed(config, keyed, ring)
    }

    /// Compile `(route, policy, key id)` in route order, each under its
    /// key (`None`: the ring's active key).
    pub fn keyed(
        config: &StageConfig,
        policies: Vec<(String, crate::Policy, Option<String>)>,
        ring: &KeyRing,
    ) -> Result<Stage, StageError> {
        let active = ring.active();
        let key_options = PseudonymOptions {
            encoding: Encoding::Hex,
            key_id_prefix: false,
            truncate_bytes: 32,
        };
        let mut routes: Vec<Route> = Vec::new();
        for (name, policy, key_id) in policies {
            let key = match key_id {
                None => active,
                Some(id) => ring.get(&id).ok_or_else(|| StageError::RouteKey {
                    route: name.clone(),
                    key: id.clone(),
                    available: ring.ids().map(str::to_owned).collect(),
                })?,
            };
            let key_hasher = Pseudonymiser::new(key, &policy.purpose, &key_options);
            routes.push(Route {
                name,
                policy_tag: policy.id(),
                engine: compile(policy, key, config.limits),
                key_hasher,
                key_id: key.id.clone(),
                shadow: None,
            });
        }
        let public_demo_key = active.is_public_demo()
            || routes
                .iter()
                .any(|r| ring.get(&r.key_id).is_some_and(|k| k.is_public_demo()));
        let key = active;
        let reads_headers = routes.iter().any(|r| r.opt_out_header().is_some());
        Ok(Stage {
            routes,
            message_key: config.message_key.clone(),
            keep_headers: config.keep_headers.clone(),
            include_payload: config.include_payload,
            limits: config.limits,
            key_id: key.id.clone(),
            public_demo_key,
            key_times: ring.keys().map(|k| (k.id.clone(), k.created)).collect(),
            reads_headers,
            max_record_bytes: usize::MAX,
            suppression: None,
        })
    }

    /// Check every route's subjects against `list` (see
    /// [`CompiledPolicy::suppressing`]).
    /// An input whose Kafka key, in any of its forms, is on the list is
    /// dropped as `suppressed` on every route too: the key names the
    /// subject whatever the event's body carries.
    pub fn suppressing(
        mut self,
        list: &std::sync::Arc<crate::suppression::SuppressionList>,
    ) -> Stage {
        for route in &mut self.routes {
            route.engine = route.engine.clone().suppressing(list.clone());
            if let Some(shadow) = route.shadow.as_mut() {
                shadow.engine = shadow.engine.clone().suppressing(list.clone());
            }
        }
        self.suppression = Some(list.clone());
        self
    }

    /// Run `shadows` (route index, candidate policy) beside the routes'
    /// live policies, each under its route's key and the same limits.
    pub fn shadowing(
        mut self,
        shadows: Vec<(usize, crate::Policy)>,
        ring: &KeyRing,
    ) -> Result<Stage, StageError> {
        for (i, policy) in shadows {
            let Some(route) = self.routes.get_mut(i) else {
                continue; // (the config names shadows of its own routes only)
            };
            let key = ring
                .get(&route.key_id)
                .ok_or_else(|| StageError::RouteKey {
                    route: route.name.clone(),
                    key: route.key_id.clone(),
                    available: ring.ids().map(str::to_owned).collect(),
                })?;
            let classes = crate::shadow::PathClasses::new(route.engine.policy(), &policy);
            let mut engine = compile(policy, key, self.limits);
            if let Some(list) = &self.suppression {
                engine = engine.suppressing(list.clone());
            }
            route.shadow = Some(Box::new(ShadowRoute { engine, classes }));
        }
        Ok(self)
    }

    /// Each route with a shadow policy: its index, name, the shadow
    /// policy's `name@version` and its path class labels (for metrics).
    pub fn shadows(&self) -> Vec<(usize, &str, String, &[String])> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let s = r.shadow.as_ref()?;
                Some((
                    i,
                    r.name.as_str(),
                    s.engine.policy().id(),
                    s.classes.labels(),
                ))
            })
            .collect()
    }

    /// Whether `key` names a suppressed subject (in any of its forms).
    fn key_suppressed(&self, key: Option<&[u8]>) -> bool {
        let (Some(list), Some(key)) = (&self.suppression, key) else {
            return false;
        };
        if list.is_empty() {
            return false;
        }
        let view = list.view();
        let Ok(text) = std::str::from_utf8(key) else {
            return view.contains(key);
        };
        crate::suppression::forms(text)
            .iter()
            .any(|form| view.contains(form))
    }

    /// Hold every output record to `bytes`: an input with a clean event
    /// (plus its key) larger than that is rejected as a whole as
    /// `output_too_large`, and a dead-letter record that would be larger
    /// omits the raw payload (keeping the reason and the source). The
    /// Kafka adapter sets this from the producer's `message.max.bytes`, so
    /// no record veil makes can stall a partition by being unsendable.
    pub fn limit_records(mut self, bytes: usize) -> Stage {
        self.max_record_bytes = bytes;
        self
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `(route name, policy)` in route order, e.g. for
    /// [`crate::metrics::Metrics::live`].
    pub fn policies(&self) -> Vec<(&str, &CompiledPolicy)> {
        self.routes
            .iter()
            .map(|r| (r.name.as_str(), &r.engine))
            .collect()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The active key's id (dead letters carry it).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The ids of the keys the routes use, each once, in route order.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for r in &self.routes {
            if !ids.contains(&r.key_id.as_str()) {
                ids.push(&r.key_id);
            }
        }
        ids
    }

    /// Every loaded key's id and when it was made (see [`crate::keys::Key::created`]).
    pub fn key_times(&self) -> &[(String, Option<std::time::SystemTime>)] {
        &self.key_times
    }

    /// Whether the active key or a route's key is veil's public demo key,
    /// whose pseudonyms anyone can recompute.
    pub fn uses_public_demo_key(&self) -> bool {
        self.public_demo_key
    }

    /// Whether any input header is kept.
    pub fn keeps_headers(&self) -> bool {
        !self.keep_headers.is_empty()
    }

    /// Whether an input header is copied to the outputs (the config
    /// refuses to keep any named `veil-*`, so veil's own cannot be spoofed).
    pub fn keeps_header(&self, name: &str) -> bool {
        self.keep_headers.iter().any(|h| h == name)
    }

    /// The headers of route `route`'s output record: the policy that made
    /// it, the key id, and where its input came from. `None` for a route
    /// index the stage does not have.
    pub fn route_headers<'a>(
        &'a self,
        route: usize,
        source: &'a Source<'a>,
    ) -> Option<Headers<'a>> {
        let route = self.routes.get(route)?;
        Some([
            (header::POLICY, route.policy_tag.as_str()),
            (header::KEY_ID, &route.key_id),
            (header::SOURCE_TOPIC, source.topic),
            (header::SOURCE_PARTITION, &source.partition),
            (header::SOURCE_OFFSET, &source.offset),
        ])
    }

    /// The headers of a dead-letter record: the reason, the key id, and
    /// where its input came from (no policy: every route's is in the record).
    pub fn dead_letter_headers<'a>(
        &'a self,
        reason: &'static str,
        source: &'a Source<'a>,
    ) -> Headers<'a> {
        [
            (header::REASON, reason),
            (header::KEY_ID, &self.key_id),
            (header::SOURCE_TOPIC, source.topic),
            (header::SOURCE_PARTITION, &source.partition),
            (header::SOURCE_OFFSET, &source.offset),
        ]
    }

    /// `name@version` of each route's policy, in route order.
    pub fn policy_tags(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.policy_tag.as_str())
    }

    /// Apply every route to one input (`value`, with its Kafka `key`, from
    /// `origin`). A panic on the way rejects the input as `internal_error`
    /// (see [`contain`]) and leaves `out` and `scratch` freshly made.
    pub fn process(
        &self,
        value: &[u8],
        key: Option<&[u8]>,
        origin: Origin<'_>,
        out: &mut Processed,
        scratch: &mut Scratch,
    ) {
        self.process_record(value, key, &NoHeaders, origin, out, scratch);
    }

    /// [`Self::process`] for a record with headers: a route whose policy
    /// names a `consent.opt_out_header` drops the input as `opted_out`
    /// when the record carries that header (see [`header_opts_out`]).
    pub fn process_record(
        &self,
        value: &[u8],
        key: Option<&[u8]>,
        headers: &dyn InputHeaders,
        origin: Origin<'_>,
        out: &mut Processed,
        scratch: &mut Scratch,
    ) {
        self.process_using(CompiledPolicy::apply, value, key, origin, out, scratch);
        if out.rejected.is_some() || !self.reads_headers {
            return;
        }
        // One pass over the headers, whatever the number of routes.
        let routes = &self.routes;
        let outputs = &mut out.outputs;
        headers.each(&mut |name, value| {
            if !header_opts_out(value) {
                return;
            }
            for (route, o) in routes.iter().zip(outputs.iter_mut()) {
                // A suppressed subject stays suppressed: that reason comes first.
                if route
                    .opt_out_header()
                    .is_some_and(|h| h.eq_ignore_ascii_case(name))
                    && o.outcome != RouteOutcome::Dropped(DropReason::Suppressed)
                {
                    *o = RouteOutput {
                        outcome: RouteOutcome::Dropped(DropReason::OptedOut),
                        counts: FieldCounts::default(),
                        consent_invalid: None,
                        value: 0..0,
                        key: None,
                    };
                }
            }
        });
    }

    /// The routes whose policy reads an opt-out from a record header, with
    /// the header's name: files have none, so these checks never run there.
    pub fn opt_out_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes
            .iter()
            .filter_map(|r| Some((r.name.as_str(), r.opt_out_header()?)))
    }

    /// [`Self::process`] with the engine call as a parameter, so that tests
    /// can make it panic without any way to do so in the shipped binary.
    fn process_using(
        &self,
        apply: impl Fn(&CompiledPolicy, &[u8], &mut Vec<u8>, &mut Scratch) -> Verdict,
        value: &[u8],
        key: Option<&[u8]>,
        origin: Origin<'_>,
        out: &mut Processed,
        scratch: &mut Scratch,
    ) {
        let contained = contain(origin, || {
            self.process_unguarded(&apply, value, key, out, scratch)
        });
        if let Err(reject) = contained {
            // The panic may have left either buffer half-written or with
            // broken internal invariants: replace both, never reuse them.
            *out = Processed {
                rejected: Some(reject),
                ..Processed::default()
            };
            *scratch = scratch.renewed();
        }
    }

    fn process_unguarded(
        &self,
        apply: &impl Fn(&CompiledPolicy, &[u8], &mut Vec<u8>, &mut Scratch) -> Verdict,
        value: &[u8],
        key: Option<&[u8]>,
        out: &mut Processed,
        scratch: &mut Scratch,
    ) {
        out.buf.clear();
        out.outputs.clear();
        out.rejected = None;
        out.shadow.clear();
        for (i, route) in self.routes.iter().enumerate() {
            let start = out.buf.len();
            let verdict = apply(&route.engine, value, &mut out.buf, scratch);
            if let Some(shadow) = &route.shadow
                && !matches!(verdict.outcome, Outcome::Rejected(_))
            {
                let live = match verdict.outcome {
                    Outcome::Forwarded => {
                        crate::shadow::Side::Forwarded(out.buf.get(start..).unwrap_or_default())
                    }
                    _ => crate::shadow::Side::Dropped,
                };
                out.shadow_buf.clear();
                let candidate = apply(&shadow.engine, value, &mut out.shadow_buf, scratch);
                let candidate = match candidate.outcome {
                    Outcome::Forwarded => crate::shadow::Side::Forwarded(&out.shadow_buf),
                    Outcome::Dropped(_) => crate::shadow::Side::Dropped,
                    Outcome::Rejected(_) => crate::shadow::Side::Rejected,
                };
                let from = out.shadow.differences.len();
                crate::shadow::compare(
                    live,
                    candidate,
                    &shadow.classes,
                    &mut out.shadow.differences,
                );
                let to = out.shadow.differences.len();
                out.shadow.compared.push((i, from..to));
            }
            match verdict.outcome {
                Outcome::Rejected(r) => {
                    out.outputs.clear();
                    out.buf.clear();
                    out.shadow.clear();
                    out.rejected = Some(r);
                    return;
                }
                Outcome::Dropped(reason) => out.outputs.push(RouteOutput {
                    outcome: RouteOutcome::Dropped(reason),
                    counts: verdict.counts,
                    consent_invalid: verdict.consent_invalid,
                    value: start..start,
                    key: None,
                }),
                Outcome::Forwarded => {
                    let end = out.buf.len();
                    let key = self.output_key(route, key, start..end, &mut out.buf);
                    let key_len = key.as_ref().map_or(0, ExactSizeIterator::len);
                    if (end - start).saturating_add(key_len) > self.max_record_bytes {
                        out.outputs.clear();
                        out.buf.clear();
                        out.shadow.clear();
                        out.rejected = Some(Reject::OUTPUT_TOO_LARGE);
                        return;
                    }
                    out.outputs.push(RouteOutput {
                        outcome: RouteOutcome::Forwarded,
                        counts: verdict.counts,
                        consent_invalid: None,
                        value: start..end,
                        key,
                    });
                }
            }
        }
        // After the routes, so that a bad input is dead-lettered whatever
        // its key: an input that is one is never a suppressed subject's
        // event that flows.
        if self.key_suppressed(key) {
            out.buf.clear();
            out.shadow.clear();
            for o in &mut out.outputs {
                *o = RouteOutput {
                    outcome: RouteOutcome::Dropped(crate::outcome::DropReason::Suppressed),
                    counts: FieldCounts::default(),
                    consent_invalid: None,
                    value: 0..0,
                    key: None,
                };
            }
        }
    }

    /// Append the output key to `buf` and return where it is.
    fn output_key(
        &self,
        route: &Route,
        key: Option<&[u8]>,
        clean: Range<usize>,
        buf: &mut Vec<u8>,
    ) -> Option<Range<usize>> {
        let start = buf.len();
        match &self.message_key {
            MessageKey::Drop => return None,
            MessageKey::Keep => buf.extend_from_slice(key?),
            MessageKey::Pseudonymise => {
                let key = key?;
                buf.resize(start + route.key_hasher.len(), 0);
                route.key_hasher.write(key, buf.get_mut(start..)?);
            }
            MessageKey::From(path) => {
                let found = lookup(buf.get(clean)?, path)?;
                buf.extend_from_slice(found.as_bytes());
            }
        }
        Some(start..buf.len())
    }

    /// The dead-letter record (JSON) for a rejected input: the one record
    /// shape of every mode (`veil apply`, file and Kafka `veil run`).
    /// `payload` is the raw input, copied in only when the stage includes
    /// payloads; `None` when it was not kept (a line too long to hold).
    pub fn dead_letter(
        &self,
        reject: &Reject,
        origin: Origin<'_>,
        payload: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut record = self.letter(reject.reason, reject.to_string(), origin);
        let bare = to_json(&record);
        let Some(payload) = payload.filter(|_| self.include_payload) else {
            return bare;
        };
        let (key, value) = match std::str::from_utf8(payload) {
            Ok(s) => ("payload", json!(s)),
            Err(_) => (
                "payload_base64",
                json!(base64::engine::general_purpose::STANDARD.encode(payload)),
            ),
        };
        record.insert(key.into(), value);
        let full = to_json(&record);
        if full.len() <= self.max_record_bytes {
            return full;
        }
        // Too large to send with it: the pointer (source or line) stays.
        record.remove(key);
        record.insert(
            "payload_omitted".into(),
            json!(format!(
                "the record with the payload ({} bytes) would exceed the largest record \
                 the producer may send ({} bytes)",
                full.len(),
                self.max_record_bytes
            )),
        );
        let omitted = to_json(&record);
        if omitted.len() <= self.max_record_bytes {
            omitted
        } else {
            bare
        }
    }

    /// The dead-letter record written in place of route `route`'s output
    /// record (or of a dead-letter record, `route` `None`) when the broker
    /// refused it permanently: the reason, the broker's error code, the
    /// route and where the input came from; never the event.
    pub fn refused_letter(
        &self,
        reason: RejectReason,
        route: Option<&str>,
        code: &str,
        origin: Origin<'_>,
    ) -> Vec<u8> {
        let what = match route {
            Some(r) => format!("route `{r}`'s output record"),
            None => "the dead-letter record".to_owned(),
        };
        let detail = format!("the broker refused {what} permanently ({code}); it was not written");
        let mut record = self.letter(reason, detail, origin);
        record.insert("route".into(), json!(route));
        to_json(&record)
    }

    /// What every dead letter holds: reason, detail, every route's policy,
    /// and where the input came from.
    fn letter(
        &self,
        reason: RejectReason,
        detail: String,
        origin: Origin<'_>,
    ) -> Map<String, Value> {
        let mut record = Map::new();
        record.insert("reason".into(), json!(reason.code()));
        record.insert("detail".into(), json!(detail));
        record.insert(
            "policies".into(),
            json!(self.policy_tags().collect::<Vec<_>>()),
        );
        match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => record.insert(
                "source".into(),
                json!({"topic": topic, "partition": partition, "offset": offset}),
            ),
            Origin::Line(line) => record.insert("line".into(), json!(line)),
        };
        record
    }
}

fn to_json(record: &Map<String, Value>) -> Vec<u8> {
    // A map with string keys always serialises; an empty record would
    // still be a valid (if useless) dead letter, never a panic.
    serde_json::to_vec(record).unwrap_or_else(|_| b"{}".to_vec())
}

/// Run `work`, the processing of one input from `origin`, and contain a
/// panic in it: `Err` with the `internal_error` rejection, after logging a
/// fixed message and the input's coordinates. The panic payload is dropped
/// unread: it is text built from whatever the failing code had at hand
/// (an error quoting its input, a formatted value) and may hold event data.
///
/// On `Err` the caller must discard every buffer `work` could mutate
/// ([`Stage::process`] does): that is what makes the
/// `AssertUnwindSafe` below sound. Everything else `work` reaches is
/// shared and immutable (compiled policies, pseudonymisers: no interior
/// mutability) and the engine takes no locks, so nothing half-updated by
/// the panic can be observed afterwards.
pub fn contain<T>(origin: Origin<'_>, work: impl FnOnce() -> T) -> Result<T, Reject> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|_payload| {
        const MSG: &str = "panic while processing an input: dead-lettered as internal_error, \
                           continuing with fresh buffers (a bug in veil; please report it)";
        match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => tracing::error!(topic, partition, offset, "{MSG}"),
            Origin::Line(line) => tracing::error!(line, "{MSG}"),
        }
        Reject::INTERNAL_ERROR
    })
}

/// The scalar at an exact `path` of a clean event, as key text: a string's
/// content, or a number's or boolean's JSON text. `None` when absent, null,
/// or a container.
fn lookup(event: &[u8], path: &FieldPath) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_slice(event).ok()?;
    for seg in &path.0 {
        let Segment::Key(k) = seg else { return None };
        v = v.get_mut(k.as_str())?.take();
    }
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
