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
    common::embedded_app(&PipelineSettings::memory(), true, true).await
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

/// The embedded pipeline minting datarefs under `http://herald.test`, the data of a
/// payload too large for a queue message stored as ingest stores it, and that data.
async fn stored_data() -> (Router, Components, String, Value) {
    let mut pipeline = PipelineSettings::memory();
    pipeline.public_url = Some("http://herald.test".into());
    let components = Components::build(&pipeline, false)
        .await
        .expect("components");
    let settings = Settings::memory(Tenancy::Header {
        default: StoreId::parse("default").expect("store"),
    });
    let state = AppState::from_components(&components, &settings, None).expect("state");
    let data = order("evt-data", 1)["payload"]["included"].clone();
    let payload = herald_core::job::Payload::new(&json!({"data": data}));
    let parts = herald_core::job::Stored::parts(&StoreId::parse("s1").expect("store"), &payload)
        .expect("stored");
    let bodies = components.bodies.clone().expect("bodies");
    for (key, body) in parts.objects {
        bodies.put(&key, body).await.expect("put");
    }
    let sha256 = parts.stored.data_sha256.expect("data stored apart");
    (herald_api::router(state), components, sha256, data)
}

/// The path of `url`, a dataref minted under `http://herald.test`.
fn path_of(url: &str) -> &str {
    url.strip_prefix("http://herald.test")
        .expect("under the API's public URL")
}

#[tokio::test]
async fn a_dataref_serves_its_data_to_whoever_holds_it() {
    // GIVEN the dataref the fan-out would hand a queue message for store s1's data
    let (app, components, sha256, data) = stored_data().await;
    let event_data = components.event_data.clone().expect("event data");
    let url = event_data
        .link("s1", &sha256, chrono::Utc::now())
        .await
        .expect("link");
    assert!(
        url.starts_with("http://herald.test/v2/event-data/"),
        "{url}"
    );
    // WHEN it is followed, by a caller naming another store or none
    for store in ["s1", "someone-else"] {
        let (status, body) = send(&app, "GET", path_of(&url), store, None).await;
        // THEN it serves exactly the data
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, data);
    }
}

#[tokio::test]
async fn an_expired_dataref_is_410_gone_with_a_json_api_error() {
    // GIVEN a dataref handed out 7 days and a minute ago
    let (app, components, sha256, _) = stored_data().await;
    let event_data = components.event_data.clone().expect("event data");
    let handed_out = chrono::Utc::now() - chrono::Duration::days(7) - chrono::Duration::minutes(1);
    let url = event_data
        .link("s1", &sha256, handed_out)
        .await
        .expect("link");
    // WHEN it is followed THEN it is gone, and says why
    let (status, body) = send(&app, "GET", path_of(&url), "s1", None).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        body,
        json!({"errors": [{"status": 410, "title": "Gone",
            "detail": "this dataref has expired: a dataref is valid for 7 days"}]})
    );
}

#[tokio::test]
async fn an_edited_or_made_up_token_is_404_and_says_nothing_of_why() {
    let (app, components, sha256, _) = stored_data().await;
    let event_data = components.event_data.clone().expect("event data");
    let url = event_data
        .link("s1", &sha256, chrono::Utc::now())
        .await
        .expect("link");
    let token = path_of(&url)
        .strip_prefix("/v2/event-data/")
        .expect("token")
        .to_owned();
    let mut tokens: Vec<String> = (0..token.len())
        .step_by(7)
        .map(|i| {
            let mut edited = token.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(edited).expect("ascii")
        })
        .collect();
    tokens.extend(
        [
            "x",
            "a.b",
            "%FF%FE",
            "..%2F..%2Fevents",
            "%00",
            "%E2%80%8B",
            &"A".repeat(600),
            &format!("{token}.{token}"),
        ]
        .map(str::to_owned),
    );
    for token in tokens {
        let (status, body) =
            send(&app, "GET", &format!("/v2/event-data/{token}"), "s1", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{token}");
        assert_eq!(
            body,
            json!({"errors": [{"status": 404, "title": "Not Found", "detail": "no such event data"}]}),
            "{token}"
        );
    }
}
