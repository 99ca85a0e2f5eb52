//! The Kafka adapter: `veil run` with a Kafka source. Consumes raw events,
//! applies the [`Stage`] on worker threads, produces each route's clean
//! events and the dead letters, and commits an input only once everything it
//! produced is acknowledged.
//!
//! ```text
//! consumer task ──(per-partition worker)──► Stage::process ──► producer
//!      ▲  stores offsets                                            │
//!      └──────────── ledger ◄── delivery reports (acks) ◄───────────┘
//! ```
//!
//! Guarantees (see `docs/pipeline.md`):
//! - At least once: an input's offset is stored for commit only when every
//!   output it produced (one per forwarding route, or its dead-letter
//!   record) is acknowledged; a failed delivery is retried, never skipped.
//! - In order per partition: one worker owns each input partition, and the
//!   producer is idempotent.
//! - Bounded memory: at most `max_in_flight` inputs are read and not yet
//!   acknowledged; when full, veil stops polling.
//! - No silent stall: a panic while processing one input dead-letters it
//!   (`internal_error`, see [`crate::stage::contain`]); a worker or retry
//!   thread that dies anyway stops the service with
//!   [`ServiceError::ThreadDied`] (see [`watchdog`]).

mod clients;
mod context;
pub mod topics;
mod watchdog;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::{KafkaSource, Pipeline, PipelineConfig};
use crate::engine::Scratch;
use crate::health::Health;
use crate::metrics::{Metrics, ProduceFailure, ProduceStep, Reload, StageCounters};
use crate::offsets::{Ledger, Partition, Ticket};
use crate::outcome::RouteOutcome;
use crate::stage::{Origin, Processed, Stage};

use context::{ConsumerCtx, ProducerCtx};
use watchdog::Watchdog;

pub use clients::{consumer as consumer_config, producer as producer_config};

/// Output record headers veil sets (input headers named `veil-*` are never copied).
pub mod header {
    /// `name@version` of the policy that made the record.
    pub const POLICY: &str = "veil-policy";
    /// Id of the key the pseudonyms were made with.
    pub const KEY_ID: &str = "veil-key-id";
    pub const SOURCE_TOPIC: &str = "veil-source-topic";
    pub const SOURCE_PARTITION: &str = "veil-source-partition";
    pub const SOURCE_OFFSET: &str = "veil-source-offset";
    /// Dead letters only: the reject reason code.
    pub const REASON: &str = "veil-reason";
}

/// Asks a running service to stop or reload, and tells how far it got.
/// Cheap to clone; the CLI wires signals to it, tests and `veil demo` call it.
#[derive(Clone)]
pub struct Control {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    stop: watch::Sender<bool>,
    reload: Notify,
    completed: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            inner: Arc::new(ControlInner {
                stop: watch::channel(false).0,
                reload: Notify::new(),
                completed: AtomicU64::new(0),
            }),
        }
    }
}

impl Control {
    /// Stop consuming, drain, commit, return.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Re-read policies and keys; an invalid set is rejected and the old one stays.
    pub fn reload(&self) {
        self.inner.reload.notify_one();
    }

    /// Inputs whose outputs have all been acknowledged (or that produced none).
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Relaxed)
    }

    async fn stopped(&self) {
        let mut rx = self.inner.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the config's source is not Kafka")]
    NotKafka,
    #[error("cannot create the Kafka {client}: {source}")]
    Client {
        client: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: KafkaError,
    },
    /// A worker or retry thread panicked outside the per-input guard. What
    /// was complete is committed; the rest is re-read after a restart.
    #[error("thread {thread} died (a bug in veil); stopped so that veil is restarted")]
    ThreadDied { thread: String },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Inputs fully acknowledged.
    pub completed: u64,
    /// Inputs still unacknowledged when the drain timeout ran out; they were
    /// not committed, so the next owner of their partitions re-reads them.
    pub abandoned: usize,
}

/// Build both clients from the config without connecting anywhere, so
/// `veil check` can report unknown or invalid librdkafka properties.
pub fn check_client_config(src: &KafkaSource) -> Result<(), ServiceError> {
    clients::consumer(src)
        .create::<rdkafka::consumer::BaseConsumer>()
        .map_err(|source| ServiceError::Client {
            client: "consumer",
            source,
        })?;
    clients::producer(src)
        .create::<rdkafka::producer::BaseProducer>()
        .map_err(|source| ServiceError::Client {
            client: "producer",
            source,
        })?;
    Ok(())
}

/// The live policies and key: replaced as a whole on reload.
struct Live {
    stage: Stage,
    counters: StageCounters,
    /// `name@version` per route, for the `veil-policy` header.
    policy_tags: Vec<String>,
}

impl Live {
    fn new(stage: Stage, metrics: &Metrics) -> Live {
        let counters = metrics.live(&stage.policies(), stage.key_id());
        let policy_tags = stage
            .routes()
            .iter()
            .map(|r| {
                let p = r.engine.policy();
                format!("{}@{}", p.name, p.version)
            })
            .collect();
        Live {
            stage,
            counters,
            policy_tags,
        }
    }
}

/// The ledger and the commit positions it has advanced but the consumer has
/// not yet stored; one lock so positions are stored in the order they advance.
#[derive(Default)]
struct Book {
    ledger: Ledger,
    positions: HashMap<Partition, i64>,
}

/// State shared by the consumer task, the workers and librdkafka's callbacks.
struct Shared {
    book: Mutex<Book>,
    live: RwLock<Arc<Live>>,
    metrics: Metrics,
    health: Arc<Health>,
    control: Control,
    route_topics: Vec<String>,
    dead_letter_topic: String,
    drain_timeout: Duration,
    retries: std::sync::mpsc::Sender<Retry>,
    /// Set on shutdown: rebalance callbacks stop waiting for deliveries.
    closing: AtomicBool,
    /// Set when the drain timeout has passed: workers stop retrying sends.
    abandon: AtomicBool,
    /// Raised when a worker or the retrier dies.
    watchdog: Watchdog,
}

/// One input's outstanding outputs. The last acknowledgement completes the
/// input in the ledger; dropping the last reference releases its in-flight slot.
pub(crate) struct Ack {
    remaining: std::sync::atomic::AtomicUsize,
    ticket: Ticket,
    timestamp_ms: Option<i64>,
    _permit: OwnedSemaphorePermit,
}

/// A record whose delivery failed, to be sent again.
struct Retry {
    msg: OwnedMessage,
    ack: Arc<Ack>,
    not_before: Instant,
}

struct Job {
    msg: OwnedMessage,
    ticket: Ticket,
    permit: OwnedSemaphorePermit,
}

const RETRY_BACKOFF: Duration = Duration::from_millis(500);
const STORE_INTERVAL: Duration = Duration::from_millis(200);

impl Shared {
    /// One output of `ack`'s input was acknowledged.
    fn acknowledge(&self, ack: &Ack) {
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(&ack.ticket, ack.timestamp_ms);
        }
    }

    /// Every output of an input is acknowledged (or it had none).
    fn complete(&self, ticket: &Ticket, timestamp_ms: Option<i64>) {
        {
            let mut book = self.book.lock().expect("book lock");
            if let Some(position) = book.ledger.complete(ticket) {
                book.positions.insert(ticket.partition.clone(), position);
            }
        }
        self.control.inner.completed.fetch_add(1, Ordering::Relaxed);
        if let Some(ts) = timestamp_ms {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if now >= ts {
                self.metrics
                    .end_to_end(Duration::from_millis((now - ts) as u64));
            }
        }
    }

    /// Hand the advanced positions to the consumer, which commits them in
    /// the background. Only `partitions` when given (a revoke).
    fn store_positions<C: Consumer<ConsumerCtx>>(
        &self,
        consumer: &C,
        partitions: Option<&[Partition]>,
    ) {
        let positions: Vec<(Partition, i64)> = {
            let mut book = self.book.lock().expect("book lock");
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

/// Run the service until [`Control::stop`]. `stage` is the already loaded
/// and validated policies and keys; reloads re-read them from `config`.
pub async fn run(
    config: &PipelineConfig,
    stage: Stage,
    metrics: Metrics,
    health: Arc<Health>,
    control: Control,
) -> Result<RunSummary, ServiceError> {
    let Pipeline::Kafka(kafka) = &config.pipeline else {
        return Err(ServiceError::NotKafka);
    };
    let src = &kafka.source;
    let route_topics = kafka.routes.iter().map(|r| r.to.clone()).collect();
    let dead_letter_topic = kafka.dead_letter_topic.clone();
    let (retry_tx, retry_rx) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        book: Mutex::default(),
        live: RwLock::new(Arc::new(Live::new(stage, &metrics))),
        metrics: metrics.clone(),
        health: health.clone(),
        control: control.clone(),
        route_topics,
        dead_letter_topic,
        drain_timeout: kafka.drain_timeout,
        retries: retry_tx,
        closing: AtomicBool::new(false),
        abandon: AtomicBool::new(false),
        watchdog: Watchdog::default(),
    });
    health.set_loaded(true);

    let producer: Arc<ThreadedProducer<ProducerCtx>> = Arc::new(
        clients::producer(src)
            .create_with_context(ProducerCtx::new(shared.clone()))
            .map_err(|source| ServiceError::Client {
                client: "producer",
                source,
            })?,
    );
    let consumer: StreamConsumer<ConsumerCtx> = clients::consumer(src)
        .create_with_context(ConsumerCtx::new(shared.clone()))
        .map_err(|source| ServiceError::Client {
            client: "consumer",
            source,
        })?;
    let topics: Vec<&str> = src.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| ServiceError::Subscribe {
            topics: src.topics.clone(),
            source,
        })?;
    let (policies, key_id) = {
        let live = shared.live.read().expect("live lock");
        (live.policy_tags.join(", "), live.stage.key_id().to_owned())
    };
    info!(
        topics = ?src.topics,
        group = %src.group_id,
        policies = %policies,
        key_id = %key_id,
        routes = kafka.routes.len(),
        workers = kafka.workers,
        max_in_flight = kafka.max_in_flight,
        "veil is consuming"
    );

    let retrier = spawn_retrier(shared.clone(), producer.clone(), retry_rx);
    let mut senders = Vec::with_capacity(kafka.workers);
    let mut workers: Vec<JoinHandle<()>> = Vec::with_capacity(kafka.workers);
    for i in 0..kafka.workers {
        let (tx, rx) = mpsc::channel::<Vec<Job>>(64);
        senders.push(tx);
        let (shared, producer) = (shared.clone(), producer.clone());
        let lifeline = shared.watchdog.lifeline(worker_name(i));
        workers.push(
            std::thread::Builder::new()
                .name(worker_name(i))
                .spawn(move || {
                    let _lifeline = lifeline;
                    worker(shared, producer, rx)
                })
                .expect("spawn worker thread"),
        );
    }
    let reloader = tokio::spawn(reload_loop(config.clone(), shared.clone()));

    let semaphore = Arc::new(Semaphore::new(kafka.max_in_flight));
    consume(
        &consumer,
        &shared,
        &senders,
        &semaphore,
        kafka.max_in_flight,
    )
    .await;

    // Shutdown: no more reads; drain what is in flight, commit, close. After
    // a thread died, exit promptly instead: commit what is already complete
    // without waiting (the dead thread's inputs would never complete anyway).
    let died = shared.watchdog.dead();
    let drain_timeout = if died.is_some() {
        health.set_thread_died();
        shared.metrics.set_ready(&health);
        Duration::ZERO
    } else {
        kafka.drain_timeout
    };
    info!(
        in_flight = kafka.max_in_flight - semaphore.available_permits(),
        drain_timeout_s = drain_timeout.as_secs(),
        "stopping: draining in-flight deliveries"
    );
    shared.closing.store(true, Ordering::Relaxed);
    drop(senders);
    let deadline = Instant::now() + drain_timeout;
    loop {
        shared.store_positions(&consumer, None);
        let pending = shared
            .book
            .lock()
            .expect("book lock")
            .ledger
            .total_pending();
        if pending == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.store_positions(&consumer, None);
    let abandoned = shared
        .book
        .lock()
        .expect("book lock")
        .ledger
        .total_pending();
    if abandoned > 0 {
        warn!(
            abandoned,
            "drain timeout: inputs not acknowledged in time are not committed and will be re-read"
        );
    }
    commit(&consumer, &shared.metrics);
    shared.abandon.store(true, Ordering::Relaxed);
    reloader.abort();
    tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
        let _ = retrier.join();
        let _ = producer.flush(Duration::from_secs(5));
    })
    .await
    .expect("join workers");
    drop(consumer);
    health.set_assigned(0);
    let completed = control.completed();
    info!(completed, abandoned, "veil stopped");
    // Also a thread that died while draining.
    if let Some(thread) = died.or_else(|| shared.watchdog.dead()) {
        return Err(ServiceError::ThreadDied { thread });
    }
    Ok(RunSummary {
        completed,
        abandoned,
    })
}

/// Read until stopped: one in-flight slot per input, dispatched to the
/// worker that owns its partition. Whatever else is already fetched (up to
/// [`BATCH`]) goes along in the same hand-off, so a worker thread is woken
/// once per batch rather than once per event.
async fn consume(
    consumer: &StreamConsumer<ConsumerCtx>,
    shared: &Arc<Shared>,
    senders: &[mpsc::Sender<Vec<Job>>],
    semaphore: &Arc<Semaphore>,
    max_in_flight: usize,
) {
    let mut tick = tokio::time::interval(STORE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut batches: Vec<Vec<Job>> = (0..senders.len()).map(|_| Vec::new()).collect();
    let stopped = shared.control.stopped();
    tokio::pin!(stopped);
    let died = shared.watchdog.died();
    tokio::pin!(died);
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = &mut died => return,
            permit = semaphore.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = tick.tick() => {
                on_tick(consumer, shared, semaphore, max_in_flight);
                continue;
            }
        };
        let received = tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = &mut died => return,
            m = consumer.recv() => m,
            _ = tick.tick() => {
                on_tick(consumer, shared, semaphore, max_in_flight);
                continue;
            }
        };
        let mut next = Some((received, permit));
        let mut batched = 0;
        while let Some((received, permit)) = next.take() {
            match received {
                Ok(m) => {
                    let job = track(shared, &mut topics, m.detach(), permit);
                    let w = worker_of(&job.ticket.partition, senders.len());
                    batches[w].push(job);
                    batched += 1;
                }
                Err(e) => {
                    warn!(error = %e, "consume error; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                    break;
                }
            }
            if batched < BATCH
                && let Ok(permit) = semaphore.clone().try_acquire_owned()
            {
                next = ready_now(consumer).map(|m| (m, permit));
            }
        }
        for (w, batch) in batches.iter_mut().enumerate() {
            if !batch.is_empty() && senders[w].send(std::mem::take(batch)).await.is_err() {
                // Its receiver is gone only if the worker died; its lifeline
                // may not have raised the alarm yet.
                shared.watchdog.raise(&worker_name(w));
                return;
            }
        }
        // Under sustained load the branches above are ready nearly every
        // time and the biased selects may not reach the tick for long:
        // store positions on schedule regardless.
        if tick
            .poll_tick(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            .is_ready()
        {
            on_tick(consumer, shared, semaphore, max_in_flight);
        }
    }
}

/// Inputs handed to a worker at once, at most.
const BATCH: usize = 256;

/// A message the consumer already holds, without waiting for one.
fn ready_now(
    consumer: &StreamConsumer<ConsumerCtx>,
) -> Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>> {
    let recv = std::pin::pin!(consumer.recv());
    match recv.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(m) => Some(m),
        std::task::Poll::Pending => None,
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
    let partition: Partition = (topic, msg.partition());
    let ticket = shared
        .book
        .lock()
        .expect("book lock")
        .ledger
        .track(&partition, msg.offset());
    Job {
        msg,
        ticket,
        permit,
    }
}

fn worker_name(i: usize) -> String {
    format!("veil-worker-{i}")
}

/// The worker that owns a partition (so its inputs stay in order).
fn worker_of(partition: &Partition, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    partition.hash(&mut h);
    (h.finish() % workers as u64) as usize
}

fn on_tick(
    consumer: &StreamConsumer<ConsumerCtx>,
    shared: &Shared,
    semaphore: &Semaphore,
    max_in_flight: usize,
) {
    shared.store_positions(consumer, None);
    let m = &shared.metrics;
    m.in_flight(max_in_flight - semaphore.available_permits());
    m.set_ready(&shared.health);
}

/// Commit what is stored, synchronously.
fn commit<C: Consumer<ConsumerCtx>>(consumer: &C, metrics: &Metrics) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        result => metrics.commit(&result),
    }
}

/// Apply the stage to each job and produce its outputs, in arrival order.
fn worker(
    shared: Arc<Shared>,
    producer: Arc<ThreadedProducer<ProducerCtx>>,
    mut jobs: mpsc::Receiver<Vec<Job>>,
) {
    let mut processed = Processed::default();
    let mut scratch = Scratch::default();
    while let Some(batch) = jobs.blocking_recv() {
        for job in batch {
            process(&shared, &producer, job, &mut processed, &mut scratch);
        }
    }
}

/// Apply the stage to one input and produce its outputs.
fn process(
    shared: &Shared,
    producer: &ThreadedProducer<ProducerCtx>,
    job: Job,
    processed: &mut Processed,
    scratch: &mut Scratch,
) {
    if !shared
        .book
        .lock()
        .expect("book lock")
        .ledger
        .is_live(&job.ticket)
    {
        debug!(
            partition = job.ticket.partition.1,
            offset = job.ticket.offset,
            "skipping input of a revoked partition"
        );
        return; // revoked: the partition's new owner re-reads it
    }
    let live = shared.live.read().expect("live lock").clone();
    let msg = &job.msg;
    let payload = msg.payload().unwrap_or_default();
    let started = Instant::now();
    let origin = Origin::Kafka {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
    };
    live.stage
        .process(payload, msg.key(), origin, processed, scratch);
    shared.metrics.processed_in(started.elapsed());
    live.counters.record(payload.len(), processed.tally());

    let outputs = if processed.rejected.is_some() {
        1
    } else {
        processed
            .outputs
            .iter()
            .filter(|o| o.outcome == RouteOutcome::Forwarded)
            .count()
    };
    let timestamp_ms = msg.timestamp().to_millis();
    if outputs == 0 {
        shared.complete(&job.ticket, timestamp_ms);
        return;
    }
    let ack = Arc::new(Ack {
        remaining: outputs.into(),
        ticket: job.ticket,
        timestamp_ms,
        _permit: job.permit,
    });
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let source = |h: OwnedHeaders| {
        h.insert(header_str(header::KEY_ID, live.stage.key_id()))
            .insert(header_str(header::SOURCE_TOPIC, msg.topic()))
            .insert(header_str(header::SOURCE_PARTITION, &partition))
            .insert(header_str(header::SOURCE_OFFSET, &offset))
    };
    if let Some(reject) = &processed.rejected {
        let record = live.stage.dead_letter(reject, origin, Some(payload));
        let headers = source(OwnedHeaders::new_with_capacity(5))
            .insert(header_str(header::REASON, reject.reason.code()));
        let record =
            BaseRecord::<[u8], [u8], Arc<Ack>>::with_opaque_to(&shared.dead_letter_topic, ack)
                .payload(&record[..])
                .headers(headers);
        send(shared, producer, record);
        return;
    }
    for (i, o) in processed.outputs.iter().enumerate() {
        if o.outcome != RouteOutcome::Forwarded {
            continue;
        }
        let mut headers = source(OwnedHeaders::new_with_capacity(5))
            .insert(header_str(header::POLICY, &live.policy_tags[i]));
        if let Some(input) = msg.headers() {
            for h in input.iter() {
                if live.stage.keeps_header(h.key) {
                    headers = headers.insert(h);
                }
            }
        }
        let mut record = BaseRecord::with_opaque_to(&shared.route_topics[i], ack.clone())
            .payload(processed.value(o))
            .headers(headers);
        if let Some(key) = processed.key(o) {
            record = record.key(key);
        }
        send(shared, producer, record);
    }
}

fn header_str<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Enqueue a record, waiting while librdkafka's queue is full and retrying
/// other immediate errors with backoff until the drain timeout has passed.
fn send<K, P>(
    shared: &Shared,
    producer: &ThreadedProducer<ProducerCtx>,
    mut record: BaseRecord<'_, K, P, Arc<Ack>>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, r)) => {
                let abandon = shared.abandon.load(Ordering::Relaxed);
                shared.metrics.produce_failed(ProduceFailure {
                    code: &error_code(&e),
                    topic: r.topic,
                    error: &e,
                    step: if abandon {
                        ProduceStep::EnqueueAbandoned
                    } else {
                        ProduceStep::Enqueue
                    },
                });
                if abandon {
                    return; // not acknowledged, so not committed: re-read later
                }
                record = r;
                std::thread::sleep(RETRY_BACKOFF);
            }
        }
    }
}

/// A metric label for a Kafka error: its librdkafka code name, never its text.
fn error_code(e: &KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "other".to_owned(), |c| format!("{c:?}"))
}

/// Re-send records whose delivery failed, after a backoff.
fn spawn_retrier(
    shared: Arc<Shared>,
    producer: Arc<ThreadedProducer<ProducerCtx>>,
    retries: std::sync::mpsc::Receiver<Retry>,
) -> JoinHandle<()> {
    let lifeline = shared.watchdog.lifeline("veil-retry".into());
    std::thread::Builder::new()
        .name("veil-retry".into())
        .spawn(move || {
            let _lifeline = lifeline;
            loop {
                let r = match retries.recv_timeout(Duration::from_millis(100)) {
                    Ok(r) => r,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if shared.abandon.load(Ordering::Relaxed) {
                            return;
                        }
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                };
                if shared.abandon.load(Ordering::Relaxed) {
                    continue; // drop: not acknowledged, so not committed
                }
                if let Some(wait) = r.not_before.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let msg = &r.msg;
                let mut record: BaseRecord<'_, [u8], [u8], Arc<Ack>> =
                    BaseRecord::with_opaque_to(msg.topic(), r.ack.clone())
                        .payload(msg.payload().unwrap_or_default());
                if let Some(k) = msg.key() {
                    record = record.key(k);
                }
                if let Some(h) = msg.headers() {
                    record = record.headers(h.clone());
                }
                send(&shared, &producer, record);
            }
        })
        .expect("spawn retry thread")
}

/// Swap in freshly loaded policies and keys on each reload request.
async fn reload_loop(config: PipelineConfig, shared: Arc<Shared>) {
    loop {
        shared.control.inner.reload.notified().await;
        let loaded = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || crate::stage::load(&config)).await
        };
        match loaded {
            Ok(Ok((stage, _ring))) => {
                let live = Live::new(stage, &shared.metrics);
                let tags = live.policy_tags.join(", ");
                let key_id = live.stage.key_id().to_owned();
                *shared.live.write().expect("live lock") = Arc::new(live);
                shared.metrics.reload(Reload::Ok {
                    policies: &tags,
                    key_id: &key_id,
                });
            }
            Ok(Err(e)) => shared.metrics.reload(Reload::Rejected { error: &e }),
            Err(e) => error!(error = %e, "reload task failed"),
        }
    }
}
