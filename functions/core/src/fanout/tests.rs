//! The partial-batch contract, with the embedded queue and a scripted deliverer
//! (the webhook deliverer itself is tested against a real HTTP server elsewhere).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::*;
use crate::attempt::{Attempt, JobRecord};
use crate::filter::{Filter, Listed};
use crate::memory::{MemoryDeliveryLog, MemoryQueue};
use crate::model::Integration;
use crate::page::Page;
use crate::ports::{IntegrationStore, JobSource, OutgoingJob};
use crate::testkit::{job_for, seeded, store, webhook, Captured, Counting};

/// Behaves by the integration's name: `ok`, `fail` (500), `gone` (refused), `slow`
/// (sleeps a minute), `boom` (panics).
struct Scripted;

#[async_trait]
impl Deliverer for Scripted {
    async fn deliver(
        &self,
        integration: &Integration,
        _job: &DeliveryJob,
        _attempt: u32,
    ) -> DeliveryResult {
        let ok = DeliveryResult {
            outcome: Outcome::Delivered,
            status_code: Some(200),
            body: "ok".into(),
            error_detail: None,
            duration: Duration::from_millis(1),
        };
        match integration.name.as_str() {
            "ok" => ok,
            "fail" => DeliveryResult {
                outcome: Outcome::Retryable { retry_after: None },
                status_code: Some(500),
                body: "oops".into(),
                error_detail: Some("the webhook answered 500".into()),
                duration: Duration::from_millis(1),
            },
            "gone" => DeliveryResult::failed(Outcome::Permanent, "refused", Duration::ZERO),
            "gone410" => DeliveryResult {
                outcome: Outcome::Permanent,
                status_code: Some(410),
                body: String::new(),
                error_detail: Some("the webhook answered 410 Gone".into()),
                duration: Duration::from_millis(1),
            },
            "slow" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                ok
            }
            _ => panic!("scripted panic"),
        }
    }
}

struct World {
    fanout: Arc<Fanout>,
    queue: Arc<MemoryQueue>,
    log: Arc<MemoryDeliveryLog>,
}

async fn world(integrations: &[&Integration]) -> World {
    let log = Arc::new(MemoryDeliveryLog::default());
    let (fanout, queue) = world_logging_to(integrations, log.clone()).await;
    World { fanout, queue, log }
}

/// The fan-out (scripted deliverer, embedded queue) recording into `log`.
async fn world_logging_to(
    integrations: &[&Integration],
    log: Arc<dyn DeliveryLog>,
) -> (Arc<Fanout>, Arc<MemoryQueue>) {
    let store = seeded(integrations).await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(Scripted),
        log,
        queue.clone(),
        RetryPolicy::default(),
    ));
    (fanout, queue)
}

/// Queues the bodies and receives them back as one batch (message id per body).
async fn batch(queue: &MemoryQueue, bodies: Vec<String>) -> Vec<QueuedJob> {
    let entries: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| OutgoingJob {
            entry_id: i.to_string(),
            body,
            delay: Duration::ZERO,
        })
        .collect();
    for batch in crate::queue::batches(&entries) {
        assert!(queue.send_batch(batch).await.expect("send").is_empty());
    }
    queue.receive(10, Duration::ZERO).await.expect("receive")
}

/// The log of `i`'s attempts, newest first (the first page).
async fn logs_of(log: &dyn DeliveryLog, i: &Integration) -> Listed<Attempt> {
    log.integration_logs(&i.store_id, i.id, &Filter::default(), Page::default())
        .await
        .expect("logs")
}

fn id_of(records: &[QueuedJob], body: &str) -> String {
    records
        .iter()
        .find(|r| r.body == body)
        .expect("record")
        .message_id
        .clone()
}

#[tokio::test]
async fn only_records_that_go_back_as_they_are_are_reported_and_none_on_full_success() {
    // GIVEN a batch of a deliverable job and a failing one whose retry cannot be sent
    let ok = webhook("ok", "s", &["order.paid"], true);
    let fail = webhook("fail", "s", &["order.paid"], true);
    let w = world(&[&ok, &fail]).await;
    let (good, bad) = (job_for(&ok).to_body(), job_for(&fail).to_body());
    let records = batch(&w.queue, vec![good.clone(), bad.clone()]).await;
    w.queue.fail_next_sends(1);
    // THEN only the failing one is reported
    let failed = w.fanout.process(records.clone(), None).await;
    assert_eq!(failed, vec![id_of(&records, &bad)]);

    let records = batch(&w.queue, vec![job_for(&ok).to_body()]).await;
    assert!(w.fanout.process(records, None).await.is_empty());
}

#[tokio::test]
async fn a_panicking_record_fails_alone() {
    let ok = webhook("ok", "s", &["order.paid"], true);
    let boom = webhook("boom", "s", &["order.paid"], true);
    let w = world(&[&ok, &boom]).await;
    let bad = job_for(&boom).to_body();
    let records = batch(&w.queue, vec![job_for(&ok).to_body(), bad.clone()]).await;
    assert_eq!(
        w.fanout.process(records.clone(), None).await,
        vec![id_of(&records, &bad)]
    );
    let logs = w
        .log
        .store_logs(&store("s"), &Filter::default(), Page::default())
        .await
        .expect("logs")
        .items;
    assert_eq!(logs.len(), 1, "the delivered sibling is recorded");
    assert!(logs[0].succeeded);
}

#[tokio::test]
async fn malformed_deleted_disabled_and_refused_jobs_are_acknowledged_not_retried() {
    let ok = webhook("ok", "s", &["order.paid"], true);
    let disabled = webhook("ok", "s", &["order.paid"], false);
    let refused = webhook("gone", "s", &["order.paid"], true);
    let deleted = webhook("ok", "s", &["order.paid"], true);
    let w = world(&[&ok, &disabled, &refused]).await;
    let records = batch(
        &w.queue,
        vec![
            "not json at all".into(),
            "{\"v\":1}".into(),
            job_for(&disabled).to_body(),
            job_for(&refused).to_body(),
            job_for(&deleted).to_body(),
        ],
    )
    .await;
    assert!(w.fanout.process(records, None).await.is_empty());
    let Listed {
        items: logs,
        counted: total,
        ..
    } = w
        .log
        .store_logs(&store("s"), &Filter::default(), Page::default())
        .await
        .expect("logs");
    assert_eq!(total, 3, "disabled, refused and deleted are recorded");
    let mut details: Vec<_> = logs
        .iter()
        .map(|l| l.error_detail.clone().unwrap_or_default())
        .collect();
    details.sort();
    assert_eq!(
        details,
        vec![
            "refused",
            "the integration is disabled",
            "the integration was deleted"
        ]
    );
    assert!(logs.iter().all(|l| !l.succeeded));
}

/// The fan-out (scripted deliverer) over an embedded queue that keeps every batch
/// sent to it, with `retry`, recording into the returned log.
async fn recorded_world(
    integrations: &[&Integration],
    retry: RetryPolicy,
) -> (
    Arc<Fanout>,
    Arc<crate::testkit::Recording>,
    Arc<MemoryDeliveryLog>,
) {
    let store_ = seeded(integrations).await;
    let queue = Arc::new(crate::testkit::Recording::new(Arc::new(MemoryQueue::new(
        Duration::from_secs(60),
        crate::retry::MAX_RECEIVES,
    ))));
    let log = Arc::new(MemoryDeliveryLog::default());
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store_, Duration::ZERO)),
        Arc::new(Scripted),
        log.clone(),
        queue.clone(),
        retry,
    ));
    (fanout, queue, log)
}

/// Runs `records` as the event source does: processes them, then deletes every
/// record not reported failed. Returns the ones reported.
async fn run(fanout: &Fanout, queue: &MemoryQueue, records: Vec<QueuedJob>) -> Vec<String> {
    let receipts: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.message_id.clone(), r.receipt.clone()))
        .collect();
    let failed = fanout.process(records, None).await;
    for (id, receipt) in receipts {
        if !failed.contains(&id) {
            queue.delete(&receipt).await.expect("delete");
        }
    }
    failed
}

/// The job of every message in the queue (visible, delayed or in flight).
fn jobs_in(queue: &MemoryQueue) -> Vec<DeliveryJob> {
    queue
        .peek()
        .iter()
        .map(|b| DeliveryJob::parse(b).expect("job"))
        .collect()
}

#[tokio::test]
async fn a_retried_job_is_acknowledged_and_sent_again_delayed_for_its_next_attempt() {
    // GIVEN a job whose delivery fails on its first attempt
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, log) = recorded_world(&[&fail], RetryPolicy::default()).await;
    let job = job_for(&fail);
    let records = batch(&queue.inner, vec![job.to_body()]).await;
    let first_sent = records[0].sent_at;

    // WHEN the batch runs
    let failed = run(&fanout, &queue.inner, records).await;

    // THEN the record is acknowledged, and the job is queued again for attempt 2,
    // delayed by the first backoff (20 s ± 20 %), counting its budget from its first
    // message: nothing is in flight while it waits
    assert_eq!(failed, Vec::<String>::new());
    let sent = queue.batches();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].dead);
    assert_eq!(sent[0].delays.len(), 1);
    let delay = sent[0].delays[0];
    assert!(
        delay >= Duration::from_secs(15) && delay <= Duration::from_secs(24),
        "{delay:?}"
    );
    assert_eq!(queue.inner.in_flight(), 0);
    assert_eq!(
        jobs_in(&queue.inner),
        vec![DeliveryJob {
            attempt: 2,
            first_queued_at: Some(first_sent),
            ..job
        }]
    );
    assert!(queue
        .inner
        .receive(10, Duration::from_millis(50))
        .await
        .expect("receive")
        .is_empty());
    let jobs = log
        .integration_jobs(&store("s"), fail.id, &Filter::default(), Page::default())
        .await
        .expect("jobs")
        .items;
    assert_eq!(
        (jobs[0].status, jobs[0].attempts, jobs[0].last_status_code),
        (JobStatus::Retrying, 1, Some(500))
    );
}

/// Two attempts in all, the retry at once.
fn two_attempts() -> RetryPolicy {
    RetryPolicy {
        delays: vec![Duration::ZERO],
        last_attempt_by: Duration::from_secs(60),
        jitter: 0.0,
    }
}

#[tokio::test]
async fn after_its_last_attempt_the_fanout_moves_the_job_to_the_dlq_itself() {
    // GIVEN a job that keeps failing, under a schedule of two attempts
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, log) = recorded_world(&[&fail], two_attempts()).await;
    let job = job_for(&fail);
    let first = batch(&queue.inner, vec![job.to_body()]).await;
    let first_sent = first[0].sent_at;

    // WHEN both attempts run
    assert!(run(&fanout, &queue.inner, first).await.is_empty());
    let second = queue
        .inner
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].receive_count, 1, "a new message");
    assert!(run(&fanout, &queue.inner, second).await.is_empty());

    // THEN the second is the last: the job is in the DLQ with its attempts and its
    // first queue time, the queue is empty, and both attempts are logged
    assert!(queue.inner.is_empty());
    let dead: Vec<DeliveryJob> = queue
        .inner
        .dead_letters()
        .iter()
        .map(|b| DeliveryJob::parse(b).expect("job"))
        .collect();
    assert_eq!(
        dead,
        vec![DeliveryJob {
            attempt: 2,
            first_queued_at: Some(first_sent),
            ..job
        }]
    );
    assert_eq!(
        queue.batches().iter().map(|b| b.dead).collect::<Vec<_>>(),
        [false, true]
    );
    let Listed {
        items: logs,
        counted: total,
        ..
    } = logs_of(&*log, &fail).await;
    assert_eq!(total, 2, "one log per attempt");
    assert_eq!((logs[0].attempt, logs[1].attempt), (2, 1), "newest first");
    let jobs = log
        .integration_jobs(&store("s"), fail.id, &Filter::default(), Page::default())
        .await
        .expect("jobs")
        .items;
    assert_eq!((jobs[0].status, jobs[0].attempts), (JobStatus::Failed, 2));
}

#[tokio::test]
async fn a_retry_that_cannot_be_sent_again_is_hidden_for_its_backoff_and_reported() {
    // GIVEN a failing job, and a queue that refuses the next send
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, _) = recorded_world(&[&fail], RetryPolicy::default()).await;
    let records = batch(&queue.inner, vec![job_for(&fail).to_body()]).await;
    let id = records[0].message_id.clone();
    queue.inner.fail_next_sends(1);

    // WHEN the batch runs
    let failed = run(&fanout, &queue.inner, records).await;

    // THEN the job is not lost: its record is reported failed and stays hidden for
    // its backoff, the one message of the queue
    assert_eq!(failed, vec![id]);
    assert_eq!(queue.inner.len(), 1);
    assert_eq!(queue.inner.in_flight(), 1);
    assert!(queue
        .inner
        .receive(10, Duration::from_millis(50))
        .await
        .expect("receive")
        .is_empty());
}

#[tokio::test]
async fn a_last_attempt_the_dlq_does_not_take_goes_back_to_the_queue_and_is_reported() {
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, _) = recorded_world(&[&fail], two_attempts()).await;
    let mut job = job_for(&fail);
    job.attempt = 2;
    let records = batch(&queue.inner, vec![job.to_body()]).await;
    let id = records[0].message_id.clone();
    queue.inner.fail_next_sends(1);
    assert_eq!(run(&fanout, &queue.inner, records).await, vec![id]);
    assert_eq!(queue.inner.len(), 1);
    assert!(queue.inner.dead_letters().is_empty());
}

#[tokio::test]
async fn a_job_received_again_after_a_crash_makes_the_same_attempt_not_the_next() {
    // GIVEN attempt 2 of a job, received for the third time (two receives crashed)
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, log) = recorded_world(&[&fail], RetryPolicy::default()).await;
    let mut job = job_for(&fail);
    job.attempt = 2;
    job.first_queued_at = Some(Utc::now());
    let mut records = batch(&queue.inner, vec![job.to_body()]).await;
    records[0].receive_count = 3;

    // WHEN it fails again
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN it was attempt 2, and the job goes on to attempt 3
    let logs = logs_of(&*log, &fail).await.items;
    assert_eq!(logs.iter().map(|l| l.attempt).collect::<Vec<_>>(), [2]);
    assert_eq!(
        jobs_in(&queue.inner)
            .iter()
            .map(|j| j.attempt)
            .collect::<Vec<_>>(),
        [3]
    );
}

#[tokio::test]
async fn a_body_without_an_attempt_is_attempt_one_and_its_budget_runs_from_its_message() {
    // GIVEN a body as queued before retries were sent again, received a third time
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, log) = recorded_world(&[&fail], RetryPolicy::default()).await;
    let old = r#"{"v":1,"job_id":"JOB","store_id":"s","integration_id":"INT","enqueued_at":"2026-11-22T08:00:01Z","event":{"id":"evt-old","type":"order.paid","occurred_at":"2026-11-22T08:00:00Z","payload":{"data":{"id":"o-1"}}}}"#
        .replace("JOB", &crate::job::legacy_job_id("evt-old", fail.id).to_string())
        .replace("INT", &fail.id.to_string());
    let mut records = batch(&queue.inner, vec![old]).await;
    records[0].receive_count = 3;
    let sent_at = records[0].sent_at;

    // WHEN it fails
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN it was attempt 1, and attempt 2 counts its budget from that message
    let logs = logs_of(&*log, &fail).await.items;
    assert_eq!(logs[0].attempt, 1);
    let next = jobs_in(&queue.inner);
    assert_eq!(
        next.iter()
            .map(|j| (j.attempt, j.first_queued_at))
            .collect::<Vec<_>>(),
        [(2, Some(sent_at))]
    );
}

#[tokio::test]
async fn a_wait_longer_than_one_delay_is_several_sends_without_an_attempt() {
    // GIVEN a schedule whose first retry waits 40 minutes (a longer window)
    let fail = webhook("fail", "s", &["order.paid"], true);
    let long = RetryPolicy {
        delays: vec![Duration::from_secs(2400)],
        last_attempt_by: Duration::from_secs(3 * 3600),
        jitter: 0.0,
    };
    let (fanout, queue, log) = recorded_world(&[&fail], long).await;
    let records = batch(&queue.inner, vec![job_for(&fail).to_body()]).await;

    // WHEN attempt 1 fails
    let before = Utc::now();
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN attempt 2 is sent delayed by the longest delay, and says when it is due
    let sent = queue.batches();
    assert_eq!(sent[0].delays, [crate::queue::MAX_DELAY]);
    let waiting = jobs_in(&queue.inner);
    assert_eq!(waiting.len(), 1);
    let due = waiting[0].not_before.expect("a due time");
    assert!(
        due >= before + chrono::Duration::seconds(2400)
            && due <= Utc::now() + chrono::Duration::seconds(2400),
        "{due}"
    );
    assert_eq!(waiting[0].attempt, 2);

    // WHEN that message arrives (as after its 15 minutes)
    let hop = QueuedJob {
        message_id: "hop".into(),
        receipt: "hop".into(),
        body: waiting[0].to_body(),
        receive_count: 1,
        sent_at: Utc::now(),
    };
    assert!(fanout.process(vec![hop], None).await.is_empty());

    // THEN it is sent on, unchanged and delayed again, without an attempt
    let sent = queue.batches();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].delays, [crate::queue::MAX_DELAY]);
    let total = logs_of(&*log, &fail).await.counted;
    assert_eq!(total, 1, "only attempt 1 is in the log");
    let jobs = jobs_in(&queue.inner);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1], waiting[0]);

    // WHEN a message arrives once it is due
    let mut due_now = waiting[0].clone();
    due_now.not_before = Some(Utc::now());
    let last = QueuedJob {
        message_id: "due".into(),
        receipt: "due".into(),
        body: due_now.to_body(),
        receive_count: 1,
        sent_at: Utc::now(),
    };
    assert!(fanout.process(vec![last], None).await.is_empty());

    // THEN attempt 2 is made (and, the last, dead-letters the job)
    let logs = logs_of(&*log, &fail).await.items;
    assert_eq!(logs.iter().map(|l| l.attempt).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(queue.inner.dead_letters().len(), 1);
}

#[tokio::test]
async fn retries_of_large_jobs_are_sent_in_batches_sqs_takes() {
    // GIVEN ten failing jobs near the largest a message carries
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, _) = recorded_world(&[&fail], RetryPolicy::default()).await;
    let bodies: Vec<String> = (0..10)
        .map(|k| {
            let mut job = job_for(&fail);
            job.event.id = format!("evt-{k}");
            job.job_id = crate::job::job_id(&job.event.id, fail.id, job.enqueued_at);
            job.event.payload =
                serde_json::json!({"data": {"blob": "x".repeat(crate::job::MAX_INLINE_PAYLOAD - 500)}})
                    .into();
            job.to_body()
        })
        .collect();
    let records = batch(&queue.inner, bodies).await;
    assert_eq!(records.len(), 10);

    // WHEN they fail
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN their retries went out in batches within both limits
    let sent = queue.batches();
    assert_eq!(
        sent.iter().map(|b| b.sizes.len()).collect::<Vec<_>>(),
        [4, 4, 2]
    );
    for b in &sent {
        assert!(b.sizes.iter().sum::<usize>() <= crate::queue::MAX_BATCH_BYTES);
    }
    assert_eq!(queue.inner.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_still_running_as_the_invocation_ends_is_cut_recorded_and_retried() {
    let ok = webhook("ok", "s", &["order.paid"], true);
    let slow = webhook("slow", "s", &["order.paid"], true);
    let w = world(&[&ok, &slow]).await;
    let slow_body = job_for(&slow).to_body();
    let records = batch(&w.queue, vec![job_for(&ok).to_body(), slow_body.clone()]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = w.fanout.process(records.clone(), Some(deadline)).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(Instant::now() < deadline, "answered before the deadline");
    let logs = logs_of(&*w.log, &slow).await.items;
    assert_eq!(logs.len(), 1, "the cut attempt is in the log");
    assert!(!logs[0].succeeded);
    assert_eq!(
        logs[0].error_detail.as_deref(),
        Some("cut short: the invocation was ending before the attempt finished")
    );
    let jobs = w
        .log
        .integration_jobs(&store("s"), slow.id, &Filter::default(), Page::default())
        .await
        .expect("jobs")
        .items;
    assert_eq!(jobs[0].status, JobStatus::Retrying);
    let retried: Vec<DeliveryJob> = w
        .queue
        .peek()
        .iter()
        .filter_map(|b| DeliveryJob::parse(b).ok())
        .filter(|j| j.integration_id == slow.id)
        .collect();
    assert_eq!(
        retried.iter().map(|j| j.attempt).collect::<Vec<_>>(),
        [1, 2],
        "the received message (not deleted here) and its retry"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_the_attempt_limit_is_cut_even_without_an_invocation_deadline() {
    let slow = webhook("slow", "s", &["order.paid"], true);
    let store_ = seeded(&[&slow]).await;
    let log = Arc::new(MemoryDeliveryLog::default());
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let fanout = Fanout::new(
        Arc::new(IntegrationCache::new(store_, Duration::from_secs(5))),
        Arc::new(Scripted),
        log.clone(),
        queue.clone(),
        RetryPolicy::default(),
    )
    .with_attempt_limit(Duration::from_secs(5));
    let records = batch(&queue, vec![job_for(&slow).to_body()]).await;
    let started = Instant::now();
    let failed = fanout.process(records.clone(), None).await;
    assert!(failed.is_empty(), "retried by a new message: {failed:?}");
    assert!(
        Instant::now() - started < Duration::from_secs(60),
        "not the full minute"
    );
    assert_eq!(queue.len(), 2, "the received message and its retry");
    let logs = logs_of(&*log, &slow).await.items;
    assert_eq!(
        logs[0].error_detail.as_deref(),
        Some("cut short: the attempt did not finish within 5 s")
    );
}

#[tokio::test(start_paused = true)]
async fn a_last_attempt_cut_at_the_deadline_fails_the_job_and_counts_in_the_health() {
    let slow = webhook("slow", "s", &["order.paid"], true);
    let (fanout, queue, store_) = health_world(&[&slow], 20).await;
    let records = last_attempt(&queue, &slow, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    fanout.process(records, Some(deadline)).await;
    let health = store_
        .get(&slow.store_id, slow.id)
        .await
        .expect("get")
        .expect("found")
        .health;
    assert_eq!(health.consecutive_failures, 1);
    assert!(health.last_failure_at.is_some());
}

/// Delivers `ok` at once; holds `slow` until the gate opens (or an hour). Notes how
/// many `slow` attempts were running, at most, when an `ok` one started.
struct Gated {
    gate: tokio::sync::Notify,
    slow_running: std::sync::atomic::AtomicUsize,
    slow_at_ok_start: std::sync::atomic::AtomicUsize,
    ok_done: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Deliverer for Gated {
    async fn deliver(&self, i: &Integration, _: &DeliveryJob, _: u32) -> DeliveryResult {
        use std::sync::atomic::Ordering::SeqCst;
        if i.name == "slow" {
            self.slow_running.fetch_add(1, SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(3600), self.gate.notified()).await;
            self.slow_running.fetch_sub(1, SeqCst);
        } else {
            self.slow_at_ok_start
                .fetch_max(self.slow_running.load(SeqCst), SeqCst);
            self.ok_done.fetch_add(1, SeqCst);
        }
        DeliveryResult {
            outcome: Outcome::Delivered,
            status_code: Some(200),
            body: String::new(),
            error_detail: None,
            duration: Duration::ZERO,
        }
    }
}

#[tokio::test]
async fn a_slow_integration_holds_at_most_its_share_of_the_places_while_others_wait() {
    use std::sync::atomic::Ordering::SeqCst;
    // GIVEN a batch of 150 records: 120 for an endpoint that hangs, listed first, then
    // 30 for a healthy one
    let slow = webhook("slow", "s", &["order.paid"], true);
    let ok = webhook("ok", "t", &["order.paid"], true);
    let store_ = seeded(&[&slow, &ok]).await;
    let gated = Arc::new(Gated {
        gate: tokio::sync::Notify::new(),
        slow_running: Default::default(),
        slow_at_ok_start: Default::default(),
        ok_done: Default::default(),
    });
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store_, Duration::from_secs(5))),
        gated.clone(),
        Arc::new(MemoryDeliveryLog::default()),
        Arc::new(MemoryQueue::new(Duration::from_secs(60), 6)),
        RetryPolicy::default(),
    ));
    let record = |i: &Integration, k: usize| {
        let mut job = job_for(i);
        job.event.id = format!("evt-{k}");
        job.job_id = crate::job::job_id(&job.event.id, i.id, job.enqueued_at);
        QueuedJob {
            message_id: format!("m-{}-{k}", i.name),
            receipt: format!("r-{}-{k}", i.name),
            body: job.to_body(),
            receive_count: 1,
            sent_at: Utc::now(),
        }
    };
    let records: Vec<QueuedJob> = (0..120)
        .map(|k| record(&slow, k))
        .chain((0..30).map(|k| record(&ok, k)))
        .collect();
    // WHEN it is processed
    let run = tokio::spawn({
        let fanout = fanout.clone();
        async move { fanout.process(records, None).await }
    });
    // THEN every healthy record is delivered while the slow ones still hang (bounded:
    // at most 10 s, in 10 ms steps), and the slow endpoint never held the places of
    // the records that were waiting
    let mut delivered = false;
    for _ in 0..1000 {
        if gated.ok_done.load(SeqCst) == 30 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let most_while_others_waited = gated.slow_at_ok_start.load(SeqCst);
    // Release the slow ones and let the batch finish.
    for _ in 0..200 {
        gated.gate.notify_waiters();
        if run.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed = run.await.expect("batch");
    assert!(
        delivered,
        "the healthy records waited behind the hanging ones"
    );
    assert!(
        most_while_others_waited <= MAX_IN_FLIGHT - 30,
        "{most_while_others_waited}"
    );
    assert!(failed.is_empty(), "{failed:?}");
}

/// A delivery log whose writes never finish.
struct StuckLog;

#[async_trait]
impl DeliveryLog for StuckLog {
    async fn record(&self, _: &[LogEntry]) -> crate::error::Result<()> {
        std::future::pending().await
    }
    async fn archived(
        &self,
        _: &StoreId,
        _: uuid::Uuid,
        _: &[uuid::Uuid],
    ) -> crate::error::Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn store_logs(
        &self,
        _: &StoreId,
        _: &Filter,
        _: Page,
    ) -> crate::error::Result<Listed<Attempt>> {
        Ok(Listed::default())
    }
    async fn integration_logs(
        &self,
        _: &StoreId,
        _: Uuid,
        _: &Filter,
        _: Page,
    ) -> crate::error::Result<Listed<Attempt>> {
        Ok(Listed::default())
    }
    async fn integration_jobs(
        &self,
        _: &StoreId,
        _: Uuid,
        _: &Filter,
        _: Page,
    ) -> crate::error::Result<Listed<JobRecord>> {
        Ok(Listed::default())
    }
    async fn job_logs(
        &self,
        _: &StoreId,
        _: Uuid,
        _: Uuid,
        _: Page,
    ) -> crate::error::Result<(Vec<Attempt>, usize)> {
        Ok((Vec::new(), 0))
    }
}

#[tokio::test]
async fn a_log_write_that_never_finishes_does_not_hold_the_answer_past_the_deadline() {
    let ok = webhook("ok", "s", &["order.paid"], true);
    let (fanout, queue) = world_logging_to(&[&ok], Arc::new(StuckLog)).await;
    let records = batch(&queue, vec![job_for(&ok).to_body()]).await;
    // A near deadline, in real time: the write is given up half a second before it.
    let deadline = Instant::now() + Duration::from_secs(3);
    // Bounded so that a hang fails the test instead of stalling it.
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        fanout.process(records, Some(deadline)),
    )
    .await
    .expect("the answer came");
    assert!(
        failed.is_empty(),
        "the delivered record is not retried: {failed:?}"
    );
    assert!(Instant::now() < deadline, "answered before the deadline");
}

#[tokio::test]
async fn one_store_query_serves_the_whole_batch() {
    let integrations: Vec<_> = (0..10)
        .map(|_| webhook("ok", "s", &["order.paid"], true))
        .collect();
    let refs: Vec<_> = integrations.iter().collect();
    let counting = Arc::new(Counting::new(seeded(&refs).await));
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(
            counting.clone(),
            // With the cache off, the batch's snapshot is still read once.
            Duration::ZERO,
        )),
        Arc::new(Scripted),
        Arc::new(MemoryDeliveryLog::default()),
        queue.clone(),
        RetryPolicy::default(),
    ));
    let records = batch(
        &queue,
        integrations.iter().map(|i| job_for(i).to_body()).collect(),
    )
    .await;
    assert!(fanout.process(records, None).await.is_empty());
    assert_eq!(counting.reads(), 1);
}

/// Health: the fan-out over a store it can inspect, with no integration cache (each
/// batch sees the previous one's health).
async fn health_world(
    integrations: &[&Integration],
    disable_after: u32,
) -> (Arc<Fanout>, Arc<MemoryQueue>, Arc<dyn IntegrationStore>) {
    let store: Arc<dyn IntegrationStore> = seeded(integrations).await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let fanout = Arc::new(
        Fanout::new(
            Arc::new(IntegrationCache::new(store.clone(), Duration::ZERO)),
            Arc::new(Scripted),
            Arc::new(MemoryDeliveryLog::default()),
            queue.clone(),
            RetryPolicy::default(),
        )
        .with_auto_disable(disable_after),
    );
    (fanout, queue, store)
}

/// One job of a new event for `i`, on its last attempt.
async fn last_attempt(queue: &MemoryQueue, i: &Integration, n: usize) -> Vec<QueuedJob> {
    let mut job = job_for(i);
    job.event.id = format!("evt-{n}");
    job.job_id = crate::job::job_id(&job.event.id, i.id, job.enqueued_at);
    job.attempt = RetryPolicy::default().max_attempts();
    let body = job.to_body();
    let mut records = Vec::new();
    for r in batch(queue, vec![body.clone()]).await {
        if r.body == body {
            records.push(r);
        } else {
            // An earlier job made visible again for the DLQ: out of this test's way.
            queue.delete(&r.receipt).await.expect("delete");
        }
    }
    records
}

#[tokio::test]
async fn an_integration_is_disabled_after_the_configured_run_of_failed_jobs_and_says_why() {
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, store) = health_world(&[&fail], 3).await;
    for n in 0..2 {
        fanout
            .process(last_attempt(&queue, &fail, n).await, None)
            .await;
        let now = store
            .get(&fail.store_id, fail.id)
            .await
            .expect("get")
            .expect("found");
        assert!(now.enabled, "not yet: {n}");
        assert_eq!(now.health.consecutive_failures, n as u32 + 1);
        assert_eq!(now.health.status(now.enabled), "failing");
    }
    fanout
        .process(last_attempt(&queue, &fail, 2).await, None)
        .await;
    let now = store
        .get(&fail.store_id, fail.id)
        .await
        .expect("get")
        .expect("found");
    assert!(!now.enabled);
    assert_eq!(now.version, fail.version + 1, "disabling is a new version");
    let meta = &now.to_resource("")["meta"]["health"];
    assert_eq!(meta["status"], "disabled");
    assert_eq!(meta["consecutive_failures"], 3);
    let reason = meta["disabled_reason"].as_str().expect("a reason");
    assert!(reason.contains("3 consecutive failed jobs"), "{reason}");
    assert!(reason.contains("500"), "{reason}");
}

#[tokio::test]
async fn a_retry_that_is_not_the_last_attempt_does_not_count_as_a_failed_job() {
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, store) = health_world(&[&fail], 1).await;
    let records = batch(&queue, vec![job_for(&fail).to_body()]).await;
    assert_eq!(records[0].receive_count, 1);
    fanout.process(records, None).await;
    let now = store
        .get(&fail.store_id, fail.id)
        .await
        .expect("get")
        .expect("found");
    assert!(now.enabled);
    assert_eq!(now.health.consecutive_failures, 0);
}

#[tokio::test]
async fn a_410_gone_disables_the_integration_at_once() {
    let gone = webhook("gone410", "s", &["order.paid"], true);
    let (fanout, queue, store) = health_world(&[&gone], 20).await;
    let records = batch(&queue, vec![job_for(&gone).to_body()]).await;
    assert!(
        fanout.process(records, None).await.is_empty(),
        "not retried"
    );
    let now = store
        .get(&gone.store_id, gone.id)
        .await
        .expect("get")
        .expect("found");
    assert!(!now.enabled);
    let reason = now.health.disabled_reason.expect("a reason");
    assert!(reason.contains("gone"), "{reason}");
}

#[tokio::test]
async fn a_success_after_failures_resets_the_count_and_records_when() {
    let mut ok = webhook("ok", "s", &["order.paid"], true);
    ok.health.consecutive_failures = 4;
    let (fanout, queue, store) = health_world(&[&ok], 20).await;
    let records = batch(&queue, vec![job_for(&ok).to_body()]).await;
    fanout.process(records, None).await;
    let now = store
        .get(&ok.store_id, ok.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(now.health.consecutive_failures, 0);
    assert!(now.health.last_success_at.is_some());
    assert_eq!(now.health.status(now.enabled), "healthy");
}

#[tokio::test]
async fn re_enabling_through_the_api_resets_the_health() {
    let fail = webhook("fail", "s", &["order.paid"], true);
    let (fanout, queue, store) = health_world(&[&fail], 1).await;
    fanout
        .process(last_attempt(&queue, &fail, 0).await, None)
        .await;
    let api =
        crate::integrations::Integrations::new(store.clone(), crate::validate::Policy::STORED, 100);
    let body = serde_json::json!({"data": {"type": "integration", "enabled": true}});
    let updated = api
        .update(&fail.store_id, fail.id, &body)
        .await
        .expect("stored and valid")
        .integration;
    assert!(updated.enabled);
    assert_eq!(updated.health.consecutive_failures, 0);
    assert_eq!(updated.health.disabled_reason, None);
    assert!(updated.health.last_failure_at.is_none());
}

/// Counts deliveries in flight and the most at once; each takes 20 ms.
#[derive(Default)]
struct Peak {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Deliverer for Peak {
    async fn deliver(&self, _: &Integration, _: &DeliveryJob, _: u32) -> DeliveryResult {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.now.fetch_sub(1, SeqCst);
        self.done.fetch_add(1, SeqCst);
        DeliveryResult {
            outcome: Outcome::Delivered,
            status_code: Some(200),
            body: String::new(),
            error_detail: None,
            duration: Duration::from_millis(20),
        }
    }
}

#[tokio::test]
async fn a_batch_larger_than_the_in_flight_bound_is_delivered_whole_but_never_more_at_once() {
    // GIVEN a batch of 250 records (a direct invocation; the template allows 100)
    let ok = webhook("ok", "s", &["order.paid"], true);
    let store = seeded(&[&ok]).await;
    let peak = Arc::new(Peak::default());
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        peak.clone(),
        Arc::new(MemoryDeliveryLog::default()),
        Arc::new(MemoryQueue::new(Duration::from_secs(60), 6)),
        RetryPolicy::default(),
    ));
    let records: Vec<QueuedJob> = (0..250)
        .map(|k| {
            let mut job = job_for(&ok);
            job.event.id = format!("evt-{k}");
            job.job_id = crate::job::job_id(&job.event.id, ok.id, job.enqueued_at);
            QueuedJob {
                message_id: format!("m-{k}"),
                receipt: format!("r-{k}"),
                body: job.to_body(),
                receive_count: 1,
                sent_at: Utc::now(),
            }
        })
        .collect();
    // WHEN it is processed
    let failed = fanout.process(records, None).await;
    // THEN every record is delivered, at most MAX_IN_FLIGHT at a time, and a full
    // template batch would have gone at once
    use std::sync::atomic::Ordering::SeqCst;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(peak.done.load(SeqCst), 250);
    assert_eq!(peak.most.load(SeqCst), MAX_IN_FLIGHT);
}

/// What the fan-out logs at INFO, as JSON lines, while `work` runs on this thread.
async fn info_lines<F: std::future::Future>(work: F) -> Vec<serde_json::Value> {
    let lines = Captured::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    work.await;
    drop(guard);
    lines
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn a_batch_logs_one_summary_line_and_a_line_only_for_attempts_that_did_not_deliver() {
    let ok = webhook("ok", "s", &["order.paid"], true);
    let fail = webhook("fail", "s", &["order.paid"], true);
    let refused = webhook("gone", "s", &["order.paid"], true);
    let w = world(&[&ok, &fail, &refused]).await;
    let records = batch(
        &w.queue,
        vec![
            job_for(&ok).to_body(),
            job_for(&ok).to_body(),
            job_for(&fail).to_body(),
            job_for(&refused).to_body(),
        ],
    )
    .await;
    let lines = info_lines(w.fanout.process(records, None)).await;
    let attempts: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "delivery attempt")
        .map(|l| l["status"].as_str().expect("status"))
        .collect();
    let mut attempts = attempts;
    attempts.sort();
    assert_eq!(attempts, vec!["discarded", "retrying"]);
    let summaries: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "batch done")
        .collect();
    assert_eq!(summaries.len(), 1, "{lines:?}");
    let s = summaries[0];
    assert_eq!(
        [
            &s["records"],
            &s["delivered"],
            &s["retrying"],
            &s["failed"],
            &s["discarded"],
            &s["resent"],
            &s["dead_lettered"],
            &s["retried"]
        ],
        [4, 2, 1, 0, 1, 1, 0, 0]
            .map(serde_json::Value::from)
            .each_ref()
    );
}

#[tokio::test]
async fn a_longer_retry_window_retries_past_the_default_last_attempt_and_then_dead_letters() {
    // GIVEN an integration whose deliveries fail, with a one-hour retry window (eight
    // attempts), and auto-disable after one failed job
    let mut fail = webhook("fail", "s", &["order.paid"], true);
    fail.delivery.retry_window_minutes = Some(60);
    let (fanout, queue, store) = health_world(&[&fail], 1).await;
    let mut job = job_for(&fail);
    job.first_queued_at = Some(Utc::now());

    // WHEN its sixth attempt (the default's last) fails
    job.attempt = 6;
    let records = batch(&queue, vec![job.to_body()]).await;
    assert!(fanout.process(records.clone(), None).await.is_empty());
    queue.delete(&records[0].receipt).await.expect("delete");

    // THEN it is not dead-lettered: attempt 7 waits in the queue, nothing in flight,
    // and the integration's health is untouched
    assert!(queue.dead_letters().is_empty());
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(
        queue
            .peek()
            .iter()
            .map(|b| DeliveryJob::parse(b).expect("job").attempt)
            .collect::<Vec<_>>(),
        [7]
    );
    let now = store
        .get(&fail.store_id, fail.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!((now.enabled, now.health.consecutive_failures), (true, 0));

    // WHEN its eighth attempt (the window's last) fails
    job.attempt = 8;
    job.event.id = "evt-last".into();
    job.job_id = crate::job::job_id(&job.event.id, fail.id, job.enqueued_at);
    let records = batch(&queue, vec![job.to_body()]).await;
    let last: Vec<QueuedJob> = records
        .into_iter()
        .filter(|r| r.body == job.to_body())
        .collect();
    assert!(fanout.process(last, None).await.is_empty());

    // THEN the job is in the DLQ, and counts as the failed job that disables it
    assert_eq!(
        queue
            .dead_letters()
            .iter()
            .map(|b| DeliveryJob::parse(b).expect("job").attempt)
            .collect::<Vec<_>>(),
        [8]
    );
    let now = store
        .get(&fail.store_id, fail.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!((now.enabled, now.health.consecutive_failures), (false, 1));
}

/// `n` jobs of distinct events for `i`.
fn jobs_of(i: &Integration, n: usize) -> Vec<DeliveryJob> {
    (0..n)
        .map(|k| {
            let mut job = job_for(i);
            job.event.id = format!("evt-{}-{k}", i.name);
            DeliveryJob::new(&i.store_id, i.id, job.event, job.enqueued_at)
        })
        .collect()
}

/// A webhook that delivers, limited to `per_second`.
fn limited(per_second: u32) -> Integration {
    let mut i = webhook("ok", "s", &["order.paid"], true);
    i.delivery.max_per_second = Some(per_second);
    i
}

#[tokio::test(start_paused = true)]
async fn jobs_over_the_rate_wait_for_their_send_times_without_an_attempt_or_a_log_entry() {
    // GIVEN six jobs of a webhook limited to 1 a second, in one batch
    let one = limited(1);
    let (fanout, queue, log) = recorded_world(&[&one], RetryPolicy::default()).await;
    let jobs = jobs_of(&one, 6);
    let records = batch(&queue.inner, jobs.iter().map(|j| j.to_body()).collect()).await;
    let before = Utc::now();

    // WHEN the batch runs
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN the four whose send times come within the hold (now, +1, +2, +3 s) are
    // delivered in the invocation, and the other two are sent back, each to arrive
    // at least a second before its send time (in whole seconds, as SQS delays): still
    // attempt 1, carrying that time, and not in the log
    let logs = logs_of(&*log, &one).await.items;
    assert_eq!(logs.len(), 4);
    assert!(logs.iter().all(|a| a.succeeded && a.attempt == 1));
    let sent = queue.batches();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let delays = &sent[0].delays;
    assert_eq!(delays.len(), 2);
    assert!(
        delays[0] > Duration::from_millis(1900) && delays[0] <= Duration::from_secs(2),
        "{delays:?}"
    );
    assert!(
        delays[1] > Duration::from_millis(2900) && delays[1] <= Duration::from_secs(3),
        "{delays:?}"
    );
    let waiting = jobs_in(&queue.inner);
    assert_eq!(waiting.len(), 2);
    for (k, w) in waiting.iter().enumerate() {
        assert_eq!(w.attempt, 1);
        assert_eq!((w.job_id, w.first_queued_at), (jobs[4 + k].job_id, None));
        let slot = w.slot.expect("its send time") - before;
        let expected = chrono::Duration::seconds(4 + k as i64);
        assert!(
            slot >= expected && slot < expected + chrono::Duration::milliseconds(500),
            "{slot}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_back_for_its_send_time_is_delivered_without_reserving_another() {
    // GIVEN a webhook limited to 1 a second and a job back with its send time
    let one = limited(1);
    let (fanout, queue, log) = recorded_world(&[&one], RetryPolicy::default()).await;
    let limiter = Arc::new(crate::memory::MemoryRateLimiter::new());
    let fanout = Arc::new(
        Arc::try_unwrap(fanout)
            .ok()
            .expect("one owner")
            .with_rate_limiter(limiter.clone()),
    );
    let mut back = jobs_of(&one, 1).remove(0);
    back.slot = Some(Utc::now() + chrono::Duration::milliseconds(200));
    let records = batch(&queue.inner, vec![back.to_body()]).await;

    // WHEN it runs
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN it is delivered, and the bucket was not asked: its next send time is now
    let total = logs_of(&*log, &one).await.counted;
    assert_eq!(total, 1);
    let before = Utc::now();
    let next = limiter
        .reserve(&store("s"), one.id, 1, 1)
        .await
        .expect("ok")
        .expect("slots");
    assert!(next.first >= before && next.first <= Utc::now(), "{next:?}");
}

#[tokio::test(start_paused = true)]
async fn a_job_back_too_late_for_its_send_time_reserves_again_at_the_end_of_the_line() {
    // GIVEN a webhook limited to 1 a second whose next ten send times are taken, and
    // a job back ten seconds after its send time
    let one = limited(1);
    let (fanout, queue, log) = recorded_world(&[&one], RetryPolicy::default()).await;
    let limiter = Arc::new(crate::memory::MemoryRateLimiter::new());
    let fanout = Arc::new(
        Arc::try_unwrap(fanout)
            .ok()
            .expect("one owner")
            .with_rate_limiter(limiter.clone()),
    );
    let taken = limiter
        .reserve(&store("s"), one.id, 1, 10)
        .await
        .expect("ok")
        .expect("slots");
    let mut late = jobs_of(&one, 1).remove(0);
    late.slot = Some(Utc::now() - chrono::Duration::seconds(10));
    let records = batch(&queue.inner, vec![late.to_body()]).await;

    // WHEN it runs
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN it is not delivered late: it waits for the send time after the ten taken
    let total = logs_of(&*log, &one).await.counted;
    assert_eq!(total, 0);
    let waiting = jobs_in(&queue.inner);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].slot, Some(taken.nth(10)));
}

/// A rate limiter that answers as told and counts the reservations asked for.
struct Answering {
    contended: bool,
    asked: std::sync::Mutex<Vec<(Uuid, u32, u32)>>,
}

#[async_trait]
impl crate::ports::RateLimiter for Answering {
    async fn reserve(
        &self,
        _store: &StoreId,
        id: Uuid,
        per_second: u32,
        count: u32,
    ) -> crate::Result<Option<crate::ports::Slots>> {
        self.asked
            .lock()
            .expect("asked")
            .push((id, per_second, count));
        if self.contended {
            Ok(None)
        } else {
            Err(crate::error::Error::Backend {
                service: "DynamoDB",
                message: "unavailable".into(),
                retryable: true,
            })
        }
    }
}

#[tokio::test]
async fn one_reservation_serves_a_batchs_jobs_of_an_integration_and_a_contended_bucket_makes_them_wait_a_moment(
) {
    // GIVEN a batch of three jobs of a limited webhook and one of an unlimited one,
    // and a bucket that stays contended
    let one = limited(5);
    let free = webhook("ok", "s", &["order.paid"], true);
    let (fanout, queue, log) = recorded_world(&[&one, &free], RetryPolicy::default()).await;
    let answering = Arc::new(Answering {
        contended: true,
        asked: Default::default(),
    });
    let fanout = Arc::try_unwrap(fanout)
        .ok()
        .expect("one owner")
        .with_rate_limiter(answering.clone());
    let mut bodies: Vec<String> = jobs_of(&one, 3).iter().map(|j| j.to_body()).collect();
    bodies.push(job_for(&free).to_body());
    let records = batch(&queue.inner, bodies).await;

    // WHEN it runs
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN one reservation of three was asked for, the unlimited job was delivered,
    // and the three were sent back to wait one to three seconds, without an attempt
    assert_eq!(*answering.asked.lock().expect("asked"), [(one.id, 5, 3)]);
    let logs = log
        .store_logs(&store("s"), &Filter::default(), Page::default())
        .await
        .expect("logs")
        .items;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].integration_id, free.id);
    let delays = queue.batches()[0].delays.clone();
    assert_eq!(delays.len(), 3);
    assert!(
        delays
            .iter()
            .all(|d| *d >= Duration::from_millis(900) && *d < Duration::from_secs(3)),
        "{delays:?}"
    );
    assert!(jobs_in(&queue.inner)
        .iter()
        .all(|j| j.attempt == 1 && j.slot.is_none()));
}

#[tokio::test]
async fn a_bucket_that_cannot_be_reached_leaves_its_jobs_on_the_queue_as_they_are() {
    let one = limited(5);
    let (fanout, queue, log) = recorded_world(&[&one], RetryPolicy::default()).await;
    let fanout = Arc::try_unwrap(fanout)
        .ok()
        .expect("one owner")
        .with_rate_limiter(Arc::new(Answering {
            contended: false,
            asked: Default::default(),
        }));
    let records = batch(&queue.inner, vec![job_for(&one).to_body()]).await;
    let id = records[0].message_id.clone();
    assert_eq!(run(&fanout, &queue.inner, records).await, vec![id]);
    let total = log
        .store_logs(&store("s"), &Filter::default(), Page::default())
        .await
        .expect("logs")
        .counted;
    assert_eq!(total, 0);
    assert!(queue.batches().is_empty());
}

#[tokio::test]
async fn a_retry_of_a_job_that_waited_reserves_anew_and_counts_its_window_from_its_first_attempt() {
    // GIVEN a failing webhook limited to 50 a second
    let mut fail = webhook("fail", "s", &["order.paid"], true);
    fail.delivery.max_per_second = Some(50);
    let (fanout, queue, _log) = recorded_world(&[&fail], RetryPolicy::default()).await;
    // and its job back, at its send time, after waiting for it
    let mut back = job_for(&fail);
    let slot = Utc::now();
    back.slot = Some(slot);
    let records = batch(&queue.inner, vec![back.to_body()]).await;

    // WHEN its attempt fails
    assert!(run(&fanout, &queue.inner, records).await.is_empty());

    // THEN its retry is attempt 2, with no send time of attempt 1's, and its retry
    // window counts from its first attempt (its send time), not from the wait's start
    let waiting = jobs_in(&queue.inner);
    assert_eq!(
        (
            waiting[0].attempt,
            waiting[0].slot,
            waiting[0].first_queued_at
        ),
        (2, None, Some(slot))
    );
}

/// Records the payload of every job it is handed, and fails each attempt retryably.
#[derive(Default)]
struct Seeing {
    payloads: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Deliverer for Seeing {
    async fn deliver(
        &self,
        _integration: &Integration,
        job: &DeliveryJob,
        _attempt: u32,
    ) -> DeliveryResult {
        self.payloads
            .lock()
            .expect("lock")
            .push(job.payload().text().to_owned());
        DeliveryResult::failed(
            Outcome::Retryable { retry_after: None },
            "the webhook answered 500",
            Duration::from_millis(1),
        )
    }
}

/// A fan-out over `deliverer` reading stored payloads from `bodies`.
async fn storing_world(
    integration: &Integration,
    deliverer: Arc<dyn Deliverer>,
    bodies: Arc<crate::memory::MemoryBodies>,
) -> World {
    let log = Arc::new(MemoryDeliveryLog::default());
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let fanout = Fanout::new(
        Arc::new(IntegrationCache::new(
            seeded(&[integration]).await,
            Duration::from_secs(5),
        )),
        deliverer,
        log.clone(),
        queue.clone(),
        // One retry, at once.
        RetryPolicy {
            delays: vec![Duration::ZERO],
            last_attempt_by: Duration::from_secs(60),
            jitter: 0.0,
        },
    )
    .with_bodies(Some(bodies));
    World {
        fanout: Arc::new(fanout),
        queue,
        log,
    }
}

/// A job of `i` whose payload (`{"data": {"secret": <marker>, ...}}`, over a
/// message's size) is stored in `bodies` when `keep`, else only named.
async fn stored_job(
    i: &Integration,
    bodies: &crate::memory::MemoryBodies,
    keep: bool,
) -> (DeliveryJob, crate::job::Payload) {
    use crate::ports::EventBodies;
    let payload = crate::job::Payload::new(&serde_json::json!({"data": {
        "id": "o1", "secret": "card-4111-marker", "blob": "x".repeat(crate::job::MAX_INLINE_PAYLOAD)
    }}));
    let parts = crate::job::Stored::parts(&i.store_id, &payload).expect("stored");
    if keep {
        for (key, body) in parts.objects {
            bodies.put(&key, body).await.expect("put");
        }
    }
    let mut job = job_for(i);
    job.event.payload = crate::job::Payload::absent();
    job.stored = Some(parts.stored);
    (job, payload)
}

#[tokio::test]
async fn a_stored_payload_reaches_the_deliverer_whole_and_is_never_logged_or_sent_on() {
    // GIVEN a job whose payload is stored, to a target that fails
    let hook = webhook("hook", "s", &["order.paid"], true);
    let bodies = Arc::new(crate::memory::MemoryBodies::new());
    let seeing = Arc::new(Seeing::default());
    let w = storing_world(&hook, seeing.clone(), bodies.clone()).await;
    let (job, payload) = stored_job(&hook, &bodies, true).await;
    let records = batch(&w.queue, vec![job.to_body()]).await;
    // WHEN it is processed
    let lines = info_lines(w.fanout.process(records, None)).await;
    // THEN the deliverer had the whole payload
    assert_eq!(
        *seeing.payloads.lock().expect("lock"),
        [payload.text().to_owned()]
    );
    // AND no log line holds any of it
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(!line.to_string().contains("card-4111-marker"), "{line}");
    }
    // AND the retry sent on carries the claim check, not the payload
    let retry = w.queue.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(retry.len(), 1);
    let again = DeliveryJob::parse(&retry[0].body).expect("job");
    assert_eq!((again.attempt, again.stored), (2, job.stored));
    assert!(retry[0].body.len() < 1024, "{}", retry[0].body);
}

#[tokio::test]
async fn a_job_whose_stored_payload_is_gone_is_discarded_with_the_reason_in_the_log() {
    // GIVEN a job whose stored payload is no longer there (expired)
    let hook = webhook("hook", "s", &["order.paid"], true);
    let bodies = Arc::new(crate::memory::MemoryBodies::new());
    let seeing = Arc::new(Seeing::default());
    let w = storing_world(&hook, seeing.clone(), bodies.clone()).await;
    let (job, _) = stored_job(&hook, &bodies, false).await;
    let records = batch(&w.queue, vec![job.to_body()]).await;
    // WHEN it is processed
    let (lines, failed) = {
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = failed.clone();
        let fanout = w.fanout.clone();
        let lines = info_lines(async move {
            *out.lock().expect("lock") = fanout.process(records, None).await;
        })
        .await;
        let failed = failed.lock().expect("lock").clone();
        (lines, failed)
    };
    // THEN it is acknowledged, not delivered, and discarded for good with the reason
    assert!(failed.is_empty(), "{failed:?}");
    assert!(seeing.payloads.lock().expect("lock").is_empty());
    let why = "the event's stored payload is gone: it expired with the delivery log's retention, or was deleted";
    let logs = logs_of(&*w.log, &hook).await.items;
    assert_eq!(
        logs.iter()
            .map(|a| (a.succeeded, a.error_detail.as_deref()))
            .collect::<Vec<_>>(),
        [(false, Some(why))]
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l["reason"] == why),
        "{lines:?}"
    );
}

/// Jobs `k` of `i` (`evt-<k>`), as queue message bodies.
fn bodies_of(i: &Integration, ks: std::ops::Range<usize>) -> Vec<OutgoingJob> {
    ks.map(|k| {
        let mut job = job_for(i);
        job.event.id = format!("evt-{k}");
        job.job_id = crate::job::job_id(&job.event.id, i.id, job.enqueued_at);
        OutgoingJob {
            entry_id: k.to_string(),
            body: job.to_body(),
            delay: Duration::ZERO,
        }
    })
    .collect()
}

async fn queue_all(queue: &MemoryQueue, jobs: &[OutgoingJob]) {
    for batch in crate::queue::batches(jobs) {
        assert!(queue.send_batch(batch).await.expect("send").is_empty());
    }
}

/// The embedded queue, noting the size of every batch received.
struct Noting {
    queue: Arc<MemoryQueue>,
    sizes: std::sync::Mutex<Vec<usize>>,
}

#[async_trait]
impl JobSource for Noting {
    async fn receive(&self, max: usize, wait: Duration) -> crate::error::Result<Vec<QueuedJob>> {
        let got = self.queue.receive(max, wait).await?;
        if !got.is_empty() {
            self.sizes.lock().expect("sizes").push(got.len());
        }
        Ok(got)
    }

    async fn delete(&self, receipt: &str) -> crate::error::Result<()> {
        self.queue.delete(receipt).await
    }
}

/// Polls `source` into `fanout` as the dev server does, with at most `most` pollers,
/// until `check` holds (bounded: 10 s, in 10 ms steps); then stops them and says
/// whether it held.
async fn polled_until(
    source: Arc<dyn JobSource>,
    fanout: Arc<Fanout>,
    most: usize,
    check: impl Fn() -> bool,
    release: impl Fn(),
) -> bool {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let polling = tokio::spawn(poll_scaled(
        source,
        fanout,
        Duration::from_secs(60),
        most,
        stopped,
    ));
    let mut held = false;
    for _ in 0..1000 {
        if check() {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    for _ in 0..200 {
        release();
        if polling.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    polling.await.expect("pollers");
    held
}

#[tokio::test]
async fn jobs_waiting_when_a_poller_looks_go_out_as_one_batch_not_ten_at_a_time() {
    use std::sync::atomic::Ordering::SeqCst;
    // GIVEN 40 jobs waiting on the embedded queue
    let ok = webhook("ok", "s", &["order.paid"], true);
    let w = world(&[&ok]).await;
    queue_all(&w.queue, &bodies_of(&ok, 0..40)).await;
    let noting = Arc::new(Noting {
        queue: w.queue.clone(),
        sizes: Default::default(),
    });
    let peak = Arc::new(Peak::default());
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(
            seeded(&[&ok]).await,
            Duration::from_secs(5),
        )),
        peak.clone(),
        w.log.clone(),
        w.queue.clone(),
        RetryPolicy::default(),
    ));
    // WHEN the dev server's pollers start
    let all_done = polled_until(
        noting.clone(),
        fanout,
        8,
        || peak.done.load(SeqCst) == 40,
        || {},
    )
    .await;
    // THEN the first poller takes all 40 as one batch, delivered at once
    assert!(all_done, "{} of 40 delivered", peak.done.load(SeqCst));
    assert_eq!(*noting.sizes.lock().expect("sizes"), [40]);
    assert_eq!(peak.most.load(SeqCst), 40);
}

#[tokio::test]
async fn a_batch_held_by_a_hanging_receiver_holds_back_no_job_queued_after_it() {
    use std::sync::atomic::Ordering::SeqCst;
    // GIVEN the dev server's pollers, one of them holding a batch whose endpoint hangs
    let slow = webhook("slow", "s", &["order.paid"], true);
    let ok = webhook("ok", "t", &["order.paid"], true);
    let gated = Arc::new(Gated {
        gate: tokio::sync::Notify::new(),
        slow_running: Default::default(),
        slow_at_ok_start: Default::default(),
        ok_done: Default::default(),
    });
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(
            seeded(&[&slow, &ok]).await,
            Duration::from_secs(5),
        )),
        gated.clone(),
        Arc::new(MemoryDeliveryLog::default()),
        queue.clone(),
        RetryPolicy::default(),
    ));
    queue_all(&queue, &bodies_of(&slow, 0..1)).await;
    let sender = {
        let (queue, gated) = (queue.clone(), gated.clone());
        tokio::spawn(async move {
            for _ in 0..1000 {
                if gated.slow_running.load(SeqCst) == 1 {
                    // WHEN jobs for a healthy endpoint arrive after it
                    queue_all(&queue, &bodies_of(&ok, 0..5)).await;
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        })
    };
    let delivered = polled_until(
        queue.clone(),
        fanout,
        4,
        || gated.ok_done.load(SeqCst) == 5,
        || gated.gate.notify_waiters(),
    )
    .await;
    // THEN another poller delivers them while the first still waits on the hanging one
    assert!(
        sender.await.expect("sender"),
        "the hanging job was never taken"
    );
    assert!(delivered, "{} of 5 delivered", gated.ok_done.load(SeqCst));
    assert_eq!(gated.slow_at_ok_start.load(SeqCst), 1);
}

#[test]
fn one_more_poller_starts_only_when_none_came_back_to_the_queue_for_the_whole_wait() {
    let (more, mut wanted) = tokio::sync::mpsc::unbounded_channel();
    let crew = Crew {
        waiting: 1.into(),
        running: 1.into(),
        returns: 0.into(),
        most: 2,
        more,
    };
    // The only poller takes a batch: poll_scaled is asked to look later.
    crew.took_a_batch();
    let seen = wanted.try_recv().expect("asked to look");
    // It came back and took the next batch before the look: look again later.
    crew.waits_again();
    crew.took_a_batch();
    assert_eq!(crew.look(seen), Look::Again(1));
    // It stayed busy for the whole wait: one more starts, counted as waiting.
    assert_eq!(crew.look(1), Look::Start);
    assert_eq!(crew.running.load(std::sync::atomic::Ordering::SeqCst), 2);
    // While one waits, none more; once both are busy, `most` is the bound.
    assert_eq!(crew.look(1), Look::Enough);
    crew.took_a_batch();
    assert_eq!(crew.look(1), Look::Enough);
}

/// `n` jobs of `i` (`evt-<k>`) whose payload is stored in `bodies`, as message
/// bodies, and the payload's size in bytes.
async fn stored_jobs(
    i: &Integration,
    bodies: &crate::memory::MemoryBodies,
    n: usize,
) -> (Vec<String>, usize) {
    let mut sent = Vec::new();
    let mut size = 0;
    for k in 0..n {
        let (mut job, payload) = stored_job(i, bodies, true).await;
        job.event.id = format!("evt-{k}");
        job.job_id = crate::job::job_id(&job.event.id, i.id, job.enqueued_at);
        size = payload.text().len();
        sent.push(job.to_body());
    }
    (sent, size)
}

#[tokio::test]
async fn stored_payloads_in_flight_stay_within_the_fanouts_room_and_all_are_delivered() {
    use std::sync::atomic::Ordering::SeqCst;
    // GIVEN 8 jobs whose payloads (over 240 KiB each) are stored, in one batch
    let hook = webhook("hook", "s", &["order.paid"], true);
    let bodies = Arc::new(crate::memory::MemoryBodies::new());
    let (bodies_of_jobs, size) = stored_jobs(&hook, &bodies, 8).await;
    let run = |room: Option<usize>| {
        let (hook, bodies, bodies_of_jobs) = (hook.clone(), bodies.clone(), bodies_of_jobs.clone());
        async move {
            let peak = Arc::new(Peak::default());
            let w = storing_world(&hook, peak.clone(), bodies).await;
            let fanout = match room {
                Some(bytes) => Arc::try_unwrap(w.fanout)
                    .ok()
                    .expect("one owner")
                    .with_stored_in_flight(bytes),
                None => Arc::try_unwrap(w.fanout).ok().expect("one owner"),
            };
            let records = batch(&w.queue, bodies_of_jobs).await;
            let failed = fanout.process(records, None).await;
            assert!(failed.is_empty(), "{failed:?}");
            (peak.most.load(SeqCst), peak.done.load(SeqCst))
        }
    };
    // WHEN the fan-out has room for two and a half of them
    let bounded = run(Some(size * 5 / 2)).await;
    // THEN at most two are attempted at once, and all eight are delivered
    assert_eq!(bounded, (2, 8));
    // AND with the default room (32 MiB) all eight go at once
    assert_eq!(run(None).await, (8, 8));
}

#[tokio::test]
async fn a_stored_job_that_finds_no_room_before_its_attempts_deadline_goes_back_unattempted() {
    // GIVEN two jobs with stored payloads to an endpoint that hangs, and room for one
    let slow = webhook("slow", "s", &["order.paid"], true);
    let bodies = Arc::new(crate::memory::MemoryBodies::new());
    let w = storing_world(&slow, Arc::new(Scripted), bodies.clone()).await;
    let (sent, size) = stored_jobs(&slow, &bodies, 2).await;
    let fanout = Arc::try_unwrap(w.fanout)
        .ok()
        .expect("one owner")
        .with_stored_in_flight(size);
    let records = batch(&w.queue, sent).await;
    // WHEN the batch runs with its invocation ending in 3.5 s (attempts end after 1 s)
    let deadline = Instant::now() + Duration::from_millis(3500);
    let failed = fanout.process(records.clone(), Some(deadline)).await;
    // THEN one job was attempted (and cut), and the other went back as it was, never
    // attempted
    let logs = logs_of(&*w.log, &slow).await.items;
    assert_eq!(logs.len(), 1, "{logs:?}");
    let attempted = logs[0].job_id;
    let unattempted: Vec<String> = records
        .iter()
        .filter(|r| DeliveryJob::parse(&r.body).expect("job").job_id != attempted)
        .map(|r| r.message_id.clone())
        .collect();
    assert_eq!(failed, unattempted);
}
