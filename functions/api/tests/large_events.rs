//! Events up to 5 MiB through the API with the embedded pipeline: a payload too large
//! for a queue message is stored and its job carries a claim check; the webhook
//! receiver on 127.0.0.1 still gets the whole body, signed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::config::PipelineSettings;
use herald_core::model::StoreId;
use herald_core::ports::JobSource;
use herald_core::signing;
use herald_core::wiring::Components;
use serde_json::{json, Value};

use common::send;

async fn app() -> (Router, Components) {
    let components = Components::build(&PipelineSettings::memory(), false)
        .await
        .expect("components");
    let mut settings = Settings::memory(Tenancy::Header {
        default: StoreId::parse("default").expect("store"),
    });
    settings.policy.allow_http_webhooks = true;
    let ingest = Arc::new(components.ingest().expect("ingest"));
    let state = AppState::from_components(&components, &settings, Some(ingest)).expect("state");
    (herald_api::router(state), components)
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn record(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.lock().expect("lock").push((headers, body));
    StatusCode::NO_CONTENT
}

/// A receiver on 127.0.0.1 answering 204 to every `POST /hook`, whatever its size.
async fn receiver() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/hook", post(record))
        .layer(DefaultBodyLimit::disable())
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// An `order.paid` event of about `mib` MiB: a large order with its items.
fn order(id: &str, mib: usize) -> Value {
    let items: Vec<Value> = (0..mib * 1024)
        .map(|n| json!({"id": format!("item-{n}"), "type": "order_item", "sku": "x".repeat(980)}))
        .collect();
    json!({"id": id, "type": "order.paid",
           "payload": {"data": {"id": "o-1", "type": "order", "status": "paid"},
                       "included": {"items": items}}})
}

/// Delivers every job in the embedded queue once.
async fn fan_out(components: &Components) {
    let fanout = components.fanout().expect("fanout");
    let queue = components.memory_queue.clone().expect("embedded queue");
    let records = queue
        .receive(10, Duration::from_millis(10))
        .await
        .expect("receive");
    assert!(fanout.process(records, None).await.is_empty());
}

#[tokio::test]
async fn a_4_mib_order_is_accepted_and_delivered_whole_to_a_webhook_whose_signature_verifies() {
    // GIVEN a webhook integration observing order.paid
    let (app, components) = app().await;
    let (url, seen) = receiver().await;
    let secret = "a-signing-secret-of-the-store";
    let (status, created) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(json!({"data": {
        "type": "integration", "integration_type": "webhook", "name": "orders", "enabled": true,
        "observes": ["order.paid"], "configuration": {"url": url, "secret_key": secret}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // WHEN a 4 MiB order is sent
    let event = order("evt-4mib", 4);
    assert!(event.to_string().len() > 4 * 1024 * 1024);
    let (status, accepted) = send(
        &app,
        "POST",
        "/v2/events",
        "s1",
        Some(json!({"data": event})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        accepted["data"],
        json!({"id": "evt-4mib", "status": "accepted", "jobs": 1})
    );
    fan_out(&components).await;
    // THEN the receiver got the whole payload, signed over the whole body
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    let delivered: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(delivered["payload"], event["payload"]);
    assert_eq!(delivered["resources"], json!(event["payload"].to_string()));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .expect(name)
            .to_owned()
    };
    let timestamp: i64 = header("webhook-timestamp").parse().expect("number");
    assert!(signing::verify(
        secret,
        &header("webhook-id"),
        timestamp,
        body,
        &header("webhook-signature")
    ));
}

#[tokio::test]
async fn an_event_over_5_mib_is_413_with_a_pointer_to_it_and_nothing_is_queued() {
    let (app, components) = app().await;
    let (status, _) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(json!({"data": {
        "type": "integration", "integration_type": "webhook", "name": "orders", "enabled": true,
        "observes": ["order.paid"], "configuration": {"url": "https://example.com/hook"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let max = herald_core::job::MAX_EVENT_BYTES;
    let mut event = json!({"id": "evt-big", "type": "order.paid", "payload": {"data": {"id": "o-1", "note": ""}}});
    let room = max + 1 - event.to_string().len();
    event["payload"]["data"]["note"] = json!("x".repeat(room));
    let bytes = event.to_string().len();
    assert_eq!(bytes, max + 1);
    let (status, answer) = send(
        &app,
        "POST",
        "/v2/events",
        "s1",
        Some(json!({"data": [{"type": "order.paid", "payload": {"data": {}}}, event]})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer,
        json!({"errors": [{
            "status": 413,
            "title": "Payload Too Large",
            "detail": format!("the event is {bytes} bytes of JSON, more than the {max} (5 MiB) an event may be"),
            "source": {"pointer": "/data/1"}
        }]})
    );
    let queue = components.memory_queue.clone().expect("embedded queue");
    assert_eq!(queue.len(), 0);
}
