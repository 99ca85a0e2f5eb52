//! The generalisers, from their documented results: IP prefixes (with
//! embedded IPv4 addresses), URLs, RFC 3339 timestamps; and the domain
//! check a fuzzer can apply to any output.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::*;

pub(crate) fn mask32(x: u32, bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        x & (u32::MAX << (32 - u32::from(bits)))
    }
}

pub(crate) fn mask128(x: u128, bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        x & (u128::MAX << (128 - u32::from(bits)))
    }
}

/// Where an IPv6 address embeds an IPv4 one: (bit offset from the top, XOR applied).
pub fn embedded_v4(a: Ipv6Addr) -> Option<(u32, u32)> {
    let x = u128::from(a);
    let top96 = x >> 32;
    if top96 == 0xffff {
        return Some((96, 0)); // IPv4-mapped ::ffff:0:0/96
    }
    if top96 == 0 && (x as u32) > 1 {
        return Some((96, 0)); // IPv4-compatible ::a.b.c.d
    }
    if top96 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some((96, 0)); // NAT64 64:ff9b::/96
    }
    if x >> 112 == 0x2002 {
        return Some((16, 0)); // 6to4 2002:AABB:CCDD::/48
    }
    if x >> 96 == 0x2001_0000 {
        return Some((96, u32::MAX)); // Teredo: client address, inverted
    }
    None
}

pub(crate) fn bits_at(x: u128, offset: u32) -> u32 {
    (x >> (96 - offset)) as u32
}

pub(crate) fn ip_prefix(s: &str, v4: u8, v6: u8) -> Option<Exp> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(Exp::Exact(Value::String(
            Ipv4Addr::from(mask32(u32::from(a), v4)).to_string(),
        ))),
        IpAddr::V6(a) if embedded_v4(a).is_some() => Some(Exp::Check {
            check: Check::EmbeddedIp {
                input: s.to_owned(),
                v4,
            },
            may_vanish: true,
        }),
        IpAddr::V6(a) => Some(Exp::Exact(Value::String(
            Ipv6Addr::from(mask128(u128::from(a), v6)).to_string(),
        ))),
    }
}

/// `Err` says how an output leaks the host part of an embedded IPv4 address.
pub fn check_embedded(input: &str, v4: u8, out: &Value) -> Result<(), String> {
    let Some(text) = out.as_str() else {
        return Err(format!("ip_prefix of {input} gave a non-string {out}"));
    };
    let a: Ipv6Addr = input.parse().expect("checked when planned");
    let (offset, xor) = embedded_v4(a).expect("checked when planned");
    let host_in = (bits_at(u128::from(a), offset) ^ xor) & !mask32(u32::MAX, v4);
    // The output's bits where the input embeds its IPv4 address (all zero:
    // removed, whatever the encoding).
    let raw_out = match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(o)) => u32::from(o) ^ xor,
        Ok(IpAddr::V6(o)) => bits_at(u128::from(o), offset),
        Err(_) => {
            return Err(format!(
                "ip_prefix of {input} gave {text:?}, not an address"
            ));
        }
    };
    let host_out = (raw_out ^ xor) & !mask32(u32::MAX, v4);
    if host_in != 0 && raw_out != 0 && host_in == host_out {
        return Err(format!(
            "ip_prefix of {input} gave {text}: the embedded IPv4 address keeps its host bits beyond /{v4}"
        ));
    }
    Ok(())
}

/// `*` is any run of characters, `?` one character, everything else literal.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(&p, &n)
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The documented `url` result: `None` for what is not an absolute http(s)
/// URL with a host or a path-absolute reference.
/// The characters of a URL (RFC 3986: unreserved, reserved, `%`).
fn url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

pub(crate) fn url(s: &str, keep: &[String]) -> Option<Exp> {
    let no_fragment = s.split('#').next().unwrap_or_default();
    let (before, query) = match no_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (no_fragment, None),
    };
    let base = if s.starts_with('/') && !s.starts_with("//") {
        if !s.chars().all(url_char) {
            return None; // free text that starts with `/` is not a path
        }
        before.to_owned()
    } else {
        let u = url::Url::parse(s).ok()?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
            return None;
        }
        let mut u = u;
        u.set_fragment(None);
        u.set_query(None);
        u.set_username("").ok()?;
        u.set_password(None).ok()?;
        u.to_string()
    };
    let params: Vec<String> = query
        .unwrap_or_default()
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = percent_decode(p.split('=').next().unwrap_or_default());
            // A name holding a detection is removed (docs/policy.md, `url`).
            let mut detected = false;
            veil::detect::find(name.as_bytes(), |_| detected = true);
            keep.iter().any(|g| glob(g, &name)) && !detected
        })
        .map(str::to_owned)
        .collect();
    Some(Exp::Check {
        check: Check::Url { base, params },
        may_vanish: false,
    })
}

pub fn check_url(base: &str, params: &[String], out: &Value) -> Result<(), String> {
    let Some(text) = out.as_str() else {
        return Err(format!("url gave a non-string {out}"));
    };
    let joined = if params.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", params.join("&"))
    };
    let want = url_scanned(&joined);
    if text != want {
        return Err(format!(
            "url gave {text:?}; want {want:?} ({base:?} with parameters {params:?}, scanned)"
        ));
    }
    Ok(())
}

/// A `url` result as `scan: redact` writes it (docs/policy.md, "Content
/// scan"): the path and query (everything after `scheme://host[:port]`, or
/// all of a path-absolute reference) read as a server reads them, `+` a
/// space in the query ([`redacted_decoded`]).
pub fn url_scanned(text: &str) -> String {
    let b = text.as_bytes();
    let path_at = if text.starts_with('/') {
        0
    } else {
        let host_at = text.find("://").map_or(0, |i| i + 3);
        (host_at..b.len())
            .find(|&i| matches!(b[i], b'/' | b'?' | b'#'))
            .unwrap_or(b.len())
    };
    format!(
        "{}{}",
        &text[..path_at],
        redacted_decoded(&text[path_at..], true)
    )
}

/// `text` as `scan: redact` writes it when it reads it decoded: each
/// `%XX` one byte and, with `plus_in_query`, `+` after the first `?` a
/// space; every detection is replaced by `[redacted:<kind>]`, together
/// with all the characters that spell it. The detector says where the
/// matches are in the decoded text.
pub fn redacted_decoded(text: &str, plus_in_query: bool) -> String {
    let b = text.as_bytes();
    // The text as units: the byte a server reads and the text spelling it.
    let mut units: Vec<(u8, &str)> = Vec::new();
    let mut i = 0;
    let mut query = false;
    while i < b.len() {
        let escape = b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit();
        if escape {
            let byte = u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap();
            units.push((byte, &text[i..i + 3]));
            i += 3;
            continue;
        }
        query |= b[i] == b'?';
        let read = if plus_in_query && query && b[i] == b'+' {
            b' '
        } else {
            b[i]
        };
        // A character is one unit per byte; only its first carries the text.
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        units.push((read, &text[i..i + len]));
        for k in 1..len {
            units.push((b[i + k], ""));
        }
        i += len;
    }
    let decoded: Vec<u8> = units.iter().map(|u| u.0).collect();
    let mut found = Vec::new();
    veil::detect::find(&decoded, |m| found.push(m));
    let mut out = String::new();
    let mut k = 0;
    while k < units.len() {
        match found.iter().find(|m| m.start == k) {
            Some(m) => {
                out.push_str(m.kind.redaction());
                k = m.end;
            }
            None => {
                out.push_str(units[k].1);
                k += 1;
            }
        }
    }
    out
}

pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 `date-time` to UTC, truncated; `None` when unreadable or when
/// the UTC result falls outside years 0000-9999.
pub fn truncate_time(s: &str, unit: Unit) -> Option<String> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > dim[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match &s[i..] {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    let step = match unit {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3600,
        Unit::Day => 86400,
    };
    let t = secs.div_euclid(step) * step;
    let (yy, mm, dd) = civil_from_days(t.div_euclid(86400));
    if !(0..=9999).contains(&yy) {
        return None;
    }
    let r = t.rem_euclid(86400);
    Some(format!(
        "{yy:04}-{mm:02}-{dd:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    ))
}

/// Whether `v` can be the result of action `a` (generalisers only; `null`
/// always can). A fuzzer's check: it holds whatever the input was.
pub fn check_domain(a: &Act, v: &Value) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("`{}` gave {v}: {why}", a.name()));
    let text = v.as_str();
    match a {
        Act::Keep | Act::Drop | Act::Pseudo(_) => Ok(()),
        Act::Ip { v4, v6 } => match text.map(str::parse::<IpAddr>) {
            Some(Ok(IpAddr::V4(x))) if u32::from(x) & !mask32(u32::MAX, *v4) != 0 => {
                bad("host bits beyond the v4 prefix")
            }
            Some(Ok(IpAddr::V6(x))) => {
                let x128 = u128::from(x);
                match embedded_v4(x) {
                    Some((offset, xor)) => {
                        let raw = bits_at(x128, offset);
                        if raw != 0 && (raw ^ xor) & !mask32(u32::MAX, *v4) != 0 {
                            return bad("the embedded IPv4 address keeps host bits");
                        }
                        Ok(())
                    }
                    None if x128 & !mask128(u128::MAX, *v6) != 0 => {
                        bad("bits beyond the v6 prefix")
                    }
                    None => Ok(()),
                }
            }
            Some(Ok(_)) => Ok(()),
            _ => bad("not an IP address"),
        },
        Act::Url(keep) => {
            let Some(t) = text else {
                return bad("not a string");
            };
            if t.contains('#') {
                return bad("a fragment");
            }
            if t.starts_with('/') {
                if t.starts_with("//") {
                    return bad("a scheme-relative reference");
                }
                if !t.chars().all(url_char) {
                    return bad("not made of URL characters");
                }
            } else {
                let Ok(u) = url::Url::parse(t) else {
                    return bad("not a URL");
                };
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty)
                {
                    return bad("not an http(s) URL with a host");
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return bad("user info");
                }
            }
            let query = t.split_once('?').map_or("", |(_, q)| q);
            for p in query.split(['&', ';']).filter(|p| !p.is_empty()) {
                let name = percent_decode(p.split('=').next().unwrap_or_default());
                if !keep.iter().any(|g| glob(g, &name)) {
                    return bad("a query parameter not in keep_query");
                }
            }
            Ok(())
        }
        Act::Time(unit) => match text {
            Some(t) if truncate_time(t, *unit).as_deref() == Some(t) => Ok(()),
            _ => bad("not a truncated UTC RFC 3339 timestamp"),
        },
        Act::Edges(edges) => match v.as_f64() {
            Some(x) if edges.contains(&x) => Ok(()),
            _ => bad("not a bucket edge"),
        },
        Act::Width(w) => match v.as_f64() {
            Some(x) if ((x / w) - (x / w).round()).abs() < 1e-6 => Ok(()),
            _ => bad("not a multiple of the width"),
        },
        Act::Redact(patterns, replacement) => {
            let Some(t) = text else {
                return bad("not a string");
            };
            // A replacement may form a new match with its neighbours (one pass
            // replaces every match); what lies between replacements may not.
            for p in patterns {
                let re = regex::Regex::new(p).map_err(|e| e.to_string())?;
                let pieces: Vec<&str> = if replacement.is_empty() {
                    vec![t]
                } else {
                    t.split(replacement.as_str()).collect()
                };
                if !re.is_match("") && pieces.iter().any(|piece| re.is_match(piece)) {
                    return bad("a match of a redact pattern is left");
                }
            }
            Ok(())
        }
    }
}
