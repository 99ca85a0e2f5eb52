//! The consumer's own thread: serves librdkafka's callbacks (rebalances,
//! statistics, errors) by polling the main queue, and on a schedule stores
//! the offsets the ledger advanced and watches for stalls. Inputs do not
//! come through here: each partition's messages are split into their own
//! queue at assignment and read by its worker (see `worker`).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use tracing::warn;

use super::context::ConsumerCtx;
use super::produce::Producer;
use super::shared::Shared;
use super::worker::Hands;
use crate::offsets::Partition;

/// How often advanced offsets are handed to the consumer for commit, and
/// stalls and readiness are looked at.
const TICK: Duration = Duration::from_millis(200);
/// Pause after a consumer error before polling on.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);
/// How often a stalled partition is logged again.
const STALL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How often the shadow policies' differences are summarised in the log.
const SHADOW_LOG_INTERVAL: Duration = Duration::from_secs(60);

pub(super) type ServiceConsumer = BaseConsumer<ConsumerCtx>;

/// The consumer thread's state.
pub(super) struct Poller {
    pub(super) consumer: Arc<ServiceConsumer>,
    pub(super) producer: Arc<Producer>,
    pub(super) shared: Arc<Shared>,
    pub(super) stall_after: Duration,
    /// Stalled partitions and when their stall was last logged.
    pub(super) stalls_logged: HashMap<Partition, Instant>,
    /// When the shadow policies' summary is logged next.
    pub(super) next_shadow_log: Instant,
}

impl Poller {
    /// Start the consumer thread. It holds a lifeline like the workers.
    pub(super) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        let lifeline = self.shared.watchdog.lifeline("veil-consumer".into());
        std::thread::Builder::new()
            .name("veil-consumer".into())
            .spawn(move || {
                let _lifeline = lifeline;
                self.run()
            })
    }

    /// Poll until stopped or a thread died, then stop the workers reading.
    fn run(mut self) {
        let mut next_tick = Instant::now() + TICK;
        let mut strays = Strays::default();
        while !self.shared.reading_stopped() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.consumer.poll(wait) {
                None => {}
                Some(Ok(msg)) => strays.process(&self.shared, &self.producer, &msg),
                Some(Err(e)) => {
                    warn!(error = %e, "consume error; polling on");
                    std::thread::sleep(ERROR_BACKOFF);
                }
            }
            if Instant::now() >= next_tick {
                self.on_tick();
                next_tick = Instant::now() + TICK;
            }
        }
        self.shared.stop_reading();
    }

    fn on_tick(&mut self) {
        let shared = self.shared.clone();
        shared.store_positions(&*self.consumer, None);
        let m = &shared.metrics;
        m.in_flight(shared.pending(None));
        self.watch_stalls();
        if Instant::now() >= self.next_shadow_log {
            shared
                .live()
                .counters
                .log_shadow_summaries("the last minute");
            self.next_shadow_log = Instant::now() + SHADOW_LOG_INTERVAL;
        }
        if let Some(list) = &shared.suppression {
            let unverifiable = list.unverifiable();
            shared
                .health
                .set_suppression_problem((!unverifiable.is_empty()).then(|| {
                    let keys: Vec<String> = unverifiable
                        .iter()
                        .map(|(k, n)| format!("{n} under key {k}"))
                        .collect();
                    format!(
                        "suppression entries that cannot be checked (their key is not loaded): {}",
                        keys.join(", ")
                    )
                }));
        }
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

/// Messages that reached the main queue: none should (each partition's
/// queue is split off before it is assigned); if one does, it is processed
/// here rather than lost, and logged once.
#[derive(Default)]
struct Strays {
    hands: Hands,
    logged: bool,
}

impl Strays {
    fn process(&mut self, shared: &Shared, producer: &Producer, msg: &BorrowedMessage<'_>) {
        if !self.logged {
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                "an input reached the consumer's main queue; processing it there (reported once)"
            );
            self.logged = true;
        }
        let partition: Partition = (Arc::from(msg.topic()), msg.partition());
        if shared.exactly_once {
            // Outside every transaction, it cannot be processed exactly
            // once, and a later transaction of its partition would commit
            // past it: stop (exit 70); the restarted instance re-reads it.
            shared
                .watchdog
                .raise("veil-consumer (an input outside its partition's queue, exactly once)");
            return;
        }
        if let Some(generation) = shared.generation(&partition) {
            let live = shared.live();
            self.hands.process(
                shared,
                super::worker::Out::Acks(producer),
                &live,
                (&partition, generation),
                msg,
                &|| false,
            );
        }
    }
}

/// Commit what is stored, synchronously (never with
/// `delivery: exactly_once`: each transaction commits its own offsets).
pub(super) fn commit<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    shared: &Shared,
) {
    if shared.exactly_once {
        return;
    }
    let metrics = &shared.metrics;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        result => metrics.commit(&result),
    }
}
