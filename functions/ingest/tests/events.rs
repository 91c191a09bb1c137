//! Every `events/ingest-*.json` runs through the ingest handler (embedded backend):
//! direct invocations (one event, a batch) and the HTTP event API Gateway sends.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::config::PipelineSettings;
use herald_core::model::{Integration, StoreId, Target, WebhookConfig};
use herald_core::wiring::Components;
use herald_ingest::{handle, Deps};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(events_dir().join(name)).expect("event file"))
        .expect("JSON")
}

struct World {
    deps: Deps,
    components: Components,
}

async fn world() -> World {
    let components = Components::build(&PipelineSettings::memory(), false)
        .await
        .expect("components");
    let now = Utc::now();
    let hook = Integration {
        id: uuid::Uuid::now_v7(),
        store_id: StoreId::parse("default").expect("store"),
        name: "orders and carts".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["order.paid".into(), "cart.updated".into()],
        target: Target::Webhook(WebhookConfig {
            url: "http://127.0.0.1:9/hook".into(),
            secret_key: None,
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
    };
    components
        .integrations
        .insert(&hook, 100)
        .await
        .expect("seed");
    let ingest = Arc::new(components.ingest().expect("ingest"));
    let settings = Settings::memory(Tenancy::IamHeader);
    let router = herald_api::lambda::router(
        AppState::from_components(&components, &settings, Some(ingest.clone())).expect("state"),
    );
    World {
        deps: Deps { ingest, router },
        components,
    }
}

async fn invoke(w: &World, payload: Value) -> Value {
    handle(&w.deps, LambdaEvent::new(payload, Context::default()))
        .await
        .expect("handler")
}

async fn queued(w: &World) -> usize {
    let source = w.components.source.clone().expect("source");
    source
        .receive(100, std::time::Duration::ZERO)
        .await
        .expect("receive")
        .len()
}

#[tokio::test]
async fn every_ingest_event_file_is_accepted_with_its_jobs() {
    let mut seen = 0;
    for entry in std::fs::read_dir(events_dir()).expect("events/") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("name");
        if !name.starts_with("ingest-") {
            continue;
        }
        seen += 1;
        let w = world().await;
        let out = invoke(&w, read(&name)).await;
        let (statuses, jobs): (Vec<String>, u64) = if name == "ingest-http.json" {
            assert_eq!(out["statusCode"], 202, "{name}: {out}");
            let body: Value =
                serde_json::from_str(out["body"].as_str().expect("body")).expect("JSON");
            let data = body["data"].as_array().expect("data").clone();
            (
                data.iter()
                    .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
                    .collect(),
                data.iter().map(|d| d["jobs"].as_u64().unwrap_or(0)).sum(),
            )
        } else {
            let data = out["data"].as_array().expect("data").clone();
            (
                data.iter()
                    .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
                    .collect(),
                data.iter().map(|d| d["jobs"].as_u64().unwrap_or(0)).sum(),
            )
        };
        assert!(statuses.iter().all(|s| s == "accepted"), "{name}: {out}");
        let expected_jobs = match name.as_str() {
            "ingest-direct-single.json" => 1,
            "ingest-direct-batch.json" => 2, // order.paid + cart.updated; address.updated is not observed
            "ingest-http.json" => 2,
            other => panic!("events/{other} has no expectation in this test"),
        };
        assert_eq!(jobs, expected_jobs, "{name}");
        assert_eq!(queued(&w).await as u64, expected_jobs, "{name}");
    }
    assert_eq!(seen, 3);
}

#[tokio::test]
async fn a_direct_event_without_a_store_is_reported_invalid_with_its_pointer() {
    let w = world().await;
    let mut event = read("ingest-direct-single.json");
    event.as_object_mut().expect("object").remove("store_id");
    let out = invoke(&w, event).await;
    assert_eq!(out["data"][0]["status"], "invalid");
    assert_eq!(
        out["data"][0]["errors"][0]["source"]["pointer"],
        "/store_id"
    );
    assert_eq!(queued(&w).await, 0);
}

#[tokio::test]
async fn the_http_event_needs_the_store_header_under_iam() {
    let w = world().await;
    let mut event = read("ingest-http.json");
    event["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("x-store-id");
    let out = invoke(&w, event).await;
    assert_eq!(out["statusCode"], 400);
    assert_eq!(queued(&w).await, 0);
}

#[tokio::test]
async fn the_same_file_sent_twice_queues_its_jobs_once() {
    let w = world().await;
    invoke(&w, read("ingest-direct-batch.json")).await;
    let again = invoke(&w, read("ingest-direct-batch.json")).await;
    assert!(
        again["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|d| d["status"] == "duplicate"),
        "{again}"
    );
    assert_eq!(queued(&w).await, 2);
}
