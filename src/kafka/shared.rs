//! What the consumer thread, the workers, the retrier and librdkafka's
//! callbacks share: the live stage, the book of pending inputs (the offset
//! [`Ledger`] and the positions it advanced), and the acknowledgement of
//! each input's outputs.
//!
//! Completion is signalled, not polled: [`Shared::complete`] notifies
//! [`Shared::wait_settled`] (revoke and shutdown) whenever a partition's
//! last pending input completes, and rings the worker of a partition that
//! was waiting for room.
//!
//! In-flight inputs are accounted per partition ([`Shared::room`]): half
//! of `max_in_flight` is split evenly over the assigned partitions, each
//! partition's guaranteed part; the other half is a pool any partition may
//! borrow from beyond its part. A partition that stalls holds at most its
//! part and what it borrowed; every other partition keeps its own part, so
//! nothing else stops, and a busy partition among idle ones is not held to
//! a sliver.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::Control;
use super::produce::Resend;
use super::watchdog::Watchdog;
use super::worker::{Desk, worker_of};
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
        let counters = metrics
            .live(&stage.policies(), &stage.key_ids(), stage.key_times())
            .with_shadows(metrics, &stage.shadows());
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
    /// Partitions that found no room: their workers wait for a completion
    /// to ring them.
    full: HashSet<Partition>,
    /// Each assigned partition's guaranteed part of `max_in_flight`.
    guaranteed: usize,
    /// Inputs held beyond their partition's guaranteed part, all partitions
    /// together: what is borrowed from the pool.
    borrowed: usize,
}

impl Book {
    fn excess(&self, pending: usize) -> usize {
        pending.saturating_sub(self.guaranteed)
    }

    /// After the assignment changed: every partition's part, and what the
    /// partitions have borrowed under the new parts.
    fn resize(&mut self, max_in_flight: usize) {
        let parts = (max_in_flight / 2) / self.ledger.assigned().max(1);
        self.guaranteed = parts.max(1);
        let g = self.guaranteed;
        self.borrowed = self
            .ledger
            .partitions()
            .map(|(_, n)| n.saturating_sub(g))
            .sum();
    }

    /// `partition` went from `before` to `after` pending inputs.
    fn pending_changed(&mut self, before: usize, after: usize) {
        self.borrowed = (self.borrowed + self.excess(after)).saturating_sub(self.excess(before));
    }

    /// What `partition` may still take: the rest of its part, and what the
    /// pool has left.
    fn room(&self, partition: &Partition, max_in_flight: usize) -> usize {
        let pool = max_in_flight - max_in_flight / 2;
        let own = self
            .guaranteed
            .saturating_sub(self.ledger.pending(partition));
        own + pool.saturating_sub(self.borrowed)
    }
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
    /// One per worker: its partition queues to take up or let go, and the
    /// bell that wakes it.
    pub(super) desks: Vec<Desk>,
    /// Inputs read and not yet acknowledged, across all partitions, at most.
    max_in_flight: usize,
    /// Set when reading stops (stopped, or a thread died).
    reading_stopped: AtomicBool,
    /// The suppression list, when the config has one.
    pub(super) suppression: Option<Arc<crate::suppression::SuppressionList>>,
    /// `delivery: exactly_once`: inputs complete when their transaction
    /// commits, which also commits their offsets; the consumer commits
    /// nothing.
    pub(super) exactly_once: bool,
}

/// One input's outstanding output records. The last acknowledgement
/// completes the input in the ledger, which frees its place in its
/// partition's share of `max_in_flight`.
pub(crate) struct Ack {
    remaining: AtomicUsize,
    pub(super) ticket: Ticket,
    timestamp_ms: Option<i64>,
}

impl Ack {
    /// An input awaiting `records` acknowledgements (at least one).
    pub(super) fn new(records: usize, ticket: Ticket, timestamp_ms: Option<i64>) -> Arc<Ack> {
        Arc::new(Ack {
            remaining: records.into(),
            ticket,
            timestamp_ms,
        })
    }
}

/// Where the in-flight limit comes from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizing {
    pub(super) workers: usize,
    pub(super) max_in_flight: usize,
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
        sizing: Sizing,
        suppression: Option<Arc<crate::suppression::SuppressionList>>,
        exactly_once: bool,
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
            desks: (0..sizing.workers.max(1))
                .map(|_| Desk::default())
                .collect(),
            max_in_flight: sizing.max_in_flight.max(1),
            reading_stopped: AtomicBool::new(false),
            suppression,
            exactly_once,
        }
    }

    /// The desk of the worker that owns `partition`.
    pub(super) fn desk_of(&self, partition: &Partition) -> Option<&Desk> {
        self.desks.get(worker_of(partition, self.desks.len()))
    }

    /// Stop reading: every worker stops taking inputs (those it took are
    /// still processed and acknowledged).
    pub(super) fn stop_reading(&self) {
        self.reading_stopped.store(true, Ordering::Relaxed);
        for desk in &self.desks {
            desk.bell.ring();
        }
    }

    /// Whether [`Self::stop_reading`] was called (cheap: for every input).
    pub(super) fn reading_stopped_now(&self) -> bool {
        self.reading_stopped.load(Ordering::Relaxed)
    }

    /// Whether reading has stopped, or should: stopped, or a thread died.
    pub(super) fn reading_stopped(&self) -> bool {
        self.reading_stopped.load(Ordering::Relaxed)
            || self.control.is_stopped()
            || self.watchdog.dead().is_some()
    }

    /// How many more inputs `partition` may take now (see the module's
    /// comment). At zero the partition is marked full, and a completion
    /// that gives it room rings its worker.
    pub(super) fn room(&self, partition: &Partition) -> usize {
        let mut book = self.book();
        let room = book.room(partition, self.max_in_flight);
        if room == 0 {
            book.full.insert(partition.clone());
        }
        room
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

    /// Enter an input read from `partition` at `offset` in the ledger,
    /// unless the partition is no longer assigned in `generation` (then its
    /// current owner reads the input again). With the ticket comes the
    /// partition's [`Self::room`] after it (zero marks it full).
    pub(super) fn track(
        &self,
        partition: &Partition,
        generation: u64,
        offset: i64,
    ) -> Option<(Ticket, usize)> {
        let mut book = self.book();
        let before = book.ledger.pending(partition);
        let ticket = book.ledger.track(partition, generation, offset)?;
        let after = book.ledger.pending(partition);
        book.pending_changed(before, after);
        if after == 1 {
            book.progress.insert(partition.clone(), Instant::now());
        }
        let room = book.room(partition, self.max_in_flight);
        if room == 0 {
            book.full.insert(partition.clone());
        }
        Some((ticket, room))
    }

    /// The live assignment generation of `partition`, while it is assigned.
    pub(super) fn generation(&self, partition: &Partition) -> Option<u64> {
        self.book().ledger.generation(partition)
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

    /// Whether `ticket`'s partition is still assigned in the same generation.
    pub(super) fn is_live(&self, ticket: &Ticket) -> bool {
        self.book().ledger.is_live(ticket)
    }

    /// A new assignment of `partitions`: a fresh generation for each, returned.
    pub(super) fn assign(&self, partitions: &[Partition]) -> Vec<u64> {
        let generations = {
            let mut book = self.book();
            let generations = partitions.iter().map(|p| book.ledger.assign(p)).collect();
            book.resize(self.max_in_flight);
            generations
        };
        self.ring_all(); // the parts changed
        generations
    }

    fn ring_all(&self) {
        for desk in &self.desks {
            desk.bell.ring();
        }
    }

    /// Forget `partitions`; returns how many inputs were still pending
    /// (abandoned to their next owner, which re-reads them).
    pub(super) fn revoke(&self, partitions: &[Partition]) -> usize {
        let abandoned = {
            let mut book = self.book();
            for p in partitions {
                book.progress.remove(p);
                book.full.remove(p);
            }
            let abandoned = partitions.iter().map(|p| book.ledger.revoke(p)).sum();
            book.resize(self.max_in_flight);
            abandoned
        };
        self.ring_all(); // the parts changed
        abandoned
    }

    /// One output record of `ack`'s input was acknowledged.
    pub(super) fn acknowledge(&self, ack: &Ack) {
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(&ack.ticket, ack.timestamp_ms);
        }
    }

    /// Every output record of an input is acknowledged (or it had none).
    pub(super) fn complete(&self, ticket: &Ticket, timestamp_ms: Option<i64>) {
        let p = &ticket.partition;
        let (live, settled, ring) = {
            let mut book = self.book();
            let live = book.ledger.is_live(ticket);
            let before = book.ledger.pending(p);
            let mut ring = Vec::new();
            if let Some(position) = book.ledger.complete(ticket) {
                book.positions.insert(p.clone(), position);
                book.progress.insert(p.clone(), Instant::now());
                let borrowed = book.borrowed;
                let after = book.ledger.pending(p);
                book.pending_changed(before, after);
                // Room came for this partition, and for every full one if
                // the pool got some back.
                if book.borrowed < borrowed {
                    ring.extend(book.full.drain());
                } else if book.full.remove(p) {
                    ring.push(p.clone());
                }
            }
            (live, book.ledger.pending(p) == 0, ring)
        };
        if settled {
            self.settled.notify_all();
        }
        for full in &ring {
            if let Some(desk) = self.desk_of(full) {
                desk.bell.ring();
            }
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

    /// An aborted transaction's inputs of `partition`, from `offset` on,
    /// are forgotten: they are read again. Wakes a revoke or shutdown
    /// waiting for the partition, and its worker if it was full.
    pub(super) fn rewind(&self, partition: &Partition, generation: u64, offset: i64) {
        let (settled, ring) = {
            let mut book = self.book();
            let before = book.ledger.pending(partition);
            book.ledger.rewind(partition, generation, offset);
            let after = book.ledger.pending(partition);
            book.pending_changed(before, after);
            if after == 0 {
                book.progress.remove(partition);
            }
            (after == 0, book.full.remove(partition))
        };
        if settled {
            self.settled.notify_all();
        }
        if ring && let Some(desk) = self.desk_of(partition) {
            desk.bell.ring();
        }
    }

    /// Inputs still awaiting acknowledgement in `partitions` (all when `None`).
    pub(super) fn pending(&self, partitions: Option<&[Partition]>) -> usize {
        pending_in(&self.book(), partitions)
    }

    /// Block until no input of `partitions` (all when `None`) awaits
    /// acknowledgement, or until `deadline`; returns how many still do.
    pub(super) fn wait_settled(
        &self,
        partitions: Option<&[Partition]>,
        deadline: Instant,
    ) -> usize {
        let mut book = self.book();
        loop {
            let pending = pending_in(&book, partitions);
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
            if self.exactly_once {
                // Committed with each transaction, never by the consumer.
                book.positions.clear();
                return;
            }
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
        shared_with(1, 1000)
    }

    fn shared_with(workers: usize, max_in_flight: usize) -> Arc<Shared> {
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
            Sizing {
                workers,
                max_in_flight,
            },
            None,
            false,
        ))
    }

    fn p(n: i32) -> Partition {
        (Arc::from("raw"), n)
    }

    /// Track `offset` of partition `n`, assigning the partition first if
    /// it is not.
    fn read(s: &Shared, n: i32, offset: i64) -> Ticket {
        let g = match s.generation(&p(n)) {
            Some(g) => g,
            None => s.assign(&[p(n)])[0],
        };
        s.track(&p(n), g, offset).unwrap().0
    }

    #[test]
    fn a_waiter_wakes_when_the_last_pending_input_completes_not_at_its_deadline() {
        let s = shared();
        let tickets: Vec<Ticket> = (0..3).map(|o| read(&s, 0, o)).collect();
        let other = read(&s, 1, 0);
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
        read(&s, 0, 7);
        read(&s, 0, 8);
        let left = s.wait_settled(None, Instant::now() + Duration::from_millis(50));
        assert_eq!(left, 2);
    }

    #[test]
    fn a_stuck_partition_holds_its_part_and_the_pool_and_every_other_keeps_its_part() {
        // 20 in flight over 2 partitions: 5 guaranteed to each, 10 to borrow.
        let s = shared_with(2, 20);
        s.assign(&[p(0), p(1)]);
        assert_eq!(s.room(&p(0)), 15, "its part and the whole pool");
        let stuck: Vec<Ticket> = (0..15).map(|o| read(&s, 0, o)).collect();
        assert_eq!(s.room(&p(0)), 0, "partition 0 used its part and the pool");
        assert_eq!(s.room(&p(1)), 5, "partition 1 still has its own part");
        let other: Vec<Ticket> = (0..5).map(|o| read(&s, 1, o)).collect();
        assert_eq!(s.room(&p(1)), 0);
        assert_eq!(s.pending(None), 20, "never more than max_in_flight");
        s.complete(&stuck[1], None);
        assert_eq!(s.room(&p(0)), 0, "offset 0 still holds the partition");
        s.complete(&stuck[0], None);
        assert_eq!(s.room(&p(0)), 2, "0 and 1 committed: back to the pool");
        assert_eq!(s.room(&p(1)), 2, "the pool is shared");
        for t in &other {
            s.complete(t, None);
        }
        assert_eq!(s.room(&p(1)), 7, "its part again, and the pool's 2");
    }

    #[test]
    fn one_busy_partition_among_idle_ones_may_borrow_the_whole_pool() {
        let s = shared_with(1, 10_000);
        let all: Vec<Partition> = (0..1000).map(p).collect();
        s.assign(&all);
        assert_eq!(s.room(&p(7)), 5 + 5000, "a part of 5 and the pool");
    }

    #[test]
    fn every_partition_gets_room_for_one_even_past_max_in_flight_partitions() {
        let s = shared_with(1, 2);
        let all: Vec<Partition> = (0..5).map(p).collect();
        s.assign(&all);
        assert!(all.iter().all(|q| s.room(q) >= 1));
    }

    #[test]
    fn a_full_partition_rings_its_worker_when_it_gets_room() {
        let s = shared_with(2, 2);
        s.assign(&[p(0)]);
        let held: Vec<Ticket> = (0..2).map(|o| read(&s, 0, o)).collect();
        assert_eq!(s.room(&p(0)), 0);
        let bell = s.desk_of(&p(0)).unwrap().bell.clone();
        let ringer = {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                s.complete(&held[0], None);
            })
        };
        let started = Instant::now();
        bell.sleep(Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the completion"
        );
        ringer.join().unwrap();
    }

    #[test]
    fn an_input_read_before_a_revoke_is_not_tracked_after_it() {
        let s = shared();
        let g = s.assign(&[p(0)])[0];
        s.revoke(&[p(0)]);
        assert_eq!(s.track(&p(0), g, 7), None);
        let g2 = s.assign(&[p(0)])[0];
        assert_eq!(s.track(&p(0), g, 7), None, "an earlier assignment's read");
        assert!(s.track(&p(0), g2, 7).is_some());
    }

    #[test]
    fn positions_advance_only_over_completed_inputs_in_order() {
        let s = shared();
        let a = read(&s, 0, 10);
        let b = read(&s, 0, 11);
        s.complete(&b, None);
        assert!(s.book().positions.is_empty(), "10 is not complete yet");
        s.complete(&a, None);
        assert_eq!(s.book().positions.get(&p(0)), Some(&12));
    }

    #[test]
    fn a_partition_waits_from_its_first_pending_input_until_progress() {
        let s = shared();
        let a = read(&s, 0, 10);
        let b = read(&s, 0, 11);
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
        read(&s, 0, 12);
        assert!(
            state(&s).waiting < Duration::from_millis(60),
            "a new wait starts with the new input"
        );
    }

    #[test]
    fn a_rewind_frees_the_aborted_inputs_room_and_settles_the_partition() {
        let s = shared_with(1, 4);
        let g = s.assign(&[p(0)])[0];
        for o in 0..4 {
            s.track(&p(0), g, o).unwrap();
        }
        assert_eq!(s.room(&p(0)), 0);
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || {
                s.wait_settled(Some(&[p(0)]), Instant::now() + Duration::from_secs(30))
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        s.rewind(&p(0), g, 0);
        assert_eq!(waiter.join().unwrap(), 0, "settled by the rewind");
        assert_eq!(s.room(&p(0)), 4);
        assert_eq!(s.control.completed(), 0, "nothing completed");
    }

    #[test]
    fn completions_of_a_revoked_partition_are_ignored() {
        let s = shared();
        let a = read(&s, 0, 10);
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
