//! Fan-out: delivers a batch of jobs from the internal queue concurrently and names
//! the records that must be retried (Lambda's partial batch response).
//!
//! - Each record is its own future, polled by the batch's task: a panic or error fails
//!   that record only.
//! - A malformed job, a deleted or disabled integration, or a refused target is a
//!   permanent outcome: logged, recorded, acknowledged, never retried.
//! - A retryable failure is sent again as a new message, delayed by its backoff and
//!   carrying its next attempt number and when its first attempt was queued, and the
//!   received message is acknowledged: a job waiting for its retry is never in
//!   flight (SQS allows about 120,000 in-flight messages per queue; past that,
//!   receives come back empty for every store). A wait longer than one message can
//!   be delayed is several sends, each made on without an attempt. After the last
//!   attempt the fan-out sends the job to the DLQ itself. Should a send fail, the
//!   record falls back to a visibility change and is reported failed.
//! - The attempt number is the job's own (its body), not the queue's receive count:
//!   a record received again after a crash, a throttled or cut invocation makes the
//!   same attempt again. The queue's `maxReceiveCount` ([`crate::retry::MAX_RECEIVES`])
//!   only catches a message that keeps coming back.
//! - Every attempt ends by its own deadline (the longest an attempt may take, and
//!   never later than shortly before the invocation's end): an attempt cut there is a
//!   failed attempt like any other, recorded with its reason, retried, and counted in
//!   the integration's health on the last attempt.
//! - While other integrations' records wait, one integration holds at most
//!   [`SHARE_IN_FLIGHT`] of the batch's in-flight places: a store whose endpoint is
//!   slow slows itself, not the others in the batch.
//! - Attempts are recorded once per batch, not once per record.
//! - Each integration's schedule is the fan-out's, stretched to its
//!   `delivery.retry_window_minutes` ([`RetryPolicy::stretched_to`]): a longer window
//!   is more attempts and longer waits, each wait still a delayed message (nothing in
//!   flight), and the DLQ after its last attempt.
//! - An integration's `delivery.max_per_second` paces its deliveries across every
//!   invocation ([`RateLimiter`]): a batch reserves send times for its jobs of the
//!   integration in one call; a job whose time comes within [`HOLD`] waits for it in
//!   the invocation, a later one is sent back delayed to arrive shortly before it and
//!   is then delivered at it without reserving again. Waiting is not an attempt: no
//!   log entry, the same attempt number. A job that arrives (or wakes) more than
//!   [`LATE`] after its time reserves again, so no send is ever closer to another
//!   than the rate allows.
//!
//! See <https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::time::Instant;
use uuid::Uuid;

use crate::alerts::{Alert, Cause};
use crate::attempt::{log_entry, DeliveryResult, JobStatus, LogEntry, Outcome};
use crate::cache::IntegrationCache;
use crate::ingest::EventStatus;
use crate::job::DeliveryJob;
use crate::metrics::Sample;
use crate::model::{HealthChange, HealthReport, Integration, StoreId};
use crate::ports::{
    Deliverer, DeliveryLog, EventBodies, JobQueue, OutgoingJob, QueuedJob, RateLimiter,
};
use crate::queue::MAX_DELAY;
use crate::retry::RetryPolicy;
use crate::telemetry::LineQuota;

/// Time kept back before the invocation deadline to answer and record.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Time kept back before [`DEADLINE_MARGIN`] for what follows an attempt (its backoff,
/// its health): attempts still running then are cut.
pub const AFTER_ATTEMPT_MARGIN: Duration = Duration::from_millis(500);

/// The longest one attempt may take, whatever its target: above the webhook's
/// longest timeout (30 s), so a target's own timeout, with its more precise reason,
/// comes first.
pub const ATTEMPT_LIMIT: Duration = Duration::from_secs(35);

/// Time kept back before the invocation deadline to send the answer, once the
/// batch's attempts are being recorded.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// The longest a record waits in its invocation for its send time (a rate-limited
/// integration's); one due later is sent back to the queue to wait there.
pub const HOLD: Duration = Duration::from_secs(3);

/// How long before its send time a job sent back for it arrives, at least (its delay
/// is rounded down to whole seconds, as SQS counts them, so at most a second more).
const LEAD: Duration = Duration::from_secs(1);

/// How late after its send time a job may still be sent: later (it arrived late, or
/// its invocation was held up), it reserves a new one, so sends stay apart.
pub const LATE: Duration = Duration::from_millis(50);

/// How a record is paced by its integration's `delivery.max_per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// No limit (or the job is not delivered now: discarded, not due).
    Free,
    /// Send at this time.
    At(DateTime<Utc>),
    /// The bucket stayed contended: wait a moment and reserve again.
    Contended,
    /// The bucket could not be reached: the record goes back as it is.
    Unavailable,
}

/// The integration of `list` a job is delivered to now, if any: it exists, is
/// enabled and observes the event (else the job is discarded).
fn deliverable<'a>(job: &DeliveryJob, list: &'a [Integration]) -> Option<&'a Integration> {
    list.iter()
        .find(|i| i.id == job.integration_id)
        .filter(|i| i.enabled && i.observes.contains(&job.event.kind))
}

/// `margin` before `at` (or `at` itself, if that is too early to express).
fn before(at: Instant, margin: Duration) -> Instant {
    at.checked_sub(margin).unwrap_or(at)
}

/// The fan-out use case, shared by the Lambda handler and the dev server's poller.
pub struct Fanout {
    integrations: Arc<IntegrationCache>,
    deliverer: Arc<dyn Deliverer>,
    log: Arc<dyn DeliveryLog>,
    queue: Arc<dyn JobQueue>,
    retry: RetryPolicy,
    /// Where the batch's EMF records go (none: not emitted).
    metrics: Option<crate::metrics::MetricsOut>,
    /// The stack named in those records.
    stack: Option<String>,
    auto_disable_after: u32,
    /// The longest one attempt may take.
    attempt_limit: Duration,
    /// What this process last saw of each integration's health: when it last
    /// recorded a success, or that a job failed for good since (the next success is
    /// then recorded whatever the cache says, so the recovery is seen at once).
    marks: std::sync::Mutex<HashMap<Uuid, Mark>>,
    /// The integrations' rate buckets (`delivery.max_per_second`).
    rate: Arc<dyn RateLimiter>,
    /// Where stored payloads are read from (none: their jobs fail for good).
    bodies: Option<Arc<dyn EventBodies>>,
    /// Where the `dataref` URLs of queue messages come from (none: a job whose
    /// `data` a queue message cannot carry fails for good).
    event_data: Option<Arc<crate::event_data::EventData>>,
    /// Where operational events ([`crate::alerts`]) go (none: not emitted).
    alerts: Option<crate::ingest::Ingest>,
    /// The room for stored payloads in flight, in KiB ([`STORED_IN_FLIGHT_BYTES`]).
    stored_room: tokio::sync::Semaphore,
    /// Its size, in KiB.
    stored_room_kib: u32,
}

/// The most bytes of stored payloads (claim-checked events, up to 5 MiB each) the
/// fan-out holds for attempts at once, across the records in flight. Each such
/// attempt holds several times its payload (the bytes read, the payload, a webhook
/// body carrying it twice), so without a bound a batch of large events could hold
/// more than the function's memory. Records past it wait for room, within their
/// attempts' deadline; records with their payload inline never wait.
pub const STORED_IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;

/// Most deliveries of one batch in flight at once: the template's largest batch
/// (`FanoutBatchSize` ≤ 100) is delivered all at once; a larger one (a direct
/// invocation) goes 100 at a time, so its memory stays bounded (each delivery in
/// flight holds a connection and its body).
pub const MAX_IN_FLIGHT: usize = 100;

/// The in-flight places one integration may hold while records of other
/// integrations wait for one: a quarter. With nobody else waiting it may use them
/// all (the places are never left idle).
pub const SHARE_IN_FLIGHT: usize = MAX_IN_FLIGHT / 4;

/// The records of a batch not started yet, grouped by integration, and handed out
/// in turns: a group under its share first, so that while others wait no
/// integration holds more than [`SHARE_IN_FLIGHT`] places.
struct Turns<T> {
    groups: Vec<Group<T>>,
    /// The groups with records waiting, in turn order.
    turn: std::collections::VecDeque<usize>,
}

struct Group<T> {
    waiting: std::collections::VecDeque<T>,
    running: usize,
}

impl<T> Turns<T> {
    fn new(items: impl IntoIterator<Item = (Option<Uuid>, T)>) -> Self {
        let mut index: HashMap<Option<Uuid>, usize> = HashMap::new();
        let mut groups: Vec<Group<T>> = Vec::new();
        for (key, item) in items {
            let g = *index.entry(key).or_insert_with(|| {
                groups.push(Group {
                    waiting: Default::default(),
                    running: 0,
                });
                groups.len() - 1
            });
            groups[g].waiting.push_back(item);
        }
        let turn = (0..groups.len()).collect();
        Self { groups, turn }
    }

    /// The next record to start and its group: the first group in turn under its
    /// share, else (nobody under it waits) the first in turn. Groups at their share
    /// hold a quarter of the places each, so at most four are passed over.
    fn next(&mut self) -> Option<(usize, T)> {
        let pick = (0..self.turn.len())
            .find(|&k| self.groups[self.turn[k]].running < SHARE_IN_FLIGHT)
            .unwrap_or(0);
        let g = self.turn.remove(pick)?;
        let group = &mut self.groups[g];
        let item = group.waiting.pop_front()?;
        group.running += 1;
        if !group.waiting.is_empty() {
            self.turn.push_back(g);
        }
        Some((g, item))
    }

    /// A record of group `g` finished.
    fn finished(&mut self, g: usize) {
        self.groups[g].running = self.groups[g].running.saturating_sub(1);
    }
}

/// What a process last saw of an integration's health ([`Fanout`]'s marks).
enum Mark {
    /// It recorded a success then.
    Succeeded(Instant),
    /// A job failed for good since.
    Failed,
}

/// How often a process records an integration's successes while it is healthy.
pub const SUCCESS_RECORD_INTERVAL: Duration = Duration::from_secs(60);

/// Default of `HERALD_AUTO_DISABLE_AFTER`.
pub const AUTO_DISABLE_AFTER: u32 = 20;

/// What one record came to.
struct RecordOutcome {
    retry: bool,
    entry: Option<LogEntry>,
    sample: Option<Sample>,
    /// A message to send before the record is acknowledged.
    send: Option<Send>,
    /// Sent back to wait for its integration's rate, without an attempt.
    waits: bool,
}

impl RecordOutcome {
    /// The same outcome, its log entry keeping `archive` ([`LogEntry::archive`]).
    fn archiving(mut self, archive: Option<String>) -> Self {
        if let Some(entry) = &mut self.entry {
            entry.archive = archive;
        }
        self
    }

    fn ack() -> Self {
        Self {
            retry: false,
            entry: None,
            sample: None,
            send: None,
            waits: false,
        }
    }

    /// Reported failed: the queue makes it visible again after its visibility timeout.
    fn again() -> Self {
        Self {
            retry: true,
            ..Self::ack()
        }
    }
}

/// A job the batch sends on for one of its records, which it then acknowledges.
struct Send {
    /// The body sent.
    body: String,
    /// To the DLQ (after the last attempt) or back to the queue.
    dead: bool,
    /// When the job is next due: the message is delayed until then (at most
    /// [`MAX_DELAY`], counted when it is sent).
    due: DateTime<Utc>,
    /// Should the send fail: how long the received message is hidden instead, and
    /// reported failed (the visibility-based retry).
    fallback: Duration,
}

/// How early a delayed message may arrive and still be attempted: `DelaySeconds`
/// counts whole seconds.
const EARLY: Duration = Duration::from_secs(1);

/// The longest SQS hides a received message.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// `bytes` in KiB, rounded up (at most `u32::MAX`).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// `to - from`, or zero when `to` is not later.
fn until(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

impl Fanout {
    /// Fan-out over these ports.
    pub fn new(
        integrations: Arc<IntegrationCache>,
        deliverer: Arc<dyn Deliverer>,
        log: Arc<dyn DeliveryLog>,
        queue: Arc<dyn JobQueue>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            integrations,
            deliverer,
            log,
            queue,
            retry,
            metrics: None,
            stack: None,
            auto_disable_after: AUTO_DISABLE_AFTER,
            attempt_limit: ATTEMPT_LIMIT,
            marks: std::sync::Mutex::new(HashMap::new()),
            rate: Arc::new(crate::memory::MemoryRateLimiter::new()),
            bodies: None,
            event_data: None,
            alerts: None,
            stored_room: tokio::sync::Semaphore::new(kib(STORED_IN_FLIGHT_BYTES) as usize),
            stored_room_kib: kib(STORED_IN_FLIGHT_BYTES),
        }
    }

    /// Holds at most `bytes` of stored payloads for attempts at once (default
    /// [`STORED_IN_FLIGHT_BYTES`]).
    pub fn with_stored_in_flight(mut self, bytes: usize) -> Self {
        let room = kib(bytes).max(1);
        self.stored_room = tokio::sync::Semaphore::new(room as usize);
        self.stored_room_kib = room;
        self
    }

    /// Emits Herald's operational events (an integration disabled, failing,
    /// recovered) through `ingest`, to the integrations of its store that observe
    /// them.
    pub fn with_alerts(mut self, ingest: Option<crate::ingest::Ingest>) -> Self {
        self.alerts = ingest;
        self
    }

    /// Reads the payloads of claim-checked jobs ([`crate::job::Stored`]) from
    /// `bodies`.
    pub fn with_bodies(mut self, bodies: Option<Arc<dyn EventBodies>>) -> Self {
        self.bodies = bodies;
        self
    }

    /// Hands queue messages that cannot carry an event's `data` a `dataref` made by
    /// `event_data` ([`crate::event_data`]).
    pub fn with_event_data(
        mut self,
        event_data: Option<Arc<crate::event_data::EventData>>,
    ) -> Self {
        self.event_data = event_data;
        self
    }

    /// Paces rate-limited integrations with `rate` (default: buckets in this
    /// process's memory, which holds the rate only if this process is the only one
    /// delivering; every Lambda instance shares [`crate::aws::rate::DynamoRateLimiter`]).
    pub fn with_rate_limiter(mut self, rate: Arc<dyn RateLimiter>) -> Self {
        self.rate = rate;
        self
    }

    /// Cuts every attempt after `limit` (default [`ATTEMPT_LIMIT`]).
    pub fn with_attempt_limit(mut self, limit: Duration) -> Self {
        self.attempt_limit = limit;
        self
    }

    /// Disables an integration after `n` consecutive failed jobs (0: never).
    pub fn with_auto_disable(mut self, n: u32) -> Self {
        self.auto_disable_after = n;
        self
    }

    /// The health report a delivery calls for, if any: every job that failed for
    /// good, a `410 Gone`, and successes (after failures, else once a minute).
    fn health_report(
        &self,
        integration: &Integration,
        status: JobStatus,
        result: &DeliveryResult,
    ) -> Option<HealthReport> {
        let at = Utc::now();
        let reason = || {
            result
                .error_detail
                .clone()
                .or_else(|| result.status_code.map(|c| format!("HTTP {c}")))
                .unwrap_or_else(|| status.as_str().to_owned())
        };
        match status {
            JobStatus::Delivered => {
                let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
                let (recent, failed_here) = match marks.get(&integration.id) {
                    Some(Mark::Succeeded(t)) => (t.elapsed() < SUCCESS_RECORD_INTERVAL, false),
                    Some(Mark::Failed) => (false, true),
                    None => (false, false),
                };
                let stale = integration.health.last_success_at.is_none_or(|t| {
                    (at - t).to_std().unwrap_or_default() >= SUCCESS_RECORD_INTERVAL
                });
                let after_failures = integration.health.consecutive_failures > 0 || failed_here;
                if (after_failures || stale) && !recent {
                    marks.insert(integration.id, Mark::Succeeded(Instant::now()));
                    Some(HealthReport::Succeeded { at })
                } else {
                    None
                }
            }
            JobStatus::Discarded if result.status_code == Some(410) => Some(HealthReport::Gone {
                at,
                reason: reason(),
            }),
            JobStatus::Discarded | JobStatus::Failed => {
                self.marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(integration.id, Mark::Failed);
                Some(HealthReport::JobFailed {
                    at,
                    disable_after: self.auto_disable_after,
                    reason: reason(),
                })
            }
            JobStatus::Retrying => None,
        }
    }

    /// Records `report`, caused by an attempt at `job`, and announces the change it
    /// made, if any, unless `job` is itself an operational event's (they cause none).
    async fn record_health(
        &self,
        integration: &Integration,
        report: HealthReport,
        job: &DeliveryJob,
    ) {
        match self
            .integrations
            .store()
            .record_health(&integration.store_id, integration.id, &report)
            .await
        {
            Ok(Some(change)) => {
                if change.disabled {
                    tracing::warn!(
                        integration = %integration.id,
                        store = %integration.store_id,
                        reason = change.after.disabled_reason.as_deref().unwrap_or_default(),
                        "integration disabled"
                    );
                }
                if crate::catalog::is_emitted_by_herald(&job.event.kind) {
                    return;
                }
                if let Some(alert) = Alert::of(&change) {
                    self.alert(alert, integration, &change, &report, job).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, integration = %integration.id, "recording the integration's health failed")
            }
        }
    }

    /// Queues operational event `alert` for `integration`'s store. An event that
    /// cannot be queued is logged at ERROR; the health change stands.
    async fn alert(
        &self,
        alert: Alert,
        integration: &Integration,
        change: &HealthChange,
        report: &HealthReport,
        job: &DeliveryJob,
    ) {
        let Some(ingest) = &self.alerts else {
            return;
        };
        let (last_error, gone, at) = match report {
            HealthReport::Succeeded { at } => (None, false, *at),
            HealthReport::JobFailed { at, reason, .. } => (Some(reason.as_str()), false, *at),
            HealthReport::Gone { at, reason } => (Some(reason.as_str()), true, *at),
        };
        let cause = Cause {
            job_id: job.job_id,
            last_error,
            gone,
            at,
        };
        let event = crate::alerts::event(alert, integration, change, &cause);
        match ingest.emit(&integration.store_id, &event).await.status {
            EventStatus::Accepted { jobs } => tracing::info!(
                integration = %integration.id,
                event = alert.key(),
                jobs,
                "operational event queued"
            ),
            other => tracing::error!(
                integration = %integration.id,
                event = alert.key(),
                outcome = ?other,
                "the operational event could not be queued"
            ),
        }
    }

    /// Emits CloudWatch EMF records per batch to stdout (on in Lambda).
    pub fn with_metrics(mut self, on: bool) -> Self {
        self.metrics = on.then_some(crate::metrics::MetricsOut::Stdout);
        self
    }

    /// Names `stack` in the EMF records (their `Stack` dimension).
    pub fn with_stack(mut self, stack: Option<String>) -> Self {
        self.stack = stack;
        self
    }

    /// Emits the EMF records to `out` instead (the bench: a pipe, as Lambda's stdout).
    #[cfg(any(test, feature = "testkit"))]
    pub fn with_metrics_to(mut self, out: crate::metrics::MetricsOut) -> Self {
        self.metrics = Some(out);
        self
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Processes a batch; returns the message ids to retry. `deadline` is when the
    /// invocation ends (Lambda's), if any.
    pub async fn process(&self, records: Vec<QueuedJob>, deadline: Option<Instant>) -> Vec<String> {
        // Each body is parsed once, and each store's integrations are read once for the
        // whole batch, before the records run.
        let parsed: Vec<(QueuedJob, Result<DeliveryJob, String>)> = records
            .into_iter()
            .map(|r| {
                let job = DeliveryJob::parse(&r.body);
                (r, job)
            })
            .collect();
        let stores: Vec<StoreId> = parsed
            .iter()
            .filter_map(|(_, j)| j.as_ref().ok()?.store())
            .collect();
        let lists = self.integrations.snapshot(&stores).await;
        for (store, list) in &lists {
            if let Err(e) = list {
                tracing::error!(error = %e, store = %store, "reading integrations failed; the store's records will be retried");
            }
        }

        let paces = self.pace(&parsed, &lists).await;

        // The records run as futures of this one task, at most MAX_IN_FLIGHT at a time:
        // no task per record, no wakeup across threads to hand a record's result back.
        // A panicking record is caught where it is polled and fails alone.
        let records = parsed.len();
        let mut ids: Vec<Option<String>> = parsed
            .iter()
            .map(|(record, _)| Some(record.message_id.clone()))
            .collect();
        let receipts: Vec<String> = parsed.iter().map(|(r, _)| r.receipt.clone()).collect();
        // Attempts end by this: what follows them still fits before the cutoff.
        let cutoff = deadline.map(|d| before(d, DEADLINE_MARGIN));
        let attempts_end = cutoff.map(|c| before(c, AFTER_ATTEMPT_MARGIN));
        let mut turns = Turns::new(parsed.into_iter().enumerate().map(|(index, (r, job))| {
            let key = job.as_ref().ok().map(|j| j.integration_id);
            (key, (index, r, job))
        }));
        let mut running = FuturesUnordered::new();
        let start_more = |running: &mut FuturesUnordered<_>, turns: &mut Turns<_>| {
            while running.len() < MAX_IN_FLIGHT {
                let Some((group, (index, record, job))) = turns.next() else {
                    break;
                };
                let job: Result<DeliveryJob, String> = job;
                let list = job
                    .as_ref()
                    .ok()
                    .and_then(|j| j.store())
                    .and_then(|s| lists.get(&s))
                    .and_then(|l| l.as_ref().ok().cloned());
                let pace = paces.get(index).copied().unwrap_or(Pace::Free);
                running.push(
                    AssertUnwindSafe(self.process_one(record, job, list, pace, attempts_end))
                        .catch_unwind()
                        .map(move |outcome| (index, group, outcome)),
                );
            }
        };
        start_more(&mut running, &mut turns);

        // At most one log entry and sample per record.
        let mut failed = Vec::new();
        let mut sends = Vec::new();
        let mut entries = Vec::with_capacity(ids.len());
        let mut samples = Vec::with_capacity(ids.len());
        let mut waiting = 0;
        loop {
            let next = match cutoff {
                Some(at) => {
                    match tokio::time::timeout_at(at, running.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::warn!(in_flight = running.len(), "invocation deadline near: reporting unfinished records as failures");
                            break;
                        }
                    }
                }
                None => running.next().await,
            };
            let Some((index, group, outcome)) = next else {
                break;
            };
            turns.finished(group);
            let message_id = ids[index].take().unwrap_or_default();
            match outcome {
                Ok(outcome) => {
                    waiting += usize::from(outcome.waits);
                    if outcome.retry {
                        failed.push(message_id);
                    } else if let Some(send) = outcome.send {
                        sends.push((message_id, receipts[index].clone(), send));
                    }
                    entries.extend(outcome.entry);
                    samples.extend(outcome.sample);
                }
                Err(_) => {
                    tracing::error!(message_id = %message_id, panicked = true, "a record's delivery panicked; it will be retried");
                    failed.push(message_id);
                }
            }
            start_more(&mut running, &mut turns);
        }
        // Whatever has not finished (the deadline came) is retried.
        drop(running);
        failed.extend(ids.into_iter().flatten());

        if let Some(out) = self.metrics.as_ref().filter(|_| !samples.is_empty()) {
            crate::metrics::emit(
                out,
                self.stack.as_deref(),
                &samples,
                Utc::now().timestamp_millis(),
            );
        }
        // The answer must leave before the invocation ends: sends and a log write
        // still running then are given up. A send given up leaves its record reported
        // failed (retried, at least once); a log write given up loses the batch's
        // log, never its deliveries, so a slow log never makes Lambda retry a
        // delivered batch.
        let answer_by = deadline.map(|at| before(at, ANSWER_MARGIN));
        let sent = self.send_on(sends, answer_by);
        let write = async {
            if entries.is_empty() {
                return;
            }
            let write = self.log.record(&entries);
            let written = match answer_by {
                Some(at) => tokio::time::timeout_at(at, write).await.ok(),
                None => Some(write.await),
            };
            match written {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::error!(error = %e, attempts = entries.len(), "recording the batch's attempts failed")
                }
                None => {
                    tracing::error!(attempts = entries.len(), "the invocation deadline came before the batch's attempts were recorded; they are not in the log")
                }
            }
        };
        let (sent, ()) = futures_util::future::join(sent, write).await;
        summary(
            records,
            &entries,
            &sent,
            failed.len() + sent.failed.len(),
            waiting,
        );
        failed.extend(sent.failed);
        failed
    }

    /// When a job that is not due yet is due: its `not_before`, when that is more
    /// than [`EARLY`] away and within the integration's retry window (a time further
    /// away was not written by a retry and is not waited for).
    fn not_due(
        &self,
        job: &DeliveryJob,
        integration: &Integration,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let retry = self.retry.stretched_to(integration.delivery.retry_window());
        job.not_before.filter(|&due| {
            let wait = until(now, due);
            wait > EARLY && wait <= retry.last_attempt_by
        })
    }

    /// The pace of each record: for the jobs of rate-limited integrations that are
    /// delivered now, their send times: the one a job carries (unless it is more than
    /// [`LATE`] past), else one reserved now, with one reservation per integration
    /// for all its jobs of the batch, in the batch's order.
    async fn pace(
        &self,
        parsed: &[(QueuedJob, Result<DeliveryJob, String>)],
        lists: &HashMap<StoreId, crate::error::Result<Arc<Vec<Integration>>>>,
    ) -> Vec<Pace> {
        let now = Utc::now();
        let mut paces = vec![Pace::Free; parsed.len()];
        // (store, integration, rate) → the records that need a send time
        let mut wanted: Vec<((StoreId, Uuid, u32), Vec<usize>)> = Vec::new();
        for (index, (_, job)) in parsed.iter().enumerate() {
            let Ok(job) = job else { continue };
            let Some(store) = job.store() else { continue };
            let Some(Ok(list)) = lists.get(&store) else {
                continue;
            };
            let Some(integration) = deliverable(job, list) else {
                continue;
            };
            let Some(rate) = integration.delivery.max_per_second else {
                continue;
            };
            if self.not_due(job, integration, now).is_some() {
                continue;
            }
            match job.slot.filter(|&slot| until(slot, now) <= LATE) {
                Some(slot) => paces[index] = Pace::At(slot),
                None => {
                    let key = (store, integration.id, rate);
                    match wanted.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, records)) => records.push(index),
                        None => wanted.push((key, vec![index])),
                    }
                }
            }
        }
        let reservations = wanted.iter().map(|((store, id, rate), records)| {
            self.rate.reserve(store, *id, *rate, records.len() as u32)
        });
        let answers = futures_util::future::join_all(reservations).await;
        for (((_, id, _), records), answer) in wanted.iter().zip(answers) {
            match answer {
                Ok(Some(slots)) => {
                    for (k, &index) in records.iter().enumerate() {
                        paces[index] = Pace::At(slots.nth(k as u32));
                    }
                }
                Ok(None) => {
                    tracing::info!(integration = %id, jobs = records.len(), "the rate bucket stayed contended; the jobs wait a moment");
                    for &index in records {
                        paces[index] = Pace::Contended;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, integration = %id, jobs = records.len(), "reserving send times failed; the records will be retried");
                    for &index in records {
                        paces[index] = Pace::Unavailable;
                    }
                }
            }
        }
        paces
    }

    /// The record's job sent back to the queue to wait until `due`, carrying `slot`
    /// (its send time, if it has one): acknowledged, no attempt made.
    fn wait(
        &self,
        job: &DeliveryJob,
        slot: Option<DateTime<Utc>>,
        due: DateTime<Utc>,
    ) -> RecordOutcome {
        let body = DeliveryJob {
            slot,
            not_before: None,
            ..job.clone()
        }
        .to_body();
        RecordOutcome {
            send: Some(Send {
                body,
                dead: false,
                due,
                fallback: until(Utc::now(), due).min(MAX_VISIBILITY),
            }),
            waits: true,
            ..RecordOutcome::ack()
        }
    }

    /// Holds a rate-limited record until its send time, or sends it back to wait
    /// (`Some`). `None`: deliver it now.
    async fn wait_for_turn(
        &self,
        job: &DeliveryJob,
        pace: Pace,
        attempts_end: Option<Instant>,
    ) -> Option<RecordOutcome> {
        let slot = match pace {
            Pace::Free => return None,
            Pace::Unavailable => return Some(RecordOutcome::again()),
            Pace::Contended => {
                let wait = Duration::from_millis(1000 + fastrand::u64(..2000));
                return Some(self.wait(job, None, Utc::now() + wait));
            }
            Pace::At(slot) => slot,
        };
        let now = Utc::now();
        let wait = until(now, slot);
        // Time for the attempt after the wait, before the invocation's end.
        let room = attempts_end.map(|end| end.saturating_duration_since(Instant::now()));
        if wait > HOLD || room.is_some_and(|room| wait + Duration::from_secs(1) > room) {
            // Back to the queue, to arrive at least LEAD before its time.
            let ahead = Duration::from_secs(wait.saturating_sub(LEAD).as_secs());
            let due = now + chrono::Duration::from_std(ahead).unwrap_or_default();
            return Some(self.wait(job, Some(slot), due));
        }
        tokio::time::sleep(wait).await;
        if until(slot, Utc::now()) > LATE {
            tracing::info!(job = %job.job_id, "held up past its send time; the job reserves another");
            return Some(self.wait(job, None, Utc::now()));
        }
        None
    }

    /// Sends on the batch's retries (delayed) and dead letters, in batches SQS takes,
    /// by `answer_by`. A record whose send failed (or was not done by then) is
    /// hidden for its fallback, if time is left, and named in `failed`.
    async fn send_on(
        &self,
        sends: Vec<(String, String, Send)>,
        answer_by: Option<Instant>,
    ) -> Sent {
        let mut sent = Sent::default();
        if sends.is_empty() {
            return sent;
        }
        let now = Utc::now();
        let mut queued = Vec::new();
        let mut dead = Vec::new();
        for (i, (_, _, send)) in sends.iter().enumerate() {
            let job = OutgoingJob {
                entry_id: i.to_string(),
                body: send.body.clone(),
                delay: until(now, send.due).min(MAX_DELAY),
            };
            if send.dead {
                dead.push(job);
            } else {
                queued.push(job);
            }
        }
        let calls = crate::queue::batches(&queued)
            .into_iter()
            .map(|b| (false, b))
            .chain(crate::queue::batches(&dead).into_iter().map(|b| (true, b)))
            .map(|(to_dlq, batch)| async move {
                let result = if to_dlq {
                    self.queue.dead_letter(batch).await
                } else {
                    self.queue.send_batch(batch).await
                };
                (batch, result)
            });
        let all = futures_util::future::join_all(calls);
        let results = match answer_by {
            Some(at) => tokio::time::timeout_at(at, all).await.ok(),
            None => Some(all.await),
        };
        let mut ok = vec![false; sends.len()];
        let len = ok.len();
        let index = |id: &str| id.parse::<usize>().ok().filter(|&i| i < len);
        for (batch, result) in results.unwrap_or_default() {
            match result {
                Ok(failures) => {
                    for job in batch {
                        if let Some(i) = index(&job.entry_id) {
                            ok[i] = true;
                        }
                    }
                    for f in failures {
                        tracing::warn!(reason = %f.reason, "sending a job on failed; its record is retried where it is");
                        if let Some(i) = index(&f.entry_id) {
                            ok[i] = false;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "sending jobs on failed; their records are retried where they are")
                }
            }
        }
        let mut hides = Vec::new();
        for ((message_id, receipt, send), ok) in sends.into_iter().zip(ok) {
            match (ok, send.dead) {
                (true, true) => sent.dead_lettered += 1,
                (true, false) => sent.resent += 1,
                (false, _) => {
                    sent.failed.push(message_id.clone());
                    hides.push(async move {
                        self.hide(&message_id, &receipt, send.fallback).await;
                    });
                }
            }
        }
        // Out of time, a record is reported failed all the same, unhidden: visible
        // again after the queue's visibility timeout.
        let hides = futures_util::future::join_all(hides);
        match answer_by {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, hides).await;
            }
            None => {
                hides.await;
            }
        }
        sent
    }

    /// One record: `job` is its parsed body; `list` its store's integrations (`None`
    /// when they could not be read, so the record is retried); `attempts_end` the
    /// latest an attempt may run to (the invocation's end, less what follows it).
    async fn process_one(
        &self,
        record: QueuedJob,
        job: Result<DeliveryJob, String>,
        list: Option<Arc<Vec<Integration>>>,
        pace: Pace,
        attempts_end: Option<Instant>,
    ) -> RecordOutcome {
        let job = match job {
            Ok(job) => job,
            Err(reason) => {
                tracing::error!(message_id = %record.message_id, %reason, "malformed job acknowledged without delivery");
                return RecordOutcome::ack();
            }
        };
        // The job's own attempt number: a receive count above 1 means an earlier
        // receive did not finish (a crash, a throttled or cut invocation) or could not
        // send the job on, and must not use up an attempt.
        let attempt = job.attempt;
        let Some(list) = list else {
            tracing::error!(job = %job.job_id, "the store's integrations could not be read; will retry");
            return RecordOutcome::again();
        };
        let Some(integration) = list.iter().find(|i| i.id == job.integration_id) else {
            tracing::warn!(job = %job.job_id, integration = %job.integration_id, "integration deleted; job discarded");
            return self.discarded(&job, attempt, "the integration was deleted");
        };
        // A job's first attempt keeps its body in the log, for replay (the archive).
        let archive = |record: QueuedJob| (attempt == 1).then_some(record.body);
        if !integration.enabled {
            let entry = self.discarded(&job, attempt, "the integration is disabled");
            return entry.archiving(archive(record));
        }
        if !integration.observes.contains(&job.event.kind) {
            let entry = self.discarded(
                &job,
                attempt,
                "the integration no longer observes this event",
            );
            return entry.archiving(archive(record));
        }

        // The schedule of this integration: the default one, or stretched to its
        // `delivery.retry_window_minutes`.
        let retry = self.retry.stretched_to(integration.delivery.retry_window());

        // Not due yet (a wait longer than one message's delay): sent on as it is,
        // without an attempt. A time further away than the whole retry window was not
        // written by a retry and is not waited for.
        let now = Utc::now();
        if let Some(due) = self.not_due(&job, integration, now) {
            return RecordOutcome {
                send: Some(Send {
                    body: record.body,
                    dead: false,
                    due,
                    fallback: until(now, due).min(MAX_VISIBILITY),
                }),
                ..RecordOutcome::ack()
            };
        }

        // A rate-limited integration's job waits for its send time.
        if let Some(waits) = self.wait_for_turn(&job, pace, attempts_end).await {
            return waits;
        }

        // A stored payload is fetched for the attempt (and its `data` given a URL),
        // once there is room for it; the room is held until the attempt is done.
        let Ok(_room) = self.room_for(&job, attempts_end).await else {
            return RecordOutcome::again();
        };
        let job = match self.fetch(job, integration, attempt).await {
            Ok(job) => job,
            Err(outcome) => return *outcome,
        };

        let Some(result) = self.attempt(integration, &job, attempt, attempts_end).await else {
            // Too late to start: no attempt was made, the record goes back as it was.
            return RecordOutcome::again();
        };
        let (status, send) = match &result.outcome {
            Outcome::Delivered => (JobStatus::Delivered, None),
            Outcome::Permanent => (JobStatus::Discarded, None),
            Outcome::Retryable { retry_after } => {
                // The budget counts from when the first attempt was queued, across
                // every send of the job; for a first attempt that waited for its
                // integration's rate, from its send time (the wait is not retrying).
                let first_queued_at = job.first_queued_at.or(job.slot).unwrap_or(record.sent_at);
                let now = Utc::now();
                let elapsed = until(first_queued_at, now);
                match retry.next_delay(attempt, elapsed, *retry_after, fastrand::f64()) {
                    Some(delay) => {
                        let due = now
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
                        let next = DeliveryJob {
                            attempt: attempt + 1,
                            first_queued_at: Some(first_queued_at),
                            not_before: (delay > MAX_DELAY).then_some(due),
                            slot: None,
                            ..job.clone()
                        };
                        let send = Send {
                            body: next.to_body(),
                            dead: false,
                            due,
                            fallback: delay.min(MAX_VISIBILITY),
                        };
                        (JobStatus::Retrying, Some(send))
                    }
                    None => {
                        // The last attempt: the job waits in the DLQ, with its attempts.
                        let last = DeliveryJob {
                            first_queued_at: Some(first_queued_at),
                            not_before: None,
                            slot: None,
                            ..job.clone()
                        };
                        let send = Send {
                            body: last.to_body(),
                            dead: true,
                            due: now,
                            // Should the DLQ not take it, the last attempt is made
                            // again after the schedule's longest wait.
                            fallback: retry.delays.iter().max().copied().unwrap_or_default(),
                        };
                        (JobStatus::Failed, Some(send))
                    }
                }
            }
        };
        // A line per attempt that did not deliver; a delivered one only at DEBUG: the
        // batch's summary line counts it and the attempt log holds it, and a JSON line
        // per delivery costs its formatting, a write to stdout that wakes Lambda's log
        // reader, and its CloudWatch Logs ingestion.
        macro_rules! attempt_line {
            ($level:ident) => {
                tracing::$level!(
                    job = %job.job_id,
                    integration = %integration.id,
                    attempt,
                    status = status.as_str(),
                    status_code = result.status_code,
                    elapsed_ms = result.duration.as_millis() as u64,
                    error = result.error_detail.as_deref(),
                    "delivery attempt"
                )
            };
        }
        if status == JobStatus::Delivered {
            attempt_line!(debug);
        } else {
            attempt_line!(info);
        }
        if let Some(report) = self.health_report(integration, status, &result) {
            self.record_health(integration, report, &job).await;
        }
        let entry = LogEntry {
            archive: archive(record),
            ..log_entry(&job, attempt, status, &result)
        };
        let lag_ms = (status == JobStatus::Delivered).then(|| {
            (Utc::now() - job.event.occurred_at)
                .num_milliseconds()
                .max(0) as f64
        });
        RecordOutcome {
            retry: false,
            waits: false,
            entry: Some(entry),
            sample: Some(Sample {
                target: integration.target.kind().as_str(),
                outcome: status.as_str(),
                lag_ms,
            }),
            send,
        }
    }

    /// One attempt, ended by its deadline: [`Fanout::with_attempt_limit`] from now, or
    /// `attempts_end` if that comes first. An attempt cut there is a retryable
    /// failure that says why; whatever it had open (its connection, a connection
    /// being made) is dropped with it. `None` when `attempts_end` has passed already.
    async fn attempt(
        &self,
        integration: &Integration,
        job: &DeliveryJob,
        attempt: u32,
        attempts_end: Option<Instant>,
    ) -> Option<DeliveryResult> {
        let started = Instant::now();
        let limit = started + self.attempt_limit;
        let until = match attempts_end {
            Some(end) if end <= started => return None,
            Some(end) => end.min(limit),
            None => limit,
        };
        let delivery = self.deliverer.deliver(integration, job, attempt);
        Some(match tokio::time::timeout_at(until, delivery).await {
            Ok(result) => result,
            Err(_) => DeliveryResult::failed(
                Outcome::Retryable { retry_after: None },
                if until < limit {
                    "cut short: the invocation was ending before the attempt finished".to_owned()
                } else {
                    format!(
                        "cut short: the attempt did not finish within {} s",
                        self.attempt_limit.as_secs_f64()
                    )
                },
                started.elapsed(),
            ),
        })
    }

    /// Room for the job's stored payload among those in flight ([`STORED_IN_FLIGHT_BYTES`];
    /// one larger than all of it takes all of it), waited for until `until`; none
    /// needed for a job that carries its payload. `Err` when the time came first.
    async fn room_for(
        &self,
        job: &DeliveryJob,
        until: Option<Instant>,
    ) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, ()> {
        let Some(stored) = &job.stored else {
            return Ok(None);
        };
        let wanted = kib(stored.bytes).clamp(1, self.stored_room_kib);
        let room = self.stored_room.acquire_many(wanted);
        let room = match until {
            Some(at) => tokio::time::timeout_at(at, room).await.map_err(|_| ())?,
            None => room.await,
        };
        // The semaphore is never closed.
        room.map(Some).map_err(|_| ())
    }

    /// The job with its stored payload fetched and checked against its SHA-256, and
    /// for a queue target a URL of its `data` when that is stored on its own; the job
    /// as it is when it carries its payload. A payload that is no longer stored (it
    /// expired with the delivery log, or was deleted) or is not the one named fails
    /// the job for good; a store that cannot be reached now sends the record back.
    async fn fetch(
        &self,
        mut job: DeliveryJob,
        integration: &Integration,
        attempt: u32,
    ) -> Result<DeliveryJob, Box<RecordOutcome>> {
        let Some(stored) = job.stored.clone() else {
            return Ok(job);
        };
        let fail = |job: &DeliveryJob, why: String| {
            tracing::error!(job = %job.job_id, integration = %integration.id, store = %job.store_id, reason = %why, "the job's stored payload cannot be delivered; job discarded");
            Err(Box::new(self.discarded(job, attempt, &why)))
        };
        let Some(bodies) = &self.bodies else {
            return fail(
                &job,
                "the event's payload is stored, and this fan-out has no event store (HERALD_EVENT_BUCKET)".into(),
            );
        };
        let payload = match bodies.get(&stored.payload_key(&job.store_id)).await {
            Ok(Some(body)) => match stored.verify(&body) {
                Ok(payload) => payload,
                Err(why) => return fail(&job, why),
            },
            Ok(None) => {
                return fail(
                    &job,
                    "the event's stored payload is gone: it expired with the delivery log's retention, or was deleted".into(),
                )
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(job = %job.job_id, error = %e, "reading the job's stored payload failed; the record will be retried");
                return Err(Box::new(RecordOutcome::again()));
            }
            Err(e) => return fail(&job, format!("reading the event's stored payload failed: {e}")),
        };
        let queue_target = !matches!(integration.target, crate::model::Target::Webhook(_));
        let data_ref = match &stored.data_sha256 {
            Some(sha256) if queue_target => {
                let Some(event_data) = &self.event_data else {
                    return fail(
                        &job,
                        "the event's data is too large for a queue message, and this fan-out cannot make its dataref (HERALD_DATAREF_KEY_ID, HERALD_PUBLIC_URL)".into(),
                    );
                };
                match event_data.link(&job.store_id, sha256, Utc::now()).await {
                    Ok(url) => Some((url, sha256.clone())),
                    Err(e @ crate::error::Error::Config(_)) => {
                        return fail(&job, format!("making the event's dataref failed: {e}"))
                    }
                    // KMS unreachable, throttled or refusing: the record goes back and,
                    // should that last, on to the DLQ, from where it can be replayed.
                    Err(e) => {
                        tracing::warn!(job = %job.job_id, error = %e, "making the dataref of the job's stored data failed; the record will be retried");
                        return Err(Box::new(RecordOutcome::again()));
                    }
                }
            }
            _ => None,
        };
        job.fetched = Some(Arc::new(crate::job::Fetched { payload, data_ref }));
        Ok(job)
    }

    async fn hide(&self, message_id: &str, receipt: &str, delay: Duration) {
        if let Err(e) = self.queue.change_visibility(receipt, delay).await {
            tracing::warn!(error = %e, message_id = %message_id, "visibility change failed; the queue's default applies");
        }
    }

    fn discarded(&self, job: &DeliveryJob, attempt: u32, why: &str) -> RecordOutcome {
        let result = DeliveryResult::failed(Outcome::Permanent, why, Duration::ZERO);
        RecordOutcome {
            entry: Some(log_entry(job, attempt, JobStatus::Discarded, &result)),
            sample: Some(Sample {
                target: "unknown",
                outcome: JobStatus::Discarded.as_str(),
                lag_ms: None,
            }),
            ..RecordOutcome::ack()
        }
    }
}

/// What the batch sent on for its records.
#[derive(Default)]
struct Sent {
    /// Jobs sent again, delayed, for their next attempt (or the next part of a wait).
    resent: usize,
    /// Jobs sent to the DLQ after their last attempt.
    dead_lettered: usize,
    /// Records whose send failed: retried where they are.
    failed: Vec<String>,
}

/// The batch's one INFO line (at most `HERALD_LOG_LINES_PER_SECOND` a second in the
/// dev server, every batch in Lambda): its records, what their attempts came to, how many
/// were sent on (of which `waiting` wait for their integration's rate, without an
/// attempt), and how many go back to the queue as they are.
fn summary(records: usize, entries: &[LogEntry], sent: &Sent, retried: usize, waiting: usize) {
    static LINES: LineQuota = LineQuota::new("batch");
    if !LINES.admit() {
        return;
    }
    let count = |status: JobStatus| entries.iter().filter(|e| e.status == status).count();
    tracing::info!(
        records,
        delivered = count(JobStatus::Delivered),
        retrying = count(JobStatus::Retrying),
        failed = count(JobStatus::Failed),
        discarded = count(JobStatus::Discarded),
        resent = sent.resent,
        dead_lettered = sent.dead_lettered,
        waiting,
        retried,
        "batch done"
    );
}

/// One poller in Lambda's event-source mapping's place, at the template's default batch
/// of 10 (the reliability harness runs a fixed number; the dev server runs
/// [`poll_scaled`]): receives batches from a [`crate::ports::JobSource`], runs them
/// through [`Fanout::process`] with a deadline, and deletes what succeeded. Runs until
/// `shutdown` resolves.
pub async fn poll(
    source: Arc<dyn crate::ports::JobSource>,
    fanout: Arc<Fanout>,
    batch_deadline: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut shutdown = shutdown;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(records) = receive(source.as_ref(), RECEIVE_MAX, &mut shutdown).await else {
            return;
        };
        if !records.is_empty() {
            deliver(source.as_ref(), &fanout, records, batch_deadline).await;
        }
    }
}

/// The longest a poller waits on one receive (SQS's long polling caps it at 20 s).
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// Most records a [`poll`] poller takes at once: SQS's `ReceiveMessage` limit, and the
/// template's default batch of the fan-out function.
const RECEIVE_MAX: usize = 10;

/// Most records a [`poll_scaled`] poller takes at once: as many as the fan-out function
/// takes in one invocation ([`MAX_IN_FLIGHT`]). An SQS receive gives at most 10; the
/// embedded queue gives what waits.
const SCALED_RECEIVE_MAX: usize = MAX_IN_FLIGHT;

/// How long every poller may stay busy, none coming back to the queue, before
/// [`poll_scaled`] starts one more.
pub const SCALE_OUT_AFTER: Duration = Duration::from_millis(1);

/// A batch from `source` (empty when none came within [`RECEIVE_WAIT`] or the
/// receive failed, then after a pause), or `None` once `shutdown` is signalled.
async fn receive(
    source: &dyn crate::ports::JobSource,
    max: usize,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Vec<QueuedJob>> {
    let received = tokio::select! {
        r = source.receive(max, RECEIVE_WAIT) => r,
        _ = shutdown.changed() => return None,
    };
    match received {
        Ok(records) => Some(records),
        Err(e) => {
            tracing::warn!(error = %e, "receiving from the queue failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(Vec::new())
        }
    }
}

/// Runs `records` through `fanout` and deletes from `source` those that succeeded.
async fn deliver(
    source: &dyn crate::ports::JobSource,
    fanout: &Fanout,
    records: Vec<QueuedJob>,
    batch_deadline: Duration,
) {
    let receipts: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.message_id.clone(), r.receipt.clone()))
        .collect();
    let failed: HashSet<String> = fanout
        .process(records, Some(Instant::now() + batch_deadline))
        .await
        .into_iter()
        .collect();
    for (message_id, receipt) in receipts {
        if !failed.contains(&message_id) {
            if let Err(e) = source.delete(&receipt).await {
                tracing::warn!(error = %e, "deleting a delivered message failed; it may be delivered again");
            }
        }
    }
}

/// Pollers that scale with the queue, as Lambda's event-source mapping adds pollers
/// while messages wait. A poller takes what waits (up to `SCALED_RECEIVE_MAX`) as
/// one batch. When every poller has been busy for [`SCALE_OUT_AFTER`], none coming
/// back to the queue meanwhile, one more starts (up to `most`), so a batch held by a
/// slow receiver keeps the others waiting that long at most; one that waited a whole
/// receive for nothing stops while another waits. While the pollers keep up, each comes back
/// within that time and takes what arrived meanwhile: batches grow with the load
/// instead of pollers, and what a batch costs beyond its records is spread over them.
/// A backlog thus forms only when the receivers (or `most` × `SCALED_RECEIVE_MAX`
/// deliveries in flight) set the pace, not the number of pollers. Returns once
/// `shutdown` is signalled and every poller has finished its batch.
pub async fn poll_scaled(
    source: Arc<dyn crate::ports::JobSource>,
    fanout: Arc<Fanout>,
    batch_deadline: Duration,
    most: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (more, mut wanted) = tokio::sync::mpsc::unbounded_channel();
    let crew = Arc::new(Crew {
        waiting: std::sync::atomic::AtomicUsize::new(1),
        running: std::sync::atomic::AtomicUsize::new(1),
        returns: std::sync::atomic::AtomicU64::new(0),
        most: most.max(1),
        more,
    });
    let mut pollers = tokio::task::JoinSet::new();
    let start = |pollers: &mut tokio::task::JoinSet<()>| {
        pollers.spawn(crew_member(
            source.clone(),
            fanout.clone(),
            batch_deadline,
            crew.clone(),
            shutdown.clone(),
        ));
    };
    start(&mut pollers);
    // The pending look at whether one more is needed: when, and how many returns to
    // the queue there had been when every poller was last seen busy.
    let mut check: Option<(tokio::time::Instant, u64)> = None;
    let mut stop = shutdown.clone();
    while !*stop.borrow() {
        let at = check.map(|(at, _)| at);
        tokio::select! {
            Some(seen) = wanted.recv() => {
                check.get_or_insert((tokio::time::Instant::now() + SCALE_OUT_AFTER, seen));
            }
            _ = tokio::time::sleep_until(at.unwrap_or_else(tokio::time::Instant::now)), if at.is_some() => {
                let seen = check.take().map_or(0, |(_, seen)| seen);
                match crew.look(seen) {
                    Look::Start => start(&mut pollers),
                    Look::Again(seen) => {
                        check = Some((tokio::time::Instant::now() + SCALE_OUT_AFTER, seen));
                    }
                    Look::Enough => {}
                }
            }
            Some(_) = pollers.join_next(), if !pollers.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    while pollers.join_next().await.is_some() {}
}

/// The pollers of [`poll_scaled`]: how many run, how many of those wait on the queue
/// (counted before the next one starts, so no two start for one need), and how many
/// times one came back to the queue after a batch.
struct Crew {
    waiting: std::sync::atomic::AtomicUsize,
    running: std::sync::atomic::AtomicUsize,
    returns: std::sync::atomic::AtomicU64,
    most: usize,
    /// Asks [`poll_scaled`] to look, after [`SCALE_OUT_AFTER`], whether one more is
    /// needed: sent with the returns counted when no poller waited.
    more: tokio::sync::mpsc::UnboundedSender<u64>,
}

/// What [`Crew::look`] found.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// Every poller stayed busy: one more is counted in; start it.
    Start,
    /// A poller came back meanwhile, and all are busy again: look again later.
    Again(u64),
    /// A poller waits, or `most` run.
    Enough,
}

impl Crew {
    /// A poller took a batch: if no other waits, [`poll_scaled`] looks again later.
    fn took_a_batch(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.waiting.fetch_sub(1, SeqCst) == 1 {
            let _ = self.more.send(self.returns.load(SeqCst));
        }
    }

    /// [`SCALE_OUT_AFTER`] after no poller waited, with `seen` returns counted then.
    fn look(&self, seen: u64) -> Look {
        use std::sync::atomic::Ordering::SeqCst;
        if self.waiting.load(SeqCst) > 0 {
            return Look::Enough;
        }
        let returns = self.returns.load(SeqCst);
        if returns != seen {
            return Look::Again(returns);
        }
        if self
            .running
            .fetch_update(SeqCst, SeqCst, |n| (n < self.most).then_some(n + 1))
            .is_err()
        {
            return Look::Enough;
        }
        self.waiting.fetch_add(1, SeqCst);
        Look::Start
    }

    /// A poller finished its batch and waits again.
    fn waits_again(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.returns.fetch_add(1, SeqCst);
        self.waiting.fetch_add(1, SeqCst);
    }

    /// A poller waited a whole receive for nothing: it stops, if another waits.
    fn may_stop(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let stops = self
            .waiting
            .fetch_update(SeqCst, SeqCst, |n| (n > 1).then(|| n - 1))
            .is_ok();
        if stops {
            self.running.fetch_sub(1, SeqCst);
        }
        stops
    }
}

async fn crew_member(
    source: Arc<dyn crate::ports::JobSource>,
    fanout: Arc<Fanout>,
    batch_deadline: Duration,
    crew: Arc<Crew>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let Some(records) = receive(source.as_ref(), SCALED_RECEIVE_MAX, &mut shutdown).await
        else {
            return;
        };
        if records.is_empty() {
            if crew.may_stop() {
                return;
            }
            continue;
        }
        crew.took_a_batch();
        deliver(source.as_ref(), &fanout, records, batch_deadline).await;
        crew.waits_again();
    }
}

#[cfg(test)]
mod tests;
