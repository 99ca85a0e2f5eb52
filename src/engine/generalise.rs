//! Generalisation and redaction of single scalar values. Each function
//! returns `None` when the value cannot be read as the action needs; the
//! caller then removes the value (fail closed) and counts it as `invalid`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use regex::{NoExpand, Regex};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::policy::glob::Globs as GlobSet;
use crate::policy::{Buckets, TimeUnit};

/// The network address of `text`'s prefix, without a prefix length
/// (`203.0.113.0`, `2001:db8:85a3::`). An IPv6 address that carries an IPv4
/// address (see [`v6_prefix_len`]) keeps no more of it than `v4` allows.
pub fn ip_prefix(text: &str, v4: u8, v6: u8) -> Option<String> {
    let mut out = Vec::new();
    ip_prefix_into(text, v4, v6, &mut out).then(|| String::from_utf8(out).ok())?
}

/// [`ip_prefix`], appended to `out`: ASCII digits, hex, `.` and `:` only, so
/// it needs no JSON escaping. Returns whether `text` is an address (and
/// appends nothing when it is not).
pub fn ip_prefix_into(text: &str, v4: u8, v6: u8, out: &mut Vec<u8>) -> bool {
    use std::io::Write;
    let masked = match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => IpAddr::V4(mask_v4(a, v4)),
        Ok(IpAddr::V6(a)) => IpAddr::V6(mask_v6(a, v6_prefix_len(a, v4, v6))),
        Err(_) => return false,
    };
    // Writing into a Vec cannot fail.
    write!(out, "{masked}").is_ok()
}

/// How many leading bits of an IPv6 address to keep: `v6`, except where the
/// address embeds an IPv4 address, whose bits must be cut at `v4`:
/// - IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96`,
///   IPv4-compatible `::/96` and NAT64 `64:ff9b::/96` carry it in the last 32 bits: they are IPv4 clients and
///   use `96 + v4` (as an IPv4 address would use `v4`);
/// - ISATAP interface ids (`…:0:5efe:a.b.c.d`, `…:200:5efe:a.b.c.d`, and
///   with the group bit, `100:5efe`, `300:5efe`): last 32 bits;
/// - 6to4 `2002::/16` carries it in bits 16..48;
/// - Teredo `2001::/32` carries the server's in bits 32..64 and the client's
///   (obfuscated) in the last 32 bits;
/// - local-use NAT64 `64:ff9b:1::/48` spreads it after bit 48.
fn v6_prefix_len(a: Ipv6Addr, v4: u8, v6: u8) -> u8 {
    let v4 = v4.min(32);
    let bits = u128::from(a);
    let high96 = bits >> 32;
    let [s0, s1, s2, _, s4, s5, _, _] = a.segments();
    // Mapped (`::ffff:0:0/96`), translated (SIIT, `::ffff:0:0:0/96`),
    // compatible (`::/96`) and NAT64 (`64:ff9b::/96`).
    if matches!(
        high96,
        0xffff | 0xffff_0000 | 0 | 0x0064_ff9b_0000_0000_0000_0000
    ) {
        96 + v4
    } else if s0 == 0x0064 && s1 == 0xff9b && s2 == 0x0001 {
        v6.min(48)
    } else if s0 == 0x2002 {
        v6.min(16 + v4)
    } else if s0 == 0x2001 && s1 == 0 {
        v6.min(32 + v4)
    } else if s4 & !0x0300 == 0 && s5 == 0x5efe {
        // ISATAP (RFC 5214): `0000:5efe` or `0200:5efe`, also with the
        // group bit (`0100`, `0300`) set.
        v6.min(96 + v4)
    } else {
        v6
    }
}

fn mask_v4(a: Ipv4Addr, bits: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    Ipv4Addr::from(u32::from(a) & mask)
}

fn mask_v6(a: Ipv6Addr, bits: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
    Ipv6Addr::from(u128::from(a) & mask)
}

/// Append the query parameters whose (decoded) names match `keep` to `out`,
/// in their original encoding and order, the first after `?` and the
/// others after `&`; nothing when none is kept. Both `&` and `;` separate
/// parameters (`?utm_source=x;email=a@b.c` has two), so a parameter can
/// never hide behind the other separator.
fn filter_query_into(query: &str, keep: &GlobSet, out: &mut String) {
    let mark = out.len();
    let bytes = query.as_bytes();
    let mut start = 0;
    // One pass: `&`, `;` and `=` are ASCII, so every cut is at a character
    // boundary (`get` cannot fail, and would only skip the pair).
    while start <= bytes.len() {
        let rest = bytes.get(start..).unwrap_or_default();
        let end = start + memchr::memchr2(b'&', b';', rest).unwrap_or(rest.len());
        let pair = query.get(start..end).unwrap_or_default();
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let pb = pair.as_bytes();
        let name_end = memchr::memchr(b'=', pb).unwrap_or(pb.len());
        let raw_name = pair.get(..name_end).unwrap_or_default();
        let name = if raw_name.bytes().any(|b| b == b'%' || b == b'+') {
            url::form_urlencoded::parse(pb)
                .next()
                .map(|(n, _)| n)
                .unwrap_or_default()
        } else {
            Cow::Borrowed(raw_name)
        };
        // A name is not data: one that holds what the content detector
        // finds (`utm_ana@example.com`) is removed, whatever `scan` says.
        if keep.is_match(name.as_ref()) && !holds_a_detection(name.as_bytes()) {
            out.push(if out.len() == mark { '?' } else { '&' });
            out.push_str(pair);
        }
    }
}

fn holds_a_detection(text: &[u8]) -> bool {
    crate::detect::may_match(text) && crate::detect::any(text)
}

/// Strip the fragment, userinfo and every query parameter not allowlisted.
///
/// Accepted: absolute `http`/`https` URLs with a host, and path-absolute
/// references (`/shoes?x=1`). Anything else is not a URL this action can
/// vouch for (an e-mail address, a name, `?q=1`, `mailto:`, `//host`, `ftp:`)
/// and is removed: a free-text field must never pass as a "URL".
pub fn url(text: &str, keep: &GlobSet) -> Option<String> {
    let mut out = String::new();
    url_into(text, keep, &mut out).then_some(out)
}

/// [`url`], written into `out` (cleared first; reused across calls so the
/// hot path allocates nothing). Returns whether `text` was accepted.
pub fn url_into(text: &str, keep: &GlobSet, out: &mut String) -> bool {
    out.clear();
    if text.starts_with('/') && !text.starts_with("//") {
        // Only URL characters (RFC 3986, plus `%`-escapes): free text that
        // happens to start with `/` is not a path.
        let Some((path, query)) = split_checked(text, &URI_CHAR, true) else {
            return false;
        };
        out.push_str(path);
        if let Some(q) = query {
            filter_query_into(q, keep, out);
        }
        return true;
    }
    if url_fast_into(text, keep, out) {
        return true;
    }
    out.clear();
    match url_parsed(text, keep) {
        Some(parsed) => {
            out.push_str(&parsed);
            true
        }
        None => false,
    }
}

/// A set of bytes, as a table: one lookup per byte on the hot path.
struct ByteClass([bool; 256]);

impl ByteClass {
    /// Alphanumerics plus `extra`.
    // Indexing runs at compile time only (every use is a `const`): an out of
    // range index would fail the build, never an event.
    #[allow(clippy::indexing_slicing)]
    const fn alphanumeric_and(extra: &[u8]) -> Self {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            t[extra[i] as usize] = true;
            i += 1;
        }
        Self(t)
    }

    fn has(&self, b: u8) -> bool {
        self.0.get(usize::from(b)).copied().unwrap_or(false)
    }
}

/// RFC 3986 characters, plus `%`: what a path-absolute reference may hold.
const URI_CHAR: ByteClass = ByteClass::alphanumeric_and(b"-._~!$&'()*+,;=:@/?#%[]");
/// What the fast path lets through after the host: characters the WHATWG
/// parser keeps as they are in a path, query and fragment.
const FAST_TAIL_CHAR: ByteClass = ByteClass::alphanumeric_and(b"-._~!$&()*+,;=:@/%?#");

/// Whether `host` is a plain lowercase domain the WHATWG parser leaves as
/// it is: `[a-z0-9.-]`, not starting with `.` or `-`, no empty label inside,
/// no punycode (`xn--`), and a last label that starts with a letter (so not
/// an IPv4 address in any of its spellings).
fn plain_host(host: &[u8]) -> bool {
    if matches!(host.first(), None | Some(b'.' | b'-')) {
        return false;
    }
    // One pass: the bytes, no `..`, no `xn--` anywhere, and the first byte
    // of the last non-empty label.
    let (mut prev, mut last_label_first) = (b'.', 0u8);
    for (i, &b) in host.iter().enumerate() {
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            || (b == b'.' && prev == b'.')
            || (b == b'-' && i >= 3 && host.get(i - 3..=i) == Some(b"xn--"))
        {
            return false;
        }
        if prev == b'.' && b != b'.' {
            last_label_first = b;
        }
        prev = b;
    }
    last_label_first.is_ascii_lowercase()
}

/// One pass over a path-absolute reference, or what follows the host of a
/// fast-path URL: whether every byte is in `class` (and, unless
/// `dot_segments`, no `/.` appears), and the path and query (between the
/// first `?` and the first `#`) of the part before the fragment.
fn split_checked<'t>(
    tail: &'t str,
    class: &ByteClass,
    dot_segments: bool,
) -> Option<(&'t str, Option<&'t str>)> {
    let bytes = tail.as_bytes();
    let (mut question, mut hash, mut prev) = (None, None, 0u8);
    for (i, &b) in bytes.iter().enumerate() {
        if !class.has(b) || (!dot_segments && prev == b'/' && b == b'.') {
            return None;
        }
        if hash.is_none() {
            if b == b'#' {
                hash = Some(i);
            } else if b == b'?' && question.is_none() {
                question = Some(i);
            }
        }
        prev = b;
    }
    let end = hash.unwrap_or(bytes.len());
    Some(match question {
        Some(q) => (tail.get(..q)?, Some(tail.get(q + 1..end)?)),
        None => (tail.get(..end)?, None),
    })
}

/// The common case without a full WHATWG parse: `http(s)://` + a plain
/// lowercase domain + an absolute path made of characters the parser keeps
/// as they are. Anything else returns `false` (and leaves `out` to be
/// cleared) and takes the full parser; a test checks both agree wherever
/// this answers.
fn url_fast_into(text: &str, keep: &GlobSet, out: &mut String) -> bool {
    let (scheme, rest) = if let Some(r) = text.strip_prefix("https://") {
        ("https://", r)
    } else if let Some(r) = text.strip_prefix("http://") {
        ("http://", r)
    } else {
        return false;
    };
    let Some((host, tail)) =
        memchr::memchr(b'/', rest.as_bytes()).and_then(|at| rest.split_at_checked(at))
    else {
        return false;
    };
    if !plain_host(host.as_bytes()) {
        return false;
    }
    let Some((path, query)) = split_checked(tail, &FAST_TAIL_CHAR, false) else {
        return false;
    };
    out.push_str(scheme);
    out.push_str(host);
    out.push_str(path);
    if let Some(q) = query {
        filter_query_into(q, keep, out);
    }
    true
}

fn url_parsed(text: &str, keep: &GlobSet) -> Option<String> {
    let mut u = Url::parse(text).ok()?;
    if !matches!(u.scheme(), "http" | "https") || !u.has_host() {
        return None;
    }
    u.set_fragment(None);
    u.set_username("").ok()?;
    u.set_password(None).ok()?;
    let query = u.query().map(|q| {
        let mut kept = String::new();
        filter_query_into(q, keep, &mut kept);
        kept
    });
    // `kept` starts with the `?` that `set_query` adds itself.
    u.set_query(query.as_deref().and_then(|q| q.strip_prefix('?')));
    Some(u.into())
}

/// Truncate an RFC 3339 timestamp to `unit`, in UTC, written as RFC 3339 with `Z`.
pub fn truncate_time(text: &str, unit: TimeUnit) -> Option<String> {
    let mut out = Vec::new();
    truncate_time_into(text, unit, &mut out).then(|| String::from_utf8(out).ok())?
}

/// [`truncate_time`], appended to `out`: digits, `-`, `:`, `T` and `Z` only,
/// so it needs no JSON escaping. Returns whether `text` is a timestamp (and
/// appends nothing when it is not).
pub fn truncate_time_into(text: &str, unit: TimeUnit, out: &mut Vec<u8>) -> bool {
    if utc_fast(text.as_bytes(), unit, out) {
        return true;
    }
    let start = out.len();
    let written = truncated(text, unit).is_some_and(|t| t.format_into(out, &Rfc3339).is_ok());
    if !written {
        out.truncate(start);
    }
    written
}

/// The common case without the general parser: a valid UTC timestamp
/// `YYYY-MM-DDTHH:MM:SS[.1-9 digits]Z` is truncated by copying its prefix
/// and writing zeros. Appends and returns `true` only for that shape with
/// every field in range (leap seconds, offsets, lowercase `t`/`z` and
/// anything else are left to [`truncated`], which agrees on this shape:
/// tested below).
fn utc_fast(t: &[u8], unit: TimeUnit, out: &mut Vec<u8>) -> bool {
    let Some(head) = t.first_chunk::<19>() else {
        return false;
    };
    let digit = |i: usize| {
        head.get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u32::from(b - b'0'))
    };
    let num = |i: usize, j: usize| Some(digit(i)? * 10 + digit(j)?);
    let fields = || {
        let year = num(0, 1)? * 100 + num(2, 3)?;
        let (month, day) = (num(5, 6)?, num(8, 9)?);
        let (hour, minute, second) = (num(11, 12)?, num(14, 15)?, num(17, 18)?);
        let punct = head[4] == b'-'
            && head[7] == b'-'
            && head[10] == b'T'
            && head[13] == b':'
            && head[16] == b':';
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (punct
            && (1..=12).contains(&month)
            && (1..=days).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60)
            .then_some(())
    };
    let tail = t.get(19..).unwrap_or_default();
    let zone = match tail {
        [b'Z'] => true,
        [b'.', frac @ .., b'Z'] => {
            (1..=9).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    if !zone || fields().is_none() {
        return false;
    }
    let (keep, zeros): (usize, &[u8]) = match unit {
        TimeUnit::Second => (19, b"Z"),
        TimeUnit::Minute => (17, b"00Z"),
        TimeUnit::Hour => (14, b"00:00Z"),
        TimeUnit::Day => (11, b"00:00:00Z"),
    };
    out.extend_from_slice(head.get(..keep).unwrap_or_default());
    out.extend_from_slice(zeros);
    true
}

fn truncated(text: &str, unit: TimeUnit) -> Option<OffsetDateTime> {
    // `checked_`: a valid local time can lie outside the representable UTC
    // range (`9999-12-31T23:59:59-01:00` is year 10000): invalid, not a panic.
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .ok()?
        .checked_to_offset(time::UtcOffset::UTC)?;
    let t = t.replace_nanosecond(0).ok()?;
    let t = match unit {
        TimeUnit::Second => t,
        TimeUnit::Minute => t.replace_second(0).ok()?,
        TimeUnit::Hour => t.replace_second(0).ok()?.replace_minute(0).ok()?,
        TimeUnit::Day => t
            .replace_second(0)
            .ok()?
            .replace_minute(0)
            .ok()?
            .replace_hour(0)
            .ok()?,
    };
    Some(t)
}

/// The bucket of `value`: the largest edge not above it, or
/// `floor(value / width) * width`. `None` below the first edge.
pub fn bucket(value: f64, buckets: &Buckets) -> Option<f64> {
    if !value.is_finite() {
        return None;
    }
    match buckets {
        Buckets::Edges(edges) => {
            let i = edges.partition_point(|e| *e <= value);
            i.checked_sub(1).and_then(|i| edges.get(i)).copied()
        }
        Buckets::Width(w) => {
            let b = (value / w).floor() * w;
            b.is_finite().then_some(b)
        }
    }
}

/// Write a finite number as JSON: integers without a fraction.
pub fn write_number(value: f64, out: &mut Vec<u8>) {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        out.extend_from_slice((value as i64).to_string().as_bytes());
    } else {
        out.extend_from_slice(value.to_string().as_bytes());
    }
}

/// Replace every match of every pattern, in order.
pub fn redact<'t>(text: &'t str, patterns: &[Regex], replacement: &str) -> Cow<'t, str> {
    let mut current = Cow::Borrowed(text);
    for p in patterns {
        if let Cow::Owned(s) = p.replace_all(&current, NoExpand(replacement)) {
            current = Cow::Owned(s);
        }
    }
    current
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
    fn keep(globs: &[&str]) -> GlobSet {
        GlobSet::new(globs)
    }

    fn url_fast(text: &str, keep: &GlobSet) -> Option<String> {
        let mut out = String::new();
        url_fast_into(text, keep, &mut out).then_some(out)
    }

    #[test]
    fn ip_prefixes() {
        assert_eq!(ip_prefix("203.0.113.77", 24, 48).unwrap(), "203.0.113.0");
        assert_eq!(ip_prefix("203.0.113.77", 16, 48).unwrap(), "203.0.0.0");
        assert_eq!(ip_prefix("203.0.113.77", 0, 48).unwrap(), "0.0.0.0");
        assert_eq!(ip_prefix("203.0.113.77", 32, 48).unwrap(), "203.0.113.77");
        assert_eq!(
            ip_prefix("2001:db8:85a3:8d3:1319:8a2e:370:7348", 24, 48).unwrap(),
            "2001:db8:85a3::"
        );
        assert_eq!(
            ip_prefix("::ffff:192.0.2.128", 24, 48).unwrap(),
            "::ffff:192.0.2.0"
        );
        assert_eq!(ip_prefix("not an ip", 24, 48), None);
        // Embedded IPv4 addresses are cut at the v4 length, however long v6 is.
        assert_eq!(
            ip_prefix("2002:1094:9666::1", 24, 48).unwrap(),
            "2002:1094:9600::"
        );
        assert_eq!(
            ip_prefix("2002:1094:9666::1", 24, 128).unwrap(),
            "2002:1094:9600::"
        );
        assert_eq!(
            ip_prefix("64:ff9b::cb00:714d", 24, 128).unwrap(),
            "64:ff9b::cb00:7100"
        );
        assert_eq!(ip_prefix("::cb00:714d", 24, 48).unwrap(), "::cb00:7100");
        assert_eq!(
            ip_prefix("64:ff9b:1:cb00:71:4d00::", 24, 128).unwrap(),
            "64:ff9b:1::"
        );
        assert_eq!(
            ip_prefix("2001:0:4136:e378:8000:63bf:3fff:fdd2", 24, 128).unwrap(),
            "2001:0:4136:e300::"
        );
        assert_eq!(
            ip_prefix("2001:db8:1:2:0:5efe:cb00:714d", 24, 128).unwrap(),
            "2001:db8:1:2:0:5efe:cb00:7100"
        );
        // ISATAP with the universal/local and group bits in any state, and
        // the IPv4-translated form: v4 = 8 leaves one byte of 203.0.113.77.
        for (addr, want) in [
            ("fe80::5efe:203.0.113.77", "fe80::5efe:cb00:0"),
            ("fe80::100:5efe:203.0.113.77", "fe80::100:5efe:cb00:0"),
            ("fe80::200:5efe:203.0.113.77", "fe80::200:5efe:cb00:0"),
            ("fe80::300:5efe:203.0.113.77", "fe80::300:5efe:cb00:0"),
            ("::ffff:0:203.0.113.77", "::ffff:0:cb00:0"),
        ] {
            assert_eq!(ip_prefix(addr, 8, 120).unwrap(), want, "{addr}");
        }
        // Other bits in that segment are not ISATAP: plain v6.
        assert_eq!(
            ip_prefix("fe80::400:5efe:cb00:714d", 8, 120).unwrap(),
            "fe80::400:5efe:cb00:7100"
        );
        assert_eq!(ip_prefix("fe80::1%eth0", 24, 48), None);
    }

    #[test]
    fn urls_lose_fragment_userinfo_and_unlisted_parameters() {
        let k = keep(&["utm_*"]);
        assert_eq!(
            url("https://ana:pw@shop.example.com/a?utm_source=x&email=ana%40x.com&utm_medium=y#frag", &k).unwrap(),
            "https://shop.example.com/a?utm_source=x&utm_medium=y"
        );
        assert_eq!(
            url("https://shop.example.com/a?email=x", &k).unwrap(),
            "https://shop.example.com/a"
        );
        assert_eq!(
            url("/cart?utm_source=a&q=secret#x", &k).unwrap(),
            "/cart?utm_source=a"
        );
        assert_eq!(url("mailto:ana@example.com", &k), None);
        // Names are matched decoded: utm%5Fsource is utm_source.
        assert_eq!(
            url("https://a.example/?utm%5Fsource=1", &k).unwrap(),
            "https://a.example/?utm%5Fsource=1"
        );
    }

    /// The query filter as first written: split, then split again.
    fn filter_query_by_splitting(query: &str, keep: &GlobSet) -> String {
        let mut out = String::new();
        for pair in query.split(['&', ';']).filter(|p| !p.is_empty()) {
            let raw_name = pair.split('=').next().unwrap_or_default();
            let name = if raw_name.contains(['%', '+']) {
                url::form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(n, _)| n.into_owned())
                    .unwrap_or_default()
            } else {
                raw_name.to_owned()
            };
            if keep.is_match(&name) {
                out.push(if out.is_empty() { '?' } else { '&' });
                out.push_str(pair);
            }
        }
        out
    }

    proptest::proptest! {
        /// The one-pass query filter keeps what splitting keeps, in order.
        #[test]
        fn query_filter_agrees_with_splitting(
            query in "([a-zé_%+=&;]|%5F|utm_){0,24}",
            globs in proptest::sample::subsequence(vec!["utm_*", "a", "q?", "é*"], 0..4),
        ) {
            let k = keep(&globs);
            let mut got = String::new();
            filter_query_into(&query, &k, &mut got);
            proptest::prop_assert_eq!(got, filter_query_by_splitting(&query, &k), "{}", query);
        }

        /// Wherever the fast path answers, the full WHATWG parse agrees.
        #[test]
        fn fast_url_path_agrees_with_the_parser(
            scheme in "https?://",
            host in proptest::prop_oneof!["[a-z0-9.-]{1,12}", "([a-z0-9-]{0,3}(xn--)?[a-z0-9-]{0,3}[.]?){1,3}"],
            tail in "(/[a-zA-Z0-9._~%+=&;?#:@-]{0,10}){1,3}",
            globs in proptest::sample::subsequence(vec!["utm_*", "a", "q?"], 0..3),
        ) {
            let text = format!("{scheme}{host}{tail}");
            let k = keep(&globs);
            if let Some(fast) = url_fast(&text, &k) {
                proptest::prop_assert_eq!(Some(fast), url_parsed(&text, &k), "{}", text);
            }
        }
    }

    #[test]
    fn fast_url_path_handles_the_common_case() {
        let k = keep(&["utm_*"]);
        let u = "https://shop.example.com/shoes?utm_source=x&email=a%40b.c#f";
        assert_eq!(
            url_fast(u, &k).as_deref(),
            Some("https://shop.example.com/shoes?utm_source=x")
        );
        assert_eq!(url_fast("https://EXAMPLE.com/", &k), None);
        assert_eq!(url_fast("https://a.example:443/", &k), None);
        assert_eq!(url_fast("https://127.1/", &k), None);
        assert_eq!(url_fast("https://a.example/x/../y", &k), None);
    }

    #[test]
    fn times_truncate_in_utc() {
        let t = "2026-11-05T23:47:12.345+02:00";
        assert_eq!(
            truncate_time(t, TimeUnit::Second).unwrap(),
            "2026-11-05T21:47:12Z"
        );
        assert_eq!(
            truncate_time(t, TimeUnit::Minute).unwrap(),
            "2026-11-05T21:47:00Z"
        );
        assert_eq!(
            truncate_time(t, TimeUnit::Hour).unwrap(),
            "2026-11-05T21:00:00Z"
        );
        assert_eq!(
            truncate_time(t, TimeUnit::Day).unwrap(),
            "2026-11-05T00:00:00Z"
        );
        assert_eq!(truncate_time("yesterday", TimeUnit::Day), None);
    }

    /// The general path alone: the `time` crate's parser and formatter.
    fn general(text: &str, unit: TimeUnit) -> Option<String> {
        let t = truncated(text, unit)?;
        t.format(&Rfc3339).ok()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// The UTC fast path agrees with the general parser on its own
        /// shape, with every field drawn past its range (month 00 and 13,
        /// day 29 to 31 of every month, hour 24, second 60, leap years),
        /// and writes nothing where the general path is to decide.
        #[test]
        fn utc_fast_agrees_with_the_general_parser(
            year in proptest::prop_oneof![0u32..10_000, proptest::sample::select(vec![0u32, 4, 1900, 2000, 2024, 2100, 2400, 9999])],
            month in 0u32..14, day in 0u32..33, hour in 0u32..26, minute in 0u32..62, second in 0u32..62,
            frac in proptest::option::of("[0-9]{0,11}"),
            sep in proptest::sample::select(vec!["T", "t", " "]),
            zone in proptest::sample::select(vec!["Z", "z", "+00:00", "-01:30", ""]),
            unit in proptest::sample::select(vec![TimeUnit::Second, TimeUnit::Minute, TimeUnit::Hour, TimeUnit::Day]),
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{frac}{zone}");
            let mut fast = Vec::new();
            if utc_fast(text.as_bytes(), unit, &mut fast) {
                proptest::prop_assert_eq!(Some(String::from_utf8(fast).unwrap()), general(&text, unit), "{}", text);
            } else {
                proptest::prop_assert!(fast.is_empty());
            }
            let mut both = Vec::new();
            let ok = truncate_time_into(&text, unit, &mut both);
            proptest::prop_assert_eq!(ok.then(|| String::from_utf8(both).unwrap()), general(&text, unit), "{}", text);
        }
    }

    #[test]
    fn the_utc_fast_path_takes_the_reference_shape() {
        let mut out = Vec::new();
        assert!(utc_fast(
            b"2026-11-19T03:14:40.642Z",
            TimeUnit::Second,
            &mut out
        ));
        assert!(utc_fast(b"2024-02-29T23:59:59Z", TimeUnit::Day, &mut out));
        assert_eq!(out, b"2026-11-19T03:14:40Z2024-02-29T00:00:00Z");
        for other in [
            "2023-02-29T00:00:00Z",
            "2026-11-19T03:14:60Z",
            "2026-11-19T03:14:40+00:00",
            "2026-11-19T03:14:40.Z",
        ] {
            assert!(
                !utc_fast(other.as_bytes(), TimeUnit::Second, &mut out),
                "{other}"
            );
        }
    }

    #[test]
    fn buckets() {
        let edges = Buckets::Edges(vec![0.0, 18.0, 25.0, 35.0]);
        assert_eq!(bucket(17.9, &edges), Some(0.0));
        assert_eq!(bucket(18.0, &edges), Some(18.0));
        assert_eq!(bucket(99.0, &edges), Some(35.0));
        assert_eq!(bucket(-1.0, &edges), None);
        assert_eq!(bucket(123.4, &Buckets::Width(10.0)), Some(120.0));
        assert_eq!(bucket(-0.5, &Buckets::Width(10.0)), Some(-10.0));
        let mut out = Vec::new();
        write_number(120.0, &mut out);
        out.push(b' ');
        write_number(2.5, &mut out);
        assert_eq!(out, b"120 2.5");
    }

    #[test]
    fn redaction() {
        let p = vec![
            Regex::new(r"\d{6,}").unwrap(),
            Regex::new(r"[^@\s]+@[^@\s]+").unwrap(),
        ];
        assert_eq!(
            redact("call 0123456789 or mail a@b.c", &p, "[x]"),
            "call [x] or mail [x]"
        );
        assert!(matches!(
            redact("nothing here", &p, "[x]"),
            Cow::Borrowed(_)
        ));
        assert_eq!(redact("12345678", &p, "$1"), "$1");
    }
}
