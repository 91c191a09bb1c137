//! Ingest against real AWS APIs on moto (loopback): DynamoDB for integrations and
//! event claims, SQS for the internal queue.

use std::sync::Arc;
use std::time::Duration;

use herald_core::aws::claims::DynamoIdempotency;
use herald_core::aws::dynamo::DynamoIntegrationStore;
use herald_core::aws::local::{bootstrap, moto_config};
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::cache::IntegrationCache;
use herald_core::ingest::{EventStatus, Ingest, IngestSettings};
use herald_core::job::DeliveryJob;
use herald_core::model::{Integration, StoreId};
use herald_core::ports::{IdempotencyStore, IntegrationStore, JobSource};
use herald_core::testkit::webhook;
use serde_json::json;
use uuid::Uuid;

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

fn serial_endpoint() -> String {
    std::env::var("MOTO_SERIAL_ENDPOINT").expect("MOTO_SERIAL_ENDPOINT is not set: run `make test`")
}

fn hook(observes: &[&str]) -> Integration {
    webhook("hook", "s", observes, true)
}

struct World {
    ingest: Arc<Ingest>,
    queue: SqsJobQueue,
    idempotency: DynamoIdempotency,
}

async fn world(integrations: &[Integration]) -> World {
    world_at(&endpoint(), integrations).await
}

async fn world_at(endpoint: &str, integrations: &[Integration]) -> World {
    let sdk = moto_config(endpoint).await.expect("moto config");
    let suffix = Uuid::new_v4().simple().to_string();
    let table = format!("ingest-{suffix}");
    let (queue_url, _) = bootstrap(&sdk, &table, &format!("jobs-{suffix}"), 6)
        .await
        .expect("bootstrap");
    let store = Arc::new(DynamoIntegrationStore::from_sdk(&sdk, table.clone()));
    for i in integrations {
        store.insert(i, 100).await.expect("seed");
    }
    let queue = SqsJobQueue::from_sdk(&sdk, queue_url);
    let idempotency = DynamoIdempotency::from_sdk(&sdk, table);
    let ingest = Arc::new(Ingest::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(idempotency.clone()),
        Arc::new(queue.clone()),
        IngestSettings::default(),
    ));
    World {
        ingest,
        queue,
        idempotency,
    }
}

/// Drains the queue (bounded: 20 receives).
async fn drain(queue: &SqsJobQueue) -> Vec<DeliveryJob> {
    let mut jobs = Vec::new();
    for _ in 0..20 {
        let batch = queue.receive(10, Duration::ZERO).await.expect("receive");
        if batch.is_empty() {
            break;
        }
        for m in batch {
            jobs.push(DeliveryJob::parse(&m.body).expect("job"));
            queue.delete(&m.receipt).await.expect("delete");
        }
    }
    jobs
}

#[tokio::test]
async fn concurrent_duplicates_queue_exactly_one_set_of_jobs() {
    let a = hook(&["order.paid"]);
    let b = hook(&["order.paid"]);
    // Racing claims need DynamoDB's isolation of conditional writes: the serial moto.
    let serial = std::env::var("MOTO_SERIAL_ENDPOINT")
        .expect("MOTO_SERIAL_ENDPOINT is not set: run `make test`");
    let w = world_at(&serial, &[a.clone(), b.clone()]).await;
    let store = StoreId::parse("s").expect("store");
    let event =
        json!({"id": "evt-concurrent", "type": "order.paid", "payload": {"data": {"id": "o1"}}});
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let ingest = w.ingest.clone();
        let event = event.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            ingest
                .ingest(&[event], Some(&store), |_| "/data".into())
                .await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task").remove(0).status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == EventStatus::Accepted { jobs: 2 })
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == EventStatus::Duplicate)
            .count(),
        7,
        "{statuses:?}"
    );
    let jobs = drain(&w.queue).await;
    let mut targets: Vec<_> = jobs.iter().map(|j| j.integration_id).collect();
    targets.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(targets, expected);
}

#[tokio::test]
async fn a_batch_of_events_is_queued_in_batches_of_ten() {
    let integrations: Vec<_> = (0..3).map(|_| hook(&["cart.updated"])).collect();
    let w = world(&integrations).await;
    let store = StoreId::parse("s").expect("store");
    let events: Vec<_> = (0..9)
        .map(|i| json!({"id": format!("evt-{i}"), "type": "cart.updated", "payload": {"data": {"id": i.to_string()}}}))
        .collect();
    let results = w
        .ingest
        .ingest(&events, Some(&store), |i| format!("/data/{i}"))
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.status == EventStatus::Accepted { jobs: 3 }),
        "{results:?}"
    );
    assert_eq!(drain(&w.queue).await.len(), 27);
}

#[tokio::test]
async fn a_claim_given_back_and_taken_again_keeps_its_first_time_so_a_resends_jobs_keep_their_ids()
{
    let w = world(&[]).await;
    let store = StoreId::parse("s").expect("store");
    let hour = Duration::from_secs(3600);
    let first = w.idempotency.take(&store, "e1", hour).await.expect("take");
    assert!(first.is_some());
    assert_eq!(
        w.idempotency.take(&store, "e1", hour).await.expect("held"),
        None
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    w.idempotency.release(&store, "e1").await.expect("release");
    assert_eq!(
        w.idempotency.take(&store, "e1", hour).await.expect("again"),
        first
    );
    assert_eq!(
        w.idempotency.take(&store, "e1", hour).await.expect("held"),
        None
    );
    // Giving back a claim nobody took writes nothing.
    w.idempotency
        .release(&store, "never")
        .await
        .expect("release");
    assert!(w
        .idempotency
        .take(&store, "never", hour)
        .await
        .expect("take")
        .is_some());
}

#[tokio::test]
async fn an_expired_claim_can_be_taken_again_although_ttl_has_not_deleted_it() {
    let w = world(&[]).await;
    let store = StoreId::parse("s").expect("store");
    assert!(w
        .idempotency
        .claim(&store, "e1", Duration::ZERO)
        .await
        .expect("claim"));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(w
        .idempotency
        .claim(&store, "e1", Duration::from_secs(60))
        .await
        .expect("claim"));
    assert!(!w
        .idempotency
        .claim(&store, "e1", Duration::from_secs(60))
        .await
        .expect("claim"));
    w.idempotency.release(&store, "e1").await.expect("release");
    assert!(w
        .idempotency
        .claim(&store, "e1", Duration::from_secs(60))
        .await
        .expect("claim"));
}

#[tokio::test]
async fn a_requests_claims_are_taken_together_and_exactly_the_ones_taken_before_are_duplicates() {
    // GIVEN three ids claimed before (one of them expired), among 150: more than one
    // transaction holds
    let w = world(&[]).await;
    let store = StoreId::parse("s").expect("store");
    let ttl = Duration::from_secs(60);
    for (id, ttl) in [("b-3", ttl), ("b-120", ttl), ("b-40", Duration::ZERO)] {
        assert!(w.idempotency.claim(&store, id, ttl).await.expect("claim"));
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let keys: Vec<(StoreId, String)> = (0..150)
        .map(|i| (store.clone(), format!("b-{i}")))
        .collect();

    // WHEN they are claimed at once
    let claimed = w.idempotency.claim_all(&keys, ttl).await;

    // THEN exactly the two live claims are duplicates; the expired one is taken again
    let outcomes: Vec<bool> = claimed.into_iter().map(|c| c.expect("claim")).collect();
    let duplicates: Vec<usize> = (0..150).filter(|&i| !outcomes[i]).collect();
    assert_eq!(duplicates, vec![3, 120]);
    // AND a second time every one is taken already
    let again = w.idempotency.claim_all(&keys, ttl).await;
    assert!(again.into_iter().all(|c| !c.expect("claim")));
}

#[tokio::test]
async fn concurrent_requests_with_overlapping_ids_claim_each_id_once() {
    // On the one-request-at-a-time moto: it checks our conditions, not moto's
    // thread safety.
    let w = world_at(&serial_endpoint(), &[]).await;
    let store = StoreId::parse("s").expect("store");
    let ttl = Duration::from_secs(60);
    let idempotency = Arc::new(w.idempotency);
    // Four requests of 50 ids, each overlapping the next by half.
    let requests: Vec<_> = (0..4)
        .map(|r| {
            let (idempotency, store) = (idempotency.clone(), store.clone());
            tokio::spawn(async move {
                let keys: Vec<(StoreId, String)> = (r * 25..r * 25 + 50)
                    .map(|i| (store.clone(), format!("c-{i}")))
                    .collect();
                let claimed = idempotency.claim_all(&keys, ttl).await;
                keys.into_iter()
                    .zip(claimed)
                    .filter_map(|((_, id), c)| c.expect("claim").then_some(id))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut won: Vec<String> = Vec::new();
    for r in requests {
        won.extend(r.await.expect("request"));
    }
    won.sort();
    let mut expected: Vec<String> = (0..125).map(|i| format!("c-{i}")).collect();
    expected.sort();
    assert_eq!(won, expected, "each id claimed by exactly one request");
}
