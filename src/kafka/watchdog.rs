//! A dead thread is a signalled event, never a silent stall.
//!
//! The threads the service cannot run without (the policy workers and the
//! delivery retrier) each hold a [`Lifeline`] for their whole life. A panic
//! while processing one input is contained by [`crate::stage::contain`];
//! one anywhere else unwinds the thread, and dropping its lifeline on the
//! way raises the [`Watchdog`] alarm. The consumer thread looks at the
//! alarm every time it polls (at least every 200 ms), with or without
//! traffic, and stops reading;
//! `run` then marks the service not ready, commits what is complete and
//! returns [`super::ServiceError::ThreadDied`] (exit 70) so that an
//! orchestrator restarts veil. Inputs the dead thread held were never
//! acknowledged, so never committed: the restarted instance re-reads them.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::error;

/// Holds the name of the first thread that died, once one has.
#[derive(Clone, Default)]
pub(super) struct Watchdog {
    dead: Arc<Mutex<Option<String>>>,
}

impl Watchdog {
    /// The lifeline of the thread named `name`; move it into that thread.
    pub(super) fn lifeline(&self, name: String) -> Lifeline {
        Lifeline {
            watchdog: self.clone(),
            name,
        }
    }

    /// Something veil cannot run without is gone (`what`: a thread that
    /// died, a producer that cannot go on): log it and raise the alarm (the
    /// first names the alarm, as `/readyz` says; later ones are logged only).
    pub(super) fn raise(&self, what: &str) {
        let mut dead = self.lock();
        if dead.as_deref() == Some(what) {
            return; // already raised for this
        }
        error!(
            what,
            "veil cannot go on: {what}; stopping, veil exits with code 70 so that it is restarted"
        );
        if dead.is_none() {
            *dead = Some(what.to_owned());
        }
    }

    /// The first thread that died, if any has.
    pub(super) fn dead(&self) -> Option<String> {
        self.lock().clone()
    }

    /// The alarm; a panic elsewhere while it was held cannot leave it
    /// half-written (one assignment), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Raises its watchdog's alarm when dropped by a thread that is unwinding
/// from a panic; a thread that returns normally drops it silently.
pub(super) struct Lifeline {
    watchdog: Watchdog,
    name: String,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.watchdog.raise(&format!("thread {} died", self.name));
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    fn spawn(w: &Watchdog, name: &str, f: impl FnOnce() + Send + 'static) {
        let lifeline = w.lifeline(name.to_owned());
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _lifeline = lifeline;
                f()
            })
            .unwrap()
            .join()
            .ok();
    }

    #[test]
    fn a_thread_that_returns_raises_nothing() {
        let w = Watchdog::default();
        spawn(&w, "veil-worker-0", || {});
        assert_eq!(w.dead(), None);
    }

    #[test]
    fn a_thread_that_panics_raises_the_alarm_with_its_name() {
        let w = Watchdog::default();
        spawn(&w, "veil-worker-1", || {
            panic!("outside the per-input guard")
        });
        assert_eq!(w.dead().as_deref(), Some("thread veil-worker-1 died"));
        spawn(&w, "veil-retry", || panic!("a second death"));
        assert_eq!(
            w.dead().as_deref(),
            Some("thread veil-worker-1 died"),
            "the first names it"
        );
    }
}
