//! A validating JSON scanner over bytes that are already known to be UTF-8.
//!
//! It never builds values: it reports where strings, numbers and containers
//! start and end, checks the grammar (RFC 8259), the nesting limit and
//! duplicate keys, and counts scalar leaves of what it skips. The policy walk
//! ([`super::walk`]) drives it and decides what to copy.

use crate::outcome::{Reject, RejectReason};
use crate::policy::trie::{fingerprint, fingerprint_at, same_key};

pub type Scan<T> = Result<T, Reject>;

/// Where a key's unescaped bytes are: in the input (no escapes) or in the arena.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef {
    start: u32,
    len: u32,
    in_arena: bool,
    /// [`fingerprint`] of the unescaped key.
    pub fp: u64,
}

/// Reusable buffers of a scan.
#[derive(Debug, Default)]
pub struct ScanBuffers {
    pub keys: Vec<KeyRef>,
    pub arena: Vec<u8>,
}

impl ScanBuffers {
    pub fn clear(&mut self) {
        self.keys.clear();
        self.arena.clear();
    }
}

pub struct Scanner<'a, 'b> {
    pub input: &'a [u8],
    pub pos: usize,
    depth: u32,
    max_depth: u32,
    pub bufs: &'b mut ScanBuffers,
}

pub fn reject(reason: RejectReason, offset: usize, what: &'static str) -> Reject {
    Reject {
        reason,
        offset,
        what,
    }
}

fn invalid(offset: usize, what: &'static str) -> Reject {
    reject(RejectReason::InvalidJson, offset, what)
}

/// Objects with more keys than this are checked for duplicates by sorting.
const LINEAR_DUP_CHECK: usize = 16;

impl<'a, 'b> Scanner<'a, 'b> {
    pub fn new(input: &'a [u8], max_depth: u32, bufs: &'b mut ScanBuffers) -> Self {
        Scanner {
            input,
            pos: 0,
            depth: 0,
            max_depth,
            bufs,
        }
    }

    /// The byte at the cursor, or 0 at the end (0 is never valid there).
    #[inline(always)]
    pub fn peek(&self) -> u8 {
        self.input.get(self.pos).copied().unwrap_or(0)
    }

    /// `input[start..end]` for a span the scan recorded; a span outside the
    /// input would be a bug in the scanner, reported as `internal_error`.
    #[inline(always)]
    pub fn slice(&self, start: usize, end: usize) -> Scan<&'a [u8]> {
        self.input.get(start..end).ok_or(Reject::INTERNAL_ERROR)
    }

    #[inline(always)]
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    pub fn expect(&mut self, byte: u8, what: &'static str) -> Scan<()> {
        if self.peek() == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(invalid(self.pos, what))
        }
    }

    #[inline]
    pub fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(reject(
                RejectReason::TooDeep,
                self.pos,
                "nesting deeper than the limit",
            ));
        }
        Ok(())
    }

    #[inline]
    pub fn leave(&mut self) {
        self.depth -= 1;
    }

    /// After an object member or array element: `,` means more follow
    /// (`true`), `close` ends the container (`false`).
    #[inline]
    pub fn next_or_close(&mut self, close: u8, what: &'static str) -> Scan<bool> {
        self.ws();
        match self.peek() {
            b',' => {
                self.pos += 1;
                self.ws();
                Ok(true)
            }
            b if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(invalid(self.pos, what)),
        }
    }

    /// Scan a string whose opening quote is at the cursor; leaves the cursor
    /// after the closing quote. Returns whether it contains escapes.
    #[inline]
    pub fn string(&mut self) -> Scan<bool> {
        let input = self.input;
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            let (j, quote) = find_special(input, i);
            if quote {
                self.pos = j + 1;
                return Ok(escaped);
            }
            match input.get(j) {
                Some(b'"') => {
                    self.pos = j + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    i = escape_end(input, j)?;
                }
                Some(_) => return Err(invalid(j, "control character in a string")),
                None => return Err(invalid(self.pos, "unterminated string")),
            }
        }
    }

    /// Scan an object key at the cursor, recording it for the duplicate check.
    /// Returns the key's unescaped bytes' location.
    #[inline]
    pub fn key(&mut self) -> Scan<KeyRef> {
        if self.peek() != b'"' {
            return Err(invalid(self.pos, "expected a key (a string)"));
        }
        let start = self.pos + 1;
        let escaped = self.string()?;
        let end = self.pos - 1;
        let key = if escaped {
            let at = self.bufs.arena.len();
            unescape(self.slice(start, end)?, &mut self.bufs.arena);
            KeyRef {
                start: at as u32,
                len: (self.bufs.arena.len() - at) as u32,
                in_arena: true,
                fp: fingerprint(self.bufs.arena.get(at..).unwrap_or_default()),
            }
        } else {
            KeyRef {
                start: start as u32,
                len: (end - start) as u32,
                in_arena: false,
                fp: fingerprint_at(self.input, start, end),
            }
        };
        self.bufs.keys.push(key);
        Ok(key)
    }

    #[inline(always)]
    pub fn key_bytes(&self, k: KeyRef) -> &[u8] {
        let (s, e) = (k.start as usize, (k.start + k.len) as usize);
        // Recorded by `key` from validated spans: a miss cannot happen, and
        // would only make the key match nothing (removed, fail closed).
        let bytes = if k.in_arena {
            self.bufs.arena.get(s..e)
        } else {
            self.input.get(s..e)
        };
        bytes.unwrap_or_default()
    }

    /// Check the keys recorded since `base` (one object's) for duplicates,
    /// then forget them. `at` is the offset reported on failure.
    pub fn close_object(&mut self, base: usize, at: usize) -> Scan<()> {
        let keys = self.bufs.keys.get(base..).unwrap_or_default();
        let dup = if keys.len() <= LINEAR_DUP_CHECK {
            // A 256-bit set of hashed fingerprints: only a key whose bit is
            // already set is compared with the keys before it.
            let mut seen = [0u64; 4];
            keys.iter().enumerate().any(|(i, ki)| {
                let h = ki.fp.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
                let bit = 1u64 << (h % 64);
                let Some(word) = seen.get_mut((h / 64) as usize) else {
                    return false;
                };
                let maybe = *word & bit != 0;
                *word |= bit;
                maybe
                    && keys
                        .iter()
                        .take(i)
                        .any(|k| k.fp == ki.fp && same_key(self.key_bytes(*k), self.key_bytes(*ki)))
            })
        } else {
            let mut all: Vec<&[u8]> = keys.iter().map(|k| self.key_bytes(*k)).collect();
            all.sort_unstable();
            all.windows(2).any(|w| matches!(w, [a, b] if a == b))
        };
        if dup {
            return Err(reject(
                RejectReason::DuplicateKey,
                at,
                "the same key twice in one object",
            ));
        }
        self.bufs.keys.truncate(base);
        Ok(())
    }

    /// Scan a number at the cursor (RFC 8259 grammar).
    #[inline]
    pub fn number(&mut self) -> Scan<()> {
        let input = self.input;
        let start = self.pos;
        let mut i = start;
        if input.get(i) == Some(&b'-') {
            i += 1;
        }
        match input.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = input.get(i) {
                    i += 1;
                }
            }
            _ => return Err(invalid(start, "malformed number")),
        }
        if input.get(i) == Some(&b'.') {
            i += 1;
            if !matches!(input.get(i), Some(b'0'..=b'9')) {
                return Err(invalid(i, "malformed number: digits must follow `.`"));
            }
            while let Some(b'0'..=b'9') = input.get(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = input.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = input.get(i) {
                i += 1;
            }
            if !matches!(input.get(i), Some(b'0'..=b'9')) {
                return Err(invalid(
                    i,
                    "malformed number: digits must follow the exponent",
                ));
            }
            while let Some(b'0'..=b'9') = input.get(i) {
                i += 1;
            }
        }
        self.pos = i;
        Ok(())
    }

    /// Scan `true`, `false` or `null` at the cursor.
    #[inline]
    pub fn literal(&mut self) -> Scan<()> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        for lit in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(lit) {
                self.pos += lit.len();
                return Ok(());
            }
        }
        Err(invalid(
            self.pos,
            "unexpected character; expected a JSON value",
        ))
    }

    /// Scan any value at the cursor (after white space), adding the number of
    /// scalar leaves and empty containers in it to `leaves`.
    pub fn skip(&mut self, leaves: &mut u64) -> Scan<()> {
        match self.peek() {
            b'"' => {
                self.string()?;
            }
            b'{' => return self.skip_object(leaves),
            b'[' => return self.skip_array(leaves),
            b'-' | b'0'..=b'9' => self.number()?,
            b't' | b'f' | b'n' => self.literal()?,
            0 if self.pos >= self.input.len() => {
                return Err(invalid(self.pos, "unexpected end of input"));
            }
            _ => {
                return Err(invalid(
                    self.pos,
                    "unexpected character; expected a JSON value",
                ));
            }
        }
        *leaves += 1;
        Ok(())
    }

    fn skip_object(&mut self, leaves: &mut u64) -> Scan<()> {
        let open = self.pos;
        self.enter()?;
        self.pos += 1;
        self.ws();
        if self.peek() == b'}' {
            self.pos += 1;
            self.leave();
            *leaves += 1;
            return Ok(());
        }
        let base = self.bufs.keys.len();
        loop {
            self.key()?;
            self.ws();
            self.expect(b':', "expected `:` after a key")?;
            self.ws();
            self.skip(leaves)?;
            if !self.next_or_close(b'}', "expected `,` or `}` in an object")? {
                break;
            }
        }
        self.close_object(base, open)?;
        self.leave();
        Ok(())
    }

    fn skip_array(&mut self, leaves: &mut u64) -> Scan<()> {
        self.enter()?;
        self.pos += 1;
        self.ws();
        if self.peek() == b']' {
            self.pos += 1;
            self.leave();
            *leaves += 1;
            return Ok(());
        }
        loop {
            self.skip(leaves)?;
            if !self.next_or_close(b']', "expected `,` or `]` in an array")? {
                break;
            }
        }
        self.leave();
        Ok(())
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Index of the first `"`, `\\` or control character at or after `i`
/// (`input.len()` if none), eight bytes at a time, and whether it is a `"`.
/// The lowest flagged byte of each word is exact in each of the three masks
/// (a false flag needs a true one below it in the same mask), so the quote
/// mask alone says whether that byte is a `"`: the caller need not load it
/// again, which kept each string's end waiting on a dependent load.
#[inline(always)]
fn find_special(input: &[u8], mut i: usize) -> (usize, bool) {
    while let Some(block) = input.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        let (all, quotes) = crate::simd::string_specials(block);
        if all != 0 {
            let at = all.trailing_zeros();
            return (i + at as usize, quotes >> at & 1 != 0);
        }
        i += 16;
    }
    while let Some(word) = input.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*word);
        let quote = w ^ (LO * u64::from(b'"'));
        let backslash = w ^ (LO * u64::from(b'\\'));
        let quotes = quote.wrapping_sub(LO) & !quote & HI;
        let mask = quotes
            | ((backslash.wrapping_sub(LO) & !backslash) | (w.wrapping_sub(LO * 0x20) & !w)) & HI;
        if mask != 0 {
            let lowest = mask & mask.wrapping_neg();
            return (
                i + (mask.trailing_zeros() / 8) as usize,
                lowest & quotes != 0,
            );
        }
        i += 8;
    }
    while let Some(&b) = input.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return (i, b == b'"');
        }
        i += 1;
    }
    (i, false)
}

fn hex4(input: &[u8], at: usize) -> Scan<u16> {
    let digits = input
        .get(at..at + 4)
        .ok_or_else(|| invalid(at, "truncated \\u escape"))?;
    let mut v: u16 = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(invalid(at, "\\u must be followed by four hex digits")),
        };
        v = (v << 4) | u16::from(n);
    }
    Ok(v)
}

/// Validate the escape whose backslash is at `j`; return the index after it.
fn escape_end(input: &[u8], j: usize) -> Scan<usize> {
    match input.get(j + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(j + 2),
        Some(b'u') => {
            let cu = hex4(input, j + 2)?;
            match cu {
                0xD800..=0xDBFF => {
                    if input.get(j + 6) == Some(&b'\\') && input.get(j + 7) == Some(&b'u') {
                        let lo = hex4(input, j + 8)?;
                        if (0xDC00..=0xDFFF).contains(&lo) {
                            return Ok(j + 12);
                        }
                    }
                    Err(invalid(j, "unpaired surrogate in a \\u escape"))
                }
                0xDC00..=0xDFFF => Err(invalid(j, "unpaired surrogate in a \\u escape")),
                _ => Ok(j + 6),
            }
        }
        _ => Err(invalid(j, "invalid escape in a string")),
    }
}

/// Append the unescaped form of validated string content (no quotes) to `out`.
pub fn unescape(content: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < content.len() {
        let rest = content.get(i..).unwrap_or_default();
        let Some(off) = memchr::memchr(b'\\', rest) else {
            out.extend_from_slice(rest);
            return;
        };
        out.extend_from_slice(rest.get(..off).unwrap_or_default());
        let j = i + off;
        // Validated by the scanner: a backslash is always followed by an escape.
        let (ch, next) = match content.get(j + 1).copied().unwrap_or(b'u') {
            b'"' => ('"', j + 2),
            b'\\' => ('\\', j + 2),
            b'/' => ('/', j + 2),
            b'b' => ('\u{8}', j + 2),
            b'f' => ('\u{c}', j + 2),
            b'n' => ('\n', j + 2),
            b'r' => ('\r', j + 2),
            b't' => ('\t', j + 2),
            _ => {
                // `u`: validated by the scanner, including surrogate pairs.
                let hi = u32::from(hex4(content, j + 2).unwrap_or(0xFFFD));
                if (0xD800..=0xDBFF).contains(&hi) {
                    let lo = u32::from(hex4(content, j + 8).unwrap_or(0xDC00));
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    (char::from_u32(c).unwrap_or('\u{FFFD}'), j + 12)
                } else {
                    (char::from_u32(hi).unwrap_or('\u{FFFD}'), j + 6)
                }
            }
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        i = next;
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    fn skip_all(input: &str) -> Scan<u64> {
        let mut bufs = ScanBuffers::default();
        let mut s = Scanner::new(input.as_bytes(), 64, &mut bufs);
        let mut leaves = 0;
        s.ws();
        s.skip(&mut leaves)?;
        s.ws();
        if s.pos != input.len() {
            return Err(invalid(s.pos, "trailing"));
        }
        Ok(leaves)
    }

    #[test]
    fn accepts_valid_json_and_counts_leaves() {
        assert_eq!(
            skip_all(r#"{"a":[1,2.5e-3,"x\u00e9\ud83d\ude00"],"b":{},"c":null}"#),
            Ok(5)
        );
        assert_eq!(skip_all(" [ true , false ] "), Ok(2));
        assert_eq!(skip_all("-0"), Ok(1));
    }

    #[test]
    fn rejects_invalid_json_with_reason() {
        for bad in [
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "1e",
            "\"a",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "tru",
            "{\"a\":1,}",
            "\"tab\there\"",
            "{1:2}",
            "-",
        ] {
            let e = skip_all(bad).unwrap_err();
            assert_eq!(e.reason, RejectReason::InvalidJson, "{bad:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_found_after_unescaping() {
        let e = skip_all(r#"{"userId":1,"user\u0049d":2}"#).unwrap_err();
        assert_eq!(e.reason, RejectReason::DuplicateKey);
        // Large objects take the sorting path.
        let mut big: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        big.push("\"k7\":0".into());
        let e = skip_all(&format!("{{{}}}", big.join(","))).unwrap_err();
        assert_eq!(e.reason, RejectReason::DuplicateKey);
        // The same key in sibling objects is fine.
        assert!(skip_all(r#"{"a":{"x":1},"b":{"x":2}}"#).is_ok());
    }

    #[test]
    fn a_duplicate_is_found_at_every_position_of_a_small_object() {
        for n in 2..=LINEAR_DUP_CHECK {
            let keys: Vec<String> = (0..n).map(|i| format!("key_number_{i}")).collect();
            let object = |keys: &[String]| {
                let members: Vec<String> = keys.iter().map(|k| format!("\"{k}\":1")).collect();
                format!("{{{}}}", members.join(","))
            };
            assert!(skip_all(&object(&keys)).is_ok(), "{n} distinct keys");
            for i in 0..n {
                for j in i + 1..n {
                    let mut dup = keys.clone();
                    dup[j] = dup[i].clone();
                    let e = skip_all(&object(&dup)).unwrap_err();
                    assert_eq!(e.reason, RejectReason::DuplicateKey, "{n} keys, {i} = {j}");
                }
            }
        }
    }

    #[test]
    fn depth_limit() {
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert_eq!(skip_all(&deep).unwrap_err().reason, RejectReason::TooDeep);
        let ok = "[".repeat(64) + &"]".repeat(64);
        assert!(skip_all(&ok).is_ok());
    }

    #[test]
    fn find_special_agrees_with_a_byte_loop() {
        let naive = |s: &[u8], i: usize| {
            (i..s.len())
                .find(|&j| s[j] == b'"' || s[j] == b'\\' || s[j] < 0x20)
                .unwrap_or(s.len())
        };
        // Every byte value at every offset of a 40-byte window (the 16-,
        // 8- and 1-byte steps all reach it), from every start.
        for b in 0..=255u8 {
            for pos in 0..40 {
                let mut s = vec![b'a'; 40];
                s[pos] = b;
                s[(pos + 7) % 40] = 0xC3;
                for start in 0..40 {
                    let (at, quote) = find_special(&s, start);
                    assert_eq!(at, naive(&s, start), "byte {b} at {pos} from {start}");
                    assert_eq!(
                        quote,
                        s.get(at) == Some(&b'"'),
                        "byte {b} at {pos} from {start}"
                    );
                }
            }
        }
        // Every pair of byte values at every two places of one word: a
        // flag above the first special byte may be false, and the quote
        // verdict must still be exact.
        for x in 0..=255u8 {
            for y in 0..=255u8 {
                for p in 0..8 {
                    for q in p + 1..9 {
                        let mut s = *b"abcdefghijkl";
                        s[p] = x;
                        s[q] = y;
                        let (at, quote) = find_special(&s, 0);
                        assert_eq!(at, naive(&s, 0), "{x} at {p}, {y} at {q}");
                        assert_eq!(quote, s.get(at) == Some(&b'"'), "{x} at {p}, {y} at {q}");
                    }
                }
            }
        }
    }

    #[test]
    fn unescape_handles_every_escape() {
        let mut out = Vec::new();
        unescape(br#"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00z"#, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\"\\/\u{8}\u{c}\n\r\té😀z"
        );
    }
}
