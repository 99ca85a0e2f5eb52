//! Liveness and readiness, shared between the service and the HTTP endpoint.
//!
//! Ready means: policies and keys are loaded, the broker is reachable, the
//! consumer has a working group session, this instance holds at least one
//! partition (file mode: loaded is enough), no assigned partition is
//! stalled, the suppression topic (if any) has been read to its end at
//! start and every suppression entry can be checked, and no thread the
//! service depends on has died (the process is then about to exit
//! non-zero).

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    loaded: AtomicBool,
    broker_down: AtomicBool,
    /// The consumer group's state when it is not working (`None`: joined).
    group: Mutex<Option<String>>,
    assigned: AtomicUsize,
    needs_assignment: AtomicBool,
    /// What veil cannot go on without, once it is gone (veil is exiting 70).
    stopping: Mutex<Option<String>>,
    /// Stalled partitions, each described (`topic/partition: ...`).
    stalled: Mutex<Vec<String>>,
    /// The suppression topic is not yet read to its end at start.
    suppression_loading: AtomicBool,
    /// What is wrong with the suppression list, if anything (entries that
    /// cannot be checked).
    suppression_problem: Mutex<Option<String>>,
}

impl Health {
    /// For the Kafka service: readiness also needs the broker and an assignment.
    pub fn for_kafka() -> Health {
        let h = Health::default();
        h.needs_assignment.store(true, Ordering::Relaxed);
        h
    }

    pub fn set_loaded(&self, v: bool) {
        self.loaded.store(v, Ordering::Relaxed);
    }

    pub fn set_broker_down(&self, v: bool) {
        self.broker_down.store(v, Ordering::Relaxed);
    }

    /// Something veil cannot run without is gone (`what`: a worker or retry
    /// thread died, an exactly-once producer was fenced): never ready again,
    /// veil is exiting with code 70.
    pub fn set_stopping(&self, what: String) {
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
    }

    /// The consumer group is joined and steady (`None`), or in which state
    /// it is instead (e.g. `wait-coord`, `wait-join`).
    pub fn set_group(&self, not_joined: Option<String>) {
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = not_joined;
    }

    /// The partitions now stalled, each described for `/readyz`.
    pub fn set_stalled(&self, stalled: Vec<String>) {
        *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) = stalled;
    }

    pub fn set_suppression_loading(&self, v: bool) {
        self.suppression_loading.store(v, Ordering::Relaxed);
    }

    pub fn set_suppression_problem(&self, problem: Option<String>) {
        *self
            .suppression_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    pub fn set_assigned(&self, n: usize) {
        self.assigned.store(n, Ordering::Relaxed);
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Why not ready, or `None` when ready.
    pub fn not_ready_reason(&self) -> Option<Cow<'static, str>> {
        let kafka = self.needs_assignment.load(Ordering::Relaxed);
        if let Some(what) = self
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
        {
            Some(format!("stopping (exit 70): {what}").into())
        } else if !self.loaded.load(Ordering::Relaxed) {
            Some("policies and keys not loaded".into())
        } else if self.suppression_loading.load(Ordering::Relaxed) {
            Some("suppression topic not yet read to its end".into())
        } else if let Some(p) = self
            .suppression_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            Some(p.into())
        } else if self.broker_down.load(Ordering::Relaxed) {
            Some("broker unreachable".into())
        } else if let Some(state) = kafka
            .then(|| self.group.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .flatten()
        {
            Some(format!("consumer group not joined (state {state})").into())
        } else if kafka && self.assigned() == 0 {
            Some("no partitions assigned".into())
        } else {
            let stalled = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
            (!stalled.is_empty()).then(|| format!("stalled: {}", stalled.join("; ")).into())
        }
    }
}
