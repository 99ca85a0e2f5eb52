//! The content detector against its labelled corpus (issue 13):
//! `tests/data/scan_corpus.tsv`, written by `tools/scan_corpus.py` with
//! checks of its own (Luhn, mod 97, Python's `ipaddress`). Prints precision
//! and recall per kind and asserts the floors: recall of at least 0.99 on
//! e-mail addresses, card numbers and IP addresses (in URL paths too),
//! precision of at least 0.95 overall.
//! A string's prediction is the set of kinds found in it; a label is the one
//! kind it holds, or `none`.
//!
//! `cargo test --test scan_corpus -- --nocapture` prints the table.

use std::collections::BTreeSet;

use veil::detect::{Kind, find};

struct Tally {
    tp: u32,
    fp: u32,
    fn_: u32,
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        1.0
    } else {
        f64::from(a) / f64::from(b)
    }
}

#[test]
fn the_detector_meets_its_precision_and_recall_floors() {
    let corpus = include_str!("data/scan_corpus.tsv");
    let mut tallies: Vec<Tally> = Kind::ALL
        .iter()
        .map(|_| Tally {
            tp: 0,
            fp: 0,
            fn_: 0,
        })
        .collect();
    let (mut rows, mut negatives) = (0, 0);
    let mut misses = Vec::new();
    for line in corpus.lines().filter(|l| !l.starts_with('#')) {
        let (label, text) = line.split_once('\t').expect("label<TAB>string");
        rows += 1;
        let want = Kind::ALL.iter().copied().find(|k| k.code() == label);
        assert!(want.is_some() || label == "none", "unknown label {label}");
        negatives += u32::from(want.is_none());
        let mut found = BTreeSet::new();
        find(text.as_bytes(), |m| {
            found.insert(m.kind);
        });
        for &k in &Kind::ALL {
            let t = &mut tallies[k.index()];
            match (want == Some(k), found.contains(&k)) {
                (true, true) => t.tp += 1,
                (true, false) => {
                    t.fn_ += 1;
                    misses.push(format!("missed {}: {text}", k.code()));
                }
                (false, true) => {
                    t.fp += 1;
                    misses.push(format!("false {} ({label}): {text}", k.code()));
                }
                (false, false) => {}
            }
        }
        // The prefilter never hides a match.
        if !found.is_empty() {
            assert!(
                veil::detect::may_match(text.as_bytes()),
                "prefilter: {text}"
            );
        }
    }
    println!("corpus: {rows} strings, {negatives} negatives");
    println!("| kind | positives | found | false positives | precision | recall |");
    println!("|---|---|---|---|---|---|");
    let (mut tp, mut fp) = (0, 0);
    for &k in &Kind::ALL {
        let t = &tallies[k.index()];
        tp += t.tp;
        fp += t.fp;
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} |",
            k.code(),
            t.tp + t.fn_,
            t.tp,
            t.fp,
            ratio(t.tp, t.tp + t.fp),
            ratio(t.tp, t.tp + t.fn_)
        );
    }
    let overall = ratio(tp, tp + fp);
    println!("| all | | {tp} | {fp} | {overall:.3} | |");
    for m in &misses {
        println!("{m}");
    }
    assert!(
        rows >= 2000 && negatives * 2 >= rows,
        "{rows} rows, {negatives} negatives"
    );
    for k in [Kind::Email, Kind::Card, Kind::Ip] {
        let t = &tallies[k.index()];
        let recall = ratio(t.tp, t.tp + t.fn_);
        assert!(recall >= 0.99, "{} recall {recall:.3}", k.code());
    }
    assert!(overall >= 0.95, "overall precision {overall:.3}");
}
