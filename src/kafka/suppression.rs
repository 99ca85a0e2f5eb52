//! The suppression topic: read from the beginning by every instance (on
//! its own consumer, assigned every partition, outside the consumer group)
//! and followed while veil runs. A record's key is a token line
//! (`<key_id>:<64 hex>`, as `veil suppress` prints); a record with a value
//! adds it, a tombstone (null value) removes it. Compaction keeps the last
//! record per key, so the topic is the list.
//!
//! veil reads no event before the topic has been read to the end it had at
//! start ([`Loading`]): until then `/readyz` says so, and the workers wait.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::ServiceError;
use super::shared::Shared;
use crate::config::KafkaSource;
use crate::suppression::{Entry, Source};

/// How long one broker request (metadata, watermarks) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Between attempts while the broker cannot be asked.
const RETRY: Duration = Duration::from_secs(1);
/// One poll; also how promptly the reader notices a stop.
const POLL: Duration = Duration::from_millis(200);
/// How often the topic's partitions are looked up again, so that a
/// partition added while veil runs is read too.
const NEW_PARTITIONS: Duration = Duration::from_secs(30);

/// Whether the topic has been read to its end at start.
#[derive(Default)]
pub(super) struct Loading {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Loading {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    pub(super) fn is_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait up to `longest` for the end; returns whether it was reached.
    pub(super) fn wait(&self, longest: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .changed
            .wait_timeout_while(done, longest, |d| !*d)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

/// Start the reader thread for `topic`. It holds a lifeline like the
/// workers and stops when reading stops.
pub(super) fn spawn(
    src: &KafkaSource,
    topic: String,
    shared: Arc<Shared>,
    loading: Arc<Loading>,
) -> Result<JoinHandle<()>, ServiceError> {
    let mut config = super::clients::consumer(src);
    // Never committed, never in the group: every instance reads it all.
    config
        .set("group.id", format!("{}-suppression", src.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().map_err(|source| ServiceError::Client {
        client: "suppression consumer",
        source,
    })?;
    let lifeline = shared.watchdog.lifeline("veil-suppression".into());
    std::thread::Builder::new()
        .name("veil-suppression".into())
        .spawn(move || {
            let _lifeline = lifeline;
            read(&consumer, &topic, &shared, &loading);
        })
        .map_err(|source| ServiceError::Spawn {
            thread: "veil-suppression".into(),
            source,
        })
}

fn read(consumer: &BaseConsumer, topic: &str, shared: &Shared, loading: &Loading) {
    let Some(list) = shared.suppression.as_ref() else {
        loading.finish();
        return;
    };
    let started = Instant::now();
    // Partitions and where each ended at start, asked until the broker answers.
    let ends = loop {
        if shared.reading_stopped() {
            return;
        }
        match ends_at_start(consumer, topic) {
            Ok(ends) => break ends,
            Err(e) => {
                warn!(topic, error = %e, "cannot read the suppression topic's partitions yet; retrying");
                std::thread::sleep(RETRY);
            }
        }
    };
    assign_from_beginning(consumer, topic, ends.keys().copied());
    // A partition is read to its end when librdkafka says it reached the
    // end (partition EOF) at or past the high watermark it had at start: a
    // watermark alone can be reported low (Tansu 0.6), an EOF alone could
    // come before the first fetch.
    let mut behind: HashMap<i32, (i64, Option<i64>)> = ends
        .iter()
        .map(|(p, (low, high))| (*p, (*high, (low >= high).then_some(*high))))
        .collect();
    let mut known: Vec<i32> = ends.keys().copied().collect();
    let mut looked = Instant::now();
    let mut records = 0u64;
    let report = |records: u64, behind: &HashMap<i32, (i64, Option<i64>)>| {
        if behind.is_empty() && !loading.is_done() {
            info!(
                topic,
                entries = list.len(),
                records,
                seconds = started.elapsed().as_secs_f64(),
                "suppression topic read to its end; veil reads events now"
            );
            loading.finish();
        }
    };
    while !shared.reading_stopped() {
        if looked.elapsed() >= NEW_PARTITIONS {
            looked = Instant::now();
            if let Ok(now) = ends_at_start(consumer, topic) {
                let new: Vec<i32> = now.keys().copied().filter(|p| !known.contains(p)).collect();
                if !new.is_empty() {
                    info!(topic, partitions = ?new, "suppression topic grew; reading its new partitions");
                    assign_from_beginning(consumer, topic, new.iter().copied());
                    known.extend(new);
                }
            }
        }
        let Some(polled) = consumer.poll(POLL) else {
            continue;
        };
        let msg = match polled {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                // (An emptied partition, low = high, counts as read from
                // the start; an empty one has nothing to reach.)
                if let Some((end, seen)) = behind.get(&p)
                    && (*end == 0 || seen.is_some_and(|s| s >= *end))
                {
                    behind.remove(&p);
                    report(records, &behind);
                }
                continue;
            }
            Err(e) => {
                warn!(topic, error = %e, "suppression topic read error; reading on");
                continue;
            }
        };
        records += 1;
        let entry = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or(crate::suppression::EntryError::Shape)
            .and_then(Entry::parse_exact);
        match entry {
            Ok(entry) => {
                list.update(Source::Topic, entry, msg.payload().is_some());
                shared.metrics.suppression(Source::Topic, 1, list.len());
            }
            Err(e) => shared.metrics.suppression_invalid(
                Source::Topic,
                &format!("{topic}/{}@{}", msg.partition(), msg.offset()),
                &e,
            ),
        }
        if let Some((_, seen)) = behind.get_mut(&msg.partition()) {
            *seen = Some(msg.offset() + 1);
        }
    }
}

/// Assign `partitions` of `topic`, each read from its first offset.
fn assign_from_beginning(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
) {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Beginning) {
            warn!(topic, partition = p, error = %e, "cannot assign the suppression partition");
        }
    }
    if let Err(e) = consumer.incremental_assign(&tpl) {
        warn!(topic, error = %e, "cannot assign the suppression topic");
    }
}

/// Every partition of `topic` and its low and high watermarks now.
fn ends_at_start(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let mut ends = HashMap::new();
    for p in partitions {
        ends.insert(p, consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?);
    }
    Ok(ends)
}
