//! The partial-batch contract, with the embedded queue and a scripted deliverer
//! (the webhook deliverer itself is tested against a real HTTP server elsewhere).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::*;
use crate::delivery::{Attempt, JobRecord};
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
    assert!(queue.send_batch(&entries).await.expect("send").is_empty());
    queue.receive(10, Duration::ZERO).await.expect("receive")
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
async fn only_the_failed_records_are_reported_and_none_on_full_success() {
    let ok = webhook("ok", "s", &["order.paid"], true);
    let fail = webhook("fail", "s", &["order.paid"], true);
    let w = world(&[&ok, &fail]).await;
    let (good, bad) = (job_for(&ok).to_body(), job_for(&fail).to_body());
    let records = batch(&w.queue, vec![good.clone(), bad.clone()]).await;
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
        .store_logs(&store("s"), Page::default())
        .await
        .expect("logs")
        .0;
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
    let (logs, total) = w
        .log
        .store_logs(&store("s"), Page::default())
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

#[tokio::test]
async fn a_retryable_failure_is_hidden_for_its_backoff_before_it_is_reported() {
    let fail = webhook("fail", "s", &["order.paid"], true);
    let w = world(&[&fail]).await;
    let records = batch(&w.queue, vec![job_for(&fail).to_body()]).await;
    assert_eq!(w.fanout.process(records, None).await.len(), 1);
    // Without the visibility change the message would be visible again at once
    // (the poller has not deleted it); with it, it stays hidden for ~20 s.
    w.queue
        .change_visibility("no-such-receipt", Duration::ZERO)
        .await
        .expect("noop");
    assert!(w
        .queue
        .receive(10, Duration::from_millis(50))
        .await
        .expect("receive")
        .is_empty());
    assert_eq!(w.queue.len(), 1);
    let jobs = w
        .log
        .integration_jobs(&store("s"), fail.id, Page::default())
        .await
        .expect("jobs")
        .0;
    assert_eq!(jobs[0].status, JobStatus::Retrying);
    assert_eq!(jobs[0].last_status_code, Some(500));
}

#[tokio::test]
async fn the_last_attempt_is_marked_failed_and_the_queue_then_dead_letters_it() {
    let fail = webhook("fail", "s", &["order.paid"], true);
    let store_ = seeded(&[&fail]).await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 2));
    let log = Arc::new(MemoryDeliveryLog::default());
    let retry = RetryPolicy {
        delays: vec![Duration::ZERO],
        last_attempt_by: Duration::from_secs(60),
        jitter: 0.0,
    };
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store_, Duration::ZERO)),
        Arc::new(Scripted),
        log.clone(),
        queue.clone(),
        retry,
    ));
    let body = job_for(&fail).to_body();
    let first = batch(&queue, vec![body]).await;
    assert_eq!(fanout.process(first, None).await.len(), 1);
    let second = queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(second[0].receive_count, 2);
    assert_eq!(fanout.process(second, None).await.len(), 1);
    assert!(queue
        .receive(10, Duration::from_millis(100))
        .await
        .expect("receive")
        .is_empty());
    assert_eq!(queue.dead_letters().len(), 1);
    let (logs, total) = log
        .integration_logs(&store("s"), fail.id, Page::default())
        .await
        .expect("logs");
    assert_eq!(total, 2, "one log per attempt");
    assert_eq!((logs[0].attempt, logs[1].attempt), (2, 1), "newest first");
    let jobs = log
        .integration_jobs(&store("s"), fail.id, Page::default())
        .await
        .expect("jobs")
        .0;
    assert_eq!((jobs[0].status, jobs[0].attempts), (JobStatus::Failed, 2));
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
    assert_eq!(failed, vec![id_of(&records, &slow_body)]);
    assert!(Instant::now() < deadline, "answered before the deadline");
    let logs = w
        .log
        .integration_logs(&store("s"), slow.id, Page::default())
        .await
        .expect("logs")
        .0;
    assert_eq!(logs.len(), 1, "the cut attempt is in the log");
    assert!(!logs[0].succeeded);
    assert_eq!(
        logs[0].error_detail.as_deref(),
        Some("cut short: the invocation was ending before the attempt finished")
    );
    let jobs = w
        .log
        .integration_jobs(&store("s"), slow.id, Page::default())
        .await
        .expect("jobs")
        .0;
    assert_eq!(jobs[0].status, JobStatus::Retrying);
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
    assert_eq!(failed, vec![records[0].message_id.clone()]);
    assert!(
        Instant::now() - started < Duration::from_secs(60),
        "not the full minute"
    );
    let logs = log
        .integration_logs(&store("s"), slow.id, Page::default())
        .await
        .expect("logs")
        .0;
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
        job.job_id = crate::job::job_id(&job.event.id, i.id);
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
    async fn store_logs(
        &self,
        _: &StoreId,
        _: Page,
    ) -> crate::error::Result<(Vec<Attempt>, usize)> {
        Ok((Vec::new(), 0))
    }
    async fn integration_logs(
        &self,
        _: &StoreId,
        _: Uuid,
        _: Page,
    ) -> crate::error::Result<(Vec<Attempt>, usize)> {
        Ok((Vec::new(), 0))
    }
    async fn integration_jobs(
        &self,
        _: &StoreId,
        _: Uuid,
        _: Page,
    ) -> crate::error::Result<(Vec<JobRecord>, usize)> {
        Ok((Vec::new(), 0))
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
    job.job_id = crate::job::job_id(&job.event.id, i.id);
    let body = job.to_body();
    let mut records = Vec::new();
    for mut r in batch(queue, vec![body.clone()]).await {
        if r.body == body {
            r.receive_count = 6;
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
        .expect("store")
        .expect("valid");
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
            job.job_id = crate::job::job_id(&job.event.id, ok.id);
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
            &s["retried"]
        ],
        [4, 2, 1, 0, 1, 1].map(serde_json::Value::from).each_ref()
    );
}
