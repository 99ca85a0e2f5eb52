//! Which entry decides a place, and what the paths beneath it expect.

use std::cmp::Ordering;

use super::{Act, Seg, Step};

pub(crate) fn seg_matches(s: &Seg, c: &Step) -> bool {
    match (s, c) {
        (Seg::Key(k), Step::K(c)) => k == c,
        (Seg::Any, Step::K(_)) => true,
        (Seg::Each, Step::I) => true,
        _ => false,
    }
}

/// `pattern` names exactly the place `path`.
pub fn names(pattern: &[Seg], path: &[Step]) -> bool {
    pattern.len() == path.len() && pattern.iter().zip(path).all(|(s, c)| seg_matches(s, c))
}

/// The object keys of a path, its array steps left out.
fn keys_of(path: &[Step]) -> Vec<&Step> {
    path.iter().filter(|c| !matches!(c, Step::I)).collect()
}

/// `pattern` names `path` in some shape: compared key by key with the
/// array steps of both left out, so `a.b` names `a[0].b` and `a[].b` names
/// `a.b`. A subject identifier is the same value whatever an event wraps
/// it in.
pub(crate) fn names_any_shape(pattern: &[Seg], path: &[Step]) -> bool {
    let keys: Vec<&Seg> = pattern.iter().filter(|s| !matches!(s, Seg::Each)).collect();
    let at = keys_of(path);
    keys.len() == at.len() && keys.iter().zip(at).all(|(s, c)| seg_matches(s, c))
}

/// [`names_any_shape`] for `path` or one of its ancestors.
pub(crate) fn covers_any_shape(pattern: &[Seg], path: &[Step]) -> bool {
    (0..=path.len()).any(|n| names_any_shape(pattern, &path[..n]))
}

/// `pattern` names `path` or one of its ancestors.
pub(crate) fn covers(pattern: &[Seg], path: &[Step]) -> bool {
    pattern.len() <= path.len() && names(pattern, &path[..pattern.len()])
}

/// Which of two patterns naming the same place wins: compared from the last
/// segment back, an exact key beats `*`.
pub(crate) fn specificity(a: &[Seg], b: &[Seg]) -> Ordering {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        let rank = |s: &Seg| matches!(s, Seg::Key(_)) as u8;
        match rank(x).cmp(&rank(y)) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

/// One allowlist, with everything else the policy names beneath places.
pub(crate) struct Tree<'m> {
    pub(crate) entries: &'m [(Vec<Seg>, Act)],
    pub(crate) markers: &'m [Vec<Seg>],
}

impl<'m> Tree<'m> {
    /// The entry that decides the place `path` itself, if any names it.
    pub(crate) fn action_at(&self, path: &[Step]) -> Option<&'m Act> {
        self.entries
            .iter()
            .filter(|(p, _)| names(p, path))
            .max_by(|(a, _), (b, _)| specificity(a, b))
            .map(|(_, a)| a)
    }

    /// Whether unlisted values at `path` are kept: the nearest listed
    /// `keep`/`drop` at or above it decides; the event itself is `drop`.
    pub(crate) fn keeps(&self, path: &[Step]) -> bool {
        for n in (1..=path.len()).rev() {
            match self.action_at(&path[..n]) {
                Some(Act::Keep) => return true,
                Some(Act::Drop) => return false,
                _ => {}
            }
        }
        false
    }

    /// Whether the last step of `path`, an object key, is a name the policy
    /// spells out (an entry or marker at or beneath it has that key there,
    /// not `*`). Other keys are data, scanned like values.
    pub(crate) fn names_key(&self, path: &[Step]) -> bool {
        let n = path.len();
        let all = self.entries.iter().map(|(p, _)| p).chain(self.markers);
        all.into_iter()
            .any(|p| p.len() >= n && names(&p[..n], path) && matches!(p[n - 1], Seg::Key(_)))
    }

    /// What the paths beneath `path` expect there: (object keys, array elements).
    pub(crate) fn beneath(&self, path: &[Step]) -> (bool, bool) {
        let mut keys = false;
        let mut each = false;
        let all = self.entries.iter().map(|(p, _)| p).chain(self.markers);
        for p in all {
            if p.len() > path.len() && names(&p[..path.len()], path) {
                match p[path.len()] {
                    Seg::Each => each = true,
                    _ => keys = true,
                }
            }
        }
        (keys, each)
    }
}
