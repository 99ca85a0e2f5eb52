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
use super::{Action, FieldSet};

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
}

impl Node {
    /// The node for object member `key` (whose fingerprint is `fp`), if any entry reaches it.
    #[inline]
    pub fn child_fp(&self, key: &[u8], fp: u64) -> Option<&Node> {
        for (f, k, node) in &self.children {
            if *f == fp && &**k == key {
                return Some(node);
            }
        }
        self.any.as_deref()
    }

    /// The node for object member `key`, if any entry reaches it.
    pub fn child(&self, key: &[u8]) -> Option<&Node> {
        self.child_fp(key, fingerprint(key))
    }

    /// A node that removes everything and captures nothing.
    pub fn drop_all() -> Node {
        Node {
            mode: Mode::Drop,
            children: Vec::new(),
            any: None,
            each: None,
            capture: None,
        }
    }
}

/// A cheap summary of a key: its length and first eight bytes. Equal keys
/// have equal fingerprints; most unequal keys do not.
#[inline(always)]
pub fn fingerprint(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = key.len().min(8);
    buf[..n].copy_from_slice(&key[..n]);
    u64::from_le_bytes(buf).rotate_left(5) ^ (key.len() as u64)
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
    pub purposes: u16,
    pub opt_out: Option<u16>,
}

/// Builds the plan for validated parts of a policy.
pub(super) fn plan(
    default: Option<&FieldSet>,
    rules: &[super::Rule],
    consent: Option<&super::Consent>,
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
        purposes: slot_for(&mut captures, &c.purposes),
        opt_out: c.opt_out.as_ref().map(|p| slot_for(&mut captures, p)),
    });
    let mut rule_plans = Vec::new();
    for rule in rules {
        let when = rule
            .when
            .iter()
            .map(|c| (slot_for(&mut captures, &c.path), c.any_of.clone()))
            .collect();
        rule_plans.push(RulePlan {
            when,
            fields: rule.fields.as_ref().map(|f| build(f, &[])),
            drop: rule.drop,
        });
    }
    let slots = captures.len();

    // Fold captures into the default tree when that is the only tree and
    // every captured path stays reachable; otherwise run a probe pass.
    let mut probe = None;
    let default_node = match default {
        Some(fields) if rules.is_empty() && !captures.is_empty() => {
            let folded = build(fields, &captures);
            if captures
                .iter()
                .enumerate()
                .all(|(slot, path)| reaches_capture(&folded, path, slot as u16))
            {
                Some(folded)
            } else {
                probe = Some(build(&FieldSet::default(), &captures));
                Some(build(fields, &[]))
            }
        }
        Some(fields) => Some(build(fields, &[])),
        None => None,
    };
    if !rules.is_empty() && !captures.is_empty() {
        probe = Some(build(&FieldSet::default(), &captures));
    }
    Plan {
        probe,
        default: default_node,
        rules: rule_plans,
        consent: consent_slots,
        slots,
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

    fn finish(self, inherited_keep: bool) -> Node {
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
        Node {
            mode,
            children: self
                .children
                .into_iter()
                .map(|(k, d)| {
                    let fp = fingerprint(k.as_bytes());
                    (fp, k.into_bytes().into_boxed_slice(), d.finish(keep_rest))
                })
                .collect(),
            any: self.any.map(|d| Box::new(d.finish(keep_rest))),
            each: self.each.map(|d| Box::new(d.finish(keep_rest))),
            capture: self.capture,
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

/// Compile one field set, with capture slot `i` at `captures[i]`.
pub fn build(fields: &FieldSet, captures: &[&FieldPath]) -> Node {
    let mut root = Draft::default();
    for entry in &fields.entries {
        root.insert(&entry.path.0).action = Some(entry.action.clone());
    }
    for (slot, path) in captures.iter().enumerate() {
        root.insert(&path.0).capture = Some(slot as u16);
    }
    root.resolve_wildcards();
    // The root is the event object itself: look inside, keep nothing unlisted.
    let mut node = root.finish(false);
    if !matches!(node.mode, Mode::Descend { .. }) {
        node.mode = Mode::Descend { keep_rest: false };
    }
    node
}

/// What finally happens to the value at an exact path (used to check that
/// subject identifiers are never kept in clear).
pub fn effective_mode<'a>(root: &'a Node, path: &FieldPath) -> &'a Mode {
    static DROP: Mode = Mode::Drop;
    static KEEP: Mode = Mode::Keep;
    let mut node = root;
    for seg in &path.0 {
        let next = match (seg, &node.mode) {
            (_, Mode::Keep) => return &KEEP,
            (_, Mode::Drop) | (_, Mode::Transform(_)) => return &node.mode,
            (Segment::Key(k), Mode::Descend { keep_rest }) => match node.child(k.as_bytes()) {
                Some(n) => n,
                None if *keep_rest => return &KEEP,
                None => return &DROP,
            },
            (Segment::Each, Mode::Descend { keep_rest }) => match node.each.as_deref() {
                Some(n) => n,
                None if *keep_rest => return &KEEP,
                None => return &DROP,
            },
            (Segment::Any, _) => return &DROP,
        };
        node = next;
    }
    match &node.mode {
        Mode::Descend { keep_rest: true } => &KEEP,
        Mode::Descend { keep_rest: false } => &DROP,
        m => m,
    }
}
