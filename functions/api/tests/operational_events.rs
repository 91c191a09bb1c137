//! Herald's operational events (`herald.integration.disabled`, `.failing`,
//! `.recovered`) through the API and the embedded pipeline: listed as observable,
//! refused from senders, delivered to the store's integrations that observe them,
//! never to the integration they concern, never to another store, and never caused
//! by the delivery of one of them. Receivers on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use herald_core::config::PipelineSettings;
use herald_core::ports::JobSource;
use herald_core::wiring::Components;
use serde_json::{json, Value};

use common::send;

/// The API and the embedded pipeline, its retry schedule scaled to nothing: a job
/// that keeps failing makes all its attempts at once, and fails for good.
async fn app() -> (Router, Components) {
    let mut pipeline = PipelineSettings::memory();
    pipeline.retry_scale = 0.0;
    common::embedded_app(&pipeline, true, true).await
}

/// A receiver on 127.0.0.1 that keeps what it gets and answers with `status`, which
/// the test may change.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Value>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> (String, Self) {
        let receiver = Self::default();
        receiver.answer(status);
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), receiver)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The event key of each body received (`triggered_by`), in order.
    fn types(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|b| b["triggered_by"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn bodies(&self) -> Vec<Value> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn record(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.seen.lock().expect("lock").push(body);
    StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}

/// Creates a webhook integration of `store` observing `observes`; its id.
async fn integration(app: &Router, store: &str, url: &str, observes: &[&str]) -> String {
    let (status, created) = send(
        app,
        "POST",
        "/v2/integrations",
        store,
        Some(json!({"data": {
            "type": "integration", "integration_type": "webhook", "name": "hook",
            "enabled": true, "observes": observes, "configuration": {"url": url}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["data"]["id"].as_str().expect("id").to_owned()
}

async fn order(app: &Router, store: &str, id: &str) {
    let (status, answer) = send(
        app,
        "POST",
        "/v2/events",
        store,
        Some(json!({"data": {"id": id, "type": "order.paid",
            "payload": {"data": {"id": id, "type": "order"}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

/// Delivers what the embedded queue holds, round by round, until a round finds it
/// empty (at most 50 rounds): a retry, or an operational event a round causes, comes
/// in a later one.
async fn fan_out(components: &Components) {
    let fanout = components.fanout().expect("fanout");
    let queue = components.memory_queue.clone().expect("embedded queue");
    for _ in 0..50 {
        let records = queue
            .receive(10, Duration::from_millis(10))
            .await
            .expect("receive");
        if records.is_empty() {
            return;
        }
        let receipts: Vec<String> = records.iter().map(|r| r.receipt.clone()).collect();
        let failed = fanout.process(records, None).await;
        for receipt in receipts {
            if !failed.contains(&receipt) {
                queue.delete(&receipt).await.expect("delete");
            }
        }
    }
}

#[tokio::test]
async fn the_operational_events_are_listed_as_observable_and_emitted_by_herald() {
    let (app, _) = app().await;
    let (status, list) = send(&app, "GET", "/v2/observable-events", "s1", None).await;
    assert_eq!(status, StatusCode::OK);
    let herald: Vec<&Value> = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["emitted_by"] == "herald")
        .collect();
    let ids: Vec<&str> = herald.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "herald.integration.disabled",
            "herald.integration.failing",
            "herald.integration.recovered"
        ]
    );
    let order = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["id"] == "order.paid")
        .expect("order.paid");
    assert_eq!(order["emitted_by"], "platform");
}

#[tokio::test]
async fn a_store_cannot_send_an_operational_event_of_its_own() {
    let (app, components) = app().await;
    let (url, _) = Receiver::start(204).await;
    integration(&app, "s1", &url, &["herald.integration.disabled"]).await;
    let (status, answer) = send(
        &app,
        "POST",
        "/v2/events",
        "s1",
        Some(json!({"data": {"type": "herald.integration.disabled",
            "payload": {"data": {"id": "x", "type": "integration"}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["errors"][0]["source"]["pointer"], "/data/type");
    assert_eq!(
        answer["errors"][0]["detail"],
        "is emitted by Herald itself; it cannot be sent"
    );
    assert_eq!(components.memory_queue.clone().expect("queue").len(), 0);
}

#[tokio::test]
async fn an_auto_disabled_integration_is_announced_to_the_stores_other_integrations_but_not_to_itself_nor_to_other_stores(
) {
    let (app, components) = app().await;
    // GIVEN an integration whose receiver is gone (410: disabled at once), observing
    // orders and the disabled event itself, and a watcher of the same store and one
    // of another store, both observing the disabled event
    let (gone_url, gone) = Receiver::start(410).await;
    let (watch_url, watcher) = Receiver::start(204).await;
    let (other_url, other) = Receiver::start(204).await;
    let broken = integration(
        &app,
        "s1",
        &gone_url,
        &["order.paid", "herald.integration.disabled"],
    )
    .await;
    integration(&app, "s1", &watch_url, &["herald.integration.disabled"]).await;
    integration(&app, "s2", &other_url, &["herald.integration.disabled"]).await;
    // WHEN an order is delivered to the gone receiver
    order(&app, "s1", "o-1").await;
    fan_out(&components).await;
    // THEN the integration is disabled and the watcher hears of it, once
    let (_, now) = send(
        &app,
        "GET",
        &format!("/v2/integrations/{broken}"),
        "s1",
        None,
    )
    .await;
    assert_eq!(now["data"]["enabled"], false);
    assert_eq!(watcher.types(), ["herald.integration.disabled"]);
    let event = &watcher.bodies()[0];
    let data = &event["payload"]["data"];
    assert_eq!(data["id"], broken.as_str());
    assert_eq!(data["type"], "integration");
    assert_eq!(data["enabled"], false);
    assert_eq!(data["meta"]["alert"]["reason"], "gone");
    assert_eq!(
        data["meta"]["alert"]["last_error"],
        "the webhook answered 410 Gone"
    );
    assert!(data["meta"]["alert"]["job_id"].is_string());
    assert_eq!(data["meta"]["health"]["status"], "disabled");
    // and neither the integration it concerns nor another store's does
    assert_eq!(gone.types(), ["order.paid"]);
    assert!(other.types().is_empty());
}

#[tokio::test]
async fn a_first_failure_after_a_success_and_the_recovery_are_announced_once_each() {
    let (app, components) = app().await;
    let (url, flaky) = Receiver::start(204).await;
    let (watch_url, watcher) = Receiver::start(204).await;
    let watched = integration(&app, "s1", &url, &["order.paid"]).await;
    integration(
        &app,
        "s1",
        &watch_url,
        &["herald.integration.failing", "herald.integration.recovered"],
    )
    .await;
    // A success, then two jobs refused for good (400), then a success again.
    order(&app, "s1", "o-1").await;
    fan_out(&components).await;
    flaky.answer(400);
    order(&app, "s1", "o-2").await;
    fan_out(&components).await;
    order(&app, "s1", "o-3").await;
    fan_out(&components).await;
    flaky.answer(204);
    order(&app, "s1", "o-4").await;
    fan_out(&components).await;
    // Two successes, and two jobs of every attempt the schedule has.
    let attempts = herald_core::retry::RetryPolicy::default().max_attempts() as usize;
    assert_eq!(flaky.types().len(), 2 + 2 * attempts);
    assert_eq!(
        watcher.types(),
        ["herald.integration.failing", "herald.integration.recovered"]
    );
    let bodies = watcher.bodies();
    assert_eq!(bodies[0]["payload"]["data"]["id"], watched.as_str());
    assert_eq!(
        bodies[0]["payload"]["data"]["meta"]["alert"]["reason"],
        "failing"
    );
    assert_eq!(
        bodies[0]["payload"]["data"]["meta"]["alert"]["last_error"],
        "the webhook answered 400 Bad Request"
    );
    assert_eq!(
        bodies[1]["payload"]["data"]["meta"]["alert"]["reason"],
        "recovered"
    );
    assert_eq!(
        bodies[1]["payload"]["data"]["meta"]["health"]["status"],
        "healthy"
    );
}

#[tokio::test]
async fn an_integration_failing_on_operational_events_causes_none_about_itself() {
    let (app, components) = app().await;
    // GIVEN two order integrations, a watcher of failures and a second watcher
    let (a_url, a) = Receiver::start(204).await;
    let (b_url, b) = Receiver::start(204).await;
    let (watch_url, watcher) = Receiver::start(204).await;
    let (second_url, second) = Receiver::start(204).await;
    let first = integration(&app, "s1", &a_url, &["order.paid"]).await;
    let other = integration(&app, "s1", &b_url, &["order.paid"]).await;
    integration(&app, "s1", &watch_url, &["herald.integration.failing"]).await;
    integration(&app, "s1", &second_url, &["herald.integration.failing"]).await;
    order(&app, "s1", "o-1").await;
    fan_out(&components).await;
    // and the first fails after its success: the watcher takes that event (a success)
    a.answer(400);
    order(&app, "s1", "o-2").await;
    fan_out(&components).await;
    // WHEN the other fails after its success and the watcher refuses that event
    // (its own first failure after a success)
    b.answer(400);
    watcher.answer(400);
    order(&app, "s1", "o-3").await;
    fan_out(&components).await;
    // THEN the second hears of the two order integrations and not of the watcher,
    // whose failure was on an operational event
    let about = |r: &Receiver| -> Vec<String> {
        r.bodies()
            .iter()
            .map(|b| {
                b["payload"]["data"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(second.types(), ["herald.integration.failing"; 2]);
    assert_eq!(about(&second), [first.clone(), other.clone()]);
    // (the watcher got every attempt at the second event, all refused)
    let mut heard = about(&watcher);
    heard.dedup();
    assert_eq!(heard, [first, other]);
}
