//! The decisions behind `delivery: exactly_once`, apart from Kafka (pure):
//! when an open transaction is committed, what a failed transaction call
//! leads to, and the transactional id of an input partition's producer.
//!
//! A transaction holds the outputs and dead letters of a run of inputs of
//! one input partition, in order, and the offset after the last of them.
//! It is committed when it holds [`TxnLimits::max_events`] inputs, when it
//! is [`TxnLimits::max_age`] old, or when its partition has no room left in
//! `limits.max_in_flight` (the inputs of an open transaction are in flight
//! until it commits, so a full partition would otherwise wait for the clock).

// On the data path: no input or broker reply may reach an `unwrap`,
// `expect`, `panic!` or unchecked index here (tests are exempt).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

pub use crate::config::TxnLimits;

/// Why an open transaction is committed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// It holds `max_events` inputs.
    Full,
    /// It is `max_age` old.
    Old,
    /// Its partition may take no more inputs before it commits.
    NoRoom,
}

/// Whether a transaction holding `events` inputs, opened `age` ago, whose
/// partition may take `room` more inputs, is to be committed now. A
/// transaction with no input is never due (there is nothing to commit).
pub fn due(limits: &TxnLimits, events: usize, age: Duration, room: usize) -> Option<Due> {
    if events == 0 {
        None
    } else if events >= limits.max_events {
        Some(Due::Full)
    } else if age >= limits.max_age {
        Some(Due::Old)
    } else if room == 0 {
        Some(Due::NoRoom)
    } else {
        None
    }
}

/// How long until a transaction opened `age` ago is due by its age: how
/// long its worker may sleep (`None`: no transaction is open).
pub fn wake_in(limits: &TxnLimits, open_for: Option<Duration>) -> Option<Duration> {
    open_for.map(|age| limits.max_age.saturating_sub(age))
}

/// What librdkafka says of a failed transaction call (its error's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxnError {
    /// The producer cannot go on (fenced by a newer instance, or broken).
    pub fatal: bool,
    /// The transaction must be aborted; the producer can then go on.
    pub abortable: bool,
    /// The same call may be made again.
    pub retriable: bool,
}

/// What to do after a failed transaction call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Make the same call again (a timeout, a coordinator moving).
    Retry,
    /// Abort the transaction, rewind the partition to its last committed
    /// offset and process its inputs again.
    Abort,
    /// Stop: this producer cannot go on (veil exits 70 to be restarted;
    /// nothing uncommitted is lost, the next owner re-reads it).
    Fatal,
}

/// The answer to `e`. Fatal wins; an error that is neither abortable nor
/// retriable (librdkafka says nothing more) is aborted: an abort is always
/// safe, since nothing of an aborted transaction is committed.
pub fn next(e: TxnError) -> Next {
    if e.fatal {
        Next::Fatal
    } else if e.abortable {
        Next::Abort
    } else if e.retriable {
        Next::Retry
    } else {
        Next::Abort
    }
}

/// A record of an input refused by the broker (or librdkafka) for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal<R> {
    /// The input's offset.
    pub offset: i64,
    /// The topic the record was for.
    pub topic: String,
    /// Why, as the dead letter will say.
    pub reason: R,
    /// The error code, for the dead letter and the log.
    pub code: String,
}

/// The refusals of one partition's records across its aborted
/// transactions. At least once, a refused record is sent again until it has
/// been refused `attempts` times, then a dead letter takes its place. Under
/// exactly-once a refused record fails its whole transaction, which is
/// aborted and processed again; without this book it would fail every time,
/// and the partition would stall. A record refused `attempts` times (counted
/// by input offset and topic, since the processing that makes it again is
/// the same) is replaced by a dead letter the next time it is made, in the
/// transaction that carries it. Refusals are rare: a list is enough.
#[derive(Debug)]
pub struct Refusals<R> {
    attempts: u32,
    seen: Vec<(Refusal<R>, u32)>,
}

impl<R: Clone> Refusals<R> {
    pub fn new(attempts: u32) -> Self {
        Refusals {
            attempts,
            seen: Vec::new(),
        }
    }

    /// Count one more refusal of the record; returns how many it has had.
    pub fn refused(&mut self, refusal: Refusal<R>) -> u32 {
        let found = self
            .seen
            .iter_mut()
            .find(|(r, _)| r.offset == refusal.offset && r.topic == refusal.topic);
        match found {
            Some((last, n)) => {
                *n = n.saturating_add(1);
                *last = refusal;
                *n
            }
            None => {
                self.seen.push((refusal, 1));
                1
            }
        }
    }

    /// The last refusal of the record at `offset` for `topic` if it has been
    /// refused for good: then a dead letter is sent in its place.
    pub fn for_good(&self, offset: i64, topic: &str) -> Option<&Refusal<R>> {
        self.seen
            .iter()
            .find(|(r, n)| r.offset == offset && r.topic == topic && *n >= self.attempts)
            .map(|(r, _)| r)
    }

    /// Inputs before `next` are committed: their refusals are forgotten.
    pub fn committed(&mut self, next: i64) {
        self.seen.retain(|(r, _)| r.offset >= next);
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The `transactional.id` of the producer that writes what is made of
/// input partition `partition` of `topic` for consumer group `group`:
/// stable across restarts and the same on every instance, so the instance
/// that is assigned the partition next fences any earlier producer of it
/// (a zombie) when it starts its own. Unique per group and partition: a
/// topic name holds no `:`, so the last two fields are always the topic and
/// the partition, whatever the group id holds.
pub fn transactional_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}:{topic}:{partition}")
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

    fn limits(max_events: usize, max_ms: u64) -> TxnLimits {
        TxnLimits {
            max_events,
            max_age: Duration::from_millis(max_ms),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_empty_transaction_is_never_due_whatever_its_age_or_room() {
        let l = limits(10, 100);
        assert_eq!(due(&l, 0, 10 * l.max_age, 0), None);
    }

    #[test]
    fn a_transaction_is_due_at_max_events_and_not_one_before() {
        let l = limits(10, 100);
        assert_eq!(due(&l, 9, MS, 5), None);
        assert_eq!(due(&l, 10, MS, 5), Some(Due::Full));
        assert_eq!(due(&l, 11, MS, 5), Some(Due::Full));
    }

    #[test]
    fn a_transaction_is_due_at_max_age_and_not_a_millisecond_before() {
        let l = limits(10, 100);
        assert_eq!(due(&l, 1, 99 * MS, 5), None);
        assert_eq!(due(&l, 1, 100 * MS, 5), Some(Due::Old));
    }

    #[test]
    fn a_transaction_whose_partition_has_no_room_is_due_at_once() {
        let l = limits(10, 100);
        assert_eq!(due(&l, 3, MS, 0), Some(Due::NoRoom));
        assert_eq!(due(&l, 3, MS, 1), None);
    }

    #[test]
    fn count_wins_over_age_and_age_over_room() {
        let l = limits(10, 100);
        assert_eq!(due(&l, 10, 200 * MS, 0), Some(Due::Full));
        assert_eq!(due(&l, 3, 200 * MS, 0), Some(Due::Old));
    }

    #[test]
    fn a_worker_sleeps_until_its_oldest_transaction_is_due_and_no_longer() {
        let l = limits(10, 100);
        assert_eq!(wake_in(&l, None), None);
        assert_eq!(wake_in(&l, Some(30 * MS)), Some(70 * MS));
        assert_eq!(wake_in(&l, Some(300 * MS)), Some(Duration::ZERO));
    }

    #[test]
    fn fatal_errors_stop_abortable_ones_abort_retriable_ones_retry() {
        let e = |fatal, abortable, retriable| TxnError {
            fatal,
            abortable,
            retriable,
        };
        assert_eq!(next(e(true, true, true)), Next::Fatal);
        assert_eq!(next(e(true, false, false)), Next::Fatal);
        assert_eq!(next(e(false, true, true)), Next::Abort);
        assert_eq!(next(e(false, false, true)), Next::Retry);
        assert_eq!(next(e(false, false, false)), Next::Abort, "unknown: abort");
    }

    fn refusal(offset: i64, topic: &str) -> Refusal<&'static str> {
        Refusal {
            offset,
            topic: topic.to_owned(),
            reason: "rejected_by_broker",
            code: "InvalidRecord".to_owned(),
        }
    }

    #[test]
    fn a_record_is_refused_for_good_at_the_attempts_and_not_one_before() {
        let mut book = Refusals::new(3);
        assert!(book.for_good(7, "clean").is_none());
        assert_eq!(book.refused(refusal(7, "clean")), 1);
        assert_eq!(book.refused(refusal(7, "clean")), 2);
        assert!(book.for_good(7, "clean").is_none());
        assert_eq!(book.refused(refusal(7, "clean")), 3);
        assert_eq!(book.for_good(7, "clean"), Some(&refusal(7, "clean")));
    }

    #[test]
    fn refusals_count_per_input_and_topic_so_other_records_are_never_replaced() {
        let mut book = Refusals::new(2);
        book.refused(refusal(7, "clean"));
        book.refused(refusal(7, "clean"));
        book.refused(refusal(8, "clean"));
        book.refused(refusal(7, "other"));
        assert!(book.for_good(7, "clean").is_some());
        assert!(book.for_good(8, "clean").is_none(), "another input");
        assert!(book.for_good(7, "other").is_none(), "another route");
        assert!(book.for_good(6, "clean").is_none());
    }

    #[test]
    fn the_last_refusal_is_what_the_dead_letter_says() {
        let mut book = Refusals::new(2);
        book.refused(refusal(1, "t"));
        book.refused(Refusal {
            code: "PolicyViolation".to_owned(),
            ..refusal(1, "t")
        });
        assert_eq!(book.for_good(1, "t").unwrap().code, "PolicyViolation");
    }

    #[test]
    fn committed_inputs_are_forgotten_and_later_ones_kept() {
        let mut book = Refusals::new(1);
        book.refused(refusal(4, "t"));
        book.refused(refusal(5, "t"));
        book.committed(5);
        assert!(book.for_good(4, "t").is_none());
        assert!(book.for_good(5, "t").is_some());
        book.committed(6);
        assert!(book.is_empty());
    }

    #[test]
    fn transactional_ids_are_stable_and_distinct_per_group_and_partition() {
        assert_eq!(transactional_id("g", "raw", 3), "g:raw:3");
        assert_eq!(
            transactional_id("g", "raw", 3),
            transactional_id("g", "raw", 3)
        );
        let ids = [
            transactional_id("g", "raw", 0),
            transactional_id("g", "raw", 1),
            transactional_id("g", "raw2", 0),
            transactional_id("h", "raw", 0),
            // A group id with `:` cannot pass for another topic.
            transactional_id("g:raw", "0", 0),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
