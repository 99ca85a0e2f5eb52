//! Reloading policies and keys on request ([`super::Control::reload`]).

use std::sync::Arc;

use tracing::error;

use super::shared::{Live, Shared};
use crate::config::PipelineConfig;
use crate::metrics::Reload;

/// Why a reload to the public demo key is refused (a service started with
/// it, which `veil run` allows only with `--allow-demo-key`, may keep it).
const DEMO_KEY: &str = "the new active key is veil's public demo key, whose pseudonyms anyone \
     can recompute; make a key with `veil keygen`";

/// Swap in freshly loaded policies and keys on each reload request; an
/// invalid set is rejected (counted and logged) and the old one stays.
/// The reload is held to everything a start is: valid policies,
/// `message_key` fitting them, strong keys no other user may write, and no
/// switch to the public demo key; key files others may read are warned of.
/// Suppression files are re-read (the topic's entries stay).
pub(super) async fn reload_loop(config: PipelineConfig, shared: Arc<Shared>) {
    loop {
        shared.control.reload_requested().await;
        let loaded = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                let (stage, ring) = crate::stage::load(&config)?;
                let entries = crate::stage::suppression_entries(&config, &ring, &stage)?;
                Ok::<_, crate::stage::StageError>((stage, ring, entries))
            })
            .await
        };
        match loaded {
            Ok(Ok((stage, _, _)))
                if stage.uses_public_demo_key() && !shared.live().stage.uses_public_demo_key() =>
            {
                shared.metrics.reload(Reload::Rejected { error: &DEMO_KEY });
            }
            Ok(Ok((stage, ring, entries))) => {
                for w in ring.warnings() {
                    tracing::warn!("{w}");
                }
                let stage = match (&shared.suppression, entries) {
                    (Some(list), Some(entries)) => {
                        let stage = crate::stage::with_suppression(list, &ring, entries, stage);
                        shared.metrics.suppression(
                            crate::suppression::Source::Files,
                            1,
                            list.len(),
                        );
                        stage
                    }
                    _ => stage,
                };
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
