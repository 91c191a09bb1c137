//! Replay. Two sources:
//!
//! - **the DLQ** ([`redrive`], `POST /v2/integrations/{id}/replay` without a body):
//!   moves one integration's dead-lettered jobs back to the internal queue, each at
//!   attempt 1 with a fresh retry budget (the fan-out dead-letters a job with its
//!   attempt number), keeping its id;
//! - **the archive** ([`replay_job`], [`replay_range`]): the delivery log keeps each
//!   job's body from its first attempt for the log's retention
//!   ([`crate::attempt::LogEntry::archive`]); a replay from it queues the same event
//!   for the same integration as a *new* job, with an id (and so a `webhook-id`) of its
//!   own, naming the job it replays (`replay_of`): a receiver that deduplicates by
//!   `webhook-id` does not drop a replay asked for on purpose.
//!
//! The DLQ redrive:
//!
//! A DLQ holds every store's dead letters and SQS cannot select messages, so a replay
//! scans: it receives batches, re-queues and deletes the jobs of the integration being
//! replayed, and keeps every other message hidden only while the scan runs, so that it
//! sees each message once, then makes them visible again at once (visibility 0)
//! instead of leaving them hidden for a visibility timeout, hidden from their own
//! store's replay. Releasing them batch by batch would hand them back to the same scan,
//! which could then never tell it had seen the whole queue.
//!
//! `complete` is claimed only when a receive came back empty *and* no message of the
//! DLQ was in flight once the scan had released its own: a message another replay
//! holds may be one of this integration's. The in-flight count is SQS's approximation;
//! when it lags, a call answers `complete: false` once more than needed, never the
//! other way round for the messages this scan held.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::attempt::JobStatus;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::job::DeliveryJob;
use crate::model::StoreId;
use crate::page::Page;
use crate::ports::{DeadLetters, DeliveryLog, IdempotencyStore, JobQueue, OutgoingJob, Redrive};
use crate::validate::FieldError;

/// How much longer than the scan's remaining time a received message stays hidden:
/// should the process stop before it releases them, they reappear shortly after.
const HIDE_MARGIN: Duration = Duration::from_secs(5);

/// A dead-lettered body's job, if it is one of `integration` in `store`.
fn job_of(body: &str, store: &StoreId, integration: Uuid) -> Option<DeliveryJob> {
    DeliveryJob::parse(body)
        .ok()
        .filter(|j| j.integration_id == integration && j.store_id == store.as_str())
}

/// Moves the dead-lettered jobs of `store`'s `integration` back to the internal queue
/// as new messages, and only those; scans for at most `time` (an API call's budget).
pub async fn redrive(
    dead: &dyn DeadLetters,
    store: &StoreId,
    integration: Uuid,
    time: Duration,
) -> Result<Redrive> {
    let started = Instant::now();
    let mut done = Redrive::default();
    // What this scan hides and must hand back: others' messages, and its own jobs
    // that could not be re-queued (they stay dead-lettered, for a later replay).
    let mut held: Vec<String> = Vec::new();
    let scanned = scan(
        dead,
        store,
        integration,
        started,
        time,
        &mut done,
        &mut held,
    )
    .await;
    let released = dead.release_dead(&held).await;
    let reached_end = scanned?;
    released?;
    done.complete = reached_end && dead.dead_in_flight().await? == 0;
    Ok(done)
}

/// The scan: `Ok(true)` when a receive came back empty within `time`.
async fn scan(
    dead: &dyn DeadLetters,
    store: &StoreId,
    integration: Uuid,
    started: Instant,
    time: Duration,
    done: &mut Redrive,
    held: &mut Vec<String>,
) -> Result<bool> {
    loop {
        let Some(left) = time.checked_sub(started.elapsed()).filter(|l| !l.is_zero()) else {
            return Ok(false);
        };
        let batch = dead.receive_dead(left + HIDE_MARGIN).await?;
        if batch.is_empty() {
            return Ok(true);
        }
        let mut mine = Vec::new();
        for m in batch {
            match job_of(&m.body, store, integration) {
                Some(job) => mine.push((m, job)),
                None => held.push(m.receipt),
            }
        }
        done.scanned += mine.len();
        if mine.is_empty() {
            continue;
        }
        // Each job starts again at attempt 1, with a fresh retry budget.
        let jobs: Vec<OutgoingJob> = mine
            .iter()
            .enumerate()
            .map(|(i, (_, job))| OutgoingJob {
                entry_id: i.to_string(),
                body: job.clone().restarted().to_body(),
                delay: Duration::ZERO,
            })
            .collect();
        let mut failed: Vec<String> = Vec::new();
        for batch in crate::queue::batches(&jobs) {
            failed.extend(dead.requeue(batch).await?.into_iter().map(|f| f.entry_id));
        }
        for (i, (m, _)) in mine.into_iter().enumerate() {
            if failed.contains(&i.to_string()) {
                held.push(m.receipt);
                continue;
            }
            // Re-queued: remove it from the DLQ. Should this fail, the job is in both
            // queues, and a later replay may deliver it once more (at least once).
            dead.delete_dead(&m.receipt).await?;
            done.moved += 1;
        }
    }
}

/// The most jobs one range replay call lists (and replays): a call's work is bounded,
/// whatever the range holds; `next` says where the next call carries on.
pub const RANGE_BATCH: usize = crate::page::MAX_LIMIT;

/// What a replay of one job found.
#[derive(Debug)]
pub enum JobReplay {
    /// Queued as this new job.
    Queued(Box<DeliveryJob>),
    /// The integration has no such job (in this store).
    NotFound,
    /// The job is logged, but its body is not archived (its first attempt was
    /// recorded before the archive, or its record was lost).
    NotArchived,
}

/// The archived job `job` of `store`'s `integration`, checked to be theirs.
async fn archived_jobs(
    log: &dyn DeliveryLog,
    store: &StoreId,
    integration: Uuid,
    jobs: &[Uuid],
) -> Result<Vec<DeliveryJob>> {
    Ok(log
        .archived(store, integration, jobs)
        .await?
        .iter()
        .filter_map(|body| DeliveryJob::parse(body).ok())
        // A second lock: an archive's job is the store's integration's, or nothing.
        .filter(|j| j.integration_id == integration && j.store_id == store.as_str())
        .collect())
}

/// Sends `jobs` to the internal queue; the indexes of those that were not queued.
async fn send(queue: &dyn JobQueue, jobs: &[DeliveryJob]) -> Result<Vec<usize>> {
    let out: Vec<OutgoingJob> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| OutgoingJob {
            entry_id: i.to_string(),
            body: j.to_body(),
            delay: Duration::ZERO,
        })
        .collect();
    let mut failed = Vec::new();
    for batch in crate::queue::batches(&out) {
        for f in queue.send_batch(batch).await? {
            tracing::warn!(entry = %f.entry_id, reason = %f.reason, "a replayed job was not queued");
            failed.extend(f.entry_id.parse::<usize>().ok());
        }
    }
    Ok(failed)
}

fn not_queued(n: usize) -> Error {
    Error::Backend {
        service: "SQS",
        message: format!("{n} replayed job(s) were not queued"),
        retryable: true,
    }
}

/// Queues job `job` of `store`'s `integration` again, from the archive, whatever its
/// state: a new job queued now, naming it in `replay_of`. Each call queues a new job.
pub async fn replay_job(
    log: &dyn DeliveryLog,
    queue: &dyn JobQueue,
    store: &StoreId,
    integration: Uuid,
    job: Uuid,
) -> Result<JobReplay> {
    let one = Page {
        limit: 1,
        offset: 0,
    };
    if log.job_logs(store, integration, job, one).await?.1 == 0 {
        return Ok(JobReplay::NotFound);
    }
    let Some(old) = archived_jobs(log, store, integration, &[job])
        .await?
        .into_iter()
        .find(|j| j.job_id == job)
    else {
        return Ok(JobReplay::NotArchived);
    };
    let new = old.replayed_at(crate::job::to_millis(Utc::now()));
    if !send(queue, std::slice::from_ref(&new)).await?.is_empty() {
        return Err(not_queued(1));
    }
    Ok(JobReplay::Queued(Box::new(new)))
}

/// Where a range replay carries on: the jobs queued before `until`, less the
/// `skip` newest of them (already looked at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Jobs queued before this.
    pub until: DateTime<Utc>,
    /// How many of the newest of them were already looked at.
    pub skip: usize,
}

impl Cursor {
    /// The cursor as the API writes it: `<RFC 3339 time>/<skip>`.
    pub fn to_text(&self) -> String {
        format!(
            "{}/{}",
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.skip
        )
    }

    /// Parses [`Cursor::to_text`].
    pub fn parse(text: &str) -> Option<Self> {
        let (until, skip) = text.rsplit_once('/')?;
        Some(Self {
            until: DateTime::parse_from_rfc3339(until)
                .ok()?
                .with_timezone(&Utc),
            skip: skip
                .parse()
                .ok()
                .filter(|n| *n <= crate::page::MAX_OFFSET)?,
        })
    }
}

/// A range replay's request: the body
/// `{"data": {"type": "replay", "since", "until", "status", "cursor"}}`, every
/// attribute but `type` optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    /// Jobs queued at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Jobs queued before this (absent: before the first call).
    pub until: Option<DateTime<Utc>>,
    /// Only jobs that failed (`"status": "failed"`, the default), or every job
    /// (`"all"`).
    pub failed_only: bool,
    /// Where an earlier call of the same request stopped.
    pub cursor: Option<Cursor>,
}

impl RangeRequest {
    /// Reads a request body; every problem is named with its pointer.
    pub fn parse(body: &Value) -> std::result::Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |pointer: &str, detail: &str| {
            errors.push(FieldError {
                pointer: pointer.to_owned(),
                detail: detail.to_owned(),
            })
        };
        let mut request = Self {
            since: None,
            until: None,
            failed_only: true,
            cursor: None,
        };
        let Some(data) = body.get("data").and_then(Value::as_object) else {
            bad(
                "/data",
                "expected an object: {\"data\": {\"type\": \"replay\", …}}",
            );
            return Err(errors);
        };
        if data.get("type").and_then(Value::as_str) != Some("replay") {
            bad("/data/type", "must be \"replay\"");
        }
        let time = |name: &str, bad: &mut dyn FnMut(&str, &str)| -> Option<DateTime<Utc>> {
            let value = data.get(name)?;
            match value.as_str().map(DateTime::parse_from_rfc3339) {
                Some(Ok(t)) => Some(t.with_timezone(&Utc)),
                _ => {
                    bad(
                        &format!("/data/{name}"),
                        "must be an RFC 3339 time (2026-01-31T12:00:00Z)",
                    );
                    None
                }
            }
        };
        request.since = time("since", &mut bad);
        request.until = time("until", &mut bad);
        if let (Some(since), Some(until)) = (request.since, request.until) {
            if until <= since {
                bad("/data/until", "must be after since");
            }
        }
        match data.get("status").map(|v| v.as_str()) {
            None | Some(Some("failed")) => {}
            Some(Some("all")) => request.failed_only = false,
            Some(_) => bad("/data/status", "must be \"failed\" or \"all\""),
        }
        if let Some(cursor) = data.get("cursor") {
            request.cursor = cursor.as_str().and_then(Cursor::parse);
            if request.cursor.is_none() {
                bad(
                    "/data/cursor",
                    "must be a cursor as an earlier answer's next.cursor gave it",
                );
            }
        }
        for name in data.keys() {
            if !["type", "since", "until", "status", "cursor"].contains(&name.as_str()) {
                bad(
                    &format!("/data/{name}"),
                    "unknown attribute: a replay takes since, until, status and cursor",
                );
            }
        }
        if errors.is_empty() {
            Ok(request)
        } else {
            Err(errors)
        }
    }

    /// What makes two calls "the same request", whose jobs are replayed once: its
    /// range and status as sent (not its cursor), unless the caller names the request
    /// itself (an `Idempotency-Key`).
    pub fn key(&self, idempotency_key: Option<&str>) -> String {
        match idempotency_key {
            Some(key) => format!("key {key}"),
            None => {
                let t = |t: &Option<DateTime<Utc>>| {
                    t.map_or("-".to_owned(), |t| {
                        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    })
                };
                format!(
                    "range {} {} {}",
                    t(&self.since),
                    t(&self.until),
                    if self.failed_only { "failed" } else { "all" }
                )
            }
        }
    }
}

/// What one range replay call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeReplay {
    /// Jobs queued again, as new jobs.
    pub replayed: usize,
    /// Jobs this request had replayed already (an earlier call): not sent again.
    pub already_replayed: usize,
    /// Jobs in the range whose bodies are not archived.
    pub not_archived: usize,
    /// Where the next call carries on; `None` when the range is done.
    pub next: Option<Cursor>,
}

/// The claim of one job's replay by one request (event ids hold no space: a claim
/// of this form is no event's).
fn replay_claim(integration: Uuid, key: &str, job: Uuid) -> String {
    let hash: String = Sha256::digest(key.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("replay {integration} {hash} {job}")
}

/// The ports a range replay uses.
pub struct Archive<'a> {
    /// Where the jobs and their bodies are read.
    pub log: &'a dyn DeliveryLog,
    /// Where the replays go.
    pub queue: &'a dyn JobQueue,
    /// Which jobs a request has replayed already.
    pub claims: &'a dyn IdempotencyStore,
    /// How long a request remembers the jobs it replayed.
    pub ttl: Duration,
}

/// Replays, from the archive, the jobs of `store`'s `integration` in `request`'s
/// range (at most [`RANGE_BATCH`] a call, newest first), each once per request
/// (`key`, [`RangeRequest::key`]): a job's replay is a claim of the request and the
/// job, taken before it is queued, whose first time is the new job's queue time (and
/// so its id). A call that failed to queue some gives their claims back, and the
/// same request queues them again with the same ids. Jobs that are themselves
/// replays are not replayed by a range (a range replayed twice would otherwise send
/// its own replays); replay one by its id.
pub async fn replay_range(
    ports: &Archive<'_>,
    store: &StoreId,
    integration: Uuid,
    request: &RangeRequest,
    key: &str,
) -> Result<RangeReplay> {
    let cursor = request.cursor.unwrap_or(Cursor {
        until: request.until.unwrap_or_else(Utc::now),
        skip: 0,
    });
    let filter = Filter {
        status: request.failed_only.then_some(JobStatus::Failed),
        since: request.since,
        until: Some(cursor.until),
        ..Filter::default()
    };
    let page = Page {
        limit: RANGE_BATCH,
        offset: cursor.skip,
    };
    let listed = ports
        .log
        .integration_jobs(store, integration, &filter, page)
        .await?;
    let mut done = RangeReplay {
        next: next_cursor(&listed, cursor),
        ..RangeReplay::default()
    };
    let ids: Vec<Uuid> = listed
        .items
        .iter()
        .filter(|j| j.replay_of.is_none())
        .map(|j| j.job_id)
        .collect();
    if ids.is_empty() {
        return Ok(done);
    }
    let archived = archived_jobs(ports.log, store, integration, &ids).await?;
    done.not_archived = ids.len() - archived.len();
    let claims: Vec<(StoreId, String)> = archived
        .iter()
        .map(|j| (store.clone(), replay_claim(integration, key, j.job_id)))
        .collect();
    let taken = ports.claims.take_all(&claims, ports.ttl).await;
    let mut new = Vec::new();
    let mut held = Vec::new();
    let mut failure = None;
    for ((old, claim), taken) in archived.into_iter().zip(&claims).zip(taken) {
        match taken {
            Ok(Some(at)) => {
                new.push(old.replayed_at(at));
                held.push(claim.1.clone());
            }
            Ok(None) => done.already_replayed += 1,
            Err(e) => failure = Some(e),
        }
    }
    let unsent = match failure {
        Some(e) => Err(e),
        None => send(ports.queue, &new).await,
    };
    // What was not queued is given back: the same request queues it again.
    let give_back: Vec<usize> = match &unsent {
        Ok(failed) => failed.clone(),
        Err(_) => (0..held.len()).collect(),
    };
    for i in &give_back {
        if let Some(claim) = held.get(*i) {
            ports.claims.release(store, claim).await?;
        }
    }
    if !unsent?.is_empty() {
        return Err(not_queued(give_back.len()));
    }
    done.replayed = new.len();
    Ok(done)
}

/// Where the call after one that listed `listed` from `cursor` carries on: past the
/// jobs it listed, or past where its read budget stopped it; `None` when it saw the
/// whole range. Jobs sort by their queue time (ms) and then id, newest first, and
/// many may share a millisecond: the next call lists from the end of the last job's
/// millisecond, skipping the jobs of that millisecond already listed.
fn next_cursor(
    listed: &crate::filter::Listed<crate::attempt::JobRecord>,
    cursor: Cursor,
) -> Option<Cursor> {
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    let more = listed.counted > cursor.skip + listed.items.len();
    match listed.items.last() {
        Some(last) if more => {
            let t = ms(last.enqueued_at);
            let until = DateTime::from_timestamp_millis(t + 1)?;
            let same = listed
                .items
                .iter()
                .filter(|j| ms(j.enqueued_at) == t)
                .count();
            let before = if until == cursor.until {
                cursor.skip
            } else {
                0
            };
            Some(Cursor {
                until,
                skip: before + same,
            })
        }
        _ => listed.reached.map(|until| Cursor { until, skip: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Event;
    use crate::memory::{MemoryDeliveryLog, MemoryQueue};
    use crate::ports::{JobQueue, JobSource};
    use crate::testkit::store;

    fn job(store: &StoreId, integration: Uuid, n: usize) -> String {
        DeliveryJob::new(
            store,
            integration,
            Event {
                id: format!("evt-{n}"),
                kind: "order.paid".into(),
                occurred_at: chrono::Utc::now(),
                payload: serde_json::json!({"data": {}}).into(),
            },
            chrono::Utc::now(),
        )
        .to_body()
    }

    /// Sends `bodies` through `queue` until they are dead-lettered (its messages die
    /// on their second receive).
    async fn dead_letter(queue: &MemoryQueue, bodies: &[String]) {
        let before = queue.dead_letters().len();
        let entries: Vec<OutgoingJob> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| OutgoingJob {
                entry_id: i.to_string(),
                body: b.clone(),
                delay: Duration::ZERO,
            })
            .collect();
        assert!(queue.send_batch(&entries).await.expect("send").is_empty());
        let first = JobSource::receive(queue, 100, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(first.len(), bodies.len());
        assert!(JobSource::receive(queue, 100, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!(queue.dead_letters().len(), before + bodies.len());
    }

    /// A memory queue (visibility 0, dead after one receive) whose DLQ holds `bodies`.
    async fn dead_lettered(bodies: &[String]) -> MemoryQueue {
        let queue = MemoryQueue::new(Duration::ZERO, 1);
        dead_letter(&queue, bodies).await;
        queue
    }

    /// `n` jobs of `store`'s `integration` queued at `at`, logged with `status` and
    /// archived.
    async fn logged(
        log: &MemoryDeliveryLog,
        store: &StoreId,
        integration: Uuid,
        at: chrono::DateTime<chrono::Utc>,
        ids: std::ops::Range<usize>,
        status: crate::attempt::JobStatus,
    ) {
        let entries: Vec<crate::attempt::LogEntry> = ids
            .map(|n| {
                let job = DeliveryJob::parse(&job(store, integration, n)).expect("job");
                let job = DeliveryJob::new(store, integration, job.event, at);
                let result = crate::attempt::DeliveryResult::failed(
                    crate::attempt::Outcome::Permanent,
                    "x",
                    Duration::ZERO,
                );
                crate::attempt::LogEntry {
                    archive: Some(job.to_body()),
                    ..crate::attempt::log_entry(&job, 1, status, &result)
                }
            })
            .collect();
        log.record(&entries).await.expect("record");
    }

    fn range(body: serde_json::Value) -> RangeRequest {
        RangeRequest::parse(&serde_json::json!({ "data": body })).expect("valid")
    }

    #[tokio::test]
    async fn a_range_replay_carries_on_through_more_jobs_of_one_millisecond_than_a_call_takes() {
        // GIVEN 150 jobs queued in one millisecond, and 5 a second earlier
        use crate::attempt::JobStatus::Delivered;
        let (s, x) = (store("s"), Uuid::now_v7());
        let log = MemoryDeliveryLog::default();
        let t = crate::job::to_millis(chrono::Utc::now()) - chrono::Duration::minutes(1);
        logged(&log, &s, x, t, 0..150, Delivered).await;
        logged(
            &log,
            &s,
            x,
            t - chrono::Duration::seconds(1),
            150..155,
            Delivered,
        )
        .await;
        // (Received messages stay hidden while the test reads them all.)
        let queue = MemoryQueue::new(Duration::from_secs(60), 5);
        let claims = crate::memory::MemoryIdempotency::new();
        let ports = Archive {
            log: &log,
            queue: &queue,
            claims: &claims,
            ttl: Duration::from_secs(60),
        };
        let mut request = range(serde_json::json!({"type": "replay", "status": "all"}));
        let key = request.key(None);

        // WHEN the range is replayed, call after call, each from the last's cursor
        let first = replay_range(&ports, &s, x, &request, &key)
            .await
            .expect("replay");
        request.cursor = first.next;
        let second = replay_range(&ports, &s, x, &request, &key)
            .await
            .expect("replay");

        // THEN the first took 100 and said where to carry on, inside the millisecond;
        // the second took the other 55 and the range was done
        assert_eq!(
            (first.replayed, first.next),
            (
                RANGE_BATCH,
                Some(Cursor {
                    until: t + chrono::Duration::milliseconds(1),
                    skip: RANGE_BATCH
                })
            )
        );
        assert_eq!(
            (second.replayed, second.already_replayed, second.next),
            (55, 0, None)
        );
        // AND the queue holds 155 new jobs, one of each old one
        let mut replayed_of = std::collections::HashSet::new();
        loop {
            let got = JobSource::receive(&queue, 100, Duration::ZERO)
                .await
                .expect("receive");
            if got.is_empty() {
                break;
            }
            for m in got {
                let j = DeliveryJob::parse(&m.body).expect("job");
                assert!(replayed_of.insert(j.replay_of.expect("a replay")));
            }
        }
        assert_eq!(replayed_of.len(), 155);
    }

    #[tokio::test]
    async fn a_range_replay_keeps_to_its_range_and_status_and_another_key_replays_again() {
        // GIVEN failed and delivered jobs, inside and outside a range
        use crate::attempt::JobStatus::{Delivered, Failed};
        let (s, x) = (store("s"), Uuid::now_v7());
        let log = MemoryDeliveryLog::default();
        let at = |m: i64| {
            chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
                .expect("time")
                .with_timezone(&chrono::Utc)
                + chrono::Duration::minutes(m)
        };
        logged(&log, &s, x, at(0), 0..2, Failed).await;
        logged(&log, &s, x, at(1), 2..3, Delivered).await;
        logged(&log, &s, x, at(-5), 3..4, Failed).await;
        logged(&log, &s, x, at(30), 4..5, Failed).await;
        let queue = MemoryQueue::new(Duration::ZERO, 5);
        let claims = crate::memory::MemoryIdempotency::new();
        let ports = Archive {
            log: &log,
            queue: &queue,
            claims: &claims,
            ttl: Duration::from_secs(60),
        };
        let request = range(serde_json::json!({"type": "replay",
            "since": "2026-03-01T10:00:00Z", "until": "2026-03-01T10:10:00Z"}));

        // WHEN its failed jobs are replayed, again, and again under an Idempotency-Key
        let key = request.key(None);
        let first = replay_range(&ports, &s, x, &request, &key)
            .await
            .expect("replay");
        let again = replay_range(&ports, &s, x, &request, &key)
            .await
            .expect("replay");
        let keyed = request.key(Some("retry-2"));
        let other = replay_range(&ports, &s, x, &request, &keyed)
            .await
            .expect("replay");

        // THEN only the two failed jobs in the range are replayed, once per request
        let counts = |r: &RangeReplay| (r.replayed, r.already_replayed, r.next);
        assert_eq!(counts(&first), (2, 0, None));
        assert_eq!(counts(&again), (0, 2, None));
        assert_eq!(counts(&other), (2, 0, None));
        let got = JobSource::receive(&queue, 100, Duration::ZERO)
            .await
            .expect("receive");
        let mut events: Vec<String> = got
            .iter()
            .map(|m| DeliveryJob::parse(&m.body).expect("job").event.id)
            .collect();
        events.sort();
        assert_eq!(events, ["evt-0", "evt-0", "evt-1", "evt-1"]);
    }

    #[test]
    fn every_problem_of_a_range_replay_body_is_named_with_its_pointer() {
        let pointers = |body: serde_json::Value| -> Vec<String> {
            RangeRequest::parse(&body)
                .expect_err("invalid")
                .into_iter()
                .map(|e| format!("{} {}", e.pointer, e.detail))
                .collect()
        };
        assert_eq!(
            pointers(
                serde_json::json!({"data": {"type": "replays", "since": "yesterday",
                "until": 5, "status": "lost", "cursor": "x", "colour": "red"}})
            ),
            [
                "/data/type must be \"replay\"",
                "/data/since must be an RFC 3339 time (2026-01-31T12:00:00Z)",
                "/data/until must be an RFC 3339 time (2026-01-31T12:00:00Z)",
                "/data/status must be \"failed\" or \"all\"",
                "/data/cursor must be a cursor as an earlier answer's next.cursor gave it",
                "/data/colour unknown attribute: a replay takes since, until, status and cursor",
            ]
        );
        assert_eq!(
            pointers(serde_json::json!({"data": {"type": "replay",
                "since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00+01:00"}})),
            ["/data/until must be after since"]
        );
        assert_eq!(
            pointers(serde_json::json!([1])),
            ["/data expected an object: {\"data\": {\"type\": \"replay\", …}}"]
        );
        let cursor = Cursor {
            until: chrono::DateTime::from_timestamp_millis(1_800_000_000_123).expect("time"),
            skip: 7,
        };
        assert_eq!(Cursor::parse(&cursor.to_text()), Some(cursor));
    }

    #[tokio::test]
    async fn a_replay_moves_its_jobs_counts_only_them_and_leaves_other_stores_dead_letters_visible()
    {
        // GIVEN two stores' dead letters in one DLQ (and one that is not a job)
        let (s, t) = (store("s"), store("t"));
        let (x, z) = (Uuid::now_v7(), Uuid::now_v7());
        let bodies = [
            job(&s, x, 1),
            job(&t, z, 2),
            job(&t, x, 3),
            job(&s, x, 4),
            "not a job".to_owned(),
        ];
        let queue = dead_lettered(&bodies).await;

        // WHEN store s replays x
        let first = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");

        // THEN it moved and counted its two jobs, and nothing it left is in flight:
        // store t's replay, right after, finds its job and is complete
        assert_eq!(
            first,
            Redrive {
                moved: 2,
                scanned: 2,
                complete: true
            }
        );
        assert_eq!(queue.dead_in_flight().await.expect("count"), 0);
        let second = redrive(&queue, &t, z, Duration::from_secs(20))
            .await
            .expect("redrive");
        assert_eq!(
            second,
            Redrive {
                moved: 1,
                scanned: 1,
                complete: true
            }
        );
        assert_eq!(queue.dead_letters(), [bodies[2].clone(), bodies[4].clone()]);
        assert_eq!(queue.len(), 3, "the moved jobs are queued again");
    }

    #[tokio::test]
    async fn a_replay_is_not_complete_while_another_replay_holds_dead_letters() {
        // GIVEN a concurrent replay holding store t's dead letter, and s's dead letter
        let (s, t) = (store("s"), store("t"));
        let (x, z) = (Uuid::now_v7(), Uuid::now_v7());
        let queue = dead_lettered(&[job(&t, z, 1)]).await;
        let other = queue
            .receive_dead(Duration::from_secs(60))
            .await
            .expect("hold");
        assert_eq!(other.len(), 1);
        dead_letter(&queue, &[job(&s, x, 2)]).await;

        // WHEN store s replays x
        let done = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");

        // THEN it moves its job but does not claim to have seen everything; once the
        // other replay lets go, the next call is complete
        assert_eq!(
            done,
            Redrive {
                moved: 1,
                scanned: 1,
                complete: false
            }
        );
        queue
            .release_dead(&[other[0].receipt.clone()])
            .await
            .expect("release");
        let again = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");
        assert_eq!(
            again,
            Redrive {
                moved: 0,
                scanned: 0,
                complete: true
            }
        );
    }

    #[tokio::test]
    async fn a_replayed_job_starts_again_at_attempt_one_with_a_fresh_budget() {
        // GIVEN a job the fan-out dead-lettered after its sixth attempt
        let s = store("s");
        let x = Uuid::now_v7();
        let mut dead = DeliveryJob::parse(&job(&s, x, 1)).expect("job");
        dead.attempt = 6;
        dead.first_queued_at = Some(chrono::Utc::now());
        let queue = MemoryQueue::new(Duration::ZERO, 1);
        let entry = OutgoingJob {
            entry_id: "0".into(),
            body: dead.to_body(),
            delay: Duration::ZERO,
        };
        assert!(queue.dead_letter(&[entry]).await.expect("dlq").is_empty());

        // WHEN it is replayed
        let done = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");

        // THEN the queue holds it as a new job: attempt 1, its budget from now on
        assert_eq!(done.moved, 1);
        let back = JobSource::receive(&queue, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(back.len(), 1);
        assert_eq!(
            DeliveryJob::parse(&back[0].body).expect("job"),
            dead.restarted()
        );
    }

    #[tokio::test]
    async fn jobs_that_could_not_be_requeued_stay_dead_lettered_and_visible() {
        let s = store("s");
        let x = Uuid::now_v7();
        let queue = dead_lettered(&[job(&s, x, 1), job(&s, x, 2)]).await;
        queue.fail_next_sends(1);
        let done = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");
        assert_eq!(
            done,
            Redrive {
                moved: 1,
                scanned: 2,
                complete: true
            }
        );
        assert_eq!(queue.dead_letters().len(), 1);
        assert_eq!(queue.dead_in_flight().await.expect("count"), 0);
    }
}
