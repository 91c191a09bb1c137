//! Fan-out against SQS and DynamoDB on moto (loopback): retries with visibility
//! changes, and the redrive to the DLQ after the last attempt.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use herald_core::attempt::JobStatus;
use herald_core::aws::attempt_log::DynamoDeliveryLog;
use herald_core::aws::dynamo::DynamoIntegrationStore;
use herald_core::aws::local::{bootstrap, moto_config};
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::cache::IntegrationCache;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::TargetDeliverer;
use herald_core::fanout::Fanout;
use herald_core::filter::{Filter, Listed};
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{Integration, StoreId};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_core::page::Page;
use herald_core::ports::{DeliveryLog, IntegrationStore, JobQueue, JobSource, OutgoingJob};
use herald_core::replay::redrive;
use herald_core::retry::RetryPolicy;
use herald_core::testkit::webhook_to;
use tokio::net::TcpListener;
use uuid::Uuid;

/// moto's SDK configuration (`MOTO_ENDPOINT`), and a new suffix for the names of a
/// test's own table and queues.
async fn moto() -> (aws_config::SdkConfig, String) {
    let endpoint =
        std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT is not set: run `make test`");
    let sdk = moto_config(&endpoint).await.expect("moto");
    (sdk, Uuid::new_v4().simple().to_string())
}

/// A webhook receiver on 127.0.0.1 that answers every POST to `/hook` with 503.
async fn refusing_receiver() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_job_that_keeps_failing_lands_in_the_dlq_after_its_last_attempt() {
    let (sdk, suffix) = moto().await;
    let table = format!("fanout-{suffix}");
    // Two attempts in all: one retry after 0 s.
    let retry = RetryPolicy {
        delays: vec![Duration::ZERO],
        last_attempt_by: Duration::from_secs(60),
        jitter: 0.0,
    };
    let (queue_url, dlq_url) = bootstrap(
        &sdk,
        &table,
        &format!("jobs-{suffix}"),
        herald_core::retry::MAX_RECEIVES,
    )
    .await
    .expect("bootstrap");

    let addr = refusing_receiver().await;

    let now = Utc::now();
    let integration = webhook_to("down", "s", &format!("http://{addr}/hook"));
    let store = Arc::new(DynamoIntegrationStore::from_sdk(&sdk, table.clone()));
    store.insert(&integration, 100).await.expect("seed");
    let queue =
        Arc::new(SqsJobQueue::from_sdk(&sdk, queue_url).with_dead_letter_queue(dlq_url.clone()));
    let log = Arc::new(DynamoDeliveryLog::from_sdk(
        &sdk,
        table,
        Duration::from_secs(3600),
    ));
    let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")]);
    let webhook = WebhookDeliverer::new(guard, Duration::from_secs(5)).expect("client");
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(TargetDeliverer::new(Arc::new(webhook))),
        log.clone(),
        queue.clone(),
        retry,
    ));

    let event = Event {
        id: "evt-dlq".into(),
        kind: "order.paid".into(),
        occurred_at: now,
        payload: serde_json::json!({"data": {}}).into(),
    };
    let job = DeliveryJob::new(&integration.store_id, integration.id, event, now);
    let failures = queue
        .send_batch(&[OutgoingJob {
            entry_id: "0".into(),
            body: job.to_body(),
            delay: Duration::ZERO,
        }])
        .await
        .expect("send");
    assert!(failures.is_empty());

    // Receive and process until the queue is empty, deleting what is acknowledged as
    // the event source mapping does (bounded: 10 rounds).
    let mut seen = Vec::new();
    let mut first_sent = None;
    for _ in 0..10 {
        let batch = queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        first_sent = first_sent.or(Some(batch[0].sent_at));
        seen.extend(batch.iter().map(|m| {
            let attempt = DeliveryJob::parse(&m.body).expect("job").attempt;
            (attempt, m.receive_count)
        }));
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        let failed = fanout.process(batch, None).await;
        assert!(failed.is_empty(), "{failed:?}");
        for receipt in receipts {
            queue.delete(&receipt).await.expect("delete");
        }
    }
    // Each attempt is its own message, received once.
    assert_eq!(seen, vec![(1, 1), (2, 1)]);

    let dlq = SqsJobQueue::from_sdk(&sdk, dlq_url);
    let dead = dlq
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive dlq");
    assert_eq!(dead.len(), 1, "the job is in the DLQ");
    let dead_job = DeliveryJob::parse(&dead[0].body).expect("job");
    assert_eq!(
        dead_job,
        DeliveryJob {
            attempt: 2,
            first_queued_at: dead_job.first_queued_at,
            ..job.clone()
        }
    );
    // SentTimestamp has milliseconds: the first message's, as the budget's start.
    assert_eq!(
        dead_job.first_queued_at.map(|t| t.timestamp_millis()),
        first_sent.map(|t| t.timestamp_millis())
    );

    let store_id = StoreId::parse("s").expect("store");
    let Listed {
        items: jobs,
        counted: _,
        ..
    } = log
        .integration_jobs(
            &store_id,
            integration.id,
            &Filter::default(),
            Page::default(),
        )
        .await
        .expect("jobs");
    assert_eq!((jobs[0].status, jobs[0].attempts), (JobStatus::Failed, 2));
    let (logs, total) = log
        .job_logs(&store_id, integration.id, job.job_id, Page::default())
        .await
        .expect("logs");
    assert_eq!(total, 2);
    assert!(logs.iter().all(|l| l.status_code == Some(503)));
}

#[tokio::test]
async fn replay_moves_exactly_one_integrations_dead_jobs_back_to_the_queue() {
    use aws_sdk_sqs::types::QueueAttributeName;
    use herald_core::aws::sqs::SqsDeadLetters;
    let (sdk, suffix) = moto().await;
    let (queue_url, dlq_url) =
        herald_core::aws::local::create_queues(&sdk, &format!("replay-{suffix}"), 6, 30)
            .await
            .expect("queues");
    let (s, t) = (
        StoreId::parse("s").expect("store"),
        StoreId::parse("t").expect("store"),
    );
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    let job = |store: &StoreId, integration: Uuid, n: usize| {
        DeliveryJob::new(
            store,
            integration,
            Event {
                id: format!("evt-{n}"),
                kind: "order.paid".into(),
                occurred_at: Utc::now(),
                payload: serde_json::json!({"data": {}}).into(),
            },
            Utc::now(),
        )
        .to_body()
    };
    let mine: Vec<String> = (0..3).map(|n| job(&s, x, n)).collect();
    let others = vec![
        job(&s, y, 10),
        job(&s, y, 11),
        job(&t, x, 12), // the same integration id under another store: never moved
        "not a job".to_owned(),
    ];
    let dlq = SqsJobQueue::from_sdk(&sdk, dlq_url.clone());
    let entries: Vec<OutgoingJob> = mine
        .iter()
        .chain(&others)
        .enumerate()
        .map(|(i, body)| OutgoingJob {
            entry_id: i.to_string(),
            body: body.clone(),
            delay: Duration::ZERO,
        })
        .collect();
    assert!(dlq.send_batch(&entries).await.expect("seed dlq").is_empty());

    let replay = SqsDeadLetters::from_sdk(
        &sdk,
        dlq_url.clone(),
        SqsJobQueue::from_sdk(&sdk, queue_url.clone()),
    );
    let done = redrive(&replay, &s, x, Duration::from_secs(20))
        .await
        .expect("redrive");
    assert_eq!((done.moved, done.scanned, done.complete), (3, 3, true));

    let queue = SqsJobQueue::from_sdk(&sdk, queue_url);
    let mut back = Vec::new();
    for _ in 0..5 {
        let got = queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        for m in got {
            assert_eq!(m.receive_count, 1, "a fresh message, a fresh retry budget");
            back.push(m.body.clone());
            queue.delete(&m.receipt).await.expect("delete");
        }
    }
    back.sort();
    let mut expected = mine.clone();
    expected.sort();
    assert_eq!(back, expected);

    let attrs = aws_sdk_sqs::Client::new(&sdk)
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("attributes");
    let count = |name: QueueAttributeName| -> usize {
        attrs
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        others.len(),
        "everything else stays in the DLQ"
    );
}

/// A dead-lettered job body of `integration` in `store`.
fn dead_job(store: &StoreId, integration: Uuid, n: usize) -> String {
    DeliveryJob::new(
        store,
        integration,
        Event {
            id: format!("evt-{n}"),
            kind: "order.paid".into(),
            occurred_at: Utc::now(),
            payload: serde_json::json!({"data": {}}).into(),
        },
        Utc::now(),
    )
    .to_body()
}

/// A fresh internal queue and DLQ on moto, the DLQ seeded with `bodies`: the replay
/// over them, an SQS client and the DLQ's URL.
async fn dead_lettered(
    bodies: &[String],
) -> (
    herald_core::aws::sqs::SqsDeadLetters,
    aws_sdk_sqs::Client,
    String,
) {
    let (sdk, suffix) = moto().await;
    let (queue_url, dlq_url) =
        herald_core::aws::local::create_queues(&sdk, &format!("replay-{suffix}"), 6, 30)
            .await
            .expect("queues");
    let dlq = SqsJobQueue::from_sdk(&sdk, dlq_url.clone());
    seed(&dlq, bodies).await;
    let replay = herald_core::aws::sqs::SqsDeadLetters::from_sdk(
        &sdk,
        dlq_url.clone(),
        SqsJobQueue::from_sdk(&sdk, queue_url),
    );
    (replay, aws_sdk_sqs::Client::new(&sdk), dlq_url)
}

/// Sends `bodies` to `queue`.
async fn seed(queue: &SqsJobQueue, bodies: &[String]) {
    let entries: Vec<OutgoingJob> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| OutgoingJob {
            entry_id: i.to_string(),
            body: body.clone(),
            delay: Duration::ZERO,
        })
        .collect();
    assert!(queue.send_batch(&entries).await.expect("seed").is_empty());
}

#[tokio::test]
async fn a_replay_leaves_other_stores_dead_letters_visible_to_their_own_replay_at_once() {
    // GIVEN two stores' dead-lettered jobs in one DLQ
    let (s, t) = (
        StoreId::parse("s").expect("store"),
        StoreId::parse("t").expect("store"),
    );
    let (x, z) = (Uuid::now_v7(), Uuid::now_v7());
    let bodies = [
        dead_job(&s, x, 1),
        dead_job(&t, z, 2),
        dead_job(&s, x, 3),
        dead_job(&t, z, 4),
    ];
    let (replay, _, _) = dead_lettered(&bodies).await;

    // WHEN store s replays its integration, and store t its own right after
    let first = redrive(&replay, &s, x, Duration::from_secs(20))
        .await
        .expect("redrive");
    let second = redrive(&replay, &t, z, Duration::from_secs(20))
        .await
        .expect("redrive");

    // THEN t's replay finds its jobs at once (s's scan did not keep them hidden), and
    // each replay counts only its own integration's messages
    assert_eq!(
        (second.moved, second.scanned, second.complete),
        (2, 2, true),
        "t's replay"
    );
    assert_eq!(
        (first.moved, first.scanned, first.complete),
        (2, 2, true),
        "s's replay"
    );
}

#[tokio::test]
async fn a_replay_does_not_claim_it_is_complete_while_another_holds_dead_letters() {
    // GIVEN a DLQ where another replay holds store t's job (received, hidden)
    let (s, t) = (
        StoreId::parse("s").expect("store"),
        StoreId::parse("t").expect("store"),
    );
    let (x, z) = (Uuid::now_v7(), Uuid::now_v7());
    let (replay, sqs, dlq_url) = dead_lettered(&[dead_job(&t, z, 1)]).await;
    let held = sqs
        .receive_message()
        .queue_url(&dlq_url)
        .visibility_timeout(60)
        .send()
        .await
        .expect("receive");
    assert_eq!(held.messages().len(), 1);
    let sdk_dlq = sqs
        .send_message()
        .queue_url(&dlq_url)
        .message_body(dead_job(&s, x, 2))
        .send()
        .await;
    assert!(sdk_dlq.is_ok(), "{sdk_dlq:?}");

    // WHEN store s replays its integration
    let done = redrive(&replay, &s, x, Duration::from_secs(20))
        .await
        .expect("redrive");

    // THEN it moves its job but does not call the DLQ scanned to its end: a message it
    // could not see may be one of its own
    assert_eq!((done.moved, done.scanned, done.complete), (1, 1, false));
}

#[tokio::test]
async fn a_longer_retry_window_is_more_delayed_attempts_on_sqs_and_then_the_dlq() {
    // GIVEN two integrations whose webhook is down, one with the default window and
    // one with a 60-minute window, under a schedule compressed 1,500 times (a 25-min
    // budget of 1 s): the default window makes 2 attempts, the hour 4 (waits of
    // 0, 0.6 and 1.6 s)
    let (sdk, suffix) = moto().await;
    let table = format!("fanout-{suffix}");
    let retry = RetryPolicy {
        delays: vec![Duration::ZERO],
        last_attempt_by: Duration::from_secs(1),
        jitter: 0.0,
    };
    let (queue_url, dlq_url) = bootstrap(
        &sdk,
        &table,
        &format!("jobs-{suffix}"),
        herald_core::retry::MAX_RECEIVES,
    )
    .await
    .expect("bootstrap");
    let addr = refusing_receiver().await;
    let now = Utc::now();
    let url = format!("http://{addr}/hook");
    let hook = |name: &str, window: Option<u32>| Integration {
        delivery: herald_core::model::DeliveryOptions {
            retry_window_minutes: window,
            ..Default::default()
        },
        ..webhook_to(name, "s", &url)
    };
    let default = hook("default", None);
    let hour = hook("hour", Some(60));
    let store = Arc::new(DynamoIntegrationStore::from_sdk(&sdk, table.clone()));
    for i in [&default, &hour] {
        store.insert(i, 100).await.expect("seed");
    }
    let queue =
        Arc::new(SqsJobQueue::from_sdk(&sdk, queue_url).with_dead_letter_queue(dlq_url.clone()));
    let log = Arc::new(DynamoDeliveryLog::from_sdk(
        &sdk,
        table,
        Duration::from_secs(3600),
    ));
    let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")]);
    let webhook = WebhookDeliverer::new(guard, Duration::from_secs(5)).expect("client");
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(TargetDeliverer::new(Arc::new(webhook))),
        log,
        queue.clone(),
        retry,
    ));
    let jobs: Vec<OutgoingJob> = [&default, &hour]
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let event = Event {
                id: format!("evt-window-{n}"),
                kind: "order.paid".into(),
                occurred_at: now,
                payload: serde_json::json!({"data": {}}).into(),
            };
            OutgoingJob {
                entry_id: n.to_string(),
                body: DeliveryJob::new(&i.store_id, i.id, event, now).to_body(),
                delay: Duration::ZERO,
            }
        })
        .collect();
    assert!(queue.send_batch(&jobs).await.expect("send").is_empty());

    // WHEN the fan-out runs as the event source would, until both jobs are done
    // (bounded: 20 receives of at most a second)
    let mut attempts: Vec<(String, u32, u32)> = Vec::new();
    for _ in 0..20 {
        let batch = queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        for m in &batch {
            let job = DeliveryJob::parse(&m.body).expect("job");
            let name = if job.integration_id == hour.id {
                "hour"
            } else {
                "default"
            };
            attempts.push((name.into(), job.attempt, m.receive_count));
        }
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        let failed = fanout.process(batch, None).await;
        assert!(failed.is_empty(), "{failed:?}");
        for receipt in receipts {
            queue.delete(&receipt).await.expect("delete");
        }
        if attempts.len() == 6 {
            break;
        }
    }

    // THEN the hour's job was attempted four times, each a new message received once
    // (a delayed message, nothing in flight meanwhile), the default's twice, and
    // both are in the DLQ after their last attempt
    let of = |name: &str| {
        attempts
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, a, r)| (*a, *r))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("default"), [(1, 1), (2, 1)]);
    assert_eq!(of("hour"), [(1, 1), (2, 1), (3, 1), (4, 1)]);
    let dlq = SqsJobQueue::from_sdk(&sdk, dlq_url);
    let mut dead: Vec<(bool, u32)> = dlq
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive dlq")
        .iter()
        .map(|m| {
            let job = DeliveryJob::parse(&m.body).expect("job");
            (job.integration_id == hour.id, job.attempt)
        })
        .collect();
    dead.sort();
    assert_eq!(dead, [(false, 2), (true, 4)]);
}

/// A webhook receiver on 127.0.0.1 that answers every POST to `/hook` with `status`
/// and keeps the bodies it got.
async fn keeping_receiver(
    status: StatusCode,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| async move {
            let body = serde_json::from_slice(&body).unwrap_or_default();
            kept.lock().expect("lock").push(body);
            status
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn an_integration_disabled_on_moto_is_announced_through_the_queue_to_its_stores_watcher() {
    use herald_core::aws::claims::DynamoIdempotency;
    use herald_core::ingest::{Ingest, IngestSettings};
    let (sdk, suffix) = moto().await;
    let table = format!("alerts-{suffix}");
    let (queue_url, dlq_url) = bootstrap(
        &sdk,
        &table,
        &format!("alerts-{suffix}"),
        herald_core::retry::MAX_RECEIVES,
    )
    .await
    .expect("bootstrap");
    // GIVEN an integration whose receiver is gone (410) and a watcher of the same
    // store observing herald.integration.disabled
    let (gone_addr, gone) = keeping_receiver(StatusCode::GONE).await;
    let (watch_addr, watcher) = keeping_receiver(StatusCode::NO_CONTENT).await;
    let now = Utc::now();
    let webhook = |name: &str, addr: std::net::SocketAddr, observes: &str| Integration {
        observes: vec![observes.into()],
        ..webhook_to(name, "s", &format!("http://{addr}/hook"))
    };
    let broken = webhook("gone", gone_addr, "order.paid");
    let watch = webhook("watch", watch_addr, "herald.integration.disabled");
    let store = Arc::new(DynamoIntegrationStore::from_sdk(&sdk, table.clone()));
    store.insert(&broken, 100).await.expect("seed");
    store.insert(&watch, 100).await.expect("seed");
    let queue = Arc::new(SqsJobQueue::from_sdk(&sdk, queue_url).with_dead_letter_queue(dlq_url));
    let log = Arc::new(DynamoDeliveryLog::from_sdk(
        &sdk,
        table.clone(),
        Duration::from_secs(3600),
    ));
    let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")]);
    let deliverer = WebhookDeliverer::new(guard, Duration::from_secs(5)).expect("client");
    let alerts = Ingest::new(
        Arc::new(IntegrationCache::new(store.clone(), Duration::ZERO)),
        Arc::new(DynamoIdempotency::from_sdk(&sdk, table)),
        queue.clone(),
        IngestSettings::default(),
    );
    let fanout = Fanout::new(
        Arc::new(IntegrationCache::new(store.clone(), Duration::ZERO)),
        Arc::new(TargetDeliverer::new(Arc::new(deliverer))),
        log,
        queue.clone(),
        RetryPolicy::default(),
    )
    .with_alerts(Some(alerts));
    let event = Event {
        id: "evt-gone".into(),
        kind: "order.paid".into(),
        occurred_at: now,
        payload: serde_json::json!({"data": {"id": "o-1", "type": "order"}}).into(),
    };
    let job = DeliveryJob::new(&broken.store_id, broken.id, event, now);
    let failures = queue
        .send_batch(&[OutgoingJob {
            entry_id: "0".into(),
            body: job.to_body(),
            delay: Duration::ZERO,
        }])
        .await
        .expect("send");
    assert!(failures.is_empty());
    // WHEN the fan-out runs until the queue is empty (bounded: 10 rounds)
    for _ in 0..10 {
        let batch = queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        let failed = fanout.process(batch, None).await;
        assert!(failed.is_empty(), "{failed:?}");
        for receipt in receipts {
            queue.delete(&receipt).await.expect("delete");
        }
    }
    // THEN the integration is disabled in DynamoDB, and the watcher got one event
    // about it, through SQS
    let now = store
        .get(&broken.store_id, broken.id)
        .await
        .expect("get")
        .expect("found");
    assert!(!now.enabled);
    assert_eq!(gone.lock().expect("lock").len(), 1);
    let seen = watcher.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["triggered_by"], "herald.integration.disabled");
    let data = &seen[0]["payload"]["data"];
    assert_eq!(data["id"], broken.id.to_string());
    assert_eq!(data["enabled"], false);
    assert_eq!(data["meta"]["alert"]["reason"], "gone");
    assert_eq!(data["meta"]["alert"]["job_id"], job.job_id.to_string());
}
