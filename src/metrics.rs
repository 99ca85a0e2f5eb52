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

use crate::engine::CompiledPolicy;
use crate::health::Health;
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
        // Known label values start at 0, so that rate() and increase() see
        // the first reload, commit or rebalance (a series that appears at 1
        // has no increase to Prometheus).
        for result in ["ok", "rejected"] {
            m.reloads.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            m.commits.with_label_values(&[result]);
        }
        for kind in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[kind]);
        }
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// Publish the live policies and key (replacing the previous ones).
    pub fn set_live(&self, stage: &Stage) {
        let routes = stage.routes().iter().map(|r| (r.name.as_str(), &r.engine));
        self.set_live_routes(routes, stage.key_id());
    }

    /// [`Self::set_live`] for routes that are not a [`Stage`] (`veil apply`:
    /// one route named after its policy).
    pub fn set_live_routes<'a>(
        &self,
        routes: impl IntoIterator<Item = (&'a str, &'a CompiledPolicy)>,
        key_id: &str,
    ) {
        self.policy_info.reset();
        self.key_info.reset();
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
        self.key_info.with_label_values(&[key_id]).set(1);
    }

    /// `veil_ready` from what `/readyz` answers.
    pub fn set_ready(&self, health: &Health) {
        self.ready
            .set(i64::from(health.not_ready_reason().is_none()));
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
        StageCounters::for_routes(m, stage.routes().iter().map(|r| r.name.as_str()))
    }

    /// Counters for these route names (`veil apply` has one: its policy's name).
    pub fn for_routes<'a>(m: &Metrics, names: impl IntoIterator<Item = &'a str>) -> StageCounters {
        let routes = names
            .into_iter()
            .map(|name| RouteCounters {
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
            self.rejected(r.reason);
            return;
        }
        for (i, o) in p.outputs.iter().enumerate() {
            self.route(i, o.outcome, &o.counts, p.value(o).len());
        }
    }

    /// Count one input rejected before any route saw it (input bytes apart).
    pub fn rejected(&self, reason: RejectReason) {
        let i = RejectReason::ALL
            .iter()
            .position(|x| *x == reason)
            .expect("ALL lists every reason");
        self.dead[i].inc();
        for route in &self.routes {
            route.dead_lettered.inc();
        }
    }

    /// Count route `i`'s outcome (forwarded or dropped) for one input;
    /// `output_len` bytes if forwarded.
    pub fn route(
        &self,
        i: usize,
        outcome: crate::Outcome,
        counts: &FieldCounts,
        output_len: usize,
    ) {
        let c = &self.routes[i];
        match outcome {
            crate::Outcome::Forwarded => {
                c.forwarded.inc();
                c.output_bytes.inc_by(output_len as u64);
                for (counter, (_, n)) in c.fields.iter().zip(counts.labelled()) {
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
                unreachable!("rejections are counted once for all routes by `rejected`")
            }
        }
    }

    /// Count input bytes read (for inputs counted through [`Self::route`] or
    /// [`Self::rejected`]).
    pub fn input(&self, bytes: usize) {
        self.input_bytes.inc_by(bytes as u64);
    }
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
        RouteTotals {
            forwarded: self.events.with_label_values(&[route, "forwarded"]).get(),
            dropped: DropReason::ALL
                .iter()
                .map(|d| {
                    let outcome = format!("dropped_{}", d.code());
                    (*d, self.events.with_label_values(&[route, &outcome]).get())
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            dead_lettered: self
                .events
                .with_label_values(&[route, "dead_lettered"])
                .get(),
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
