//! Random policies for the differential test, as the oracle's [`Model`]s:
//! families of entries (a kept or dropped parent with children below it),
//! `*` and `[]`, subjects, consent and rules, over a small key alphabet.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::oracle::{Act, Cond, Fields, Model, Norm, Rule, Seg, Unit};

/// A small alphabet, shared by policies and events, so they collide often.
pub(crate) const KEYS: &[&str] = &["a", "b", "c", "id", "ip", "a.b", "é"];

pub(crate) fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

pub(crate) fn pattern() -> impl Strategy<Value = Vec<Seg>> {
    let first = prop_oneof![6 => key().prop_map(Seg::Key), 1 => Just(Seg::Any)];
    let seg = prop_oneof![
        5 => key().prop_map(Seg::Key),
        1 => Just(Seg::Any),
        2 => Just(Seg::Each),
    ];
    (first, prop::collection::vec(seg, 0..3)).prop_map(|(f, mut rest)| {
        rest.insert(0, f);
        rest
    })
}

pub(crate) fn action() -> impl Strategy<Value = Act> {
    let norm = prop::sample::subsequence(vec![Norm::Trim, Norm::Lower], 0..=2);
    prop_oneof![
        6 => Just(Act::Keep),
        3 => Just(Act::Drop),
        4 => norm.prop_map(Act::Pseudo),
        2 => (prop::sample::select(vec![8u8, 16, 24, 24, 24, 31, 32]), prop::sample::select(vec![32u8, 48, 48, 48, 64, 127, 128]))
            .prop_map(|(v4, v6)| Act::Ip { v4, v6 }),
        2 => prop::sample::select(vec![
            vec!["utm_*".to_owned()],
            vec![],
            vec!["q".to_owned(), "utm_?ource".to_owned()],
            vec!["*".to_owned()],
        ])
        .prop_map(Act::Url),
        1 => prop::sample::select(vec![Unit::Second, Unit::Minute, Unit::Hour, Unit::Day]).prop_map(Act::Time),
        1 => prop::sample::select(vec![vec![0.0, 18.0, 25.0, 35.0], vec![-1e6, 0.0, 1e6]]).prop_map(Act::Edges),
        1 => prop::sample::select(vec![10.0, 2.5, 1000.0, 60.0, 10.0, 1.0, 0.5]).prop_map(Act::Width),
        1 => (
            prop::sample::subsequence(vec![r"\d{3,}", "[a-z]+@[a-z.]+", "p[0-9]+", "zzz"], 1..=2),
            prop::sample::select(vec!["[redacted]", "X"]),
        )
            .prop_map(|(p, r)| Act::Redact(p.into_iter().map(str::to_owned).collect(), r.to_owned())),
    ]
}

/// Whether some place named by `upper` is a proper ancestor of one named by `lower`.
pub(crate) fn overlaps_below(upper: &[Seg], lower: &[Seg]) -> bool {
    lower.len() > upper.len()
        && upper.iter().zip(lower).all(|(u, l)| match (u, l) {
            (Seg::Key(a), Seg::Key(b)) => a == b,
            (Seg::Each, Seg::Each) => true,
            (Seg::Any, Seg::Key(_)) | (Seg::Key(_), Seg::Any) | (Seg::Any, Seg::Any) => true,
            _ => false,
        })
}

/// Entries in families: a parent (mostly `keep` or `drop`) and children
/// below it, so that kept parents with child transforms are common. What the
/// docs call invalid (the same place twice, an entry below a transformed
/// value) is left out, so that most generated policies compile.
pub(crate) fn fields() -> impl Strategy<Value = Fields> {
    let tail = prop::collection::vec(
        prop_oneof![
            5 => key().prop_map(Seg::Key),
            1 => Just(Seg::Any),
            2 => Just(Seg::Each),
        ],
        1..3,
    );
    let parent_action = prop_oneof![4 => Just(Act::Keep), 1 => Just(Act::Drop), 1 => action()];
    let family = (
        pattern(),
        parent_action,
        prop::collection::vec((tail, action()), 0..4),
    );
    prop::collection::vec(family, 1..4).prop_map(|families| {
        let mut raw = Vec::new();
        for (parent, a, children) in families {
            for (t, ca) in children {
                let mut p = parent.clone();
                p.extend(t);
                raw.push((p, ca));
            }
            raw.push((parent, a));
        }
        let mut out: Vec<(Vec<Seg>, Act)> = Vec::new();
        for (p, a) in raw {
            let clash = out.iter().any(|(q, b)| {
                *q == p
                    || (b.is_transform() && overlaps_below(q, &p))
                    || (a.is_transform() && overlaps_below(&p, q))
            });
            if !clash {
                out.push((p, a));
            }
        }
        Fields(out)
    })
}

pub(crate) fn cond() -> impl Strategy<Value = Cond> {
    prop::sample::select(vec![
        Cond::Str("track".into()),
        Cond::Str("page".into()),
        Cond::Num(1.0),
        Cond::Bool(true),
        Cond::Null,
    ])
}

pub(crate) fn rule() -> impl Strategy<Value = Rule> {
    let when_path = prop::sample::select(vec![
        vec!["type".to_owned()],
        vec!["a".to_owned()],
        vec!["c".to_owned(), "b".to_owned()],
    ]);
    (
        prop::collection::vec((when_path, prop::collection::vec(cond(), 1..3)), 1..3),
        0..3u8,
        fields(),
    )
        .prop_map(|(when, kind, f)| {
            let mut seen = BTreeSet::new();
            let when = when
                .into_iter()
                .filter(|(p, _)| seen.insert(p.clone()))
                .collect();
            Rule {
                when,
                fields: (kind == 1).then_some(f),
                drop: kind == 0,
            }
        })
}

pub(crate) fn model() -> impl Strategy<Value = Model> {
    let consent = prop::option::weighted(
        0.25,
        (
            prop::sample::select(vec![
                vec!["consent".to_owned(), "p".to_owned()],
                vec!["a".to_owned(), "p".to_owned()],
                vec!["c".to_owned()],
            ]),
            prop::option::of(prop::sample::select(vec![
                vec!["consent".to_owned(), "o".to_owned()],
                vec!["b".to_owned()],
            ])),
        ),
    );
    let subject = prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec(pattern(), 1..3),
    ];
    let rules = prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(rule(), 1..3)];
    (
        consent,
        subject,
        (any::<u8>(), 16usize..=32),
        fields(),
        rules,
        any::<bool>(),
    )
        .prop_map(
            |(consent, subject, (opts, truncate), f, rules, no_default)| {
                let fields = if rules.is_empty() || !no_default {
                    Some(f)
                } else {
                    None
                };
                let mut rules = rules;
                if fields.is_none() {
                    // A rule without fields needs the top-level ones.
                    for r in &mut rules {
                        if !r.drop && r.fields.is_none() {
                            r.drop = true;
                        }
                    }
                }
                Model {
                    purpose: "analytics".into(),
                    consent,
                    subject,
                    base64: opts % 5 == 0,
                    key_id_prefix: opts % 7 == 0,
                    truncate_bytes: truncate,
                    fields,
                    rules,
                }
            },
        )
}
