use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::memory::{MemoryIdempotency, MemoryQueue};
use crate::ports::JobSource;
use crate::testkit::{seeded, store, webhook};

struct World {
    ingest: Arc<Ingest>,
    queue: Arc<MemoryQueue>,
}

async fn world(integrations: &[&crate::model::Integration]) -> World {
    let store = seeded(integrations).await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let ingest = Arc::new(Ingest::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(MemoryIdempotency::new()),
        queue.clone(),
        IngestSettings {
            send_backoff: Duration::from_millis(1),
            ..IngestSettings::default()
        },
    ));
    World { ingest, queue }
}

fn event(id: &str, kind: &str) -> Value {
    json!({"id": id, "type": kind, "payload": {"data": {"id": "r1", "type": "order"}}})
}

fn at(i: usize) -> String {
    format!("/data/{i}")
}

async fn queued(queue: &MemoryQueue) -> Vec<DeliveryJob> {
    let msgs = queue.receive(100, Duration::ZERO).await.expect("receive");
    msgs.iter()
        .map(|m| DeliveryJob::parse(&m.body).expect("job"))
        .collect()
}

#[tokio::test]
async fn one_job_is_queued_per_enabled_observing_integration() {
    let a = webhook("a", "s", &["order.paid"], true);
    let b = webhook("b", "s", &["order.paid", "cart.updated"], true);
    let disabled = webhook("c", "s", &["order.paid"], false);
    let other_store = webhook("d", "t", &["order.paid"], true);
    let w = world(&[&a, &b, &disabled, &other_store]).await;
    let results = w
        .ingest
        .ingest(
            &[event("e1", "order.paid"), event("e2", "address.updated")],
            Some(&store("s")),
            at,
        )
        .await;
    assert_eq!(results[0].status, EventStatus::Accepted { jobs: 2 });
    assert_eq!(results[1].status, EventStatus::Accepted { jobs: 0 });
    let jobs = queued(&w.queue).await;
    let mut targets: Vec<_> = jobs.iter().map(|j| j.integration_id).collect();
    targets.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(targets, expected);
    assert!(jobs.iter().all(|j| j.event.id == "e1" && j.store_id == "s"));
}

#[tokio::test]
async fn an_invalid_event_is_reported_and_its_valid_siblings_are_queued() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    let results = w
        .ingest
        .ingest(
            &[
                json!({"type": "order.nope", "payload": {}}),
                event("e1", "order.paid"),
            ],
            Some(&store("s")),
            at,
        )
        .await;
    let EventStatus::Invalid(errors) = &results[0].status else {
        panic!("{:?}", results[0])
    };
    assert_eq!(
        errors
            .iter()
            .map(|e| e.pointer.as_str())
            .collect::<Vec<_>>(),
        vec!["/data/0/type", "/data/0/payload/data"]
    );
    assert_eq!(results[1].status, EventStatus::Accepted { jobs: 1 });
    assert_eq!(queued(&w.queue).await.len(), 1);
}

#[tokio::test]
async fn the_same_event_sent_twice_is_queued_once() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    let first = w
        .ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;
    let second = w
        .ingest
        .ingest(
            &[event("e1", "order.paid"), event("e1", "order.paid")],
            Some(&store("s")),
            at,
        )
        .await;
    assert_eq!(first[0].status, EventStatus::Accepted { jobs: 1 });
    assert_eq!(second[0].status, EventStatus::Duplicate);
    assert_eq!(second[1].status, EventStatus::Duplicate);
    assert_eq!(queued(&w.queue).await.len(), 1);
    // Another store may use the same id.
    let b = webhook("b", "t", &["order.paid"], true);
    let w2 = world(&[&a, &b]).await;
    w2.ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;
    let other = w2
        .ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("t")), at)
        .await;
    assert_eq!(other[0].status, EventStatus::Accepted { jobs: 1 });
}

#[tokio::test]
async fn concurrent_duplicates_create_their_jobs_once() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let ingest = w.ingest.clone();
        tasks.push(tokio::spawn(async move {
            ingest
                .ingest(&[event("same", "order.paid")], Some(&store("s")), at)
                .await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.expect("task")[0].status == (EventStatus::Accepted { jobs: 1 }) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(queued(&w.queue).await.len(), 1);
}

#[tokio::test]
async fn entries_the_queue_fails_are_sent_again() {
    let integrations: Vec<_> = (0..12)
        .map(|i| webhook(&format!("w{i}"), "s", &["order.paid"], true))
        .collect();
    let refs: Vec<_> = integrations.iter().collect();
    let w = world(&refs).await;
    w.queue.fail_next_sends(5);
    let results = w
        .ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;
    assert_eq!(results[0].status, EventStatus::Accepted { jobs: 12 });
    assert_eq!(queued(&w.queue).await.len(), 12);
}

#[tokio::test]
async fn an_event_that_cannot_be_queued_is_reported_failed_and_can_be_resent() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    w.queue.fail_next_sends(1_000);
    let results = w
        .ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;
    assert!(
        matches!(results[0].status, EventStatus::Failed { .. }),
        "{:?}",
        results[0]
    );
    assert_eq!(results[0].to_json()["status"], "failed");
    w.queue.fail_next_sends(0);
    let again = w
        .ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;
    assert_eq!(again[0].status, EventStatus::Accepted { jobs: 1 });
    assert_eq!(queued(&w.queue).await.len(), 1);
}

#[tokio::test]
async fn events_without_an_id_get_distinct_ids() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    let e = json!({"type": "order.paid", "payload": {"data": {}}});
    let results = w
        .ingest
        .ingest(&[e.clone(), e], Some(&store("s")), at)
        .await;
    assert_ne!(results[0].id, results[1].id);
    assert_eq!(queued(&w.queue).await.len(), 2);
}

#[tokio::test]
async fn one_store_query_serves_a_whole_request_even_with_the_cache_off() {
    let integrations: Vec<_> = (0..3)
        .map(|i| webhook(&format!("w{i}"), "s", &["order.paid"], true))
        .collect();
    let refs: Vec<_> = integrations.iter().collect();
    let counting = Arc::new(crate::testkit::Counting::new(seeded(&refs).await));
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(counting.clone(), Duration::ZERO)),
        Arc::new(MemoryIdempotency::new()),
        queue.clone(),
        IngestSettings::default(),
    );
    let events: Vec<_> = (0..20)
        .map(|i| event(&format!("e{i}"), "order.paid"))
        .collect();
    let results = ingest.ingest(&events, Some(&store("s")), at).await;
    assert!(results
        .iter()
        .all(|r| r.status == EventStatus::Accepted { jobs: 3 }));
    assert_eq!(counting.reads(), 1);
    assert_eq!(queued(&queue).await.len(), 60);
}

#[tokio::test]
async fn a_large_order_observed_by_ten_integrations_is_queued_in_batches_sqs_takes() {
    // GIVEN ten integrations observing one event near the largest accepted
    let integrations: Vec<_> = (0..10)
        .map(|i| webhook(&format!("w{i}"), "s", &["order.paid"], true))
        .collect();
    let refs: Vec<_> = integrations.iter().collect();
    let store_ = seeded(&refs).await;
    let queue = Arc::new(crate::testkit::Recording::new(Arc::new(MemoryQueue::new(
        Duration::from_secs(60),
        6,
    ))));
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(store_, Duration::from_secs(5))),
        Arc::new(MemoryIdempotency::new()),
        queue.clone(),
        IngestSettings::default(),
    );
    let blob = "x".repeat(crate::job::MAX_INLINE_PAYLOAD - 200);
    let large = json!({"id": "big", "type": "order.paid", "payload": {"data": {"blob": blob}}});

    // WHEN it is ingested
    let results = ingest.ingest(&[large], Some(&store("s")), at).await;

    // THEN every job is queued, in batches within SQS's count and byte limits
    assert_eq!(results[0].status, EventStatus::Accepted { jobs: 10 });
    let batches = queue.batches();
    for b in &batches {
        assert!(
            b.sizes.len() <= crate::queue::MAX_BATCH_ENTRIES,
            "{:?}",
            b.sizes
        );
        assert!(
            b.sizes.iter().sum::<usize>() <= crate::queue::MAX_BATCH_BYTES,
            "{:?}",
            b.sizes
        );
        assert!(b
            .sizes
            .iter()
            .all(|&s| s > crate::job::MAX_INLINE_PAYLOAD - 200));
    }
    assert_eq!(
        batches.iter().map(|b| b.sizes.len()).collect::<Vec<_>>(),
        [4, 4, 2]
    );
    assert_eq!(queued(&queue.inner).await.len(), 10);
}

/// Claims as [`MemoryIdempotency`] makes them, and the event ids asked for.
#[derive(Default)]
struct CountingClaims {
    inner: MemoryIdempotency,
    asked: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl IdempotencyStore for CountingClaims {
    async fn take(
        &self,
        store: &StoreId,
        event_id: &str,
        ttl: Duration,
    ) -> crate::error::Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.asked.lock().expect("lock").push(event_id.to_owned());
        self.inner.take(store, event_id, ttl).await
    }

    async fn release(&self, store: &StoreId, event_id: &str) -> crate::error::Result<()> {
        self.inner.release(store, event_id).await
    }
}

#[tokio::test]
async fn an_event_without_an_id_is_queued_without_a_claim_and_one_with_an_id_is_claimed() {
    let a = webhook("a", "s", &["order.paid"], true);
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let claims = Arc::new(CountingClaims::default());
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(
            seeded(&[&a]).await,
            Duration::from_secs(5),
        )),
        claims.clone(),
        queue.clone(),
        IngestSettings::default(),
    );
    let unnamed = json!({"type": "order.paid", "payload": {"data": {}}});
    let results = ingest
        .ingest(
            &[unnamed.clone(), event("mine", "order.paid"), unnamed],
            Some(&store("s")),
            at,
        )
        .await;
    assert!(results
        .iter()
        .all(|r| r.status == EventStatus::Accepted { jobs: 1 }));
    assert_eq!(*claims.asked.lock().expect("lock"), ["mine"]);
    assert_eq!(queued(&queue).await.len(), 3);
}

/// The memory queue, refusing every job of one integration while `refusing` holds (an
/// entry SQS keeps failing).
struct Refusing {
    inner: Arc<MemoryQueue>,
    integration: uuid::Uuid,
    refusing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl JobQueue for Refusing {
    async fn send_batch(
        &self,
        jobs: &[OutgoingJob],
    ) -> crate::error::Result<Vec<crate::ports::SendFailure>> {
        let refused = |j: &OutgoingJob| {
            self.refusing.load(std::sync::atomic::Ordering::SeqCst)
                && j.body.contains(&self.integration.to_string())
        };
        let (no, yes): (Vec<_>, Vec<_>) = jobs.iter().cloned().partition(refused);
        let mut failed = self.inner.send_batch(&yes).await?;
        failed.extend(no.into_iter().map(|j| crate::ports::SendFailure {
            entry_id: j.entry_id,
            reason: "throttled".into(),
            retryable: true,
        }));
        Ok(failed)
    }

    async fn change_visibility(&self, receipt: &str, delay: Duration) -> crate::error::Result<()> {
        self.inner.change_visibility(receipt, delay).await
    }

    async fn dead_letter(
        &self,
        jobs: &[OutgoingJob],
    ) -> crate::error::Result<Vec<crate::ports::SendFailure>> {
        self.inner.dead_letter(jobs).await
    }
}

#[tokio::test]
async fn a_resent_event_that_was_partly_queued_gets_the_same_job_ids_so_receivers_deduplicate() {
    // GIVEN two integrations observing order.paid, the second one's job refused
    let a = webhook("a", "s", &["order.paid"], true);
    let b = webhook("b", "s", &["order.paid"], true);
    let inner = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let queue = Arc::new(Refusing {
        inner: inner.clone(),
        integration: b.id,
        refusing: true.into(),
    });
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(
            seeded(&[&a, &b]).await,
            Duration::from_secs(5),
        )),
        Arc::new(MemoryIdempotency::new()),
        queue.clone(),
        IngestSettings {
            send_backoff: Duration::from_millis(1),
            ..IngestSettings::default()
        },
    );
    let first = ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;
    assert!(
        matches!(first[0].status, EventStatus::Failed { .. }),
        "{first:?}"
    );
    let delivered = queued(&inner).await;
    assert_eq!(delivered.len(), 1, "a's job was queued");

    // WHEN the sender sends it again, later, and the queue takes everything
    tokio::time::sleep(Duration::from_millis(5)).await;
    queue
        .refusing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let again = ingest
        .ingest(&[event("e1", "order.paid")], Some(&store("s")), at)
        .await;

    // THEN both jobs are queued, and a's has the id it had the first time
    assert_eq!(again[0].status, EventStatus::Accepted { jobs: 2 });
    let resent = queued(&inner).await;
    let a_again = resent
        .iter()
        .find(|j| j.integration_id == a.id)
        .expect("a's job");
    assert_eq!(a_again.job_id, delivered[0].job_id);
    assert_eq!(a_again.enqueued_at, delivered[0].enqueued_at);
}

/// A store of bodies that fails every put, or counts them.
#[derive(Default)]
struct Bodies {
    fail: bool,
    inner: crate::memory::MemoryBodies,
    puts: std::sync::Mutex<Vec<(String, usize)>>,
}

#[async_trait::async_trait]
impl EventBodies for Bodies {
    async fn put(&self, key: &str, body: bytes::Bytes) -> crate::error::Result<()> {
        if self.fail {
            return Err(crate::error::Error::Backend {
                service: "S3",
                message: "SlowDown".into(),
                retryable: true,
            });
        }
        self.puts
            .lock()
            .expect("lock")
            .push((key.to_owned(), body.len()));
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> crate::error::Result<Option<bytes::Bytes>> {
        self.inner.get(key).await
    }
    async fn open(
        &self,
        key: &str,
        valid: Duration,
    ) -> crate::error::Result<Option<crate::ports::BodyAt>> {
        self.inner.open(key, valid).await
    }
}

fn large(id: &str) -> Value {
    json!({"id": id, "type": "order.paid",
           "payload": {"data": {"id": "o1", "type": "order"}, "included": {"blob": "x".repeat(1024 * 1024)}}})
}

#[tokio::test]
async fn a_payload_too_large_for_a_message_is_stored_once_and_each_job_carries_its_claim_check() {
    // GIVEN two integrations observing an order of over a MiB, and a body store
    let a = webhook("a", "s", &["order.paid"], true);
    let b = webhook("b", "s", &["order.paid"], true);
    let w = world(&[&a, &b]).await;
    let bodies = Arc::new(Bodies::default());
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(
            seeded(&[&a, &b]).await,
            Duration::ZERO,
        )),
        Arc::new(MemoryIdempotency::new()),
        w.queue.clone(),
        IngestSettings::default(),
    )
    .with_bodies(Some(bodies.clone()));
    // WHEN it is ingested
    let results = ingest.ingest(&[large("big")], Some(&store("s")), at).await;
    // THEN it is accepted, its payload stored once under its SHA-256
    assert_eq!(results[0].status, EventStatus::Accepted { jobs: 2 });
    let payload = Payload::new(&large("big")["payload"]);
    let sha = crate::job::Stored::parts(&store("s"), &payload)
        .expect("stored")
        .stored
        .sha256;
    assert_eq!(
        *bodies.puts.lock().expect("lock"),
        [(format!("events/s/{sha}"), payload.text().len())]
    );
    // AND each job names it and carries no payload
    let jobs = queued(&w.queue).await;
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert_eq!(
            job.stored.as_ref().map(|s| s.sha256.as_str()),
            Some(sha.as_str())
        );
        assert!(job.event.payload.is_absent());
        assert!(job.to_body().len() < 1024, "{}", job.to_body());
    }
}

#[tokio::test]
async fn an_event_whose_payload_could_not_be_stored_is_failed_and_its_claim_released() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(seeded(&[&a]).await, Duration::ZERO)),
        Arc::new(MemoryIdempotency::new()),
        w.queue.clone(),
        IngestSettings::default(),
    )
    .with_bodies(Some(Arc::new(Bodies {
        fail: true,
        ..Bodies::default()
    })));
    let results = ingest.ingest(&[large("big")], Some(&store("s")), at).await;
    assert_eq!(
        results[0].status,
        EventStatus::Failed {
            reason: "the event could not be queued; send it again".into()
        }
    );
    assert!(queued(&w.queue).await.is_empty());
    // The claim was given back: the resend is not a duplicate.
    let again = ingest.ingest(&[large("big")], Some(&store("s")), at).await;
    assert_ne!(again[0].status, EventStatus::Duplicate);
}

#[tokio::test]
async fn without_a_body_store_a_payload_too_large_for_a_message_is_refused_with_its_pointer() {
    let a = webhook("a", "s", &["order.paid"], true);
    let w = world(&[&a]).await;
    let results = w
        .ingest
        .ingest(&[large("big")], Some(&store("s")), at)
        .await;
    assert_eq!(
        results[0].status,
        EventStatus::Invalid(vec![crate::validate::FieldError {
            pointer: "/data/0/payload".into(),
            detail: format!("is larger than {MAX_INLINE_PAYLOAD} bytes, the most a queue message carries, and this deployment stores no larger ones (HERALD_EVENT_BUCKET)"),
        }])
    );
}
