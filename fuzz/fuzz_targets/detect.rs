//! Fuzz the content detector (`veil::detect`) on arbitrary text. Checks
//! what holds for any input:
//!
//! - nothing panics, and the matches are the same when asked twice;
//! - matches are in order, do not overlap, lie within the text and start
//!   and end on `char` boundaries (the engine slices strings there);
//! - the prefilter never hides a match: `may_match` is true for the text
//!   and for the text as a JSON string (escaped, quoted), as the engine
//!   runs it on raw input bytes;
//! - redaction replaces exactly the matches: the output is the text with
//!   each matched span swapped for its `[redacted:<kind>]`;
//! - read percent-decoded (`veil::detect::url::find_decoded`, with and
//!   without `+` as a space in the query), matches are in order, within the
//!   text and on `char` boundaries, and the prefilter on the raw text (as a
//!   JSON string too) is true whenever the decoded text has a match
//!   (kept strings are read without `+`).
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run detect fuzz/corpus/detect fuzz/seeds/detect -- -max_total_time=60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::detect::url::{UrlBuffers, find_decoded};
use veil::detect::{Match, find, may_match, redact_into};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut first: Vec<Match> = Vec::new();
    find(text.as_bytes(), |m| first.push(m));
    let mut second: Vec<Match> = Vec::new();
    find(text.as_bytes(), |m| second.push(m));
    assert_eq!(first, second, "not deterministic");
    let mut end = 0;
    let mut expected = String::new();
    for m in &first {
        assert!(m.start >= end && m.start < m.end && m.end <= text.len(), "{m:?}");
        assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end), "{m:?}");
        expected.push_str(&text[end..m.start]);
        expected.push_str(m.kind.redaction());
        end = m.end;
    }
    expected.push_str(&text[end..]);
    if !first.is_empty() {
        assert!(may_match(text.as_bytes()), "prefilter hid a match");
        let json = serde_json::to_string(&*text).unwrap();
        assert!(may_match(json.as_bytes()), "prefilter hid a match in JSON");
    }
    let mut redacted = String::new();
    redact_into(&text, &mut redacted, |_| false);
    assert_eq!(redacted, expected);

    let mut bufs = UrlBuffers::default();
    for plus in [false, true] {
        let mut decoded: Vec<Match> = Vec::new();
        find_decoded(text.as_bytes(), plus, &mut bufs, |m| decoded.push(m));
        let mut end = 0;
        for m in &decoded {
            assert!(m.start >= end && m.start < m.end && m.end <= text.len(), "{m:?}");
            assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end), "{m:?}");
            end = m.end;
        }
        if !plus && !decoded.is_empty() {
            assert!(may_match(text.as_bytes()), "prefilter hid a decoded match");
            let json = serde_json::to_string(&*text).unwrap();
            assert!(may_match(json.as_bytes()), "prefilter hid a decoded match in JSON");
        }
    }
});
