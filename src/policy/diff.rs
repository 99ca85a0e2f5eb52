//! What a policy change does to the data that flows (`veil diff OLD NEW`),
//! computed from the two validated policies (pure).
//!
//! Every change is classified by its [`Effect`]:
//! - **widens**: more data, or data in a more revealing form, reaches the
//!   recipient, or a protection is weaker: a path newly allowed, `keep`
//!   where it was transformed, a looser generalisation (a longer kept IP
//!   prefix, more kept query parameters, finer time, finer buckets, fewer
//!   redactions), one transform swapped for another (they reveal different
//!   things, so this is counted as widening), a consent or opt-out check
//!   removed or moved, fewer TCF purposes required, a subject path removed
//!   (suppression and erasure no longer look there), a waiver added, a
//!   `drop` rule removed or turned off, rules reordered;
//! - **narrows**: the reverse;
//! - **breaks joins**: what flows is as protected as before, but pseudonyms
//!   of the same values change (purpose, `pseudonyms` options, `normalise`),
//!   so warehouse joins across the change break.
//!
//! Paths are compared where either policy names them: the action a path
//! gets is its own entry's, else that of the deepest entry above it or a
//! wildcard matching it (an exact key beating `*`), else `drop`.

use serde::Serialize;

use super::{Action, Buckets, Consent, FieldPath, FieldSet, Policy, Rule, Scalar, Segment};
use crate::policy::spec::{ScanMode, TimeUnit};

/// How a change bears on what flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Widens,
    BreaksJoins,
    Narrows,
}

impl Effect {
    pub fn label(self) -> &'static str {
        match self {
            Effect::Widens => "widens",
            Effect::BreaksJoins => "breaks joins",
            Effect::Narrows => "narrows",
        }
    }
}

/// One difference between two policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub effect: Effect,
    /// A fixed code: `newly_allowed`, `generalisation_loosened`, ...
    pub kind: &'static str,
    /// `fields`, `rule when ...`, `consent`, `subject`, `waivers`,
    /// `purpose`, `pseudonyms`, `rules`.
    pub scope: String,
    pub path: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
    /// What it means, in a sentence.
    pub detail: String,
}

impl Change {
    fn new(effect: Effect, kind: &'static str, scope: &str, detail: impl Into<String>) -> Change {
        Change {
            effect,
            kind,
            scope: scope.to_owned(),
            path: None,
            old: None,
            new: None,
            detail: detail.into(),
        }
    }

    fn at(mut self, path: &FieldPath) -> Change {
        self.path = Some(path.to_string());
        self
    }

    fn values(mut self, old: Option<String>, new: Option<String>) -> Change {
        self.old = old;
        self.new = new;
        self
    }
}

/// Every change from `old` to `new`, widening ones first.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    if old.purpose != new.purpose {
        out.push(
            Change::new(
                Effect::BreaksJoins,
                "purpose_changed",
                "purpose",
                "pseudonyms are derived per purpose: every pseudonym changes",
            )
            .values(Some(old.purpose.clone()), Some(new.purpose.clone())),
        );
    }
    if old.pseudonyms != new.pseudonyms {
        let show = |p: &super::PseudonymOptions| {
            format!(
                "encoding {:?}, key_id_prefix {}, truncate_bytes {}",
                p.encoding, p.key_id_prefix, p.truncate_bytes
            )
            .to_lowercase()
        };
        out.push(
            Change::new(
                Effect::BreaksJoins,
                "pseudonyms_changed",
                "pseudonyms",
                "every pseudonym is written differently",
            )
            .values(Some(show(&old.pseudonyms)), Some(show(&new.pseudonyms))),
        );
    }
    if let Some(c) = scan_change(old.scan, new.scan, "scan") {
        out.push(c);
    }
    consent(old.consent.as_ref(), new.consent.as_ref(), &mut out);
    for p in &old.subject {
        if !new.subject.contains(p) {
            out.push(Change::new(Effect::Widens, "subject_removed", "subject", "no longer a subject identifier: suppression (opt-out) and erasure no longer look there, and nothing stops it being kept in clear").at(p));
        }
    }
    for p in &new.subject {
        if !old.subject.contains(p) {
            out.push(
                Change::new(
                    Effect::Narrows,
                    "subject_added",
                    "subject",
                    "a new subject identifier",
                )
                .at(p),
            );
        }
    }
    let waiver = |w: &super::Waiver| (w.path.clone(), w.category.id);
    for w in &new.waivers {
        if !old.waivers.iter().any(|o| waiver(o) == waiver(w)) {
            out.push(
                Change::new(
                    Effect::Widens,
                    "waiver_added",
                    "waivers",
                    format!(
                        "a field of the sensitive category `{}` may now flow: {}",
                        w.category.id, w.reason
                    ),
                )
                .at(&w.path),
            );
        }
    }
    for w in &old.waivers {
        if !new.waivers.iter().any(|n| waiver(n) == waiver(w)) {
            out.push(
                Change::new(
                    Effect::Narrows,
                    "waiver_removed",
                    "waivers",
                    format!("the waiver for `{}` is gone", w.category.id),
                )
                .at(&w.path),
            );
        }
    }
    sets(
        old.fields.as_ref(),
        new.fields.as_ref(),
        "fields",
        (old.scan, new.scan),
        &mut out,
    );
    rules(old, new, &mut out);
    out.sort_by_key(|c| c.effect);
    out
}

/// Whether any change widens what flows or weakens protection.
pub fn widens(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.effect == Effect::Widens)
}

fn consent(old: Option<&Consent>, new: Option<&Consent>, out: &mut Vec<Change>) {
    let (o, n) = match (old, new) {
        (None, None) => return,
        (Some(_), None) => {
            out.push(Change::new(
                Effect::Widens,
                "consent_removed",
                "consent",
                "consent is no longer checked: events without it now flow",
            ));
            return;
        }
        (None, Some(_)) => {
            out.push(Change::new(
                Effect::Narrows,
                "consent_added",
                "consent",
                "events now need consent",
            ));
            return;
        }
        (Some(o), Some(n)) => (o, n),
    };
    let path = |p: &Option<FieldPath>| p.as_ref().map(|p| p.to_string());
    let mut check = |what: &str, o: Option<String>, n: Option<String>| {
        let (effect, kind, detail) = match (&o, &n) {
            (a, b) if a == b => return,
            (Some(_), None) => (
                Effect::Widens,
                "consent_loosened",
                format!("the {what} check is removed"),
            ),
            (None, Some(_)) => (
                Effect::Narrows,
                "consent_tightened",
                format!("a {what} check is added"),
            ),
            _ => (
                Effect::Widens,
                "consent_changed",
                format!(
                    "the {what} check reads another place or name: events it used to drop may pass"
                ),
            ),
        };
        out.push(Change::new(effect, kind, "consent", detail).values(o, n));
    };
    check("purposes", path(&o.purposes), path(&n.purposes));
    if o.purposes.is_some() && n.purposes.is_some() {
        check(
            "consent category",
            Some(o.category.clone()),
            Some(n.category.clone()),
        );
    }
    check("opt-out", path(&o.opt_out), path(&n.opt_out));
    check(
        "opt-out header",
        o.opt_out_header.clone(),
        n.opt_out_header.clone(),
    );
    let tcf_path = |t: &Option<super::Tcf>| t.as_ref().map(|t| t.path.to_string());
    check("TCF", tcf_path(&o.tcf), tcf_path(&n.tcf));
    if let (Some(o), Some(n)) = (&o.tcf, &n.tcf) {
        let list = |v: &[u8]| format!("{v:?}");
        let dropped_purpose = o.purposes.iter().any(|p| !n.purposes.contains(p));
        let added_purpose = n.purposes.iter().any(|p| !o.purposes.contains(p));
        let li_added = n
            .legitimate_interest
            .iter()
            .any(|p| !o.legitimate_interest.contains(p));
        let li_removed = o
            .legitimate_interest
            .iter()
            .any(|p| !n.legitimate_interest.contains(p));
        if dropped_purpose || added_purpose {
            let (effect, kind) = if dropped_purpose {
                (Effect::Widens, "consent_loosened")
            } else {
                (Effect::Narrows, "consent_tightened")
            };
            out.push(
                Change::new(effect, kind, "consent", "the TCF purposes required change")
                    .values(Some(list(&o.purposes)), Some(list(&n.purposes))),
            );
        }
        if li_added || li_removed {
            let (effect, kind) = if li_added {
                (Effect::Widens, "consent_loosened")
            } else {
                (Effect::Narrows, "consent_tightened")
            };
            out.push(
                Change::new(
                    effect,
                    kind,
                    "consent",
                    "the TCF purposes legitimate interest may grant change",
                )
                .values(
                    Some(list(&o.legitimate_interest)),
                    Some(list(&n.legitimate_interest)),
                ),
            );
        }
        let vendor = |v: Option<u16>| v.map(|v| v.to_string());
        match (o.vendor, n.vendor) {
            (a, b) if a == b => {}
            (None, Some(_)) => out.push(
                Change::new(
                    Effect::Narrows,
                    "consent_tightened",
                    "consent",
                    "a TCF vendor must now be granted too",
                )
                .values(None, vendor(n.vendor)),
            ),
            _ => out.push(
                Change::new(
                    Effect::Widens,
                    "consent_loosened",
                    "consent",
                    "the TCF vendor check is removed or names another vendor",
                )
                .values(vendor(o.vendor), vendor(n.vendor)),
            ),
        }
    }
}

/// A rule's identity across versions: its conditions as written.
fn rule_key(r: &Rule) -> String {
    let conds: Vec<String> = r
        .when
        .iter()
        .map(|c| {
            let vs: Vec<String> = c
                .any_of
                .iter()
                .map(|s| match s {
                    Scalar::Null => "null".to_owned(),
                    Scalar::Bool(b) => b.to_string(),
                    Scalar::Number(n) => n.to_string(),
                    Scalar::String(s) => format!("{s:?}"),
                })
                .collect();
            format!("{} is {}", c.path, vs.join(" or "))
        })
        .collect();
    conds.join(" and ")
}

/// The allowlist a rule's events get (`None`: they are dropped).
fn rule_set<'p>(p: &'p Policy, r: &'p Rule) -> Option<&'p FieldSet> {
    if r.drop {
        None
    } else {
        r.fields.as_ref().or(p.fields.as_ref())
    }
}

fn rules(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    let old_keys: Vec<String> = old.rules.iter().map(rule_key).collect();
    let new_keys: Vec<String> = new.rules.iter().map(rule_key).collect();
    for (r, key) in new.rules.iter().zip(&new_keys) {
        let scope = format!("rule when {key}");
        match old_keys.iter().position(|k| k == key) {
            Some(i) => {
                let o = &old.rules[i];
                if o.drop && !r.drop {
                    out.push(Change::new(
                        Effect::Widens,
                        "rule_drop_removed",
                        &scope,
                        "events matching the rule were dropped and now flow",
                    ));
                } else if !o.drop && r.drop {
                    out.push(Change::new(
                        Effect::Narrows,
                        "rule_drop_added",
                        &scope,
                        "events matching the rule are now dropped",
                    ));
                }
                // Two rules on the default fields: their change is the
                // default's, reported once under `fields`.
                let both_default = o.fields.is_none() && r.fields.is_none();
                if !o.drop && !r.drop && !both_default {
                    sets(
                        rule_set(old, o),
                        rule_set(new, r),
                        &scope,
                        (old.scan, new.scan),
                        out,
                    );
                }
            }
            None => {
                // Its events used to take the default allowlist (or a later
                // rule, which this does not follow).
                out.push(Change::new(
                    if r.drop {
                        Effect::Narrows
                    } else {
                        Effect::Widens
                    },
                    "rule_added",
                    &scope,
                    "a new rule; its allowlist is compared with the old default fields",
                ));
                sets(
                    old.fields.as_ref(),
                    rule_set(new, r),
                    &scope,
                    (old.scan, new.scan),
                    out,
                );
            }
        }
    }
    for (o, key) in old.rules.iter().zip(&old_keys) {
        if !new_keys.contains(key) {
            let scope = format!("rule when {key}");
            out.push(Change::new(
                if o.drop {
                    Effect::Widens
                } else {
                    Effect::Narrows
                },
                "rule_removed",
                &scope,
                "the rule is gone; its events take the new default fields",
            ));
            sets(
                rule_set(old, o),
                new.fields.as_ref(),
                &scope,
                (old.scan, new.scan),
                out,
            );
        }
    }
    let common_old: Vec<&String> = old_keys.iter().filter(|k| new_keys.contains(k)).collect();
    let common_new: Vec<&String> = new_keys.iter().filter(|k| old_keys.contains(k)).collect();
    if common_old != common_new {
        out.push(Change::new(
            Effect::Widens,
            "rules_reordered",
            "rules",
            "the first matching rule decides: an event matching several may now get another allowlist",
        ));
    }
}

/// The action `path` gets from `set`, and the entry that gives it.
pub fn effective<'s>(
    set: Option<&'s FieldSet>,
    path: &FieldPath,
) -> Option<(&'s Action, &'s FieldPath)> {
    let set = set?;
    set.entries
        .iter()
        .filter(|e| {
            e.path.0.len() <= path.0.len()
                && e.path.0.iter().zip(&path.0).all(|(p, s)| match (p, s) {
                    (Segment::Any, Segment::Key(_) | Segment::Any) => true,
                    (a, b) => a == b,
                })
        })
        .max_by_key(|e| {
            let exact = e
                .path
                .0
                .iter()
                .filter(|s| !matches!(s, Segment::Any))
                .count();
            (e.path.0.len(), exact)
        })
        .map(|e| (&e.action, &e.path))
}

/// The content scan of what `path` keeps in `set` (its entry's `scan`, else
/// the policy's `default`) and whether the entry sets it itself; `None`
/// where it is not kept.
fn kept_scan(
    set: Option<&FieldSet>,
    path: &FieldPath,
    default: ScanMode,
) -> Option<(ScanMode, bool)> {
    let (action, from) = effective(set, path)?;
    if !matches!(action, Action::Keep | Action::Url { .. }) {
        return None;
    }
    let entry = set?.entries.iter().find(|e| &e.path == from)?;
    Some((entry.scan.unwrap_or(default), entry.scan.is_some()))
}

/// How strongly a scan mode protects what it scans (higher: more).
fn scan_rank(m: ScanMode) -> u8 {
    match m {
        ScanMode::Off => 0,
        ScanMode::Count => 1,
        ScanMode::Redact => 2,
        ScanMode::DropEvent => 3,
    }
}

/// A change of content scan mode, from `old` to `new`.
fn scan_change(old: ScanMode, new: ScanMode, scope: &str) -> Option<Change> {
    let (effect, kind, detail) = match scan_rank(new).cmp(&scan_rank(old)) {
        std::cmp::Ordering::Equal => return None,
        std::cmp::Ordering::Less => (
            Effect::Widens,
            "scan_loosened",
            "the content scan lets more through: e-mail addresses, card numbers and the like in kept strings and URLs are redacted or dropped less",
        ),
        std::cmp::Ordering::Greater => (
            Effect::Narrows,
            "scan_tightened",
            "the content scan holds back more of what it finds in kept strings and URLs",
        ),
    };
    Some(
        Change::new(effect, kind, scope, detail)
            .values(Some(old.code().to_owned()), Some(new.code().to_owned())),
    )
}

/// Compare two allowlists path by path, where either names a path; a path
/// kept in both is compared by its content scan too (`scan`: the two
/// policies' defaults).
fn sets(
    old: Option<&FieldSet>,
    new: Option<&FieldSet>,
    scope: &str,
    scan: (ScanMode, ScanMode),
    out: &mut Vec<Change>,
) {
    let mut paths: Vec<&FieldPath> = old
        .into_iter()
        .chain(new)
        .flat_map(|s| s.entries.iter().map(|e| &e.path))
        .collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let o = effective(old, path);
        let n = effective(new, path);
        let (oa, na) = (o.map(|x| x.0), n.map(|x| x.0));
        let (oa, na) = (oa.unwrap_or(&Action::Drop), na.unwrap_or(&Action::Drop));
        // A change of the policy's own `scan` is reported once, above;
        // here only where an entry sets its own.
        if let (Some((so, eo)), Some((sn, en))) =
            (kept_scan(old, path, scan.0), kept_scan(new, path, scan.1))
            && (eo || en)
            && let Some(c) = scan_change(so, sn, scope)
        {
            out.push(c.at(path));
        }
        if let Some((effect, kind, detail)) = actions(oa, na) {
            let shown = |x: Option<(&Action, &FieldPath)>| {
                Some(match x {
                    None => "not listed (drop)".to_owned(),
                    Some((a, p)) if p == path => action_text(a),
                    Some((a, p)) => format!("{} (from {p})", action_text(a)),
                })
            };
            out.push(
                Change::new(effect, kind, scope, detail)
                    .at(path)
                    .values(shown(o), shown(n)),
            );
        }
    }
}

fn rank(a: &Action) -> u8 {
    match a {
        Action::Drop => 0,
        Action::Keep => 3,
        _ => 1,
    }
}

fn time_rank(u: TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Minute => 1,
        TimeUnit::Hour => 2,
        TimeUnit::Day => 3,
    }
}

type Verdict = (Effect, &'static str, String);

fn loosened(detail: &str) -> Option<Verdict> {
    Some((Effect::Widens, "generalisation_loosened", detail.to_owned()))
}

fn tightened(detail: &str) -> Option<Verdict> {
    Some((
        Effect::Narrows,
        "generalisation_tightened",
        detail.to_owned(),
    ))
}

/// The effect of `old` becoming `new` at one path; `None` if the same.
fn actions(old: &Action, new: &Action) -> Option<Verdict> {
    use Action::*;
    let subset = |a: &[String], b: &[String]| a.iter().all(|x| b.contains(x));
    match (old, new) {
        (Drop, Drop) | (Keep, Keep) => None,
        (Drop, _) => Some((
            Effect::Widens,
            "newly_allowed",
            "the value now reaches the recipient".into(),
        )),
        (_, Drop) => Some((
            Effect::Narrows,
            "newly_removed",
            "the value no longer reaches the recipient".into(),
        )),
        (_, Keep) => Some((
            Effect::Widens,
            "action_changed",
            "now kept as sent where it was transformed".into(),
        )),
        (Keep, _) => Some((
            Effect::Narrows,
            "action_changed",
            "now transformed where it was kept as sent".into(),
        )),
        (Pseudonymise { normalise: a }, Pseudonymise { normalise: b }) => (a != b).then(|| {
            (
                Effect::BreaksJoins,
                "normalise_changed",
                "values are normalised differently: their pseudonyms change".into(),
            )
        }),
        (IpPrefix { v4: a4, v6: a6 }, IpPrefix { v4: b4, v6: b6 }) => {
            if b4 > a4 || b6 > a6 {
                loosened("a longer IP prefix is kept")
            } else if b4 < a4 || b6 < a6 {
                tightened("a shorter IP prefix is kept")
            } else {
                None
            }
        }
        (Url { keep_query: a, .. }, Url { keep_query: b, .. }) => {
            if !subset(b, a) {
                loosened("more query parameters are kept")
            } else if !subset(a, b) {
                tightened("fewer query parameters are kept")
            } else {
                None
            }
        }
        (TruncateTime(a), TruncateTime(b)) => match time_rank(*b).cmp(&time_rank(*a)) {
            std::cmp::Ordering::Less => loosened("times are kept finer"),
            std::cmp::Ordering::Greater => tightened("times are kept coarser"),
            std::cmp::Ordering::Equal => None,
        },
        (Bucket(a), Bucket(b)) => match (a, b) {
            (Buckets::Width(a), Buckets::Width(b)) if b < a => loosened("narrower buckets"),
            (Buckets::Width(a), Buckets::Width(b)) if b > a => tightened("wider buckets"),
            (Buckets::Width(_), Buckets::Width(_)) => None,
            (Buckets::Edges(a), Buckets::Edges(b)) => {
                if b.iter().any(|x| !a.contains(x)) {
                    loosened("new bucket edges: finer buckets")
                } else if a.iter().any(|x| !b.contains(x)) {
                    tightened("fewer bucket edges")
                } else {
                    None
                }
            }
            _ => loosened("buckets of another kind (edges and widths are not comparable)"),
        },
        (
            Redact {
                patterns: a,
                replacement: ra,
            },
            Redact {
                patterns: b,
                replacement: rb,
            },
        ) => {
            let a: Vec<String> = a.iter().map(|r| r.as_str().to_owned()).collect();
            let b: Vec<String> = b.iter().map(|r| r.as_str().to_owned()).collect();
            if !subset(&a, &b) {
                Some((
                    Effect::Widens,
                    "redaction_loosened",
                    "a redaction pattern is removed".into(),
                ))
            } else if !subset(&b, &a) {
                Some((
                    Effect::Narrows,
                    "redaction_tightened",
                    "more is redacted".into(),
                ))
            } else {
                (ra != rb).then(|| {
                    (
                        Effect::Narrows,
                        "redaction_replacement_changed",
                        "the replacement text changes".into(),
                    )
                })
            }
        }
        (a, b) => {
            debug_assert!(rank(a) == 1 && rank(b) == 1);
            Some((
                Effect::Widens,
                "action_changed",
                "another transform: it reveals something else of the value (a generalised value shows part of it, a pseudonym links every event carrying it)".into(),
            ))
        }
    }
}

/// An action with its options, as compact text.
pub fn action_text(a: &Action) -> String {
    match a {
        Action::Keep | Action::Drop => a.name().to_owned(),
        Action::Pseudonymise { normalise } if normalise.is_empty() => "pseudonymise".to_owned(),
        Action::Pseudonymise { normalise } => {
            format!("pseudonymise, normalise {normalise:?}").to_lowercase()
        }
        Action::IpPrefix { v4, v6 } => format!("ip_prefix v4 /{v4}, v6 /{v6}"),
        Action::Url { keep_query, .. } => format!("url keep_query {keep_query:?}"),
        Action::TruncateTime(u) => format!("truncate_time {u:?}").to_lowercase(),
        Action::Bucket(Buckets::Edges(e)) => format!("bucket edges {e:?}"),
        Action::Bucket(Buckets::Width(w)) => format!("bucket width {w}"),
        Action::Redact { patterns, .. } => {
            let p: Vec<&str> = patterns.iter().map(|r| r.as_str()).collect();
            format!("redact {p:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(fields: &str) -> Policy {
        let text = format!("name: t\nversion: 1\npurpose: analytics\nfields:\n{fields}");
        Policy::parse(&text, "t.yaml").unwrap()
    }

    fn at(p: &Policy, path: &str) -> String {
        let path = FieldPath::parse(path).unwrap();
        effective(p.fields.as_ref(), &path).map_or("none".to_owned(), |(a, from)| {
            format!("{} from {from}", a.name())
        })
    }

    #[test]
    fn a_path_gets_its_entry_else_the_deepest_entry_above_it_exact_beating_a_wildcard() {
        let p = policy(
            "  c: keep\n  c.ip: ip_prefix\n  c.campaign.*: keep\n  c.campaign.email: drop\n",
        );
        assert_eq!(at(&p, "c.ip"), "ip_prefix from c.ip");
        assert_eq!(at(&p, "c.page.url"), "keep from c");
        assert_eq!(at(&p, "c.campaign.email"), "drop from c.campaign.email");
        assert_eq!(at(&p, "c.campaign.source"), "keep from c.campaign.*");
        assert_eq!(at(&p, "other"), "none");
    }

    #[test]
    fn identical_policies_differ_in_nothing() {
        let p = policy("  a: keep\n  b: { url: { keep_query: [x] } }\n");
        assert!(diff(&p, &p.clone()).is_empty());
    }

    #[test]
    fn a_change_to_the_default_fields_is_reported_once_not_per_rule_using_them() {
        let rules = "rules:\n  - { when: { type: page } }\n  - { when: { type: track } }\n";
        let old = policy(&format!("  a: keep\n{rules}"));
        let new = policy(&format!("  a: keep\n  b: keep\n{rules}"));
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].kind, changes[0].scope.as_str()),
            ("newly_allowed", "fields")
        );
    }

    #[test]
    fn widening_changes_are_listed_first() {
        let old = policy("  a: keep\n  b: { truncate_time: hour }\n");
        let new = policy("  b: { truncate_time: second }\n");
        let changes = diff(&old, &new);
        let kinds: Vec<(&str, Effect)> = changes.iter().map(|c| (c.kind, c.effect)).collect();
        assert_eq!(
            kinds,
            [
                ("generalisation_loosened", Effect::Widens),
                ("newly_removed", Effect::Narrows)
            ]
        );
        assert!(widens(&changes));
    }
}
