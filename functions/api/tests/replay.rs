//! Replay from the event archive through the API, with the embedded pipeline and a
//! webhook receiver on 127.0.0.1: `POST /v2/integrations/{id}/jobs/{job_id}/replay`
//! and `POST /v2/integrations/{id}/replay` with a range.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use herald_core::config::PipelineSettings;
use herald_core::ports::JobSource;
use herald_core::wiring::Components;
use serde_json::{json, Value};

use common::send;

async fn app() -> (Router, Components) {
    common::embedded_app(&PipelineSettings::memory(), true, true).await
}

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A receiver on 127.0.0.1 keeping each POST's `webhook-id` and body.
async fn receiver() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().expect("lock").push((id, body));
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// Delivers every job in the embedded queue once.
async fn fan_out(components: &Components) {
    let fanout = components.fanout().expect("fanout");
    let queue = components.memory_queue.clone().expect("embedded queue");
    let records = queue
        .receive(100, Duration::from_millis(10))
        .await
        .expect("receive");
    assert!(fanout.process(records, None).await.is_empty());
}

/// A store's webhook integration observing order.paid, and `events` orders sent to it
/// and delivered; the integration's id.
async fn delivered(app: &Router, components: &Components, url: &str, events: usize) -> String {
    let (status, created) = send(
        app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(json!({"data": {
        "type": "integration", "integration_type": "webhook", "name": "orders", "enabled": true,
        "observes": ["order.paid"], "configuration": {"url": url}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let orders: Vec<Value> = (0..events)
        .map(|n| {
            json!({"id": format!("evt-{n}"), "type": "order.paid",
                        "payload": {"data": {"id": format!("o-{n}"), "type": "order"}}})
        })
        .collect();
    let (status, accepted) = send(
        app,
        "POST",
        "/v2/events",
        "s1",
        Some(json!({"data": orders})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    fan_out(components).await;
    created["data"]["id"].as_str().expect("id").to_owned()
}

async fn jobs(app: &Router, id: &str) -> Vec<Value> {
    let (status, listed) = send(
        app,
        "GET",
        &format!("/v2/integrations/{id}/jobs"),
        "s1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    listed["data"].as_array().expect("jobs").clone()
}

#[tokio::test]
async fn a_delivered_job_replayed_by_id_is_a_new_job_with_a_new_webhook_id_naming_the_old_one() {
    // GIVEN an order delivered to a webhook
    let (app, components) = app().await;
    let (url, seen) = receiver().await;
    let id = delivered(&app, &components, &url, 1).await;
    let old = jobs(&app, &id).await[0]["id"]
        .as_str()
        .expect("job")
        .to_owned();

    // WHEN its job is replayed
    let (status, replay) = send(
        &app,
        "POST",
        &format!("/v2/integrations/{id}/jobs/{old}/replay"),
        "s1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    let new = replay["data"]["id"].as_str().expect("new id").to_owned();
    assert_ne!(new, old);
    assert_eq!(replay["data"]["type"], "integration-job");
    assert_eq!(replay["data"]["meta"]["replay_of"], json!(old));
    assert_eq!(
        replay["data"]["event"],
        json!({"id": "evt-0", "type": "order.paid"})
    );
    fan_out(&components).await;

    // THEN the receiver got the order twice, the second time under the new job's id
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].0.as_str(), seen[1].0.as_str()),
        (old.as_str(), new.as_str())
    );
    assert_eq!(seen[0].1["payload"], seen[1].1["payload"]);
    // AND the jobs listing shows the replay, delivered, naming the job it replays
    let listed = jobs(&app, &id).await;
    assert_eq!(listed.len(), 2);
    let replayed = listed
        .iter()
        .find(|j| j["id"] == json!(new))
        .expect("listed");
    assert_eq!(replayed["status"], "delivered");
    assert_eq!(replayed["meta"]["replay_of"], json!(old));
    let original = listed
        .iter()
        .find(|j| j["id"] == json!(old))
        .expect("listed");
    assert_eq!(original["meta"].get("replay_of"), None);
}

#[tokio::test]
async fn no_store_replays_another_stores_job_and_an_unknown_job_is_a_404() {
    let (app, components) = app().await;
    let (url, seen) = receiver().await;
    let id = delivered(&app, &components, &url, 1).await;
    let job = jobs(&app, &id).await[0]["id"]
        .as_str()
        .expect("job")
        .to_owned();
    for (store, path, detail) in [
        (
            "s2",
            format!("/v2/integrations/{id}/jobs/{job}/replay"),
            "integration not found",
        ),
        (
            "s1",
            format!("/v2/integrations/{id}/jobs/{}/replay", uuid::Uuid::now_v7()),
            "job not found",
        ),
        (
            "s1",
            format!("/v2/integrations/{id}/jobs/not-a-job/replay"),
            "job not found",
        ),
        (
            "s1",
            format!(
                "/v2/integrations/{}/jobs/{job}/replay",
                uuid::Uuid::now_v7()
            ),
            "integration not found",
        ),
    ] {
        let (status, body) = send(&app, "POST", &path, store, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["errors"][0]["detail"], detail, "{path}");
    }
    fan_out(&components).await;
    assert_eq!(seen.lock().expect("lock").len(), 1, "nothing was replayed");
}

#[tokio::test]
async fn a_range_replay_answers_its_counts_and_the_same_request_again_sends_nothing() {
    // GIVEN three orders delivered
    let (app, components) = app().await;
    let (url, seen) = receiver().await;
    let id = delivered(&app, &components, &url, 3).await;
    let body = json!({"data": {"type": "replay", "since": "2020-01-01T00:00:00Z",
                               "until": "2100-01-01T00:00:00Z", "status": "all"}});
    let path = format!("/v2/integrations/{id}/replay");

    // WHEN their range is replayed, twice
    let (status, first) = send(&app, "POST", &path, "s1", Some(body.clone())).await;
    let (again, second) = send(&app, "POST", &path, "s1", Some(body.clone())).await;

    // THEN the first replays the three, the second none, each the whole range
    assert_eq!(
        (status, again),
        (StatusCode::OK, StatusCode::OK),
        "{first} {second}"
    );
    assert_eq!(
        first["data"],
        json!({"type": "replay", "integration_id": id, "replayed": 3, "already_replayed": 0,
               "not_archived": 0, "complete": true})
    );
    assert_eq!(second["data"]["replayed"], 0);
    assert_eq!(second["data"]["already_replayed"], 3);
    fan_out(&components).await;
    assert_eq!(seen.lock().expect("lock").len(), 6);
    // AND a range of failed jobs (the default status) holds none of them
    let (_, failed) = send(
        &app,
        "POST",
        &path,
        "s1",
        Some(json!({"data": {"type": "replay", "since": "2020-01-01T00:00:00Z"}})),
    )
    .await;
    assert_eq!(failed["data"]["replayed"], 0, "{failed}");
    assert_eq!(failed["data"]["complete"], true);
}

#[tokio::test]
async fn a_bad_range_replay_body_is_a_422_naming_each_problem() {
    let (app, _components) = app().await;
    let (url, _) = receiver().await;
    let (_, created) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(json!({"data": {
        "type": "integration", "integration_type": "webhook", "name": "orders", "enabled": true,
        "observes": ["order.paid"], "configuration": {"url": url}}})),
    )
    .await;
    let id = created["data"]["id"].as_str().expect("id");
    let (status, body) = send(
        &app,
        "POST",
        &format!("/v2/integrations/{id}/replay"),
        "s1",
        Some(
            json!({"data": {"type": "replay", "since": "2026-03-02T00:00:00Z",
                             "until": "2026-03-01T00:00:00Z", "status": "delivered"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["source"]["pointer"].as_str().expect("pointer"))
        .collect();
    assert_eq!(pointers, ["/data/until", "/data/status"]);
    let (status, body) = send(
        &app,
        "POST",
        &format!("/v2/integrations/{id}/replay"),
        "s1",
        Some(json!({"data": {"type": "replay", "since": "last tuesday"}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["source"]["pointer"], "/data/since");
}
