//! What the consume loop, the workers, the retrier and librdkafka's
//! callbacks share: the live stage, the book of pending inputs (the offset
//! [`Ledger`] and the positions it advanced), and the acknowledgement of
//! each input's outputs.
//!
//! Completion is signalled, not polled: [`Shared::complete`] notifies
//! [`Shared::wait_settled`] (revoke and shutdown) whenever a partition's
//! last pending input completes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::Control;
use super::produce::Resend;
use super::watchdog::Watchdog;
use crate::health::Health;
use crate::metrics::{Metrics, StageCounters};
use crate::offsets::{Ledger, Partition, Ticket};
use crate::stage::Stage;

/// The live policies and key with their counters: replaced as a whole on reload.
pub(super) struct Live {
    pub(super) stage: Stage,
    pub(super) counters: StageCounters,
}

impl Live {
    /// `stage` with every output record held to `record_limit` bytes
    /// ([`Stage::limit_records`]).
    pub(super) fn new(stage: Stage, metrics: &Metrics, record_limit: usize) -> Live {
        let counters = metrics.live(&stage.policies(), stage.key_id());
        Live {
            stage: stage.limit_records(record_limit),
            counters,
        }
    }
}

/// The ledger and the commit positions it has advanced but the consumer has
/// not yet stored; one lock so positions are stored in the order they advance.
#[derive(Default)]
struct Book {
    ledger: Ledger,
    positions: HashMap<Partition, i64>,
    /// Per partition holding inputs: when it last made progress (its
    /// commit position advanced), or when its first pending input came.
    progress: HashMap<Partition, Instant>,
}

/// What [`Shared::partitions`] reports of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionState {
    pub(super) partition: Partition,
    /// Inputs awaiting acknowledgement.
    pub(super) pending: usize,
    /// Time since its last progress while it held inputs (zero when idle).
    pub(super) waiting: Duration,
}

/// Where the outputs go.
pub(super) struct Topics {
    /// Per route, in route order.
    pub(super) routes: Vec<String>,
    pub(super) dead_letter: String,
}

pub(super) struct Shared {
    book: Mutex<Book>,
    /// Notified when a partition's last pending input completes.
    settled: Condvar,
    live: RwLock<Arc<Live>>,
    pub(super) metrics: Metrics,
    pub(super) health: Arc<Health>,
    pub(super) control: Control,
    pub(super) topics: Topics,
    /// Largest clean event (plus key) or dead-letter record veil makes.
    pub(super) record_limit: usize,
    pub(super) drain_timeout: Duration,
    pub(super) resend: std::sync::mpsc::Sender<Resend>,
    /// Set on shutdown: rebalance callbacks stop waiting for deliveries.
    pub(super) closing: AtomicBool,
    /// Set when the drain timeout has passed: nothing is sent or re-sent.
    pub(super) abandon: AtomicBool,
    /// Raised when a worker or the retrier dies.
    pub(super) watchdog: Watchdog,
}

/// One input's outstanding output records. The last acknowledgement
/// completes the input in the ledger; dropping the last reference releases
/// its in-flight slot.
pub(crate) struct Ack {
    remaining: AtomicUsize,
    pub(super) ticket: Ticket,
    timestamp_ms: Option<i64>,
    _permit: OwnedSemaphorePermit,
}

impl Ack {
    /// An input awaiting `records` acknowledgements (at least one).
    pub(super) fn new(
        records: usize,
        ticket: Ticket,
        timestamp_ms: Option<i64>,
        permit: OwnedSemaphorePermit,
    ) -> Arc<Ack> {
        Arc::new(Ack {
            remaining: records.into(),
            ticket,
            timestamp_ms,
            _permit: permit,
        })
    }
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        stage: Stage,
        metrics: Metrics,
        health: Arc<Health>,
        control: Control,
        topics: Topics,
        record_limit: usize,
        drain_timeout: Duration,
        resend: std::sync::mpsc::Sender<Resend>,
    ) -> Shared {
        Shared {
            book: Mutex::default(),
            settled: Condvar::new(),
            live: RwLock::new(Arc::new(Live::new(stage, &metrics, record_limit))),
            metrics,
            health,
            control,
            topics,
            record_limit,
            drain_timeout,
            resend,
            closing: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            watchdog: Watchdog::default(),
        }
    }

    /// The book; a panic elsewhere while it was held leaves it consistent
    /// (every ledger step is a single update), so poisoning is ignored.
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stage and counters to use for the next input.
    pub(super) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in a newly loaded stage.
    pub(super) fn replace_live(&self, live: Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }

    pub(super) fn abandoning(&self) -> bool {
        self.abandon.load(Ordering::Relaxed)
    }

    /// Enter an input read from `partition` at `offset` in the ledger.
    pub(super) fn track(&self, partition: &Partition, offset: i64) -> Ticket {
        let mut book = self.book();
        if book.ledger.pending(partition) == 0 {
            book.progress.insert(partition.clone(), Instant::now());
        }
        book.ledger.track(partition, offset)
    }

    /// Whether `partition` is assigned to this instance now.
    pub(super) fn holds(&self, partition: &Partition) -> bool {
        self.book().ledger.holds(partition)
    }

    /// Every partition in the ledger (the assigned ones that were read),
    /// with its pending inputs and how long it has waited without progress.
    pub(super) fn partitions(&self) -> Vec<PartitionState> {
        let book = self.book();
        let now = Instant::now();
        book.ledger
            .partitions()
            .map(|(p, pending)| PartitionState {
                partition: p.clone(),
                pending,
                waiting: match book.progress.get(p) {
                    Some(since) if pending > 0 => now.saturating_duration_since(*since),
                    _ => Duration::ZERO,
                },
            })
            .collect()
    }

    /// These inputs were handed to their worker (one lock for a batch).
    pub(super) fn dispatched<'a>(&self, tickets: impl IntoIterator<Item = &'a Ticket>) {
        let mut book = self.book();
        for t in tickets {
            book.ledger.dispatch(t);
        }
    }

    /// Whether `ticket`'s partition is still assigned in the same generation.
    pub(super) fn is_live(&self, ticket: &Ticket) -> bool {
        self.book().ledger.is_live(ticket)
    }

    /// A new assignment of `partitions`: a fresh generation for each.
    pub(super) fn assign(&self, partitions: &[Partition]) {
        let mut book = self.book();
        for p in partitions {
            book.ledger.assign(p);
        }
    }

    /// Forget `partitions`; returns how many inputs were still pending
    /// (abandoned to their next owner, which re-reads them).
    pub(super) fn revoke(&self, partitions: &[Partition]) -> usize {
        let mut book = self.book();
        for p in partitions {
            book.progress.remove(p);
        }
        partitions.iter().map(|p| book.ledger.revoke(p)).sum()
    }

    /// One output record of `ack`'s input was acknowledged.
    pub(super) fn acknowledge(&self, ack: &Ack) {
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(&ack.ticket, ack.timestamp_ms);
        }
    }

    /// Every output record of an input is acknowledged (or it had none).
    pub(super) fn complete(&self, ticket: &Ticket, timestamp_ms: Option<i64>) {
        let (live, settled) = {
            let mut book = self.book();
            let live = book.ledger.is_live(ticket);
            if let Some(position) = book.ledger.complete(ticket) {
                book.positions.insert(ticket.partition.clone(), position);
                book.progress
                    .insert(ticket.partition.clone(), Instant::now());
            }
            (live, book.ledger.working(&ticket.partition) == 0)
        };
        if settled {
            self.settled.notify_all();
        }
        if !live {
            return; // revoked meanwhile: its new owner re-reads and counts it
        }
        self.control.count_completed();
        if let Some(ts) = timestamp_ms {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            if let Some(age) = u64::try_from(ts)
                .ok()
                .and_then(|ts| (now as u64).checked_sub(ts))
            {
                self.metrics.end_to_end(Duration::from_millis(age));
            }
        }
    }

    /// Inputs still awaiting acknowledgement in `partitions` (all when `None`).
    pub(super) fn pending(&self, partitions: Option<&[Partition]>) -> usize {
        pending_in(&self.book(), partitions)
    }

    /// Block until no input of `partitions` (all when `None`) that was
    /// handed to a worker awaits acknowledgement, or until `deadline`;
    /// returns how many still do. (Inputs read but never handed over cannot
    /// complete: they are not waited for, and are not committed.)
    pub(super) fn wait_settled(
        &self,
        partitions: Option<&[Partition]>,
        deadline: Instant,
    ) -> usize {
        let mut book = self.book();
        loop {
            let pending = working_in(&book, partitions);
            let left = deadline.saturating_duration_since(Instant::now());
            if pending == 0 || left.is_zero() {
                return pending;
            }
            book = self
                .settled
                .wait_timeout(book, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Hand the advanced positions to the consumer, which commits them in
    /// the background. Only `partitions` when given (a revoke).
    pub(super) fn store_positions<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
        partitions: Option<&[Partition]>,
    ) {
        let positions: Vec<(Partition, i64)> = {
            let mut book = self.book();
            match partitions {
                None => book.positions.drain().collect(),
                Some(ps) => ps
                    .iter()
                    .filter_map(|p| book.positions.remove(p).map(|o| (p.clone(), o)))
                    .collect(),
            }
        };
        if positions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(positions.len());
        for ((topic, partition), offset) in &positions {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                warn!(topic = &**topic, partition, error = %e, "cannot store offset");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // Only for partitions no longer assigned; their new owner re-reads.
            debug!(error = %e, "offsets not stored");
        }
    }
}

fn working_in(book: &Book, partitions: Option<&[Partition]>) -> usize {
    match partitions {
        None => book.ledger.total_working(),
        Some(ps) => ps.iter().map(|p| book.ledger.working(p)).sum(),
    }
}

fn pending_in(book: &Book, partitions: Option<&[Partition]>) -> usize {
    match partitions {
        None => book.ledger.total_pending(),
        Some(ps) => ps.iter().map(|p| book.ledger.pending(p)).sum(),
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
    use crate::config::{MessageKey, StageConfig};
    use crate::engine::Limits;
    use crate::keys::{KeyRing, parse_key};

    fn shared() -> Arc<Shared> {
        let key = parse_key(
            "k1",
            b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            Path::new("k1.key"),
        )
        .unwrap();
        let policy = crate::Policy::parse(
            "version: 1\nname: t\npurpose: analytics\nfields:\n  type: keep\n",
            "t.yaml",
        )
        .unwrap();
        let config = StageConfig {
            message_key: MessageKey::Drop,
            keep_headers: Vec::new(),
            include_payload: false,
            limits: Limits::default(),
        };
        let stage = Stage::new(&config, vec![("a".into(), policy)], &KeyRing::single(key)).unwrap();
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
        Arc::new(Shared::new(
            stage,
            metrics,
            Arc::new(Health::for_kafka()),
            Control::default(),
            Topics {
                routes: vec!["clean".into()],
                dead_letter: "dead".into(),
            },
            1_000_000,
            Duration::from_secs(5),
            std::sync::mpsc::channel().0,
        ))
    }

    fn p(n: i32) -> Partition {
        (Arc::from("raw"), n)
    }

    #[test]
    fn a_waiter_wakes_when_the_last_pending_input_completes_not_at_its_deadline() {
        let s = shared();
        let tickets: Vec<Ticket> = (0..3).map(|o| s.track(&p(0), o)).collect();
        let other = s.track(&p(1), 0);
        s.dispatched(tickets.iter().chain([&other]));
        let completer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for t in &tickets {
                    std::thread::sleep(Duration::from_millis(20));
                    s.complete(t, None);
                }
            })
        };
        let started = Instant::now();
        let left = s.wait_settled(Some(&[p(0)]), started + Duration::from_secs(30));
        assert_eq!(left, 0);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the completion, not the 30 s deadline"
        );
        completer.join().unwrap();
        assert_eq!(s.pending(None), 1, "partition 1 still waits");
        s.complete(&other, None);
        assert_eq!(s.wait_settled(None, Instant::now()), 0);
        assert_eq!(s.control.completed(), 4);
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline_and_says_what_is_still_pending() {
        let s = shared();
        let a = s.track(&p(0), 7);
        let b = s.track(&p(0), 8);
        s.dispatched([&a, &b]);
        let left = s.wait_settled(None, Instant::now() + Duration::from_millis(50));
        assert_eq!(left, 2);
    }

    #[test]
    fn inputs_never_handed_to_a_worker_are_not_waited_for() {
        let s = shared();
        let _held = s.track(&p(0), 7);
        let started = Instant::now();
        assert_eq!(s.wait_settled(None, started + Duration::from_secs(30)), 0);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no wait for what cannot complete"
        );
        assert_eq!(s.pending(None), 1, "still read and not committed");
    }

    #[test]
    fn positions_advance_only_over_completed_inputs_in_order() {
        let s = shared();
        let a = s.track(&p(0), 10);
        let b = s.track(&p(0), 11);
        s.complete(&b, None);
        assert!(s.book().positions.is_empty(), "10 is not complete yet");
        s.complete(&a, None);
        assert_eq!(s.book().positions.get(&p(0)), Some(&12));
    }

    #[test]
    fn a_partition_waits_from_its_first_pending_input_until_progress() {
        let s = shared();
        let a = s.track(&p(0), 10);
        let b = s.track(&p(0), 11);
        std::thread::sleep(Duration::from_millis(60));
        let state = |s: &Shared| {
            s.partitions()
                .into_iter()
                .find(|st| st.partition == p(0))
                .unwrap()
        };
        let before = state(&s);
        assert_eq!(before.pending, 2);
        assert!(before.waiting >= Duration::from_millis(60), "{before:?}");
        s.complete(&b, None);
        assert!(
            state(&s).waiting >= Duration::from_millis(60),
            "11 completing is no progress: 10 holds it"
        );
        s.complete(&a, None);
        let after = state(&s);
        assert_eq!((after.pending, after.waiting), (0, Duration::ZERO), "idle");
        s.track(&p(0), 12);
        assert!(
            state(&s).waiting < Duration::from_millis(60),
            "a new wait starts with the new input"
        );
    }

    #[test]
    fn completions_of_a_revoked_partition_are_ignored() {
        let s = shared();
        let a = s.track(&p(0), 10);
        assert_eq!(s.revoke(&[p(0)]), 1, "abandoned to the next owner");
        assert!(!s.is_live(&a));
        s.complete(&a, None);
        assert!(s.book().positions.is_empty());
        assert_eq!(
            s.control.completed(),
            0,
            "not counted: its new owner counts it"
        );
    }
}
