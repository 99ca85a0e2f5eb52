//! librdkafka client settings: veil's defaults, the user's properties from
//! the config, then the settings veil's delivery guarantee depends on (which
//! the config validator refuses to let users set).

use rdkafka::ClientConfig;

use crate::config::{Delivery, KafkaSource};

/// The consumer: offsets are stored only for acknowledged inputs and
/// committed in the background from what is stored. With
/// `delivery: exactly_once` it commits nothing itself (each transaction
/// carries its offsets) and reads only committed records of upstream
/// transactions.
pub fn consumer(src: &KafkaSource) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "1000")
        .set("statistics.interval.ms", "5000")
        // Each partition has its own prefetch queue (split off for its
        // worker), and this limit applies to each: 8 MiB keeps a fetch
        // ahead of the worker without 64 MiB (librdkafka's default) per
        // assigned partition.
        .set("queued.max.messages.kbytes", QUEUED_KBYTES_PER_PARTITION);
    for (k, v) in &src.librdkafka {
        c.set(k, v);
    }
    let exactly_once = matches!(src.delivery, Delivery::ExactlyOnce(_));
    c.set("bootstrap.servers", &src.bootstrap_servers)
        .set("group.id", &src.group_id)
        .set(
            "enable.auto.commit",
            if exactly_once { "false" } else { "true" },
        )
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    if exactly_once {
        c.set("isolation.level", "read_committed");
    }
    c
}

/// The producer of one input partition's transactions
/// (`delivery: exactly_once`): [`producer`] with its transactional id
/// ([`crate::transaction::transactional_id`]).
pub fn transactional_producer(src: &KafkaSource, topic: &str, partition: i32) -> ClientConfig {
    let mut c = producer(src);
    c.set(
        "transactional.id",
        crate::transaction::transactional_id(&src.group_id, topic, partition),
    );
    c
}

/// The producer: idempotent (no duplicates or reordering from its own
/// retries), keyed records partitioned like the Java client (murmur2), so a
/// subject's events stay in one partition and in order.
pub fn producer(src: &KafkaSource) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    for (k, v) in src.librdkafka.iter().chain(&src.producer) {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &src.bootstrap_servers);
    c
}

/// veil's default `queued.max.messages.kbytes`, per partition.
pub const QUEUED_KBYTES_PER_PARTITION: &str = "8192";

/// librdkafka's default `message.max.bytes`.
const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_000_000;
/// Room left in each record for headers (veil's five, plus kept input
/// headers) and librdkafka's per-record framing.
pub const RECORD_RESERVE: usize = 16 * 1024;

/// The largest clean event (plus key) or dead-letter record veil makes:
/// the producer's `message.max.bytes` less [`RECORD_RESERVE`], so that
/// every record veil makes can be sent (see `Stage::limit_records`).
/// A small `message.max.bytes` keeps at least half of it for the event.
pub fn record_limit(src: &KafkaSource) -> usize {
    let max = producer(src)
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(MESSAGE_MAX_BYTES_DEFAULT);
    max - RECORD_RESERVE.min(max / 2)
}
