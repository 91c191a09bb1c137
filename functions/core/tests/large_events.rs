//! Events too large for a queue message, through moto (loopback): the payload stored
//! in S3 by ingest, the job through SQS with its claim check, and the fan-out
//! delivering the whole body to a webhook and, to a customer queue whose message
//! cannot carry the order's `data`, a `dataref`: an API URL whose token, made with an
//! HMAC key in KMS, opens a minutes-long presigned GET of the data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use herald_core::aws::kms::{ensure_local_mac_key, KmsMac};
use herald_core::aws::local::{create_queues, moto_config};
use herald_core::aws::s3::S3Bodies;
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::cache::IntegrationCache;
use herald_core::delivery::sqs::SqsDeliverer;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::TargetDeliverer;
use herald_core::event_data::{EventData, Opened};
use herald_core::fanout::Fanout;
use herald_core::ingest::{EventStatus, Ingest, IngestSettings};
use herald_core::memory::{MemoryDeliveryLog, MemoryIdempotency, MemoryIntegrationStore};
use herald_core::model::{Integration, Secret, SqsAuth, SqsConfig, StoreId, Target, WebhookConfig};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_core::ports::{BodyAt, EventBodies, IntegrationStore, JobSource, MacKey};
use herald_core::retry::RetryPolicy;
use herald_core::testkit::webhook;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new bucket on moto.
async fn bucket(sdk: &aws_config::SdkConfig) -> S3Bodies {
    let bodies = S3Bodies::from_sdk(sdk, format!("herald-events-{}", Uuid::new_v4().simple()));
    bodies.create_bucket().await.expect("create bucket");
    bodies
}

#[tokio::test]
async fn a_body_stored_in_s3_reads_back_a_minutes_long_url_of_it_serves_it_and_a_missing_one_is_none(
) {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let bodies = bucket(&sdk).await;
    let body = Bytes::from(format!(
        "{{\"data\":{{\"note\":\"{}\"}}}}",
        "x".repeat(300_000)
    ));
    bodies
        .put("events/s1/abc", body.clone())
        .await
        .expect("put");
    assert_eq!(
        bodies.get("events/s1/abc").await.expect("get"),
        Some(body.clone())
    );
    assert_eq!(bodies.get("events/s1/none").await.expect("get"), None);
    let Some(BodyAt::Url(url)) = bodies
        .open("events/s1/abc", Duration::from_secs(300))
        .await
        .expect("open")
    else {
        panic!("no URL of the body");
    };
    assert!(
        url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=300"),
        "{url}"
    );
    let fetched = reqwest::get(&url).await.expect("GET");
    assert_eq!(fetched.status(), reqwest::StatusCode::OK);
    assert_eq!(fetched.bytes().await.expect("body"), body);
    assert_eq!(
        bodies
            .open("events/s1/none", Duration::from_secs(300))
            .await
            .expect("open"),
        None
    );
}

/// A new HMAC key on moto.
async fn mac_key(sdk: &aws_config::SdkConfig) -> KmsMac {
    let alias = format!("alias/herald-dataref-{}", Uuid::new_v4().simple());
    let alias = ensure_local_mac_key(sdk, &alias).await.expect("HMAC key");
    KmsMac::from_sdk(sdk, alias)
}

#[tokio::test]
async fn an_hmac_key_in_kms_makes_codes_that_verify_and_no_other_code_or_message_does() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let key = mac_key(&sdk).await;
    let mac = key.mac(b"store/sha/expiry").await.expect("GenerateMac");
    assert_eq!(mac.len(), 32);
    assert!(key
        .verify(b"store/sha/expiry", &mac)
        .await
        .expect("VerifyMac"));
    assert!(!key
        .verify(b"store/sha/expirz", &mac)
        .await
        .expect("VerifyMac"));
    let mut other = mac.clone();
    other[0] ^= 1;
    assert!(!key
        .verify(b"store/sha/expiry", &other)
        .await
        .expect("VerifyMac"));
    assert!(!mac_key(&sdk)
        .await
        .verify(b"store/sha/expiry", &mac)
        .await
        .expect("VerifyMac"));
}

/// A receiver on 127.0.0.1 keeping every body posted to `/hook`, whatever its size.
async fn receiver() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    seen.lock().expect("lock").push(body);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn integration(name: &str, target: Target) -> Integration {
    Integration {
        target,
        ..webhook(name, "s1", &["order.paid"], true)
    }
}

/// An `order.paid` event of about 4 MiB: an order of 3 MiB (its lines inside it) and
/// 1 MiB of included resources.
fn order() -> Value {
    let lines = |n: usize, kind: &str| -> Vec<Value> {
        (0..n)
            .map(|k| json!({"id": format!("{kind}-{k}"), "type": kind, "sku": "x".repeat(980)}))
            .collect()
    };
    json!({"id": "evt-4mib", "type": "order.paid", "payload": {
        "data": {"id": "o-1", "type": "order", "status": "paid", "lines": lines(3 * 1024, "order_line")},
        "included": {"items": lines(1024, "item")}
    }})
}

#[tokio::test]
async fn a_4_mib_order_reaches_a_webhook_whole_and_an_sqs_queue_by_reference_through_moto() {
    // GIVEN the internal queue and the bucket on moto, a webhook receiver, and a
    // customer queue, both observing order.paid
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let suffix = Uuid::new_v4().simple().to_string();
    let (queue_url, dlq_url) = create_queues(&sdk, &format!("jobs-{suffix}"), 10, 180)
        .await
        .expect("queues");
    let queue = Arc::new(SqsJobQueue::from_sdk(&sdk, queue_url).with_dead_letter_queue(dlq_url));
    let bodies: Arc<dyn EventBodies> = Arc::new(bucket(&sdk).await);
    let (url, seen) = receiver().await;
    let hook = integration(
        "hook",
        Target::Webhook(WebhookConfig {
            url,
            secret_key: None,
            retiring: None,
        }),
    );
    let customer = format!("customer-{suffix}");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    sqs.create_queue()
        .queue_name(&customer)
        .send()
        .await
        .expect("customer queue");
    let customer_url = format!("https://sqs.us-east-1.amazonaws.com/123456789012/{customer}");
    let queue_target = integration(
        "queue",
        Target::AwsSqs(SqsConfig {
            url: customer_url.clone(),
            region: "us-east-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("AKIAIOSFODNN7TESTKEY"),
                secret_access_key: Secret::new("test-secret-for-moto"),
            },
        }),
    );
    let store = Arc::new(MemoryIntegrationStore::new());
    for i in [&hook, &queue_target] {
        store.insert(i, 100).await.expect("seed");
    }
    let cache = Arc::new(IntegrationCache::new(store, Duration::ZERO));
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
    ))
    .with_sqs(Arc::new(SqsDeliverer::new(sdk.clone())));
    let event_data = Arc::new(
        EventData::new(Arc::new(mac_key(&sdk).await), bodies.clone())
            .minting_at("https://api.example"),
    );
    let fanout = Fanout::new(
        cache,
        Arc::new(deliverer),
        Arc::new(MemoryDeliveryLog::default()),
        queue.clone(),
        RetryPolicy::default(),
    )
    .with_bodies(Some(bodies.clone()))
    .with_event_data(Some(event_data.clone()));

    // WHEN a 4 MiB order is ingested and its jobs delivered
    let event = order();
    assert!(event.to_string().len() > 4 * 1024 * 1024);
    let store_id = StoreId::parse("s1").expect("store");
    let results = ingest
        .ingest(std::slice::from_ref(&event), Some(&store_id), |_| {
            "/data".into()
        })
        .await;
    assert_eq!(results[0].status, EventStatus::Accepted { jobs: 2 });
    let records = queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.body.len() < 2048));
    assert!(fanout.process(records, None).await.is_empty());

    // THEN the webhook got the whole payload
    let posted = seen.lock().expect("lock").clone();
    assert_eq!(posted.len(), 1);
    let body: Value = serde_json::from_slice(&posted[0]).expect("json");
    assert_eq!(body["payload"], event["payload"]);
    // AND the queue message carries a URL of the order's data and its SHA-256 in
    // place of it, its included resources elided
    let received = sqs
        .receive_message()
        .queue_url(&customer_url)
        .send()
        .await
        .expect("receive");
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    let message: Value = serde_json::from_str(messages[0].body().expect("body")).expect("json");
    assert_eq!(message.get("data"), None);
    assert_eq!(
        message["included"],
        json!({"meta": {"includes_elided": true}})
    );
    let data = event["payload"]["data"].to_string();
    assert_eq!(message["datasha256"], json!(hex(data.as_bytes())));
    // AND the dataref is the API's, and its token opens a URL that serves exactly the
    // data, whose SHA-256 is the one given
    let dataref = message["dataref"].as_str().expect("dataref");
    let token = dataref
        .strip_prefix("https://api.example/v2/event-data/")
        .unwrap_or_else(|| panic!("{dataref} is not the API's"));
    let Opened::Body(BodyAt::Url(url)) = event_data.open(token).await.expect("open") else {
        panic!("the dataref opens no URL");
    };
    let fetched = reqwest::get(url).await.expect("GET");
    assert_eq!(fetched.status(), reqwest::StatusCode::OK);
    let fetched = fetched.bytes().await.expect("body");
    assert_eq!(hex(&fetched), message["datasha256"].as_str().expect("sha"));
    assert_eq!(fetched, data.as_bytes());
}
