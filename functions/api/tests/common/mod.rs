//! What the api crate's tests share.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::config::PipelineSettings;
use herald_core::model::StoreId;
use herald_core::wiring::Components;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The API over the embedded pipeline `pipeline`, for stores named by `X-Store-Id`
/// (`default` without it), and the pipeline's components (to drive its fan-out).
/// `http_webhooks`: plain-http webhook URLs are admitted (test receivers listen on
/// loopback without TLS); `ingest`: the router takes `POST /v2/events`.
pub async fn embedded_app(
    pipeline: &PipelineSettings,
    http_webhooks: bool,
    ingest: bool,
) -> (Router, Components) {
    let components = Components::build(pipeline, false)
        .await
        .expect("components");
    let mut settings = Settings::memory(Tenancy::Header {
        default: StoreId::parse("default").expect("store"),
    });
    settings.policy.allow_http_webhooks = http_webhooks;
    let ingest = ingest.then(|| std::sync::Arc::new(components.ingest().expect("ingest")));
    let state = AppState::from_components(&components, &settings, ingest).expect("state");
    (herald_api::router(state), components)
}

/// Sends a request for `store` (`X-Store-Id`) through `app`, with `body` as JSON; its
/// status and JSON body (`Null` when empty).
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    store: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "herald.test")
        .header("x-store-id", store);
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (status, body)
}
