//! One pipeline stage: every route's compiled policy applied to one input
//! message, plus the output key and the dead-letter record. Pure and
//! synchronous like the engine; the Kafka and file adapters both call
//! [`Stage::process`], so they cannot disagree on what goes where.
//!
//! Invariants:
//! - An input is rejected (dead-lettered) as a whole or not at all: every
//!   route validates the full input under the same limits, so the first
//!   route's rejection stands for all.
//! - A dead-letter record holds a reason code, a detail (byte offset and what
//!   was expected) and the source coordinates, and the raw payload only when
//!   `include_payload` is set. Keys never appear in it.

use std::ops::Range;

use base64::Engine as _;
use serde_json::json;

use crate::config::{MessageKey, PipelineConfig};
use crate::engine::{CompiledPolicy, Limits, Scratch, compile};
use crate::keys::{KeyError, KeyRing};
use crate::outcome::{FieldCounts, Outcome, Reject};
use crate::policy::{Encoding, FieldPath, PolicyError, PseudonymOptions, Segment};
use crate::pseudonym::Pseudonymiser;

/// One route, ready to apply.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub engine: CompiledPolicy,
    /// Pseudonymises Kafka keys: full-length hex, no prefix.
    key_hasher: Pseudonymiser,
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
}

/// What one route made of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOutput {
    /// `Forwarded` or `Dropped`; rejections are in [`Processed::rejected`].
    pub outcome: Outcome,
    pub counts: FieldCounts,
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
}

impl Processed {
    /// The clean event of a forwarded output.
    pub fn value(&self, o: &RouteOutput) -> &[u8] {
        &self.buf[o.value.clone()]
    }

    /// The output record's key, if it has one.
    pub fn key(&self, o: &RouteOutput) -> Option<&[u8]> {
        o.key.clone().map(|r| &self.buf[r])
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

/// Why the policies or keys a config names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("route `{route}`: {source}")]
    Policy {
        route: String,
        #[source]
        source: PolicyError,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// Read the policies and keys a config names and compile the stage.
pub fn load(config: &PipelineConfig) -> Result<(Stage, KeyRing), StageError> {
    let ring = crate::keys::load_dir(&config.keys.dir, config.keys.active.as_deref())?;
    let mut policies = Vec::new();
    for r in &config.routes {
        let policy = crate::policy::load(&r.policy).map_err(|source| StageError::Policy {
            route: r.name.clone(),
            source,
        })?;
        policies.push((r.name.clone(), policy));
    }
    let stage = Stage::new(config, policies, &ring)?;
    Ok((stage, ring))
}

impl Stage {
    /// Compile `policies` (one per route, in route order) under the ring's active key.
    pub fn new(
        config: &PipelineConfig,
        policies: Vec<(String, crate::Policy)>,
        ring: &KeyRing,
    ) -> Result<Stage, StageError> {
        let key = ring.active();
        let key_options = PseudonymOptions {
            encoding: Encoding::Hex,
            key_id_prefix: false,
            truncate_bytes: 32,
        };
        let mut routes: Vec<Route> = Vec::new();
        for (name, policy) in policies {
            let key_hasher = Pseudonymiser::new(key, &policy.purpose, &key_options);
            routes.push(Route {
                name,
                engine: compile(policy, key, config.limits),
                key_hasher,
            });
        }
        Ok(Stage {
            routes,
            message_key: config.message_key.clone(),
            keep_headers: config.keep_headers.clone(),
            include_payload: config.dead_letter.include_payload,
            limits: config.limits,
            key_id: key.id.clone(),
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The active key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether an input header is copied to the outputs.
    pub fn keeps_header(&self, name: &str) -> bool {
        self.keep_headers.iter().any(|h| h == name)
    }

    /// Apply every route to one input (`value`, with its Kafka `key`).
    pub fn process(
        &self,
        value: &[u8],
        key: Option<&[u8]>,
        out: &mut Processed,
        scratch: &mut Scratch,
    ) {
        out.buf.clear();
        out.outputs.clear();
        out.rejected = None;
        for route in &self.routes {
            let start = out.buf.len();
            let verdict = route.engine.apply(value, &mut out.buf, scratch);
            match verdict.outcome {
                Outcome::Rejected(r) => {
                    out.outputs.clear();
                    out.buf.clear();
                    out.rejected = Some(r);
                    return;
                }
                Outcome::Dropped(_) => out.outputs.push(RouteOutput {
                    outcome: verdict.outcome,
                    counts: verdict.counts,
                    value: start..start,
                    key: None,
                }),
                Outcome::Forwarded => {
                    let end = out.buf.len();
                    let key = self.output_key(route, key, start..end, &mut out.buf);
                    out.outputs.push(RouteOutput {
                        outcome: verdict.outcome,
                        counts: verdict.counts,
                        value: start..end,
                        key,
                    });
                }
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
                route.key_hasher.write(key, &mut buf[start..]);
            }
            MessageKey::From(path) => {
                let found = lookup(&buf[clean], path)?;
                buf.extend_from_slice(found.as_bytes());
            }
        }
        Some(start..buf.len())
    }

    /// The dead-letter record (JSON) for a rejected input.
    pub fn dead_letter(&self, reject: &Reject, origin: Origin<'_>, payload: &[u8]) -> Vec<u8> {
        let policies: Vec<String> = self.routes.iter().map(|r| r.engine.policy_id()).collect();
        let mut record = json!({
            "reason": reject.reason.code(),
            "detail": reject.to_string(),
            "policies": policies,
        });
        match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                record["source"] = json!({"topic": topic, "partition": partition, "offset": offset})
            }
            Origin::Line(line) => record["line"] = json!(line),
        }
        if self.include_payload {
            match std::str::from_utf8(payload) {
                Ok(s) => record["payload"] = json!(s),
                Err(_) => {
                    record["payload_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(payload))
                }
            }
        }
        serde_json::to_vec(&record).expect("a JSON value always serialises")
    }
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
