//! Sending output records; sending again those that failed; and, for a
//! record the broker refuses for good, a dead letter in its place.
//!
//! A failed record never blocks a worker: it goes to the retrier thread,
//! which re-sends it after a backoff. What is retried and what is refused
//! is [`classify`]'s decision, by librdkafka error code:
//!
//! | codes | class | what happens |
//! |---|---|---|
//! | `MessageSizeTooLarge`, `MessageBatchTooLarge`, `InvalidMessageSize` from librdkafka, before sending | refused: `output_too_large` | dead letter in its place |
//! | `InvalidRecord`, `PolicyViolation` from the broker | refused: `rejected_by_broker` | dead letter in its place, after [`REFUSED_ATTEMPTS`] refusals |
//! | `Fatal` (the idempotent producer cannot go on) | fatal | veil stops with exit 70, to be restarted |
//! | everything else (`MessageTimedOut`, `UnknownTopicOrPartition`, `TopicAuthorizationFailed`, broker down, a size refusal from the broker, `InvalidTimestamp`, ...) | transient | sent again after 500 ms, for as long as it takes |
//!
//! A size refusal from the broker is transient on purpose: the broker
//! judges a whole batch against the topic's `max.message.bytes`, so small
//! records batched together are refused alike; dead-lettering them would
//! empty good events out of the clean topic. The partition stalls, is
//! reported, and the fix is to set the producer's `message.max.bytes` to the
//! topic's limit, which veil then holds every record to (`output_too_large`
//! at processing). `InvalidTimestamp` is transient too: veil does not set
//! record timestamps, so it means veil's own clock is off. The dead letter written in
//! place of a refused record holds the reason, the error code, the route
//! and the input's coordinates, never the event; if even that is refused,
//! it is retried as transient (a stall that the stall detector reports).
//! Transient failures stall only their own input's partition's commits.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseRecord, ThreadedProducer};

use super::context::ProducerCtx;
use super::shared::{Ack, Shared};
use crate::metrics::{ProduceFailure, ProduceStep};
use crate::offsets::Ticket;
use crate::outcome::RejectReason;
use crate::stage::{Origin, Source};

pub(super) type Producer = ThreadedProducer<ProducerCtx>;

/// Wait before sending a failed record again.
pub(super) const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Wait while librdkafka's send queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);
/// Deliveries of a record the broker refuses before a dead letter replaces it.
pub(super) const REFUSED_ATTEMPTS: u32 = 3;

/// What travels with a record through librdkafka to its delivery report.
pub(crate) struct Delivery {
    pub(super) ack: Arc<Ack>,
    /// Refusals so far (other failures do not count).
    pub(super) refusals: u32,
    /// A dead letter written in place of a refused record: never refused again.
    pub(super) refusal: bool,
}

impl Delivery {
    pub(super) fn first(ack: Arc<Ack>) -> Box<Delivery> {
        Box::new(Delivery {
            ack,
            refusals: 0,
            refusal: false,
        })
    }
}

/// A record owned, to be sent again.
pub(super) struct Outgoing {
    pub(super) topic: String,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) delivery: Box<Delivery>,
}

impl Outgoing {
    /// Copy a record librdkafka handed back.
    pub(super) fn from_record<K, P>(r: BaseRecord<'_, K, P, Box<Delivery>>) -> Outgoing
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        Outgoing {
            topic: r.topic.to_owned(),
            key: r.key.map(|k| k.to_bytes().to_vec()),
            payload: r.payload.map(|p| p.to_bytes().to_vec()).unwrap_or_default(),
            headers: r.headers,
            delivery: r.delivery_opaque,
        }
    }
}

impl Outgoing {
    /// Copy a record whose delivery failed.
    pub(super) fn from_message(msg: &BorrowedMessage<'_>, delivery: Box<Delivery>) -> Outgoing {
        Outgoing {
            topic: msg.topic().to_owned(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: msg.headers().map(|h| h.detach()),
            delivery,
        }
    }
}

/// A message to the retrier.
pub(super) enum Resend {
    /// Send again, not before the given time.
    Retry(Outgoing, Instant),
    /// Write a dead letter in its place.
    Refuse(Outgoing, RejectReason, String),
    /// Shutdown: stop at once.
    Stop,
}

/// How a failure to produce a record is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Try again, for as long as it takes.
    Transient,
    /// The broker (or librdkafka) will never take this record.
    Refused(RejectReason),
    /// The producer cannot go on: veil must stop and be restarted.
    Fatal,
}

/// The class of a produce error, by its librdkafka code and where it was
/// reported (see the table in the module docs).
pub(super) fn classify(code: Option<RDKafkaErrorCode>, step: ProduceStep) -> Class {
    use RDKafkaErrorCode as C;
    let enqueue = step != ProduceStep::Delivery;
    match code {
        Some(C::Fatal) => Class::Fatal,
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize)
            if enqueue =>
        {
            Class::Refused(RejectReason::OutputTooLarge)
        }
        Some(C::InvalidRecord | C::PolicyViolation) if !enqueue => {
            Class::Refused(RejectReason::RejectedByBroker)
        }
        _ => Class::Transient,
    }
}

/// Enqueue a record, waiting while librdkafka's queue is full, unless
/// `hurry` says the caller is wanted elsewhere (a rebalance waits for the
/// worker): then the retrier sends it. Any other failure is handed to
/// [`failed`]: the worker never waits on it.
pub(super) fn send<K, P>(
    shared: &Shared,
    producer: &Producer,
    mut record: BaseRecord<'_, K, P, Box<Delivery>>,
    hurry: &dyn Fn() -> bool,
) where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if shared.abandoning() {
                    return; // not acknowledged, so not committed: re-read later
                }
                if hurry() {
                    let later = Instant::now() + QUEUE_FULL_WAIT;
                    let _ = shared
                        .resend
                        .send(Resend::Retry(Outgoing::from_record(r), later));
                    return;
                }
                record = r;
                std::thread::sleep(QUEUE_FULL_WAIT);
            }
            Err((e, r)) => {
                return failed(shared, Outgoing::from_record(r), &e, ProduceStep::Enqueue);
            }
        }
    }
}

/// A record could not be produced (`step` says where): count and log it,
/// then have the retrier send it again or, if it is refused for good,
/// write a dead letter in its place.
pub(super) fn failed(shared: &Shared, mut record: Outgoing, e: &KafkaError, step: ProduceStep) {
    let abandon = shared.abandoning();
    let code = error_code(e);
    shared.metrics.produce_failed(ProduceFailure {
        code: &code,
        topic: &record.topic,
        error: e,
        step: if abandon {
            ProduceStep::EnqueueAbandoned
        } else {
            step
        },
    });
    if abandon {
        return; // not acknowledged, so not committed: re-read later
    }
    let class = match classify(e.rdkafka_error_code(), step) {
        Class::Refused(_) if record.delivery.refusal => Class::Transient,
        Class::Refused(reason) if step == ProduceStep::Delivery => {
            record.delivery.refusals += 1;
            if record.delivery.refusals < REFUSED_ATTEMPTS {
                Class::Transient
            } else {
                Class::Refused(reason)
            }
        }
        class => class,
    };
    let next = match class {
        Class::Transient => Resend::Retry(record, Instant::now() + RETRY_BACKOFF),
        Class::Refused(reason) => Resend::Refuse(record, reason, code),
        Class::Fatal => {
            // Not acknowledged, so not committed: re-read after the restart.
            shared.watchdog.raise("producer (fatal error)");
            return;
        }
    };
    // The retrier outlives every sender but the shutdown: a record sent
    // after it stopped is not acknowledged, so its input is re-read.
    let _ = shared.resend.send(next);
}

/// A metric label for a Kafka error: its librdkafka code name, never its text.
pub(super) fn error_code(e: &KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "other".to_owned(), |c| format!("{c:?}"))
}

/// Start the retrier: it re-sends failed records after their backoff and
/// writes the dead letters of refused ones, until it is sent
/// [`Resend::Stop`]. It holds a lifeline like the workers.
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
            loop {
                let (record, refused) = match resends.recv() {
                    Ok(Resend::Stop) | Err(_) => return,
                    Ok(Resend::Retry(record, not_before)) => {
                        if let Some(wait) = not_before.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        (record, None)
                    }
                    Ok(Resend::Refuse(record, reason, code)) => (record, Some((reason, code))),
                };
                if shared.abandoning() {
                    continue; // dropped: not acknowledged, so not committed
                }
                if !shared.is_live(&record.delivery.ack.ticket) {
                    // Its partition was revoked: the new owner re-reads the
                    // input and makes this record again. Sending it too would
                    // only duplicate it (or dead-letter what the new owner
                    // forwards); dropping it frees its in-flight slot.
                    continue;
                }
                match refused {
                    None => send_owned(&shared, &producer, record),
                    Some((reason, code)) => refuse(&shared, &producer, record, reason, &code),
                }
            }
        })
}

fn send_owned(shared: &Shared, producer: &Producer, o: Outgoing) {
    let mut record = BaseRecord::with_opaque_to(&o.topic, o.delivery).payload(&o.payload[..]);
    if let Some(k) = &o.key {
        record = record.key(&k[..]);
    }
    if let Some(h) = o.headers {
        record = record.headers(h);
    }
    send(shared, producer, record, &|| false);
}

/// Write the dead letter that replaces a refused record; the record's
/// acknowledgement passes to it.
fn refuse(shared: &Shared, producer: &Producer, o: Outgoing, reason: RejectReason, code: &str) {
    let (letter, headers) = refused_letter(shared, &o.topic, &o.delivery.ack.ticket, reason, code);
    let mut delivery = o.delivery;
    delivery.refusal = true;
    delivery.refusals = 0;
    let record = BaseRecord::<[u8], [u8], _>::with_opaque_to(&shared.topics.dead_letter, delivery)
        .payload(&letter[..])
        .headers(headers);
    send(shared, producer, record, &|| false);
}

/// The dead letter (payload and headers) that takes the place of a record
/// for `topic` made of the input `ticket` names, refused for good; counted
/// and logged (never with the record's content).
pub(super) fn refused_letter(
    shared: &Shared,
    topic: &str,
    ticket: &Ticket,
    reason: RejectReason,
    code: &str,
) -> (Vec<u8>, OwnedHeaders) {
    let live = shared.live();
    let route = shared.topics.routes.iter().position(|t| t == topic);
    let route_name = route
        .and_then(|i| live.stage.routes().get(i))
        .map(|r| r.name.as_str());
    let (source_topic, partition, offset) =
        (&*ticket.partition.0, ticket.partition.1, ticket.offset);
    let letter = live.stage.refused_letter(
        reason,
        route_name,
        code,
        Origin::Kafka {
            topic: source_topic,
            partition,
            offset,
        },
    );
    live.counters.refused(route, reason);
    tracing::warn!(
        topic,
        reason = reason.code(),
        code,
        source_topic,
        partition,
        offset,
        "the broker refused a record for good: a dead letter takes its place"
    );
    let source = Source::new(source_topic, partition, offset);
    let headers = live
        .stage
        .dead_letter_headers(reason.code(), &source)
        .iter()
        .fold(OwnedHeaders::new_with_capacity(5), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(*value),
            })
        });
    (letter, headers)
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
    use RDKafkaErrorCode as C;

    const DELIVERY: ProduceStep = ProduceStep::Delivery;
    const ENQUEUE: ProduceStep = ProduceStep::Enqueue;

    #[test]
    fn records_librdkafka_finds_too_large_are_refused_as_output_too_large() {
        for c in [
            C::MessageSizeTooLarge,
            C::MessageBatchTooLarge,
            C::InvalidMessageSize,
        ] {
            let class = classify(Some(c), ENQUEUE);
            assert_eq!(class, Class::Refused(RejectReason::OutputTooLarge), "{c:?}");
        }
    }

    #[test]
    fn a_size_refusal_from_the_broker_is_transient_it_judges_whole_batches() {
        for c in [
            C::MessageSizeTooLarge,
            C::MessageBatchTooLarge,
            C::InvalidMessageSize,
        ] {
            assert_eq!(classify(Some(c), DELIVERY), Class::Transient, "{c:?}");
        }
    }

    #[test]
    fn records_the_broker_calls_invalid_are_refused_as_rejected_by_broker() {
        for c in [C::InvalidRecord, C::PolicyViolation] {
            let class = classify(Some(c), DELIVERY);
            assert_eq!(
                class,
                Class::Refused(RejectReason::RejectedByBroker),
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_bad_timestamp_is_veils_clock_and_is_retried() {
        assert_eq!(
            classify(Some(C::InvalidTimestamp), DELIVERY),
            Class::Transient
        );
    }

    #[test]
    fn a_fatal_producer_error_stops_veil() {
        assert_eq!(classify(Some(C::Fatal), DELIVERY), Class::Fatal);
        assert_eq!(classify(Some(C::Fatal), ENQUEUE), Class::Fatal);
    }

    #[test]
    fn outages_timeouts_missing_topics_and_permissions_are_retried() {
        for c in [
            C::MessageTimedOut,
            C::AllBrokersDown,
            C::UnknownTopicOrPartition,
            C::UnknownTopic,
            C::UnknownPartition,
            C::TopicAuthorizationFailed,
            C::NotLeaderForPartition,
            C::RequestTimedOut,
            C::NotEnoughReplicas,
            C::QueueFull,
        ] {
            assert_eq!(classify(Some(c), DELIVERY), Class::Transient, "{c:?}");
            assert_eq!(classify(Some(c), ENQUEUE), Class::Transient, "{c:?}");
        }
        assert_eq!(classify(None, DELIVERY), Class::Transient);
    }
}
