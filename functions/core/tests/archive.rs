//! The event archive and replay from it, through moto (loopback): events ingested
//! (a large one's payload stored in S3), their jobs through SQS, delivered by the
//! fan-out to a webhook on 127.0.0.1 and logged (with the job's body, the archive) in
//! DynamoDB; then replayed by job and by range, as new jobs naming the ones they
//! replay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use herald_core::attempt::{JobRecord, JobStatus};
use herald_core::aws::attempt_log::DynamoDeliveryLog;
use herald_core::aws::claims::DynamoIdempotency;
use herald_core::aws::dynamo::DynamoIntegrationStore;
use herald_core::aws::local::{create_queues, moto_config};
use herald_core::aws::s3::S3Bodies;
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::cache::IntegrationCache;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::TargetDeliverer;
use herald_core::fanout::Fanout;
use herald_core::filter::Filter;
use herald_core::ingest::{EventStatus, Ingest, IngestSettings};
use herald_core::memory::{MemoryIdempotency, MemoryIntegrationStore};
use herald_core::model::{Integration, StoreId};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_core::page::Page;
use herald_core::ports::{DeliveryLog, EventBodies, IntegrationStore, JobSource};
use herald_core::replay::{replay_job, replay_range, Archive, JobReplay, RangeRequest};
use herald_core::retry::RetryPolicy;
use herald_core::testkit::webhook_to;
use serde_json::{json, Value};
use uuid::Uuid;

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A webhook receiver on 127.0.0.1 keeping what is posted to `/hook`; it answers 503
/// while `failing` is set.
async fn receiver(failing: Arc<AtomicBool>) -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State((seen, failing)): State<(Seen, Arc<AtomicBool>)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    if failing.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().expect("lock").push((headers, body));
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state((seen.clone(), failing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// The pipeline on moto: the internal queue, the bucket, the table (log and claims).
struct Peers {
    store: StoreId,
    hook: Integration,
    queue: Arc<SqsJobQueue>,
    log: Arc<DynamoDeliveryLog>,
    claims: DynamoIdempotency,
    ingest: Ingest,
    fanout: Fanout,
    seen: Seen,
    failing: Arc<AtomicBool>,
}

impl Peers {
    async fn new() -> Self {
        let sdk = moto_config(&endpoint()).await.expect("moto");
        let suffix = Uuid::new_v4().simple().to_string();
        let (queue_url, dlq_url) = create_queues(&sdk, &format!("jobs-{suffix}"), 10, 180)
            .await
            .expect("queues");
        let queue =
            Arc::new(SqsJobQueue::from_sdk(&sdk, queue_url).with_dead_letter_queue(dlq_url));
        let bodies = S3Bodies::from_sdk(&sdk, format!("herald-events-{suffix}"));
        bodies.create_bucket().await.expect("bucket");
        let bodies: Arc<dyn EventBodies> = Arc::new(bodies);
        let table = format!("herald-{suffix}");
        DynamoIntegrationStore::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
            .await
            .expect("table");
        let log = Arc::new(DynamoDeliveryLog::from_sdk(
            &sdk,
            table.clone(),
            Duration::from_secs(7 * 24 * 3600),
        ));
        let failing = Arc::new(AtomicBool::new(false));
        let (url, seen) = receiver(failing.clone()).await;
        let store = StoreId::parse("s1").expect("store");
        let hook = webhook_to("hook", store.as_str(), &url);
        let integrations = Arc::new(MemoryIntegrationStore::new());
        integrations.insert(&hook, 100).await.expect("seed");
        let cache = Arc::new(IntegrationCache::new(integrations, Duration::ZERO));
        let ingest = Ingest::new(
            cache.clone(),
            Arc::new(MemoryIdempotency::new()),
            queue.clone(),
            IngestSettings::default(),
        )
        .with_bodies(Some(bodies.clone()));
        let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")]);
        let deliverer = TargetDeliverer::new(Arc::new(
            WebhookDeliverer::new(guard, Duration::from_secs(20)).expect("client"),
        ));
        // No retry: a failed attempt is the job's last (it fails, to the DLQ).
        let once = RetryPolicy {
            delays: Vec::new(),
            ..RetryPolicy::default()
        };
        let fanout = Fanout::new(cache, Arc::new(deliverer), log.clone(), queue.clone(), once)
            .with_bodies(Some(bodies));
        Self {
            store,
            hook,
            queue,
            log,
            claims: DynamoIdempotency::from_sdk(&sdk, table),
            ingest,
            fanout,
            seen,
            failing,
        }
    }

    async fn send(&self, events: &[Value]) {
        let results = self
            .ingest
            .ingest(events, Some(&self.store), |_| "/data".into())
            .await;
        for r in results {
            assert_eq!(r.status, EventStatus::Accepted { jobs: 1 });
        }
    }

    /// Delivers what the internal queue holds (`n` jobs).
    async fn fan_out(&self, n: usize) {
        let mut records = Vec::new();
        while records.len() < n {
            let got = self
                .queue
                .receive(10, Duration::from_secs(1))
                .await
                .expect("receive");
            assert!(!got.is_empty(), "{} of {n} jobs received", records.len());
            records.extend(got);
        }
        assert_eq!(records.len(), n);
        assert!(self.fanout.process(records, None).await.is_empty());
    }

    async fn jobs(&self) -> Vec<JobRecord> {
        self.log
            .integration_jobs(
                &self.store,
                self.hook.id,
                &Filter::default(),
                Page::default(),
            )
            .await
            .expect("jobs")
            .items
    }
}

fn order(id: &str, note: &str) -> Value {
    json!({"id": id, "type": "order.paid",
           "payload": {"data": {"id": id, "type": "order", "note": note}}})
}

fn webhook_id(headers: &HeaderMap) -> String {
    headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .expect("webhook-id")
        .to_owned()
}

#[tokio::test]
async fn a_delivered_job_small_or_stored_is_replayed_by_id_as_a_new_job_and_no_other_store_can_replay_it(
) {
    // GIVEN a small order and one whose payload is stored in S3, delivered and logged
    let peers = Peers::new().await;
    let small = order("evt-small", "s");
    let large = order("evt-large", &"x".repeat(400 * 1024));
    peers.send(&[small.clone(), large.clone()]).await;
    peers.fan_out(2).await;
    let first = peers.jobs().await;
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|j| j.status == JobStatus::Delivered));

    // WHEN another store asks to replay them, and then the store itself
    let other = StoreId::parse("s2").expect("store");
    for job in &first {
        let refused = replay_job(
            &*peers.log,
            &*peers.queue,
            &other,
            peers.hook.id,
            job.job_id,
        )
        .await
        .expect("replay");
        assert!(matches!(refused, JobReplay::NotFound), "{refused:?}");
    }
    let mut replays = Vec::new();
    for job in &first {
        match replay_job(
            &*peers.log,
            &*peers.queue,
            &peers.store,
            peers.hook.id,
            job.job_id,
        )
        .await
        .expect("replay")
        {
            JobReplay::Queued(new) => {
                assert_eq!(new.replay_of, Some(job.job_id));
                assert_ne!(new.job_id, job.job_id);
                replays.push((job.job_id, new.job_id));
            }
            other => panic!("{other:?}"),
        }
    }
    peers.fan_out(2).await;

    // THEN each order reached the webhook twice, whole, under two webhook-ids
    let seen = peers.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    for event in [&small, &large] {
        let posts: Vec<&(HeaderMap, Value)> = seen
            .iter()
            .filter(|(_, body)| body["payload"]["data"]["id"] == event["id"])
            .collect();
        assert_eq!(posts.len(), 2);
        assert!(posts.iter().all(|(_, b)| b["payload"] == event["payload"]));
        assert_ne!(webhook_id(&posts[0].0), webhook_id(&posts[1].0));
    }
    // AND the jobs listing shows the replays, delivered, naming what they replay
    let jobs = peers.jobs().await;
    assert_eq!(jobs.len(), 4);
    for (old, new) in replays {
        let replay = jobs
            .iter()
            .find(|j| j.job_id == new)
            .expect("replay listed");
        assert_eq!(
            (replay.status, replay.replay_of),
            (JobStatus::Delivered, Some(old))
        );
        assert_eq!(
            replay.to_resource()["meta"]["replay_of"],
            json!(old.to_string())
        );
    }
}

#[tokio::test]
async fn a_range_replay_of_failed_jobs_sends_each_once_however_often_it_is_called() {
    // GIVEN two orders that failed (their last attempt: 503) and one delivered
    let peers = Peers::new().await;
    peers.failing.store(true, Ordering::SeqCst);
    peers
        .send(&[order("evt-f1", "a"), order("evt-f2", "b")])
        .await;
    peers.fan_out(2).await;
    peers.failing.store(false, Ordering::SeqCst);
    peers.send(&[order("evt-ok", "c")]).await;
    peers.fan_out(1).await;
    let statuses: Vec<JobStatus> = peers.jobs().await.iter().map(|j| j.status).collect();
    assert_eq!(statuses.len(), 3);
    assert_eq!(
        statuses.iter().filter(|s| **s == JobStatus::Failed).count(),
        2
    );

    // WHEN the failed jobs of the last hour are replayed, twice
    let request = RangeRequest::parse(&json!({"data": {
        "type": "replay", "since": (Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
        "status": "failed"}}))
    .expect("valid");
    let key = request.key(None);
    let ports = Archive {
        log: &*peers.log,
        queue: &*peers.queue,
        claims: &peers.claims,
        ttl: Duration::from_secs(3600),
    };
    let first = replay_range(&ports, &peers.store, peers.hook.id, &request, &key)
        .await
        .expect("replay");
    let second = replay_range(&ports, &peers.store, peers.hook.id, &request, &key)
        .await
        .expect("replay");

    // THEN the first sent the two, the second none (both already replayed), and the
    // range was done each time
    assert_eq!(
        (
            first.replayed,
            first.already_replayed,
            first.not_archived,
            first.next
        ),
        (2, 0, 0, None)
    );
    assert_eq!(
        (
            second.replayed,
            second.already_replayed,
            second.not_archived,
            second.next
        ),
        (0, 2, 0, None)
    );
    // AND the receiver got the two failed orders once more, and nothing else
    peers.fan_out(2).await;
    let got = peers
        .queue
        .receive(10, Duration::ZERO)
        .await
        .expect("receive");
    assert!(got.is_empty(), "{} more jobs queued", got.len());
    let mut ids: Vec<String> = peers
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, b)| b["payload"]["data"]["id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["evt-f1", "evt-f2", "evt-ok"]);
}
