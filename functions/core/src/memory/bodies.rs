//! Event bodies in memory: the dev server's claim checks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::Result;
use crate::ports::{BodyAt, EventBodies};

/// Bodies in a map, kept while the process lives. It has no URLs of its own: a body is
/// handed out as its bytes (the dev server's `dataref` route answers them itself).
#[derive(Default)]
pub struct MemoryBodies {
    bodies: Mutex<HashMap<String, bytes::Bytes>>,
}

impl MemoryBodies {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBodies for MemoryBodies {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<()> {
        lock(&self.bodies).insert(key.to_owned(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        Ok(lock(&self.bodies).get(key).cloned())
    }

    async fn open(&self, key: &str, _valid: std::time::Duration) -> Result<Option<BodyAt>> {
        Ok(lock(&self.bodies).get(key).cloned().map(BodyAt::Bytes))
    }
}
