//! The guardrails of `veil check`: sensitive categories kept or generalised
//! without a written waiver are errors; pseudonymised guessable identifiers
//! are warnings. The catalogue is [`crate::policy::sensitive`].

use indexmap::IndexMap;
use serde_saphyr::Spanned;

use super::Checker;
use crate::policy::path::{FieldPath, Segment};
use crate::policy::sensitive::{self, CATEGORIES, Category};
use crate::policy::spec::{RawWaiver, SpannedPath};
use crate::policy::trie::{self, Exposure};
use crate::policy::{Action, FieldRule, FieldSet, Waiver};

/// One allowlist: how messages name it, its entries, its compiled tree.
pub(super) type Allowlist<'a> = (String, &'a FieldSet, &'a trie::Node);

/// Check every allowlist; returns the waivers (each one used).
pub(super) fn check(
    c: &mut Checker,
    allowlists: &[Allowlist],
    raw_waivers: &IndexMap<SpannedPath, Spanned<RawWaiver>>,
) -> Vec<Waiver> {
    let waivers = read_waivers(c, raw_waivers);
    let mut used = vec![false; waivers.len()];

    // Every path the policy names whose name falls in a category: in any
    // allowlist (a path one rule drops may be kept by another's parent),
    // and the waivers' own.
    let mut candidates: Vec<(FieldPath, &'static Category)> = Vec::new();
    let named = allowlists
        .iter()
        .flat_map(|(_, f, _)| f.entries.iter().map(|e| &e.path))
        .chain(waivers.iter().map(|(w, _)| &w.path));
    for path in named {
        if let Some(cat) = category_of_path(path)
            && !candidates.iter().any(|(p, _)| p == path)
        {
            candidates.push((path.clone(), cat));
        }
    }

    for (name, fields, tree) in allowlists {
        for (path, cat) in &candidates {
            let Some(exposure) = trie::exposure(tree, path) else {
                continue;
            };
            if let Some(i) = waivers
                .iter()
                .position(|(w, _)| w.path == *path && w.category.id == cat.id)
            {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
                continue;
            }
            let entry = responsible(fields, path);
            let how = match (&exposure, entry) {
                (Exposure::Kept, Some(e)) if e.path == *path => "keeps".to_owned(),
                (Exposure::Kept, Some(e)) => format!("keeps, through `{}: keep`,", e.path),
                (Exposure::Kept, None) => "keeps".to_owned(),
                (Exposure::Generalised(a), _) => {
                    format!("generalises with `{a}` (still {})", cat.label)
                }
                (Exposure::ContentKept, _) => "keeps part of".to_owned(),
            };
            let at = entry.map_or((0, 0), |e| (e.line, e.column));
            c.error_at(
                at,
                format!(
                    "{name} {how} `{path}`, which is {} (category `{}`)",
                    cat.label, cat.id
                ),
                Some(&format!(
                    "drop it (leave it out, or `{path}: drop` under a kept parent); if it must flow, say why in the policy: `waivers: {{ {path}: {{ category: {}, reason: \"...\" }} }}`",
                    cat.id
                )),
            );
        }
        pseudonym_warnings(c, name, fields);
    }

    for (i, (w, at)) in waivers.iter().enumerate() {
        if !used.get(i).copied().unwrap_or(true) {
            c.error_at(
                *at,
                format!(
                    "waiver for `{}` ({}) waives nothing: no allowlist keeps or generalises it as {}",
                    w.path, w.category.id, w.category.label
                ),
                Some("remove the waiver, or check its path and category against the error it was written for"),
            );
        }
    }
    waivers.into_iter().map(|(w, _)| w).collect()
}

/// The first category any key of `path` falls in.
fn category_of_path(path: &FieldPath) -> Option<&'static Category> {
    path.0.iter().find_map(|s| match s {
        Segment::Key(k) => sensitive::category_of(k),
        Segment::Any | Segment::Each => None,
    })
}

/// Whether entry path `upper` can name `lower` or one of its ancestors
/// (`*` on either side matches any key).
fn covers(upper: &FieldPath, lower: &FieldPath) -> bool {
    upper.0.len() <= lower.0.len()
        && upper.0.iter().zip(&lower.0).all(|(u, l)| match (u, l) {
            (Segment::Key(a), Segment::Key(b)) => a == b,
            (Segment::Any | Segment::Key(_), Segment::Any | Segment::Key(_)) => true,
            (Segment::Each, Segment::Each) => true,
            _ => false,
        })
}

/// The entry that lets `path` through: the most specific one at or above
/// it that neither drops nor pseudonymises, or else the first such one below it.
pub(super) fn responsible<'f>(fields: &'f FieldSet, path: &FieldPath) -> Option<&'f FieldRule> {
    let lets_through =
        |e: &&FieldRule| !matches!(e.action, Action::Drop | Action::Pseudonymise { .. });
    fields
        .entries
        .iter()
        .filter(lets_through)
        .filter(|e| covers(&e.path, path))
        .max_by_key(|e| e.path.0.len())
        .or_else(|| {
            fields
                .entries
                .iter()
                .filter(lets_through)
                .find(|e| covers(path, &e.path))
        })
}

fn read_waivers(
    c: &mut Checker,
    raw: &IndexMap<SpannedPath, Spanned<RawWaiver>>,
) -> Vec<(Waiver, (u64, u64))> {
    let mut waivers = Vec::new();
    for (path, w) in raw {
        let Some(fp) = c.path(path, "waiver") else {
            continue;
        };
        let at = (path.referenced.line(), path.referenced.column());
        let id = w.value.category.value.as_str();
        let Some(category) = sensitive::category(id) else {
            let ids: Vec<&str> = CATEGORIES.iter().map(|c| c.id).collect();
            let suggestion = super::did_you_mean(id, &ids)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            c.error(
                &w.value.category.referenced,
                format!("unknown waiver category `{id}`"),
                Some(&format!("{suggestion}categories: {}", ids.join(", "))),
            );
            continue;
        };
        let reason = w.value.reason.value.trim();
        if reason.is_empty() {
            c.error(
                &w.value.reason.referenced,
                format!("the waiver for `{fp}` has an empty reason"),
                Some("write why this data may flow (the decision, who made it, where it is recorded): it is published with the data inventory"),
            );
            continue;
        }
        waivers.push((
            Waiver {
                path: fp,
                category,
                reason: reason.to_owned(),
                line: at.0,
            },
            at,
        ));
    }
    waivers
}

/// A pseudonym of a value that can be enumerated is only as safe as the key,
/// and one of a special category is still special-category data.
fn pseudonym_warnings(c: &mut Checker, name: &str, fields: &FieldSet) {
    for e in &fields.entries {
        if !matches!(e.action, Action::Pseudonymise { .. }) {
            continue;
        }
        let Some(kind) = e.path.0.iter().rev().find_map(|s| match s {
            Segment::Key(k) => Some(sensitive::guessable(k)),
            Segment::Any | Segment::Each => None,
        }) else {
            continue;
        };
        let at = (e.line, e.column);
        if c.warnings.iter().any(|w| (w.line, w.column) == at) {
            continue;
        }
        if let Some(cat) = category_of_path(&e.path) {
            c.warning_at(
                at,
                format!(
                    "{name} pseudonymises `{}`, which is {}: a pseudonym of such a value is still special-category data, and the few values such a field takes (a diagnosis, a religion) can be told apart by how often each pseudonym occurs",
                    e.path, cat.label
                ),
                Some("drop it unless linking the subject's records by it is the purpose".to_owned()),
            );
            continue;
        }
        let Some(kind) = kind else { continue };
        c.warning_at(
            at,
            format!(
                "{name} pseudonymises `{}`, which looks like {}: a keyed hash of a guessable value protects it only while the key is secret (whoever holds the key can hash every candidate and look the pseudonym up)",
                e.path, kind.label
            ),
            Some(format!("instead: {}", kind.instead)),
        );
    }
}
