//! Helpers for the core's own unit tests.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::memory::MemoryIntegrationStore;
use crate::model::{Integration, StoreId, Target, WebhookConfig};
use crate::ports::IntegrationStore;

pub fn store(s: &str) -> StoreId {
    StoreId::parse(s).expect("store id")
}

pub fn webhook(name: &str, store_id: &str, observes: &[&str], enabled: bool) -> Integration {
    let now = Utc::now();
    Integration {
        id: Uuid::now_v7(),
        store_id: store(store_id),
        name: name.into(),
        description: String::new(),
        enabled,
        observes: observes.iter().map(|s| s.to_string()).collect(),
        target: Target::Webhook(WebhookConfig {
            url: format!("https://example.com/{name}"),
            secret_key: None,
        }),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

pub async fn seeded(integrations: &[&Integration]) -> Arc<MemoryIntegrationStore> {
    let store = Arc::new(MemoryIntegrationStore::new());
    for i in integrations {
        store.insert(i, 100).await.expect("insert");
    }
    store
}
