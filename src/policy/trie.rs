//! A field set compiled into the tree the engine walks, and the plan that
//! ties the trees of a policy together.
//!
//! Semantics (the reference for `docs/policy.md`):
//! - A value is reached through exact keys first; `*` applies to a key only
//!   when no exact entry names it. Where both exist, the wildcard's entries
//!   are merged *under* the exact ones: the more specific path wins, and the
//!   wildcard still applies to what the exact path does not mention.
//! - `keep` keeps the whole value, except where a more specific entry below it
//!   says otherwise. `drop` removes it, except where a more specific entry
//!   below keeps something. Unlisted values are removed.
//! - Transforms (pseudonymise, generalise, redact) apply to scalars and have
//!   nothing below them (validation enforces it).
//! - Capture slots mark values the engine must read whatever the allowlist
//!   says (consent, rule conditions); a capture never emits anything.

use super::path::{FieldPath, Segment};
use super::{Action, FieldSet, ScanMode};

/// What the engine does with the value at a node.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Copy the value verbatim.
    Keep,
    /// Remove the value.
    Drop,
    /// Rewrite a scalar.
    Transform(Action),
    /// Look inside: object members and array elements follow the children;
    /// anything no child names is kept verbatim when `keep_rest`, else removed.
    Descend { keep_rest: bool },
}

/// One node of the compiled tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub mode: Mode,
    /// Exact keys (wildcard entries already merged in), with their
    /// [`fingerprint`]s so most mismatches cost one integer compare.
    pub children: Vec<(u64, Box<[u8]>, Node)>,
    /// `*`: any key not in `children`.
    pub any: Option<Box<Node>>,
    /// `[]`: every array element.
    pub each: Option<Box<Node>>,
    /// Record where this value is, for consent and rule conditions.
    pub capture: Option<u16>,
    /// Record the value here for the suppression check (see [`plan`]'s
    /// `check_subjects`): at a subject path, or on the way to one.
    pub subject: Option<SubjectMark>,
    /// Whether anything at or below this node can reach the output. A shape
    /// mismatch under an emitting node is a `type_mismatch`; under a node
    /// that emits nothing it is plain removal.
    pub emits: bool,
    /// The content scan of strings this node keeps verbatim (`Keep`, and
    /// unnamed members under `Descend { keep_rest: true }`).
    pub scan: ScanMode,
}

impl Node {
    /// The node for object member `key` (whose fingerprint is `fp`), if any entry reaches it.
    #[inline]
    pub fn child_fp(&self, key: &[u8], fp: u64) -> Option<&Node> {
        for (f, k, node) in &self.children {
            if *f == fp && same_key(k, key) {
                return Some(node);
            }
        }
        self.any.as_deref()
    }

    /// The node for object member `key`, if any entry reaches it.
    pub fn child(&self, key: &[u8]) -> Option<&Node> {
        self.child_fp(key, fingerprint(key))
    }

    /// Entries beneath name object members (`a.b`, `a.*`): an object is walked here.
    #[inline]
    pub fn expects_object(&self) -> bool {
        !self.children.is_empty() || self.any.is_some()
    }

    /// A node that removes everything and captures nothing.
    pub fn drop_all() -> Node {
        Node {
            mode: Mode::Drop,
            children: Vec::new(),
            any: None,
            each: None,
            capture: None,
            subject: None,
            emits: false,
            scan: ScanMode::Off,
        }
    }
}

/// Where a node lies relative to subject path `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectMark {
    pub index: u16,
    /// At the subject path itself (every scalar in its value counts), or
    /// on the way to it (a scalar here counts: the event put the
    /// identifier where the path expected a container).
    pub exact: bool,
}

/// A cheap summary of a key: its length and first eight bytes. Equal keys
/// have equal fingerprints; most unequal keys do not.
#[inline(always)]
pub fn fingerprint(key: &[u8]) -> u64 {
    // Built in a register: copying a short key into a stack buffer and
    // reading it back as one word stalls store-to-load forwarding, which
    // was half of the key scan's time.
    let word = match key.first_chunk::<8>() {
        Some(w) => u64::from_le_bytes(*w),
        None => key.iter().rev().fold(0u64, |w, &b| (w << 8) | u64::from(b)),
    };
    word.rotate_left(5) ^ (key.len() as u64)
}

/// [`fingerprint`] of `buf[start..end]`. A key shorter than eight bytes is
/// read as one word where `buf` has eight bytes from `start` (an object
/// key in an event always has: its `":` and a value follow), the bytes
/// past `end` masked off, instead of byte by byte.
#[inline(always)]
pub fn fingerprint_at(buf: &[u8], start: usize, end: usize) -> u64 {
    let len = end.saturating_sub(start);
    if len < 8
        && let Some(w) = buf.get(start..).and_then(<[u8]>::first_chunk::<8>)
    {
        // `len < 8`: the shift is at most 56.
        let word = u64::from_le_bytes(*w) & ((1u64 << (8 * len)) - 1);
        return word.rotate_left(5) ^ (len as u64);
    }
    fingerprint(buf.get(start..end).unwrap_or_default())
}

/// Whether `a` and `b`, whose fingerprints are equal, are the same key:
/// keys of at most eight bytes and equal length are then equal (the
/// fingerprint holds all their bytes), so only longer keys are compared.
#[inline(always)]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() <= 8 {
        a.len() == b.len()
    } else {
        a == b
    }
}

/// The compiled form of a whole policy.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A read-only pass run before emitting, when captures could not be folded
    /// into the allowlist trees (rules exist, or a capture sits under a transform).
    pub probe: Option<Node>,
    /// Default allowlist (with captures folded in when `probe` is `None`).
    pub default: Option<Node>,
    pub rules: Vec<RulePlan>,
    pub consent: Option<ConsentSlots>,
    /// Number of capture slots.
    pub slots: usize,
    /// Whether the probe records the subject values ([`Node::subject`]).
    pub subjects: bool,
}

#[derive(Debug, Clone)]
pub struct RulePlan {
    pub when: Vec<(u16, Vec<super::Scalar>)>,
    /// `None`: use the default allowlist.
    pub fields: Option<Node>,
    pub drop: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ConsentSlots {
    pub purposes: Option<u16>,
    pub opt_out: Option<u16>,
    pub tcf: Option<u16>,
}

/// Builds the plan for validated parts of a policy. With `check_subjects`
/// (and subject paths), a probe always runs and records every value at
/// every subject path, wherever the allowlist would take the walk.
pub(crate) fn plan(
    default: Option<&FieldSet>,
    rules: &[super::Rule],
    consent: Option<&super::Consent>,
    subject: &[FieldPath],
    check_subjects: bool,
    scan: ScanMode,
) -> Plan {
    // One slot per distinct path: a node records one capture.
    let mut captures: Vec<&FieldPath> = Vec::new();
    fn slot_for<'p>(captures: &mut Vec<&'p FieldPath>, path: &'p FieldPath) -> u16 {
        match captures.iter().position(|c| *c == path) {
            Some(i) => i as u16,
            None => {
                captures.push(path);
                (captures.len() - 1) as u16
            }
        }
    }
    let consent_slots = consent.map(|c| ConsentSlots {
        purposes: c.purposes.as_ref().map(|p| slot_for(&mut captures, p)),
        opt_out: c.opt_out.as_ref().map(|p| slot_for(&mut captures, p)),
        tcf: c.tcf.as_ref().map(|t| slot_for(&mut captures, &t.path)),
    });
    let whens: Vec<Vec<(u16, Vec<super::Scalar>)>> = rules
        .iter()
        .map(|rule| {
            rule.when
                .iter()
                .map(|c| (slot_for(&mut captures, &c.path), c.any_of.clone()))
                .collect()
        })
        .collect();
    let slots = captures.len();
    // Every place the policy reads or names beneath a kept parent makes that
    // parent's shape matter: such values are walked, never copied whole.
    let markers: Vec<&FieldPath> = captures.iter().copied().chain(subject).collect();
    let tree =
        |fields: &FieldSet, captures: &[&FieldPath]| build(fields, captures, &markers, &[], scan);
    let subjects: Vec<&FieldPath> = subject.iter().collect();
    let check_subjects = check_subjects && !subjects.is_empty();
    let rule_plans = rules
        .iter()
        .zip(whens)
        .map(|(rule, when)| RulePlan {
            when,
            fields: rule.fields.as_ref().map(|f| tree(f, &[])),
            drop: rule.drop,
        })
        .collect();

    // Fold captures into the default tree when that is the only tree and
    // every captured path stays reachable; otherwise run a probe pass.
    let mut probe = None;
    let default_node = match default {
        Some(fields) if rules.is_empty() && !captures.is_empty() && !check_subjects => {
            let folded = tree(fields, &captures);
            if captures
                .iter()
                .enumerate()
                .all(|(slot, path)| reaches_capture(&folded, path, slot as u16))
            {
                Some(folded)
            } else {
                probe = Some(tree(&FieldSet::default(), &captures));
                Some(tree(fields, &[]))
            }
        }
        Some(fields) => Some(tree(fields, &[])),
        None => None,
    };
    if !rules.is_empty() && !captures.is_empty() {
        probe = Some(tree(&FieldSet::default(), &captures));
    }
    if check_subjects {
        probe = Some(build(
            &FieldSet::default(),
            &captures,
            &markers,
            &subjects,
            scan,
        ));
    }
    Plan {
        probe,
        default: default_node,
        rules: rule_plans,
        consent: consent_slots,
        slots,
        subjects: check_subjects,
    }
}

fn reaches_capture(root: &Node, path: &FieldPath, slot: u16) -> bool {
    let mut node = root;
    for seg in &path.0 {
        if !matches!(node.mode, Mode::Descend { .. }) {
            return false;
        }
        let Segment::Key(k) = seg else { return false };
        match node.child(k.as_bytes()) {
            Some(n) => node = n,
            None => return false,
        }
    }
    node.capture == Some(slot)
}

/// The tree under construction: actions as written, wildcards not yet merged.
#[derive(Debug, Clone, Default)]
struct Draft {
    action: Option<Action>,
    children: Vec<(String, Draft)>,
    any: Option<Box<Draft>>,
    each: Option<Box<Draft>>,
    capture: Option<u16>,
    subject: Option<SubjectMark>,
    /// A `keep` entry's own scan setting.
    scan: Option<ScanMode>,
}

impl Draft {
    fn insert(&mut self, segments: &[Segment]) -> &mut Draft {
        let Some((first, rest)) = segments.split_first() else {
            return self;
        };
        let next = match first {
            Segment::Key(k) => match self.children.iter().position(|(ck, _)| ck == k) {
                Some(i) => &mut self.children[i].1,
                None => {
                    self.children.push((k.clone(), Draft::default()));
                    &mut self.children.last_mut().expect("just pushed").1
                }
            },
            Segment::Any => self.any.get_or_insert_with(Default::default),
            Segment::Each => self.each.get_or_insert_with(Default::default),
        };
        next.insert(rest)
    }

    /// Merge `general` (a wildcard's subtree) under `self`: what `self` says wins.
    fn merge_under(&mut self, general: &Draft) {
        if self.action.is_none() {
            self.action = general.action.clone();
        }
        if self.subject.is_none() {
            self.subject = general.subject;
        }
        if self.scan.is_none() {
            self.scan = general.scan;
        }
        for (k, g) in &general.children {
            match self.children.iter_mut().find(|(ck, _)| ck == k) {
                Some((_, mine)) => mine.merge_under(g),
                None => self.children.push((k.clone(), g.clone())),
            }
        }
        merge_opt(&mut self.any, general.any.as_deref());
        merge_opt(&mut self.each, general.each.as_deref());
    }

    /// Push the wildcard's entries into each exact sibling, all the way down.
    fn resolve_wildcards(&mut self) {
        if let Some(any) = self.any.as_deref() {
            let any = any.clone();
            for (_, child) in &mut self.children {
                child.merge_under(&any);
            }
        }
        for (_, child) in &mut self.children {
            child.resolve_wildcards();
        }
        if let Some(any) = self.any.as_deref_mut() {
            any.resolve_wildcards();
        }
        if let Some(each) = self.each.as_deref_mut() {
            each.resolve_wildcards();
        }
    }

    fn finish(self, inherited_keep: bool, inherited_scan: ScanMode) -> Node {
        // A kept parent's scan setting reaches what it keeps, down to the
        // next entry that says otherwise.
        let scan = self.scan.unwrap_or(inherited_scan);
        let keep_rest = match &self.action {
            Some(Action::Keep) => true,
            Some(Action::Drop) => false,
            _ => inherited_keep,
        };
        let structural = !self.children.is_empty() || self.any.is_some() || self.each.is_some();
        let mode = match self.action {
            Some(a) if a.is_transform() => Mode::Transform(a),
            _ if structural => Mode::Descend { keep_rest },
            _ if keep_rest => Mode::Keep,
            _ => Mode::Drop,
        };
        let children: Vec<(u64, Box<[u8]>, Node)> = self
            .children
            .into_iter()
            .map(|(k, d)| {
                let fp = fingerprint(k.as_bytes());
                (
                    fp,
                    k.into_bytes().into_boxed_slice(),
                    d.finish(keep_rest, scan),
                )
            })
            .collect();
        let any = self.any.map(|d| Box::new(d.finish(keep_rest, scan)));
        let each = self.each.map(|d| Box::new(d.finish(keep_rest, scan)));
        let emits = match &mode {
            Mode::Keep | Mode::Transform(_) => true,
            Mode::Drop => false,
            Mode::Descend { keep_rest } => {
                *keep_rest
                    || children.iter().any(|(_, _, n)| n.emits)
                    || any.as_ref().is_some_and(|n| n.emits)
                    || each.as_ref().is_some_and(|n| n.emits)
            }
        };
        Node {
            mode,
            children,
            any,
            each,
            capture: self.capture,
            subject: self.subject,
            emits,
            scan,
        }
    }
}

fn merge_opt(mine: &mut Option<Box<Draft>>, general: Option<&Draft>) {
    if let Some(g) = general {
        match mine {
            Some(m) => m.merge_under(g),
            None => *mine = Some(Box::new(g.clone())),
        }
    }
}

/// Compile one field set, with capture slot `i` at `captures[i]` and
/// subject mark `i` at `subjects[i]`. `markers` are paths the policy names
/// elsewhere (subjects, consent, conditions): they add no action, only the
/// shape the walk checks on the way to them.
pub fn build(
    fields: &FieldSet,
    captures: &[&FieldPath],
    markers: &[&FieldPath],
    subjects: &[&FieldPath],
    scan: ScanMode,
) -> Node {
    let mut root = Draft::default();
    for entry in &fields.entries {
        let draft = root.insert(&entry.path.0);
        draft.action = Some(entry.action.clone());
        draft.scan = entry.scan;
    }
    for path in markers {
        root.insert(&path.0);
    }
    for (slot, path) in captures.iter().enumerate() {
        root.insert(&path.0).capture = Some(slot as u16);
    }
    for (i, path) in subjects.iter().enumerate() {
        let index = i as u16;
        for len in 1..path.0.len() {
            let on_the_way = root.insert(path.0.get(..len).unwrap_or_default());
            if on_the_way.subject.is_none() {
                on_the_way.subject = Some(SubjectMark {
                    index,
                    exact: false,
                });
            }
        }
        let at = root.insert(&path.0);
        if !at.subject.is_some_and(|m| m.exact) {
            at.subject = Some(SubjectMark { index, exact: true });
        }
    }
    root.resolve_wildcards();
    // The root is the event object itself: look inside, keep nothing unlisted.
    let mut node = root.finish(false, scan);
    if !matches!(node.mode, Mode::Descend { .. }) {
        node.mode = Mode::Descend { keep_rest: false };
    }
    node
}

/// How a tree could let a subject identifier out, if it could.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Copied verbatim (an entry or a kept parent keeps it).
    Kept,
    /// Rewritten by a generaliser (`ip_prefix`, `url`, `redact`, ...): not a
    /// pseudonym, so the identifier may survive it.
    Generalised(&'static str),
    /// The identifier is an object or array and something inside it is kept.
    ContentKept,
}

/// Whether the value(s) at `path` (wildcards and `[]` allowed) could reach
/// the output as anything but a pseudonym. Every branch of the tree that a
/// wildcard segment could take is followed.
/// Where `path` has a `*` with more segments after it right under a node
/// that keeps its unnamed members (a kept parent): that `*` makes every
/// member the path does not name expect an object, so the scalars and
/// arrays the kept parent would copy are removed (`type_mismatch`).
/// Returns the kept parent's path.
pub fn wildcard_under_kept_parent(root: &Node, path: &FieldPath) -> Option<FieldPath> {
    let mut node = root;
    for (i, seg) in path.0.iter().enumerate() {
        node = match seg {
            Segment::Key(k) => node.child(k.as_bytes())?,
            Segment::Any => {
                if i + 1 < path.0.len() && matches!(node.mode, Mode::Descend { keep_rest: true }) {
                    return Some(FieldPath(path.0.get(..i)?.to_vec()));
                }
                node.any.as_deref()?
            }
            Segment::Each => node.each.as_deref()?,
        };
    }
    None
}

pub fn exposure(root: &Node, path: &FieldPath) -> Option<Exposure> {
    exposure_at(root, &path.0, false)
}

/// [`exposure`] of `path` sent in another shape (see [`exposure_at`]):
/// what leaks when an event wraps a step of the way in an array, or sends
/// an object where the path names an array.
pub fn reshaped_exposure(root: &Node, path: &FieldPath) -> Option<Exposure> {
    exposure_at(root, &path.0, true)
}

/// Whether anything inside a value walked at `node` leaves as other than a pseudonym.
fn exposes_content(node: &Node) -> bool {
    match &node.mode {
        Mode::Keep => true,
        Mode::Drop => false,
        Mode::Transform(action) => !matches!(action, Action::Pseudonymise { .. }),
        Mode::Descend { keep_rest } => {
            *keep_rest
                || node.children.iter().any(|(_, _, n)| exposes_content(n))
                || node.any.as_deref().is_some_and(exposes_content)
                || node.each.as_deref().is_some_and(exposes_content)
        }
    }
}

/// What the walk at `node` does with the identifier `path` below it. An
/// event may send any step of the way in another shape, and the walk
/// follows the shape it meets: an array where an object was named (`a.b`
/// arrives as `{"a": [{"b": ...}]}`, walked by `a[]`'s entries) or an
/// object where an array was (`a[].b` as `{"a": {"b": ...}}`). Each such
/// way is checked: the identifier is the same value whatever it is wrapped in.
fn exposure_at(node: &Node, path: &[Segment], reshapes: bool) -> Option<Exposure> {
    exposure_exact(node, path, reshapes).or_else(|| match path.first() {
        _ if !reshapes => None,
        // An array where the entry named an object member.
        Some(Segment::Key(_) | Segment::Any) => node
            .each
            .as_deref()
            .and_then(|each| exposure_at(each, path, true)),
        // An object where the entry named an array.
        Some(Segment::Each) => exposure_at(node, path.get(1..).unwrap_or_default(), true),
        None => None,
    })
}

fn exposure_exact(node: &Node, rest: &[Segment], reshapes: bool) -> Option<Exposure> {
    let keep_rest = match &node.mode {
        Mode::Keep => return Some(Exposure::Kept),
        Mode::Drop => return None,
        // A transform applies to scalars: containers at or above the subject
        // are removed (`type_mismatch`), so only the value itself matters.
        Mode::Transform(action) => {
            return match action {
                Action::Pseudonymise { .. } => None,
                _ if rest.is_empty() => Some(Exposure::Generalised(action.name())),
                _ => None,
            };
        }
        Mode::Descend { keep_rest } => *keep_rest,
    };
    let Some((seg, rest)) = rest.split_first() else {
        // The identifier itself is walked here: as a scalar it is a shape
        // mismatch and removed; as a container, whatever emits inside it leaks.
        return exposes_content(node).then_some(Exposure::ContentKept);
    };
    // Members no entry names are copied whole under a kept parent, but only
    // where objects are walked at all (elsewhere an object is a mismatch).
    let unnamed_kept = keep_rest && node.expects_object();
    match seg {
        Segment::Key(k) => match node.child(k.as_bytes()) {
            Some(n) => exposure_at(n, rest, reshapes),
            None => unnamed_kept.then_some(Exposure::Kept),
        },
        Segment::Any => {
            let named = node.children.iter().map(|(_, _, n)| n);
            let mut found = named
                .chain(node.any.as_deref())
                .find_map(|n| exposure_at(n, rest, reshapes));
            if found.is_none() && node.any.is_none() && unnamed_kept {
                found = Some(Exposure::Kept);
            }
            found
        }
        Segment::Each => node
            .each
            .as_deref()
            .and_then(|n| exposure_at(n, rest, reshapes)),
    }
}

/// Whether a tree can write a scalar at the exact `path` (keys only, as
/// `message_key: { from }` names one): the action that would, `"keep"` for
/// a value copied verbatim (an entry, or a kept parent that does not name
/// it), else the transform's name. `None` when nothing can be written
/// there: no entry reaches it, it is dropped, it lies below a transform
/// (which writes a scalar, never anything inside one), or entries lie
/// below it (the walk expects an object there and writes no scalar).
pub fn scalar_output(root: &Node, path: &FieldPath) -> Option<&'static str> {
    let mut node = root;
    let mut rest = path.0.as_slice();
    loop {
        let keep_rest = match &node.mode {
            Mode::Keep => return Some("keep"),
            Mode::Drop => return None,
            Mode::Transform(action) => return rest.is_empty().then(|| action.name()),
            Mode::Descend { keep_rest } => *keep_rest,
        };
        let (Segment::Key(k), tail) = rest.split_first()? else {
            return None;
        };
        match node.child(k.as_bytes()) {
            Some(n) => node = n,
            // Members no entry names are copied whole under a kept parent.
            None => return (keep_rest && node.expects_object()).then_some("keep"),
        }
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::{fingerprint, fingerprint_at, same_key};

    /// Reading a short key as a masked word gives the byte-by-byte
    /// fingerprint, whatever follows the key and wherever the buffer ends.
    #[test]
    fn fingerprint_at_is_the_fingerprint_of_the_span() {
        let buf: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        for start in 0..buf.len() {
            for end in start..=buf.len().min(start + 12) {
                for cut in end..=buf.len().min(end + 9) {
                    let b = &buf[..cut];
                    assert_eq!(
                        fingerprint_at(b, start, end),
                        fingerprint(&b[start..end]),
                        "{start}..{end} of {cut}"
                    );
                }
            }
        }
    }

    /// `same_key` after equal fingerprints is plain byte equality, for
    /// every pair of short keys over a small alphabet (lengths 0 to 10,
    /// so both sides of the eight-byte boundary) and with bytes that only
    /// differ past the eighth.
    #[test]
    fn same_key_after_equal_fingerprints_is_byte_equality() {
        let alphabet = [b'a', b'b', 0u8, 0xC3, b'"'];
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=10usize {
            for seed in 0..40usize {
                keys.push(
                    (0..len)
                        .map(|i| alphabet[(seed * 7 + i * i + len) % alphabet.len()])
                        .collect(),
                );
            }
        }
        keys.push(b"abcdefghX".to_vec());
        keys.push(b"abcdefghY".to_vec());
        for a in &keys {
            for b in &keys {
                if fingerprint(a) == fingerprint(b) {
                    assert_eq!(same_key(a, b), a == b, "{a:?} {b:?}");
                }
            }
            assert_eq!(fingerprint(a), fingerprint(&a.clone()));
        }
        // The fingerprint is the little-endian first word, rotated, with the length.
        assert_eq!(
            fingerprint(b"ab"),
            (u64::from(b'a') | u64::from(b'b') << 8).rotate_left(5) ^ 2
        );
    }
}
