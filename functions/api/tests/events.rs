//! Every API Gateway event in `events/` runs through the Lambda-wired router (the
//! same one the `api` function serves), and answers with the status it documents.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::memory::MemoryIntegrationStore;
use herald_core::model::{Integration, Secret, StoreId, Target, WebhookConfig};
use herald_core::ports::IntegrationStore;
use herald_core::validate::Policy;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

/// The integration the get/update/delete events name.
const SEEDED_ID: &str = "0192f6e4-8d2a-7c3e-9b1a-3f5e6d7c8b9a";

/// Every API event file and the status it must produce. A new file in `events/`
/// must be added here (or to its own crate's test) or this test fails.
const EXPECTED: &[(&str, u16)] = &[
    ("api-create-webhook.json", 201),
    ("api-create-invalid.json", 422),
    ("api-list.json", 200),
    ("api-get.json", 200),
    ("api-update.json", 200),
    ("api-delete.json", 204),
    ("api-observable-events.json", 200),
    ("api-list-without-store-claim.json", 403),
];

/// Prefixes of event files that other crates' tests run.
const OTHER_PREFIXES: &[&str] = &["ingest-", "fanout-"];

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

async fn lambda_app() -> axum::Router {
    let store = Arc::new(MemoryIntegrationStore::new());
    let now = Utc::now();
    let seeded = Integration {
        id: Uuid::parse_str(SEEDED_ID).expect("uuid"),
        store_id: StoreId::parse("default").expect("store"),
        name: "Seeded".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["order.fulfilled".into()],
        target: Target::Webhook(WebhookConfig {
            url: "https://ilovelamp.now.sh/send-shipped-email".into(),
            secret_key: Some(Secret::new("SOME_SECRET_KEY")),
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
    };
    store.insert(&seeded, 100).await.expect("seed");
    let settings = Settings {
        pipeline: herald_core::config::PipelineSettings::memory(),
        tenancy: Tenancy::JwtClaim {
            claim: "store_id".into(),
        },
        max_per_store: 100,
        policy: Policy {
            allow_http_webhooks: false,
            allow_plain_stomp: false,
        },
        public_url: None,
    };
    herald_api::lambda::router(AppState::new(store, &settings))
}

#[tokio::test]
async fn every_api_event_file_runs_through_the_lambda_router_with_its_documented_status() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(events_dir()).expect("events/ exists") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if OTHER_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let expected = EXPECTED
            .iter()
            .find(|(file, _)| *file == name)
            .unwrap_or_else(|| panic!("events/{name} has no expected status in this test"))
            .1;
        let raw = std::fs::read_to_string(&path).expect("read");
        let req = lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let res = lambda_app().await.oneshot(req).await.expect("infallible");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            status,
            StatusCode::from_u16(expected).expect("status"),
            "{name}: {}",
            String::from_utf8_lossy(&body)
        );
        if !body.is_empty() {
            let json: Value =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
            assert!(
                !json.to_string().contains("SOME_SECRET_KEY"),
                "{name} leaked a secret"
            );
            if let Some(link) = json["data"]["links"]["self"].as_str() {
                assert!(
                    link.starts_with("https://abc123defg.execute-api.eu-west-1.amazonaws.com/v2/"),
                    "{name}: {link}"
                );
            }
        }
        seen.push(name);
    }
    for (file, _) in EXPECTED {
        assert!(seen.iter().any(|s| s == file), "events/{file} is missing");
    }
}

#[tokio::test]
async fn the_jwt_store_claim_scopes_every_request() {
    let raw = std::fs::read_to_string(events_dir().join("api-get.json")).expect("read");
    let other_store = raw.replace(
        "\"store_id\": \"default\"",
        "\"store_id\": \"another-store\"",
    );
    assert_ne!(raw, other_store);
    let req = lambda_http::request::from_str(&other_store).expect("event");
    let res = lambda_app().await.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
