//! The content scan of a URL that the `url` action keeps: its path and
//! query, read as a server reads them. `%XX` escapes are decoded (and `+`
//! is a space in the query), so `/users/ana%40example.com` holds an e-mail
//! address; matches are reported in the URL's own bytes, so a redaction
//! replaces the escapes that spelled the match.
//!
//! The scheme and host are not scanned: they name the site, not a person.

use super::{Match, find, may_match};

/// Reusable buffers of [`find_in_url`].
#[derive(Debug, Default)]
pub struct UrlBuffers {
    /// The decoded path and query.
    decoded: Vec<u8>,
    /// For each decoded byte, where its spelling starts in the tail; one
    /// more entry at the end (the tail's length).
    origin: Vec<usize>,
}

/// Where the path of `url` starts: 0 for a path-absolute reference
/// (`/cart?x=1`), else the first `/`, `?` or `#` after `scheme://`
/// (the URL's length when there is none).
pub fn tail_start(url: &[u8]) -> usize {
    if url.first() == Some(&b'/') {
        return 0;
    }
    // The `url` action writes `http://` and `https://` URLs only; the
    // search is for anything else.
    let authority = if url.starts_with(b"https://") {
        8
    } else if url.starts_with(b"http://") {
        7
    } else {
        match url.windows(3).position(|w| w == b"://") {
            Some(i) => i + 3,
            None => return 0,
        }
    };
    url.get(authority..)
        .and_then(|rest| rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')))
        .map_or(url.len(), |i| authority + i)
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Report each match of the content detector in the path and query of
/// `url` (the output of the `url` action), with `start..end` positions in
/// `url`. A match covers every byte of the escapes that spell it.
pub fn find_in_url(url: &[u8], bufs: &mut UrlBuffers, mut report: impl FnMut(Match)) {
    let from = tail_start(url);
    find_decoded(url.get(from..).unwrap_or_default(), true, bufs, |m| {
        report(Match {
            kind: m.kind,
            start: from + m.start,
            end: from + m.end,
        })
    });
}

/// Whether `text` holds anything [`find_decoded`] would decode: a `%`
/// (and a `+` when `plus_in_query`).
#[inline]
fn has_escapes(text: &[u8], plus_in_query: bool) -> bool {
    if plus_in_query {
        memchr::memchr2(b'%', b'+', text).is_some()
    } else {
        memchr::memchr(b'%', text).is_some()
    }
}

/// Report each match of the content detector in `text` read with its
/// `%XX` escapes decoded once (and, with `plus_in_query`, `+` after the
/// first `?` as a space), with `start..end` positions in `text`. When
/// `text` is valid UTF-8 those positions are `char` boundaries: a match
/// starts and ends on whole characters of the decoded text, and each maps
/// back to the escape that spelled it or to that same character.
pub fn find_decoded(
    text: &[u8],
    plus_in_query: bool,
    bufs: &mut UrlBuffers,
    mut report: impl FnMut(Match),
) {
    if !has_escapes(text, plus_in_query) {
        // Nothing to decode: the text is what the detector reads.
        if may_match(text) {
            find(text, report);
        }
        return;
    }
    let UrlBuffers { decoded, origin } = bufs;
    decoded.clear();
    origin.clear();
    let mut in_query = false;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        origin.push(i);
        let escape = (b == b'%')
            .then(|| Some(hex(*text.get(i + 1)?)? << 4 | hex(*text.get(i + 2)?)?))
            .flatten();
        match (escape, b) {
            (Some(byte), _) => {
                decoded.push(byte);
                i += 3;
                continue;
            }
            (None, b'?') => in_query = true,
            (None, b'+') if in_query && plus_in_query => {
                decoded.push(b' ');
                i += 1;
                continue;
            }
            _ => {}
        }
        decoded.push(b);
        i += 1;
    }
    origin.push(text.len());
    if !may_match(decoded) {
        return;
    }
    let at = |k: usize| origin.get(k).copied().unwrap_or(text.len());
    find(decoded, |m| {
        report(Match {
            kind: m.kind,
            start: at(m.start),
            end: at(m.end),
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Kind;

    fn found(url: &str) -> Vec<(Kind, &str)> {
        let mut out = Vec::new();
        find_in_url(url.as_bytes(), &mut UrlBuffers::default(), |m| {
            out.push((m.kind, url.get(m.start..m.end).unwrap_or("?")))
        });
        out
    }

    #[test]
    fn the_path_starts_after_the_authority() {
        assert_eq!(tail_start(b"/cart?x=1"), 0);
        assert_eq!(tail_start(b"https://a.example/x"), 17);
        assert_eq!(tail_start(b"https://a.example?x"), 17);
        assert_eq!(tail_start(b"https://a.example"), 17);
        assert_eq!(tail_start(b"http://10.1.2.3:8080/"), 20);
    }

    #[test]
    fn an_address_in_the_path_is_found_plain_or_escaped() {
        assert_eq!(
            found("https://a.example/users/ana@example.com/x"),
            [(Kind::Email, "ana@example.com")]
        );
        assert_eq!(
            found("https://a.example/users/ana%40example.com/x"),
            [(Kind::Email, "ana%40example.com")]
        );
        assert_eq!(
            found("/u/%61na%40example%2Ecom?x=1"),
            [(Kind::Email, "%61na%40example%2Ecom")]
        );
    }

    #[test]
    fn a_plus_is_a_space_in_the_query_only() {
        assert_eq!(
            found("/s?q=call+020+7946+0958"),
            [(Kind::Phone, "020+7946+0958")]
        );
        assert_eq!(
            found("/s?tel=%2B44%2020%207946%200958"),
            [(Kind::Phone, "%2B44%2020%207946%200958")]
        );
        // In the path `+` is a plus: `+020+7946+0958` is no phone number.
        assert_eq!(found("/call+020+7946+0958"), []);
    }

    #[test]
    fn the_host_is_not_scanned() {
        assert_eq!(found("http://10.1.2.3/x"), []);
        assert_eq!(
            found("http://10.1.2.3/x?from=10.9.8.7"),
            [(Kind::Ip, "10.9.8.7")]
        );
    }

    #[test]
    fn broken_escapes_are_read_as_they_are() {
        assert_eq!(found("/a%zz%4"), []);
        assert_eq!(
            found("/x/ana%40example.com%"),
            [(Kind::Email, "ana%40example.com")]
        );
        assert_eq!(found("/%"), []);
    }
}
