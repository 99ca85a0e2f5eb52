//! Fuzz the TCF consent-string decoder (`veil::tcf`): the first input byte
//! picks a rule (purposes, legitimate interest, vendor), the rest is the
//! string. Checks what holds for any input:
//!
//! - nothing panics, and the answer is the same when asked twice;
//! - a string that grants a rule grants every weaker rule: fewer purposes,
//!   or (for the same vendor) more purposes allowed on legitimate interest;
//! - an unreadable string is unreadable whatever the rule asks.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run tcf fuzz/corpus/tcf fuzz/seeds/tcf -- -max_total_time=60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::tcf::Rule;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, tc)) = data.split_first() else {
        return;
    };
    let purposes = u32::from(pick & 0x0F) << 1 | 1; // always purpose 1, some of 2..=5
    let vendor = match pick >> 6 {
        0 => None,
        1 => Some(1),
        2 => Some(u16::from(pick)),
        _ => Some(u16::MAX),
    };
    // Legitimate interest where TCF allows it (2), when bit 4 says so.
    let li = if pick & 0x10 != 0 { 1 << 1 } else { 0 };
    let rule = Rule {
        purposes,
        legitimate_interest: li,
        vendor,
    };
    let answer = rule.grants(tc);
    assert_eq!(answer, rule.grants(tc), "deterministic");
    let weaker = [
        Rule {
            purposes: 1,
            ..rule
        },
        Rule {
            purposes: purposes & !(1 << 2),
            ..rule
        },
        Rule {
            legitimate_interest: li | (1 << 1),
            ..rule
        },
    ];
    for w in weaker {
        match (answer, w.grants(tc)) {
            (Ok(true), Ok(granted)) => assert!(granted, "a weaker rule grants too: {w:?}"),
            (Err(a), Err(b)) => assert_eq!(a, b, "unreadable whatever the rule"),
            (Ok(_), Ok(_)) => {}
            (a, b) => panic!("readability depends on the rule: {a:?} vs {b:?} ({w:?})"),
        }
    }
});
