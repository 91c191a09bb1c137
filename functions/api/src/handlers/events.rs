//! Events in (`POST /v2/events`), the catalog of observable events, and replay of an
//! integration's dead letters.

use std::sync::Arc;

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

/// The integration named in the path, enabled, or why not: 404, or 409 (its replayed
/// jobs would be discarded).
async fn enabled_integration(
    state: &AppState,
    store: &herald_core::model::StoreId,
    id: &str,
) -> Result<uuid::Uuid, ApiError> {
    let id = parse_id(id)?;
    let integration = state.integrations.get(store, id).await?;
    if !integration.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the integration is disabled: enable it first, or its replayed jobs would be discarded",
            Some(Source::Pointer("/data/enabled".into())),
        ));
    }
    Ok(id)
}

/// The internal queue, or 503 where this process has none.
fn queue(state: &AppState) -> Result<std::sync::Arc<dyn herald_core::ports::JobQueue>, ApiError> {
    state.queue.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replay from the archive is not configured here (HERALD_QUEUE_URL)",
            None,
        )
    })
}

/// `POST /v2/integrations/{id}/replay`. Without a body: moves the integration's
/// dead-lettered jobs back to the internal queue, with a fresh retry budget. Only this
/// store's integration's jobs move, and only they are counted (`scanned`);
/// `complete: false` means the DLQ was not scanned to its end within the call, or
/// another replay held some of it meanwhile: call again.
///
/// With a body (`{"data": {"type": "replay", "since", "until", "status", "cursor"}}`):
/// replays the jobs in the range from the archive ([`herald_core::replay::replay_range`]),
/// each once per request (its range and status, or its `Idempotency-Key`), at most
/// [`herald_core::replay::RANGE_BATCH`] a call; `next` is the body of the call that
/// carries on.
pub(crate) async fn replay_integration(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, crate::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body must be at most {} bytes", crate::MAX_BODY_BYTES),
                None,
            )
        })?;
    if !bytes.is_empty() {
        let body = json_body(&headers, Body::from(bytes)).await?;
        return replay_range(state, store, &id, &headers, &body).await;
    }
    let id = enabled_integration(&state, &store, &id).await?;
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

/// How long a range replay remembers the jobs it replayed (as long as events'
/// claims): the same request within it sends none of them again.
pub const REPLAY_MEMORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A range replay from the archive (the body of `POST …/replay`).
async fn replay_range(
    state: Arc<AppState>,
    store: herald_core::model::StoreId,
    id: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, ApiError> {
    use herald_core::replay::{Archive, RangeRequest};
    let request = RangeRequest::parse(body).map_err(ApiError::invalid)?;
    let id = enabled_integration(&state, &store, id).await?;
    let queue = queue(&state)?;
    let key = headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let key = request.key(key.as_deref());
    let ports = Archive {
        log: &*state.log,
        queue: &*queue,
        claims: &*state.claims,
        ttl: REPLAY_MEMORY,
    };
    let done = herald_core::replay::replay_range(&ports, &store, id, &request, &key).await?;
    tracing::info!(integration = %id, store = %store, replayed = done.replayed, already = done.already_replayed, not_archived = done.not_archived, complete = done.next.is_none(), "replayed archived jobs");
    let mut data = json!({
        "type": "replay",
        "integration_id": id.to_string(),
        "replayed": done.replayed,
        "already_replayed": done.already_replayed,
        "not_archived": done.not_archived,
        "complete": done.next.is_none(),
    });
    if let Some(next) = done.next {
        let mut again = body["data"].clone();
        again["cursor"] = json!(next.to_text());
        data["next"] = json!({ "data": again });
    }
    Ok((StatusCode::OK, axum::Json(json!({ "data": data }))).into_response())
}

/// `POST /v2/integrations/{id}/jobs/{job_id}/replay`: queues the job's event again
/// from the archive, whatever the job's state, as a new job naming it
/// (`meta.replay_of`); 202 with the new job.
pub(crate) async fn replay_job(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    use herald_core::replay::JobReplay;
    let id = enabled_integration(&state, &store, &id).await?;
    let job_not_found = || ApiError::new(StatusCode::NOT_FOUND, "job not found", None);
    let job = uuid::Uuid::parse_str(&job_id).map_err(|_| job_not_found())?;
    let queue = queue(&state)?;
    let new = match herald_core::replay::replay_job(
        &*state.log,
        &*queue,
        &store,
        id,
        job,
    )
    .await?
    {
        JobReplay::Queued(new) => new,
        JobReplay::NotFound => return Err(job_not_found()),
        JobReplay::NotArchived => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the job's event is not archived (its first attempt was recorded before the archive, or the record was lost); nothing to replay",
                None,
            ))
        }
    };
    tracing::info!(integration = %id, store = %store, job = %job, replay = %new.job_id, "replayed a job");
    Ok(document(
        StatusCode::ACCEPTED,
        json!({
            "id": new.job_id.to_string(),
            "type": "integration-job",
            "event": { "id": new.event.id, "type": new.event.kind },
            "relationships": { "integration": { "data": { "type": "integration", "id": id.to_string() } } },
            "meta": {
                "replay_of": job.to_string(),
                "timestamps": { "created_at": herald_core::job::rfc3339_ms(&new.enqueued_at) },
            },
        }),
    ))
}

/// `POST /v2/events`: `{"data": <event>}` or `{"data": [<event>, ...]}`, answered as
/// the ingest function answers it ([`herald_core::ingest::request::post_events`]).
pub(crate) async fn ingest_events(
    State(state): State<Arc<AppState>>,
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
    // Serialising a JSON value cannot fail.
    let bytes = serde_json::to_vec(&document).unwrap_or_default();
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
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
