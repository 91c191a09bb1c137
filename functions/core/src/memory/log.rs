//! The delivery log in memory, capped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::lock;
use crate::attempt::{Attempt, JobRecord, LogEntry};
use crate::error::Result;
use crate::model::StoreId;
use crate::page::Page;
use crate::ports::DeliveryLog;

/// Attempts and jobs in memory; past a cap the oldest attempts, and the jobs updated
/// longest ago, are dropped, so a long-running dev server does not grow without bound.
pub struct MemoryDeliveryLog {
    pub(super) state: Mutex<(VecDeque<Attempt>, HashMap<Uuid, JobRecord>)>,
    cap: usize,
}

impl Default for MemoryDeliveryLog {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryDeliveryLog {
    /// Keeps at most `cap` attempts, and about `cap` jobs (pruned back to `cap` once
    /// they are a tenth over it, the ones updated longest ago first).
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new((VecDeque::new(), HashMap::new())),
            cap,
        }
    }

    /// The page, and the total counted as far as the DynamoDB log counts it
    /// ([`Page::count_cap`]), so both adapters answer alike.
    fn page_of<T: Clone>(items: Vec<T>, page: Page) -> (Vec<T>, usize) {
        let total = items.len().min(page.count_cap());
        (page.slice(items), total)
    }

    fn attempts_where(&self, keep: impl Fn(&Attempt) -> bool, page: Page) -> (Vec<Attempt>, usize) {
        let state = lock(&self.state);
        let items: Vec<Attempt> = state.0.iter().rev().filter(|a| keep(a)).cloned().collect();
        Self::page_of(items, page)
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn record(&self, entries: &[LogEntry]) -> Result<()> {
        let mut state = lock(&self.state);
        state.0.extend(entries.iter().map(|e| e.attempt.clone()));
        while state.0.len() > self.cap {
            state.0.pop_front();
        }
        for entry in entries {
            state.1.insert(entry.attempt.job_id, entry.job());
        }
        if state.1.len() > self.cap + self.cap / 10 {
            let mut by_age: Vec<_> = state.1.values().map(|j| (j.updated_at, j.job_id)).collect();
            by_age.sort_unstable();
            let excess = state.1.len() - self.cap;
            for (_, id) in by_age.into_iter().take(excess) {
                state.1.remove(&id);
            }
        }
        Ok(())
    }

    async fn store_logs(&self, store: &StoreId, page: Page) -> Result<(Vec<Attempt>, usize)> {
        Ok(self.attempts_where(|a| a.store_id == store.as_str(), page))
    }

    async fn integration_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        Ok(self.attempts_where(
            |a| a.store_id == store.as_str() && a.integration_id == integration,
            page,
        ))
    }

    async fn integration_jobs(
        &self,
        store: &StoreId,
        integration: Uuid,
        page: Page,
    ) -> Result<(Vec<JobRecord>, usize)> {
        let state = lock(&self.state);
        let mut jobs: Vec<JobRecord> = state
            .1
            .values()
            .filter(|j| j.store_id == store.as_str() && j.integration_id == integration)
            .cloned()
            .collect();
        jobs.sort_by(|a, b| {
            b.enqueued_at
                .cmp(&a.enqueued_at)
                .then(b.job_id.cmp(&a.job_id))
        });
        Ok(Self::page_of(jobs, page))
    }

    async fn job_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        job: Uuid,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        Ok(self.attempts_where(
            |a| a.store_id == store.as_str() && a.integration_id == integration && a.job_id == job,
            page,
        ))
    }
}
