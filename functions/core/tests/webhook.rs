//! The webhook target against a real HTTP server on 127.0.0.1, and the SSRF guard:
//! decisions for internal address forms (checked without connecting) and refusal at
//! connect time (a loopback canary that must see no connection).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use herald_core::attempt::{JobStatus, Outcome};
use herald_core::cache::IntegrationCache;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::{DeliverTo, TargetDeliverer};
use herald_core::fanout::Fanout;
use herald_core::filter::Filter;
use herald_core::job::{DeliveryJob, Event};
use herald_core::memory::{MemoryDeliveryLog, MemoryIntegrationStore, MemoryQueue};
use herald_core::model::{Integration, RetiringSecret, Secret, StoreId, Target, WebhookConfig};
use herald_core::net::client::{Resolve, Resolving};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_core::page::Page;
use herald_core::ports::{
    Deliverer, DeliveryLog, IntegrationStore, JobQueue, JobSource, OutgoingJob,
};
use herald_core::retry::RetryPolicy;
use herald_core::signing;
use herald_testkit::http::RequestReader;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use url::Url;
use uuid::Uuid;

/// What the receiver saw.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

/// How the receiver answers the n-th request (0-based).
type Script = Arc<dyn Fn(usize) -> Response + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    seen: Seen,
    script: Script,
    delay: Option<Duration>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut seen = r.seen.requests.lock().expect("lock");
        seen.push((headers, body));
        seen.len() - 1
    };
    if let Some(d) = r.delay {
        tokio::time::sleep(d).await;
    }
    (r.script)(n)
}

async fn start_receiver(script: Script, delay: Option<Duration>) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Receiver {
            seen: seen.clone(),
            script,
            delay,
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn always(status: u16) -> Script {
    Arc::new(move |_| {
        (StatusCode::from_u16(status).expect("status"), "answer body").into_response()
    })
}

/// A TCP listener that only counts connections: any connection means a packet got
/// through where the guard should have refused.
async fn canary() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, count)
}

fn loopback_allowed() -> AddressGuard {
    AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")])
}

fn deliverer(guard: AddressGuard, timeout: Duration) -> WebhookDeliverer {
    WebhookDeliverer::new(guard, timeout).expect("client")
}

/// `i`'s webhook configuration, as the dispatcher hands it to the deliverer.
fn webhook_config(i: &Integration) -> &WebhookConfig {
    match &i.target {
        Target::Webhook(config) => config,
        other => panic!("not a webhook target: {other:?}"),
    }
}

fn integration(url: &str, secret: Option<&str>) -> Integration {
    let now = Utc::now();
    Integration {
        id: Uuid::now_v7(),
        store_id: StoreId::parse("s").expect("store"),
        name: "Order hook".into(),
        description: "notifies".into(),
        enabled: true,
        observes: vec!["order.paid".into()],
        target: Target::Webhook(WebhookConfig {
            url: url.into(),
            secret_key: secret.map(Secret::new),
            retiring: None,
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
        id: "evt-42".into(),
        kind: "order.paid".into(),
        occurred_at: Utc::now(),
        payload: json!({"data": {"id": "o-1", "type": "order", "status": "paid"}}).into(),
    };
    DeliveryJob::new(&i.store_id, i.id, event, Utc::now())
}

#[tokio::test]
async fn the_webhook_gets_the_exact_body_and_headers_and_the_signature_verifies() {
    let (addr, seen) = start_receiver(always(200), None).await;
    let i = integration(&format!("http://{addr}/hook"), Some("SOME_SECRET_KEY"));
    let j = job(&i);
    let result = deliverer(loopback_allowed(), Duration::from_secs(5))
        .deliver(&i, webhook_config(&i), &j, 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.status_code, Some(200));
    assert_eq!(result.body, "answer body");

    let requests = seen.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("x-moltin-integration-trigger"), "order.paid");
    assert_eq!(h("x-moltin-secret-key"), "SOME_SECRET_KEY");
    assert_eq!(h("webhook-id"), j.job_id.to_string());
    let ts: i64 = h("webhook-timestamp").parse().expect("timestamp");
    assert!((Utc::now().timestamp() - ts).abs() < 60);
    assert!(signing::verify(
        "SOME_SECRET_KEY",
        &h("webhook-id"),
        ts,
        body,
        &h("webhook-signature")
    ));
    assert!(!signing::verify(
        "another-secret",
        &h("webhook-id"),
        ts,
        body,
        &h("webhook-signature")
    ));

    let body: Value = serde_json::from_slice(body).expect("json");
    let payload = json!({"data": {"id": "o-1", "type": "order", "status": "paid"}});
    assert_eq!(
        body,
        json!({
            "id": "evt-42",
            "triggered_by": "order.paid",
            "attempt": 1,
            "integration": {"id": i.id.to_string(), "integration_type": "webhook", "name": "Order hook", "description": "notifies"},
            "resources": payload.to_string(),
            "payload": payload,
        })
    );
}

#[tokio::test]
async fn without_a_secret_no_secret_or_signature_header_is_sent() {
    let (addr, seen) = start_receiver(always(204), None).await;
    let i = integration(&format!("http://{addr}/hook"), None);
    let result = deliverer(loopback_allowed(), Duration::from_secs(5))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered);
    let (headers, _) = seen.requests.lock().expect("lock")[0].clone();
    assert!(headers.get("x-moltin-secret-key").is_none());
    assert!(headers.get("webhook-signature").is_none());
    assert!(headers.get("webhook-id").is_some());
}

#[tokio::test]
async fn a_retiring_secret_signs_until_its_overlap_ends_even_in_a_copy_read_before() {
    // GIVEN a rotated webhook as a cache may hold it: its old secret beside the new
    let (addr, seen) = start_receiver(always(204), None).await;
    let mut i = integration(&format!("http://{addr}/hook"), Some("the-new-secret"));
    let hooks = deliverer(loopback_allowed(), Duration::from_secs(5));
    for until in [Utc::now() + chrono::Duration::hours(1), Utc::now()] {
        if let Target::Webhook(c) = &mut i.target {
            c.retiring = Some(RetiringSecret {
                secret: Secret::new("the-old-secret"),
                until,
            });
        }
        // WHEN it delivers during the overlap, then as it has ended
        let result = hooks.deliver(&i, webhook_config(&i), &job(&i), 1).await;
        assert_eq!(result.outcome, Outcome::Delivered);
    }
    // THEN the first carries both signatures and the new secret, the second the new
    // signature alone
    let requests = seen.requests.lock().expect("lock").clone();
    let check = |n: usize, secret: &str| {
        let (headers, body) = &requests[n];
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let ts: i64 = h("webhook-timestamp").parse().expect("timestamp");
        signing::verify(secret, &h("webhook-id"), ts, body, &h("webhook-signature"))
    };
    let count = |n: usize| {
        requests[n].0["webhook-signature"]
            .to_str()
            .expect("ascii")
            .split(' ')
            .count()
    };
    assert_eq!(
        (
            count(0),
            check(0, "the-new-secret"),
            check(0, "the-old-secret")
        ),
        (2, true, true)
    );
    assert_eq!(
        (
            count(1),
            check(1, "the-new-secret"),
            check(1, "the-old-secret")
        ),
        (1, true, false)
    );
    for (headers, _) in &requests {
        assert_eq!(headers["x-moltin-secret-key"], "the-new-secret");
    }
}

#[tokio::test]
async fn with_secret_header_off_the_secret_is_not_sent_and_the_signature_still_is() {
    let (addr, seen) = start_receiver(always(204), None).await;
    let mut i = integration(&format!("http://{addr}/hook"), Some("SOME_SECRET_KEY"));
    i.delivery.secret_header = Some(false);
    let result = deliverer(loopback_allowed(), Duration::from_secs(5))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered);
    let (headers, body) = seen.requests.lock().expect("lock")[0].clone();
    assert!(headers.get("x-moltin-secret-key").is_none());
    let h = |name: &str| headers[name].to_str().expect("ascii").to_owned();
    let ts: i64 = h("webhook-timestamp").parse().expect("timestamp");
    assert!(signing::verify(
        "SOME_SECRET_KEY",
        &h("webhook-id"),
        ts,
        &body,
        &h("webhook-signature")
    ));
}

#[tokio::test]
async fn an_integration_whose_url_changes_is_delivered_to_its_new_url() {
    // The deliverer keeps each integration's parsed URL: an update must not be missed.
    let (first, seen_first) = start_receiver(always(204), None).await;
    let (second, seen_second) = start_receiver(always(204), None).await;
    let hooks = deliverer(loopback_allowed(), Duration::from_secs(5));
    let mut i = integration(&format!("http://{first}/hook"), None);
    for _ in 0..2 {
        assert_eq!(
            hooks
                .deliver(&i, webhook_config(&i), &job(&i), 1)
                .await
                .outcome,
            Outcome::Delivered
        );
    }
    i.target = Target::Webhook(WebhookConfig {
        url: format!("http://{second}/hook"),
        secret_key: None,
        retiring: None,
    });
    i.version += 1;
    assert_eq!(
        hooks
            .deliver(&i, webhook_config(&i), &job(&i), 1)
            .await
            .outcome,
        Outcome::Delivered
    );
    assert_eq!(seen_first.requests.lock().expect("lock").len(), 2);
    assert_eq!(seen_second.requests.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_non_2xx_answer_is_a_retryable_failure_with_status_and_truncated_body() {
    let big = "x".repeat(100_000);
    let (addr, _) = start_receiver(
        Arc::new(move |_| (StatusCode::INTERNAL_SERVER_ERROR, big.clone()).into_response()),
        None,
    )
    .await;
    let i = integration(&format!("http://{addr}/hook"), None);
    let result = deliverer(loopback_allowed(), Duration::from_secs(5))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Retryable { retry_after: None });
    assert_eq!(result.status_code, Some(500));
    assert_eq!(result.body.len(), herald_core::attempt::MAX_LOGGED_BODY);
}

#[tokio::test]
async fn a_410_gone_is_a_permanent_failure_not_retried() {
    let (addr, seen) = start_receiver(
        Arc::new(|_| (StatusCode::GONE, "gone").into_response()),
        None,
    )
    .await;
    let i = integration(&format!("http://{addr}/hook"), None);
    let result = deliverer(loopback_allowed(), Duration::from_secs(5))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.status_code, Some(410));
    assert_eq!(seen.requests.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn retry_after_on_429_is_passed_on() {
    let (addr, _) = start_receiver(
        Arc::new(|_| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "120")],
                "slow down",
            )
                .into_response()
        }),
        None,
    )
    .await;
    let i = integration(&format!("http://{addr}/hook"), None);
    let result = deliverer(loopback_allowed(), Duration::from_secs(5))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    assert_eq!(
        result.outcome,
        Outcome::Retryable {
            retry_after: Some(Duration::from_secs(120))
        }
    );
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_a_failure() {
    let (addr, _) = start_receiver(always(200), Some(Duration::from_secs(5))).await;
    let i = integration(&format!("http://{addr}/hook"), None);
    let result = deliverer(loopback_allowed(), Duration::from_millis(300))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Retryable { retry_after: None });
    assert_eq!(result.status_code, None);
    assert!(result
        .error_detail
        .expect("detail")
        .contains("no answer within 300 ms"));
}

#[tokio::test]
async fn redirects_are_never_followed_even_to_loopback() {
    let (canary_addr, canary_hits) = canary().await;
    for status in [301u16, 302, 307] {
        let location = format!("http://{canary_addr}/");
        let (addr, _) = start_receiver(
            Arc::new(move |_| {
                (
                    StatusCode::from_u16(status).expect("s"),
                    [("location", location.clone())],
                    "",
                )
                    .into_response()
            }),
            None,
        )
        .await;
        let i = integration(&format!("http://{addr}/hook"), None);
        let result = deliverer(loopback_allowed(), Duration::from_secs(5))
            .deliver(&i, webhook_config(&i), &job(&i), 1)
            .await;
        assert_eq!(result.status_code, Some(status));
        assert!(matches!(result.outcome, Outcome::Retryable { .. }));
        assert!(result
            .error_detail
            .expect("detail")
            .contains("redirects are not followed"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(canary_hits.load(Ordering::SeqCst), 0);
}

/// Internal address forms whose refusal is checked without any connection.
const REFUSED_URLS: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/x",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.0.1/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[ff02::1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://198.18.0.1/",
    "https://10.0.0.1:8443/",
    "http://0x7f.1/",
    "http://127.0.0.255/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://100.127.255.254/",
    "http://192.0.0.1/",
    "http://192.0.2.1/",
    "http://[2001:db8::1]/",
    "http://[fe80::a9fe:a9fe]/",
    "http://[fec0::1]/",
    "http://0251.0376.0251.0376/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
];

#[tokio::test]
async fn internal_address_literals_in_every_form_are_refused_before_any_connection() {
    let d = deliverer(AddressGuard::strict(), Duration::from_secs(1));
    for raw in REFUSED_URLS {
        let url = Url::parse(raw).expect("url");
        assert!(
            d.check_literal_host(&url).is_err(),
            "{raw} should be refused"
        );
    }
    assert!(
        REFUSED_URLS.len() >= 40,
        "the vector set has {}",
        REFUSED_URLS.len()
    );
    for ok in [
        "https://example.com/hook",
        "http://93.184.216.34/",
        "http://[2606:4700::1111]/",
    ] {
        assert_eq!(
            d.check_literal_host(&Url::parse(ok).expect("url")),
            Ok(()),
            "{ok}"
        );
    }
}

#[test]
fn names_resolving_to_internal_addresses_are_refused() {
    // The resolver's decision for what a name resolved to (no lookup, no connection).
    let guard = AddressGuard::strict();
    for resolved in [
        ["10.0.0.5:443"],
        ["169.254.169.254:80"],
        ["[fd00:ec2::254]:80"],
        ["[::ffff:192.168.1.1]:443"],
    ] {
        let addrs: Vec<SocketAddr> = resolved.iter().map(|a| a.parse().expect("addr")).collect();
        assert!(guard.filter("hooks.test", &addrs).is_err(), "{resolved:?}");
    }
    let mixed: Vec<SocketAddr> = vec![
        "93.184.216.34:443".parse().expect("a"),
        "10.1.2.3:443".parse().expect("b"),
    ];
    assert!(guard.filter("hooks.test", &mixed).is_err());
}

#[tokio::test]
async fn loopback_is_refused_at_connect_time_when_not_allowed() {
    let (addr, hits) = canary().await;
    let port = addr.port();
    let d = deliverer(AddressGuard::strict(), Duration::from_secs(2));
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
    ] {
        let i = integration(&url, None);
        let result = d.deliver(&i, webhook_config(&i), &job(&i), 1).await;
        assert_eq!(result.outcome, Outcome::Permanent, "{url}: {result:?}");
        let detail = result.error_detail.expect("detail");
        assert!(detail.contains("loopback"), "{url}: {detail}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused address was connected to"
    );
    // The same canary is reachable once loopback is on the allow-list: the refusal
    // above was the guard's doing.
    let i = integration(&format!("http://127.0.0.1:{port}/hook"), None);
    let _ = deliverer(loopback_allowed(), Duration::from_millis(300))
        .deliver(&i, webhook_config(&i), &job(&i), 1)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_name_is_told_its_range_but_not_the_address_it_resolved_to() {
    // GIVEN a name that resolves to a loopback canary, and a strict guard
    let (canary_addr, canary_hits) = canary().await;
    let port = canary_addr.port();
    let d = WebhookDeliverer::with_resolver(
        AddressGuard::strict(),
        Duration::from_secs(2),
        resolving_to(canary_addr),
    )
    .expect("client");
    // WHEN the name and the address itself are delivered to
    let named = integration(&format!("http://hooks.example.test:{port}/hook"), None);
    let by_name = d
        .deliver(&named, webhook_config(&named), &job(&named), 1)
        .await;
    let literal = integration(&format!("http://127.0.0.1:{port}/hook"), None);
    let by_address = d
        .deliver(&literal, webhook_config(&literal), &job(&literal), 1)
        .await;
    // THEN both fail for good; the name's refusal keeps the address it resolved to to
    // itself, the literal's names what its author typed; nothing was connected to
    assert_eq!(by_name.outcome, Outcome::Permanent, "{by_name:?}");
    assert_eq!(
        by_name.error_detail.as_deref(),
        Some(
            "hooks.example.test resolves to an address Herald does not deliver to (loopback range)"
        )
    );
    assert_eq!(by_address.outcome, Outcome::Permanent, "{by_address:?}");
    assert_eq!(
        by_address.error_detail.as_deref(),
        Some("127.0.0.1 is a loopback address, which deliveries may not reach")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "the canary was connected to"
    );
}

/// A resolver that answers the n-th lookup (0-based) with `answers[n]`, the last one
/// from then on, and counts lookups: a name whose answer changes between checks,
/// without a DNS server (nothing is asked of the system resolver).
struct Rebinding {
    answers: Vec<SocketAddr>,
    lookups: Arc<AtomicUsize>,
}

impl Resolve for Rebinding {
    fn resolve(&self, _host: &str) -> Resolving {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers[n.min(self.answers.len() - 1)];
        Box::pin(async move { Ok(vec![answer]) })
    }
}

/// An HTTP listener on `addr` that answers every request `200` and closes the
/// connection (so the next delivery needs a new connection, hence a new lookup);
/// counts connections.
async fn closing_receiver(addr: SocketAddr) -> Arc<AtomicUsize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(addr).await.expect("bind");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 65536];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    count
}

#[tokio::test]
async fn a_name_rebound_from_an_allowed_address_to_loopback_is_refused_at_the_next_connection() {
    // GIVEN a name that first resolves to an allowed address and then to a loopback
    // canary on the same port. The allowed address stands in for a public one and is
    // on loopback too (127.0.0.2, the only network on the allow-list), so no packet
    // leaves the machine; 127.0.0.1 is off the allow-list.
    let (canary_addr, canary_hits) = canary().await;
    let port = canary_addr.port();
    let allowed: SocketAddr = format!("127.0.0.2:{port}").parse().expect("addr");
    let served = closing_receiver(allowed).await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let resolver = Rebinding {
        answers: vec![allowed, canary_addr],
        lookups: lookups.clone(),
    };
    let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.2/32").expect("cidr")]);
    let d = WebhookDeliverer::with_resolver(guard, Duration::from_secs(2), Arc::new(resolver))
        .expect("client");
    let i = integration(&format!("http://rebinding.test:{port}/hook"), None);

    // WHEN it is delivered to twice
    let first = d.deliver(&i, webhook_config(&i), &job(&i), 1).await;
    let second = d.deliver(&i, webhook_config(&i), &job(&i), 2).await;

    // THEN the first goes to the allowed address, the second lookup's loopback answer
    // is refused, and the canary never sees a connection.
    assert_eq!(first.outcome, Outcome::Delivered, "{first:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        2,
        "each connection looks up again"
    );
    assert_eq!(second.outcome, Outcome::Permanent, "{second:?}");
    assert_eq!(
        second.error_detail.as_deref(),
        Some("rebinding.test resolves to an address Herald does not deliver to (loopback range)")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "the canary was connected to"
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_name_that_answers_public_for_a_check_and_loopback_for_the_connection_is_refused() {
    // GIVEN a name whose first answer is a public address and whose second is a
    // loopback canary, and a strict guard (loopback off the allow-list).
    let (canary_addr, canary_hits) = canary().await;
    let public: SocketAddr = "93.184.216.34:443".parse().expect("addr");
    let lookups = Arc::new(AtomicUsize::new(0));
    let resolver = Arc::new(Rebinding {
        answers: vec![public, canary_addr],
        lookups: lookups.clone(),
    });
    let guard = AddressGuard::strict();
    // WHEN an earlier check (as at registration) sees the first answer: the guard
    // allows it — decided without connecting, so no packet goes to it.
    let first: Vec<SocketAddr> = resolver.resolve("rebinding.test").await.expect("lookup");
    assert_eq!(guard.filter("rebinding.test", &first), Ok(vec![public]));
    // AND the delivery's own lookup gets the second answer
    let d =
        WebhookDeliverer::with_resolver(guard, Duration::from_secs(2), resolver).expect("client");
    let i = integration(
        &format!("http://rebinding.test:{}/hook", canary_addr.port()),
        None,
    );
    let result = d.deliver(&i, webhook_config(&i), &job(&i), 1).await;
    // THEN the connection is refused on what the name resolves to now.
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    assert_eq!(result.outcome, Outcome::Permanent, "{result:?}");
    assert!(
        result
            .error_detail
            .as_deref()
            .is_some_and(|d| d.contains("loopback")),
        "{result:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "the canary was connected to"
    );
}

struct Pipeline {
    fanout: Arc<Fanout>,
    queue: Arc<MemoryQueue>,
    log: Arc<MemoryDeliveryLog>,
}

async fn pipeline(integrations: &[&Integration], timeout: Duration) -> Pipeline {
    let store = Arc::new(MemoryIntegrationStore::new());
    for i in integrations {
        store.insert(i, 100).await.expect("insert");
    }
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let log = Arc::new(MemoryDeliveryLog::default());
    let fanout = Arc::new(Fanout::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(TargetDeliverer::new(Arc::new(deliverer(
            loopback_allowed(),
            timeout,
        )))),
        log.clone(),
        queue.clone(),
        RetryPolicy::scaled(0.0),
    ));
    Pipeline { fanout, queue, log }
}

async fn enqueue(queue: &MemoryQueue, jobs: &[DeliveryJob]) {
    let entries: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(n, j)| OutgoingJob {
            entry_id: n.to_string(),
            body: j.to_body(),
            delay: std::time::Duration::ZERO,
        })
        .collect();
    assert!(queue.send_batch(&entries).await.expect("send").is_empty());
}

#[tokio::test]
async fn a_500_then_a_200_is_delivered_on_the_second_attempt_with_one_log_per_attempt() {
    let (addr, seen) = start_receiver(
        Arc::new(|n| {
            if n == 0 {
                (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()
            } else {
                (StatusCode::OK, "fine").into_response()
            }
        }),
        None,
    )
    .await;
    let i = integration(&format!("http://{addr}/hook"), Some("SOME_SECRET_KEY"));
    let p = pipeline(&[&i], Duration::from_secs(5)).await;
    let j = job(&i);
    enqueue(&p.queue, std::slice::from_ref(&j)).await;
    for _ in 0..2 {
        let batch = p
            .queue
            .receive(10, Duration::from_secs(2))
            .await
            .expect("receive");
        assert_eq!(batch.len(), 1);
        let receipt = batch[0].receipt.clone();
        if p.fanout.process(batch, None).await.is_empty() {
            p.queue.delete(&receipt).await.expect("delete");
        }
    }
    assert!(p.queue.is_empty());
    let store = StoreId::parse("s").expect("store");
    let (logs, total) = p
        .log
        .job_logs(&store, i.id, j.job_id, Page::default())
        .await
        .expect("logs");
    assert_eq!(total, 2);
    assert_eq!(
        (logs[0].attempt, logs[0].succeeded, logs[0].status_code),
        (2, true, Some(200))
    );
    assert_eq!(
        (logs[1].attempt, logs[1].succeeded, logs[1].status_code),
        (1, false, Some(500))
    );
    assert_eq!(logs[1].body, "down");
    let jobs = p
        .log
        .integration_jobs(&store, i.id, &Filter::default(), Page::default())
        .await
        .expect("jobs")
        .items;
    assert_eq!(
        (jobs[0].status, jobs[0].attempts),
        (JobStatus::Delivered, 2)
    );
    // Both attempts carried the same webhook-id, so the receiver can deduplicate.
    let requests = seen.requests.lock().expect("lock").clone();
    let ids: Vec<_> = requests
        .iter()
        .map(|(h, _)| h.get("webhook-id").cloned())
        .collect();
    assert_eq!(ids[0], ids[1]);
    let attempts: Vec<i64> = requests
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<Value>(b).expect("json")["attempt"]
                .as_i64()
                .expect("n")
        })
        .collect();
    assert_eq!(attempts, vec![1, 2]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_back_the_rest_of_the_batch() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let seen_fast = Seen::default();
    let fast_seen = seen_fast.clone();
    let hang = Router::new().route(
        "/hook",
        post(move || {
            let mut rx = release_rx.clone();
            async move {
                let _ = rx.wait_for(|released| *released).await;
                StatusCode::OK
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hang_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, hang).await });
    let fast = Router::new()
        .route("/hook", post(receive))
        .with_state(Receiver {
            seen: fast_seen,
            script: always(200),
            delay: None,
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fast_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, fast).await });

    let slow_i = integration(&format!("http://{hang_addr}/hook"), None);
    let fast_is: Vec<_> = (0..5)
        .map(|_| integration(&format!("http://{fast_addr}/hook"), None))
        .collect();
    let mut all: Vec<&Integration> = vec![&slow_i];
    all.extend(fast_is.iter());
    let p = pipeline(&all, Duration::from_secs(20)).await;
    let mut jobs = vec![job(&slow_i)];
    jobs.extend(fast_is.iter().map(job));
    enqueue(&p.queue, &jobs).await;
    let batch = p
        .queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(batch.len(), 6);
    let fanout = p.fanout.clone();
    let run = tokio::spawn(async move { fanout.process(batch, None).await });
    // All five fast deliveries arrive while the slow receiver is still holding its
    // request (bounded wait: 100 polls of 50 ms).
    let mut arrived = 0;
    for _ in 0..100 {
        arrived = seen_fast.requests.lock().expect("lock").len();
        if arrived == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(arrived, 5, "fast deliveries waited for the slow one");
    assert!(!run.is_finished());
    release_tx.send(true).expect("release");
    let failed = run.await.expect("task");
    assert!(failed.is_empty());
}

/// An HTTPS receiver on 127.0.0.1 for `name`, its certificate issued by a CA made
/// for the test: what it was sent, and how many TLS handshakes it refused.
struct TlsReceiver {
    addr: SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    ca_pem: String,
    requests: Arc<Mutex<Vec<String>>>,
    refused_handshakes: Arc<AtomicUsize>,
}

async fn tls_receiver(name: &str) -> TlsReceiver {
    use tokio::io::AsyncWriteExt;
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Herald test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("leaf")
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .expect("leaf certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let refused_handshakes = Arc::new(AtomicUsize::new(0));
    let (seen, refused) = (requests.clone(), refused_handshakes.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                refused.fetch_add(1, Ordering::SeqCst);
                continue;
            };
            if let Ok(Some(request)) = RequestReader::new().read(&mut tls).await {
                seen.lock().expect("requests").push(request.text());
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = tls.write_all(answer).await;
            let _ = tls.shutdown().await;
        }
    });
    TlsReceiver {
        addr,
        ca: ca.der().clone(),
        ca_pem: pem(ca.der()),
        requests,
        refused_handshakes,
    }
}

/// A certificate in PEM, as a CA file holds it.
fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A resolver that answers every lookup with `addr`.
fn resolving_to(addr: SocketAddr) -> Arc<Rebinding> {
    Arc::new(Rebinding {
        answers: vec![addr],
        lookups: Arc::new(AtomicUsize::new(0)),
    })
}

/// A deliverer that finds webhook.test at `receiver`, trusting its CA or not, and a
/// signed integration with its HTTPS URL.
fn to_tls_receiver(receiver: &TlsReceiver, trust_its_ca: bool) -> (WebhookDeliverer, Integration) {
    let d = WebhookDeliverer::with_resolver(
        loopback_allowed(),
        Duration::from_secs(2),
        resolving_to(receiver.addr),
    )
    .expect("client");
    let d = if trust_its_ca {
        d.trusting(vec![receiver.ca.clone()])
    } else {
        d
    };
    let i = integration(
        &format!("https://webhook.test:{}/hook", receiver.addr.port()),
        Some("a-secret-for-this-test"),
    );
    (d, i)
}

#[tokio::test]
async fn an_https_webhook_is_delivered_over_tls_to_a_certificate_the_deliverer_trusts() {
    // GIVEN an HTTPS receiver for webhook.test whose CA the deliverer trusts
    let receiver = tls_receiver("webhook.test").await;
    let (d, i) = to_tls_receiver(&receiver, true);
    // WHEN an event is delivered to it
    let result = d.deliver(&i, webhook_config(&i), &job(&i), 1).await;
    // THEN it arrives over TLS, signed, and the answer is read
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.status_code, Some(200));
    assert_eq!(result.body, "ok");
    let requests = receiver.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = requests[0].to_ascii_lowercase();
    assert!(request.starts_with("post /hook http/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!(
            "\r\nhost: webhook.test:{}\r\n",
            receiver.addr.port()
        )),
        "{request}"
    );
    assert!(request.contains("\r\nwebhook-signature: v1,"), "{request}");
    assert!(request.contains("\"o-1\""), "{request}");
}

#[tokio::test]
async fn an_https_webhook_whose_certificate_is_not_trusted_is_sent_nothing_and_retried() {
    // GIVEN an HTTPS receiver whose certificate comes from a CA nobody trusts
    let receiver = tls_receiver("webhook.test").await;
    let (d, i) = to_tls_receiver(&receiver, false);
    // WHEN an event is delivered to it
    let result = d.deliver(&i, webhook_config(&i), &job(&i), 1).await;
    // THEN the handshake fails on the certificate, the failure says so, the attempt
    // is retried, and no request (so no secret, no event) was sent.
    assert!(
        matches!(result.outcome, Outcome::Retryable { .. }),
        "{result:?}"
    );
    let detail = result.error_detail.clone().unwrap_or_default();
    assert!(
        detail.contains("TLS") && detail.contains("certificate"),
        "{detail}"
    );
    for _ in 0..50 {
        if receiver.refused_handshakes.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.refused_handshakes.load(Ordering::SeqCst), 1);
    assert!(receiver.requests.lock().expect("requests").is_empty());
}

/// A file holding `text` under the system's temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("herald-test-{}.pem", Uuid::new_v4()));
        std::fs::write(&path, text).expect("writing the PEM file");
        Self(path)
    }
    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The deliverer the functions build from `settings` (the dev server's, loopback
/// allowed), with `HERALD_WEBHOOK_EXTRA_CA` set to `extra_ca`.
async fn wired_deliverer(
    extra_ca: Option<String>,
) -> herald_core::error::Result<Arc<dyn Deliverer>> {
    let mut settings = herald_core::config::PipelineSettings::memory();
    settings.webhook_timeout = Duration::from_secs(2);
    settings.webhook_extra_ca = extra_ca;
    herald_core::wiring::Components::build(&settings, false)
        .await?
        .deliverer()
}

#[tokio::test]
async fn a_webhook_behind_a_private_ca_is_delivered_when_herald_webhook_extra_ca_names_that_ca() {
    // GIVEN an HTTPS receiver for localhost whose certificate comes from a private CA,
    // and that CA in a PEM file named by HERALD_WEBHOOK_EXTRA_CA
    let receiver = tls_receiver("localhost").await;
    let pem = TempFile::new(&receiver.ca_pem);
    let trusting = wired_deliverer(Some(pem.path())).await.expect("deliverer");
    let untrusting = wired_deliverer(None).await.expect("deliverer");
    let i = integration(
        &format!("https://localhost:{}/hook", receiver.addr.port()),
        Some("a-secret-for-this-test"),
    );
    // WHEN the deliverer built without the setting delivers, then the one built with it
    let refused = untrusting.deliver(&i, &job(&i), 1).await;
    let result = trusting.deliver(&i, &job(&i), 1).await;
    // THEN only the second one's delivery arrives: the setting is what made the
    // receiver's certificate trusted
    assert!(
        matches!(refused.outcome, Outcome::Retryable { .. }),
        "{refused:?}"
    );
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.body, "ok");
    let requests = receiver.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("webhook-signature: v1,"),
        "{}",
        requests[0]
    );
}

#[tokio::test]
async fn a_herald_webhook_extra_ca_that_is_missing_or_holds_no_certificate_stops_the_start_naming_the_setting(
) {
    // GIVEN a path to nothing, and a file without any certificate in it
    let missing = std::env::temp_dir()
        .join(format!("herald-test-{}.pem", Uuid::new_v4()))
        .display()
        .to_string();
    let empty = TempFile::new("not a certificate\n");
    for path in [missing, empty.path()] {
        // WHEN the functions' components are built with it
        let built = wired_deliverer(Some(path.clone())).await;
        // THEN they are not: the error names the setting and the file
        let error = built.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("HERALD_WEBHOOK_EXTRA_CA"), "{error}");
        assert!(error.contains(&path), "{error}");
    }
}
