//! The engine: a validated [`Policy`] plus a key, applied to one event's bytes
//! at a time. Pure and synchronous: no I/O, no globals, no async.
//!
//! ```text
//! bytes ─► size check ─► UTF-8 check ─► [probe walk] ─► consent / rule ─► walk + emit ─► fill pseudonyms
//! ```
//!
//! Invariants:
//! - On any outcome but `Forwarded`, the caller's buffer is left exactly as
//!   it was: nothing of a dropped or rejected event is ever written.
//! - The whole input is validated (grammar, UTF-8, depth, duplicate keys)
//!   whatever the policy, so whether an event is rejected never depends on
//!   which fields a policy happens to read.
//! - Numbers are kept as their exact input text; `bucket` reads them as f64.
//! - No input can panic it: the lints below forbid `unwrap`, `expect`,
//!   `panic!` and unchecked indexing in this module and everything under it.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cache;
mod generalise;
mod scan;
mod walk;

use std::sync::Arc;

use crate::keys::Key;
use crate::outcome::{DropReason, FieldCounts, Outcome, Reject, RejectReason, Verdict};
use crate::policy::trie::{Node, Plan};
use crate::policy::{Normalise, Policy, Scalar};
use crate::pseudonym::Pseudonymiser;
use crate::suppression::SuppressionList;

pub use generalise::{bucket, ip_prefix, truncate_time, url};
pub use walk::normalise_into;

use scan::{Scanner, reject, unescape};
use walk::{Buffers, Src, Walker};

/// Input limits; inputs beyond them are rejected (`too_large`, `too_deep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Deepest accepted nesting of objects and arrays (the event object is 1).
    pub max_depth: u32,
}

impl Limits {
    /// Upper bounds for configured limits: offsets are 32-bit, and the scan
    /// recurses once per nesting level.
    pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
    pub const MAX_DEPTH: u32 = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_depth: 64,
        }
    }
}

/// Reusable buffers for [`CompiledPolicy::apply`]; keep one per worker thread.
#[derive(Debug, Default)]
pub struct Scratch(Buffers);

impl Scratch {
    /// Buffers with a cache of about `entries` pseudonyms of repeated
    /// values (`0`: none, as [`Scratch::default`]). Bounded (about 200
    /// bytes per entry), zeroed when dropped; it pays where identifiers
    /// repeat (see BENCHMARKS.md, pseudonym cache).
    pub fn with_pseudonym_cache(entries: usize) -> Scratch {
        let mut s = Scratch::default();
        if entries > 0 {
            s.0.cache = Some(Box::new(cache::PseudonymCache::new(entries)));
        }
        s
    }

    /// Fresh buffers with the same cache size (an empty cache): what
    /// replaces buffers a contained panic may have left broken.
    pub fn renewed(&self) -> Scratch {
        Scratch::with_pseudonym_cache(self.0.cache.as_ref().map_or(0, |c| c.entries()))
    }

    /// Pseudonyms served from the cache and computed, so far.
    pub fn cache_hits_and_misses(&self) -> Option<(u64, u64)> {
        self.0.cache.as_ref().map(|c| (c.hits, c.misses))
    }
}

/// A policy bound to a key: ready to apply.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    policy: Policy,
    key_id: String,
    pseudonymiser: Pseudonymiser,
    limits: Limits,
    suppression: Option<SubjectCheck>,
}

/// The suppression check of one policy (see [`CompiledPolicy::suppressing`]).
#[derive(Debug, Clone)]
struct SubjectCheck {
    list: Arc<SuppressionList>,
    /// Per subject path: the normalisations its values are hashed with.
    variants: Vec<Vec<Vec<Normalise>>>,
    /// The policy's plan with a probe that records every subject value,
    /// used while the list is not empty.
    plan: Plan,
}

/// Subject values one event may carry, at most; an event with more is
/// dropped as `suppressed` (fail closed) rather than costing a keyed hash
/// per value without bound.
pub const MAX_SUBJECT_VALUES: usize = 256;

/// Bind a validated policy to the active key.
pub fn compile(policy: Policy, key: &Key, limits: Limits) -> CompiledPolicy {
    let pseudonymiser = Pseudonymiser::new(key, &policy.purpose, &policy.pseudonyms);
    let limits = Limits {
        max_message_bytes: limits.max_message_bytes.min(Limits::MAX_MESSAGE_BYTES),
        max_depth: limits.max_depth.clamp(1, Limits::MAX_DEPTH),
    };
    CompiledPolicy {
        policy,
        key_id: key.id.clone(),
        pseudonymiser,
        limits,
        suppression: None,
    }
}

enum Route<'p> {
    Emit(&'p Node),
    Drop(DropReason),
}

impl CompiledPolicy {
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// This policy, dropping every event one of whose subject values
    /// (after the path's normalisation) is on `list`, with reason
    /// `suppressed`, before consent and rules. A policy without subject
    /// paths is unchanged. While the list is empty nothing is checked and
    /// nothing costs more.
    pub fn suppressing(mut self, list: Arc<SuppressionList>) -> CompiledPolicy {
        let p = &self.policy;
        if p.subject.is_empty() {
            return self;
        }
        let plan = crate::policy::trie::plan(
            p.fields.as_ref(),
            &p.rules,
            p.consent.as_ref(),
            &p.subject,
            true,
            p.scan,
        );
        self.suppression = Some(SubjectCheck {
            list,
            variants: crate::suppression::variants(p),
            plan,
        });
        self
    }

    /// The id of the key pseudonyms are made with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `name@version`.
    pub fn policy_id(&self) -> String {
        self.policy.id()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn pseudonymiser(&self) -> &Pseudonymiser {
        &self.pseudonymiser
    }

    /// Apply the policy to one event. On `Forwarded`, the clean event is
    /// appended to `out`; otherwise `out` is unchanged.
    pub fn apply(&self, input: &[u8], out: &mut Vec<u8>, scratch: &mut Scratch) -> Verdict {
        let mark = out.len();
        scratch.0.consent_invalid = None;
        let (outcome, counts) = match self.apply_inner(input, out, &mut scratch.0) {
            Ok((Outcome::Forwarded, counts)) => (Outcome::Forwarded, counts),
            // What the scanner found is counted for the event it dropped.
            Ok((outcome @ Outcome::Dropped(DropReason::Scan), counts)) => (
                outcome,
                FieldCounts {
                    scan: counts.scan,
                    ..FieldCounts::default()
                },
            ),
            Ok((outcome, _)) => (outcome, FieldCounts::default()),
            Err(r) => (Outcome::Rejected(r), FieldCounts::default()),
        };
        if outcome != Outcome::Forwarded {
            out.truncate(mark);
        }
        Verdict {
            outcome,
            counts,
            consent_invalid: scratch.0.consent_invalid.take(),
        }
    }

    fn apply_inner(
        &self,
        input: &[u8],
        out: &mut Vec<u8>,
        bufs: &mut Buffers,
    ) -> Result<(Outcome, FieldCounts), Reject> {
        if input.len() > self.limits.max_message_bytes {
            return Err(reject(
                RejectReason::TooLarge,
                self.limits.max_message_bytes,
                "message larger than the limit",
            ));
        }
        let text = std::str::from_utf8(input)
            .map_err(|e| reject(RejectReason::InvalidUtf8, e.valid_up_to(), "invalid UTF-8"))?;
        let start = top_level_start(input, self.limits.max_depth)?;
        let check = self.suppression.as_ref().filter(|c| !c.list.is_empty());
        let plan = check.map_or(&self.policy.plan, |c| &c.plan);
        let max_depth = self.limits.max_depth;
        let plen = self.pseudonymiser.len();
        bufs.reset(plan.slots);

        let mark = out.len();
        let route = if let Some(probe) = &plan.probe {
            let mut w = Walker::new(text, max_depth, bufs, out, plen);
            w.sc.pos = start;
            w.event(probe)?;
            out.truncate(mark);
            let route = match check {
                Some(c) if suppressed(c, text, bufs, max_depth) => {
                    Route::Drop(DropReason::Suppressed)
                }
                _ => self.route(plan, text, bufs),
            };
            let captures = std::mem::take(&mut bufs.captures);
            bufs.reset(0);
            bufs.captures = captures;
            route
        } else {
            match &plan.default {
                Some(node) => Route::Emit(node),
                None => Route::Drop(DropReason::NoRule),
            }
        };
        let node = match route {
            Route::Emit(node) => node,
            Route::Drop(reason) => return Ok((Outcome::Dropped(reason), FieldCounts::default())),
        };
        let (counts, scan_drop) = {
            let mut w = Walker::new(text, max_depth, bufs, out, plen);
            w.sc.pos = start;
            w.event(node)?;
            (w.counts, w.scan_drop)
        };
        if plan.probe.is_none()
            && let Some(reason) = self.consent(text, bufs)
        {
            return Ok((Outcome::Dropped(reason), counts));
        }
        // After consent: an event withheld for consent is `no_consent`,
        // whatever it holds.
        if scan_drop {
            return Ok((Outcome::Dropped(DropReason::Scan), counts));
        }
        for p in &bufs.pending {
            let bytes = match p.src {
                Src::Input(s, e) => input.get(s as usize..e as usize),
                Src::Values(s, e) => bufs.values.get(s as usize..e as usize),
            };
            // Spans and placeholders are recorded by the walk above; a miss
            // would be a bug in it, and still never a panic or a raw value.
            let slot = out.get_mut(p.at..p.at.saturating_add(plen));
            let (Some(bytes), Some(slot)) = (bytes, slot) else {
                return Err(Reject::INTERNAL_ERROR);
            };
            match bufs.cache.as_deref_mut() {
                Some(cache) => cache.write(&self.pseudonymiser, bytes, slot),
                None => self.pseudonymiser.write(bytes, slot),
            }
        }
        Ok((Outcome::Forwarded, counts))
    }

    /// After a probe walk: consent first, then the first matching rule.
    fn route<'p>(&'p self, plan: &'p Plan, text: &str, bufs: &mut Buffers) -> Route<'p> {
        if let Some(reason) = self.consent(text, bufs) {
            return Route::Drop(reason);
        }
        for rule in &plan.rules {
            let matches = rule.when.iter().all(|(slot, any_of)| {
                capture(&bufs.captures, *slot)
                    .is_some_and(|span| scalar_matches(text, span, any_of, &mut bufs.text))
            });
            if matches {
                if rule.drop {
                    return Route::Drop(DropReason::ByRule);
                }
                return match rule.fields.as_ref().or(plan.default.as_ref()) {
                    Some(node) => Route::Emit(node),
                    None => Route::Drop(DropReason::NoRule),
                };
            }
        }
        match &plan.default {
            Some(node) => Route::Emit(node),
            None => Route::Drop(DropReason::NoRule),
        }
    }

    /// The consent decision from captured values; `None` means consented.
    /// Every check the policy names must pass: no opt-out, the purpose
    /// among the granted ones, the TC string granting the TCF purposes.
    fn consent(&self, text: &str, bufs: &mut Buffers) -> Option<DropReason> {
        let slots = self.policy.plan.consent?;
        if let Some(slot) = slots.opt_out
            && let Some((s, e)) = capture(&bufs.captures, slot)
        {
            // Fail closed: anything but false or null counts as an opt-out.
            match text.get(s as usize..e as usize) {
                Some("false" | "null") => {}
                _ => return Some(DropReason::OptedOut),
            }
        }
        let consent = self.policy.consent.as_ref()?;
        if let Some(slot) = slots.purposes {
            let Some((s, _)) = capture(&bufs.captures, slot) else {
                return Some(DropReason::NoConsent);
            };
            // The input was validated by the walk; any scan error here is
            // still no consent (fail closed), never a grant.
            let wanted = consent.category.as_bytes();
            if !granted(text, s as usize, wanted, self.limits.max_depth, bufs).unwrap_or(false) {
                return Some(DropReason::NoConsent);
            }
        }
        if let (Some(slot), Some(tcf)) = (slots.tcf, &consent.tcf) {
            let Some(span) = capture(&bufs.captures, slot) else {
                return Some(DropReason::NoConsent);
            };
            return match tc_string(text, span, &mut bufs.text) {
                TcString::Absent => Some(DropReason::NoConsent),
                TcString::NotAString => {
                    bufs.consent_invalid = Some(crate::tcf::Invalid::Malformed);
                    Some(DropReason::NoConsent)
                }
                TcString::Text(tc) => match tcf.rule.grants(tc) {
                    Ok(true) => None,
                    Ok(false) => Some(DropReason::NoConsent),
                    Err(invalid) => {
                        bufs.consent_invalid = Some(invalid);
                        Some(DropReason::NoConsent)
                    }
                },
            };
        }
        None
    }
}

/// The value at a `consent.tcf.path`.
enum TcString<'t> {
    /// `null` or `""`: no consent string.
    Absent,
    NotAString,
    Text(&'t [u8]),
}

/// The TC string captured at `(s, e)` (a JSON value, quotes included),
/// unescaped into `buf` when it holds escapes.
fn tc_string<'t>(text: &'t str, (s, e): (u32, u32), buf: &'t mut Vec<u8>) -> TcString<'t> {
    let raw = text
        .as_bytes()
        .get(s as usize..e as usize)
        .unwrap_or_default();
    match raw {
        b"null" | b"\"\"" => TcString::Absent,
        [b'"', content @ .., b'"'] if content.contains(&b'\\') => {
            buf.clear();
            unescape(content, buf);
            TcString::Text(buf)
        }
        [b'"', content @ .., b'"'] => TcString::Text(content),
        _ => TcString::NotAString,
    }
}

/// Whether the purposes value at `text[at..]` grants `wanted`: an array
/// holding it as a string, or an object whose member of that name (after
/// unescaping) is `true`. Anything else grants nothing.
fn granted(
    text: &str,
    at: usize,
    wanted: &[u8],
    max_depth: u32,
    bufs: &mut Buffers,
) -> Result<bool, Reject> {
    let mut sc = Scanner::new(text.as_bytes(), max_depth, &mut bufs.scan);
    sc.pos = at;
    let close = match sc.peek() {
        b'[' => b']',
        b'{' => b'}',
        _ => return Ok(false),
    };
    sc.pos += 1;
    loop {
        sc.ws();
        if sc.peek() == close {
            return Ok(false);
        }
        let start = sc.pos;
        let named = if sc.peek() == b'"' {
            let escaped = sc.string()?;
            let content = text
                .as_bytes()
                .get(start + 1..sc.pos.saturating_sub(1))
                .unwrap_or_default();
            if escaped {
                bufs.text.clear();
                unescape(content, &mut bufs.text);
                bufs.text == wanted
            } else {
                content == wanted
            }
        } else {
            let mut ignored = 0;
            sc.skip(&mut ignored)?;
            false
        };
        if close == b'}' {
            sc.ws();
            sc.expect(b':', "expected `:` after a key")?;
            sc.ws();
            let value = sc.pos;
            let mut ignored = 0;
            sc.skip(&mut ignored)?;
            if named && text.get(value..sc.pos) == Some("true") {
                return Ok(true);
            }
        } else if named {
            return Ok(true);
        }
        sc.ws();
        if sc.peek() == b',' {
            sc.pos += 1;
        } else if sc.peek() != close {
            return Ok(false);
        }
    }
}

/// Find the top-level `{`, or say why the input is not an event object: a
/// valid JSON value within the configured depth is `not_object`; deeper is
/// `too_deep`, as it would be inside an object.
fn top_level_start(input: &[u8], max_depth: u32) -> Result<usize, Reject> {
    if input.starts_with(b"\xEF\xBB\xBF") {
        return Err(reject(
            RejectReason::InvalidJson,
            0,
            "byte order mark before the JSON text",
        ));
    }
    let start = input
        .iter()
        .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .ok_or_else(|| reject(RejectReason::InvalidJson, input.len(), "empty input"))?;
    if input.get(start) == Some(&b'{') {
        return Ok(start);
    }
    // Valid JSON that is not an object is `not_object`; anything else is `invalid_json`.
    let mut bufs = scan::ScanBuffers::default();
    let mut sc = Scanner::new(input, max_depth, &mut bufs);
    sc.pos = start;
    let mut ignored = 0;
    sc.skip(&mut ignored)?;
    sc.ws();
    if sc.pos != input.len() {
        return Err(reject(
            RejectReason::InvalidJson,
            sc.pos,
            "unexpected data after the JSON value",
        ));
    }
    Err(reject(
        RejectReason::NotObject,
        start,
        "the top-level value is not an object",
    ))
}

/// Whether any subject value the probe recorded is on the list (or there
/// are more than [`MAX_SUBJECT_VALUES`]: fail closed). The values are every
/// scalar in the value at a subject path (in a container too: a policy may
/// pseudonymise what lies inside), and a scalar found on the way to one (an
/// event that put the identifier where the path expects a container).
/// Each is hashed as pseudonymisation would: a string's unescaped content,
/// a number's or boolean's JSON text, after each normalisation the policy
/// applies at, below or above its path; `null` is no identifier.
fn suppressed(check: &SubjectCheck, text: &str, bufs: &mut Buffers, max_depth: u32) -> bool {
    // Reused across events: no allocation per event while a list is on.
    let mut values = std::mem::take(&mut bufs.subject_values);
    values.clear();
    let listed = subject_listed(check, text, bufs, max_depth, &mut values);
    bufs.subject_values = values;
    listed
}

fn subject_listed(
    check: &SubjectCheck,
    text: &str,
    bufs: &mut Buffers,
    max_depth: u32,
    values: &mut Vec<(u16, u32, u32)>,
) -> bool {
    for &(mark, s, e) in &bufs.subjects {
        match text.as_bytes().get(s as usize) {
            Some(b'{' | b'[') if mark.exact => {
                if scalars_within(text, (s, e), max_depth, mark.index, values).is_err() {
                    return true; // validated already: never, but fail closed
                }
            }
            Some(b'{' | b'[') => {} // on the way: what is inside is walked
            Some(_) => values.push((mark.index, s, e)),
            None => return true,
        }
        if values.len() > MAX_SUBJECT_VALUES {
            return true;
        }
    }
    let view = check.list.view();
    for &(i, s, e) in values.iter() {
        let (Some(raw), Some(variants)) = (
            text.get(s as usize..e as usize),
            check.variants.get(usize::from(i)),
        ) else {
            return true; // a bug in the walk: never let the event through
        };
        let value: &str = match raw.as_bytes().first() {
            Some(b'"') => {
                let content = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
                if content.contains('\\') {
                    bufs.text.clear();
                    unescape(content.as_bytes(), &mut bufs.text);
                    match std::str::from_utf8(&bufs.text) {
                        Ok(t) => t,
                        Err(_) => return true,
                    }
                } else {
                    content
                }
            }
            Some(b'n') | None => continue,
            Some(_) => raw,
        };
        for steps in variants {
            bufs.values.clear();
            normalise_into(value, steps, &mut bufs.values);
            if view.contains(&bufs.values) {
                return true;
            }
        }
    }
    false
}

/// Push the span of every scalar (string, number, boolean) inside the
/// (already validated) JSON value at `text[s..e]`, as subject `index`'s.
fn scalars_within(
    text: &str,
    (s, e): (u32, u32),
    max_depth: u32,
    index: u16,
    out: &mut Vec<(u16, u32, u32)>,
) -> Result<(), Reject> {
    fn value(
        sc: &mut Scanner<'_, '_>,
        index: u16,
        out: &mut Vec<(u16, u32, u32)>,
    ) -> Result<(), Reject> {
        let start = sc.pos as u32;
        match sc.peek() {
            b'{' | b'[' => {
                let close = if sc.peek() == b'{' { b'}' } else { b']' };
                sc.enter()?;
                sc.pos += 1;
                sc.ws();
                if sc.peek() == close {
                    sc.pos += 1;
                    sc.leave();
                    return Ok(());
                }
                loop {
                    if close == b'}' {
                        sc.string()?;
                        sc.ws();
                        sc.expect(b':', "expected `:` after a key")?;
                        sc.ws();
                    }
                    value(sc, index, out)?;
                    if out.len() > MAX_SUBJECT_VALUES
                        || !sc.next_or_close(close, "expected `,` or a close")?
                    {
                        break;
                    }
                }
                sc.leave();
                return Ok(());
            }
            b'"' => {
                sc.string()?;
            }
            b't' | b'f' | b'n' => sc.literal()?,
            _ => sc.number()?,
        }
        out.push((index, start, sc.pos as u32));
        Ok(())
    }
    let bytes = text.as_bytes().get(..e as usize).unwrap_or_default();
    let mut bufs = scan::ScanBuffers::default();
    let mut sc = Scanner::new(bytes, max_depth, &mut bufs);
    sc.pos = s as usize;
    value(&mut sc, index, out)
}

/// The span recorded in capture slot `slot`, if the walk saw that value.
fn capture(captures: &[Option<(u32, u32)>], slot: u16) -> Option<(u32, u32)> {
    captures.get(usize::from(slot)).copied().flatten()
}

fn scalar_matches(text: &str, (s, e): (u32, u32), any_of: &[Scalar], buf: &mut Vec<u8>) -> bool {
    let raw = text.get(s as usize..e as usize).unwrap_or_default();
    let first = raw.as_bytes().first().copied().unwrap_or(0);
    any_of.iter().any(|want| match want {
        Scalar::Null => raw == "null",
        Scalar::Bool(true) => raw == "true",
        Scalar::Bool(false) => raw == "false",
        Scalar::Number(n) => n.matches(raw),
        Scalar::String(want) => {
            if first != b'"' {
                return false;
            }
            // A captured string span includes its quotes.
            let content = raw
                .as_bytes()
                .get(1..raw.len().saturating_sub(1))
                .unwrap_or_default();
            if content.contains(&b'\\') {
                buf.clear();
                unescape(content, buf);
                buf.as_slice() == want.as_bytes()
            } else {
                content == want.as_bytes()
            }
        }
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
