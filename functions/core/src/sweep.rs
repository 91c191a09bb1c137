//! The sweep of ended secret rotations: after a rotation's overlap
//! (`POST /v2/integrations/{id}/rotate-secret`) the previous webhook secret stops
//! signing at once (every read drops it), and this sweep takes it out of storage
//! within minutes: the `sweeper` function on a schedule in AWS
//! ([`SCHEDULE`]), a timer in the dev server ([`LOCAL_INTERVAL`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::ports::RetiredSecrets;

/// How often the `sweeper` function runs in AWS (template.yaml's schedule): the
/// previous secret leaves the table within this of the overlap's end.
pub const SCHEDULE: &str = "rate(5 minutes)";

/// How often the dev server sweeps.
pub const LOCAL_INTERVAL: Duration = Duration::from_secs(30);

/// The most rotations one sweep handles; the rest wait for the next.
pub const BATCH: usize = 500;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Previous secrets removed.
    pub removed: usize,
    /// Ended rotations left alone: the integration changed after it was found (a new
    /// rotation, an edit, a health change) or was deleted.
    pub skipped: usize,
}

/// Removes the previous secret of every rotation that ended by `now` (up to
/// [`BATCH`]). A lost race is not an error: that integration is skipped, and found
/// again by the next sweep if its previous secret is still stored.
pub async fn sweep(store: &dyn RetiredSecrets, now: DateTime<Utc>) -> Result<Swept> {
    let mut swept = Swept::default();
    for ended in store.ended_rotations(now, BATCH).await? {
        if store.remove_retired_secret(&ended).await? {
            swept.removed += 1;
        } else {
            swept.skipped += 1;
        }
    }
    if swept != Swept::default() {
        tracing::info!(
            removed = swept.removed,
            skipped = swept.skipped,
            "removed the previous secrets of ended rotations"
        );
    }
    Ok(swept)
}

/// Sweeps every `interval` until `stop` turns true (the dev server's timer, in
/// place of the schedule). A failed sweep is logged; the next one tries again.
pub async fn every(
    store: Arc<dyn RetiredSecrets>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(e) = sweep(store.as_ref(), Utc::now()).await {
                    tracing::warn!(error = %e, "the sweep of ended rotations failed; the next one tries again");
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;
    use crate::integrations::Integrations;
    use crate::memory::MemoryIntegrationStore;
    use crate::model::{Integration, RetiringSecret, Secret, Target, WebhookConfig};
    use crate::ports::{EndedRotation, IntegrationStore};
    use crate::secrets::Vault;
    use crate::validate::Policy;

    fn store() -> Arc<MemoryIntegrationStore> {
        Arc::new(MemoryIntegrationStore::sealed(Arc::new(
            Vault::local().expect("vault"),
        )))
    }

    /// A webhook (secret `SOME_SECRET_KEY`) whose previous secret signs until `until`.
    fn rotating(previous: &str, until: DateTime<Utc>) -> Integration {
        Integration {
            target: Target::Webhook(WebhookConfig {
                url: "https://example.com/hook".into(),
                secret_key: Some(Secret::new("SOME_SECRET_KEY")),
                retiring: Some(RetiringSecret {
                    secret: Secret::new(previous),
                    until,
                }),
            }),
            ..crate::testkit::webhook("n", "store-sweep", &["order.paid"], true)
        }
    }

    async fn retiring(store: &MemoryIntegrationStore, i: &Integration) -> Option<RetiringSecret> {
        match store
            .get(&i.store_id, i.id)
            .await
            .expect("get")
            .map(|i| i.target)
        {
            Some(Target::Webhook(c)) => c.retiring,
            other => panic!("not a webhook: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_sweep_removes_an_ended_rotations_previous_secret_and_leaves_one_in_its_window() {
        // GIVEN two webhooks in a rotation, one's overlap ending in an hour, the
        // other's in three
        let store = store();
        let now = Utc::now();
        let ending = rotating("THE_OLD_SECRET_KEY", now + Duration::hours(1));
        let lasting = rotating("ANOTHER_OLD_SECRET", now + Duration::hours(3));
        store.insert(&ending, 10).await.expect("insert");
        store.insert(&lasting, 10).await.expect("insert");

        // WHEN the sweep runs two hours from now
        let swept = sweep(store.as_ref(), now + Duration::hours(2))
            .await
            .expect("sweep");

        // THEN the first one's previous secret is gone (reads before its end would
        // show it if it were stored), and its resource shows no rotation
        assert_eq!(
            swept,
            Swept {
                removed: 1,
                skipped: 0
            }
        );
        assert_eq!(retiring(&store, &ending).await, None);
        let read = store
            .get(&ending.store_id, ending.id)
            .await
            .expect("get")
            .expect("found");
        assert!(read.to_resource("")["meta"]
            .get("secret_rotation")
            .is_none());
        // AND the other one is untouched
        assert_eq!(
            retiring(&store, &lasting).await,
            Some(RetiringSecret {
                secret: Secret::new("ANOTHER_OLD_SECRET"),
                until: now + Duration::hours(3),
            })
        );
        // AND a second sweep finds nothing to do
        assert_eq!(
            sweep(store.as_ref(), now + Duration::hours(2))
                .await
                .expect("sweep"),
            Swept::default()
        );
    }

    #[tokio::test]
    async fn a_sweep_that_loses_the_race_to_a_new_rotation_changes_nothing_and_the_new_rotation_stays(
    ) {
        // GIVEN a webhook whose rotation's overlap ends in an hour, found by a sweep
        // running two hours from now
        let store = store();
        let now = Utc::now();
        let i = rotating("THE_OLD_SECRET_KEY", now + Duration::hours(1));
        store.insert(&i, 10).await.expect("insert");
        let found = store
            .ended_rotations(now + Duration::hours(2), 10)
            .await
            .expect("find");
        assert_eq!(
            found,
            [EndedRotation {
                store_id: i.store_id.clone(),
                id: i.id,
                until: now + Duration::hours(1),
            }]
        );

        // WHEN the secret is rotated again before the sweep removes anything
        let service = Integrations::new(
            store.clone() as Arc<dyn IntegrationStore>,
            Policy {
                allow_http_webhooks: false,
                allow_plain_stomp: false,
            },
            10,
        );
        let rotated = service
            .rotate_secret(
                &i.store_id,
                i.id,
                &json!({"data": {"type": "secret-rotation", "secret_key": "THE_NEWEST_SECRET_KEY", "overlap_minutes": 60}}),
            )
            .await
            .expect("rotated");
        let removed = store
            .remove_retired_secret(&found[0])
            .await
            .expect("remove");

        // THEN nothing was removed: the new rotation's previous secret (the one it
        // replaced) signs until the new rotation's end
        assert!(!removed);
        let Target::Webhook(c) = &rotated.integration.target else {
            panic!("a webhook")
        };
        let until = c.retiring.as_ref().expect("a rotation").until;
        assert_eq!(
            retiring(&store, &i).await,
            Some(RetiringSecret {
                secret: Secret::new("SOME_SECRET_KEY"),
                until,
            })
        );
    }
}
