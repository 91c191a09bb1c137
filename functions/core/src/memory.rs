//! Embedded in-process adapters: the dev server's default backend and the fake used
//! by fast unit tests. They are complete implementations of the ports, with the same
//! atomicity guarantees as the AWS adapters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Integration, StoreId};
use crate::ports::{InsertOutcome, IntegrationStore, ReplaceOutcome};

/// Integrations in memory, per store, ordered by id (UUIDv7: creation order).
#[derive(Default)]
pub struct MemoryIntegrationStore {
    stores: Mutex<HashMap<StoreId, BTreeMap<Uuid, Integration>>>,
}

impl MemoryIntegrationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<StoreId, BTreeMap<Uuid, Integration>>) -> T,
    ) -> T {
        // A panic while holding the lock cannot leave a half-written map behind
        // (every mutation is a single insert/remove), so a poisoned lock is safe to use.
        let mut guard = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl IntegrationStore for MemoryIntegrationStore {
    async fn insert(
        &self,
        integration: &Integration,
        max_per_store: usize,
    ) -> Result<InsertOutcome> {
        Ok(self.with(|stores| {
            let store = stores.entry(integration.store_id.clone()).or_default();
            if store.len() >= max_per_store {
                InsertOutcome::LimitReached
            } else {
                store.insert(integration.id, integration.clone());
                InsertOutcome::Inserted
            }
        }))
    }

    async fn get(&self, store: &StoreId, id: Uuid) -> Result<Option<Integration>> {
        Ok(self.with(|stores| stores.get(store).and_then(|s| s.get(&id)).cloned()))
    }

    async fn list(&self, store: &StoreId) -> Result<Vec<Integration>> {
        Ok(self.with(|stores| {
            stores
                .get(store)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn replace(
        &self,
        integration: &Integration,
        expected_version: u64,
    ) -> Result<ReplaceOutcome> {
        Ok(self.with(|stores| {
            let Some(slot) = stores
                .get_mut(&integration.store_id)
                .and_then(|s| s.get_mut(&integration.id))
            else {
                return ReplaceOutcome::NotFound;
            };
            if slot.version != expected_version {
                return ReplaceOutcome::VersionConflict;
            }
            *slot = integration.clone();
            ReplaceOutcome::Replaced
        }))
    }

    async fn delete(&self, store: &StoreId, id: Uuid) -> Result<bool> {
        Ok(self.with(|stores| stores.get_mut(store).and_then(|s| s.remove(&id)).is_some()))
    }
}
