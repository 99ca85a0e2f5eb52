//! Reloading policies and keys on request ([`super::Control::reload`]).

use std::sync::Arc;

use tracing::error;

use super::shared::{Live, Shared};
use crate::config::PipelineConfig;
use crate::metrics::Reload;

/// Swap in freshly loaded policies and keys on each reload request; an
/// invalid set is rejected (counted and logged) and the old one stays.
pub(super) async fn reload_loop(config: PipelineConfig, shared: Arc<Shared>) {
    loop {
        shared.control.reload_requested().await;
        let loaded = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || crate::stage::load(&config)).await
        };
        match loaded {
            Ok(Ok((stage, _ring))) => {
                let live = Live::new(stage, &shared.metrics, shared.record_limit);
                let tags = live.stage.policy_tags().collect::<Vec<_>>().join(", ");
                let key_id = live.stage.key_id().to_owned();
                shared.replace_live(live);
                shared.metrics.reload(Reload::Ok {
                    policies: &tags,
                    key_id: &key_id,
                });
            }
            Ok(Err(e)) => shared.metrics.reload(Reload::Rejected { error: &e }),
            Err(e) => error!(error = %e, "reload task failed"),
        }
    }
}
