//! The delivery log: a store's logs, an integration's logs and jobs, a job's logs.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use herald_core::filter::Subject;
use herald_core::model::StoreId;
use uuid::Uuid;

use crate::error::ApiError;
use crate::tenancy::Tenant;

use crate::documents::*;
use crate::AppState;

pub(crate) async fn store_logs(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let filter = filter_of(&params, Subject::Logs)?;
    let listed = state.log.store_logs(&store, &filter, page).await?;
    Ok(log_listing(
        &state,
        &headers,
        "/v2/integrations/logs",
        (page, &filter),
        listed,
        |a, _| a.to_resource(),
    ))
}

/// The integration named in the path, or 404 (unknown, malformed, another store's).
pub(crate) async fn owned_integration(
    state: &AppState,
    store: &StoreId,
    id: &str,
) -> Result<Uuid, ApiError> {
    let id = parse_id(id)?;
    state.integrations.get(store, id).await?;
    Ok(id)
}

pub(crate) async fn integration_logs(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let filter = filter_of(&params, Subject::Logs)?;
    let id = owned_integration(&state, &store, &id).await?;
    let listed = state
        .log
        .integration_logs(&store, id, &filter, page)
        .await?;
    let path = format!("/v2/integrations/{id}/logs");
    Ok(log_listing(
        &state,
        &headers,
        &path,
        (page, &filter),
        listed,
        |a, _| a.to_resource(),
    ))
}

pub(crate) async fn integration_jobs(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let filter = filter_of(&params, Subject::Jobs)?;
    let id = owned_integration(&state, &store, &id).await?;
    let listed = state
        .log
        .integration_jobs(&store, id, &filter, page)
        .await?;
    let path = format!("/v2/integrations/{id}/jobs");
    Ok(log_listing(
        &state,
        &headers,
        &path,
        (page, &filter),
        listed,
        |j, _| j.to_resource(),
    ))
}

pub(crate) async fn job_logs(
    State(state): State<Arc<AppState>>,
    Tenant(store): Tenant,
    Path((id, job_id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let id = owned_integration(&state, &store, &id).await?;
    let job_not_found = || ApiError::new(StatusCode::NOT_FOUND, "job not found", None);
    let job_id = Uuid::parse_str(&job_id).map_err(|_| job_not_found())?;
    let (items, counted) = state.log.job_logs(&store, id, job_id, page).await?;
    if counted == 0 {
        return Err(job_not_found());
    }
    let path = format!("/v2/integrations/{id}/jobs/{job_id}/logs");
    Ok(listing(
        &state,
        &headers,
        &path,
        page,
        (items, page.bounded_total(counted)),
        |a, _| a.to_resource(),
    ))
}
