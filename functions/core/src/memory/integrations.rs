//! Integrations in memory, per store, secrets sealed as in DynamoDB.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::{HealthChange, HealthReport, Integration, StoreId, Target};
use crate::ports::{
    EndedRotation, InsertOutcome, IntegrationStore, ReplaceOutcome, RetiredSecrets,
};
use crate::secrets::Vault;

/// Integrations in memory, per store, ordered by id (UUIDv7: creation order).
///
/// With a [`Vault`] (the embedded default) secrets are held sealed, as in DynamoDB,
/// and opened on every read; without one (unit tests) integrations are kept as given.
#[derive(Default)]
pub struct MemoryIntegrationStore {
    stores: Mutex<HashMap<StoreId, BTreeMap<Uuid, Stored>>>,
    external_ids: Mutex<HashMap<StoreId, String>>,
    vault: Option<Arc<Vault>>,
}

/// An integration as held: secrets masked and sealed into `blob` when there is a vault.
#[derive(Clone)]
struct Stored {
    integration: Integration,
    blob: Option<Vec<u8>>,
}

impl MemoryIntegrationStore {
    /// An empty store that keeps integrations as given.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that seals secrets with `vault`.
    pub fn sealed(vault: Arc<Vault>) -> Self {
        Self {
            vault: Some(vault),
            ..Self::default()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<StoreId, BTreeMap<Uuid, Stored>>) -> T) -> T {
        // A panic while holding the lock cannot leave a half-written map behind
        // (every mutation is a single insert/remove), so a poisoned lock is safe to use.
        let mut guard = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The form held; a retiring secret whose overlap has ended is not written.
    async fn stored(&self, integration: &Integration) -> Result<Stored> {
        let mut integration = integration.clone();
        integration.retire_expired(chrono::Utc::now());
        Ok(match &self.vault {
            Some(vault) => {
                let (integration, blob) = vault.seal_integration(&integration).await?;
                Stored { integration, blob }
            }
            None => Stored {
                integration,
                blob: None,
            },
        })
    }

    /// The integration held; a retiring secret whose overlap has ended is not read.
    async fn open(&self, stored: Stored) -> Result<Integration> {
        let mut integration = match (&self.vault, stored.blob) {
            (Some(vault), Some(blob)) => vault.open_integration(stored.integration, &blob).await?,
            _ => stored.integration,
        };
        integration.retire_expired(chrono::Utc::now());
        Ok(integration)
    }
}

#[async_trait]
impl IntegrationStore for MemoryIntegrationStore {
    async fn insert(
        &self,
        integration: &Integration,
        max_per_store: usize,
    ) -> Result<InsertOutcome> {
        let stored = self.stored(integration).await?;
        Ok(self.with(|stores| {
            let store = stores.entry(integration.store_id.clone()).or_default();
            if store.len() >= max_per_store {
                InsertOutcome::LimitReached
            } else {
                store.insert(integration.id, stored);
                InsertOutcome::Inserted
            }
        }))
    }

    async fn get(&self, store: &StoreId, id: Uuid) -> Result<Option<Integration>> {
        let stored = self.with(|stores| stores.get(store).and_then(|s| s.get(&id)).cloned());
        match stored {
            Some(stored) => Ok(Some(self.open(stored).await?)),
            None => Ok(None),
        }
    }

    async fn list(&self, store: &StoreId) -> Result<Vec<Integration>> {
        let stored: Vec<Stored> = self.with(|stores| {
            stores
                .get(store)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default()
        });
        let mut out = Vec::with_capacity(stored.len());
        for s in stored {
            out.push(self.open(s).await?);
        }
        Ok(out)
    }

    async fn replace(
        &self,
        integration: &Integration,
        expected_version: u64,
    ) -> Result<ReplaceOutcome> {
        let stored = self.stored(integration).await?;
        Ok(self.with(|stores| {
            let Some(slot) = stores
                .get_mut(&integration.store_id)
                .and_then(|s| s.get_mut(&integration.id))
            else {
                return ReplaceOutcome::NotFound;
            };
            if slot.integration.version != expected_version {
                return ReplaceOutcome::VersionConflict;
            }
            *slot = stored;
            ReplaceOutcome::Replaced
        }))
    }

    async fn delete(&self, store: &StoreId, id: Uuid) -> Result<bool> {
        Ok(self.with(|stores| stores.get_mut(store).and_then(|s| s.remove(&id)).is_some()))
    }

    async fn external_id(&self, store: &StoreId) -> Result<String> {
        let mut ids = self.external_ids.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ids
            .entry(store.clone())
            .or_insert_with(crate::model::issue_external_id)
            .clone())
    }

    async fn record_health(
        &self,
        store: &StoreId,
        id: Uuid,
        report: &HealthReport,
    ) -> Result<Option<HealthChange>> {
        Ok(self.with(|stores| {
            let slot = stores.get_mut(store).and_then(|s| s.get_mut(&id))?;
            let i = &mut slot.integration;
            let before = i.health.clone();
            let disabled = report.apply(&mut i.health, i.enabled);
            if disabled {
                i.enabled = false;
                i.version += 1;
                i.updated_at = chrono::Utc::now().max(i.updated_at);
            }
            Some(HealthChange {
                before,
                after: i.health.clone(),
                disabled,
            })
        }))
    }
}

/// When the overlap of `i`'s rotation ends, if its previous secret is held.
fn rotation_end(i: &Integration) -> Option<chrono::DateTime<chrono::Utc>> {
    match &i.target {
        Target::Webhook(c) => c.retiring.as_ref().map(|r| r.until),
        _ => None,
    }
}

#[async_trait]
impl RetiredSecrets for MemoryIntegrationStore {
    async fn ended_rotations(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<EndedRotation>> {
        let mut ended: Vec<EndedRotation> = self.with(|stores| {
            stores
                .values()
                .flat_map(|s| s.values())
                .filter_map(|held| {
                    let until = rotation_end(&held.integration).filter(|u| *u <= now)?;
                    Some(EndedRotation {
                        store_id: held.integration.store_id.clone(),
                        id: held.integration.id,
                        until,
                    })
                })
                .collect()
        });
        ended.sort_by_key(|e| e.until);
        ended.truncate(limit);
        Ok(ended)
    }

    /// Seals the secrets again without the previous one, then swaps the new form in
    /// only if the integration is still at the version read and in that rotation,
    /// with the health held then (a report changes it without a new version).
    async fn remove_retired_secret(&self, ended: &EndedRotation) -> Result<bool> {
        let held = self.with(|stores| {
            stores
                .get(&ended.store_id)
                .and_then(|s| s.get(&ended.id))
                .cloned()
        });
        let Some(held) = held.filter(|h| rotation_end(&h.integration) == Some(ended.until)) else {
            return Ok(false);
        };
        let version = held.integration.version;
        let mut integration = self.open(held).await?;
        if let Target::Webhook(c) = &mut integration.target {
            c.retiring = None;
        }
        let mut stored = self.stored(&integration).await?;
        Ok(self.with(|stores| {
            match stores
                .get_mut(&ended.store_id)
                .and_then(|s| s.get_mut(&ended.id))
            {
                Some(slot)
                    if slot.integration.version == version
                        && rotation_end(&slot.integration) == Some(ended.until) =>
                {
                    stored.integration.health = slot.integration.health.clone();
                    *slot = stored;
                    true
                }
                _ => false,
            }
        }))
    }
}
