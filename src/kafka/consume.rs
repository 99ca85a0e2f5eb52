//! The consume loop: reads inputs while in-flight slots are free, hands
//! them to the worker that owns their partition in batches, stores the
//! offsets the ledger advanced on a schedule, and commits.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::warn;

use super::context::ConsumerCtx;
use super::shared::Shared;
use super::worker::{Job, worker_name};
use crate::metrics::Metrics;
use crate::offsets::Partition;

/// Inputs handed to a worker at once, at most.
const BATCH: usize = 256;
/// How often advanced offsets are handed to the consumer for commit.
const STORE_INTERVAL: Duration = Duration::from_millis(200);
/// Pause after a consumer error before reading on.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

pub(super) type ServiceConsumer = StreamConsumer<ConsumerCtx>;

/// What the consume loop reads with and hands out to.
pub(super) struct Reader {
    pub(super) consumer: Arc<ServiceConsumer>,
    pub(super) shared: Arc<Shared>,
    pub(super) workers: Vec<mpsc::Sender<Vec<Job>>>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) stall_after: Duration,
    /// Stalled partitions and when their stall was last logged.
    pub(super) stalls_logged: HashMap<Partition, Instant>,
}

/// How often a stalled partition is logged again.
const STALL_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Reader {
    /// Read until stopped or a thread died: one in-flight slot per input,
    /// dispatched to the worker that owns its partition. Whatever else is
    /// already fetched (up to [`BATCH`]) goes along in the same hand-off, so
    /// a worker thread is woken once per batch rather than once per event.
    /// Returning drops the worker channels: the workers finish what they
    /// were handed and exit.
    pub(super) async fn run(mut self) {
        let (shared, consumer) = (self.shared.clone(), self.consumer.clone());
        let workers = self.workers.clone();
        let shared = &shared;
        let mut tick = tokio::time::interval(STORE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        let mut batches: Vec<Vec<Job>> = (0..self.workers.len()).map(|_| Vec::new()).collect();
        let stopped = shared.control.stopped();
        tokio::pin!(stopped);
        let died = shared.watchdog.died();
        tokio::pin!(died);
        loop {
            let permit = tokio::select! {
                biased;
                _ = &mut stopped => return,
                _ = &mut died => return,
                Ok(permit) = self.slots.clone().acquire_owned() => permit,
                _ = tick.tick() => {
                    self.on_tick();
                    continue;
                }
            };
            let received = tokio::select! {
                biased;
                _ = &mut stopped => return,
                _ = &mut died => return,
                m = consumer.recv() => m,
                _ = tick.tick() => {
                    self.on_tick();
                    continue;
                }
            };
            let mut next = Some((received, permit));
            let mut batched = 0;
            while let Some((received, permit)) = next.take() {
                match received {
                    Ok(m) => {
                        let job = track(shared, &mut topics, m.detach(), permit);
                        let w = worker_of(&job.ticket.partition, self.workers.len());
                        if let Some(batch) = batches.get_mut(w) {
                            batch.push(job);
                        }
                        batched += 1;
                    }
                    Err(e) => {
                        warn!(error = %e, "consume error; retrying");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                        break;
                    }
                }
                if batched < BATCH
                    && let Ok(permit) = self.slots.clone().try_acquire_owned()
                {
                    next = ready_now(&consumer).map(|m| (m, permit));
                }
            }
            for (w, (batch, worker)) in batches.iter_mut().zip(&workers).enumerate() {
                if batch.is_empty() {
                    continue;
                }
                // A worker's queue can stay full for long (librdkafka's send
                // queue full while a broker is away): keep answering stop
                // and keep the ticks (stall watch, readiness) going meanwhile.
                let tickets: Vec<_> = batch.iter().map(|j| j.ticket.clone()).collect();
                let send = worker.send(std::mem::take(batch));
                tokio::pin!(send);
                let sent = loop {
                    tokio::select! {
                        biased;
                        _ = &mut stopped => return,
                        _ = &mut died => return,
                        sent = &mut send => break sent,
                        _ = tick.tick() => self.on_tick(),
                    }
                };
                if sent.is_err() {
                    // Its receiver is gone only if the worker died; its lifeline
                    // may not have raised the alarm yet.
                    shared.watchdog.raise(&worker_name(w));
                    return;
                }
                // Marked after the hand-off: a revoke or a stop can only come
                // while this loop polls, never between the two.
                shared.dispatched(&tickets);
            }
            // Under sustained load the branches above are ready nearly every
            // time and the biased selects may not reach the tick for long:
            // store positions on schedule regardless.
            if tick
                .poll_tick(&mut Context::from_waker(Waker::noop()))
                .is_ready()
            {
                self.on_tick();
            }
        }
    }

    fn on_tick(&mut self) {
        let shared = self.shared.clone();
        shared.store_positions(&*self.consumer, None);
        let m = &shared.metrics;
        m.in_flight(shared.pending(None));
        self.watch_stalls();
        m.set_ready(&shared.health);
    }

    /// Report partitions that hold inputs without progress for longer than
    /// `stall_after`: the gauge for every tracked partition, `/readyz`, and
    /// a log line when a stall starts and once a minute while it lasts.
    fn watch_stalls(&mut self) {
        let shared = &self.shared;
        let mut stalled = Vec::new();
        for st in shared.partitions() {
            let (topic, partition) = (&*st.partition.0, st.partition.1);
            let is = st.pending > 0 && st.waiting >= self.stall_after;
            shared.metrics.partition_stalled(topic, partition, is);
            if !is {
                self.stalls_logged.remove(&st.partition);
                continue;
            }
            stalled.push(format!(
                "{topic}/{partition} holds {} inputs without progress for {} s",
                st.pending,
                st.waiting.as_secs()
            ));
            let due = self
                .stalls_logged
                .get(&st.partition)
                .is_none_or(|t| t.elapsed() >= STALL_LOG_INTERVAL);
            if due {
                shared
                    .metrics
                    .stall(topic, partition, st.pending, st.waiting.as_secs());
                self.stalls_logged.insert(st.partition, Instant::now());
            }
        }
        stalled.sort();
        shared.health.set_stalled(stalled);
    }
}

/// A message the consumer already holds, without waiting for one.
fn ready_now(consumer: &ServiceConsumer) -> Option<KafkaResult<BorrowedMessage<'_>>> {
    let recv = std::pin::pin!(consumer.recv());
    match recv.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(m) => Some(m),
        Poll::Pending => None,
    }
}

/// Enter an input in the ledger.
fn track(
    shared: &Shared,
    topics: &mut HashMap<String, Arc<str>>,
    msg: OwnedMessage,
    permit: OwnedSemaphorePermit,
) -> Job {
    let topic = match topics.get(msg.topic()) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = Arc::from(msg.topic());
            topics.insert(msg.topic().to_owned(), t.clone());
            t
        }
    };
    let ticket = shared.track(&(topic, msg.partition()), msg.offset());
    Job {
        msg,
        ticket,
        permit,
    }
}

/// The worker that owns a partition (so its inputs stay in order): a
/// topic's partitions go round the workers in turn, from a place its name
/// picks, so the partitions of one topic spread evenly (hashing each
/// partition put 3 of 4 on one of 2 workers).
pub(super) fn worker_of(partition: &Partition, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    partition.0.hash(&mut h);
    let id = u64::from(partition.1.unsigned_abs());
    (h.finish().wrapping_add(id) % workers.max(1) as u64) as usize
}

/// Commit what is stored, synchronously.
pub(super) fn commit<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    metrics: &Metrics,
) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        result => metrics.commit(&result),
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
}
