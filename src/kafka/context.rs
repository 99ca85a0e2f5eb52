//! librdkafka callbacks: delivery reports (acknowledgements), rebalances,
//! statistics (consumer lag, broker state) and client errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Instant;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use tracing::warn;

use super::consume::{ServiceConsumer, commit};
use super::produce::{Class, Delivery, Outgoing, classify, failed};
use super::shared::Shared;
use super::worker::{Change, split};
use crate::metrics::{ProduceFailure, ProduceStep, Rebalanced};
use crate::offsets::Partition;
use crate::outcome::RejectReason;
use crate::transaction::Refusal;

pub(crate) struct ProducerCtx {
    shared: Arc<Shared>,
    /// A transactional producer's (`delivery: exactly_once`): its delivery
    /// reports acknowledge nothing (inputs complete when their transaction
    /// commits) and a failure is not retried record by record, it fails the
    /// transaction, which is aborted and processed again.
    transactional: bool,
    /// A delivery of the open transaction failed (transactional only).
    delivery_failed: AtomicBool,
    /// Records the broker refused for good since they were last taken
    /// (transactional only): the partition's worker counts them, and
    /// replaces one refused often enough by a dead letter.
    refused: Mutex<Vec<Refusal<RejectReason>>>,
}

impl ProducerCtx {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        ProducerCtx {
            shared,
            transactional: false,
            delivery_failed: AtomicBool::new(false),
            refused: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn transactional(shared: Arc<Shared>) -> Self {
        ProducerCtx {
            transactional: true,
            ..ProducerCtx::new(shared)
        }
    }

    pub(super) fn delivery_failed(&self) -> bool {
        self.delivery_failed.load(Ordering::Acquire)
    }

    pub(super) fn reset_delivery_failed(&self) {
        self.delivery_failed.store(false, Ordering::Release);
    }

    /// The records refused for good since the last call.
    pub(super) fn take_refused(&self) -> Vec<Refusal<RejectReason>> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.shared, "producer", error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) if self.transactional => {}
            // Purged by an abort: that transaction is already given up.
            Err((e, _))
                if self.transactional
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                    ) => {}
            Err((e, msg)) if self.transactional => {
                self.delivery_failed.store(true, Ordering::Release);
                let code = super::produce::error_code(e);
                // A dead letter written in place of a refused record is not
                // replaced again: if it is refused too, the partition stalls
                // (reported), as at least once.
                if let Class::Refused(reason) =
                    classify(e.rdkafka_error_code(), ProduceStep::Delivery)
                    && !delivery.refusal
                {
                    self.refused
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Refusal {
                            offset: delivery.ack.ticket.offset,
                            topic: msg.topic().to_owned(),
                            reason,
                            code: code.clone(),
                        });
                }
                self.shared.metrics.produce_failed(ProduceFailure {
                    code: &code,
                    topic: msg.topic(),
                    error: e,
                    step: ProduceStep::Delivery,
                });
            }
            Ok(_) => self.shared.acknowledge(&delivery.ack),
            Err((e, msg)) => failed(
                &self.shared,
                Outgoing::from_message(msg, delivery),
                e,
                ProduceStep::Delivery,
            ),
        }
    }
}

pub(crate) struct ConsumerCtx {
    shared: Arc<Shared>,
    /// The consumer this context belongs to, set once it is built: an
    /// assignment splits each partition's queue off it.
    consumer: OnceLock<Weak<ServiceConsumer>>,
}

impl ConsumerCtx {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        ConsumerCtx {
            shared,
            consumer: OnceLock::new(),
        }
    }

    pub(super) fn set_consumer(&self, consumer: &Arc<ServiceConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }
}

fn client_error(shared: &Shared, client: &str, error: KafkaError, reason: &str) {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::AllBrokersDown) => shared.health.set_broker_down(true),
        // The client cannot go on (e.g. the idempotent producer lost its
        // sequence): stop, exit 70, be restarted; nothing uncommitted is lost.
        Some(RDKafkaErrorCode::Fatal) => shared
            .watchdog
            .raise(&format!("kafka {client} (fatal error)")),
        _ => {}
    }
    warn!(client, error = %error, reason, "kafka client error");
}

impl ClientContext for ConsumerCtx {
    /// Broker reachability and the group session, for readiness. (Lag
    /// comes from the broker's watermarks instead: these statistics only
    /// move while partitions are being fetched.)
    fn stats(&self, stats: Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        self.shared.health.set_broker_down(!up);
        let not_joined = stats
            .cgrp
            .filter(|g| !(g.state == "up" && g.join_state == "steady"))
            .map(|g| format!("{}/{}", g.state, g.join_state));
        self.shared.health.set_group(not_joined);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.shared, "consumer", error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(tpl),
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let m = &self.shared.metrics;
        match rebalance {
            Rebalance::Assign(tpl) => {
                m.rebalance(Rebalanced::Assigned {
                    partitions: &describe(tpl),
                });
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        self.shared.health.set_assigned(assigned);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            result => self.shared.metrics.commit(&result),
        }
    }
}

impl ConsumerCtx {
    /// Before partitions come: a new ledger generation for each, and its
    /// own queue handed to the worker that owns it. Split now, before
    /// librdkafka assigns (and starts fetching) it, so that none of its
    /// messages reach the main queue.
    fn assign(&self, tpl: &TopicPartitionList) {
        let shared = &self.shared;
        let assigned = partitions(tpl);
        let generations = shared.assign(&assigned);
        let consumer = self.consumer.get().and_then(Weak::upgrade);
        for (partition, generation) in assigned.into_iter().zip(generations) {
            let Some(desk) = shared.desk_of(&partition) else {
                continue;
            };
            let queue = consumer.as_ref().and_then(|c| split(c, &partition));
            match queue {
                Some(queue) => desk.post(Change::Take {
                    partition,
                    generation,
                    queue,
                }),
                // Its messages then arrive on the main queue, and the
                // consumer thread processes them there.
                None => warn!(
                    topic = &*partition.0,
                    partition = partition.1,
                    "cannot split the partition's queue off the consumer"
                ),
            }
        }
    }

    /// Before partitions go: wait (up to the drain timeout) for their
    /// in-flight inputs, store and commit what completed, then forget the
    /// rest, which the next owner re-reads from the commit. Exactly once:
    /// the wait is for each partition's worker to commit (or abort) its
    /// open transaction, which completes (or forgets) its inputs.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let shared = &self.shared;
        let revoked = partitions(tpl);
        let mut told: Vec<&super::worker::Desk> = Vec::new();
        for partition in &revoked {
            if let Some(desk) = shared.desk_of(partition) {
                desk.post(Change::Drop(partition.clone()));
                if !told.iter().any(|d| std::ptr::eq(*d, desk)) {
                    told.push(desk);
                }
            }
        }
        // Wait out any read in progress: from here on no worker reads a
        // revoked partition's queue (whose next assignment would share it).
        for desk in told {
            desk.quiesce();
        }
        if !shared.closing.load(Ordering::Relaxed) {
            shared.wait_settled(Some(&revoked), Instant::now() + shared.drain_timeout);
        }
        shared.store_positions(consumer, Some(&revoked));
        commit(consumer, shared);
        let abandoned = shared.revoke(&revoked);
        for (topic, partition) in &revoked {
            shared.metrics.forget_partition(topic, *partition);
        }
        shared.metrics.rebalance(Rebalanced::Revoked {
            partitions: &describe(tpl),
            abandoned,
        });
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}
