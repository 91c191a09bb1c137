//! `/v2/integrations` and `/v2/integrations/{id}`: create, read, update, delete,
//! list, the store's external id, and test deliveries.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::catalog;
use herald_core::integrations::Change;
use herald_core::jsonapi::{self};
use herald_core::page::Total;
use herald_core::validate::FieldError;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::tenancy::Tenant;

use crate::documents::*;
use crate::AppState;

pub(crate) async fn create_integration(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body).await?;
    let created = state.integrations.create(&store, &body).await?;
    tracing::info!(store = %store, integration = %created.id, kind = created.target.kind().as_str(), "integration created");
    let base = base_url(&state, &headers);
    state
        .integrations
        .announce(&store, Change::Created(&created), &base)
        .await;
    Ok(document(StatusCode::CREATED, created.to_resource(&base)))
}

pub(crate) async fn get_integration(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let found = state.integrations.get(&store, id).await?;
    Ok(document(
        StatusCode::OK,
        found.to_resource(&base_url(&state, &headers)),
    ))
}

pub(crate) async fn update_integration(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let body = json_body(&headers, body).await?;
    let outcome = state.integrations.update(&store, id, &body).await?;
    let updated = outcome.integration;
    let base = base_url(&state, &headers);
    if outcome.changed {
        tracing::info!(store = %store, integration = %id, "integration updated");
        state
            .integrations
            .announce(&store, Change::Updated(&updated), &base)
            .await;
    }
    Ok(document(StatusCode::OK, updated.to_resource(&base)))
}

pub(crate) async fn delete_integration(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    state.integrations.delete(&store, id).await?;
    tracing::info!(store = %store, integration = %id, "integration deleted");
    state
        .integrations
        .announce(&store, Change::Deleted(id), &base_url(&state, &headers))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The store's external id for keyless SQS delivery: what its role's trust policy
/// requires as `sts:ExternalId`, with the session tag Herald adds, read before the
/// role is deployed (`infra/customer/sqs-queue.yaml`).
pub(crate) async fn external_id(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
) -> Result<Response, ApiError> {
    let id = state.integrations.external_id(&store).await?;
    Ok(document(
        StatusCode::OK,
        json!({
            "type": "integration-external-id",
            "external_id": id,
            "session_tags": { (herald_core::model::STORE_SESSION_TAG): store.as_str() },
        }),
    ))
}

pub(crate) async fn list_integrations(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let found = state.integrations.list(&store, page).await?;
    Ok(listing(
        &state,
        &headers,
        "/v2/integrations",
        page,
        (found.0, Total::exact(found.1)),
        |i, base| i.to_resource(base),
    ))
}

/// A body that may be absent: none when declared empty, or sent without a JSON
/// content type and no length; else read as JSON (415, 413 and 400 as usual).
async fn optional_json_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared == Some(0) || (declared.is_none() && !jsonapi::is_json(headers)) {
        Ok(Value::Null)
    } else {
        json_body(headers, body).await
    }
}

/// `POST /v2/integrations/{id}/rotate-secret`: a webhook's new secret (the body's,
/// or one Herald generates), the old one signing beside it for the overlap. Answers
/// with the integration (secrets masked, `meta.secret_rotation` saying when the
/// overlap ends) and, when Herald generated the secret, that secret in clear in the
/// document's `meta.secret_key`: the only time it is shown. Fires
/// `integration.updated`. Body optional:
/// `{"data": {"type": "secret-rotation", "secret_key": "...", "overlap_minutes": 1440}}`.
pub(crate) async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let body = optional_json_body(&headers, body).await?;
    let rotated = state.integrations.rotate_secret(&store, id, &body).await?;
    tracing::info!(store = %store, integration = %id, generated = rotated.generated.is_some(), "webhook secret rotated");
    let base = base_url(&state, &headers);
    state
        .integrations
        .announce(&store, Change::Updated(&rotated.integration), &base)
        .await;
    let mut document = json!({ "data": rotated.integration.to_resource(&base) });
    if let Some(secret) = &rotated.generated {
        document["meta"] = json!({ "secret_key": secret.expose() });
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response())
}

/// `POST /v2/integrations/{id}/test`: delivers a sample event now (enabled or not)
/// and answers with the recorded attempt. Body optional:
/// `{"data": {"type": "test", "triggered_by": "<event key>"}}`; the default event is
/// the first the integration observes.
pub(crate) async fn test_integration(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let integration = state.integrations.get(&store, id).await?;
    let Some(deliverer) = state.deliverer.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "test deliveries are not available here",
            None,
        ));
    };
    let body = optional_json_body(&headers, body).await?;
    let mut errors = Vec::new();
    let mut triggered_by = integration
        .observes
        .first()
        .cloned()
        .unwrap_or_else(|| "order.paid".to_owned());
    match &body {
        Value::Null => {}
        Value::Object(top) => {
            match top.get("data") {
                None | Some(Value::Null) => {}
                Some(Value::Object(data)) => {
                    if data.get("type").is_some_and(|t| t != "test") {
                        errors.push(FieldError {
                            pointer: "/data/type".into(),
                            detail: "must be \"test\"".into(),
                        });
                    }
                    match data.get("triggered_by") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(k)) if catalog::is_observable(k) => triggered_by = k.clone(),
                    Some(_) => errors.push(FieldError {
                        pointer: "/data/triggered_by".into(),
                        detail: "must be an observable event key; GET /v2/observable-events lists them".into(),
                    }),
                }
                }
                Some(_) => errors.push(FieldError {
                    pointer: "/data".into(),
                    detail: "must be an object".into(),
                }),
            }
        }
        _ => errors.push(FieldError {
            pointer: String::new(),
            detail: "the body must be a JSON object".into(),
        }),
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let attempt = herald_core::integrations::send_test(
        &integration,
        &triggered_by,
        deliverer.as_ref(),
        state.log.as_ref(),
    )
    .await?;
    tracing::info!(store = %store, integration = %id, succeeded = attempt.succeeded, "test delivery");
    Ok(document(StatusCode::OK, attempt.to_resource()))
}
