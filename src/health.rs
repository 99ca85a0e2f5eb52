//! Liveness and readiness, shared between the service and the HTTP endpoint.
//!
//! Ready means: policies and keys are loaded, the broker is reachable, and
//! this instance holds at least one partition (file mode: loaded is enough),
//! and no thread the service depends on has died (the process is then
//! about to exit non-zero).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    loaded: AtomicBool,
    broker_down: AtomicBool,
    assigned: AtomicUsize,
    needs_assignment: AtomicBool,
    thread_died: AtomicBool,
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

    /// A worker or retry thread died: never ready again (veil is exiting).
    pub fn set_thread_died(&self) {
        self.thread_died.store(true, Ordering::Relaxed);
    }

    pub fn set_assigned(&self, n: usize) {
        self.assigned.store(n, Ordering::Relaxed);
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Why not ready, or `None` when ready.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.thread_died.load(Ordering::Relaxed) {
            Some("a worker thread died")
        } else if !self.loaded.load(Ordering::Relaxed) {
            Some("policies and keys not loaded")
        } else if self.broker_down.load(Ordering::Relaxed) {
            Some("broker unreachable")
        } else if self.needs_assignment.load(Ordering::Relaxed) && self.assigned() == 0 {
            Some("no partitions assigned")
        } else {
            None
        }
    }
}
