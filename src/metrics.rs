//! Every metric veil exports: defined here, in one table ([`family`]),
//! registered on a registry the caller passes in (no global registry), and
//! recorded only through the typed methods below, one per occurrence (a
//! commit, a reload, a rebalance, a failed delivery, an input counted). The
//! method that counts an occurrence also writes its log line, so the two
//! cannot disagree.
//!
//! Label values come from fixed sets only: route names from the config,
//! outcome and reason codes from [`crate::outcome`], action names from
//! [`FieldCounts::labelled`], the result and kind enums below, Kafka topic
//! names, partition numbers and librdkafka error code names, and policy
//! names, versions and digests. Never field values, identifiers or error
//! text. Every fixed set is pre-seeded at 0 from the same enum its values
//! are recorded with, so that `rate()` and `increase()` see the first
//! occurrence (a series that appears at 1 has no increase to Prometheus).
//!
//! `veil_events_total{route, outcome}` counts every input once per route:
//! `forwarded`, `dropped_<reason>` (see [`DropReason`]) or `dead_lettered`
//! (the input was rejected, so no route saw it). Per route the outcomes sum
//! to the inputs read.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tracing::{error, info, warn};

use crate::detect::Kind;
use crate::engine::CompiledPolicy;
use crate::health::Health;
use crate::outcome::{Detections, DropReason, FieldCounts, RejectReason, RouteOutcome};
use crate::policy::ScanMode;

/// One metric family: its name, help text and label names.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn spec(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
    Family { name, help, labels }
}

/// Every family veil defines (the process collector's apart): the table
/// `docs/operations.md` documents.
#[rustfmt::skip]
pub mod family {
    use super::{Family, spec};

    pub const EVENTS: Family = spec("veil_events_total", "Input events by route and outcome (forwarded, dropped_<reason>, dead_lettered).", &["route", "outcome"]);
    pub const DEAD_LETTERS: Family = spec("veil_dead_letters_total", "Inputs rejected and dead-lettered, by reason.", &["reason"]);
    pub const FIELDS: Family = spec("veil_fields_total", "Values by route and what the policy did to them.", &["route", "action"]);
    pub const INPUT_BYTES: Family = spec("veil_input_bytes_total", "Bytes of input message values read.", &[]);
    pub const OUTPUT_BYTES: Family = spec("veil_output_bytes_total", "Bytes of clean message values produced, by route.", &["route"]);
    pub const PROCESS_DURATION: Family = spec("veil_process_duration_seconds", "Time to apply all routes' policies to one input message.", &[]);
    pub const END_TO_END_LATENCY: Family = spec("veil_end_to_end_latency_seconds", "From the input's broker timestamp to the acknowledgement of its last output.", &[]);
    pub const CONSUMER_LAG: Family = spec("veil_consumer_lag", "Messages between the committed offset (or the position, before any commit) and the high watermark, per assigned partition, from the broker every 5 s.", &["topic", "partition"]);
    pub const PARTITION_STALLED: Family = spec("veil_partition_stalled", "1 while an assigned partition holds inputs without progress for longer than limits.stall_after_seconds, else 0.", &["topic", "partition"]);
    pub const IN_FLIGHT: Family = spec("veil_in_flight", "Input messages read but not yet fully acknowledged.", &[]);
    pub const PRODUCE_ERRORS: Family = spec("veil_produce_errors_total", "Records that could not be produced, by librdkafka error code; each is retried, or replaced by a dead letter when refused for good.", &["reason"]);
    pub const COMMITS: Family = spec("veil_commits_total", "Offset commits by result.", &["result"]);
    pub const REBALANCES: Family = spec("veil_rebalances_total", "Partition assignments and revocations.", &["kind"]);
    pub const POLICY_INFO: Family = spec("veil_policy_info", "The live policy of each route (value 1).", &["route", "policy", "version", "sha256"]);
    pub const KEY_INFO: Family = spec("veil_key_info", "The keys the routes make pseudonyms with (value 1).", &["key_id"]);
    pub const KEY_AGE: Family = spec("veil_key_age_seconds", "Age of every loaded key at scrape time, from its `# created:` line (veil keygen) or else its file's modification time.", &["key_id"]);
    pub const KEY_MAX_AGE: Family = spec("veil_key_max_age_seconds", "keys.max_age_days in seconds: a key in use older than this should be rotated (alert VeilKeyTooOld).", &[]);
    pub const RELOADS: Family = spec("veil_reloads_total", "Policy and key reloads by result (ok, rejected).", &["result"]);
    pub const SUPPRESSION_ENTRIES: Family = spec("veil_suppression_entries", "Entries (keyed tokens) on the suppression list, every source together.", &[]);
    pub const SUPPRESSION_UPDATES: Family = spec("veil_suppression_updates_total", "Suppression list updates by source: a file read (files), a record read (topic).", &["source"]);
    pub const SUPPRESSION_INVALID: Family = spec("veil_suppression_invalid_total", "Suppression topic records that are not token lines (ignored).", &["source"]);
    pub const CONSENT_INVALID: Family = spec("veil_consent_invalid_total", "Events whose IAB TCF consent string could not be read (dropped as no_consent), by route and reason (malformed, unsupported_version).", &["route", "reason"]);
    pub const TRANSACTIONS: Family = spec("veil_transactions_total", "delivery: exactly_once: transactions by result (committed, aborted).", &["result"]);
    pub const TRANSACTION_ABORTS: Family = spec("veil_transaction_aborts_total", "delivery: exactly_once: aborted transactions by the step that failed (produce, send_offsets, commit); their inputs are processed again.", &["reason"]);
    pub const SHADOW_EVENTS: Family = spec("veil_shadow_events_total", "routes[].shadow: inputs the route's shadow policy was compared on, by whether its result differed from the live one (same, different).", &["route", "result"]);
    pub const SHADOW_DIFFERENCES: Family = spec("veil_shadow_differences_total", "routes[].shadow: differences between the shadow policy's result and the live one, by the policy path covering the field ((other) when none does, (event) for the whole event) and change (added, removed, changed, now_dropped, now_forwarded, now_dead_lettered).", &["route", "path_class", "change"]);
    pub const SCAN_DETECTIONS: Family = spec("veil_scan_detections_total", "Values the content scanner found in strings kept in clear, by route, kind (email, phone, card, iban, ip, token) and the action taken (count, redact, drop_event).", &["route", "kind", "action"]);
    pub const READY: Family = spec("veil_ready", "1 when /readyz answers 200: policies and keys loaded, broker reachable, group joined, partitions assigned, none stalled.", &[]);

    /// All of the above.
    pub const ALL: [&Family; 28] = [
        &EVENTS, &DEAD_LETTERS, &FIELDS, &INPUT_BYTES, &OUTPUT_BYTES, &PROCESS_DURATION,
        &END_TO_END_LATENCY, &CONSUMER_LAG, &PARTITION_STALLED, &IN_FLIGHT, &PRODUCE_ERRORS, &COMMITS, &REBALANCES,
        &POLICY_INFO, &KEY_INFO, &KEY_AGE, &KEY_MAX_AGE, &RELOADS, &SUPPRESSION_ENTRIES, &SUPPRESSION_UPDATES, &SUPPRESSION_INVALID,
        &CONSENT_INVALID, &TRANSACTIONS, &TRANSACTION_ABORTS, &SHADOW_EVENTS, &SHADOW_DIFFERENCES, &SCAN_DETECTIONS, &READY,
    ];
}

/// The metric families. Fields are private: record through the methods.
#[derive(Clone)]
pub struct Metrics {
    events: IntCounterVec,
    dead_letters: IntCounterVec,
    fields: IntCounterVec,
    input_bytes: IntCounter,
    output_bytes: IntCounterVec,
    process_duration: Histogram,
    end_to_end_latency: Histogram,
    consumer_lag: IntGaugeVec,
    partition_stalled: IntGaugeVec,
    in_flight: IntGauge,
    produce_errors: IntCounterVec,
    commits: IntCounterVec,
    rebalances: IntCounterVec,
    policy_info: IntGaugeVec,
    key_info: IntGaugeVec,
    key_age: KeyAges,
    key_max_age: IntGauge,
    reloads: IntCounterVec,
    suppression_entries: IntGauge,
    suppression_updates: IntCounterVec,
    suppression_invalid: IntCounterVec,
    consent_invalid: IntCounterVec,
    transactions: IntCounterVec,
    transaction_aborts: IntCounterVec,
    shadow_events: IntCounterVec,
    shadow_differences: IntCounterVec,
    scan_detections: IntCounterVec,
    ready: IntGauge,
}

/// `veil_key_age_seconds`: ages computed when scraped, from each key's
/// time of making (a key without one has no series).
#[derive(Clone)]
struct KeyAges {
    gauges: IntGaugeVec,
    made: Arc<Mutex<Vec<(String, std::time::SystemTime)>>>,
}

impl KeyAges {
    fn replace(&self, key_times: &[(String, Option<std::time::SystemTime>)]) {
        let made = key_times
            .iter()
            .filter_map(|(id, t)| Some((id.clone(), (*t)?)))
            .collect();
        if let Ok(mut m) = self.made.lock() {
            *m = made;
        }
        self.gauges.reset();
    }
}

impl prometheus::core::Collector for KeyAges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauges.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now = std::time::SystemTime::now();
        if let Ok(made) = self.made.lock() {
            for (id, t) in made.iter() {
                // A time in the future (a clock set back) reads as age 0.
                let age = now.duration_since(*t).map_or(0, |d| d.as_secs());
                self.gauges
                    .with_label_values(&[id])
                    .set(i64::try_from(age).unwrap_or(i64::MAX));
            }
        }
        self.gauges.collect()
    }
}

/// Registers each family as it is made.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        c: C,
    ) -> prometheus::Result<C> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(&self, f: &Family) -> prometheus::Result<IntCounter> {
        self.register(IntCounter::new(f.name, f.help)?)
    }

    fn counters(&self, f: &Family) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(f.name, f.help), f.labels)?)
    }

    fn gauge(&self, f: &Family) -> prometheus::Result<IntGauge> {
        self.register(IntGauge::new(f.name, f.help)?)
    }

    fn gauges(&self, f: &Family) -> prometheus::Result<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(f.name, f.help), f.labels)?)
    }

    fn histogram(&self, f: &Family, buckets: Vec<f64>) -> prometheus::Result<Histogram> {
        self.register(Histogram::with_opts(
            HistogramOpts::new(f.name, f.help).buckets(buckets),
        )?)
    }
}

/// Label values of `veil_commits_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    Ok,
    Error,
}

impl CommitResult {
    pub const ALL: [CommitResult; 2] = [CommitResult::Ok, CommitResult::Error];

    pub fn label(self) -> &'static str {
        match self {
            CommitResult::Ok => "ok",
            CommitResult::Error => "error",
        }
    }
}

/// Label values of `veil_transactions_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnResult {
    Committed,
    Aborted,
}

impl TxnResult {
    pub const ALL: [TxnResult; 2] = [TxnResult::Committed, TxnResult::Aborted];

    pub fn label(self) -> &'static str {
        match self {
            TxnResult::Committed => "committed",
            TxnResult::Aborted => "aborted",
        }
    }
}

/// Label values of `veil_transaction_aborts_total{reason}`: the step of a
/// transaction that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// A record could not be enqueued or was not delivered.
    Produce,
    /// The input offsets could not be added to the transaction.
    SendOffsets,
    /// The commit itself failed.
    Commit,
}

impl AbortReason {
    pub const ALL: [AbortReason; 3] = [
        AbortReason::Produce,
        AbortReason::SendOffsets,
        AbortReason::Commit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AbortReason::Produce => "produce",
            AbortReason::SendOffsets => "send_offsets",
            AbortReason::Commit => "commit",
        }
    }
}

/// An aborted transaction of one input partition: its inputs are read and
/// processed again from `rewound_to`.
#[derive(Clone, Copy)]
pub struct Aborted<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub reason: AbortReason,
    /// The librdkafka error code name, never the error text.
    pub code: &'a str,
    /// Inputs the transaction held.
    pub inputs: usize,
    pub rewound_to: i64,
}

/// Label values of `veil_reloads_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    /// The new policies or keys did not validate; the old ones stay live.
    Rejected,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 2] = [ReloadResult::Ok, ReloadResult::Rejected];

    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Rejected => "rejected",
        }
    }
}

/// Label values of `veil_rebalances_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceKind {
    Assign,
    Revoke,
}

impl RebalanceKind {
    pub const ALL: [RebalanceKind; 2] = [RebalanceKind::Assign, RebalanceKind::Revoke];

    pub fn label(self) -> &'static str {
        match self {
            RebalanceKind::Assign => "assign",
            RebalanceKind::Revoke => "revoke",
        }
    }
}

/// Label values of `veil_events_total{outcome}`: what one route made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Forwarded,
    Dropped(DropReason),
    /// The input was rejected as a whole; no route saw it.
    DeadLettered,
}

impl EventOutcome {
    /// Every value, in a fixed order.
    pub fn all() -> impl Iterator<Item = EventOutcome> {
        std::iter::once(EventOutcome::Forwarded)
            .chain(DropReason::ALL.into_iter().map(EventOutcome::Dropped))
            .chain(std::iter::once(EventOutcome::DeadLettered))
    }

    pub fn label(self) -> String {
        match self {
            EventOutcome::Forwarded => "forwarded".into(),
            EventOutcome::Dropped(d) => format!("dropped_{}", d.code()),
            EventOutcome::DeadLettered => "dead_lettered".into(),
        }
    }
}

/// A reload of policies and keys (`SIGHUP`).
#[derive(Clone, Copy)]
pub enum Reload<'a> {
    /// Now live: `policies` as `name@version`, and the active key's id.
    Ok { policies: &'a str, key_id: &'a str },
    /// Why the new set was refused (validation errors with file:line:column).
    Rejected { error: &'a dyn fmt::Display },
}

/// Partitions assigned to or revoked from this instance.
#[derive(Clone, Copy)]
pub enum Rebalanced<'a> {
    /// `partitions` as `topic/partition,...`.
    Assigned { partitions: &'a str },
    /// `abandoned`: inputs still unacknowledged, which the next owner re-reads.
    Revoked {
        partitions: &'a str,
        abandoned: usize,
    },
}

/// A record that could not be produced; it is retried, or replaced by a
/// dead letter when refused for good, unless the service is past its drain
/// deadline.
#[derive(Clone, Copy)]
pub struct ProduceFailure<'a> {
    /// The librdkafka error code name (a label value), never the error text.
    pub code: &'a str,
    pub topic: &'a str,
    pub error: &'a dyn fmt::Display,
    pub step: ProduceStep,
}

/// Where producing a record failed, and what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceStep {
    /// The broker did not acknowledge it.
    Delivery,
    /// librdkafka refused to enqueue it.
    Enqueue,
    /// As `Enqueue`, but past the drain deadline: given up; the input is
    /// not committed, so it is re-read after a restart.
    EnqueueAbandoned,
}

impl Metrics {
    /// Define every metric on `registry`, plus the process collector (CPU,
    /// memory, open file descriptors) where the platform has one.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        use family::*;
        let r = Registrar(registry);
        let m = Metrics {
            events: r.counters(&EVENTS)?,
            dead_letters: r.counters(&DEAD_LETTERS)?,
            fields: r.counters(&FIELDS)?,
            input_bytes: r.counter(&INPUT_BYTES)?,
            output_bytes: r.counters(&OUTPUT_BYTES)?,
            process_duration: r.histogram(
                &PROCESS_DURATION,
                prometheus::exponential_buckets(1e-6, 2.0, 18)?,
            )?,
            end_to_end_latency: r.histogram(
                &END_TO_END_LATENCY,
                prometheus::exponential_buckets(0.001, 2.0, 16)?,
            )?,
            consumer_lag: r.gauges(&CONSUMER_LAG)?,
            partition_stalled: r.gauges(&PARTITION_STALLED)?,
            in_flight: r.gauge(&IN_FLIGHT)?,
            produce_errors: r.counters(&PRODUCE_ERRORS)?,
            commits: r.counters(&COMMITS)?,
            rebalances: r.counters(&REBALANCES)?,
            policy_info: r.gauges(&POLICY_INFO)?,
            key_info: r.gauges(&KEY_INFO)?,
            key_age: r.register(KeyAges {
                gauges: IntGaugeVec::new(Opts::new(KEY_AGE.name, KEY_AGE.help), KEY_AGE.labels)?,
                made: Arc::default(),
            })?,
            key_max_age: r.gauge(&KEY_MAX_AGE)?,
            reloads: r.counters(&RELOADS)?,
            suppression_entries: r.gauge(&SUPPRESSION_ENTRIES)?,
            suppression_updates: r.counters(&SUPPRESSION_UPDATES)?,
            suppression_invalid: r.counters(&SUPPRESSION_INVALID)?,
            consent_invalid: r.counters(&CONSENT_INVALID)?,
            transactions: r.counters(&TRANSACTIONS)?,
            transaction_aborts: r.counters(&TRANSACTION_ABORTS)?,
            shadow_events: r.counters(&SHADOW_EVENTS)?,
            shadow_differences: r.counters(&SHADOW_DIFFERENCES)?,
            scan_detections: r.counters(&SCAN_DETECTIONS)?,
            ready: r.gauge(&READY)?,
        };
        for result in TxnResult::ALL {
            m.transactions.with_label_values(&[result.label()]);
        }
        for reason in AbortReason::ALL {
            m.transaction_aborts.with_label_values(&[reason.label()]);
        }
        for source in crate::suppression::Source::ALL {
            m.suppression_updates.with_label_values(&[source.label()]);
            m.suppression_invalid.with_label_values(&[source.label()]);
        }
        for result in ReloadResult::ALL {
            m.reloads.with_label_values(&[result.label()]);
        }
        for result in CommitResult::ALL {
            m.commits.with_label_values(&[result.label()]);
        }
        for kind in RebalanceKind::ALL {
            m.rebalances.with_label_values(&[kind.label()]);
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// Publish the live policies (`(route, policy)` in route order), the
    /// keys the routes use and every loaded key's time of making (for
    /// `veil_key_age_seconds`), replacing the previous ones, and resolve
    /// the routes' counters.
    pub fn live(
        &self,
        routes: &[(&str, &CompiledPolicy)],
        key_ids: &[&str],
        key_times: &[(String, Option<std::time::SystemTime>)],
    ) -> StageCounters {
        self.policy_info.reset();
        self.key_info.reset();
        self.key_age.replace(key_times);
        for (route, engine) in routes {
            let p = engine.policy();
            self.policy_info
                .with_label_values(&[
                    route,
                    p.name.as_str(),
                    &p.version.to_string(),
                    p.sha256.as_str(),
                ])
                .set(1);
        }
        for key_id in key_ids {
            self.key_info.with_label_values(&[key_id]).set(1);
        }
        StageCounters::new(self, routes.iter().map(|(name, _)| *name))
    }

    /// `keys.max_age_days`, published for the `VeilKeyTooOld` alert.
    pub fn key_max_age(&self, max_age: Duration) {
        self.key_max_age
            .set(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
    }

    /// The suppression list changed: `updates` from `source`, `entries` now.
    pub fn suppression(&self, source: crate::suppression::Source, updates: u64, entries: usize) {
        self.suppression_updates
            .with_label_values(&[source.label()])
            .inc_by(updates);
        self.suppression_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// A suppression record that is not a token line was ignored (logged
    /// without its content, which may be a raw identifier).
    pub fn suppression_invalid(
        &self,
        source: crate::suppression::Source,
        at: &str,
        why: &dyn std::fmt::Display,
    ) {
        tracing::error!(source = source.label(), at, error = %why, "suppression record ignored");
        self.suppression_invalid
            .with_label_values(&[source.label()])
            .inc();
    }

    /// `veil_ready` from what `/readyz` answers.
    pub fn set_ready(&self, health: &Health) {
        self.ready
            .set(i64::from(health.not_ready_reason().is_none()));
    }

    /// Inputs read and not yet fully acknowledged.
    pub fn in_flight(&self, inputs: usize) {
        self.in_flight.set(inputs as i64);
    }

    /// The time all routes' policies took on one input.
    pub fn processed_in(&self, took: Duration) {
        self.process_duration.observe(took.as_secs_f64());
    }

    /// From an input's broker timestamp to the acknowledgement of its last output.
    pub fn end_to_end(&self, latency: Duration) {
        self.end_to_end_latency.observe(latency.as_secs_f64());
    }

    /// A partition's lag, from the broker's watermarks.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// Whether an assigned partition is stalled now.
    pub fn partition_stalled(&self, topic: &str, partition: i32, stalled: bool) {
        self.partition_stalled
            .with_label_values(&[topic, &partition.to_string()])
            .set(i64::from(stalled));
    }

    /// A partition stalled: logged when it starts and then once a minute.
    pub fn stall(&self, topic: &str, partition: i32, pending: usize, for_s: u64) {
        warn!(
            topic,
            partition,
            pending,
            stalled_for_s = for_s,
            "partition stalled: inputs wait without progress (see veil_produce_errors_total and the log lines before this one)"
        );
    }

    /// A partition is no longer this instance's: its series go.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let labels = [topic, &partition.to_string()];
        let _ = self.consumer_lag.remove_label_values(&labels);
        let _ = self.partition_stalled.remove_label_values(&labels);
    }

    /// An offset commit (a commit with nothing to commit is not one).
    pub fn commit<E: fmt::Display>(&self, result: &Result<(), E>) {
        let label = match result {
            Ok(()) => CommitResult::Ok,
            Err(e) => {
                warn!(
                    error = %e,
                    "offset commit failed; a later commit covers its inputs, or they are re-read"
                );
                CommitResult::Error
            }
        };
        self.commits.with_label_values(&[label.label()]).inc();
    }

    /// A transaction (`delivery: exactly_once`) committed.
    pub fn transaction_committed(&self) {
        self.transactions
            .with_label_values(&[TxnResult::Committed.label()])
            .inc();
    }

    /// A transaction aborted: counted, and logged with its reason and
    /// coordinates (never an input's content or key).
    pub fn transaction_aborted(&self, a: Aborted<'_>) {
        warn!(
            topic = a.topic,
            partition = a.partition,
            reason = a.reason.label(),
            code = a.code,
            inputs = a.inputs,
            rewound_to = a.rewound_to,
            "transaction aborted; its inputs are read and processed again from the last committed offset"
        );
        self.transactions
            .with_label_values(&[TxnResult::Aborted.label()])
            .inc();
        self.transaction_aborts
            .with_label_values(&[a.reason.label()])
            .inc();
    }

    /// A reload of policies and keys.
    pub fn reload(&self, reload: Reload<'_>) {
        let label = match reload {
            Reload::Ok { policies, key_id } => {
                info!(policies = %policies, key_id = %key_id, "reloaded policies and keys");
                ReloadResult::Ok
            }
            Reload::Rejected { error } => {
                error!(error = %error, "reload rejected; the previous policies and keys stay live");
                ReloadResult::Rejected
            }
        };
        self.reloads.with_label_values(&[label.label()]).inc();
    }

    /// Partitions assigned or revoked.
    pub fn rebalance(&self, rebalance: Rebalanced<'_>) {
        let kind = match rebalance {
            Rebalanced::Assigned { partitions } => {
                info!(partitions = %partitions, "partitions assigned");
                RebalanceKind::Assign
            }
            Rebalanced::Revoked {
                partitions,
                abandoned: 0,
            } => {
                info!(partitions = %partitions, "partitions revoked");
                RebalanceKind::Revoke
            }
            Rebalanced::Revoked {
                partitions,
                abandoned,
            } => {
                warn!(
                    abandoned,
                    partitions = %partitions,
                    "partitions revoked with unacknowledged inputs; their next owner re-reads them"
                );
                RebalanceKind::Revoke
            }
        };
        self.rebalances.with_label_values(&[kind.label()]).inc();
    }

    /// A record that could not be produced.
    pub fn produce_failed(&self, f: ProduceFailure<'_>) {
        self.produce_errors.with_label_values(&[f.code]).inc();
        let (topic, error) = (f.topic, f.error);
        match f.step {
            ProduceStep::Delivery => warn!(topic, error = %error, "delivery failed"),
            ProduceStep::Enqueue => warn!(topic, error = %error, "cannot enqueue record"),
            ProduceStep::EnqueueAbandoned => warn!(
                topic,
                error = %error,
                "cannot enqueue record; past the drain deadline, not retried: its input is not committed and will be re-read"
            ),
        }
    }

    /// Bytes of input message values read so far.
    pub fn input_bytes_total(&self) -> u64 {
        self.input_bytes.get()
    }
}

/// The counters of one stage's routes, resolved once so that counting an
/// input is a few atomic adds, not label lookups.
#[derive(Clone)]
pub struct StageCounters {
    routes: Vec<RouteCounters>,
    dead: Vec<IntCounter>,
    input_bytes: IntCounter,
    /// One per route with a shadow policy.
    shadows: Vec<ShadowCounters>,
}

/// The counters of one route's shadow comparisons, and the tallies of the
/// current summary window (see [`StageCounters::shadow_summaries`]).
#[derive(Clone)]
struct ShadowCounters {
    route: usize,
    name: String,
    /// The shadow policy's `name@version`.
    policy: String,
    same: IntCounter,
    different: IntCounter,
    family: IntCounterVec,
    /// Path class labels, in class order.
    classes: Arc<[String]>,
    /// Per class and change (`class * Change::ALL.len() + change`), made
    /// on the first difference of each, so that only series that occur
    /// are exported.
    differences: Arc<[std::sync::OnceLock<IntCounter>]>,
    window: Arc<ShadowWindow>,
}

/// Counts since the last summary.
struct ShadowWindow {
    compared: std::sync::atomic::AtomicU64,
    differed: std::sync::atomic::AtomicU64,
    differences: Box<[std::sync::atomic::AtomicU64]>,
}

/// One route's shadow comparisons over a summary window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowSummary {
    pub route: String,
    pub policy: String,
    pub compared: u64,
    pub differed: u64,
    /// The most frequent (path class, change, count), most frequent first.
    pub top: Vec<(String, &'static str, u64)>,
}

#[derive(Clone)]
struct RouteCounters {
    forwarded: IntCounter,
    dropped: Vec<IntCounter>,
    dead_lettered: IntCounter,
    fields: Vec<IntCounter>,
    output_bytes: IntCounter,
    /// By [`crate::tcf::Invalid`], in declaration order.
    consent_invalid: Vec<IntCounter>,
    /// By kind and action: `(kind, action, counter)`.
    scan: Vec<(Kind, ScanMode, IntCounter)>,
}

impl StageCounters {
    /// Counters for these route names, in route order (`veil apply` has
    /// one: its policy's name). Every series starts at 0.
    fn new<'a>(m: &Metrics, names: impl IntoIterator<Item = &'a str>) -> StageCounters {
        let events = |name: &str, o: EventOutcome| m.events.with_label_values(&[name, &o.label()]);
        let routes = names
            .into_iter()
            .map(|name| RouteCounters {
                forwarded: events(name, EventOutcome::Forwarded),
                dropped: DropReason::ALL
                    .iter()
                    .map(|d| events(name, EventOutcome::Dropped(*d)))
                    .collect(),
                dead_lettered: events(name, EventOutcome::DeadLettered),
                fields: FieldCounts::default()
                    .labelled()
                    .iter()
                    .map(|(action, _)| m.fields.with_label_values(&[name, action]))
                    .collect(),
                output_bytes: m.output_bytes.with_label_values(&[name]),
                consent_invalid: crate::tcf::Invalid::ALL
                    .iter()
                    .map(|i| m.consent_invalid.with_label_values(&[name, i.code()]))
                    .collect(),
                scan: Kind::ALL
                    .into_iter()
                    .flat_map(|k| Detections::ACTIONS.into_iter().map(move |a| (k, a)))
                    .map(|(k, a)| {
                        let c = m
                            .scan_detections
                            .with_label_values(&[name, k.code(), a.code()]);
                        (k, a, c)
                    })
                    .collect(),
            })
            .collect();
        StageCounters {
            routes,
            dead: RejectReason::ALL
                .iter()
                .map(|r| m.dead_letters.with_label_values(&[r.code()]))
                .collect(),
            input_bytes: m.input_bytes.clone(),
            shadows: Vec::new(),
        }
    }

    /// Count the shadow comparisons of `shadows`: `(route index, route
    /// name, shadow policy name@version, path class labels)`, as
    /// [`crate::stage::Stage::shadows`] lists them.
    pub fn with_shadows(
        mut self,
        m: &Metrics,
        shadows: &[(usize, &str, String, &[String])],
    ) -> StageCounters {
        use crate::shadow::Change;
        self.shadows = shadows
            .iter()
            .map(|(route, name, policy, classes)| {
                let n = classes.len() * Change::ALL.len();
                ShadowCounters {
                    route: *route,
                    name: (*name).to_owned(),
                    policy: policy.clone(),
                    same: m.shadow_events.with_label_values(&[name, "same"]),
                    different: m.shadow_events.with_label_values(&[name, "different"]),
                    family: m.shadow_differences.clone(),
                    classes: classes.iter().cloned().collect(),
                    differences: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
                    window: Arc::new(ShadowWindow {
                        compared: 0.into(),
                        differed: 0.into(),
                        differences: (0..n).map(|_| 0.into()).collect(),
                    }),
                }
            })
            .collect();
        self
    }

    /// Count what the shadow policies made of one input: each route
    /// compared, with its differences (as `ShadowResults::routes` lists them).
    pub fn shadow<'a>(
        &self,
        routes: impl IntoIterator<Item = (usize, &'a [crate::shadow::Difference])>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.shadows.is_empty() {
            return;
        }
        for (route, differences) in routes {
            let Some(c) = self.shadows.iter().find(|c| c.route == route) else {
                continue;
            };
            c.window.compared.fetch_add(1, Relaxed);
            if differences.is_empty() {
                c.same.inc();
                continue;
            }
            c.different.inc();
            c.window.differed.fetch_add(1, Relaxed);
            for d in differences {
                let i = d.class * crate::shadow::Change::ALL.len() + d.change as usize;
                let (Some(slot), Some(label)) = (c.differences.get(i), c.classes.get(d.class))
                else {
                    continue;
                };
                slot.get_or_init(|| {
                    c.family
                        .with_label_values(&[&c.name, label, d.change.label()])
                })
                .inc();
                if let Some(w) = c.window.differences.get(i) {
                    w.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Each shadowed route's comparisons since the last call (the window
    /// starts again at zero), with its `top` most frequent differences.
    pub fn shadow_summaries(&self, top: usize) -> Vec<ShadowSummary> {
        use std::sync::atomic::Ordering::Relaxed;
        let changes = crate::shadow::Change::ALL;
        self.shadows
            .iter()
            .map(|c| {
                let mut counted: Vec<(String, &'static str, u64)> = c
                    .window
                    .differences
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| {
                        let n = n.swap(0, Relaxed);
                        let class = c.classes.get(i / changes.len())?;
                        let change = changes.get(i % changes.len())?;
                        (n > 0).then(|| (class.clone(), change.label(), n))
                    })
                    .collect();
                counted.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
                counted.truncate(top);
                ShadowSummary {
                    route: c.name.clone(),
                    policy: c.policy.clone(),
                    compared: c.window.compared.swap(0, Relaxed),
                    differed: c.window.differed.swap(0, Relaxed),
                    top: counted,
                }
            })
            .collect()
    }

    /// Log each shadowed route's comparisons since the last call (`over`:
    /// the window, e.g. "the last minute"); nothing when no route has a
    /// shadow policy. Never a value: path classes and change kinds only.
    pub fn log_shadow_summaries(&self, over: &str) {
        for s in self.shadow_summaries(5) {
            let top = s
                .top
                .iter()
                .map(|(class, change, n)| format!("{class} {change} x{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(
                route = s.route,
                shadow = s.policy,
                compared = s.compared,
                differed = s.differed,
                top = %top,
                "shadow policy over {over}: {} of {} inputs would come out differently",
                s.differed,
                s.compared
            );
        }
    }

    /// Count one input of `input_len` bytes: rejected (`Err`), or what each
    /// route made of it, in route order: its outcome, the value tallies
    /// and the bytes of its clean event.
    pub fn record<'a>(
        &self,
        input_len: usize,
        result: Result<impl IntoIterator<Item = RouteTally<'a>>, RejectReason>,
    ) {
        let routes = match result {
            Ok(routes) => routes,
            Err(reason) => return self.rejected(input_len, reason),
        };
        self.input_bytes.inc_by(input_len as u64);
        for (t, c) in routes.into_iter().zip(&self.routes) {
            match t.outcome {
                RouteOutcome::Forwarded => {
                    c.forwarded.inc();
                    c.output_bytes.inc_by(t.output_len as u64);
                    for (counter, (_, n)) in c.fields.iter().zip(t.counts.labelled()) {
                        if n > 0 {
                            counter.inc_by(n);
                        }
                    }
                }
                // `ALL` lists the reasons in declaration order (tested below).
                RouteOutcome::Dropped(d) => c.dropped[d as usize].inc(),
            }
            if let Some(i) = t.consent_invalid {
                c.consent_invalid[i as usize].inc();
            }
            // Forwarded events, and those dropped for what was found.
            if t.counts.scan.total() > 0 {
                for (kind, action, counter) in &c.scan {
                    let n = t.counts.scan.get(*kind, *action);
                    if n > 0 {
                        counter.inc_by(n);
                    }
                }
            }
        }
    }

    /// Count an output record the broker refused for good (route `route`'s,
    /// or a dead letter when `None`), replaced by a dead letter with
    /// `reason`: once by reason, and as `dead_lettered` on its route. The
    /// route counted the input as forwarded when it was processed; that
    /// count stands (see `docs/operations.md`).
    pub fn refused(&self, route: Option<usize>, reason: RejectReason) {
        self.dead[reason as usize].inc();
        if let Some(r) = route.and_then(|i| self.routes.get(i)) {
            r.dead_lettered.inc();
        }
    }

    /// Count one input of `input_len` bytes rejected as a whole: once by
    /// reason, and as `dead_lettered` on every route.
    pub fn rejected(&self, input_len: usize, reason: RejectReason) {
        self.input_bytes.inc_by(input_len as u64);
        // `ALL` lists the reasons in declaration order (tested below).
        self.dead[reason as usize].inc();
        for route in &self.routes {
            route.dead_lettered.inc();
        }
    }
}

/// What one route made of one input, as counted.
#[derive(Debug, Clone, Copy)]
pub struct RouteTally<'a> {
    pub outcome: RouteOutcome,
    pub counts: &'a FieldCounts,
    /// Bytes of the clean event.
    pub output_len: usize,
    pub consent_invalid: Option<crate::tcf::Invalid>,
}

/// What one route's counters say so far: the numbers the end-of-run
/// summaries print, read from the same counters `/metrics` serves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteTotals {
    pub forwarded: u64,
    pub dropped: Vec<(DropReason, u64)>,
    pub dead_lettered: u64,
    pub fields: Vec<(&'static str, u64)>,
    pub output_bytes: u64,
    /// Events whose TC string could not be read (among `no_consent` drops).
    pub consent_invalid: u64,
    /// Content scanner detections with a count: kind, action, count.
    pub scan: Vec<(Kind, ScanMode, u64)>,
}

impl RouteTotals {
    /// Every input this route saw, whatever its outcome.
    pub fn inputs(&self) -> u64 {
        self.forwarded + self.dropped() + self.dead_lettered
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

impl Metrics {
    /// Read a route's counters.
    pub fn route_totals(&self, route: &str) -> RouteTotals {
        let events = |o: EventOutcome| self.events.with_label_values(&[route, &o.label()]).get();
        RouteTotals {
            forwarded: events(EventOutcome::Forwarded),
            dropped: DropReason::ALL
                .iter()
                .map(|d| (*d, events(EventOutcome::Dropped(*d))))
                .filter(|(_, n)| *n > 0)
                .collect(),
            dead_lettered: events(EventOutcome::DeadLettered),
            fields: FieldCounts::default()
                .labelled()
                .iter()
                .map(|(action, _)| {
                    (
                        *action,
                        self.fields.with_label_values(&[route, action]).get(),
                    )
                })
                .collect(),
            output_bytes: self.output_bytes.with_label_values(&[route]).get(),
            consent_invalid: crate::tcf::Invalid::ALL
                .iter()
                .map(|i| {
                    self.consent_invalid
                        .with_label_values(&[route, i.code()])
                        .get()
                })
                .sum(),
            scan: Kind::ALL
                .into_iter()
                .flat_map(|k| Detections::ACTIONS.into_iter().map(move |a| (k, a)))
                .map(|(k, a)| {
                    let n = self
                        .scan_detections
                        .with_label_values(&[route, k.code(), a.code()])
                        .get();
                    (k, a, n)
                })
                .filter(|(_, _, n)| *n > 0)
                .collect(),
        }
    }

    /// Dead letters by reason, those with any.
    pub fn dead_letter_totals(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .iter()
            .map(|r| (*r, self.dead_letters.with_label_values(&[r.code()]).get()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_enums_index_their_all_arrays_in_declaration_order() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{d:?}");
        }
    }

    fn exposition(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fixed_label_values_start_at_zero_from_the_enums_they_are_recorded_with() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let _counters = m.live(&[], &["k1"], &[]);
        let text = exposition(&registry);
        for r in ReloadResult::ALL {
            let series = format!("veil_reloads_total{{result=\"{}\"}} 0\n", r.label());
            assert!(text.contains(&series), "{series}\n{text}");
        }
        for r in CommitResult::ALL {
            let series = format!("veil_commits_total{{result=\"{}\"}} 0\n", r.label());
            assert!(text.contains(&series), "{series}\n{text}");
        }
        for k in RebalanceKind::ALL {
            let series = format!("veil_rebalances_total{{kind=\"{}\"}} 0\n", k.label());
            assert!(text.contains(&series), "{series}\n{text}");
        }
        m.reload(Reload::Rejected {
            error: &"bad policy",
        });
        m.commit(&Ok::<(), &str>(()));
        m.commit(&Err("broker gone"));
        m.rebalance(Rebalanced::Revoked {
            partitions: "raw/0",
            abandoned: 2,
        });
        let text = exposition(&registry);
        for series in [
            "veil_reloads_total{result=\"rejected\"} 1\n",
            "veil_reloads_total{result=\"ok\"} 0\n",
            "veil_commits_total{result=\"ok\"} 1\n",
            "veil_commits_total{result=\"error\"} 1\n",
            "veil_rebalances_total{kind=\"revoke\"} 1\n",
            "veil_rebalances_total{kind=\"assign\"} 0\n",
        ] {
            assert!(text.contains(series), "{series}\n{text}");
        }
    }

    #[test]
    fn shadow_summaries_count_a_window_and_start_again_at_zero() {
        use crate::shadow::{Change, Difference};
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let classes = ["ip".to_owned(), "page".to_owned()];
        let c =
            StageCounters::new(&m, ["a"]).with_shadows(&m, &[(0, "a", "c@2".into(), &classes[..])]);
        let d = |class, change| Difference { class, change };
        c.shadow([(0, &[d(0, Change::Changed), d(1, Change::Added)][..])]);
        c.shadow([(0, &[d(0, Change::Changed)][..])]);
        c.shadow([(0, &[][..])]);
        c.shadow([(1, &[d(0, Change::Added)][..])]); // a route without a shadow: ignored
        let s = c.shadow_summaries(1);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].route.as_str(), s[0].policy.as_str()), ("a", "c@2"));
        assert_eq!((s[0].compared, s[0].differed), (3, 2));
        assert_eq!(
            s[0].top,
            [("ip".to_owned(), "changed", 2)],
            "the most frequent only"
        );
        let again = c.shadow_summaries(5);
        assert_eq!((again[0].compared, again[0].differed), (0, 0));
        assert!(again[0].top.is_empty());
        let text = exposition(&registry);
        assert!(
            text.contains(
                r#"veil_shadow_differences_total{change="changed",path_class="ip",route="a"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"veil_shadow_events_total{result="same",route="a"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn every_family_in_the_table_is_registered() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let key = crate::keys::parse_key(
            "k1",
            b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            std::path::Path::new("k1.key"),
        )
        .unwrap();
        let policy = crate::Policy::parse(
            "version: 1\nname: t\npurpose: analytics\nfields:\n  type: keep\n",
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let engine = crate::compile(policy, &key, crate::Limits::default());
        let made = std::time::SystemTime::now() - Duration::from_secs(90);
        let classes = ["x".to_owned()];
        let counters = m
            .live(&[("a", &engine)], &["k1"], &[("k1".into(), Some(made))])
            .with_shadows(&m, &[(0, "a", "c@1".into(), &classes[..])]);
        let added = crate::shadow::Difference {
            class: 0,
            change: crate::shadow::Change::Added,
        };
        counters.shadow([(0, &[added][..])]);
        m.consumer_lag("raw", 0, 1);
        m.partition_stalled("raw", 0, false);
        m.produce_failed(ProduceFailure {
            code: "MsgSizeTooLarge",
            topic: "clean",
            error: &"too large",
            step: ProduceStep::Delivery,
        });
        let gathered = registry.gather();
        let names: Vec<String> = gathered.iter().map(|f| f.name().to_owned()).collect();
        // Key ages are computed when scraped.
        let age = gathered
            .iter()
            .find(|f| f.name() == "veil_key_age_seconds")
            .map(|f| f.get_metric()[0].get_gauge().value());
        assert!(age.is_some_and(|a| (90.0..120.0).contains(&a)), "{age:?}");
        for f in family::ALL {
            assert!(
                names.iter().any(|n| n == f.name),
                "{} not registered",
                f.name
            );
        }
        for n in names.iter().filter(|n| n.starts_with("veil_")) {
            assert!(
                family::ALL.iter().any(|f| f.name == n),
                "{n} not in the table"
            );
        }
    }

    #[test]
    fn a_rejected_input_counts_once_by_reason_and_as_dead_lettered_on_every_route() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let c = StageCounters::new(&m, ["a", "b"]);
        c.rejected(10, RejectReason::TooDeep);
        let counts = FieldCounts {
            kept: 2,
            ..FieldCounts::default()
        };
        c.record(
            7,
            Ok([
                RouteTally {
                    outcome: RouteOutcome::Forwarded,
                    counts: &counts,
                    output_len: 5,
                    consent_invalid: None,
                },
                RouteTally {
                    outcome: RouteOutcome::Dropped(DropReason::NoConsent),
                    counts: &counts,
                    output_len: 0,
                    consent_invalid: Some(crate::tcf::Invalid::UnsupportedVersion),
                },
            ]),
        );
        assert_eq!(m.dead_letter_totals(), [(RejectReason::TooDeep, 1)]);
        assert_eq!(m.input_bytes_total(), 17);
        let a = m.route_totals("a");
        assert_eq!((a.forwarded, a.dropped(), a.dead_lettered), (1, 0, 1));
        assert_eq!(a.output_bytes, 5);
        assert_eq!(a.fields[0], ("kept", 2));
        let b = m.route_totals("b");
        assert_eq!(b.dropped, [(DropReason::NoConsent, 1)]);
        assert_eq!((b.forwarded, b.dead_lettered, b.output_bytes), (0, 1, 0));
        assert_eq!((a.consent_invalid, b.consent_invalid), (0, 1));
        assert_eq!(b.fields[0], ("kept", 0));
    }
}
