//! The ledger behind at-least-once delivery: which input offsets of each
//! partition are still awaiting acknowledgement of their outputs, and how
//! far each partition may be committed.
//!
//! Invariant: the commit position of a partition only ever moves to
//! `o + 1` where every tracked offset up to and including `o` is complete.
//! An offset is complete when every output it produced (one per forwarding
//! route, or one dead-letter record) has been acknowledged, or at once when
//! it produced none (every route dropped it). So a crash at any moment
//! re-reads, and re-produces, at most what was not yet acknowledged.
//!
//! Each assignment of a partition is a new generation: completions that
//! arrive for an earlier generation (after a revoke) are ignored, because
//! the partition's new owner re-reads from the last commit.

// On the data path: no input or broker reply may reach an `unwrap`,
// `expect`, `panic!` or unchecked index here (tests are exempt).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A topic and partition.
pub type Partition = (Arc<str>, i32);

/// What [`Ledger::track`] hands out, to be passed back to [`Ledger::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub partition: Partition,
    pub offset: i64,
    pub generation: u64,
}

#[derive(Debug, Default)]
struct Entry {
    offset: i64,
    done: bool,
}

#[derive(Debug, Default)]
struct PartitionLedger {
    generation: u64,
    pending: VecDeque<Entry>,
}

/// Pending offsets per partition. Not thread-safe by itself; the Kafka
/// adapter keeps it behind a mutex.
#[derive(Debug, Default)]
pub struct Ledger {
    partitions: HashMap<Partition, PartitionLedger>,
    next_generation: u64,
}

impl Ledger {
    /// Start a new generation for a partition, and return it; anything
    /// pending is forgotten.
    pub fn assign(&mut self, p: &Partition) -> u64 {
        self.next_generation += 1;
        let ledger = self.partitions.entry(p.clone()).or_default();
        ledger.generation = self.next_generation;
        ledger.pending.clear();
        self.next_generation
    }

    /// Forget a partition; later completions for it are ignored. Returns how
    /// many offsets were still pending (abandoned to the next owner).
    pub fn revoke(&mut self, p: &Partition) -> usize {
        self.partitions.remove(p).map_or(0, |l| l.pending.len())
    }

    /// The live generation of `p`, while it is assigned.
    pub fn generation(&self, p: &Partition) -> Option<u64> {
        self.partitions.get(p).map(|l| l.generation)
    }

    /// Record that `offset` was read from `p` in its assignment
    /// `generation`; `None` (nothing recorded) when `p` is no longer
    /// assigned in that generation: the input belongs to an earlier owner's
    /// read and its partition's current owner reads it again.
    ///
    /// The consumer delivers a partition's offsets in increasing order, but
    /// may rewind (an offset reset, a broker re-sending a batch): then the
    /// pending entries from `offset` on are replaced by the re-read ones,
    /// and a late completion of the earlier read of the same offset counts
    /// for it (same input, its outputs acknowledged), so nothing below an
    /// unacknowledged input is ever committed.
    pub fn track(&mut self, p: &Partition, generation: u64, offset: i64) -> Option<Ticket> {
        let ledger = self
            .partitions
            .get_mut(p)
            .filter(|l| l.generation == generation)?;
        while let Some(e) = ledger.pending.pop_back() {
            if e.offset < offset {
                ledger.pending.push_back(e);
                break;
            }
        }
        ledger.pending.push_back(Entry {
            offset,
            done: false,
        });
        Some(Ticket {
            partition: p.clone(),
            offset,
            generation,
        })
    }

    /// Whether a ticket still belongs to the live generation of its partition.
    pub fn is_live(&self, t: &Ticket) -> bool {
        self.partitions
            .get(&t.partition)
            .is_some_and(|l| l.generation == t.generation)
    }

    /// Mark a ticket's offset complete. Returns the new commit position (the
    /// next offset to read) if it advanced.
    pub fn complete(&mut self, t: &Ticket) -> Option<i64> {
        let ledger = self.partitions.get_mut(&t.partition)?;
        if ledger.generation != t.generation {
            return None;
        }
        let i = ledger
            .pending
            .binary_search_by_key(&t.offset, |e| e.offset)
            .ok()?;
        if let Some(e) = ledger.pending.get_mut(i) {
            e.done = true;
        }
        let mut position = None;
        while let Some(e) = ledger.pending.pop_front() {
            if !e.done {
                ledger.pending.push_front(e);
                break;
            }
            position = Some(e.offset + 1);
        }
        position
    }

    /// Forget the pending offsets of `p` from `offset` on, in its live
    /// `generation` (an aborted transaction's inputs, which are read again
    /// from `offset`). Returns how many were forgotten.
    pub fn rewind(&mut self, p: &Partition, generation: u64, offset: i64) -> usize {
        let Some(ledger) = self
            .partitions
            .get_mut(p)
            .filter(|l| l.generation == generation)
        else {
            return 0;
        };
        let keep = ledger.pending.partition_point(|e| e.offset < offset);
        let forgotten = ledger.pending.len() - keep;
        ledger.pending.truncate(keep);
        forgotten
    }

    /// Offsets of `p` still awaiting acknowledgement.
    pub fn pending(&self, p: &Partition) -> usize {
        self.partitions.get(p).map_or(0, |l| l.pending.len())
    }

    /// Whether `p` is assigned and not revoked since.
    pub fn holds(&self, p: &Partition) -> bool {
        self.partitions.contains_key(p)
    }

    /// How many partitions are assigned.
    pub fn assigned(&self) -> usize {
        self.partitions.len()
    }

    /// Every assigned partition with its pending count.
    pub fn partitions(&self) -> impl Iterator<Item = (&Partition, usize)> {
        self.partitions.iter().map(|(p, l)| (p, l.pending.len()))
    }

    /// Offsets awaiting acknowledgement across all partitions.
    pub fn total_pending(&self) -> usize {
        self.partitions.values().map(|l| l.pending.len()).sum()
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
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("raw"), n)
    }

    /// Track `offset` of partition `n` in its live generation, assigning
    /// the partition first if it is not.
    fn read(l: &mut Ledger, n: i32, offset: i64) -> Ticket {
        let g = match l.generation(&p(n)) {
            Some(g) => g,
            None => l.assign(&p(n)),
        };
        l.track(&p(n), g, offset).unwrap()
    }

    #[test]
    fn a_rewind_forgets_the_pending_offsets_from_its_offset_on_and_nothing_before() {
        let mut l = Ledger::default();
        let tickets: Vec<Ticket> = (10..15).map(|o| read(&mut l, 0, o)).collect();
        let g = l.generation(&p(0)).unwrap();
        assert_eq!(l.rewind(&p(0), g + 1, 12), 0, "another generation's");
        assert_eq!(l.rewind(&p(0), g, 12), 3);
        assert_eq!(l.pending(&p(0)), 2);
        assert_eq!(l.complete(&tickets[3]), None, "13 was forgotten");
        assert_eq!(l.complete(&tickets[0]), Some(11));
        // Read again from 12: tracked afresh, committed in order.
        let again: Vec<Ticket> = (12..15).map(|o| read(&mut l, 0, o)).collect();
        assert_eq!(l.complete(&tickets[1]), Some(12));
        for t in &again {
            l.complete(t);
        }
        assert_eq!(l.pending(&p(0)), 0);
    }

    #[test]
    fn inputs_are_tracked_only_in_the_live_generation_of_an_assigned_partition() {
        let mut l = Ledger::default();
        assert_eq!(l.track(&p(0), 1, 0), None, "never assigned");
        let first = l.assign(&p(0));
        assert!(l.track(&p(0), first, 0).is_some());
        l.revoke(&p(0));
        assert_eq!(l.track(&p(0), first, 1), None, "revoked");
        let second = l.assign(&p(0));
        assert_ne!(first, second);
        assert_eq!(
            l.track(&p(0), first, 1),
            None,
            "read under the first assignment, arriving in the second"
        );
        assert_eq!(l.pending(&p(0)), 0);
        assert!(l.track(&p(0), second, 1).is_some());
    }

    #[test]
    fn position_advances_only_over_a_complete_prefix() {
        let mut l = Ledger::default();
        let t: Vec<Ticket> = (10..14).map(|o| read(&mut l, 0, o)).collect();
        assert_eq!(l.complete(&t[1]), None, "10 is still pending");
        assert_eq!(l.complete(&t[2]), None);
        assert_eq!(
            l.complete(&t[0]),
            Some(13),
            "10, 11, 12 done: next read is 13"
        );
        assert_eq!(l.pending(&p(0)), 1);
        assert_eq!(l.complete(&t[3]), Some(14));
        assert_eq!(l.total_pending(), 0);
    }

    #[test]
    fn a_partition_is_held_from_its_assignment_until_its_revocation() {
        let mut l = Ledger::default();
        assert!(!l.holds(&p(0)));
        l.assign(&p(0));
        assert!(l.holds(&p(0)), "held before anything is read");
        l.revoke(&p(0));
        assert!(!l.holds(&p(0)));
    }

    #[test]
    fn partitions_are_independent() {
        let mut l = Ledger::default();
        let a = read(&mut l, 0, 5);
        let b = read(&mut l, 1, 7);
        assert_eq!(l.complete(&b), Some(8));
        assert_eq!(l.pending(&p(0)), 1);
        assert_eq!(l.complete(&a), Some(6));
    }

    #[test]
    fn completions_from_a_revoked_generation_are_ignored() {
        let mut l = Ledger::default();
        let old = read(&mut l, 0, 1);
        assert_eq!(l.revoke(&p(0)), 1, "one offset abandoned");
        assert!(!l.is_live(&old));
        l.assign(&p(0));
        let new = read(&mut l, 0, 1);
        assert_eq!(
            l.complete(&old),
            None,
            "stale ticket must not move the new position"
        );
        assert_eq!(l.pending(&p(0)), 1);
        assert_eq!(l.complete(&new), Some(2));
    }

    #[test]
    fn a_rewind_re_tracks_offsets_without_committing_past_pending_ones() {
        let mut l = Ledger::default();
        let t: Vec<Ticket> = (0..4).map(|o| read(&mut l, 0, o)).collect();
        // The consumer rewinds to 2 and delivers 2 and 3 again.
        let again: Vec<Ticket> = (2..4).map(|o| read(&mut l, 0, o)).collect();
        assert_eq!(l.pending(&p(0)), 4, "0, 1 and the re-read 2, 3");
        assert_eq!(l.complete(&again[1]), None, "0 is still pending");
        assert_eq!(l.complete(&t[0]), Some(1));
        assert_eq!(l.complete(&t[1]), Some(2));
        assert_eq!(l.complete(&again[0]), Some(4));
        assert_eq!(l.total_pending(), 0);
    }

    #[test]
    fn completing_twice_or_unknown_offsets_changes_nothing() {
        let mut l = Ledger::default();
        let a = read(&mut l, 0, 1);
        let b = read(&mut l, 0, 2);
        assert_eq!(l.complete(&a), Some(2));
        assert_eq!(l.complete(&a), None);
        let ghost = Ticket {
            offset: 99,
            ..b.clone()
        };
        assert_eq!(l.complete(&ghost), None);
        assert_eq!(l.complete(&b), Some(3));
    }
}
