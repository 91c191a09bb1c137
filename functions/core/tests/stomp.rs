//! The STOMP target against ActiveMQ on loopback (`infra/activemq.sh start`, which
//! `make test` runs): plain and TLS, authentication, failover, and the address guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald_core::attempt::Outcome;
use herald_core::delivery::stomp::{receive, Frame, StompDeliverer};
use herald_core::delivery::DeliverTo;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{Integration, Secret, StompConfig, StoreId, Target};
use herald_core::net::guard::{AddressGuard, Cidr};
use serde_json::{json, Value};
use uuid::Uuid;

/// The test broker's state, from `infra/activemq.sh`.
fn run_dir() -> String {
    format!("{}/.run/activemq", herald_testkit::checkout())
}

fn password() -> String {
    std::fs::read_to_string(format!("{}/password", run_dir()))
        .expect("ActiveMQ is not set up: run `make test` or `infra/activemq.sh start`")
        .trim()
        .to_owned()
}

fn test_ca() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    herald_core::net::client::read_pem(&format!("{}/broker-ca.pem", run_dir()))
        .expect("the broker's test CA")
}

fn loopback() -> AddressGuard {
    AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")])
}

fn deliverer(guard: AddressGuard, with_ca: bool) -> StompDeliverer {
    let ca = if with_ca { test_ca() } else { Vec::new() };
    // The test broker's plain connector is used too.
    StompDeliverer::new(guard, &ca, Duration::from_secs(10))
        .expect("deliverer")
        .dangerous_allow_plain(true)
}

/// `i`'s STOMP configuration, as the dispatcher hands it to the deliverer.
fn stomp_config(i: &Integration) -> &StompConfig {
    match &i.target {
        Target::Stomp(config) => config,
        other => panic!("not a STOMP target: {other:?}"),
    }
}

fn integration(addresses: &[&str], destination: &str, password: &str) -> Integration {
    let now = Utc::now();
    Integration {
        id: Uuid::now_v7(),
        store_id: StoreId::parse("s").expect("store"),
        name: "broker".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["address.updated".into()],
        target: Target::Stomp(StompConfig {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            destination: destination.into(),
            username: "herald".into(),
            password: Secret::new(password),
            virtual_host: None,
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        delivery: Default::default(),
    }
}

fn job(i: &Integration) -> DeliveryJob {
    let event = Event {
        id: format!("evt-{}", Uuid::new_v4().simple()),
        kind: "address.updated".into(),
        occurred_at: Utc::now(),
        payload: json!({"data": {"id": "addr-1", "type": "address", "city": "Zürich"}}).into(),
    };
    DeliveryJob::new(&i.store_id, i.id, event, Utc::now())
}

/// A fresh queue the test user may write to (the broker allows `herald.*`).
fn queue() -> String {
    format!("/queue/herald.test.{}", Uuid::new_v4().simple())
}

/// Reads one message back from `destination`.
async fn consume_one(destination: &str) -> Frame {
    consume(destination, 1).await.remove(0)
}

/// Reads `n` messages back from `destination`.
async fn consume(destination: &str, n: usize) -> Vec<Frame> {
    receive(
        "127.0.0.1:61613",
        "herald",
        &password(),
        destination,
        n,
        Duration::from_secs(10),
    )
    .await
    .expect("messages")
}

fn header<'a>(f: &'a Frame, name: &str) -> Option<&'a str> {
    f.header(name)
}

#[tokio::test]
async fn a_message_lands_on_the_queue_with_its_body_and_headers() {
    let destination = queue();
    let i = integration(&["stomp://127.0.0.1:61613"], &destination, &password());
    let j = job(&i);
    let result = deliverer(loopback(), false)
        .deliver(&i, stomp_config(&i), &j, 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.body, "RECEIPT from stomp://127.0.0.1:61613");

    let message = consume_one(&destination).await;
    let body: Value = serde_json::from_slice(&message.body).expect("json");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["type"], "address.updated");
    assert_eq!(body["id"], j.event.id);
    assert_eq!(body["data"]["city"], "Zürich");
    assert_eq!(
        header(&message, "herald-job-id"),
        Some(j.job_id.to_string().as_str())
    );
    assert_eq!(header(&message, "content-type"), Some("application/json"));
    assert_eq!(header(&message, "persistent"), Some("true"));
}

#[tokio::test]
async fn a_stored_order_whose_data_alone_is_over_the_limit_arrives_by_reference() {
    // GIVEN a job whose stored payload the fan-out fetched, its data (2 MiB) over a
    // broker message's limit, and a URL of that data
    let destination = queue();
    let i = integration(&["stomp://127.0.0.1:61613"], &destination, &password());
    let mut j = job(&i);
    let data = json!({"id": "o-1", "type": "order", "note": "x".repeat(2 * 1024 * 1024)});
    let payload = json!({"data": data, "included": {"items": [{"id": "i-1"}]}});
    let parts =
        herald_core::job::Stored::parts(&i.store_id, &payload.clone().into()).expect("stored");
    let sha256 = parts.stored.data_sha256.clone().expect("data stored apart");
    j.event.payload = herald_core::job::Payload::absent();
    j.stored = Some(parts.stored);
    let url = "http://127.0.0.1:9/herald-events/events/s/abc?X-Amz-Signature=0".to_owned();
    j.fetched = Some(Arc::new(herald_core::job::Fetched {
        payload: payload.into(),
        data_ref: Some((url.clone(), sha256.clone())),
    }));
    // WHEN it is delivered
    let result = deliverer(loopback(), false)
        .deliver(&i, stomp_config(&i), &j, 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    // THEN the message carries the URL and the data's SHA-256 in place of the data,
    // its included resources elided
    let message = consume_one(&destination).await;
    let body: Value = serde_json::from_slice(&message.body).expect("json");
    assert_eq!(body.get("data"), None);
    assert_eq!(body["dataref"], json!(url));
    assert_eq!(body["datasha256"], json!(sha256));
    assert_eq!(body["included"], json!({"meta": {"includes_elided": true}}));
}

#[tokio::test]
async fn tls_works_with_the_brokers_ca_and_fails_without_it() {
    let destination = queue();
    let i = integration(&["stomp+ssl://localhost:61614"], &destination, &password());
    let ok = deliverer(loopback(), true)
        .deliver(&i, stomp_config(&i), &job(&i), 1)
        .await;
    assert_eq!(ok.outcome, Outcome::Delivered, "{ok:?}");
    assert!(consume_one(&destination).await.body.starts_with(b"{"));

    let untrusted = deliverer(loopback(), false)
        .deliver(&i, stomp_config(&i), &job(&i), 1)
        .await;
    assert!(matches!(untrusted.outcome, Outcome::Retryable { .. }));
    let detail = untrusted.error_detail.expect("detail");
    assert!(detail.contains("TLS handshake"), "{detail}");
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_failure() {
    let i = integration(&["stomp://127.0.0.1:61613"], &queue(), "not-the-password");
    let result = deliverer(loopback(), false)
        .deliver(&i, stomp_config(&i), &job(&i), 1)
        .await;
    assert!(matches!(result.outcome, Outcome::Retryable { .. }));
    let detail = result.error_detail.expect("detail");
    // The broker's ERROR frame, or (ActiveMQ, at times) a close before it is out.
    assert!(
        detail.contains("refused the login") || detail.contains("the login may have been refused"),
        "{detail}"
    );
    assert!(
        !detail.contains("not-the-password"),
        "the password leaked into the detail"
    );
}

#[tokio::test]
async fn a_dead_first_address_fails_over_to_the_second() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead); // nothing listens there now
    let destination = queue();
    let first = format!("stomp://127.0.0.1:{dead_port}");
    let i = integration(
        &[&first, "stomp://127.0.0.1:61613"],
        &destination,
        &password(),
    );
    let result = deliverer(loopback(), false)
        .deliver(&i, stomp_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.body, "RECEIPT from stomp://127.0.0.1:61613");
    consume_one(&destination).await;
}

#[tokio::test]
async fn a_connection_is_reused_across_deliveries() {
    let destination = queue();
    let i = integration(&["stomp://127.0.0.1:61613"], &destination, &password());
    let d = deliverer(loopback(), false);
    for _ in 0..3 {
        assert_eq!(
            d.deliver(&i, stomp_config(&i), &job(&i), 1).await.outcome,
            Outcome::Delivered
        );
    }
    assert_eq!(consume(&destination, 3).await.len(), 3);
}

#[tokio::test]
async fn broker_addresses_pass_the_address_guard_before_any_connection() {
    // A loopback canary that counts connections; loopback is not on the allow-list.
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = canary.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while canary.accept().await.is_ok() {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    let i = integration(
        &[
            &format!("stomp://127.0.0.1:{port}"),
            &format!("stomp://localhost:{port}"),
        ],
        &queue(),
        &password(),
    );
    let result = deliverer(AddressGuard::strict(), false)
        .deliver(&i, stomp_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Permanent, "a refusal is for good");
    assert!(result.error_detail.expect("detail").contains("loopback"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_error_frame_for_the_send_fails_the_attempt_with_the_brokers_message() {
    // The test broker lets this user write to herald.* queues only.
    let i = integration(
        &["stomp://127.0.0.1:61613"],
        "/queue/forbidden.test",
        &password(),
    );
    let result = deliverer(loopback(), false)
        .deliver(&i, stomp_config(&i), &job(&i), 1)
        .await;
    assert!(
        matches!(result.outcome, Outcome::Retryable { .. }),
        "{result:?}"
    );
    let detail = result.error_detail.expect("detail");
    assert!(
        detail.starts_with("the broker refused the message"),
        "{detail}"
    );
}
