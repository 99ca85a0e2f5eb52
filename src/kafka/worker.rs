//! Worker threads: each owns some partitions' queues (split off the
//! consumer at assignment), reads them while their partition has room in
//! its share of `max_in_flight`, applies the live stage to each input in
//! order and sends its output records. A message is processed where
//! librdkafka holds it: never copied, never handed to another thread.
//!
//! A worker sleeps on its [`Bell`] when it has nothing to do; the bell
//! rings when one of its queues gets messages, when a full partition gets
//! room, when its partitions change ([`Desk::post`]) and when reading stops.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
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
    pub(super) bell: Arc<Bell>,
}

impl Desk {
    fn changes(&self) -> MutexGuard<'_, Vec<Change>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn post(&self, change: Change) {
        self.changes().push(change);
        self.bell.ring();
    }

    /// Take the posted changes, in order.
    fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes())
    }

    /// Let go of every queue posted and not taken (at shutdown: a queue
    /// keeps the consumer alive).
    pub(super) fn clear(&self) {
        self.changes().clear();
    }
}

/// Split `partition`'s messages off the consumer into their own queue for
/// its worker, ringing the worker when messages arrive. Called before the
/// partition is assigned, so that none of its messages reach the main
/// queue. `None` if librdkafka does not know the partition.
pub(super) fn split(
    consumer: &Arc<BaseConsumer<ConsumerCtx>>,
    partition: &Partition,
    bell: Arc<Bell>,
) -> Option<Queue> {
    let mut queue = consumer.split_partition_queue(&partition.0, partition.1)?;
    queue.set_nonempty_callback(move || bell.ring());
    Some(queue)
}

/// A partition a worker reads.
struct Owned {
    partition: Partition,
    generation: u64,
    queue: Queue,
}

/// Start worker `i`; it runs until reading stops. It holds a lifeline:
/// dying any other way raises the watchdog's alarm.
pub(super) fn spawn(
    i: usize,
    shared: Arc<Shared>,
    producer: Arc<Producer>,
) -> std::io::Result<JoinHandle<()>> {
    let lifeline = shared.watchdog.lifeline(worker_name(i));
    std::thread::Builder::new()
        .name(worker_name(i))
        .spawn(move || {
            let _lifeline = lifeline;
            work(i, &shared, &producer)
        })
}

fn work(i: usize, shared: &Shared, producer: &Producer) {
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
                    queue,
                } => {
                    owned.retain(|o| o.partition != partition);
                    owned.push(Owned {
                        partition,
                        generation,
                        queue,
                    });
                }
                Change::Drop(partition) => owned.retain(|o| o.partition != partition),
            }
        }
        if shared.reading_stopped() {
            return;
        }
        // One look at the live stage per round: a reload applies from the
        // next round on.
        let live = shared.live();
        let mut worked = false;
        for o in &owned {
            let room = shared.room(&o.partition).min(BURST);
            for _ in 0..room {
                match o.queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(msg)) => {
                        worked = true;
                        hands.process(shared, producer, &live, &o.partition, o.generation, &msg);
                    }
                    Some(Err(e)) => {
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
        }
        if !worked {
            desk.bell.sleep(IDLE_WAIT);
        }
    }
}

/// What processing reuses from one input to the next.
#[derive(Default)]
pub(super) struct Hands {
    processed: Processed,
    scratch: Scratch,
}

impl Hands {
    /// Track one input of `partition` (read in its assignment `generation`),
    /// apply the stage and send its output records. An input of a partition
    /// revoked since is skipped: its current owner reads it again.
    pub(super) fn process(
        &mut self,
        shared: &Shared,
        producer: &Producer,
        live: &Live,
        partition: &Partition,
        generation: u64,
        msg: &BorrowedMessage<'_>,
    ) {
        let Some(ticket) = shared.track(partition, generation, msg.offset()) else {
            debug!(
                partition = partition.1,
                offset = msg.offset(),
                "skipping input of a revoked partition"
            );
            return;
        };
        let processed = &mut self.processed;
        let payload = msg.payload().unwrap_or_default();
        let started = Instant::now();
        let origin = Origin::Kafka {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
        };
        live.stage
            .process(payload, msg.key(), origin, processed, &mut self.scratch);
        shared.metrics.processed_in(started.elapsed());
        live.counters.record(payload.len(), processed.tally());

        let timestamp_ms = msg.timestamp().to_millis();
        let records = processed.records();
        if records == 0 {
            shared.complete(&ticket, timestamp_ms);
            return;
        }
        let ack = Ack::new(records, ticket, timestamp_ms);
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
            send(shared, producer, record);
            return;
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
            if let Some(input) = msg.headers() {
                for h in input.iter() {
                    if live.stage.keeps_header(h.key) {
                        headers = headers.insert(h);
                    }
                }
            }
            let mut record = BaseRecord::with_opaque_to(topic, Delivery::first(ack.clone()))
                .payload(processed.value(o))
                .headers(headers);
            if let Some(key) = processed.key(o) {
                record = record.key(key);
            }
            send(shared, producer, record);
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
