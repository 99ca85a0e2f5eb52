//! The Kafka adapter: `veil run` with a Kafka source. Consumes raw events,
//! applies the [`Stage`] on worker threads, produces each route's clean
//! events and the dead letters, and commits an input only once everything it
//! produced is acknowledged.
//!
//! ```text
//! partition queues ──(their worker)──► Stage::process ──► producer
//!  consumer thread: rebalances, stores offsets                │
//!      └──────────── ledger ◄── delivery reports (acks) ◄─────┘
//! ```
//!
//! One file per phase: `shared` (the book of pending inputs, acks,
//! offset storing), `consume` (the consumer thread: callbacks, ticks,
//! stall watch), `worker` (reading partition queues, applying the stage,
//! building records),
//! `produce` (sending, retries, refusals), `transact` (exactly once: a
//! transactional producer per partition), `reload`, `lag`, and
//! `context` (librdkafka's callbacks). Build ([`start`]) → run →
//! drain ([`Running::drain`]).
//!
//! Guarantees (see `docs/pipeline.md`):
//! - With `delivery: exactly_once`, instead of the acknowledgements below:
//!   each assigned partition's worker writes its outputs, dead letters and
//!   input offsets in transactions of its own producer (`transact`); an
//!   input completes when its transaction commits.
//! - At least once: an input's offset is stored for commit only when every
//!   output it produced (one per forwarding route, or its dead-letter
//!   record) is acknowledged; a failed delivery is retried, never skipped,
//!   unless the broker refuses it for good: then a dead letter replaces it.
//! - In order per partition: one worker owns each input partition and
//!   reads its queue, and the producer is idempotent (a re-sent record may
//!   land after later ones).
//! - Bounded memory: at most `max_in_flight` inputs are read and not yet
//!   acknowledged: a guaranteed part per partition and a pool to borrow
//!   from (see `shared`); a partition without room is not read until it
//!   gets some, and one that stalls never takes another's part.
//! - No silent stall: no record veil makes is too large to send
//!   ([`Stage::limit_records`]); a partition without progress is reported
//!   (gauge, `/readyz`, log); a panic while processing one input
//!   dead-letters it (`internal_error`, see [`crate::stage::contain`]); a
//!   worker or retry thread that dies anyway stops the service with
//!   [`ServiceError::ThreadDied`] (see `watchdog`).

// On the data path: no input or broker reply may reach an `unwrap`,
// `expect`, `panic!` or unchecked index here (tests are exempt).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod clients;
mod consume;
mod context;
mod lag;
mod produce;
mod reload;
mod shared;
mod suppression;
pub mod topics;
mod transact;
mod watchdog;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::config::{Delivery, KafkaSource, Pipeline, PipelineConfig};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::stage::Stage;

use consume::{Poller, ServiceConsumer, commit};
use context::{ConsumerCtx, ProducerCtx};
use produce::{Producer, Resend};
use shared::{Shared, Sizing, Topics};

pub use crate::stage::header;
pub use clients::{consumer as consumer_config, producer as producer_config};

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

    fn is_stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    async fn reload_requested(&self) {
        self.inner.reload.notified().await;
    }

    fn count_completed(&self) {
        self.inner.completed.fetch_add(1, Ordering::Relaxed);
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
    #[error("cannot start thread {thread}: {source}")]
    Spawn {
        thread: String,
        #[source]
        source: std::io::Error,
    },
    /// A worker or retry thread panicked outside the per-input guard. What
    /// was complete is committed; the rest is re-read after a restart.
    #[error("{thread} cannot go on (see the log line before); stopped so that veil is restarted")]
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

/// A started service: consuming, applying and producing until
/// [`Control::stop`] (or a thread's death); [`Running::drain`] then finishes.
pub struct Running {
    shared: Arc<Shared>,
    consumer: Arc<ServiceConsumer>,
    producer: Arc<Producer>,
    poller: JoinHandle<()>,
    suppression_reader: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    retrier: JoinHandle<()>,
    reloader: tokio::task::JoinHandle<()>,
    lag: tokio::task::JoinHandle<()>,
}

/// Build the clients, subscribe and spawn the consumer thread, the workers,
/// the retrier and the reloader. `stage` is the already loaded and
/// validated policies and keys; reloads re-read them from `config`. Call
/// within a tokio runtime.
pub async fn start(
    config: &PipelineConfig,
    stage: Stage,
    suppression: Option<Arc<crate::suppression::SuppressionList>>,
    metrics: Metrics,
    health: Arc<Health>,
    control: Control,
) -> Result<Running, ServiceError> {
    let Pipeline::Kafka(kafka) = &config.pipeline else {
        return Err(ServiceError::NotKafka);
    };
    let src = &kafka.source;
    let (resend, resends) = std::sync::mpsc::channel();
    let topics = Topics {
        routes: kafka.routes.iter().map(|r| r.to.clone()).collect(),
        dead_letter: kafka.dead_letter_topic.clone(),
    };
    let shared = Arc::new(Shared::new(
        stage,
        metrics,
        health.clone(),
        control,
        topics,
        clients::record_limit(src),
        kafka.drain_timeout,
        resend,
        Sizing {
            workers: kafka.workers,
            max_in_flight: kafka.max_in_flight,
        },
        suppression,
        matches!(src.delivery, Delivery::ExactlyOnce(_)),
    ));
    health.set_loaded(true);

    let producer: Arc<Producer> = Arc::new(
        clients::producer(src)
            .create_with_context(ProducerCtx::new(shared.clone()))
            .map_err(|source| ServiceError::Client {
                client: "producer",
                source,
            })?,
    );
    let consumer: Arc<ServiceConsumer> = Arc::new(
        clients::consumer(src)
            .create_with_context(ConsumerCtx::new(shared.clone()))
            .map_err(|source| ServiceError::Client {
                client: "consumer",
                source,
            })?,
    );
    consumer.context().set_consumer(&consumer);
    // The suppression topic first: no event is read before it is read to
    // the end it has now.
    let suppression_reader = match (&shared.suppression, &config.suppression) {
        (
            Some(_),
            Some(crate::config::SuppressionConfig {
                topic: Some(topic), ..
            }),
        ) => {
            let loading = Arc::new(suppression::Loading::default());
            health.set_suppression_loading(true);
            shared.metrics.set_ready(&health);
            let reader = suppression::spawn(src, topic.clone(), shared.clone(), loading.clone())?;
            info!(topic = %topic, "reading the suppression topic before any event");
            loop {
                let l = loading.clone();
                let done = tokio::task::spawn_blocking(move || l.wait(Duration::from_millis(500)))
                    .await
                    .unwrap_or(false);
                if done || shared.reading_stopped() {
                    break;
                }
            }
            health.set_suppression_loading(false);
            Some(reader)
        }
        _ => None,
    };
    let topic_names: Vec<&str> = src.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_names)
        .map_err(|source| ServiceError::Subscribe {
            topics: src.topics.clone(),
            source,
        })?;
    let live = shared.live();
    info!(
        topics = ?src.topics,
        group = %src.group_id,
        policies = %live.stage.policy_tags().collect::<Vec<_>>().join(", "),
        key_id = %live.stage.key_id(),
        routes = kafka.routes.len(),
        workers = kafka.workers,
        max_in_flight = kafka.max_in_flight,
        "veil is consuming"
    );
    drop(live);

    let spawn_error = |thread: &str| {
        let thread = thread.to_owned();
        move |source| ServiceError::Spawn { thread, source }
    };
    let retrier = produce::spawn_retrier(shared.clone(), producer.clone(), resends)
        .map_err(spawn_error("veil-retry"))?;
    let txns = match src.delivery {
        Delivery::ExactlyOnce(limits) => Some(Arc::new(transact::Txns {
            source: src.clone(),
            limits,
            consumer: consumer.clone(),
        })),
        Delivery::AtLeastOnce => None,
    };
    let mut workers = Vec::with_capacity(kafka.workers);
    for i in 0..kafka.workers {
        workers.push(
            worker::spawn(i, shared.clone(), producer.clone(), txns.clone())
                .map_err(spawn_error(&worker::worker_name(i)))?,
        );
    }
    // Only the workers hold the consumer through `txns`: it closes once
    // they are joined, as before.
    drop(txns);
    let poller = Poller {
        consumer: consumer.clone(),
        producer: producer.clone(),
        shared: shared.clone(),
        stall_after: kafka.stall_after,
        stalls_logged: Default::default(),
        next_shadow_log: std::time::Instant::now() + std::time::Duration::from_secs(60),
    }
    .spawn()
    .map_err(spawn_error("veil-consumer"))?;
    let reloader = tokio::spawn(reload::reload_loop(config.clone(), shared.clone()));
    let lag = tokio::spawn(lag::refresh_loop(consumer.clone(), shared.clone()));
    Ok(Running {
        shared,
        consumer,
        producer,
        poller,
        suppression_reader,
        workers,
        retrier,
        reloader,
        lag,
    })
}

impl Running {
    /// Wait until stopped (or a thread died), then stop reading, wait up to
    /// the drain timeout for in-flight inputs to be acknowledged, commit
    /// what completed and close. After a thread died, exit promptly instead:
    /// commit what is already complete without waiting (the dead thread's
    /// inputs would never complete anyway).
    pub async fn drain(self) -> Result<RunSummary, ServiceError> {
        let Running {
            shared,
            consumer,
            producer,
            poller,
            suppression_reader,
            workers,
            retrier,
            reloader,
            lag,
        } = self;
        // The consumer thread returns when stopped or when a thread died,
        // and stops the workers reading (they finish the input at hand).
        let _ = tokio::task::spawn_blocking(move || poller.join()).await;
        shared.stop_reading();

        let died = shared.watchdog.dead();
        let drain_timeout = if let Some(what) = &died {
            shared.health.set_stopping(what.clone());
            shared.metrics.set_ready(&shared.health);
            Duration::ZERO
        } else {
            shared.drain_timeout
        };
        info!(
            in_flight = shared.pending(None),
            drain_timeout_s = drain_timeout.as_secs(),
            "stopping: draining in-flight deliveries"
        );
        shared.closing.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + drain_timeout;
        let waiting = shared.clone();
        let _ = tokio::task::spawn_blocking(move || waiting.wait_settled(None, deadline)).await;
        // Everything read and not complete: in flight past the deadline.
        // None of it is committed.
        let abandoned = shared.pending(None);
        shared.store_positions(&*consumer, None);
        if abandoned > 0 {
            warn!(
                abandoned,
                "drain timeout: inputs not acknowledged in time are not committed and will be re-read"
            );
        }
        commit(&*consumer, &shared);
        // Counted now: inputs that complete after the final commit are not
        // committed, so they are not reported as completed either.
        let completed = shared.control.completed();
        shared.abandon.store(true, Ordering::Relaxed);
        let _ = shared.resend.send(Resend::Stop);
        reloader.abort();
        lag.abort();
        {
            let (producer, shared) = (producer.clone(), shared.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for w in workers.into_iter().chain(suppression_reader) {
                    let _ = w.join();
                }
                let _ = retrier.join();
                let _ = producer.flush(Duration::from_secs(5));
                // Queues posted to a worker that never took them keep the
                // consumer alive; let go of them so that it closes (here,
                // off the async runtime: closing waits for the broker).
                for desk in &shared.desks {
                    desk.clear();
                }
                drop(consumer);
            })
            .await;
        }
        shared.health.set_assigned(0);
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
}
