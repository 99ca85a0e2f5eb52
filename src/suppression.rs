//! The suppression (opt-out) list: subjects whose events must not flow.
//!
//! The list never holds a raw identifier, only keyed tokens:
//!
//! - suppression key = HKDF-SHA256(ikm = key bytes, salt = empty,
//!   info = `veil/v1/suppression`, length = 32) (RFC 5869), a key of its own,
//!   so a token never equals a pseudonym made under any purpose;
//! - token = HMAC-SHA256(suppression key, identifier bytes), written as
//!   `<key_id>:<64 hex digits>` (a *token line*).
//!
//! Each entry names the key it was made with, and an event is checked
//! under every key the list holds entries for: rotating the pseudonym key
//! (`keys.active`) leaves every entry matching as long as its key stays in
//! the key directory. An entry whose key is not loaded cannot be checked;
//! the list counts such entries ([`SuppressionList::unverifiable`]) so that
//! veil can say so loudly instead of letting that subject flow silently
//! (see `docs/erasure.md`).
//!
//! An event's identifiers are hashed after each normalisation the policy
//! applies to the subject path they are read from ([`variants`]); a listed
//! identifier is hashed in each of its [`FORMS`] (as given, trimmed,
//! lowercased, both), so a list made today still matches after a policy
//! adds or drops a normalisation.
//!
//! Pure: parsing and hashing only; the adapters read files and topics.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::engine::normalise_into;
use crate::keys::{Key, KeyRing};
use crate::policy::trie::{Mode, Node};
use crate::policy::{Action, Normalise, Policy, Segment};

/// The HKDF `info` of the suppression key.
pub const SUPPRESSION_INFO: &str = "veil/v1/suppression";

/// Hashes identifiers into tokens under one key.
#[derive(Clone)]
pub struct Tokeniser {
    key_id: String,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokeniser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokeniser")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Tokeniser {
    pub fn new(key: &Key) -> Tokeniser {
        let hk = Hkdf::<Sha256>::new(Some(&[]), key.secret.expose());
        let mut derived = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 length, and HMAC takes
        // keys of any length: neither error can happen.
        let _ = hk.expand(SUPPRESSION_INFO.as_bytes(), &mut derived[..]);
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&derived[..])
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        Tokeniser {
            key_id: key.id.clone(),
            mac,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The full token of `identifier` (already normalised).
    pub fn token(&self, identifier: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(identifier);
        mac.finalize().into_bytes().into()
    }

    /// The token line of `identifier`: `<key_id>:<hex>`.
    pub fn line(&self, identifier: &[u8]) -> String {
        format!("{}:{}", self.key_id, hex::encode(self.token(identifier)))
    }
}

/// What the list keeps of a token: its first 128 bits. Among a million
/// entries the chance that any other identifier's token shares them is
/// about 10^6 / 2^128 per event: never in practice.
type Short = u128;

fn short(token: &[u8; 32]) -> Short {
    let mut first = [0u8; 16];
    first.copy_from_slice(token.split_at(16).0);
    u128::from_be_bytes(first)
}

/// One parsed token line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub key_id: String,
    token: Short,
}

/// Why a token line cannot be read. Never quotes the line (it might be a
/// raw identifier put where a token belongs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(
        "not a token line: expected `<key_id>:<64 hex digits>` (make one with `veil suppress`)"
    )]
    Shape,
    #[error("the key id before `:` is not a valid key id")]
    KeyId,
    #[error(
        "a token line in another spelling (upper-case hex or white space): write it as `veil suppress` prints it"
    )]
    NotCanonical,
}

/// The forms a listed identifier is hashed in: every combination of the
/// normalisations a policy can apply (trim and lowercase commute).
pub const FORMS: [&[Normalise]; 4] = [
    &[],
    &[Normalise::Trim],
    &[Normalise::Lowercase],
    &[Normalise::Trim, Normalise::Lowercase],
];

impl Entry {
    /// Parse a token line exactly as [`Tokeniser::line`] writes it:
    /// `<key_id>:<64 lowercase hex digits>`, nothing around it. The topic's
    /// record keys must be in this form: compaction keeps one record per
    /// distinct key, so two spellings of one token could leave an entry
    /// added that a tombstone meant to remove.
    pub fn parse_exact(line: &str) -> Result<Entry, EntryError> {
        let entry = Entry::parse(line)?;
        let canonical = line.len() == entry.key_id.len() + 1 + 64
            && line
                .bytes()
                .skip(entry.key_id.len() + 1)
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if canonical {
            Ok(entry)
        } else {
            Err(EntryError::NotCanonical)
        }
    }

    /// Parse `<key_id>:<64 hex digits>` (surrounding white space allowed).
    pub fn parse(line: &str) -> Result<Entry, EntryError> {
        let line = line.trim();
        let (key_id, hex_token) = line.rsplit_once(':').ok_or(EntryError::Shape)?;
        if !crate::keys::id_ok(key_id) {
            return Err(EntryError::KeyId);
        }
        let mut token = [0u8; 32];
        if hex_token.len() != 64 || hex::decode_to_slice(hex_token, &mut token).is_err() {
            return Err(EntryError::Shape);
        }
        Ok(Entry {
            key_id: key_id.to_owned(),
            token: short(&token),
        })
    }

    /// The entry for `identifier` under `tokeniser`.
    pub fn of(tokeniser: &Tokeniser, identifier: &[u8]) -> Entry {
        Entry {
            key_id: tokeniser.key_id.clone(),
            token: short(&tokeniser.token(identifier)),
        }
    }
}

/// Where entries come from; each source is replaced or updated on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Identifier files (`suppression.files`, `veil apply --suppress`).
    Files,
    /// The suppression topic.
    Topic,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Files, Source::Topic];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Source::Files => "files",
            Source::Topic => "topic",
        }
    }
}

#[derive(Debug, Default)]
struct Sets {
    /// A tokeniser per loaded key.
    tokenisers: HashMap<String, Tokeniser>,
    /// Per key id, per source.
    by_key: HashMap<String, [HashSet<Short>; 2]>,
}

fn slot(source: Source) -> usize {
    match source {
        Source::Files => 0,
        Source::Topic => 1,
    }
}

/// The list, shared by every route and updated while veil runs.
#[derive(Debug)]
pub struct SuppressionList {
    sets: RwLock<Sets>,
    entries: AtomicUsize,
}

fn tokenisers(ring: &KeyRing) -> HashMap<String, Tokeniser> {
    ring.ids()
        .filter_map(|id| ring.get(id))
        .map(|k| (k.id.clone(), Tokeniser::new(k)))
        .collect()
}

impl SuppressionList {
    /// An empty list that can check entries made under any key of `ring`.
    pub fn new(ring: &KeyRing) -> SuppressionList {
        SuppressionList {
            sets: RwLock::new(Sets {
                tokenisers: tokenisers(ring),
                by_key: HashMap::new(),
            }),
            entries: AtomicUsize::new(0),
        }
    }

    /// Check entries under the keys of `ring` from now on (a reload).
    pub fn rekey(&self, ring: &KeyRing) {
        self.write().tokenisers = tokenisers(ring);
    }

    fn read(&self) -> RwLockReadGuard<'_, Sets> {
        self.sets.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Sets> {
        self.sets.write().unwrap_or_else(|e| e.into_inner())
    }

    fn recount(&self, sets: &Sets) {
        let n = sets
            .by_key
            .values()
            .map(|s| s.iter().map(HashSet::len).sum::<usize>())
            .sum();
        self.entries.store(n, Ordering::Relaxed);
    }

    /// Replace every entry of `source`.
    pub fn replace(&self, source: Source, entries: impl IntoIterator<Item = Entry>) {
        let mut sets = self.write();
        for s in sets.by_key.values_mut() {
            if let Some(set) = s.get_mut(slot(source)) {
                set.clear();
            }
        }
        for e in entries {
            let set = sets.by_key.entry(e.key_id).or_default();
            if let Some(set) = set.get_mut(slot(source)) {
                set.insert(e.token);
            }
        }
        sets.by_key
            .retain(|_, s| s.iter().any(|set| !set.is_empty()));
        self.recount(&sets);
    }

    /// Add (`true`) or remove (`false`) one entry of `source`.
    pub fn update(&self, source: Source, entry: Entry, add: bool) {
        let mut sets = self.write();
        let set = sets.by_key.entry(entry.key_id.clone()).or_default();
        let changed = match set.get_mut(slot(source)) {
            Some(set) if add => set.insert(entry.token),
            Some(set) => set.remove(&entry.token),
            None => false,
        };
        if !add && set.iter().all(HashSet::is_empty) {
            sets.by_key.remove(&entry.key_id);
        }
        if changed {
            if add {
                self.entries.fetch_add(1, Ordering::Relaxed);
            } else {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries, every source and key together (an identifier in a file and
    /// on the topic counts twice).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries made under a key that is not loaded: they cannot be checked.
    pub fn unverifiable(&self) -> Vec<(String, usize)> {
        let sets = self.read();
        let mut out: Vec<(String, usize)> = sets
            .by_key
            .iter()
            .filter(|(id, _)| !sets.tokenisers.contains_key(*id))
            .map(|(id, s)| (id.clone(), s.iter().map(HashSet::len).sum()))
            .collect();
        out.sort();
        out
    }

    /// A look at the list for one event: holds a read lock while it lives.
    pub fn view(&self) -> View<'_> {
        View { sets: self.read() }
    }
}

/// The list as one event sees it.
pub struct View<'a> {
    sets: RwLockReadGuard<'a, Sets>,
}

impl View<'_> {
    /// Whether `identifier` (normalised) is on the list under any key.
    pub fn contains(&self, identifier: &[u8]) -> bool {
        self.sets.by_key.iter().any(|(id, sets)| {
            let Some(t) = self.sets.tokenisers.get(id) else {
                return false;
            };
            let token = short(&t.token(identifier));
            sets.iter().any(|s| s.contains(&token))
        })
    }
}

/// Why an identifier file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read suppression file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not UTF-8 text")]
    Utf8 { path: std::path::PathBuf, line: u64 },
    #[error("{path}:{line}: looks like a token line but is not one ({why})")]
    BadToken {
        path: std::path::PathBuf,
        line: u64,
        why: EntryError,
    },
    #[error(
        "{path}: {count} token line(s) made under key `{key}`, which is not loaded: they could not be checked"
    )]
    UnknownKey {
        path: std::path::PathBuf,
        key: String,
        count: usize,
    },
}

/// Read suppression `files` and make their entries: a line that is a
/// token line (`<key_id>:<64 hex>`, as `veil suppress` and `veil erase
/// --suppress-file` write) is taken as it is, and must name a key of
/// `ring`; any other line is a raw identifier, hashed under `tokeniser` in
/// each of its [`FORMS`], and lives only while it is hashed. A line that
/// looks like a token line but is not one is an error, not an identifier.
/// (This module's only I/O.)
pub fn read_files(
    files: &[std::path::PathBuf],
    tokeniser: &Tokeniser,
    ring: &KeyRing,
) -> Result<Vec<Entry>, FileError> {
    let mut entries = Vec::new();
    for path in files {
        let text = Zeroizing::new(std::fs::read(path).map_err(|source| FileError::Read {
            path: path.clone(),
            source,
        })?);
        let mut raw = Vec::new();
        let mut unknown: Vec<(String, usize)> = Vec::new();
        for (line, text) in identifiers(&text, path)? {
            match Entry::parse(text) {
                Ok(entry) => {
                    if ring.get(&entry.key_id).is_none() {
                        match unknown.iter_mut().find(|(k, _)| *k == entry.key_id) {
                            Some((_, n)) => *n += 1,
                            None => unknown.push((entry.key_id.clone(), 1)),
                        }
                    }
                    entries.push(entry);
                }
                Err(why) if looks_like_token(text) => {
                    return Err(FileError::BadToken {
                        path: path.clone(),
                        line,
                        why,
                    });
                }
                Err(_) => raw.push(text),
            }
        }
        if let Some((key, count)) = unknown.into_iter().next() {
            return Err(FileError::UnknownKey {
                path: path.clone(),
                key,
                count,
            });
        }
        entries.extend(entries_for(tokeniser, raw));
    }
    Ok(entries)
}

/// `<something>:<32 or more hex digits>`: meant as a token line.
fn looks_like_token(line: &str) -> bool {
    line.rsplit_once(':').is_some_and(|(_, t)| {
        let t = t.trim();
        t.len() >= 32 && t.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The identifiers of one suppression file's text, with their line
/// numbers: one per line, `#` comments and blank lines ignored,
/// surrounding white space trimmed, a leading byte-order mark dropped.
/// `path` is only for messages.
pub fn identifiers<'t>(
    text: &'t [u8],
    path: &std::path::Path,
) -> Result<Vec<(u64, &'t str)>, FileError> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|_| FileError::Utf8 {
            path: path.to_owned(),
            line: i as u64 + 1,
        })?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push((i as u64 + 1, line));
    }
    Ok(out)
}

/// The distinct forms of `identifier` ([`FORMS`]), in that order.
pub fn forms(identifier: &str) -> Vec<Vec<u8>> {
    let mut seen: Vec<Vec<u8>> = Vec::with_capacity(FORMS.len());
    for steps in FORMS {
        let mut buf = Vec::new();
        normalise_into(identifier, steps, &mut buf);
        if !seen.contains(&buf) {
            seen.push(buf);
        }
    }
    seen
}

/// The entries for raw `identifiers` under `tokeniser`: one per identifier
/// and distinct form.
pub fn entries_for<'a>(
    tokeniser: &Tokeniser,
    identifiers: impl IntoIterator<Item = &'a str>,
) -> Vec<Entry> {
    let out: HashSet<Entry> = identifiers
        .into_iter()
        .flat_map(forms)
        .map(|form| Entry::of(tokeniser, &form))
        .collect();
    out.into_iter().collect()
}

/// The token lines of raw `identifier` under `tokeniser`: one per distinct
/// form of it (what `veil suppress` prints).
pub fn lines_for(tokeniser: &Tokeniser, identifier: &str) -> Vec<String> {
    forms(identifier)
        .iter()
        .map(|f| tokeniser.line(f))
        .collect()
}

/// Per subject path of `policy`, in order: the normalisations its values
/// are hashed with, i.e. those of the `pseudonymise` actions at, below or
/// above the path in the policy's trees (the default fields and every
/// rule's); only the identity when there is none (a subject the policy
/// drops is checked as it is).
pub fn variants(policy: &Policy) -> Vec<Vec<Vec<Normalise>>> {
    let plan = &policy.plan;
    let trees: Vec<&Node> = plan
        .default
        .iter()
        .chain(plan.rules.iter().filter_map(|r| r.fields.as_ref()))
        .collect();
    policy
        .subject
        .iter()
        .map(|path| {
            let mut found: Vec<Vec<Normalise>> = Vec::new();
            for tree in &trees {
                collect(tree, &path.0, &mut found);
            }
            if found.is_empty() {
                found.push(Vec::new());
            }
            found
        })
        .collect()
}

/// The normalisations of the `pseudonymise` actions at, below or above
/// (on the way to) the path `rest` from `node`.
fn collect(node: &Node, rest: &[Segment], found: &mut Vec<Vec<Normalise>>) {
    if let Mode::Transform(Action::Pseudonymise { normalise }) = &node.mode {
        if !found.contains(normalise) {
            found.push(normalise.clone());
        }
        return;
    }
    let Some((seg, rest)) = rest.split_first() else {
        below(node, found);
        return;
    };
    match seg {
        Segment::Key(k) => {
            if let Some(n) = node.child(k.as_bytes()) {
                collect(n, rest, found);
            }
        }
        Segment::Any => {
            for (_, _, n) in &node.children {
                collect(n, rest, found);
            }
            if let Some(n) = node.any.as_deref() {
                collect(n, rest, found);
            }
        }
        Segment::Each => {
            if let Some(n) = node.each.as_deref() {
                collect(n, rest, found);
            }
        }
    }
}

/// The normalisations of every `pseudonymise` at or below `node`.
fn below(node: &Node, found: &mut Vec<Vec<Normalise>>) {
    if let Mode::Transform(Action::Pseudonymise { normalise }) = &node.mode
        && !found.contains(normalise)
    {
        found.push(normalise.clone());
    }
    for (_, _, n) in &node.children {
        below(n, found);
    }
    for n in node.any.iter().chain(&node.each) {
        below(n, found);
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::keys::parse_key;

    fn key(id: &str, byte: u8) -> Key {
        let hex: String = (0..32)
            .map(|i| format!("{:02x}", byte.wrapping_add(i)))
            .collect();
        parse_key(id, hex.as_bytes(), Path::new("k.key")).unwrap()
    }

    #[test]
    fn a_token_line_round_trips_and_bad_lines_say_why_without_quoting() {
        let t = Tokeniser::new(&key("k1", 0));
        let line = t.line(b"alice@example.com");
        assert!(line.starts_with("k1:") && line.len() == 3 + 64, "{line}");
        assert_eq!(
            Entry::parse(&format!("  {line}\n")).unwrap(),
            Entry::of(&t, b"alice@example.com")
        );
        for bad in ["alice@example.com", "k1:abc", "k1:", ":00", "k 1:00"] {
            let e = Entry::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("alice"), "{e}");
        }
        let not_hex = format!("k1:{}", "zz".repeat(32));
        assert_eq!(Entry::parse(&not_hex), Err(EntryError::Shape));
    }

    #[test]
    fn a_token_is_neither_the_identifier_nor_a_pseudonym() {
        let k = key("k1", 0);
        let t = Tokeniser::new(&k);
        let p = crate::pseudonym::Pseudonymiser::new(
            &k,
            "suppression",
            &crate::policy::PseudonymOptions::default(),
        );
        let token = hex::encode(t.token(b"u1"));
        assert_ne!(token, p.pseudonym(b"u1"));
        assert!(!token.contains("u1"));
    }

    #[test]
    fn entries_match_under_their_own_key_across_a_rotation() {
        let (k1, k2) = (key("k1", 0), key("k2", 100));
        let ring = KeyRing::from_keys(vec![k1.clone(), k2.clone()], "k2").unwrap();
        let list = SuppressionList::new(&ring);
        list.update(Source::Topic, Entry::of(&Tokeniser::new(&k1), b"u1"), true);
        list.update(Source::Topic, Entry::of(&Tokeniser::new(&k2), b"u2"), true);
        let v = list.view();
        assert!(
            v.contains(b"u1"),
            "made under the retired key, still matched"
        );
        assert!(v.contains(b"u2"));
        assert!(!v.contains(b"u3"));
        drop(v);
        assert_eq!(list.len(), 2);
        assert!(list.unverifiable().is_empty());
    }

    #[test]
    fn entries_under_a_key_that_is_not_loaded_are_reported() {
        let ring = KeyRing::single(key("k2", 100));
        let list = SuppressionList::new(&ring);
        list.update(
            Source::Topic,
            Entry::of(&Tokeniser::new(&key("k1", 0)), b"u1"),
            true,
        );
        assert_eq!(list.unverifiable(), vec![("k1".to_owned(), 1)]);
    }

    #[test]
    fn sources_are_replaced_and_updated_independently() {
        let k = key("k1", 0);
        let t = Tokeniser::new(&k);
        let list = SuppressionList::new(&KeyRing::single(k));
        list.replace(Source::Files, [Entry::of(&t, b"a"), Entry::of(&t, b"b")]);
        list.update(Source::Topic, Entry::of(&t, b"c"), true);
        assert_eq!(list.len(), 3);
        list.replace(Source::Files, [Entry::of(&t, b"b")]);
        assert_eq!(list.len(), 2);
        assert!(!list.view().contains(b"a"));
        assert!(list.view().contains(b"c"), "the topic's entries stay");
        list.update(Source::Topic, Entry::of(&t, b"c"), false);
        list.update(Source::Topic, Entry::of(&t, b"c"), false);
        assert_eq!(list.len(), 1, "a second removal changes nothing");
        list.update(Source::Topic, Entry::of(&t, b"b"), true);
        assert_eq!(list.len(), 2, "on the topic and in a file: two entries");
    }

    #[test]
    fn identifier_files_skip_comments_and_blank_lines_and_report_bad_text_by_line() {
        let ids = identifiers(
            b"# opt-outs\nalice@example.com\n\n  u-42  \r\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(ids, vec![(2, "alice@example.com"), (4, "u-42")]);
        let bom = identifiers(b"\xEF\xBB\xBFalice\n", Path::new("f")).unwrap();
        assert_eq!(
            bom,
            vec![(1, "alice")],
            "a byte-order mark is not part of it"
        );
        let e = identifiers(b"ok\n\xff\n", Path::new("f")).unwrap_err();
        assert_eq!(e.to_string(), "f:2: not UTF-8 text");
    }

    #[test]
    fn a_file_may_hold_token_lines_and_raw_identifiers_alike() {
        let (k1, k2) = (key("k1", 0), key("k2", 100));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("optout.txt");
        let token = Tokeniser::new(&k2).line(b"made-elsewhere");
        std::fs::write(&file, format!("# mixed\nraw-id\n{token}\n")).unwrap();
        let ring = KeyRing::from_keys(vec![k1.clone(), k2.clone()], "k1").unwrap();
        let entries = read_files(std::slice::from_ref(&file), &Tokeniser::new(&k1), &ring).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.contains(&Entry::of(&Tokeniser::new(&k1), b"raw-id")));
        assert!(
            entries.contains(&Entry::of(&Tokeniser::new(&k2), b"made-elsewhere")),
            "a token line is taken as it is, under the key it names"
        );
        let only_k1 = KeyRing::single(k1.clone());
        let e = read_files(&[file], &Tokeniser::new(&k1), &only_k1).unwrap_err();
        assert!(
            e.to_string()
                .contains("under key `k2`, which is not loaded"),
            "{e}"
        );
    }

    #[test]
    fn topic_keys_must_be_token_lines_exactly_as_veil_writes_them() {
        let t = Tokeniser::new(&key("k1", 0));
        let line = t.line(b"u1");
        assert!(Entry::parse_exact(&line).is_ok());
        for other in [
            line.to_uppercase().replacen("K1", "k1", 1),
            format!(" {line}"),
            format!("{line}\n"),
        ] {
            assert_eq!(
                Entry::parse_exact(&other),
                Err(EntryError::NotCanonical),
                "{other:?}"
            );
        }
    }

    #[test]
    fn raw_identifiers_are_hashed_once_per_normalisation() {
        let k = key("k1", 0);
        let t = Tokeniser::new(&k);
        let entries = entries_for(&t, [" Alice@Example.com "]);
        assert_eq!(entries.len(), 4, "as given, trimmed, lowercased, both");
        for form in [
            &b" Alice@Example.com "[..],
            b"Alice@Example.com",
            b" alice@example.com ",
            b"alice@example.com",
        ] {
            assert!(entries.contains(&Entry::of(&t, form)));
        }
        assert_eq!(
            entries_for(&t, ["u1"]).len(),
            1,
            "equal forms are one entry"
        );
    }
}
