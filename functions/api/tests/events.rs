//! Every API Gateway event in `events/` runs through the Lambda-wired router (the
//! same one the `api` function serves), and answers with the status it documents.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::memory::MemoryIntegrationStore;
use herald_core::model::{Integration, Secret, Target, WebhookConfig};
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
const OTHER_PREFIXES: &[&str] = &["ingest-", "fanout-", "sweeper-"];

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

async fn lambda_app() -> axum::Router {
    lambda_app_with(Tenancy::JwtClaim {
        claim: "store_id".into(),
    })
    .await
}

async fn lambda_app_with(tenancy: Tenancy) -> axum::Router {
    let store = Arc::new(MemoryIntegrationStore::new());
    let seeded = Integration {
        id: Uuid::parse_str(SEEDED_ID).expect("uuid"),
        target: Target::Webhook(WebhookConfig {
            url: "https://ilovelamp.now.sh/send-shipped-email".into(),
            secret_key: Some(Secret::new("SOME_SECRET_KEY")),
            retiring: None,
        }),
        ..herald_core::testkit::webhook("Seeded", "default", &["order.fulfilled"], true)
    };
    store.insert(&seeded, 100).await.expect("seed");
    let settings = Settings {
        pipeline: herald_core::config::PipelineSettings::memory(),
        tenancy,
        max_per_store: 100,
        policy: Policy {
            allow_http_webhooks: false,
            allow_plain_stomp: false,
        },
        public_url: None,
        portal: Default::default(),
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

const BACKOFFICE: &str = "arn:aws:sts::123456789012:assumed-role/backoffice-eu/alice";

/// `events/api-get.json` as an IAM-authorized call: signed by `caller` (none: no IAM
/// identity), naming `store` in `X-Store-Id`.
fn iam_get(caller: Option<&str>, store: &str) -> lambda_http::Request {
    let raw = std::fs::read_to_string(events_dir().join("api-get.json")).expect("read");
    let mut event: Value = serde_json::from_str(&raw).expect("JSON");
    event["headers"]["x-store-id"] = store.into();
    let context = &mut event["requestContext"];
    match caller {
        Some(arn) => {
            context["authorizer"] = serde_json::json!({
                "iam": {
                    "accountId": "123456789012",
                    "callerId": "AROAEXAMPLE:alice",
                    "principalOrgId": null,
                    "userArn": arn,
                    "userId": "AROAEXAMPLE:alice",
                    "cognitoIdentity": null
                }
            })
        }
        None => {
            context
                .as_object_mut()
                .expect("context")
                .remove("authorizer");
        }
    }
    lambda_http::request::from_str(&event.to_string()).expect("event")
}

async fn iam_app() -> axum::Router {
    let access = herald_core::access::StoreAccess::parse(
        "arn:aws:sts::123456789012:assumed-role/backoffice-*/*=default|eu-*",
    )
    .expect("mapping");
    lambda_app_with(Tenancy::IamHeader { access }).await
}

#[tokio::test]
async fn a_mapped_iam_caller_acts_for_the_store_it_names() {
    let res = iam_app()
        .await
        .oneshot(iam_get(Some(BACKOFFICE), "default"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_iam_caller_naming_a_store_it_is_not_mapped_to_gets_403() {
    for (caller, store) in [
        (Some(BACKOFFICE), "another-store"),
        (
            Some("arn:aws:sts::123456789012:assumed-role/commerce-backend/x"),
            "default",
        ),
        (None, "default"),
    ] {
        let res = iam_app()
            .await
            .oneshot(iam_get(caller, store))
            .await
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{caller:?} {store}");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            json["errors"][0]["source"]["header"], "X-Store-Id",
            "{json}"
        );
        assert!(json.get("data").is_none(), "{json}");
    }
}

#[tokio::test]
async fn without_a_mapping_any_iam_caller_may_name_any_store() {
    let app = lambda_app_with(Tenancy::IamHeader {
        access: Default::default(),
    })
    .await;
    let res = app
        .oneshot(iam_get(
            Some("arn:aws:sts::999999999999:assumed-role/anyone/x"),
            "default",
        ))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
}
