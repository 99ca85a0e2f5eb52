//! Worker threads: each owns some partitions' queues (split off the
//! consumer at assignment), reads them while their partition has room in
//! its share of `max_in_flight`, applies the live stage to each input in
//! order and sends its output records. A message is processed where
//! librdkafka holds it: never copied, never handed to another thread.
//!
//! A worker sleeps on its [`Bell`] when it has nothing to do; the bell
//! rings when one of its queues gets messages, when a full partition gets
//! room, when its partitions change ([`Desk::post`]) and when reading stops.
//!
//! A rebalance never overlaps a worker's read: the worker reads only under
//! its desk's gate and only while no change is posted, and a revoke waits
//! for the gate after posting ([`Desk::quiesce`]). So a queue handle of a
//! revoked partition is never read again (librdkafka's queue of a
//! partition is one: an old handle would read the next assignment's
//! messages).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use tracing::{debug, warn};

use super::context::ConsumerCtx;
use super::produce::{Delivery, Producer, send};
use super::shared::{Ack, Live, Shared};
use super::transact::{PartitionTxn, Txns};
use crate::engine::Scratch;
use crate::offsets::Partition;
use crate::stage::{Headers as StageHeaders, Origin, Processed, Source};

/// Inputs a worker takes from one partition before it turns to the next.
const BURST: usize = 256;
/// The longest a worker sleeps without its bell ringing (a safety net:
/// every reason to wake rings the bell).
const IDLE_WAIT: Duration = Duration::from_millis(250);

pub(super) fn worker_name(i: usize) -> String {
    format!("veil-worker-{i}")
}

/// The worker that owns a partition (so its inputs stay in order): a
/// topic's partitions go round the workers in turn, from a place its name
/// picks, so the partitions of one topic spread evenly (hashing each
/// partition put 3 of 4 on one of 2 workers).
pub(super) fn worker_of(partition: &Partition, workers: usize) -> usize {
    let mut h = DefaultHasher::new();
    partition.0.hash(&mut h);
    let id = u64::from(partition.1.unsigned_abs());
    (h.finish().wrapping_add(id) % workers.max(1) as u64) as usize
}

/// Wakes a sleeping worker. A ring while it is awake is kept for its next
/// sleep, so no wake-up is lost between a look at the queues and the sleep.
#[derive(Default)]
pub(super) struct Bell {
    rung: Mutex<bool>,
    woken: Condvar,
}

impl Bell {
    fn rung(&self) -> MutexGuard<'_, bool> {
        self.rung.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ring(&self) {
        *self.rung() = true;
        self.woken.notify_one();
    }

    /// Sleep until rung (at once if rung since the last sleep) or for
    /// `longest`.
    pub(super) fn sleep(&self, longest: Duration) {
        let mut rung = self.rung();
        let deadline = Instant::now() + longest;
        while !*rung {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            rung = self
                .woken
                .wait_timeout(rung, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *rung = false;
    }
}

/// A partition's queue of fetched messages, split off the consumer.
pub(super) type Queue = PartitionQueue<ConsumerCtx>;

/// A change to a worker's partitions, posted by the rebalance callbacks.
pub(super) enum Change {
    /// Read `partition` from `queue`, tracking its inputs in `generation`.
    Take {
        partition: Partition,
        generation: u64,
        queue: Queue,
    },
    /// Stop reading `partition`.
    Drop(Partition),
}

/// What a worker is told: changes to its partitions, and its bell.
#[derive(Default)]
pub(super) struct Desk {
    changes: Mutex<Vec<Change>>,
    /// Whether changes are posted and not yet taken.
    posted: AtomicBool,
    /// Held by the worker while it reads (see the module's comment).
    gate: Mutex<()>,
    pub(super) bell: Arc<Bell>,
}

impl Desk {
    fn changes(&self) -> MutexGuard<'_, Vec<Change>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn post(&self, change: Change) {
        let mut changes = self.changes();
        changes.push(change);
        self.posted.store(true, Ordering::Release);
        drop(changes);
        self.bell.ring();
    }

    /// Whether changes wait to be taken: the worker stops reading.
    fn posted(&self) -> bool {
        self.posted.load(Ordering::Acquire)
    }

    /// Take the posted changes, in order.
    fn take(&self) -> Vec<Change> {
        let mut changes = self.changes();
        self.posted.store(false, Ordering::Release);
        std::mem::take(&mut *changes)
    }

    /// After a post: wait until the worker is not reading. From then on it
    /// reads nothing before it has taken the change.
    pub(super) fn quiesce(&self) {
        drop(self.gate());
    }

    /// Let go of every queue posted and not taken (at shutdown: a queue
    /// keeps the consumer alive).
    pub(super) fn clear(&self) {
        self.changes().clear();
    }
}

/// Split `partition`'s messages off the consumer into their own queue for
/// its worker. Called before the partition is assigned, so that none of its
/// messages reach the main queue. `None` if librdkafka does not know the
/// partition.
pub(super) fn split(
    consumer: &Arc<BaseConsumer<ConsumerCtx>>,
    partition: &Partition,
) -> Option<Queue> {
    consumer.split_partition_queue(&partition.0, partition.1)
}

/// A partition a worker reads.
struct Owned {
    partition: Partition,
    generation: u64,
    queue: Queue,
    /// `delivery: exactly_once`: the partition's producer and open
    /// transaction; `None` once it failed for good (nothing more is read:
    /// veil is stopping).
    txn: Option<PartitionTxn>,
}

/// Start worker `i`; it runs until reading stops. It holds a lifeline:
/// dying any other way raises the watchdog's alarm. With `txns`
/// (`delivery: exactly_once`) each partition it takes gets its own
/// transactional producer, and `producer` is not used.
pub(super) fn spawn(
    i: usize,
    shared: Arc<Shared>,
    producer: Arc<Producer>,
    txns: Option<Arc<Txns>>,
) -> std::io::Result<JoinHandle<()>> {
    let lifeline = shared.watchdog.lifeline(worker_name(i));
    std::thread::Builder::new()
        .name(worker_name(i))
        .spawn(move || {
            let _lifeline = lifeline;
            work(i, &shared, &producer, txns.as_deref())
        })
}

/// Commit (or abort) `o`'s open transaction; a producer that cannot go on
/// is let go (the watchdog is raised: veil stops).
fn finish(o: &mut Owned, txns: Option<&Txns>, shared: &Shared) {
    if let (Some(t), Some(x)) = (o.txn.as_mut(), txns)
        && t.finish(x, shared).is_err()
    {
        o.txn = None;
    }
}

/// Whether `o`'s open transaction is due ([`crate::transaction::due`]) with
/// `room` left in its partition, or failed and is to be aborted now.
fn due(o: &Owned, txns: Option<&Txns>, room: impl FnOnce() -> usize) -> bool {
    let (Some(t), Some(x)) = (o.txn.as_ref(), txns) else {
        return false;
    };
    let (events, age) = t.state();
    let Some(age) = age else { return false };
    t.failed() || crate::transaction::due(&x.limits, events, age, room()).is_some()
}

fn work(i: usize, shared: &Arc<Shared>, producer: &Producer, txns: Option<&Txns>) {
    let Some(desk) = shared.desks.get(i) else {
        return;
    };
    let mut owned: Vec<Owned> = Vec::new();
    let mut hands = Hands::default();
    loop {
        for change in desk.take() {
            match change {
                Change::Take {
                    partition,
                    generation,
                    mut queue,
                } => {
                    // The old handle goes first: dropping it switches off
                    // the callback of the queue both handles share.
                    owned.retain(|o| o.partition != partition);
                    let txn = match txns {
                        Some(x) => match PartitionTxn::start(x, shared, &partition, generation) {
                            Ok(t) => Some(t),
                            Err(_) => continue, // the watchdog is raised: veil stops
                        },
                        None => None,
                    };
                    let bell = desk.bell.clone();
                    queue.set_nonempty_callback(move || bell.ring());
                    owned.push(Owned {
                        partition,
                        generation,
                        queue,
                        txn,
                    });
                }
                Change::Drop(partition) => {
                    // Exactly once: its open transaction commits (or
                    // aborts) before the partition is given up; the
                    // revoke waits for that.
                    if let Some(o) = owned.iter_mut().find(|o| o.partition == partition) {
                        finish(o, txns, shared);
                    }
                    owned.retain(|o| o.partition != partition);
                }
            }
        }
        if shared.reading_stopped() {
            // Exactly once: what was processed commits before veil stops.
            for o in &mut owned {
                finish(o, txns, shared);
            }
            return;
        }
        // One look at the live stage per round: a reload applies from the
        // next round on.
        let live = shared.live();
        let mut worked = false;
        let hurry = || desk.posted() || shared.reading_stopped_now();
        'round: for o in &mut owned {
            if txns.is_some() && o.txn.is_none() {
                continue; // its producer failed for good: veil is stopping
            }
            if o.txn.as_ref().and_then(PartitionTxn::paused_for).is_some() {
                continue; // just aborted: read again after a pause
            }
            let _reading = desk.gate();
            let mut room = shared.room(&o.partition);
            let mut taken = 0;
            while room > 0 && taken < BURST {
                taken += 1;
                if hurry() {
                    worked = true; // take the change (or stop) at once
                    break 'round;
                }
                match o.queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(msg)) => {
                        worked = true;
                        let out = match o.txn.as_mut() {
                            Some(t) => Out::Txn(t),
                            None => Out::Acks(producer),
                        };
                        room = hands.process(
                            shared,
                            out,
                            &live,
                            (&o.partition, o.generation),
                            &msg,
                            &hurry,
                        );
                        if due(o, txns, || room) {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        // More may wait behind the error, and the queue's
                        // callback rings only when it was empty: look again.
                        worked = true;
                        warn!(
                            topic = &*o.partition.0,
                            partition = o.partition.1,
                            error = %e,
                            "consume error; reading on"
                        );
                        break;
                    }
                }
            }
            if due(o, txns, || shared.room(&o.partition)) {
                worked = true;
                finish(o, txns, shared);
            }
        }
        // Transactions due by age, whether or not their partition had input.
        let mut wake = IDLE_WAIT;
        if let Some(x) = txns {
            for o in &mut owned {
                if due(o, txns, || shared.room(&o.partition)) {
                    worked = true;
                    finish(o, txns, shared);
                }
                let open_for = o.txn.as_ref().and_then(|t| t.state().1);
                if let Some(w) = crate::transaction::wake_in(&x.limits, open_for) {
                    wake = wake.min(w);
                }
                if let Some(w) = o.txn.as_ref().and_then(PartitionTxn::paused_for) {
                    wake = wake.min(w);
                }
            }
        }
        if !worked {
            desk.bell.sleep(wake);
        }
    }
}

/// Where an input's records go.
pub(super) enum Out<'a> {
    /// At least once: the shared producer; the input completes when every
    /// record is acknowledged.
    Acks(&'a Producer),
    /// Exactly once: the partition's open transaction; the input completes
    /// when it commits.
    Txn(&'a mut PartitionTxn),
}

/// What processing reuses from one input to the next.
#[derive(Default)]
pub(super) struct Hands {
    processed: Processed,
    scratch: Scratch,
}

impl Hands {
    /// Track one input of `partition` (read in its assignment `generation`),
    /// apply the stage and send its output records to `out` (`hurry`: see
    /// [`send`]). An input of a partition revoked since is skipped: its
    /// current owner reads it again; so is one a transaction already holds
    /// (read again from before a rewind). Returns how many more inputs the
    /// partition may take ([`Shared::room`]; zero after a skip).
    pub(super) fn process(
        &mut self,
        shared: &Shared,
        mut out: Out<'_>,
        live: &Live,
        (partition, generation): (&Partition, u64),
        msg: &BorrowedMessage<'_>,
        hurry: &dyn Fn() -> bool,
    ) -> usize {
        if let Out::Txn(t) = &out
            && t.seen(msg.offset())
        {
            debug!(
                partition = partition.1,
                offset = msg.offset(),
                "skipping an input read again from before a rewind"
            );
            return shared.room(partition);
        }
        let Some((ticket, room)) = shared.track(partition, generation, msg.offset()) else {
            debug!(
                partition = partition.1,
                offset = msg.offset(),
                "skipping input of a revoked partition"
            );
            return 0;
        };
        if let Out::Txn(t) = &mut out
            && t.begin(shared, msg.offset()).is_err()
        {
            return 0; // the watchdog is raised: veil stops
        }
        let processed = &mut self.processed;
        let payload = msg.payload().unwrap_or_default();
        let started = Instant::now();
        let origin = Origin::Kafka {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
        };
        let headers = RecordHeaders(msg);
        live.stage.process_record(
            payload,
            msg.key(),
            &headers,
            origin,
            processed,
            &mut self.scratch,
        );
        shared.metrics.processed_in(started.elapsed());
        live.counters.record(payload.len(), processed.tally());
        live.counters.shadow(processed.shadow.routes());

        let timestamp_ms = msg.timestamp().to_millis();
        let records = processed.records();
        if records == 0 {
            match out {
                Out::Acks(_) => shared.complete(&ticket, timestamp_ms),
                Out::Txn(t) => t.add(ticket, timestamp_ms),
            }
            return room + 1;
        }
        let ack = Ack::new(records, ticket.clone(), timestamp_ms);
        let source = Source::new(msg.topic(), msg.partition(), msg.offset());
        if let Some(reject) = &processed.rejected {
            let record = live.stage.dead_letter(reject, origin, Some(payload));
            let headers = live
                .stage
                .dead_letter_headers(reject.reason.code(), &source);
            let record = BaseRecord::<[u8], [u8], _>::with_opaque_to(
                &shared.topics.dead_letter,
                Delivery::first(ack),
            )
            .payload(&record[..])
            .headers(owned(&headers));
            match out {
                Out::Acks(producer) => send(shared, producer, record, hurry),
                Out::Txn(t) => {
                    t.send(shared, record, hurry);
                    t.add(ticket, timestamp_ms);
                }
            }
            return room;
        }
        for (route, o) in processed.forwarded() {
            let (Some(headers), Some(topic)) = (
                live.stage.route_headers(route, &source),
                shared.topics.routes.get(route),
            ) else {
                // Impossible: the stage and the topics come from one validated
                // config. Never acknowledged, so never committed: a visible stall.
                tracing::error!(route, "no topic for route (a bug in veil)");
                continue;
            };
            let mut headers = owned(&headers);
            if live.stage.keeps_headers()
                && let Some(input) = msg.headers()
            {
                for h in kept_headers(input, |key| live.stage.keeps_header(key)) {
                    headers = headers.insert(h);
                }
            }
            let mut record = BaseRecord::with_opaque_to(topic, Delivery::first(ack.clone()))
                .payload(processed.value(o))
                .headers(headers);
            if let Some(key) = processed.key(o) {
                record = record.key(key);
            }
            match &mut out {
                Out::Acks(producer) => send(shared, producer, record, hurry),
                Out::Txn(t) => t.send(shared, record, hurry),
            }
        }
        if let Out::Txn(t) = out {
            t.add(ticket, timestamp_ms);
        }
        room
    }
}

/// The input headers `keep` accepts, in order. A header whose key is not
/// UTF-8 is skipped (it cannot be one of the kept names): rdkafka panics on
/// reading such a key, so each is read under a panic guard, never letting a
/// producer's bad header stop the worker.
fn kept_headers<'h, H: Headers>(
    input: &'h H,
    keep: impl Fn(&str) -> bool,
) -> impl Iterator<Item = Header<'h, &'h [u8]>> {
    (0..input.count()).filter_map(move |i| {
        let header =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input.try_get(i))).ok()??;
        keep(header.key).then_some(header)
    })
}

/// An input record's headers for the stage (`consent.opt_out_header`),
/// read only if the stage asks: librdkafka parses a record's headers on
/// first access, a cost every input paid when none of its routes looks.
struct RecordHeaders<'m, 'b>(&'m BorrowedMessage<'b>);

impl crate::stage::InputHeaders for RecordHeaders<'_, '_> {
    fn each(&self, visit: &mut dyn FnMut(&str, Option<&[u8]>)) {
        let Some(headers) = self.0.headers() else {
            return;
        };
        for h in kept_headers(headers, |_| true) {
            visit(h.key, h.value);
        }
    }
}

fn owned(headers: &StageHeaders<'_>) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len() + 1),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(*value),
            })
        },
    )
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

    fn p(topic: &str, partition: i32) -> Partition {
        (Arc::from(topic), partition)
    }

    #[test]
    fn a_partition_always_goes_to_the_same_worker_and_every_worker_is_used() {
        let workers = 4;
        let mut used = [0usize; 4];
        for i in 0..64 {
            let w = worker_of(&p("raw", i), workers);
            assert_eq!(w, worker_of(&p("raw", i), workers), "stable");
            assert!(w < workers);
            used[w] += 1;
        }
        assert!(
            used.iter().all(|&n| n > 0),
            "64 partitions over 4 workers: {used:?}"
        );
    }

    #[test]
    fn a_topics_partitions_spread_evenly_over_the_workers() {
        for workers in 1..=8 {
            let mut used = vec![0usize; workers];
            for i in 0..(workers as i32 * 3) {
                used[worker_of(&p("raw", i), workers)] += 1;
            }
            assert!(used.iter().all(|&n| n == 3), "{workers} workers: {used:?}");
        }
    }

    #[test]
    fn zero_workers_is_not_a_division_by_zero() {
        assert_eq!(worker_of(&p("raw", 3), 0), 0);
    }

    /// Headers as rdkafka reads them: reading a key that is not UTF-8
    /// panics (`CStr::to_str().unwrap()` in `BorrowedHeaders::try_get`).
    struct Raw(Vec<(Vec<u8>, Vec<u8>)>);

    impl Headers for Raw {
        fn count(&self) -> usize {
            self.0.len()
        }

        fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
            let (k, v) = self.0.get(idx)?;
            Some(Header {
                key: std::str::from_utf8(k).unwrap(),
                value: Some(v.as_slice()),
            })
        }
    }

    #[test]
    fn a_header_key_that_is_not_utf8_is_skipped_not_a_dead_worker() {
        let input = Raw(vec![
            (b"trace-id".to_vec(), b"t1".to_vec()),
            (b"bad\xff".to_vec(), b"x".to_vec()),
            (b"tenant".to_vec(), b"acme".to_vec()),
            (b"session".to_vec(), b"s1".to_vec()),
        ]);
        let kept: Vec<(String, Vec<u8>)> =
            kept_headers(&input, |k| k == "trace-id" || k == "tenant")
                .map(|h| (h.key.to_owned(), h.value.unwrap().to_vec()))
                .collect();
        assert_eq!(
            kept,
            vec![
                ("trace-id".to_owned(), b"t1".to_vec()),
                ("tenant".to_owned(), b"acme".to_vec())
            ]
        );
    }

    #[test]
    fn a_posted_change_waits_out_the_read_in_progress_and_stops_the_next() {
        let desk = Arc::new(Desk::default());
        let reading = desk.gate();
        let revoker = {
            let desk = desk.clone();
            std::thread::spawn(move || {
                desk.post(Change::Drop(p("raw", 0)));
                let started = Instant::now();
                desk.quiesce();
                started.elapsed()
            })
        };
        while !desk.posted() {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(100));
        drop(reading); // the read in progress ends
        assert!(
            revoker.join().unwrap() >= Duration::from_millis(90),
            "the revoke waited for the read"
        );
        assert!(desk.posted(), "the next read sees the change and stops");
        assert_eq!(desk.take().len(), 1);
        assert!(!desk.posted(), "taken");
    }

    #[test]
    fn a_ring_before_the_sleep_is_not_lost() {
        let bell = Bell::default();
        bell.ring();
        let started = Instant::now();
        bell.sleep(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(10), "woke at once");
    }

    #[test]
    fn a_ring_wakes_a_sleeper_and_is_used_up() {
        let bell = Arc::new(Bell::default());
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                bell.ring();
            })
        };
        let started = Instant::now();
        bell.sleep(Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the ring"
        );
        ringer.join().unwrap();
        let started = Instant::now();
        bell.sleep(Duration::from_millis(100));
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "the ring was used by the first sleep"
        );
    }
}
