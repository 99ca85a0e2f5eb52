//! The content detector: finds values that look like personal data or
//! credentials inside strings a policy keeps in clear (issue 13).
//!
//! Pure, no I/O, no allocation: [`find`] reports matches through a
//! callback, [`may_match`] is the cheap prefilter the engine runs on the raw
//! bytes of a kept value before doing anything else.
//!
//! Kinds, each with the check that confirms a candidate:
//! - `email`: `local@domain.tld` (local part of letters and digits of any
//!   script and `._%+-`, a domain of at least two labels of letters, digits
//!   and dashes whose last is two or more letters and not a file extension
//!   such as `png`: `josé@bücher.de` is an address);
//! - `phone`: E.164 (`+` or `00` then 8 to 15 digits, spaces, dashes, dots
//!   and parentheses between groups), North American (`(555) 123-4567`,
//!   `555-123-4567`, `+1 555 123 4567`) and trunk-prefix national numbers
//!   (`020 7946 0958`, `06 12 34 56 78`, `0612345678`: a `0`, a non-zero
//!   digit, 10 or 11 digits in all);
//! - `card`: 13 to 19 digits, ungrouped or in groups of four (or Amex /
//!   Diners 4-6-5 / 4-6-4) joined by one kind of separator (space or dash),
//!   with a known issuer prefix and a valid Luhn check digit;
//! - `iban`: a country code with its registered IBAN length, two check
//!   digits and the BBAN, ungrouped or in groups of four, whose ISO 7064
//!   mod-97 check is 1;
//! - `ip`: dotted-quad IPv4 (no leading zeros, not a fifth group, not a
//!   version after a product name as in user agents' `Chrome/120.0.0.0`;
//!   after a path segment, `/from/10.9.8.7`, it is an address) and IPv6 (as `std::net` reads
//!   it, at least two colons and six characters: not `::1`);
//! - `token`: `Bearer <credential>` (in any case; 16 or more token characters) and JWTs
//!   (`eyJ...` header, payload, signature in base64url).
//!
//! Candidates are anchored at token boundaries (the byte before is not a
//! letter, digit or `_`), which is also what keeps the scan linear: every
//! attempt is bounded in length and starts at a boundary.
//!
//! Invariant: matches are reported left to right, never overlapping, and
//! start and end on `char` boundaries of a `str` (an ASCII byte, or a
//! whole non-ASCII letter of an address).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod url;

/// What a match looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
    Ip,
    Token,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Iban,
        Kind::Ip,
        Kind::Token,
    ];

    /// The label value and the name in `[redacted:<kind>]`.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::Ip => "ip",
            Kind::Token => "token",
        }
    }

    /// The text a match is replaced with under `scan: redact`.
    pub fn redaction(self) -> &'static str {
        match self {
            Kind::Email => "[redacted:email]",
            Kind::Phone => "[redacted:phone]",
            Kind::Card => "[redacted:card]",
            Kind::Iban => "[redacted:iban]",
            Kind::Ip => "[redacted:ip]",
            Kind::Token => "[redacted:token]",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One detection: `text[start..end]` looks like a `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

// Byte classes of the prefilter and the boundary checks.
const DIGIT: u8 = 1;
const UPPER: u8 = 2;
const LOWER: u8 = 4;
/// Separators a phone or card number may have between its groups.
const NUMSEP: u8 = 8;
/// `:` (IPv6).
const COLON: u8 = 32;
/// Where the prefilter stops to look: digits, `:`, `@`, `\`, `%` (a
/// percent-escape may hide anything), `J` (of `eyJ`), `b` and `B` (of
/// `Bearer`).
const HOOK: u8 = 64;

// `b` runs over 0..256, the table's indices: built at compile time.
#[allow(clippy::indexing_slicing)]
const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let hook =
            if c.is_ascii_digit() || matches!(c, b':' | b'@' | b'\\' | b'%' | b'J' | b'b' | b'B') {
                HOOK
            } else {
                0
            };
        t[b] = hook
            | if c.is_ascii_digit() {
                DIGIT
            } else if c.is_ascii_uppercase() {
                UPPER
            } else if c.is_ascii_lowercase() {
                LOWER
            } else {
                match c {
                    b' ' | b'-' | b'.' | b'(' | b')' | b'+' => NUMSEP,
                    b':' => COLON,
                    _ => 0,
                }
            };
        b += 1;
    }
    t
}

static CLASS: [u8; 256] = classes();

#[inline(always)]
fn class(b: u8) -> u8 {
    // An index into a 256-entry table by a byte is always in bounds.
    CLASS.get(usize::from(b)).copied().unwrap_or(0)
}

#[inline(always)]
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

#[inline(always)]
fn is_alnum(b: u8) -> bool {
    class(b) & (DIGIT | UPPER | LOWER) != 0
}

#[inline(always)]
fn is_word(b: u8) -> bool {
    is_alnum(b) || b == b'_'
}

/// Whether `raw` (any bytes: a JSON value as it appears in the input,
/// keys, quotes and escapes included) could contain a match of [`find`]
/// in one of its strings after unescaping. A superset: `false` means
/// nothing in it can match; `true` means run the detector.
///
/// It stops at: an `@`, a `\` or a `%XX` (an escape may hide anything),
/// `eyJ` (a JWT), `Bearer` in any case. Then a
/// jump from digit to digit and colon to colon: a number run that starts
/// where a number can start (not inside a word, not after `word-`,
/// `word/`, `word.`) with 7 digits, or 4 digits and 3 dots (IPv4); two
/// colons among hex digits (IPv6); two capitals before two digits (IBAN).
/// Most kept strings (names, titles, types, versions, UUIDs) hold none.
pub fn may_match(raw: &[u8]) -> bool {
    // No match is shorter than 6 bytes (`a@b.co`), whatever escapes it has.
    if raw.len() < 6 {
        return false;
    }
    // Bytes before `skip` were read by a run below.
    let mut skip = 0;
    for (i, &b) in raw.iter().enumerate() {
        if class(b) & HOOK == 0 || i < skip {
            continue;
        }
        if hook(raw, i, b, &mut skip) {
            return true;
        }
    }
    false
}

/// What [`may_match`] makes of the hook byte `b` at `raw[i]`; sets `skip`
/// past the run it read.
#[inline]
fn hook(raw: &[u8], i: usize, b: u8, skip: &mut usize) -> bool {
    let prev = i.checked_sub(1).map_or(0, |j| at(raw, j));
    let prev2 = i.checked_sub(2).map_or(0, |j| at(raw, j));
    match b {
        b'@' | b'\\' => return true,
        b'%' => {
            return at(raw, i + 1).is_ascii_hexdigit() && at(raw, i + 2).is_ascii_hexdigit();
        }
        b'J' => return prev == b'y' && prev2 == b'e',
        b'b' | b'B' => {
            return raw
                .get(i + 1..i + 6)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"earer"));
        }
        b':' => {
            // An IPv6 candidate: hex digits, colons and dots.
            let mut colons = 0;
            let mut j = i;
            while j < raw.len() {
                let c = at(raw, j);
                if c == b':' {
                    colons += 1;
                    if colons >= 2 {
                        return true;
                    }
                } else if !(c.is_ascii_hexdigit() || c == b'.') {
                    break;
                }
                j += 1;
            }
            // No skip: a number may start right after the colon.
            return false;
        }
        _ => {}
    }
    // A digit. IBAN: a country code and check digits.
    if prev.is_ascii_uppercase() && prev2.is_ascii_uppercase() && at(raw, i + 1).is_ascii_digit() {
        return true;
    }
    let mut j = i;
    let inside = is_word(prev)
        || (matches!(prev, b'-' | b'.') && is_alnum(prev2))
        || (prev == b'/' && i >= 2 && is_product_name(raw, i - 1) && version_at(raw, i));
    if inside {
        // Inside a word: only this group; a later one may start a number.
        while at(raw, j).is_ascii_digit() {
            j += 1;
        }
        *skip = j;
        return false;
    }
    let (mut digits, mut dots) = (0u32, 0u32);
    while j < raw.len() {
        let c = at(raw, j);
        if c.is_ascii_digit() {
            digits += 1;
            if digits >= 7 || (dots >= 3 && digits >= 4) {
                return true;
            }
        } else if class(c) & NUMSEP != 0 {
            dots += u32::from(c == b'.');
        } else {
            break;
        }
        j += 1;
    }
    *skip = j;
    false
}

/// Report every match in `text`, left to right, not overlapping.
pub fn find(text: &[u8], mut report: impl FnMut(Match)) {
    let mut i = 0;
    // Matches may not reach back before the end of the previous one.
    let mut floor = 0;
    while i < text.len() {
        let b = at(text, i);
        let c = class(b);
        let boundary = i == 0 || !is_word(at(text, i - 1));
        let found = if b == b'@' {
            email(text, i, floor).map(Hit::Found)
        } else if !boundary || c & (DIGIT | UPPER | LOWER | NUMSEP | COLON) == 0 {
            None
        } else {
            candidate(text, i, c)
        };
        match found {
            Some(Hit::Found(m)) => {
                report(m);
                floor = m.end;
                i = m.end.max(i + 1);
            }
            Some(Hit::Skip(end)) => i = end.max(i + 1),
            None => i += 1,
        }
    }
}

/// Whether `text` has any match.
pub fn any(text: &[u8]) -> bool {
    let mut found = false;
    find(text, |_| found = true);
    found
}

/// What an attempt at one position found.
enum Hit {
    Found(Match),
    /// Something shaped like a kind that failed its check (a Luhn-failing
    /// card, an IBAN with a bad checksum): nothing inside it is a match either.
    Skip(usize),
}

/// A candidate starting at boundary `i` (not an `@`).
fn candidate(text: &[u8], i: usize, c: u8) -> Option<Hit> {
    let b = at(text, i);
    if c & DIGIT != 0 || ((b == b'+' || b == b'(') && class(at(text, i + 1)) & DIGIT != 0) {
        if let Some(m) = ipv4(text, i).or_else(|| ipv6(text, i)) {
            return Some(Hit::Found(m));
        }
        return number(text, i);
    }
    if c & UPPER != 0
        && let Some(hit) = iban(text, i)
    {
        return Some(hit);
    }
    if (b == b'e' || b == b'b' || b == b'B')
        && let Some(m) = token(text, i)
    {
        return Some(Hit::Found(m));
    }
    if b.is_ascii_hexdigit() || b == b':' {
        return ipv6(text, i).map(Hit::Found);
    }
    None
}

// ---- e-mail ----------------------------------------------------------

fn local_char(b: u8) -> bool {
    is_alnum(b) || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    is_alnum(b) || b == b'-' || b == b'.'
}

/// The length in bytes of the non-ASCII letter, digit or mark (`é`, `ü`, `и`; see [`one_letter`])
/// that ends at `end` in UTF-8, if one does: an address's local part and
/// domain may hold them (RFC 6531), so `josé@example.com` is one address.
fn letter_before(text: &[u8], end: usize) -> Option<usize> {
    (2..=4).find(|&n| {
        end.checked_sub(n)
            .and_then(|s| text.get(s..end))
            .and_then(|b| std::str::from_utf8(b).ok())
            .is_some_and(one_letter)
    })
}

/// The length of the non-ASCII letter, digit or mark that starts at `i`, if one does.
fn letter_at(text: &[u8], i: usize) -> Option<usize> {
    let n = match at(text, i) {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    text.get(i..i + n)
        .and_then(|b| std::str::from_utf8(b).ok())
        .is_some_and(one_letter)
        .then_some(n)
}

/// Whether `c` is one character that can be part of an address's word: a
/// letter or digit, a combining mark (`e` + U+0301 is how macOS writes
/// `é`), or an invisible zero-width character (which would otherwise cut
/// `ana@\u{200b}example.com` in two and hide it).
fn one_letter(c: &str) -> bool {
    let mut chars = c.chars();
    matches!((chars.next(), chars.next()), (Some(ch), None) if ch.is_alphanumeric() || matches!(ch,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'))
}

/// Top-level "domains" that are file names (`logo@2x.png`).
const NOT_TLDS: &[&[u8]] = &[
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"bmp", b"js", b"css", b"html",
    b"htm", b"pdf", b"txt", b"json", b"map",
];

fn email(text: &[u8], at_sign: usize, floor: usize) -> Option<Match> {
    // Back over the whole local part, however long (RFC 5321 allows 64
    // characters, but a longer one must not leave its start in clear).
    // Linear overall: `@` is not a local character, so no byte is walked
    // over for two `@`s.
    let mut s = at_sign;
    while s > floor {
        if local_char(at(text, s - 1)) {
            s -= 1;
        } else if let Some(n) = letter_before(text, s).filter(|n| s - floor >= *n) {
            s -= n;
        } else {
            break;
        }
    }
    // The local part neither starts nor ends with a dot.
    while s < at_sign && at(text, s) == b'.' {
        s += 1;
    }
    if s == at_sign || at(text, at_sign - 1) == b'.' {
        return None;
    }
    if s > 0 && at(text, s - 1) == b'@' {
        return None;
    }
    let mut e = at_sign + 1;
    while e < text.len() && e - at_sign <= 253 {
        if domain_char(at(text, e)) {
            e += 1;
        } else if let Some(n) = letter_at(text, e) {
            e += n;
        } else {
            break;
        }
    }
    // The longest domain that is one: `example.com.a` is `example.com`
    // and a sentence going on.
    loop {
        // A sentence's full stop or a dash after the address is not part of it.
        while e > at_sign + 1 && matches!(at(text, e - 1), b'.' | b'-') {
            e -= 1;
        }
        let domain = text.get(at_sign + 1..e)?;
        if domain_ok(domain) {
            return Some(Match {
                kind: Kind::Email,
                start: s,
                end: e,
            });
        }
        e = at_sign + 1 + domain.iter().rposition(|&b| b == b'.')?;
    }
}

/// At least two labels of 1 to 63 letters, digits and inner dashes, the
/// last two or more letters and not a file extension.
fn domain_ok(domain: &[u8]) -> bool {
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2
        && last.len() >= 2
        && std::str::from_utf8(last).is_ok_and(|t| t.chars().all(char::is_alphabetic))
        && !NOT_TLDS.iter().any(|t| t.eq_ignore_ascii_case(last))
}

// ---- IP addresses -----------------------------------------------------

fn ipv4(text: &[u8], i: usize) -> Option<Match> {
    if i >= 2 && at(text, i - 1) == b'/' && is_product_name(text, i - 1) {
        return None;
    }
    if i >= 1 && matches!(at(text, i - 1), b'.' | b'-' | b'+') {
        return None;
    }
    let mut p = i;
    for part in 0..4 {
        if part > 0 {
            if at(text, p) != b'.' {
                return None;
            }
            p += 1;
        }
        let s = p;
        let mut v = 0u32;
        while p < text.len() && p - s < 3 && at(text, p).is_ascii_digit() {
            v = v * 10 + u32::from(at(text, p) - b'0');
            p += 1;
        }
        let len = p - s;
        if len == 0 || v > 255 || (len > 1 && at(text, s) == b'0') {
            return None;
        }
    }
    let next = at(text, p);
    if is_word(next) || (next == b'.' && at(text, p + 1).is_ascii_digit()) {
        return None;
    }
    Some(Match {
        kind: Kind::Ip,
        start: i,
        end: p,
    })
}

/// Whether a product's version starts at `i`: a dotted one (`120.0`,
/// `5.0`, `1.2.3.4`) or a bare build number too short for a card or phone
/// number (`Gecko/20100101`: fewer than 10 digits, not grouped). Anything
/// else after `word/` is a number (`users/4111111111111111`,
/// `calls/+442079460958`, `calls/020 7946 0958`).
fn version_at(text: &[u8], i: usize) -> bool {
    let mut j = i;
    while at(text, j).is_ascii_digit() {
        j += 1;
    }
    let next_digit = at(text, j + 1).is_ascii_digit();
    match at(text, j) {
        _ if j == i => false,
        b'.' => next_digit,
        b' ' | b'-' | b'(' | b')' if next_digit => false,
        _ => j - i < 10,
    }
}

/// Whether the `/` at `slash` ends a product name, as in a user agent's
/// `Chrome/120.0.0.0` or `MyApp/1.2.3.4 (iPhone)`: what follows is a
/// version, not an address. A product name is a run of letters, digits,
/// `.`, `-` and `_` holding a letter, at the start of the text or after a
/// space or punctuation such as `(`, `;`, `=` or `:`. After a `/` the run is a path
/// segment, so `/from/10.9.8.7` and `https://a.example/10.9.8.7` hold an
/// address; so does any run the scan cannot bound (64 bytes).
fn is_product_name(text: &[u8], slash: usize) -> bool {
    let mut start = slash;
    let mut letter = false;
    while start > 0 && slash - start < 64 {
        let b = at(text, start - 1);
        if !(is_alnum(b) || matches!(b, b'.' | b'-' | b'_')) {
            break;
        }
        letter |= b.is_ascii_alphabetic();
        start -= 1;
    }
    if !letter || slash - start >= 64 {
        return false;
    }
    start == 0
        || matches!(
            at(text, start - 1),
            b' ' | b'\t'
                | b'('
                | b')'
                | b';'
                | b','
                | b'<'
                | b'['
                | b'"'
                | b'\''
                | b'|'
                | b'='
                | b':'
        )
}

fn ipv6(text: &[u8], i: usize) -> Option<Match> {
    // The first group is at most four hex digits, then a colon.
    let head = text.get(i..text.len().min(i + 5))?;
    if !head.contains(&b':') {
        return None;
    }
    let mut e = i;
    let mut colons = 0;
    while e < text.len() && e - i < 45 {
        let b = at(text, e);
        if b == b':' {
            colons += 1;
        } else if !(b.is_ascii_hexdigit() || b == b'.') {
            break;
        }
        e += 1;
    }
    if colons < 2 {
        return None;
    }
    // A trailing `.` or single `:` is punctuation, not part of the address.
    while e > i && at(text, e - 1) == b'.' {
        e -= 1;
    }
    if e >= i + 2 && at(text, e - 1) == b':' && at(text, e - 2) != b':' {
        e -= 1;
    }
    // The longest prefix that is an address, ending before a `.` or `:`
    // (`2001:db8::1.a` is the address and a sentence going on).
    loop {
        let candidate = text.get(i..e)?;
        // `abc::def` (a path in a language) parses, but addresses in the wild
        // carry a digit.
        if candidate.len() < 6 {
            return None;
        }
        if candidate.iter().any(u8::is_ascii_digit)
            && !is_word(at(text, e))
            && std::str::from_utf8(candidate)
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some()
        {
            return Some(Match {
                kind: Kind::Ip,
                start: i,
                end: e,
            });
        }
        let cut = candidate.iter().rposition(|&b| b == b'.' || b == b':')?;
        e = i + cut;
    }
}

// ---- phone and card numbers --------------------------------------------

/// Digit groups of a number run, at most this many.
const MAX_GROUPS: usize = 12;

#[derive(Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
}

fn number(text: &[u8], i: usize) -> Option<Hit> {
    // `SKU-4111...`, `v2-555...`: a continuation of a word; `Chrome/120`:
    // a version. After a path segment (`/p/4111...`) it is a number.
    if i >= 2 && matches!(at(text, i - 1), b'-' | b'.') && is_alnum(at(text, i - 2)) {
        return None;
    }
    if i >= 2 && at(text, i - 1) == b'/' && is_product_name(text, i - 1) && version_at(text, i) {
        return None;
    }
    let plus = at(text, i) == b'+';
    let paren = at(text, i) == b'(';
    let mut groups = [Group::default(); MAX_GROUPS];
    let mut n = 0;
    let mut p = if plus || paren { i + 1 } else { i };
    // Collect groups of digits separated by at most two separator bytes.
    loop {
        let s = p;
        while p < text.len() && at(text, p).is_ascii_digit() {
            p += 1;
        }
        if p == s {
            break;
        }
        if let Some(g) = groups.get_mut(n) {
            *g = Group { start: s, end: p };
            n += 1;
        } else {
            break;
        }
        let mut q = p;
        while q < text.len() && q - p < 2 && matches!(at(text, q), b' ' | b'-' | b'.' | b'(' | b')')
        {
            q += 1;
        }
        if q == p || !at(text, q).is_ascii_digit() {
            break;
        }
        p = q;
    }
    let groups = groups.get(..n)?;
    let total: usize = groups.iter().map(|g| g.end - g.start).sum();
    if total < 8 {
        return None;
    }
    // A card-shaped run that fails its checks is one number (an order or
    // tracking number), not a phone number hiding in its groups.
    if !plus && !paren && card_shaped(text, groups) && !is_card(text, groups) {
        return Some(Hit::Skip(groups.last()?.end));
    }
    // So is a longer run in groups of four (`9400 1672 5002 0278 3297 41`,
    // a parcel's tracking number): no card or phone number in its middle.
    let fours = groups.len() >= 4
        && groups.iter().rev().skip(1).all(|g| g.end - g.start == 4)
        && same_seps(text, groups, &[b" ", b"-"]);
    if !plus && !paren && total > 19 && fours {
        return Some(Hit::Skip(groups.last()?.end));
    }
    // Longest window first, from each starting group.
    for first in 0..groups.len() {
        let lead = first == 0 && (plus || paren);
        for last in (first..groups.len()).rev() {
            let win = groups.get(first..=last)?;
            let start = if lead { i } else { win.first()?.start };
            let end = win.last()?.end;
            if is_word(at(text, end)) || at(text, end) == b'@' {
                continue;
            }
            if first > 0 && at(text, start - 1) == b'.' {
                continue;
            }
            let kind = if !lead && is_card(text, win) {
                Some(Kind::Card)
            } else if is_phone(text, win, first == 0 && plus, first == 0 && paren) {
                Some(Kind::Phone)
            } else {
                None
            };
            if let Some(kind) = kind {
                return Some(Hit::Found(Match { kind, start, end }));
            }
        }
    }
    None
}

fn digits_of(text: &[u8], win: &[Group], buf: &mut [u8; 24]) -> usize {
    let mut n = 0;
    for g in win {
        for &d in text.get(g.start..g.end).unwrap_or_default() {
            if let Some(slot) = buf.get_mut(n) {
                *slot = d - b'0';
                n += 1;
            }
        }
    }
    n
}

/// The bytes between groups `a` and `b`.
fn sep<'t>(text: &'t [u8], a: &Group, b: &Group) -> &'t [u8] {
    text.get(a.end..b.start).unwrap_or_default()
}

fn same_seps(text: &[u8], win: &[Group], allowed: &[&[u8]]) -> bool {
    let mut first: Option<&[u8]> = None;
    for pair in win.windows(2) {
        let (Some(a), Some(b)) = (pair.first(), pair.get(1)) else {
            return false;
        };
        let s = sep(text, a, b);
        if !allowed.contains(&s) {
            return false;
        }
        match first {
            None => first = Some(s),
            Some(f) if f != s => return false,
            Some(_) => {}
        }
    }
    true
}

fn card_shaped(text: &[u8], win: &[Group]) -> bool {
    let n: usize = win.iter().map(|g| g.end - g.start).sum();
    if !(13..=19).contains(&n) {
        return false;
    }
    let lens = group_lens(win);
    let grouped = match lens.as_slice() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [4, 4, 4, rest @ ..] => {
            // 4-4-4-4, then an optional last group of 1 to 3 (19 digits).
            matches!(rest, [1..=4] | [4, 1..=3])
        }
        _ => false,
    };
    grouped && same_seps(text, win, &[b" ", b"-"])
}

fn is_card(text: &[u8], win: &[Group]) -> bool {
    if !card_shaped(text, win) {
        return false;
    }
    let mut buf = [0u8; 24];
    let n = digits_of(text, win, &mut buf);
    let digits = buf.get(..n).unwrap_or_default();
    issuer(digits) && luhn(digits)
}

/// Known issuer prefixes and lengths (Visa, Mastercard, Amex, Discover,
/// Diners, JCB, UnionPay, Maestro).
fn issuer(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| {
        d.iter()
            .take(k)
            .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
    };
    match at(d, 0) {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&p(2)) && n == 16 || matches!(p(2), 50 | 56..=59) && n >= 12,
        2 => (2221..=2720).contains(&p(4)) && n == 16,
        3 => {
            (matches!(p(2), 34 | 37) && n == 15)
                || ((matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3))) && n == 14)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
        }
        6 => {
            (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62)
                && (16..=19).contains(&n)
                || (p(2) >= 60 && n >= 12)
        }
        _ => false,
    }
}

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &x) in d.iter().rev().enumerate() {
        let mut v = u32::from(x);
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Group lengths, at most [`MAX_GROUPS`].
#[derive(Clone, Copy)]
struct SmallLens {
    lens: [usize; MAX_GROUPS],
    n: usize,
}

impl SmallLens {
    fn as_slice(&self) -> &[usize] {
        self.lens.get(..self.n).unwrap_or_default()
    }
}

fn group_lens(win: &[Group]) -> SmallLens {
    let mut lens = [0usize; MAX_GROUPS];
    let mut n = 0;
    for (slot, g) in lens.iter_mut().zip(win) {
        *slot = g.end - g.start;
        n += 1;
    }
    SmallLens { lens, n }
}

fn is_phone(text: &[u8], win: &[Group], plus: bool, paren: bool) -> bool {
    let mut buf = [0u8; 24];
    let n = digits_of(text, win, &mut buf);
    let digits = buf.get(..n).unwrap_or_default();
    let lens = group_lens(win);
    let lens = lens.as_slice();
    let phone_seps: &[&[u8]] = &[
        b" ", b"-", b".", b") ", b")", b" (", b"(", b"-(", b")-", b"- ", b" -",
    ];
    let seps_ok = win
        .windows(2)
        .all(|pair| match (pair.first(), pair.get(1)) {
            (Some(a), Some(b)) => phone_seps.contains(&sep(text, a, b)),
            _ => false,
        });
    if !seps_ok {
        return false;
    }
    // Parentheses must pair up: `(555) 123`, `+44 (0)20`.
    let opens = win
        .windows(2)
        .filter(|p| match (p.first(), p.get(1)) {
            (Some(a), Some(b)) => sep(text, a, b).contains(&b'('),
            _ => false,
        })
        .count()
        + usize::from(paren);
    let closes = win
        .windows(2)
        .filter(|p| match (p.first(), p.get(1)) {
            (Some(a), Some(b)) => sep(text, a, b).contains(&b')'),
            _ => false,
        })
        .count();
    if opens != closes {
        return false;
    }
    if plus {
        return (8..=15).contains(&n) && at(digits, 0) != 0 && lens.iter().all(|&l| l <= 12);
    }
    // `00` and a country code: the international prefix written out.
    if at(digits, 0) == 0
        && at(digits, 1) == 0
        && at(digits, 2) != 0
        && (10..=17).contains(&n)
        && lens.len() >= 2
        && lens.first().is_some_and(|&l| (2..=5).contains(&l))
    {
        return true;
    }
    // North American: [1] NXX NXX XXXX.
    let nanp = match lens {
        [3, 3, 4] => Some(0),
        [1, 3, 3, 4] if at(digits, 0) == 1 => Some(1),
        _ => None,
    };
    if let Some(off) = nanp {
        let dots_only = win.windows(2).all(|p| match (p.first(), p.get(1)) {
            (Some(a), Some(b)) => sep(text, a, b) == b".",
            _ => false,
        });
        let consistent = dots_only
            || !win.windows(2).any(|p| match (p.first(), p.get(1)) {
                (Some(a), Some(b)) => sep(text, a, b) == b".",
                _ => false,
            });
        // The area code starts with 2-9 (exchanges like `123` are common in
        // made-up and test numbers, and still phone numbers).
        return consistent && at(digits, off) >= 2;
    }
    // Trunk-prefix national numbers: 0, a non-zero digit, 10 or 11 digits.
    (10..=11).contains(&n)
        && at(digits, 0) == 0
        && at(digits, 1) != 0
        && lens.iter().all(|&l| l >= 2)
        && (lens.len() == 1 || same_seps(text, win, &[b" ", b"-", b"."]) || paren)
}

// ---- IBAN ---------------------------------------------------------------

/// ISO 13616 registry: country code and IBAN length.
const IBAN_LENGTHS: &[(&[u8; 2], u8)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

fn iban(text: &[u8], i: usize) -> Option<Hit> {
    let cc = text.get(i..i + 2)?;
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == cc)
        .map(|&(_, l)| usize::from(l))?;
    if !(at(text, i + 2).is_ascii_digit() && at(text, i + 3).is_ascii_digit()) {
        return None;
    }
    // Ungrouped, or in groups of four separated by single spaces.
    let grouped = at(text, i + 4) == b' ';
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut p = i;
    let mut spaced = false;
    while n < len {
        let b = at(text, p);
        if grouped && n > 0 && n % 4 == 0 && !spaced {
            if b != b' ' {
                break;
            }
            p += 1;
            spaced = true;
            continue;
        }
        spaced = false;
        if !(b.is_ascii_digit() || b.is_ascii_uppercase()) {
            break;
        }
        *chars.get_mut(n)? = b;
        n += 1;
        p += 1;
    }
    if n != len || is_word(at(text, p)) {
        return None;
    }
    if !mod97(chars.get(..n)?) {
        return Some(Hit::Skip(p));
    }
    Some(Hit::Found(Match {
        kind: Kind::Iban,
        start: i,
        end: p,
    }))
}

/// ISO 7064 MOD 97-10 over the IBAN rearranged (first four characters moved
/// to the end, letters as 10..35).
fn mod97(iban: &[u8]) -> bool {
    let (head, tail) = iban.split_at(4.min(iban.len()));
    let mut r = 0u32;
    for &b in tail.iter().chain(head) {
        if b.is_ascii_digit() {
            r = (r * 10 + u32::from(b - b'0')) % 97;
        } else {
            r = (r * 100 + u32::from(b - b'A') + 10) % 97;
        }
    }
    r == 1
}

// ---- bearer tokens and JWTs -------------------------------------------------

fn b64url(b: u8) -> bool {
    is_alnum(b) || b == b'-' || b == b'_'
}

fn token(text: &[u8], i: usize) -> Option<Match> {
    if text.get(i..i + 3) == Some(b"eyJ") {
        let mut p = i;
        let mut lens = [0usize; 3];
        for (part, len) in lens.iter_mut().enumerate() {
            if part > 0 {
                if at(text, p) != b'.' {
                    return None;
                }
                p += 1;
            }
            let s = p;
            while p < text.len() && b64url(at(text, p)) {
                p += 1;
            }
            *len = p - s;
        }
        let [h, pl, _] = lens;
        if h >= 10 && pl >= 10 && !is_word(at(text, p)) {
            return Some(Match {
                kind: Kind::Token,
                start: i,
                end: p,
            });
        }
        return None;
    }
    // In any case, as the prefilter looks for it.
    if !text.get(i..i + 6)?.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let mut p = i + 6;
    let s = p;
    while at(text, p) == b' ' {
        p += 1;
    }
    if p == s {
        return None;
    }
    let t = p;
    while p < text.len()
        && (is_alnum(at(text, p)) || matches!(at(text, p), b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
    {
        p += 1;
    }
    while at(text, p) == b'=' {
        p += 1;
    }
    (p - t >= 16).then_some(Match {
        kind: Kind::Token,
        start: i,
        end: p,
    })
}

/// `text` with every match replaced by its kind's redaction, appended to `out`.
pub fn redact_into(text: &str, out: &mut String, mut keep: impl FnMut(Kind) -> bool) {
    let mut last = 0;
    find(text.as_bytes(), |m| {
        if keep(m.kind) {
            return;
        }
        out.push_str(text.get(last..m.start).unwrap_or_default());
        out.push_str(m.kind.redaction());
        last = m.end;
    });
    out.push_str(text.get(last..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests;
