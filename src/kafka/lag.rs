//! Consumer lag, from the broker: every assigned partition's high
//! watermark less its committed offset, refreshed on a timer whether or not
//! veil is fetching (librdkafka's statistics stop moving exactly when a
//! partition stalls, which is when the lag matters).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::debug;

use super::consume::ServiceConsumer;
use super::shared::Shared;

/// How often the lag is refreshed.
const INTERVAL: Duration = Duration::from_secs(5);
/// How long one broker request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Refresh `veil_consumer_lag` every [`INTERVAL`] until aborted.
pub(super) async fn refresh_loop(consumer: Arc<ServiceConsumer>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.closing.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let (c, s) = (consumer.clone(), shared.clone());
        let _ = tokio::task::spawn_blocking(move || refresh(&c, &s)).await;
    }
}

fn refresh(consumer: &ServiceConsumer, shared: &Shared) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    if assignment.count() == 0 {
        return;
    }
    let committed = consumer.committed_offsets(assignment.clone(), TIMEOUT);
    if let Err(e) = &committed {
        debug!(error = %e, "cannot read committed offsets for the lag");
    }
    let position = consumer.position().ok();
    for e in assignment.elements() {
        if shared.closing.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let (topic, partition) = (e.topic(), e.partition());
        let (low, high) = match consumer.fetch_watermarks(topic, partition, TIMEOUT) {
            Ok(w) => w,
            Err(e) => {
                debug!(topic, partition, error = %e, "cannot read watermarks for the lag");
                continue;
            }
        };
        let at = |tpl: Option<&TopicPartitionList>| match tpl?
            .find_partition(topic, partition)?
            .offset()
        {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let lag = lag(
            low,
            high,
            at(committed.as_ref().ok()),
            at(position.as_ref()),
        );
        // Revoked while this refresh ran: its series is gone, and stays gone.
        if shared.holds(&(std::sync::Arc::from(topic), partition)) {
            shared.metrics.consumer_lag(topic, partition, lag);
        }
    }
}

/// Messages not yet committed: from the committed offset, else from the
/// consumer's position (nothing committed yet), else from the low
/// watermark (nothing read yet), to the high watermark; never negative
/// (a broker may report a high watermark behind what it served).
pub(super) fn lag(low: i64, high: i64, committed: Option<i64>, position: Option<i64>) -> i64 {
    let from = committed.or(position).unwrap_or(low).max(low);
    high.saturating_sub(from).max(0)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::lag;

    #[test]
    fn lag_counts_from_the_commit_not_from_what_was_read() {
        assert_eq!(lag(0, 3383, Some(0), Some(3000)), 3383);
        assert_eq!(lag(0, 100, Some(100), Some(100)), 0);
    }

    #[test]
    fn before_any_commit_lag_counts_from_the_position_or_the_start() {
        assert_eq!(lag(0, 500, None, Some(120)), 380);
        assert_eq!(lag(40, 500, None, None), 460, "retention removed 0..40");
    }

    #[test]
    fn a_commit_below_the_retained_start_counts_only_what_is_still_there() {
        assert_eq!(lag(1000, 1500, Some(10), None), 500);
    }

    #[test]
    fn a_high_watermark_behind_the_commit_is_no_lag_not_a_negative_one() {
        assert_eq!(lag(0, 18_708, Some(20_000), None), 0);
    }
}
