//! Ports: the small traits the handlers depend on. Each has a memory adapter (the
//! embedded default, also used in unit tests) and an AWS adapter.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Integration, StoreId};

/// The outcome of inserting a new integration.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored.
    Inserted,
    /// The store already holds its maximum number of integrations.
    LimitReached,
}

/// The outcome of replacing an integration at a known version.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// Stored.
    Replaced,
    /// Someone else changed it since it was read: read again and retry.
    VersionConflict,
    /// It was deleted meanwhile; a replace never brings it back.
    NotFound,
}

/// Where integrations live. Every call is scoped to one store: no method can read or
/// change another store's integrations.
#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// Stores a new integration unless its store already holds `max_per_store`.
    /// The check and the write are one atomic step.
    async fn insert(
        &self,
        integration: &Integration,
        max_per_store: usize,
    ) -> Result<InsertOutcome>;

    /// One integration of a store.
    async fn get(&self, store: &StoreId, id: Uuid) -> Result<Option<Integration>>;

    /// All integrations of a store, oldest first.
    async fn list(&self, store: &StoreId) -> Result<Vec<Integration>>;

    /// Replaces an integration if it still exists at `expected_version`
    /// (`integration.version` is the new version).
    async fn replace(
        &self,
        integration: &Integration,
        expected_version: u64,
    ) -> Result<ReplaceOutcome>;

    /// Deletes an integration; `false` when there was none.
    async fn delete(&self, store: &StoreId, id: Uuid) -> Result<bool>;
}
