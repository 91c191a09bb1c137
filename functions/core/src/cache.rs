//! A short-lived, per-process cache of each store's integrations, so that ingest and
//! fan-out make one store query per store per TTL, never one per event or record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

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

    /// The enabled integrations of a store that observe `event_type`.
    pub async fn observers(&self, store: &StoreId, event_type: &str) -> Result<Vec<Integration>> {
        Ok(self
            .of_store(store)
            .await?
            .iter()
            .filter(|i| i.enabled && i.observes.iter().any(|o| o == event_type))
            .cloned()
            .collect())
    }

    /// One integration of a store, as of the cached list.
    pub async fn find(&self, store: &StoreId, id: Uuid) -> Result<Option<Integration>> {
        Ok(self
            .of_store(store)
            .await?
            .iter()
            .find(|i| i.id == id)
            .cloned())
    }
}
