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
        .set("auto.offset.reset", "earliest");
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
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Beginning) {
            warn!(topic, partition = p, error = %e, "cannot assign the suppression partition");
        }
    }
    if let Err(e) = consumer.assign(&tpl) {
        warn!(topic, error = %e, "cannot assign the suppression topic");
    }
    // Partitions not yet read to their end at start.
    let mut behind: HashMap<i32, i64> = ends.into_iter().filter(|(_, end)| *end > 0).collect();
    let mut records = 0u64;
    let report = |records: u64, behind: &HashMap<i32, i64>| {
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
    report(records, &behind);
    while !shared.reading_stopped() {
        let Some(polled) = consumer.poll(POLL) else {
            continue;
        };
        let msg = match polled {
            Ok(m) => m,
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
            .and_then(Entry::parse);
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
        if let Some(end) = behind.get(&msg.partition())
            && msg.offset() + 1 >= *end
        {
            behind.remove(&msg.partition());
            report(records, &behind);
        }
    }
}

/// Every partition of `topic` and its high watermark now.
fn ends_at_start(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<HashMap<i32, i64>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let mut ends = HashMap::new();
    for p in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
        ends.insert(p, high);
    }
    Ok(ends)
}
