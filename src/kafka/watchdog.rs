//! A dead thread is a signalled event, never a silent stall.
//!
//! The threads the service cannot run without (the policy workers and the
//! delivery retrier) each hold a [`Lifeline`] for their whole life. A panic
//! while processing one input is contained by [`crate::stage::contain`];
//! one anywhere else unwinds the thread, and dropping its lifeline on the
//! way raises the [`Watchdog`] alarm. The consume loop waits on the alarm
//! beside its other events, so it stops at once, with or without traffic;
//! `run` then marks the service not ready, commits what is complete and
//! returns [`super::ServiceError::ThreadDied`] (exit 70) so that an
//! orchestrator restarts veil. Inputs the dead thread held were never
//! acknowledged, so never committed: the restarted instance re-reads them.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::error;

/// Holds the name of the first thread that died, once one has.
#[derive(Clone)]
pub(super) struct Watchdog {
    dead: Arc<watch::Sender<Option<String>>>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            dead: Arc::new(watch::channel(None).0),
        }
    }
}

impl Watchdog {
    /// The lifeline of the thread named `name`; move it into that thread.
    pub(super) fn lifeline(&self, name: String) -> Lifeline {
        Lifeline {
            watchdog: self.clone(),
            name,
        }
    }

    /// Thread `name` died: log it and raise the alarm (the first death
    /// names the alarm; later ones are logged only).
    pub(super) fn raise(&self, name: &str) {
        if self.dead.borrow().as_deref() == Some(name) {
            return; // already raised for this thread
        }
        error!(
            thread = name,
            "a veil thread died; stopping, veil exits with code 70 so that it is restarted"
        );
        self.dead.send_if_modified(|dead| {
            if dead.is_some() {
                return false;
            }
            *dead = Some(name.to_owned());
            true
        });
    }

    /// The first thread that died, if any has.
    pub(super) fn dead(&self) -> Option<String> {
        self.dead.borrow().clone()
    }

    /// Resolves once a thread has died (at once if one already has).
    pub(super) async fn died(&self) {
        let mut rx = self.dead.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(Option::is_some).await;
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
            self.watchdog.raise(&self.name);
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
    use std::time::Duration;

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
        assert_eq!(w.dead().as_deref(), Some("veil-worker-1"));
        spawn(&w, "veil-retry", || panic!("a second death"));
        assert_eq!(
            w.dead().as_deref(),
            Some("veil-worker-1"),
            "the first names it"
        );
    }

    #[tokio::test]
    async fn a_waiting_coordinator_wakes_when_a_thread_dies() {
        let w = Watchdog::default();
        let waiting = tokio::spawn({
            let w = w.clone();
            async move { w.died().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing died yet");
        let w2 = w.clone();
        tokio::task::spawn_blocking(move || spawn(&w2, "veil-worker-2", || panic!("boom")))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken promptly")
            .unwrap();
        // And one that starts waiting after the death returns at once.
        tokio::time::timeout(Duration::from_secs(1), w.died())
            .await
            .expect("already dead");
    }
}
