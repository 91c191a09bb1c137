//! A short-lived, per-process cache of each store's integrations, so that ingest and
//! fan-out make one store query per store per TTL, never one per event or record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::{Integration, StoreId};
use crate::ports::IntegrationStore;

/// A store's integrations and when they were read.
type Entry = (Instant, Arc<Vec<Integration>>);

/// Integrations by store, refreshed after `ttl`.
pub struct IntegrationCache {
    store: Arc<dyn IntegrationStore>,
    ttl: Duration,
    entries: Mutex<HashMap<StoreId, Entry>>,
}

impl IntegrationCache {
    /// A cache over `store`. A zero `ttl` reads the store every time.
    pub fn new(store: Arc<dyn IntegrationStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn IntegrationStore> {
        &self.store
    }

    fn fresh(&self, store: &StoreId) -> Option<Arc<Vec<Integration>>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(store)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, list)| list.clone())
    }

    /// All integrations of a store (one query when the cached list is stale).
    pub async fn of_store(&self, store: &StoreId) -> Result<Arc<Vec<Integration>>> {
        if let Some(list) = self.fresh(store) {
            return Ok(list);
        }
        let list = Arc::new(self.store.list(store).await?);
        if !self.ttl.is_zero() {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.insert(store.clone(), (Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// Every store's list, read once for a whole batch: `Err` for a store that could
    /// not be read. Callers look integrations up in this snapshot, so a batch makes
    /// one query per store even when the cache is off (TTL 0).
    pub async fn snapshot(
        &self,
        stores: &[StoreId],
    ) -> HashMap<StoreId, Result<Arc<Vec<Integration>>>> {
        let mut out = HashMap::new();
        for store in stores {
            if !out.contains_key(store) {
                let list = self.of_store(store).await;
                out.insert(store.clone(), list);
            }
        }
        out
    }
}

/// The enabled integrations of a list that observe `event_type`.
pub fn observers<'a>(list: &'a [Integration], event_type: &str) -> Vec<&'a Integration> {
    list.iter()
        .filter(|i| i.enabled && i.observes.iter().any(|o| o == event_type))
        .collect()
}
