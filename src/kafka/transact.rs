//! `delivery: exactly_once`: one transactional producer per assigned input
//! partition, owned by the partition's worker. Its transactions hold the
//! outputs and dead letters of a run of the partition's inputs, in order,
//! and the offset after the last of them (`send_offsets_to_transaction`
//! with the consumer's group metadata), so that a `read_committed`
//! consumer of the outputs and the group's committed offset move together.
//!
//! Invariants:
//! - An input completes (frees its in-flight place, counts as completed,
//!   moves the partition's commit position) only when the transaction that
//!   holds its outputs and its offset has committed.
//! - Nothing is sent outside a transaction, and a transaction holds inputs
//!   of one partition only, in offset order, none twice.
//! - A transaction that cannot commit is aborted, and its partition is
//!   rewound to the offset of its first input (the last committed offset):
//!   the consumer seeks there and the inputs are processed again. Nothing
//!   of an aborted transaction reaches a `read_committed` consumer.
//! - The producer's `transactional.id` is the partition's
//!   ([`crate::transaction::transactional_id`]), so the next owner of a
//!   partition fences any earlier producer of it when it starts (aborting
//!   its open transaction); a fenced or otherwise fatally failed producer
//!   stops veil (exit 70) rather than go on as a zombie.
//!
//! When a transaction commits is decided by [`crate::transaction::due`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info};

use super::consume::ServiceConsumer;
use super::context::ProducerCtx;
use super::produce::{
    Class, Delivery, Producer, REFUSED_ATTEMPTS, classify, error_code, refused_letter,
};
use super::shared::Shared;
use crate::config::{KafkaSource, TxnLimits};
use crate::metrics::{AbortReason, Aborted, ProduceFailure, ProduceStep};
use crate::offsets::{Partition, Ticket};
use crate::outcome::RejectReason;
use crate::transaction::{Next, Refusal, Refusals, TxnError, next};

/// How long one transaction call may block before it is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a retried call.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Pause before a partition whose transaction aborted is read again.
const ABORT_BACKOFF: Duration = Duration::from_millis(500);
/// Wait while librdkafka's send queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// What every worker's transactions need: the source (for the producers'
/// settings), the limits, and the consumer (group metadata, seeks).
pub(super) struct Txns {
    pub(super) source: KafkaSource,
    pub(super) limits: TxnLimits,
    pub(super) consumer: Arc<ServiceConsumer>,
}

/// A transaction call failed for good: the producer cannot go on (the
/// watchdog is raised, veil stops).
#[derive(Debug)]
pub(super) struct Fatal;

/// The open transaction of a partition.
struct Open {
    opened: Instant,
    /// Offset of its first input: where an abort rewinds to.
    first: i64,
    /// Offset of its last input.
    last: i64,
    inputs: Vec<(Ticket, Option<i64>)>,
    /// Set when a record could not be enqueued: the transaction is aborted
    /// instead of committed.
    failed: Option<String>,
}

/// One input partition's transactional producer and open transaction.
pub(super) struct PartitionTxn {
    partition: Partition,
    generation: u64,
    producer: Producer,
    open: Option<Open>,
    /// Inputs below this offset are committed or in the open transaction:
    /// one read again (a fetch from before a seek) is skipped.
    next_offset: Option<i64>,
    /// After an abort, the partition is not read before this: a
    /// transaction that fails every time (a record the broker refuses
    /// for good) is retried at a steady pace, not in a tight loop.
    resume_at: Option<Instant>,
    /// Records of uncommitted inputs the broker refused for good: one
    /// refused [`REFUSED_ATTEMPTS`] times is replaced by a dead letter, so
    /// that its transaction can commit.
    refusals: Refusals<RejectReason>,
}

fn flags(e: &KafkaError) -> TxnError {
    match e {
        KafkaError::Transaction(e) => TxnError {
            fatal: e.is_fatal(),
            abortable: e.txn_requires_abort(),
            retriable: e.is_retriable(),
        },
        // `commit_transaction` flushes first; a flush that timed out can be
        // tried again, as can any call that timed out.
        _ if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) => TxnError {
            retriable: true,
            ..TxnError::default()
        },
        _ => TxnError::default(),
    }
}

impl PartitionTxn {
    /// Create the partition's producer and initialise its transactions,
    /// which fences every earlier producer of the partition (and aborts its
    /// open transaction). Retried while the coordinator is not reachable.
    pub(super) fn start(
        txns: &Txns,
        shared: &Arc<Shared>,
        partition: &Partition,
        generation: u64,
    ) -> Result<PartitionTxn, Fatal> {
        let (topic, p) = (&*partition.0, partition.1);
        let producer: Producer = super::clients::transactional_producer(&txns.source, topic, p)
            .create_with_context(ProducerCtx::transactional(shared.clone()))
            .map_err(|e| fatal(shared, partition, "create", &e))?;
        loop {
            match producer.init_transactions(CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) if next(flags(&e)) == Next::Retry && !shared.reading_stopped() => {
                    debug!(topic, partition = p, code = %error_code(&e), "init_transactions: retrying");
                    std::thread::sleep(RETRY_BACKOFF);
                }
                Err(e) => return Err(fatal(shared, partition, "init_transactions", &e)),
            }
        }
        info!(
            topic,
            partition = p,
            transactional_id = %crate::transaction::transactional_id(&txns.source.group_id, topic, p),
            "exactly-once producer ready"
        );
        Ok(PartitionTxn {
            partition: partition.clone(),
            generation,
            producer,
            open: None,
            next_offset: None,
            resume_at: None,
            refusals: Refusals::new(REFUSED_ATTEMPTS),
        })
    }

    /// How long until the partition may be read again after an abort
    /// (`None`: now).
    pub(super) fn paused_for(&self) -> Option<Duration> {
        let left = self.resume_at?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Whether an input at `offset` is already committed or in the open
    /// transaction (read again from before a seek): then it is skipped.
    pub(super) fn seen(&self, offset: i64) -> bool {
        self.next_offset.is_some_and(|n| offset < n)
    }

    /// Open a transaction for an input at `offset`, unless one is open.
    pub(super) fn begin(&mut self, shared: &Shared, offset: i64) -> Result<(), Fatal> {
        if self.open.is_some() {
            return Ok(());
        }
        self.count_refusals();
        if let Err(e) = self.producer.begin_transaction() {
            return Err(fatal(shared, &self.partition, "begin_transaction", &e));
        }
        self.producer.context().reset_delivery_failed();
        self.open = Some(Open {
            opened: Instant::now(),
            first: offset,
            last: offset,
            inputs: Vec::new(),
            failed: None,
        });
        Ok(())
    }

    /// Send one record of the open transaction, waiting while librdkafka's
    /// queue is full unless `hurry` (a rebalance waits for the worker).
    /// A record refused for good (by librdkafka now, or by the broker in
    /// [`REFUSED_ATTEMPTS`] aborted transactions before) is replaced by a
    /// dead letter in the same transaction; a record that cannot be
    /// enqueued for any other reason fails the transaction: it is aborted
    /// instead of committed.
    pub(super) fn send<K, P>(
        &mut self,
        shared: &Shared,
        record: BaseRecord<'_, K, P, Box<Delivery>>,
        hurry: &dyn Fn() -> bool,
    ) where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let refused = if self.refusals.is_empty() || record.delivery_opaque.refusal {
            None
        } else {
            let offset = record.delivery_opaque.ack.ticket.offset;
            self.refusals.for_good(offset, record.topic).cloned()
        };
        match refused {
            None => {
                if let Some(refused) = self.enqueue(shared, record, hurry) {
                    self.replace(shared, refused, hurry);
                }
            }
            Some(r) => self.replace(
                shared,
                (r.reason, r.code, record.delivery_opaque, r.topic),
                hurry,
            ),
        }
    }

    /// Send the dead letter that takes the place of a record refused for
    /// good (the record's delivery passes to it).
    fn replace(
        &mut self,
        shared: &Shared,
        (reason, code, mut delivery, topic): (RejectReason, String, Box<Delivery>, String),
        hurry: &dyn Fn() -> bool,
    ) {
        let (letter, headers) = refused_letter(shared, &topic, &delivery.ack.ticket, reason, &code);
        delivery.refusal = true;
        let record =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(&shared.topics.dead_letter, delivery)
                .payload(&letter[..])
                .headers(headers);
        // A dead letter in place of a refused record is never replaced.
        let _ = self.enqueue(shared, record, hurry);
    }

    /// Enqueue a record in the open transaction. Returns the record's
    /// delivery if librdkafka refuses it for good (too large): a dead
    /// letter is to take its place.
    fn enqueue<K, P>(
        &mut self,
        shared: &Shared,
        mut record: BaseRecord<'_, K, P, Box<Delivery>>,
        hurry: &dyn Fn() -> bool,
    ) -> Option<(RejectReason, String, Box<Delivery>, String)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let Some(open) = self.open.as_mut() else {
            return None; // begin failed: the watchdog is raised
        };
        if open.failed.is_some() {
            return None; // aborted anyway
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return None,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if !hurry() && !shared.abandoning() =>
                {
                    record = r;
                    std::thread::sleep(QUEUE_FULL_WAIT);
                }
                Err((e, r)) => {
                    let code = error_code(&e);
                    shared.metrics.produce_failed(ProduceFailure {
                        code: &code,
                        topic: r.topic,
                        error: &e,
                        step: ProduceStep::Enqueue,
                    });
                    if let Class::Refused(reason) =
                        classify(e.rdkafka_error_code(), ProduceStep::Enqueue)
                        && !r.delivery_opaque.refusal
                    {
                        return Some((reason, code, r.delivery_opaque, r.topic.to_owned()));
                    }
                    open.failed = Some(code);
                    return None;
                }
            }
        }
    }

    /// Count the refusals the delivery reports have brought since the last
    /// call.
    fn count_refusals(&mut self) {
        for refusal in self.producer.context().take_refused() {
            let Refusal { offset, .. } = refusal;
            let n = self.refusals.refused(refusal);
            debug!(
                partition = self.partition.1,
                offset,
                refusals = n,
                "a record of the transaction was refused by the broker"
            );
        }
    }

    /// An input at `offset` whose records (if any) were sent in the open
    /// transaction: it completes when the transaction commits.
    pub(super) fn add(&mut self, ticket: Ticket, timestamp_ms: Option<i64>) {
        if let Some(open) = self.open.as_mut() {
            open.last = ticket.offset;
            open.inputs.push((ticket, timestamp_ms));
            self.next_offset = Some(open.last + 1);
        }
    }

    /// Inputs in the open transaction and how long it has been open.
    pub(super) fn state(&self) -> (usize, Option<Duration>) {
        self.open
            .as_ref()
            .map_or((0, None), |o| (o.inputs.len(), Some(o.opened.elapsed())))
    }

    /// Whether the open transaction cannot commit (a record of it could not
    /// be enqueued or was not delivered): abort it now rather than at its
    /// commit.
    pub(super) fn failed(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.failed.is_some())
            || (self.open.is_some() && self.producer.context().delivery_failed())
    }

    /// Commit the open transaction with its partition's next offset; on an
    /// abortable error abort it and rewind the partition instead. `Err`:
    /// the producer cannot go on (the watchdog is raised).
    pub(super) fn finish(&mut self, txns: &Txns, shared: &Shared) -> Result<(), Fatal> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if let Some(code) = open.failed.clone() {
            return self.abort(txns, shared, open, AbortReason::Produce, &code);
        }
        let (topic, p) = (&*self.partition.0, self.partition.1);
        let mut offsets = TopicPartitionList::with_capacity(1);
        if offsets
            .add_partition_offset(topic, p, Offset::Offset(open.last + 1))
            .is_err()
        {
            return self.abort(txns, shared, open, AbortReason::SendOffsets, "offset");
        }
        let Some(group) = txns.consumer.group_metadata() else {
            return self.abort(txns, shared, open, AbortReason::SendOffsets, "no_group");
        };
        let sent = self.call(shared, "send_offsets_to_transaction", || {
            self.producer
                .send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)
        })?;
        if let Err(code) = sent {
            return self.abort(txns, shared, open, AbortReason::SendOffsets, &code);
        }
        let committed = self.call(shared, "commit_transaction", || {
            self.producer.commit_transaction(CALL_TIMEOUT)
        })?;
        if let Err(code) = committed {
            // Abortable: a record of it was not delivered, or the commit
            // was refused; either way nothing of it is visible.
            let reason = if self.producer.context().delivery_failed() {
                AbortReason::Produce
            } else {
                AbortReason::Commit
            };
            return self.abort(txns, shared, open, reason, &code);
        }
        shared.metrics.transaction_committed();
        self.refusals.committed(open.last + 1);
        // The same offsets again, through the consumer, now that the
        // transaction holding them has committed (so they never run ahead
        // of its outputs). On Kafka this is redundant; librdkafka's mock
        // cluster (`veil dev-broker`, the tests) keeps no transactional
        // offsets at all, and without it a restart there would re-read
        // everything. Synchronous, so that it has landed before a revoke
        // gives the partition up.
        let mirrored = txns.consumer.commit(&offsets, CommitMode::Sync);
        shared.metrics.commit(&mirrored);
        for (ticket, timestamp_ms) in &open.inputs {
            shared.complete(ticket, *timestamp_ms);
        }
        debug!(
            topic,
            partition = p,
            inputs = open.inputs.len(),
            next = open.last + 1,
            "transaction committed"
        );
        Ok(())
    }

    /// Make a transaction call until it succeeds (`Ok(Ok)`), needs an
    /// abort (`Ok(Err(code))`) or cannot go on (`Err`). Retries stop once
    /// the drain deadline has passed: the transaction is then aborted.
    fn call(
        &self,
        shared: &Shared,
        what: &str,
        mut call: impl FnMut() -> Result<(), KafkaError>,
    ) -> Result<Result<(), String>, Fatal> {
        loop {
            let Err(e) = call() else {
                return Ok(Ok(()));
            };
            match next(flags(&e)) {
                Next::Retry if !shared.abandoning() => {
                    debug!(code = %error_code(&e), what, "transaction call: retrying");
                    std::thread::sleep(RETRY_BACKOFF);
                }
                Next::Retry | Next::Abort => return Ok(Err(error_code(&e))),
                Next::Fatal => return Err(fatal(shared, &self.partition, what, &e)),
            }
        }
    }

    /// Abort `open` and rewind the partition to its first input, so that
    /// its inputs are read and processed again.
    fn abort(
        &mut self,
        txns: &Txns,
        shared: &Shared,
        open: Open,
        reason: AbortReason,
        code: &str,
    ) -> Result<(), Fatal> {
        loop {
            match self.producer.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) if next(flags(&e)) == Next::Retry && !shared.abandoning() => {
                    std::thread::sleep(RETRY_BACKOFF);
                }
                Err(e) => return Err(fatal(shared, &self.partition, "abort_transaction", &e)),
            }
        }
        self.count_refusals();
        let (topic, p) = (&*self.partition.0, self.partition.1);
        shared.rewind(&self.partition, self.generation, open.first);
        self.next_offset = Some(open.first);
        self.resume_at = Some(Instant::now() + ABORT_BACKOFF);
        if shared.holds(&self.partition)
            && let Err(e) = txns
                .consumer
                .seek(topic, p, Offset::Offset(open.first), CALL_TIMEOUT)
        {
            // Reading on from where the fetch is would skip the aborted
            // inputs: stop instead (the restarted instance re-reads them).
            return Err(fatal(shared, &self.partition, "seek", &e));
        }
        shared.metrics.transaction_aborted(Aborted {
            topic,
            partition: p,
            reason,
            code,
            inputs: open.inputs.len(),
            rewound_to: open.first,
        });
        Ok(())
    }
}

/// The producer of `partition` cannot go on: stop veil (exit 70), to be
/// restarted; nothing it had not committed is lost.
fn fatal(shared: &Shared, partition: &Partition, what: &str, e: &KafkaError) -> Fatal {
    let (topic, p) = (&*partition.0, partition.1);
    let code = error_code(e);
    let fenced = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
    ) || code.contains("Fenced");
    tracing::error!(
        topic,
        partition = p,
        call = what,
        code = %code,
        error = %e,
        fenced,
        "exactly-once producer cannot go on{}; stopping (exit 70) so that veil is restarted",
        if fenced { " (fenced: another instance has taken over its transactional id)" } else { "" }
    );
    shared.watchdog.raise(&format!(
        "exactly-once producer of {topic}/{p} ({what}: {code})"
    ));
    Fatal
}
