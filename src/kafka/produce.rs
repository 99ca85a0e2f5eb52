//! Sending output records, and sending again those whose delivery failed.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage, ToBytes};
use rdkafka::producer::{BaseRecord, ThreadedProducer};

use super::context::ProducerCtx;
use super::shared::{Ack, Shared};
use crate::metrics::{ProduceFailure, ProduceStep};

pub(super) type Producer = ThreadedProducer<ProducerCtx>;

/// Wait before sending a failed record again.
pub(super) const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Wait while librdkafka's send queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// A message to the retrier.
pub(super) enum Resend {
    /// A record whose delivery failed, to be sent again after `not_before`.
    Record {
        msg: OwnedMessage,
        ack: Arc<Ack>,
        not_before: Instant,
    },
    /// Shutdown: stop at once.
    Stop,
}

/// Enqueue a record, waiting while librdkafka's queue is full and retrying
/// other immediate errors with backoff until the drain timeout has passed.
pub(super) fn send<K, P>(
    shared: &Shared,
    producer: &Producer,
    mut record: BaseRecord<'_, K, P, Arc<Ack>>,
) where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(QUEUE_FULL_WAIT);
            }
            Err((e, r)) => {
                let abandon = shared.abandoning();
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
pub(super) fn error_code(e: &KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "other".to_owned(), |c| format!("{c:?}"))
}

/// Start the retrier: it re-sends records whose delivery failed, after a
/// backoff, until it is sent [`Resend::Stop`]. It holds a lifeline like the
/// workers.
pub(super) fn spawn_retrier(
    shared: Arc<Shared>,
    producer: Arc<Producer>,
    resends: Receiver<Resend>,
) -> std::io::Result<JoinHandle<()>> {
    let lifeline = shared.watchdog.lifeline("veil-retry".into());
    std::thread::Builder::new()
        .name("veil-retry".into())
        .spawn(move || {
            let _lifeline = lifeline;
            while let Ok(Resend::Record {
                msg,
                ack,
                not_before,
            }) = resends.recv()
            {
                if shared.abandoning() {
                    continue; // dropped: not acknowledged, so not committed
                }
                if let Some(wait) = not_before.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut record: BaseRecord<'_, [u8], [u8], Arc<Ack>> =
                    BaseRecord::with_opaque_to(msg.topic(), ack)
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
}
