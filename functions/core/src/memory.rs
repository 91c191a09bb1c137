//! Embedded in-process adapters: the dev server's default backend and the fake used
//! by fast unit tests. They are complete implementations of the ports, with the same
//! atomicity guarantees as the AWS adapters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Health, HealthReport, Integration, StoreId};
use crate::ports::{InsertOutcome, IntegrationStore, ReplaceOutcome};
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

    async fn stored(&self, integration: &Integration) -> Result<Stored> {
        Ok(match &self.vault {
            Some(vault) => {
                let (integration, blob) = vault.seal_integration(integration).await?;
                Stored { integration, blob }
            }
            None => Stored {
                integration: integration.clone(),
                blob: None,
            },
        })
    }

    async fn open(&self, stored: Stored) -> Result<Integration> {
        match (&self.vault, stored.blob) {
            (Some(vault), Some(blob)) => vault.open_integration(stored.integration, &blob).await,
            _ => Ok(stored.integration),
        }
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
    ) -> Result<Option<(Health, bool)>> {
        Ok(self.with(|stores| {
            let slot = stores.get_mut(store).and_then(|s| s.get_mut(&id))?;
            let i = &mut slot.integration;
            let disable = report.apply(&mut i.health, i.enabled);
            if disable {
                i.enabled = false;
                i.version += 1;
                i.updated_at = chrono::Utc::now().max(i.updated_at);
            }
            Some((i.health.clone(), disable))
        }))
    }
}

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::attempt::{Attempt, JobRecord, LogEntry};
use crate::page::Page;
use crate::ports::{
    DeadLetter, DeadLetters, DeliveryLog, IdempotencyStore, JobQueue, JobSource, OutgoingJob,
    QueuedJob, SendFailure,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section below is a few field updates that cannot panic half-way,
    // so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
    sent_at: DateTime<Utc>,
}

/// The queue's messages, each either visible or hidden (delayed, or in flight until
/// its visibility ends), indexed so that sending, receiving, hiding and deleting one
/// message cost the same however many wait: a backlog does not slow its own draining.
#[derive(Debug, Default)]
struct QueueState {
    /// Every message not deleted, by its number in the order of arrival.
    messages: HashMap<u64, Message>,
    /// The visible ones, received in order of arrival.
    visible: std::collections::BTreeSet<u64>,
    /// The hidden ones, by when they become visible (their `visible_at`).
    hidden: std::collections::BTreeSet<(Instant, u64)>,
    /// The number the next message sent gets.
    next: u64,
    dead: Vec<Message>,
    failing_sends: usize,
}

impl QueueState {
    /// Adds `message`, visible or hidden by its `visible_at`.
    fn push(&mut self, message: Message, now: Instant) {
        let n = self.next;
        self.next += 1;
        if message.visible_at <= now {
            self.visible.insert(n);
        } else {
            self.hidden.insert((message.visible_at, n));
        }
        self.messages.insert(n, message);
    }

    /// The number of the message `receipt` was given for, if it is still its receipt.
    fn holder(&self, receipt: &str) -> Option<u64> {
        let n: u64 = receipt.split_once('-')?.0.parse().ok()?;
        let m = self.messages.get(&n)?;
        (m.receipt.as_deref() == Some(receipt)).then_some(n)
    }

    /// Takes message `n` out of the visible and hidden sets.
    fn unlist(&mut self, n: u64) {
        if let Some(m) = self.messages.get(&n) {
            if !self.hidden.remove(&(m.visible_at, n)) {
                self.visible.remove(&n);
            }
        }
    }

    /// Hides message `n` until `at`.
    fn hide(&mut self, n: u64, at: Instant) {
        self.unlist(n);
        if let Some(m) = self.messages.get_mut(&n) {
            m.visible_at = at;
            self.hidden.insert((at, n));
        }
    }
}

/// An in-process queue with SQS semantics: a visibility timeout, a receive count per
/// message, visibility changes, delayed messages (`DelaySeconds`: hidden from
/// receivers but not in flight), SQS's batch limits ([`crate::queue`]), and a
/// dead-letter queue that takes a message when it is received again after
/// `max_receives` receives (SQS's `maxReceiveCount`) or when it is sent there.
pub struct MemoryQueue {
    state: Mutex<QueueState>,
    arrived: tokio::sync::Notify,
    visibility: Duration,
    max_receives: u32,
}

impl MemoryQueue {
    /// A queue whose received messages stay hidden for `visibility` unless changed,
    /// and move to the DLQ after `max_receives` receives.
    pub fn new(visibility: Duration, max_receives: u32) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            arrived: tokio::sync::Notify::new(),
            visibility,
            max_receives,
        }
    }

    /// Messages in the queue (visible, delayed or in flight).
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and not yet deleted or visible again (SQS:
    /// `ApproximateNumberOfMessagesNotVisible`). A delayed message that no one has
    /// received is not in flight.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        let state = lock(&self.state);
        state
            .hidden
            .iter()
            .filter(|(at, n)| {
                *at > now && state.messages.get(n).is_some_and(|m| m.receipt.is_some())
            })
            .count()
    }

    /// Bodies of the messages in the queue, visible, delayed or in flight, in order
    /// of arrival.
    #[cfg(test)]
    pub(crate) fn peek(&self) -> Vec<String> {
        let state = lock(&self.state);
        let mut numbered: Vec<(&u64, &Message)> = state.messages.iter().collect();
        numbered.sort_unstable_by_key(|(n, _)| **n);
        numbered.into_iter().map(|(_, m)| m.body.clone()).collect()
    }

    /// Bodies of the messages in the dead-letter queue.
    pub fn dead_letters(&self) -> Vec<String> {
        lock(&self.state)
            .dead
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Makes the next `n` entries sent fail as a throttled `SendMessageBatch` entry
    /// would (fault injection for tests and drills).
    #[cfg(any(test, feature = "testkit"))]
    pub fn fail_next_sends(&self, n: usize) {
        lock(&self.state).failing_sends = n;
    }
}

/// The dead-letter queue, with SQS's visibility: a received dead letter stays hidden
/// from every other receiver until it is released, deleted, or its time is up.
#[async_trait]
impl DeadLetters for MemoryQueue {
    async fn receive_dead(&self, hide: Duration) -> Result<Vec<DeadLetter>> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let mut batch = Vec::new();
        for m in state
            .dead
            .iter_mut()
            .filter(|m| m.visible_at <= now)
            .take(10)
        {
            let receipt = Uuid::new_v4().to_string();
            m.receipt = Some(receipt.clone());
            m.visible_at = now + hide;
            batch.push(DeadLetter {
                receipt,
                body: m.body.clone(),
            });
        }
        Ok(batch)
    }

    async fn release_dead(&self, receipts: &[String]) -> Result<()> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        for m in state.dead.iter_mut() {
            if m.receipt.as_ref().is_some_and(|r| receipts.contains(r)) {
                m.visible_at = now;
            }
        }
        Ok(())
    }

    async fn delete_dead(&self, receipt: &str) -> Result<()> {
        lock(&self.state)
            .dead
            .retain(|m| m.receipt.as_deref() != Some(receipt));
        Ok(())
    }

    async fn requeue(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.send_batch(jobs).await
    }

    async fn dead_in_flight(&self) -> Result<usize> {
        let now = Instant::now();
        Ok(lock(&self.state)
            .dead
            .iter()
            .filter(|m| m.visible_at > now)
            .count())
    }
}

/// What SQS refuses of a batch as a whole: too many entries or too many bytes.
fn refused_batch(jobs: &[OutgoingJob]) -> Option<crate::Error> {
    let bytes: usize = jobs.iter().map(crate::queue::message_bytes).sum();
    let reason = if jobs.len() > crate::queue::MAX_BATCH_ENTRIES {
        format!("TooManyEntriesInBatchRequest: {} entries", jobs.len())
    } else if bytes > crate::queue::MAX_BATCH_BYTES {
        format!("BatchRequestTooLong: {bytes} bytes")
    } else {
        return None;
    };
    Some(crate::Error::Backend {
        service: "SQS",
        message: reason,
        retryable: false,
    })
}

/// What SQS refuses of one entry, if anything: a message over the size limit or a
/// delay over the longest.
fn refused_entry(job: &OutgoingJob) -> Option<String> {
    if crate::queue::message_bytes(job) > crate::queue::MAX_MESSAGE_BYTES {
        Some("InvalidParameterValue: the message is longer than the queue allows".into())
    } else if job.delay > crate::queue::MAX_DELAY {
        Some("InvalidParameterValue: DelaySeconds is longer than 900".into())
    } else {
        None
    }
}

impl MemoryQueue {
    /// Takes each job as SQS would: the batch's limits first, then each entry's, then
    /// the injected failures; `dead` sends to the DLQ.
    fn take(&self, jobs: &[OutgoingJob], dead: bool) -> Result<Vec<SendFailure>> {
        if let Some(refused) = refused_batch(jobs) {
            return Err(refused);
        }
        let mut failures = Vec::new();
        let mut queued = 0;
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            for job in jobs {
                if let Some(reason) = refused_entry(job) {
                    failures.push(SendFailure {
                        entry_id: job.entry_id.clone(),
                        reason,
                        retryable: false,
                    });
                    continue;
                }
                if state.failing_sends > 0 {
                    state.failing_sends -= 1;
                    failures.push(SendFailure {
                        entry_id: job.entry_id.clone(),
                        reason: "ThrottlingException: injected".into(),
                        retryable: true,
                    });
                    continue;
                }
                let message = Message {
                    id: Uuid::new_v4().to_string(),
                    body: job.body.clone(),
                    receive_count: 0,
                    visible_at: if dead { now } else { now + job.delay },
                    receipt: None,
                    sent_at: Utc::now(),
                };
                if dead {
                    state.dead.push(message);
                } else {
                    state.push(message, now);
                    queued += 1;
                }
            }
        }
        // One receiver woken per message, not every waiting one: a dev server's many
        // idle pollers do not all wake for each event.
        for _ in 0..queued {
            self.arrived.notify_one();
        }
        Ok(failures)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.take(jobs, false)
    }

    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some(n) = state.holder(receipt) {
            state.hide(n, Instant::now() + delay);
        }
        Ok(())
    }

    async fn dead_letter(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.take(jobs, true)
    }
}

#[async_trait]
impl JobSource for MemoryQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueuedJob>> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let (batch, next_visible) = {
                let mut state = lock(&self.state);
                let state = &mut *state;
                let now = Instant::now();
                // The hidden messages whose time has come are visible again, in order
                // of arrival; those received `max_receives` times go to the DLQ instead,
                // visible there at once, under no receipt yet.
                let mut due = Vec::new();
                while let Some(&(at, n)) = state.hidden.first() {
                    if at > now {
                        break;
                    }
                    state.hidden.pop_first();
                    due.push(n);
                }
                due.sort_unstable();
                for n in due {
                    match state.messages.get(&n).map(|m| m.receive_count) {
                        Some(count) if count >= self.max_receives => {
                            if let Some(mut m) = state.messages.remove(&n) {
                                m.receipt = None;
                                state.dead.push(m);
                            }
                        }
                        Some(_) => {
                            state.visible.insert(n);
                        }
                        None => {}
                    }
                }
                let mut batch = Vec::new();
                while batch.len() < max {
                    let Some(n) = state.visible.pop_first() else {
                        break;
                    };
                    let Some(m) = state.messages.get_mut(&n) else {
                        continue;
                    };
                    if m.receive_count >= self.max_receives {
                        if let Some(mut m) = state.messages.remove(&n) {
                            m.receipt = None;
                            state.dead.push(m);
                        }
                        continue;
                    }
                    m.receive_count += 1;
                    m.visible_at = now + self.visibility;
                    let receipt = format!("{n}-{}", Uuid::new_v4().simple());
                    m.receipt = Some(receipt.clone());
                    batch.push(QueuedJob {
                        message_id: m.id.clone(),
                        receipt,
                        body: m.body.clone(),
                        receive_count: m.receive_count,
                        sent_at: m.sent_at,
                    });
                    state.hidden.insert((m.visible_at, n));
                }
                let next_visible = state.hidden.first().map(|(at, _)| *at);
                (batch, next_visible)
            };
            let now = Instant::now();
            if !batch.is_empty() || now >= until {
                return Ok(batch);
            }
            let wake = next_visible
                .map_or(until, |t| t.min(until))
                .max(now + Duration::from_millis(1));
            let _ = tokio::time::timeout_at(wake.into(), notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some(n) = state.holder(receipt) {
            state.unlist(n);
            state.messages.remove(&n);
        }
        Ok(())
    }
}

/// Claimed event ids with their expiry. Expired claims are dropped as claims are
/// made, the soonest first, from a heap: a claim costs the same however many are
/// held (DynamoDB's TTL keeps them a day).
#[derive(Default)]
pub struct MemoryIdempotency {
    claims: Mutex<Claims>,
}

#[derive(Default)]
struct Claims {
    expiry: HashMap<(StoreId, String), Instant>,
    /// Every expiry given, soonest on top; one whose claim has since been released,
    /// or made again with another expiry, is skipped when it comes up.
    soonest: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, (StoreId, String))>>,
}

impl MemoryIdempotency {
    /// No claims.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(&self, store: &StoreId, event_id: &str, ttl: Duration) -> Result<bool> {
        let mut claims = lock(&self.claims);
        let Claims { expiry, soonest } = &mut *claims;
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, _))) = soonest.peek() {
            if *at > now {
                break;
            }
            if let Some(std::cmp::Reverse((at, key))) = soonest.pop() {
                if expiry.get(&key) == Some(&at) {
                    expiry.remove(&key);
                }
            }
        }
        let key = (store.clone(), event_id.to_owned());
        if expiry.contains_key(&key) {
            return Ok(false);
        }
        let at = now + ttl;
        expiry.insert(key.clone(), at);
        soonest.push(std::cmp::Reverse((at, key)));
        Ok(true)
    }

    async fn release(&self, store: &StoreId, event_id: &str) -> Result<()> {
        lock(&self.claims)
            .expiry
            .remove(&(store.clone(), event_id.to_owned()));
        Ok(())
    }
}

/// Attempts and jobs in memory; past a cap the oldest attempts, and the jobs updated
/// longest ago, are dropped, so a long-running dev server does not grow without bound.
pub struct MemoryDeliveryLog {
    state: Mutex<(VecDeque<Attempt>, HashMap<Uuid, JobRecord>)>,
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::attempt::JobStatus;

    /// An attempt of job `n` made at second `updated_s`.
    fn job(n: u32, updated_s: i64) -> LogEntry {
        let at = Utc
            .timestamp_opt(1_800_000_000 + updated_s, 0)
            .single()
            .expect("time");
        LogEntry {
            attempt: Attempt {
                id: Uuid::now_v7(),
                store_id: "s".into(),
                integration_id: Uuid::from_u128(7),
                job_id: Uuid::from_u128(u128::from(n)),
                event_id: format!("e{n}"),
                event_type: "order.paid".into(),
                attempt: 1,
                succeeded: true,
                status_code: Some(200),
                body: String::new(),
                error_detail: None,
                processing_time: 0.1,
                created_at: at,
            },
            status: JobStatus::Delivered,
            enqueued_at: at,
        }
    }

    fn job_to_send(body: &str, delay: Duration) -> OutgoingJob {
        OutgoingJob {
            entry_id: body.to_owned(),
            body: body.to_owned(),
            delay,
        }
    }

    fn bodies(batch: &[QueuedJob]) -> Vec<&str> {
        batch.iter().map(|j| j.body.as_str()).collect()
    }

    #[tokio::test]
    async fn messages_are_received_in_order_of_arrival_and_a_released_one_comes_before_newer_ones()
    {
        let queue = MemoryQueue::new(Duration::from_secs(60), 5);
        let sent: Vec<OutgoingJob> = ["a", "b", "c", "d"]
            .iter()
            .map(|b| job_to_send(b, Duration::ZERO))
            .collect();
        assert!(queue.send_batch(&sent).await.expect("send").is_empty());
        let first = queue.receive(2, Duration::ZERO).await.expect("receive");
        assert_eq!(bodies(&first), ["a", "b"]);
        assert_eq!(queue.in_flight(), 2);

        // "a" is released: it comes before "c" and "d", received a second time.
        queue
            .change_visibility(&first[0].receipt, Duration::ZERO)
            .await
            .expect("visibility");
        let second = queue.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(bodies(&second), ["a", "c", "d"]);
        assert_eq!(
            second.iter().map(|j| j.receive_count).collect::<Vec<_>>(),
            [2, 1, 1]
        );

        // The receipt of the first receive of "a" no longer deletes it; its new one does.
        queue.delete(&first[0].receipt).await.expect("delete");
        assert_eq!(queue.len(), 4);
        queue.delete(&second[0].receipt).await.expect("delete");
        queue.delete(&first[1].receipt).await.expect("delete");
        assert_eq!(queue.peek(), ["c", "d"]);
        assert_eq!(queue.in_flight(), 2);
    }

    #[tokio::test]
    async fn a_delayed_message_is_neither_received_nor_in_flight_until_its_delay_ends() {
        let queue = MemoryQueue::new(Duration::from_secs(60), 5);
        let sent = [
            job_to_send("later", Duration::from_secs(600)),
            job_to_send("now", Duration::ZERO),
        ];
        assert!(queue.send_batch(&sent).await.expect("send").is_empty());
        let batch = queue.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(bodies(&batch), ["now"]);
        assert!(queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!((queue.len(), queue.in_flight()), (2, 1));
    }

    #[tokio::test]
    async fn a_message_received_its_last_time_goes_to_the_dlq_when_its_visibility_ends() {
        let queue = MemoryQueue::new(Duration::ZERO, 2);
        let sent = [
            job_to_send("x", Duration::ZERO),
            job_to_send("y", Duration::ZERO),
        ];
        assert!(queue.send_batch(&sent).await.expect("send").is_empty());
        for _ in 0..2 {
            let batch = queue.receive(10, Duration::ZERO).await.expect("receive");
            assert_eq!(bodies(&batch), ["x", "y"]);
        }
        assert!(queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!(queue.dead_letters(), ["x", "y"]);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn an_expired_claim_can_be_made_again_and_a_live_one_cannot() {
        let claims = MemoryIdempotency::new();
        let store = StoreId::parse("s").expect("store");
        assert!(claims
            .claim(&store, "e1", Duration::ZERO)
            .await
            .expect("claim"));
        assert!(claims
            .claim(&store, "e2", Duration::from_secs(3600))
            .await
            .expect("claim"));
        assert!(claims
            .claim(&store, "e1", Duration::from_secs(3600))
            .await
            .expect("claim"));
        assert!(!claims
            .claim(&store, "e1", Duration::ZERO)
            .await
            .expect("claim"));
        assert!(!claims
            .claim(&store, "e2", Duration::ZERO)
            .await
            .expect("claim"));
    }

    #[tokio::test]
    async fn a_claim_made_again_after_its_release_keeps_its_own_expiry() {
        let claims = MemoryIdempotency::new();
        let store = StoreId::parse("s").expect("store");
        // The first claim expires at once; released and made again for an hour, the
        // first claim's expiry coming up must not end the second.
        assert!(claims
            .claim(&store, "e", Duration::ZERO)
            .await
            .expect("claim"));
        claims.release(&store, "e").await.expect("release");
        assert!(claims
            .claim(&store, "e", Duration::from_secs(3600))
            .await
            .expect("claim"));
        assert!(!claims
            .claim(&store, "e", Duration::from_secs(3600))
            .await
            .expect("claim"));
        // Claims of other stores are their own.
        let other = StoreId::parse("t").expect("store");
        assert!(claims
            .claim(&other, "e", Duration::from_secs(3600))
            .await
            .expect("claim"));
    }

    #[tokio::test]
    async fn the_job_map_stays_near_its_cap_and_keeps_the_jobs_updated_last() {
        let log = MemoryDeliveryLog::new(10);
        // Job 0 is the first seen but is updated again at the end: it stays.
        for n in 0..50u32 {
            log.record(&[job(n, i64::from(n))]).await.expect("record");
        }
        log.record(&[job(0, 100)]).await.expect("record");
        let state = lock(&log.state);
        assert!(state.1.len() <= 11, "{} jobs kept", state.1.len());
        assert!(
            state.1.contains_key(&Uuid::from_u128(0)),
            "the job updated last is kept"
        );
        assert!(state.1.contains_key(&Uuid::from_u128(49)));
        assert!(
            !state.1.contains_key(&Uuid::from_u128(1)),
            "the oldest update is dropped"
        );
    }
}
