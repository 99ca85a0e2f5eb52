//! Worker threads: each applies the live stage to the inputs of the
//! partitions it owns, in arrival order, and sends their output records.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::BaseRecord;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use super::produce::{Delivery, Producer, send};
use super::shared::{Ack, Live, Shared};
use crate::engine::Scratch;
use crate::offsets::Ticket;
use crate::stage::{Headers as StageHeaders, Origin, Processed, Source};

/// One input, tracked in the ledger and holding an in-flight slot.
pub(super) struct Job {
    pub(super) msg: OwnedMessage,
    pub(super) ticket: Ticket,
    pub(super) permit: OwnedSemaphorePermit,
}

pub(super) fn worker_name(i: usize) -> String {
    format!("veil-worker-{i}")
}

/// Start worker `i`; it runs until its job channel closes. It holds a
/// lifeline: dying any other way raises the watchdog's alarm.
pub(super) fn spawn(
    i: usize,
    shared: Arc<Shared>,
    producer: Arc<Producer>,
    jobs: mpsc::Receiver<Vec<Job>>,
) -> std::io::Result<JoinHandle<()>> {
    let lifeline = shared.watchdog.lifeline(worker_name(i));
    std::thread::Builder::new()
        .name(worker_name(i))
        .spawn(move || {
            let _lifeline = lifeline;
            work(&shared, &producer, jobs)
        })
}

fn work(shared: &Shared, producer: &Producer, mut jobs: mpsc::Receiver<Vec<Job>>) {
    let mut processed = Processed::default();
    let mut scratch = Scratch::default();
    while let Some(batch) = jobs.blocking_recv() {
        // One look at the live stage per batch: a reload applies from the
        // next batch on.
        let live = shared.live();
        for job in batch {
            process(shared, producer, &live, job, &mut processed, &mut scratch);
        }
    }
}

/// Apply the stage to one input and send its output records.
fn process(
    shared: &Shared,
    producer: &Producer,
    live: &Live,
    job: Job,
    processed: &mut Processed,
    scratch: &mut Scratch,
) {
    if !shared.is_live(&job.ticket) {
        debug!(
            partition = job.ticket.partition.1,
            offset = job.ticket.offset,
            "skipping input of a revoked partition"
        );
        return; // revoked: the partition's new owner re-reads it
    }
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

    let timestamp_ms = msg.timestamp().to_millis();
    let records = processed.records();
    if records == 0 {
        shared.complete(&job.ticket, timestamp_ms);
        return;
    }
    let ack = Ack::new(records, job.ticket, timestamp_ms, job.permit);
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
