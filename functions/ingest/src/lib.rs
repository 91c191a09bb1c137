//! The ingest function's handler. It takes events two ways, and nothing else:
//!
//! - **HTTP**: API Gateway's HTTP API (payload 2.0) event for `POST /v2/events`
//!   (IAM-authorized): the store comes from `X-Store-Id`, and the caller's IAM identity
//!   must be allowed to act for it ([`StoreAccess`]). The answer is the one the API
//!   router gives ([`post_events`]). Any other method or path gets a JSON:API 405 or
//!   404: this function serves no other route, whatever its role may read;
//! - **direct invoke** (`aws lambda invoke`, `cargo lambda invoke`): one event object
//!   or a list of them, each naming its `store_id`. Who may invoke the function
//!   directly is decided by IAM (`lambda:InvokeFunction`), not by [`StoreAccess`].
//!
//! Direct invocations answer `{"data": [...]}` per event. When an event could not be
//! queued the invocation fails (so an asynchronous invoke is retried by Lambda; the
//! events already accepted are deduplicated by their ids). A payload that is neither
//! shape fails the invocation with what the function takes.

use std::sync::Arc;

use bytes::Bytes;
use herald_core::access::{iam_store, StoreAccess};
use herald_core::ingest::request::post_events;
use herald_core::ingest::{EventStatus, Ingest, MAX_EVENTS_PER_REQUEST};
use herald_core::job::EVENT_FIELDS;
use herald_core::jsonapi::Errors;
use http_body_util::Full;
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};

/// The one HTTP route this function serves.
pub const EVENTS_PATH: &str = "/v2/events";

/// What the handler needs, built once per container.
pub struct Deps {
    /// The ingest use case.
    pub ingest: Arc<Ingest>,
    /// Which stores IAM callers may act for (`HERALD_IAM_STORE_ACCESS`).
    pub access: StoreAccess,
}

/// What the function takes, for the error a payload of another shape gets.
const TAKES: &str = "the ingest function takes an API Gateway HTTP API (payload 2.0) event for POST /v2/events, one event object, or a list of 1 to 100 event objects";

/// Handles one invocation.
pub async fn handle(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, _ctx) = event.into_parts();
    match &payload {
        Value::Object(obj) if obj.contains_key("requestContext") => {
            let is_http_v2 = obj.get("version").and_then(Value::as_str) == Some("2.0")
                && obj["requestContext"].get("http").is_some();
            if !is_http_v2 {
                return Err(format!(
                    "an API Gateway event of another kind than HTTP API payload 2.0: {TAKES}"
                )
                .into());
            }
            http(deps, &payload).await
        }
        Value::Object(obj) if !EVENT_FIELDS.iter().any(|f| obj.contains_key(*f)) => Err(format!(
            "an object with none of the event fields ({}): {TAKES}",
            EVENT_FIELDS.join(", ")
        )
        .into()),
        Value::Object(_) => direct(deps, vec![payload], true).await,
        Value::Array(list) if list.is_empty() => Err(format!("an empty list: {TAKES}").into()),
        Value::Array(list) if list.len() > MAX_EVENTS_PER_REQUEST => Err(format!(
            "a list of {} events: at most {MAX_EVENTS_PER_REQUEST} events per invocation",
            list.len()
        )
        .into()),
        Value::Array(list) => direct(deps, list.clone(), false).await,
        other => Err(format!("a JSON {}: {TAKES}", kind(other)).into()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An HTTP API event: `POST /v2/events` only.
async fn http(deps: &Deps, payload: &Value) -> Result<Value, Error> {
    let request = lambda_http::request::from_str(&payload.to_string())?;
    let caller = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let answer = if path != EVENTS_PATH {
        Err(Errors::no_such_route())
    } else if method != Method::POST {
        Err(Errors::method_not_allowed())
    } else {
        match iam_store(request.headers(), caller.as_deref(), &deps.access) {
            Err(refused) => Err(refused),
            Ok(store) => {
                let (parts, body) = request.into_parts();
                let body = Full::new(Bytes::copy_from_slice(body.as_ref()));
                post_events(&deps.ingest, &store, &parts.headers, body).await
            }
        }
    };
    let (status, document) = match answer {
        Ok(ok) => ok,
        Err(errors) => (errors.status(), errors.to_document()),
    };
    let route = if path == EVENTS_PATH {
        EVENTS_PATH
    } else {
        "<unmatched>"
    };
    tracing::info!(
        %method,
        route,
        caller,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(gateway_response(status, &document))
}

/// An API Gateway (payload 2.0) response carrying a JSON document.
fn gateway_response(status: StatusCode, document: &Value) -> Value {
    json!({
        "statusCode": status.as_u16(),
        "headers": { "content-type": "application/json" },
        "body": document.to_string(),
        "isBase64Encoded": false,
    })
}

async fn direct(deps: &Deps, events: Vec<Value>, single: bool) -> Result<Value, Error> {
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
