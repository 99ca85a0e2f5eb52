//! The policy walk: one pass over an event's bytes, guided by a compiled
//! tree ([`Node`]), writing the clean event as it goes.
//!
//! Invariants:
//! - Bytes reach `out` only from a node that allows them; an unlisted value
//!   is scanned (validated) and never copied.
//! - A container is written optimistically and truncated away if nothing in
//!   it survives, so emptied objects and arrays disappear.
//! - Pseudonyms are not computed here: a placeholder of the exact length is
//!   written and recorded in `pending`, and the caller fills it in once the
//!   event is known to be forwarded (dropped events cost no HMAC).

use crate::detect;
use crate::outcome::{FieldCounts, RejectReason};
use crate::policy::trie::{Mode, Node, SubjectMark};
use crate::policy::{Action, Normalise, ScanMode};

use super::generalise;
use super::scan::{Scan, ScanBuffers, Scanner, reject, unescape};
use crate::outcome::Reject;

/// Where the bytes to hash are.
#[derive(Debug, Clone, Copy)]
pub enum Src {
    /// A span of the input (a string's content without escapes, or a number/literal).
    Input(u32, u32),
    /// A span of [`Buffers::values`] (unescaped and/or normalised).
    Values(u32, u32),
}

/// A pseudonym to write at `out[at..at + len]`.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub at: usize,
    pub src: Src,
}

/// Reusable per-worker buffers, so steady-state applying allocates nothing.
#[derive(Debug, Default)]
pub struct Buffers {
    pub scan: ScanBuffers,
    pub captures: Vec<Option<(u32, u32)>>,
    /// Every value seen at or on the way to a subject path: its mark and span.
    pub subjects: Vec<(SubjectMark, u32, u32)>,
    /// The scalar values the suppression check hashes (reused).
    pub subject_values: Vec<(u16, u32, u32)>,
    pub pending: Vec<Pending>,
    pub values: Vec<u8>,
    pub text: Vec<u8>,
    /// A generalised URL, before it is written as a JSON string (reused).
    pub generalised: String,
    /// The decoded path and query of a URL being scanned (reused).
    pub url: crate::detect::url::UrlBuffers,
    /// A scanned string with its matches redacted (reused).
    pub redacted: Vec<u8>,
    /// Set by the consent check when the event's TC string is unreadable.
    pub consent_invalid: Option<crate::tcf::Invalid>,
    /// Pseudonyms of repeated values (off unless asked for).
    pub cache: Option<Box<super::cache::PseudonymCache>>,
}

impl Buffers {
    pub fn reset(&mut self, slots: usize) {
        self.scan.clear();
        self.captures.clear();
        self.captures.resize(slots, None);
        self.subjects.clear();
        self.pending.clear();
        self.values.clear();
    }
}

pub struct Walker<'a, 'b> {
    pub sc: Scanner<'a, 'b>,
    /// The input as text (validated UTF-8), for slicing strings.
    text: &'a str,
    pub out: &'b mut Vec<u8>,
    captures: &'b mut Vec<Option<(u32, u32)>>,
    subjects: &'b mut Vec<(SubjectMark, u32, u32)>,
    pending: &'b mut Vec<Pending>,
    values: &'b mut Vec<u8>,
    scratch: &'b mut Vec<u8>,
    generalised: &'b mut String,
    url: &'b mut crate::detect::url::UrlBuffers,
    redacted: &'b mut Vec<u8>,
    pseudonym_len: usize,
    pub counts: FieldCounts,
    /// A string kept under `scan: drop_event` had a detection.
    pub scan_drop: bool,
}

impl<'a, 'b> Walker<'a, 'b> {
    pub fn new(
        text: &'a str,
        max_depth: u32,
        bufs: &'b mut Buffers,
        out: &'b mut Vec<u8>,
        pseudonym_len: usize,
    ) -> Self {
        Walker {
            sc: Scanner::new(text.as_bytes(), max_depth, &mut bufs.scan),
            text,
            out,
            captures: &mut bufs.captures,
            subjects: &mut bufs.subjects,
            pending: &mut bufs.pending,
            values: &mut bufs.values,
            scratch: &mut bufs.text,
            generalised: &mut bufs.generalised,
            url: &mut bufs.url,
            redacted: &mut bufs.redacted,
            pseudonym_len,
            counts: FieldCounts::default(),
            scan_drop: false,
        }
    }

    /// Walk the top-level object (the cursor is on its `{`) and check that
    /// nothing but white space follows it.
    pub fn event(&mut self, root: &Node) -> Scan<()> {
        let keep_rest = matches!(root.mode, Mode::Descend { keep_rest: true });
        if !self.object(root, keep_rest)? {
            self.out.extend_from_slice(b"{}");
        }
        self.sc.ws();
        if self.sc.pos != self.sc.input.len() {
            return Err(reject(
                RejectReason::InvalidJson,
                self.sc.pos,
                "unexpected data after the event object",
            ));
        }
        Ok(())
    }

    /// Walk one value under `node`; returns whether anything was written.
    fn value(&mut self, node: &Node) -> Scan<bool> {
        let start = self.sc.pos;
        let written = match &node.mode {
            Mode::Keep => {
                self.sc.skip(&mut self.counts.kept)?;
                self.emit_kept(start, self.sc.pos, node.scan)?
            }
            Mode::Drop => {
                self.sc.skip(&mut self.counts.removed)?;
                false
            }
            Mode::Transform(action) => self.transform(action, node.scan)?,
            Mode::Descend { keep_rest } => match (self.sc.peek(), node.each.as_deref()) {
                (b'{', _) if node.expects_object() => self.object(node, *keep_rest)?,
                (b'[', Some(each)) => self.array(each, *keep_rest)?,
                // Entries lie beneath this value but its shape is not the one
                // they name (an array for an object, a scalar or null for
                // either): never copied whole, whatever a parent keeps.
                _ if node.emits => {
                    let mut ignored = 0;
                    self.sc.skip(&mut ignored)?;
                    self.counts.type_mismatch += 1;
                    false
                }
                _ => {
                    self.sc.skip(&mut self.counts.removed)?;
                    false
                }
            },
        };
        if let Some(slot) = node.capture
            && let Some(c) = self.captures.get_mut(usize::from(slot))
        {
            *c = Some((start as u32, self.sc.pos as u32));
        }
        if let Some(mark) = node.subject {
            self.subjects.push((mark, start as u32, self.sc.pos as u32));
        }
        Ok(written)
    }

    fn object(&mut self, node: &Node, keep_rest: bool) -> Scan<bool> {
        let open = self.sc.pos;
        self.sc.enter()?;
        self.sc.pos += 1;
        self.sc.ws();
        let out_start = self.out.len();
        if self.sc.peek() == b'}' {
            self.sc.pos += 1;
            self.sc.leave();
            // An empty object is a value of its own: kept only where kept.
            if keep_rest {
                self.counts.kept += 1;
                self.out.extend_from_slice(b"{}");
            } else {
                self.counts.removed += 1;
            }
            return Ok(keep_rest);
        }
        self.out.push(b'{');
        let base = self.sc.bufs.keys.len();
        let mut written = 0u32;
        loop {
            let key_start = self.sc.pos;
            let key = self.sc.key()?;
            let key_end = self.sc.pos;
            self.sc.ws();
            self.sc.expect(b':', "expected `:` after a key")?;
            self.sc.ws();
            let child = node.child_fp(self.sc.key_bytes(key), key.fp);
            match child {
                Some(child) => {
                    let (mark, pending) = (self.out.len(), self.pending.len());
                    self.emit_key(key_start, key_end, written > 0)?;
                    // A key `*` matched is data, not a name the policy
                    // chose. Its value is walked all the same (it may be a
                    // subject or consent field).
                    let wildcard = node.any.as_deref().is_some_and(|a| std::ptr::eq(a, child));
                    if self.value(child)?
                        && !(wildcard && self.key_removed(key_start, key_end, child.scan)?)
                    {
                        written += 1;
                    } else {
                        self.out.truncate(mark);
                        // Placeholders for pseudonyms in what was taken out.
                        self.pending.truncate(pending);
                    }
                }
                None if keep_rest && self.key_removed(key_start, key_end, node.scan)? => {
                    self.sc.skip(&mut self.counts.removed)?;
                }
                None if keep_rest => {
                    let mark = self.out.len();
                    self.emit_key(key_start, key_end, written > 0)?;
                    let value_start = self.sc.pos;
                    self.sc.skip(&mut self.counts.kept)?;
                    if self.emit_kept(value_start, self.sc.pos, node.scan)? {
                        written += 1;
                    } else {
                        self.out.truncate(mark);
                    }
                }
                None => self.sc.skip(&mut self.counts.removed)?,
            }
            if !self
                .sc
                .next_or_close(b'}', "expected `,` or `}` in an object")?
            {
                break;
            }
        }
        self.sc.close_object(base, open)?;
        self.sc.leave();
        if written == 0 {
            self.out.truncate(out_start);
            return Ok(false);
        }
        self.out.push(b'}');
        Ok(true)
    }

    /// Write a member's key `input[key_start..key_end]` (quotes included)
    /// and its `:`, after a `,` when `comma`. In compact JSON the input holds
    /// those bytes side by side, so they are copied in one go.
    #[inline(always)]
    fn emit_key(&mut self, key_start: usize, key_end: usize, comma: bool) -> Scan<()> {
        let input = self.sc.input;
        let from = match key_start.checked_sub(1) {
            Some(before) if comma && input.get(before) == Some(&b',') => before,
            _ => {
                if comma {
                    self.out.push(b',');
                }
                key_start
            }
        };
        if input.get(key_end) == Some(&b':') {
            self.out
                .extend_from_slice(self.sc.slice(from, key_end + 1)?);
        } else {
            self.out.extend_from_slice(self.sc.slice(from, key_end)?);
            self.out.push(b':');
        }
        Ok(())
    }

    fn array(&mut self, each: &Node, keep_rest: bool) -> Scan<bool> {
        self.sc.enter()?;
        self.sc.pos += 1;
        self.sc.ws();
        let out_start = self.out.len();
        if self.sc.peek() == b']' {
            self.sc.pos += 1;
            self.sc.leave();
            if keep_rest {
                self.counts.kept += 1;
                self.out.extend_from_slice(b"[]");
            } else {
                self.counts.removed += 1;
            }
            return Ok(keep_rest);
        }
        self.out.push(b'[');
        let mut written = 0u32;
        loop {
            let mark = self.out.len();
            if written > 0 {
                self.out.push(b',');
            }
            if self.value(each)? {
                written += 1;
            } else {
                self.out.truncate(mark);
            }
            if !self
                .sc
                .next_or_close(b']', "expected `,` or `]` in an array")?
            {
                break;
            }
        }
        self.sc.leave();
        if written == 0 {
            self.out.truncate(out_start);
            return Ok(false);
        }
        self.out.push(b']');
        Ok(true)
    }

    /// Write the kept value `input[s..e]` (already validated), its strings,
    /// object keys and integers scanned as `mode` says; returns whether
    /// anything was written. Most values hold nothing the prefilter reacts
    /// to and are copied as they are.
    fn emit_kept(&mut self, s: usize, e: usize, mode: ScanMode) -> Scan<bool> {
        let raw = self.sc.slice(s, e)?;
        if mode == ScanMode::Off || !detect::may_match(raw) {
            self.out.extend_from_slice(raw);
            return Ok(true);
        }
        match raw.first() {
            Some(b'"') => {
                let content = raw
                    .get(1..raw.len().saturating_sub(1))
                    .ok_or(Reject::INTERNAL_ERROR)?;
                self.emit_scanned_string(raw, content, mode)?;
            }
            Some(b'{' | b'[') => {
                // The slow path: the value is walked again, member by member.
                self.sc.pos = s;
                let written = self.kept_container(mode)?;
                if self.sc.pos != e {
                    return Err(Reject::INTERNAL_ERROR);
                }
                return Ok(written);
            }
            _ => self.emit_scalar(raw, mode),
        }
        Ok(true)
    }

    /// Walk the kept object or array at the cursor, writing it with each
    /// string, key and integer scanned ([`Walker::emit_kept`]). A member
    /// whose key holds a match is removed under `redact` (a key cannot be
    /// rewritten without making two members one), and a container that
    /// loses every member that way is removed with it, as filtering
    /// removes what it empties; one that came empty stays.
    fn kept_container(&mut self, mode: ScanMode) -> Scan<bool> {
        let open = self.sc.pos;
        let is_object = self.sc.peek() == b'{';
        let close = if is_object { b'}' } else { b']' };
        self.sc.enter()?;
        self.sc.pos += 1;
        self.sc.ws();
        if self.sc.peek() == close {
            self.sc.pos += 1;
            self.sc.leave();
            self.out
                .extend_from_slice(if is_object { b"{}" } else { b"[]" });
            return Ok(true);
        }
        let out_start = self.out.len();
        self.out.push(if is_object { b'{' } else { b'[' });
        let base = self.sc.bufs.keys.len();
        let mut written = 0u32;
        loop {
            let mark = self.out.len();
            if is_object {
                let key_start = self.sc.pos;
                self.sc.key()?;
                let key_end = self.sc.pos;
                self.sc.ws();
                self.sc.expect(b':', "expected `:` after a key")?;
                self.sc.ws();
                if self.key_removed(key_start, key_end, mode)? {
                    let mut ignored = 0;
                    self.sc.skip(&mut ignored)?;
                    self.counts.removed += 1;
                } else {
                    self.emit_key(key_start, key_end, written > 0)?;
                    if self.kept_member(mode)? {
                        written += 1;
                    } else {
                        self.out.truncate(mark);
                    }
                }
            } else {
                if written > 0 {
                    self.out.push(b',');
                }
                if self.kept_member(mode)? {
                    written += 1;
                } else {
                    self.out.truncate(mark);
                }
            }
            let what = if is_object {
                "expected `,` or `}` in an object"
            } else {
                "expected `,` or `]` in an array"
            };
            if !self.sc.next_or_close(close, what)? {
                break;
            }
        }
        if is_object {
            self.sc.close_object(base, open)?;
        }
        self.sc.leave();
        if written == 0 {
            self.out.truncate(out_start);
            return Ok(false);
        }
        self.out.push(close);
        Ok(true)
    }

    /// One member or element of a kept container: a container is walked
    /// ([`Walker::kept_container`]), a string or scalar scanned.
    fn kept_member(&mut self, mode: ScanMode) -> Scan<bool> {
        if matches!(self.sc.peek(), b'{' | b'[') {
            return self.kept_container(mode);
        }
        let start = self.sc.pos;
        let mut ignored = 0;
        self.sc.skip(&mut ignored)?;
        self.emit_kept(start, self.sc.pos, mode)
    }

    /// Write the kept string `whole` (quotes included; its JSON content
    /// `content`, which the prefilter has passed), unescaped if need be and
    /// scanned: redacted, or as it was.
    fn emit_scanned_string(&mut self, whole: &[u8], content: &[u8], mode: ScanMode) -> Scan<()> {
        let text = unescaped(content, self.scratch);
        let url = &mut *self.url;
        let found = redact_matches(text, mode, &mut self.counts.scan, self.redacted, |r| {
            detect::url::find_decoded(text, false, url, r)
        });
        if found && mode == ScanMode::DropEvent {
            self.scan_drop = true;
        }
        if found && mode == ScanMode::Redact {
            // Matches start and end on `char` boundaries, so this holds.
            let redacted =
                std::str::from_utf8(self.redacted).map_err(|_| Reject::INTERNAL_ERROR)?;
            write_json_string(self.out, redacted);
        } else {
            self.out.extend_from_slice(whole);
        }
        Ok(())
    }

    /// Whether the member whose key is `input[key_start..key_end]` (quotes
    /// included), copied by a kept parent, is removed because its key holds
    /// a match under `redact` (see [`Walker::kept_container`]); under `count`
    /// and `drop_event` the match is counted and the member stays.
    fn key_removed(&mut self, key_start: usize, key_end: usize, mode: ScanMode) -> Scan<bool> {
        if mode == ScanMode::Off {
            return Ok(false);
        }
        let content = self.sc.slice(key_start + 1, key_end.saturating_sub(1))?;
        if !detect::may_match(content) {
            return Ok(false);
        }
        Ok(self.key_holds_a_match(content, mode) && mode == ScanMode::Redact)
    }

    /// Whether the object key with the JSON content `content` holds a match
    /// of the content detector (read as a kept string is), counting each
    /// under `mode` (and marking the event under `drop_event`).
    fn key_holds_a_match(&mut self, content: &[u8], mode: ScanMode) -> bool {
        let text = unescaped(content, self.scratch);
        let (counts, mut found) = (&mut self.counts.scan, false);
        detect::url::find_decoded(text, false, self.url, |m| {
            found = true;
            counts.record(m.kind, mode);
        });
        self.scan_drop |= found && mode == ScanMode::DropEvent;
        found
    }

    /// Write the kept scalar `token` (a number, `true`, `false` or `null`).
    /// An integer is read as its digits: one holding a match (a card number
    /// written as a JSON number) becomes the string of its redaction under
    /// `redact`. Fractions and exponents are numbers, not identifiers.
    fn emit_scalar(&mut self, token: &[u8], mode: ScanMode) {
        let digits = token.strip_prefix(b"-").unwrap_or(token);
        // Nothing the detector finds is shorter than 8 digits.
        if digits.len() < 8 || !digits.iter().all(u8::is_ascii_digit) {
            self.out.extend_from_slice(token);
            return;
        }
        let found = redact_matches(token, mode, &mut self.counts.scan, self.redacted, |r| {
            detect::find(token, r)
        });
        self.scan_drop |= found && mode == ScanMode::DropEvent;
        match std::str::from_utf8(self.redacted) {
            Ok(redacted) if found && mode == ScanMode::Redact => {
                write_json_string(self.out, redacted)
            }
            _ => self.out.extend_from_slice(token),
        }
    }

    /// The content scan of the URL the `url` action left in `generalised`
    /// (its path and query, percent-decoded: [`detect::url`]), as `mode`
    /// says; with `redact` each match is replaced in place.
    fn scan_url(&mut self, mode: ScanMode) -> Scan<()> {
        if mode == ScanMode::Off {
            return Ok(());
        }
        let url = self.generalised.as_bytes();
        let bufs = &mut *self.url;
        let found = redact_matches(url, mode, &mut self.counts.scan, self.redacted, |r| {
            detect::url::find_in_url(url, bufs, r)
        });
        if found && mode == ScanMode::DropEvent {
            self.scan_drop = true;
        }
        if found && mode == ScanMode::Redact {
            // Matches start and end on ASCII bytes, so this cannot fail.
            let redacted =
                std::str::from_utf8(self.redacted).map_err(|_| Reject::INTERNAL_ERROR)?;
            self.generalised.clear();
            self.generalised.push_str(redacted);
        }
        Ok(())
    }

    /// Apply a scalar action to the value at the cursor.
    fn transform(&mut self, action: &Action, scan: ScanMode) -> Scan<bool> {
        let start = self.sc.pos;
        match self.sc.peek() {
            b'"' => {
                let escaped = self.sc.string()?;
                let (s, e) = (start + 1, self.sc.pos - 1);
                match action {
                    Action::Pseudonymise { normalise } => {
                        self.pend_string(s, e, escaped, normalise)?;
                        Ok(true)
                    }
                    _ => self.generalise_string(action, s, e, escaped, scan),
                }
            }
            b'{' | b'[' => {
                let mut ignored = 0;
                self.sc.skip(&mut ignored)?;
                self.counts.type_mismatch += 1;
                Ok(false)
            }
            b'n' => {
                self.sc.literal()?;
                // `null` carries nothing: it stays `null` under every action.
                self.out.extend_from_slice(b"null");
                self.counts.kept += 1;
                Ok(true)
            }
            first => {
                if first == b't' || first == b'f' {
                    self.sc.literal()?;
                } else {
                    self.sc.number()?;
                }
                let end = self.sc.pos;
                match action {
                    // Numbers and booleans are hashed as their JSON text.
                    Action::Pseudonymise { .. } => {
                        self.pend(Src::Input(start as u32, end as u32));
                        Ok(true)
                    }
                    Action::Bucket(b) if first != b't' && first != b'f' => {
                        let v: f64 = self
                            .text
                            .get(start..end)
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(f64::NAN);
                        match generalise::bucket(v, b) {
                            Some(x) => {
                                generalise::write_number(x, self.out);
                                self.counts.generalised += 1;
                                Ok(true)
                            }
                            None => {
                                self.counts.invalid += 1;
                                Ok(false)
                            }
                        }
                    }
                    _ => {
                        self.counts.type_mismatch += 1;
                        Ok(false)
                    }
                }
            }
        }
    }

    fn pend(&mut self, src: Src) {
        self.out.push(b'"');
        let at = self.out.len();
        self.out.resize(at + self.pseudonym_len, b'0');
        self.out.push(b'"');
        self.pending.push(Pending { at, src });
        self.counts.pseudonymised += 1;
    }

    fn pend_string(
        &mut self,
        s: usize,
        e: usize,
        escaped: bool,
        normalise: &[Normalise],
    ) -> Scan<()> {
        if !escaped && normalise.is_empty() {
            self.pend(Src::Input(s as u32, e as u32));
            return Ok(());
        }
        let text: &str = if escaped {
            self.scratch.clear();
            unescape(self.sc.slice(s, e)?, self.scratch);
            std::str::from_utf8(self.scratch).map_err(|_| Reject::INTERNAL_ERROR)?
        } else {
            self.text.get(s..e).ok_or(Reject::INTERNAL_ERROR)?
        };
        let at = self.values.len();
        normalise_into(text, normalise, self.values);
        self.pend(Src::Values(at as u32, self.values.len() as u32));
        Ok(())
    }

    fn generalise_string(
        &mut self,
        action: &Action,
        s: usize,
        e: usize,
        escaped: bool,
        scan: ScanMode,
    ) -> Scan<bool> {
        let text: &str = if escaped {
            self.scratch.clear();
            unescape(self.sc.slice(s, e)?, self.scratch);
            std::str::from_utf8(self.scratch).map_err(|_| Reject::INTERNAL_ERROR)?
        } else {
            self.text.get(s..e).ok_or(Reject::INTERNAL_ERROR)?
        };
        let start = self.out.len();
        let written = match action {
            Action::IpPrefix { v4, v6 } => {
                self.out.push(b'"');
                generalise::ip_prefix_into(text, *v4, *v6, self.out)
            }
            Action::TruncateTime(unit) => {
                self.out.push(b'"');
                generalise::truncate_time_into(text, *unit, self.out)
            }
            Action::Url { matcher, .. } => {
                let accepted = generalise::url_into(text, matcher, self.generalised);
                if accepted {
                    self.scan_url(scan)?;
                    write_json_string(self.out, self.generalised);
                }
                accepted
            }
            Action::Redact {
                patterns,
                replacement,
            } => {
                write_json_string(self.out, &generalise::redact(text, patterns, replacement));
                true
            }
            _ => {
                self.counts.type_mismatch += 1;
                return Ok(false);
            }
        };
        if !written {
            self.out.truncate(start);
            self.counts.invalid += 1;
            return Ok(false);
        }
        match action {
            Action::IpPrefix { .. } | Action::TruncateTime(_) => self.out.push(b'"'),
            _ => {}
        }
        if matches!(action, Action::Redact { .. }) {
            self.counts.redacted += 1;
        } else {
            self.counts.generalised += 1;
        }
        Ok(true)
    }
}

/// Count each match `find` reports under `mode` and, under `redact`, write
/// `text` with every match replaced by its redaction into `out` (cleared
/// first). Returns whether anything was found.
fn redact_matches(
    text: &[u8],
    mode: ScanMode,
    counts: &mut crate::outcome::Detections,
    out: &mut Vec<u8>,
    find: impl FnOnce(&mut dyn FnMut(detect::Match)),
) -> bool {
    out.clear();
    let (mut found, mut last) = (false, 0);
    find(&mut |m| {
        found = true;
        counts.record(m.kind, mode);
        if mode == ScanMode::Redact {
            out.extend_from_slice(text.get(last..m.start).unwrap_or_default());
            out.extend_from_slice(m.kind.redaction().as_bytes());
            last = m.end;
        }
    });
    if found && mode == ScanMode::Redact {
        out.extend_from_slice(text.get(last..).unwrap_or_default());
    }
    found
}

/// The JSON string content `content` unescaped (into `scratch` when it
/// holds an escape).
fn unescaped<'t>(content: &'t [u8], scratch: &'t mut Vec<u8>) -> &'t [u8] {
    if content.contains(&b'\\') {
        scratch.clear();
        unescape(content, scratch);
        scratch
    } else {
        content
    }
}

/// `text` as a JSON string. Most values need no escaping and are copied as
/// they are; the rest are escaped as serde_json escapes them.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Apply normalisation steps in order, appending the result to `out`.
pub fn normalise_into(text: &str, steps: &[Normalise], out: &mut Vec<u8>) {
    let mut current = std::borrow::Cow::Borrowed(text);
    for step in steps {
        current = match step {
            Normalise::Trim => match current {
                std::borrow::Cow::Borrowed(t) => std::borrow::Cow::Borrowed(t.trim()),
                std::borrow::Cow::Owned(t) => std::borrow::Cow::Owned(t.trim().to_owned()),
            },
            Normalise::Lowercase => {
                if current.is_ascii() && !current.bytes().any(|b| b.is_ascii_uppercase()) {
                    current
                } else {
                    std::borrow::Cow::Owned(current.to_lowercase())
                }
            }
        };
    }
    out.extend_from_slice(current.as_bytes());
}
