//! Ports: the small traits the handlers depend on. Each has a memory adapter (the
//! embedded default, also used in unit tests) and an AWS adapter.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{HealthChange, HealthReport, Integration, StoreId};

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

    /// The store's external id for keyless SQS delivery (the `sts:ExternalId` of every
    /// role Herald assumes for it): issued on first request, random (see
    /// [`crate::model::issue_external_id`]), and never changed after. Concurrent first
    /// requests agree on one value. No store can choose it or learn another's.
    async fn external_id(&self, store: &StoreId) -> Result<String>;

    /// Records what the fan-out saw of an integration's deliveries, and disables it
    /// (a new version) when the report says so. Returns its health before and after
    /// and whether this call disabled it; `None` when the integration is gone.
    /// Reports apply one at a time: of concurrent reports, each sees the health the
    /// one before it left, so a change (the first failure, a recovery) is seen once.
    async fn record_health(
        &self,
        store: &StoreId,
        id: Uuid,
        report: &HealthReport,
    ) -> Result<Option<HealthChange>>;
}

/// A secret rotation whose overlap has ended while its previous secret is still
/// stored, as [`RetiredSecrets::ended_rotations`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedRotation {
    /// The integration's store.
    pub store_id: StoreId,
    /// The integration.
    pub id: Uuid,
    /// When the overlap ended: it names the rotation, so that a later one (which ends
    /// at another time) is never taken for it.
    pub until: DateTime<Utc>,
}

/// The sweep of ended secret rotations ([`crate::sweep`]): a webhook's previous
/// secret leaves storage within minutes of its overlap's end, not at the
/// integration's next write. The only port that looks across stores, and it sees
/// nothing of an integration but its key and the rotation's end.
#[async_trait]
pub trait RetiredSecrets: Send + Sync {
    /// Up to `limit` rotations whose overlap ended at or before `now` and whose
    /// previous secret is still stored, the earliest first. Never reads the table
    /// whole: only the integrations in a rotation are looked at.
    async fn ended_rotations(&self, now: DateTime<Utc>, limit: usize)
        -> Result<Vec<EndedRotation>>;

    /// Removes the previous secret of `ended` (sealed again without it) and the
    /// rotation's end, if the integration is still in that rotation at the version
    /// read; `false`, having changed nothing, when it is not (a new rotation, an edit
    /// or a health change won the race, or it was deleted): the next sweep sees it
    /// again if it still has to.
    async fn remove_retired_secret(&self, ended: &EndedRotation) -> Result<bool>;
}

/// A delivery job as sent to the internal queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingJob {
    /// Entry id within one batch (unique per batch).
    pub entry_id: String,
    /// The message body ([`crate::job::DeliveryJob::to_body`]).
    pub body: String,
    /// How long the queue keeps it from every receiver (SQS `DelaySeconds`, at most
    /// [`crate::queue::MAX_DELAY`]): a retry's wait that holds nothing in flight.
    pub delay: std::time::Duration,
}

/// An entry of a batch send that was not queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendFailure {
    /// The entry id.
    pub entry_id: String,
    /// What the queue said.
    pub reason: String,
    /// Whether sending it again may succeed.
    pub retryable: bool,
}

/// The internal queue, as ingest and fan-out use it.
///
/// `SendMessageBatch` can answer 200 and still fail some entries (`Failed[]`); the
/// adapter reports those as [`SendFailure`]s, never silently. A batch keeps to
/// SQS's limits ([`crate::queue::batches`] cuts them).
/// See <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html>.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends one batch of jobs; returns the entries that were not queued.
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>>;

    /// Hides a received message for `delay` (the backoff before its next attempt,
    /// when it could not be sent again delayed).
    async fn change_visibility(&self, receipt: &str, delay: std::time::Duration) -> Result<()>;

    /// Sends one batch of jobs (`delay` ignored) to the queue's dead-letter queue,
    /// where jobs wait after their last attempt (for replay); returns the entries
    /// that were not sent.
    async fn dead_letter(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>>;
}

/// A message received from the internal queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedJob {
    /// The queue's message id (what a batch response names).
    pub message_id: String,
    /// Handle for visibility changes and deletion (differs per receive).
    pub receipt: String,
    /// The body.
    pub body: String,
    /// How many times it has been received, this time included (`ApproximateReceiveCount`).
    pub receive_count: u32,
    /// When it was first sent (`SentTimestamp`).
    pub sent_at: chrono::DateTime<chrono::Utc>,
}

/// Receiving from the internal queue: what the dev server's poller does in place of
/// Lambda's event-source mapping.
#[async_trait]
pub trait JobSource: Send + Sync {
    /// Up to `max` visible messages, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: std::time::Duration) -> Result<Vec<QueuedJob>>;

    /// Acknowledges a message.
    async fn delete(&self, receipt: &str) -> Result<()>;
}

/// What a redrive of dead-lettered jobs did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redrive {
    /// Jobs moved back to the internal queue.
    pub moved: usize,
    /// Dead-lettered jobs of the integration looked at (other stores' and
    /// integrations' messages are not counted: their number is not the caller's
    /// business).
    pub scanned: usize,
    /// Whether the whole DLQ was looked at and no one else held a message of it (else:
    /// call again).
    pub complete: bool,
}

/// A message received from the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Handle for releasing or deleting it (differs per receive).
    pub receipt: String,
    /// The body.
    pub body: String,
}

/// The internal queue's dead-letter queue, as replay ([`crate::replay::redrive`]) uses
/// it: SQS's own operations, which cannot select messages, so a replay scans. (The
/// names say `dead`: the memory adapter is the internal queue and its DLQ in one.)
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to 10 visible messages, each hidden from every other receiver for `hide`.
    /// An empty answer means no message is visible (the adapter asks the whole
    /// queue, not a sample of it).
    async fn receive_dead(&self, hide: std::time::Duration) -> Result<Vec<DeadLetter>>;

    /// Makes received messages visible again at once.
    async fn release_dead(&self, receipts: &[String]) -> Result<()>;

    /// Deletes a received message.
    async fn delete_dead(&self, receipt: &str) -> Result<()>;

    /// Sends jobs to the internal queue as new messages (a fresh retry budget);
    /// returns the entries that were not queued.
    async fn requeue(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>>;

    /// How many messages are received and hidden right now, by anyone (SQS:
    /// `ApproximateNumberOfMessagesNotVisible`, an approximation).
    async fn dead_in_flight(&self) -> Result<usize>;
}

/// Remembers which event ids a store has already sent, for a bounded time.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes an event id's claim for `ttl`: the time (to the millisecond) it was first
    /// taken, or `None` when it is held (a duplicate). The claim is one atomic
    /// conditional write, so concurrent duplicates get one `Some`. A claim given back
    /// ([`IdempotencyStore::release`]) and taken again keeps its first time: ingest
    /// queues an event's jobs at that time, and a job's id is made of it
    /// ([`crate::job::job_id`]), so a resend's jobs have the ids of the first send's.
    async fn take(
        &self,
        store: &StoreId,
        event_id: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>>;

    /// Claims an event id; `false` when it was claimed before (a duplicate):
    /// [`IdempotencyStore::take`] without the time.
    async fn claim(
        &self,
        store: &StoreId,
        event_id: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        Ok(self.take(store, event_id, ttl).await?.is_some())
    }

    /// Takes many event ids' claims at once (a request's): one result per id, in
    /// order, with [`IdempotencyStore::take`]'s meaning: each taken on its own, all at
    /// once. (In DynamoDB a claim is a conditional write of one write request unit; a
    /// transaction of claims would cost two a claim: the cost section of `make bench`.)
    async fn take_all(
        &self,
        claims: &[(StoreId, String)],
        ttl: std::time::Duration,
    ) -> Vec<Result<Option<chrono::DateTime<chrono::Utc>>>> {
        futures_util::future::join_all(claims.iter().map(|(store, id)| self.take(store, id, ttl)))
            .await
    }

    /// [`IdempotencyStore::take_all`] without the times.
    async fn claim_all(
        &self,
        claims: &[(StoreId, String)],
        ttl: std::time::Duration,
    ) -> Vec<Result<bool>> {
        self.take_all(claims, ttl)
            .await
            .into_iter()
            .map(|taken| taken.map(|t| t.is_some()))
            .collect()
    }

    /// Gives a claim back (the event could not be queued, so a resend must pass); a
    /// resend takes it again at its first time.
    async fn release(&self, store: &StoreId, event_id: &str) -> Result<()>;
}

/// Where delivery attempts and job states are recorded and read back.
///
/// A listing's total is counted no further than [`crate::page::Page::count_cap`] (the
/// end of the page after the one asked for), so a request's cost does not grow with
/// the history: a total equal to that cap means "at least"
/// ([`crate::page::Page::bounded_total`]).
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Records the attempts of one batch, and the job states they leave, in as few
    /// writes as possible.
    async fn record(&self, entries: &[crate::attempt::LogEntry]) -> Result<()>;

    /// A page of a store's attempts that `filter` keeps, newest first, and their
    /// total (counted up to the page's cap). A filtered listing reads at most
    /// [`READ_BUDGET`](crate::filter::READ_BUDGET) items and says where it stopped.
    async fn store_logs(
        &self,
        store: &StoreId,
        filter: &crate::filter::Filter,
        page: crate::page::Page,
    ) -> Result<crate::filter::Listed<crate::attempt::Attempt>>;

    /// A page of one integration's attempts that `filter` keeps, newest first, and
    /// their total (counted up to the page's cap), as [`DeliveryLog::store_logs`].
    async fn integration_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        filter: &crate::filter::Filter,
        page: crate::page::Page,
    ) -> Result<crate::filter::Listed<crate::attempt::Attempt>>;

    /// A page of one integration's jobs that `filter` keeps (as each stands after its
    /// latest attempt), newest first, and their total (counted up to the page's cap),
    /// as [`DeliveryLog::store_logs`].
    async fn integration_jobs(
        &self,
        store: &StoreId,
        integration: Uuid,
        filter: &crate::filter::Filter,
        page: crate::page::Page,
    ) -> Result<crate::filter::Listed<crate::attempt::JobRecord>>;

    /// The archive: of `jobs`, those of `store`'s `integration` whose bodies the log
    /// keeps ([`crate::attempt::LogEntry::archive`], written with a job's first
    /// attempt, kept for the log's retention), as queue message bodies, in no order.
    /// A job not found (never attempted, expired, of another integration or store)
    /// is left out.
    async fn archived(
        &self,
        store: &StoreId,
        integration: Uuid,
        jobs: &[Uuid],
    ) -> Result<Vec<String>>;

    /// A page of one job's attempts, newest first, and their total (counted up to the
    /// page's cap).
    async fn job_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        job: Uuid,
        page: crate::page::Page,
    ) -> Result<(Vec<crate::attempt::Attempt>, usize)>;
}

/// Delivers one job to its integration's target.
#[async_trait]
pub trait Deliverer: Send + Sync {
    /// One attempt; never panics on bad input, never returns early without an outcome.
    async fn deliver(
        &self,
        integration: &Integration,
        job: &crate::job::DeliveryJob,
        attempt: u32,
    ) -> crate::attempt::DeliveryResult;
}

/// Send times reserved in an integration's rate bucket: `count` of them, the first at
/// `first`, each [`Slots::interval`] after the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    /// The first send time.
    pub first: chrono::DateTime<chrono::Utc>,
    /// Between two send times: a second over the rate, rounded up to the microsecond.
    pub interval: std::time::Duration,
    /// How many were reserved.
    pub count: u32,
}

impl Slots {
    /// The time between two sends at `per_second` (at least 1): a second over it,
    /// rounded up to the microsecond, so the sends never outrun the rate.
    pub fn interval(per_second: u32) -> std::time::Duration {
        std::time::Duration::from_micros(1_000_000u64.div_ceil(u64::from(per_second.max(1))))
    }

    /// The `k`-th send time (from 0).
    pub fn nth(&self, k: u32) -> chrono::DateTime<chrono::Utc> {
        let step = self.interval.as_micros() as i64 * i64::from(k);
        self.first + chrono::Duration::microseconds(step)
    }
}

/// An integration's `delivery.max_per_second`, shared by every fan-out invocation: a
/// token bucket of one token (no burst), kept as the time its next token is free (the
/// generic cell rate algorithm's "theoretical arrival time"). A reservation takes the
/// next `count` send times, one [`Slots::interval`] apart, from that time or from
/// now if it has passed, and moves it on past them: send times are never closer than
/// the interval, whoever reserved them, and jobs that must wait get a send time in
/// the order they asked, so none starves and they come back spread at the rate.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Reserves the next `count` send times of integration `id` of `store` at
    /// `per_second`; `None` when the bucket was contended for a few rounds (the jobs
    /// wait a moment and ask again).
    async fn reserve(
        &self,
        store: &StoreId,
        id: Uuid,
        per_second: u32,
        count: u32,
    ) -> Result<Option<Slots>>;
}

/// Where event payloads too large for a queue message wait for their deliveries (the
/// claim check, [`crate::job::Stored`]): ingest stores them, the fan-out reads them
/// back, and the API hands an event's `data` to whoever holds its `dataref`
/// ([`crate::event_data`]). Keys name content ([`crate::job::Stored`]): a key always holds the
/// same bytes, so storing one again is harmless. Bodies expire with the delivery log
/// (the bucket's lifecycle rule; the memory adapter keeps them while it lives).
#[async_trait]
pub trait EventBodies: Send + Sync {
    /// Stores `body` under `key`.
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<()>;

    /// The body under `key`; `None` when there is none (expired or deleted).
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>>;

    /// How to hand the body under `key` to someone without credentials: a URL that
    /// serves it for `valid` (S3: a GET presigned now), or the bytes themselves (a
    /// store with no URL of its own); `None` when there is no such body.
    async fn open(&self, key: &str, valid: std::time::Duration) -> Result<Option<BodyAt>>;
}

/// Where a stored body can be had ([`EventBodies::open`]).
#[derive(Clone, PartialEq, Eq)]
pub enum BodyAt {
    /// A URL serving it for a few minutes, with no further credentials.
    Url(String),
    /// The body itself.
    Bytes(bytes::Bytes),
}

/// `Debug` shows neither the URL (whoever holds it reads the body) nor the body.
impl std::fmt::Debug for BodyAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(_) => f.write_str("Url(<redacted>)"),
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

/// A key that authenticates messages (HMAC-SHA-256) and that nobody reads: the
/// `dataref` tokens' ([`crate::event_data`]). The fan-out only makes codes, the API
/// only checks them, each through its own permission (KMS `GenerateMac`, `VerifyMac`).
#[async_trait]
pub trait MacKey: Send + Sync {
    /// The code of `message`.
    async fn mac(&self, message: &[u8]) -> Result<Vec<u8>>;

    /// Whether `mac` is the code of `message`, compared in constant time; `Ok(false)`
    /// for any wrong code.
    async fn verify(&self, message: &[u8], mac: &[u8]) -> Result<bool>;
}
