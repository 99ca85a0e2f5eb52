//! Every metric veil exports, defined here and registered on a registry the
//! caller passes in (no global registry).
//!
//! Label values come from fixed sets only: route names from the config,
//! outcome and reason codes from [`crate::outcome`], action names from
//! [`FieldCounts::labelled`], Kafka topic names and partition numbers, and
//! policy names, versions and digests. Never field values, identifiers or
//! error text.
//!
//! `veil_events_total{route, outcome}` counts every input once per route:
//! `forwarded`, `dropped_<reason>` (see [`DropReason`]) or `dead_lettered`
//! (the input was rejected, so no route saw it). Per route the outcomes sum
//! to the inputs read.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::outcome::{DropReason, FieldCounts, RejectReason};
use crate::stage::{Processed, Stage};

/// The metric families.
#[derive(Clone)]
pub struct Metrics {
    pub events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub fields: IntCounterVec,
    pub input_bytes: IntCounter,
    pub output_bytes: IntCounterVec,
    pub process_duration: Histogram,
    pub end_to_end_latency: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub in_flight: IntGauge,
    pub produce_errors: IntCounterVec,
    pub commits: IntCounterVec,
    pub rebalances: IntCounterVec,
    pub policy_info: IntGaugeVec,
    pub key_info: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub ready: IntGauge,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Define every metric on `registry`, plus the process collector (CPU,
    /// memory, open file descriptors) where the platform has one.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let r = registry;
        let m = Metrics {
            events: counter_vec(
                r,
                "veil_events_total",
                "Input events by route and outcome (forwarded, dropped_<reason>, dead_lettered).",
                &["route", "outcome"],
            )?,
            dead_letters: counter_vec(
                r,
                "veil_dead_letters_total",
                "Inputs rejected and dead-lettered, by reason.",
                &["reason"],
            )?,
            fields: counter_vec(
                r,
                "veil_fields_total",
                "Values by route and what the policy did to them.",
                &["route", "action"],
            )?,
            input_bytes: {
                let c = IntCounter::new(
                    "veil_input_bytes_total",
                    "Bytes of input message values read.",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            output_bytes: counter_vec(
                r,
                "veil_output_bytes_total",
                "Bytes of clean message values produced, by route.",
                &["route"],
            )?,
            process_duration: histogram(
                r,
                "veil_process_duration_seconds",
                "Time to apply all routes' policies to one input message.",
                prometheus::exponential_buckets(1e-6, 2.0, 18)?,
            )?,
            end_to_end_latency: histogram(
                r,
                "veil_end_to_end_latency_seconds",
                "From the input's broker timestamp to the acknowledgement of its last output.",
                prometheus::exponential_buckets(0.001, 2.0, 16)?,
            )?,
            consumer_lag: gauge_vec(
                r,
                "veil_consumer_lag",
                "Messages behind the partition's high watermark (librdkafka statistics).",
                &["topic", "partition"],
            )?,
            in_flight: {
                let g = IntGauge::new(
                    "veil_in_flight",
                    "Input messages read but not yet fully acknowledged.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            produce_errors: counter_vec(
                r,
                "veil_produce_errors_total",
                "Failed deliveries by librdkafka error code; each is retried.",
                &["reason"],
            )?,
            commits: counter_vec(
                r,
                "veil_commits_total",
                "Offset commits by result.",
                &["result"],
            )?,
            rebalances: counter_vec(
                r,
                "veil_rebalances_total",
                "Partition assignments and revocations.",
                &["kind"],
            )?,
            policy_info: gauge_vec(
                r,
                "veil_policy_info",
                "The live policy of each route (value 1).",
                &["route", "policy", "version", "sha256"],
            )?,
            key_info: gauge_vec(
                r,
                "veil_key_info",
                "The live pseudonymisation key (value 1).",
                &["key_id"],
            )?,
            reloads: counter_vec(
                r,
                "veil_reloads_total",
                "Policy and key reloads by result (ok, rejected).",
                &["result"],
            )?,
            ready: {
                let g = IntGauge::new(
                    "veil_ready",
                    "1 when policies and keys are loaded, the broker is reachable and partitions are assigned.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
        };
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// Publish the live policies and key (replacing the previous ones).
    pub fn set_live(&self, stage: &Stage) {
        self.policy_info.reset();
        self.key_info.reset();
        for route in stage.routes() {
            let p = route.engine.policy();
            self.policy_info
                .with_label_values(&[
                    route.name.as_str(),
                    p.name.as_str(),
                    &p.version.to_string(),
                    p.sha256.as_str(),
                ])
                .set(1);
        }
        self.key_info.with_label_values(&[stage.key_id()]).set(1);
    }
}

/// The counters of one stage, resolved once so that counting an event is a
/// few atomic adds, not label lookups.
#[derive(Clone)]
pub struct StageCounters {
    routes: Vec<RouteCounters>,
    dead: Vec<IntCounter>,
    input_bytes: IntCounter,
}

#[derive(Clone)]
struct RouteCounters {
    forwarded: IntCounter,
    dropped: Vec<IntCounter>,
    dead_lettered: IntCounter,
    fields: Vec<IntCounter>,
    output_bytes: IntCounter,
}

impl StageCounters {
    pub fn new(m: &Metrics, stage: &Stage) -> StageCounters {
        let routes = stage
            .routes()
            .iter()
            .map(|r| {
                let name = r.name.as_str();
                RouteCounters {
                    forwarded: m.events.with_label_values(&[name, "forwarded"]),
                    dropped: DropReason::ALL
                        .iter()
                        .map(|d| {
                            m.events
                                .with_label_values(&[name, &format!("dropped_{}", d.code())])
                        })
                        .collect(),
                    dead_lettered: m.events.with_label_values(&[name, "dead_lettered"]),
                    fields: FieldCounts::default()
                        .labelled()
                        .iter()
                        .map(|(action, _)| m.fields.with_label_values(&[name, action]))
                        .collect(),
                    output_bytes: m.output_bytes.with_label_values(&[name]),
                }
            })
            .collect();
        StageCounters {
            routes,
            dead: RejectReason::ALL
                .iter()
                .map(|r| m.dead_letters.with_label_values(&[r.code()]))
                .collect(),
            input_bytes: m.input_bytes.clone(),
        }
    }

    /// Count one processed input of `input_len` bytes.
    pub fn record(&self, input_len: usize, p: &Processed) {
        self.input_bytes.inc_by(input_len as u64);
        if let Some(r) = &p.rejected {
            let i = RejectReason::ALL
                .iter()
                .position(|x| *x == r.reason)
                .expect("ALL lists every reason");
            self.dead[i].inc();
            for route in &self.routes {
                route.dead_lettered.inc();
            }
            return;
        }
        for (c, o) in self.routes.iter().zip(&p.outputs) {
            match o.outcome {
                crate::Outcome::Forwarded => {
                    c.forwarded.inc();
                    c.output_bytes.inc_by(p.value(o).len() as u64);
                    for (counter, (_, n)) in c.fields.iter().zip(o.counts.labelled()) {
                        if n > 0 {
                            counter.inc_by(n);
                        }
                    }
                }
                crate::Outcome::Dropped(d) => {
                    let i = DropReason::ALL
                        .iter()
                        .position(|x| *x == d)
                        .expect("ALL lists every reason");
                    c.dropped[i].inc();
                }
                crate::Outcome::Rejected(_) => {
                    unreachable!("rejections are in Processed::rejected")
                }
            }
        }
    }
}
