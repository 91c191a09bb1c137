//! Events in (`POST /v2/events`), the catalog of observable events, and replay of an
//! integration's dead letters.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::catalog;
use serde_json::{json, Value};

use crate::error::{ApiError, Source};
use crate::tenancy::Tenant;

use crate::documents::*;
use crate::AppState;

/// How long one replay call scans the DLQ (API Gateway answers within 30 s).
pub const REPLAY_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// `POST /v2/integrations/{id}/replay`: moves the integration's dead-lettered jobs
/// back to the internal queue, with a fresh retry budget. Only this store's
/// integration's jobs move, and only they are counted (`scanned`); `complete: false`
/// means the DLQ was not scanned to its end within the call, or another replay held
/// some of it meanwhile: call again.
pub(crate) async fn replay_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let integration = state.integrations.get(&store, id).await?;
    if !integration.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the integration is disabled: enable it first, or its replayed jobs would be discarded",
            Some(Source::Pointer("/data/enabled".into())),
        ));
    }
    let Some(dead_letters) = state.dead_letters.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replay is not configured here (HERALD_DLQ_URL)",
            None,
        ));
    };
    let done = herald_core::replay::redrive(&*dead_letters, &store, id, REPLAY_TIME)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(integration = %id, store = %store, moved = done.moved, scanned = done.scanned, complete = done.complete, "replayed dead-lettered jobs");
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "data": {
                "type": "replay",
                "integration_id": id.to_string(),
                "replayed": done.moved,
                "scanned": done.scanned,
                "complete": done.complete,
            }
        })),
    )
        .into_response())
}

/// `POST /v2/events`: `{"data": <event>}` or `{"data": [<event>, ...]}`, answered as
/// the ingest function answers it ([`herald_core::ingest::request::post_events`]).
pub(crate) async fn ingest_events(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(ingest) = state.ingest.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "events are not accepted by this function",
            None,
        ));
    };
    let (status, document) =
        herald_core::ingest::request::post_events(&ingest, &store, &headers, body).await?;
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response())
}

pub(crate) async fn observable_events() -> Response {
    let data: Vec<Value> = catalog::all()
        .iter()
        .map(|e| {
            json!({
                "type": "observable-event",
                "id": e.key,
                "resource": e.resource,
                "action": e.action,
                "legacy": e.legacy,
                "emitted_by": if e.herald { "herald" } else { "platform" },
            })
        })
        .collect();
    let total = data.len();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "data": data, "meta": { "results": { "total": total } } }).to_string(),
    )
        .into_response()
}
