//! Herald fires `integration.created`, `integration.updated` and
//! `integration.deleted` itself when a store's integrations change through the API,
//! through the same ingest path as any event: the integrations of that store that
//! observe them get a job. With the embedded backend, as the dev server runs it.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use herald_core::config::PipelineSettings;
use herald_core::job::DeliveryJob;
use herald_core::ports::JobSource;
use herald_core::wiring::Components;
use serde_json::{json, Value};

use common::send;

async fn app() -> (Router, Components) {
    common::embedded_app(&PipelineSettings::memory(), false, false).await
}

fn webhook(name: &str, observes: &[&str]) -> Value {
    json!({"data": {
        "type": "integration", "integration_type": "webhook", "name": name, "enabled": true,
        "observes": observes,
        "configuration": {"url": "https://example.com/hook", "secret_key": "SOME_SECRET_KEY"}
    }})
}

const OBSERVED: [&str; 3] = [
    "integration.created",
    "integration.updated",
    "integration.deleted",
];

/// Every job in the embedded queue, in the order they were queued.
async fn queued(components: &Components) -> Vec<(String, DeliveryJob)> {
    let queue = components.memory_queue.clone().expect("embedded queue");
    let mut jobs = Vec::new();
    loop {
        let batch = queue
            .receive(10, Duration::from_millis(10))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        for m in batch {
            jobs.push((m.body.clone(), DeliveryJob::parse(&m.body).expect("job")));
            queue.delete(&m.receipt).await.expect("delete");
        }
    }
    jobs
}

#[tokio::test]
async fn changing_an_integration_fires_integration_events_to_the_stores_observers() {
    // GIVEN an integration observing integration events, and one of another store
    let (app, components) = app().await;
    let (status, observer) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(webhook("observer", &OBSERVED)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s2",
        Some(webhook("elsewhere", &OBSERVED)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = queued(&components).await;
    // WHEN another integration of the first store is created, updated and deleted
    let (status, created) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(webhook("orders", &["order.paid"])),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    let uri = format!("/v2/integrations/{id}");
    let (status, updated) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(json!({"data": {"type": "integration", "name": "renamed"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, "DELETE", &uri, "s1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // THEN each change reached the observer of that store, and only it, carrying the
    // integration as the API showed it (secrets masked); a deletion only its id and type
    let after = queued(&components).await;
    let observer_id = observer["data"]["id"].as_str().expect("id");
    let seen: Vec<(String, String, Value)> = after
        .iter()
        .map(|(_, j)| {
            (
                j.store_id.clone(),
                j.event.kind.clone(),
                j.event.payload.value(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "s1".to_owned(),
                "integration.created".to_owned(),
                json!({"data": created["data"]})
            ),
            (
                "s1".to_owned(),
                "integration.updated".to_owned(),
                json!({"data": updated["data"]})
            ),
            (
                "s1".to_owned(),
                "integration.deleted".to_owned(),
                json!({"data": {"id": id, "type": "integration"}})
            ),
        ]
    );
    assert!(after
        .iter()
        .all(|(_, j)| j.integration_id.to_string() == observer_id));
    assert!(after
        .iter()
        .all(|(body, _)| !body.contains("SOME_SECRET_KEY")));
    assert_eq!(
        created["data"]["configuration"]["secret_key"],
        "***********_KEY"
    );
    // AND each observer was told of its own creation, in its own store
    let own: Vec<(String, String)> = before
        .iter()
        .map(|(_, j)| (j.store_id.clone(), j.event.kind.clone()))
        .collect();
    assert_eq!(
        own,
        [
            ("s1".to_owned(), "integration.created".to_owned()),
            ("s2".to_owned(), "integration.created".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_integration_event_that_cannot_be_queued_does_not_fail_the_api_call() {
    // GIVEN an observer of integration events, and an internal queue that refuses sends
    let (app, components) = app().await;
    let (status, _) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(webhook("observer", &OBSERVED)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    queued(&components).await;
    components
        .memory_queue
        .as_ref()
        .expect("embedded queue")
        .fail_next_sends(1_000);
    // WHEN an integration is created, updated and deleted
    let (status, created) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(webhook("orders", &["order.paid"])),
    )
    .await;
    // THEN each call succeeds, the change stands, and no event was queued
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let uri = format!(
        "/v2/integrations/{}",
        created["data"]["id"].as_str().expect("id")
    );
    let (status, got) = send(&app, "GET", &uri, "s1", None).await;
    assert_eq!(
        (status, &got["data"]["name"]),
        (StatusCode::OK, &json!("orders"))
    );
    let (status, _) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(json!({"data": {"type": "integration", "name": "renamed"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, "DELETE", &uri, "s1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(queued(&components).await.len(), 0);
}

#[tokio::test]
async fn an_update_with_nothing_to_change_writes_nothing_and_fires_no_event() {
    // GIVEN an integration observing integration events, and another one
    let (app, components) = app().await;
    let (status, _) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(webhook("observer", &OBSERVED)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, created) = send(
        &app,
        "POST",
        "/v2/integrations",
        "s1",
        Some(webhook("orders", &["order.paid"])),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    let uri = format!("/v2/integrations/{id}");
    let _ = queued(&components).await;

    // WHEN it is updated with an empty attributes section, then with its own values
    let (empty, after_empty) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(json!({"data": {"type": "integration"}})),
    )
    .await;
    let (same, after_same) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(json!({"data": {"type": "integration", "name": "orders", "enabled": true}})),
    )
    .await;

    // THEN both answer the integration as it was (Elastic Path: an empty attributes
    // section does not update), and no integration.updated is queued
    assert_eq!(empty, StatusCode::OK);
    assert_eq!(same, StatusCode::OK);
    assert_eq!(after_empty["data"], created["data"]);
    assert_eq!(after_same["data"], created["data"]);
    assert!(queued(&components).await.is_empty());
}
