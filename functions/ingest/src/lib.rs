//! The ingest function's handler. One function takes events two ways:
//!
//! - **HTTP** (`POST /v2/events`, IAM-authorized): API Gateway's HTTP API event, run
//!   through the same router as the API (store from `X-Store-Id`);
//! - **direct invoke** (`aws lambda invoke`, `cargo lambda invoke`): one event or a
//!   list of events, each naming its `store_id`.
//!
//! Direct invocations answer `{"data": [...]}` per event. When an event could not be
//! queued the invocation fails (so an asynchronous invoke is retried by Lambda; the
//! events already accepted are deduplicated by their ids).

use std::sync::Arc;

use axum::Router;
use herald_core::ingest::{EventStatus, Ingest, MAX_EVENTS_PER_REQUEST};
use http_body_util::BodyExt;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};
use tower::ServiceExt;

/// What the handler needs, built once per container.
pub struct Deps {
    /// The ingest use case.
    pub ingest: Arc<Ingest>,
    /// The API router (with ingest) for HTTP events.
    pub router: Router,
}

/// Whether a payload is an API Gateway HTTP API (v2) event.
fn is_http_event(event: &Value) -> bool {
    event.get("version").and_then(Value::as_str) == Some("2.0")
        && event
            .get("requestContext")
            .and_then(|c| c.get("http"))
            .is_some()
}

/// Handles one invocation.
pub async fn handle(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, _ctx) = event.into_parts();
    if is_http_event(&payload) {
        return http(deps, &payload).await;
    }
    direct(deps, payload).await
}

async fn http(deps: &Deps, payload: &Value) -> Result<Value, Error> {
    let request = lambda_http::request::from_str(&payload.to_string())?;
    let response = deps.router.clone().oneshot(request).await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(json!({
        "statusCode": status,
        "headers": { "content-type": content_type },
        "body": String::from_utf8_lossy(&body),
        "isBase64Encoded": false,
    }))
}

async fn direct(deps: &Deps, payload: Value) -> Result<Value, Error> {
    let (events, single) = match payload {
        Value::Array(list) if list.len() > MAX_EVENTS_PER_REQUEST => {
            return Err(format!("at most {MAX_EVENTS_PER_REQUEST} events per invocation").into())
        }
        Value::Array(list) => (list, false),
        other => (vec![other], true),
    };
    let results = deps
        .ingest
        .ingest(&events, None, |i| {
            if single {
                String::new()
            } else {
                format!("/{i}")
            }
        })
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.status, EventStatus::Failed { .. }))
        .filter_map(|r| r.id.clone())
        .collect();
    if !failed.is_empty() {
        return Err(format!("events not queued, send them again: {}", failed.join(", ")).into());
    }
    Ok(json!({ "data": results.iter().map(|r| r.to_json()).collect::<Vec<_>>() }))
}
