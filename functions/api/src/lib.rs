//! Herald's Integrations API: one axum router, served by the `api` Lambda function
//! (through `lambda_http`) and by the dev server (through `axum::serve`).
//!
//! The contract follows Elastic Path's Integrations API: JSON:API bodies, EP field
//! names, masked secrets, `{"errors": [...]}` with a pointer per problem.

pub mod error;
pub mod hosts;
pub mod lambda;
pub mod settings;
pub mod tenancy;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use herald_core::catalog;
use herald_core::ingest::Ingest;
use herald_core::integrations::{Change, Integrations};
use herald_core::jsonapi::{self, Errors};
use herald_core::memory::MemoryDeliveryLog;
use herald_core::model::StoreId;
use herald_core::page::{Page, Total};
use herald_core::ports::{DeadLetters, Deliverer, DeliveryLog, IntegrationStore};
use herald_core::validate::FieldError;
use herald_core::wiring::Components;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{ApiError, Source};
use crate::settings::Settings;
use crate::tenancy::{IamCaller, Tenancy, Tenant};

/// Largest request body accepted (bytes); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI document of this API, served at `GET /openapi.yaml`.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// What every handler shares: built once per process.
#[derive(Clone)]
pub struct AppState {
    /// The integration use cases.
    pub integrations: Integrations,
    /// Attempts and jobs, for the logs and jobs routes.
    pub log: Arc<dyn DeliveryLog>,
    /// Event intake, where this process accepts events (`POST /v2/events`).
    pub ingest: Option<Arc<Ingest>>,
    /// Target deliverers, for `POST /v2/integrations/{id}/test`.
    pub deliverer: Option<Arc<dyn Deliverer>>,
    /// The internal queue's DLQ, for `POST /v2/integrations/{id}/replay`.
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// How the caller's store is found.
    pub tenancy: Tenancy,
    /// Base of absolute links, when configured.
    pub public_url: Option<Arc<str>>,
}

impl AppState {
    /// State over any integration store, with an embedded delivery log and no event
    /// intake (unit tests).
    pub fn new(store: Arc<dyn IntegrationStore>, settings: &Settings) -> Self {
        Self {
            integrations: Integrations::new(store, settings.policy, settings.max_per_store)
                .with_guard(registration_guard(settings)),
            log: Arc::new(MemoryDeliveryLog::default()),
            ingest: None,
            deliverer: None,
            dead_letters: None,
            tenancy: settings.tenancy.clone(),
            public_url: settings.public_url.as_deref().map(Arc::from),
        }
    }

    /// State over the process's adapters; `ingest` where this process takes events.
    pub fn from_components(
        components: &Components,
        settings: &Settings,
        ingest: Option<Arc<Ingest>>,
    ) -> herald_core::Result<Self> {
        let mut integrations = Integrations::new(
            components.integrations.clone(),
            settings.policy,
            settings.max_per_store,
        )
        .with_guard(registration_guard(settings));
        match components.announcer() {
            Some(announcer) => integrations = integrations.announcing(Arc::new(announcer)),
            None => tracing::warn!(
                "HERALD_QUEUE_URL is not set: integration.created, .updated and .deleted are not fired"
            ),
        }
        Ok(Self {
            integrations,
            log: components.log.clone(),
            ingest,
            deliverer: Some(components.deliverer()?),
            dead_letters: components.dead_letters.clone(),
            tenancy: settings.tenancy.clone(),
            public_url: settings.public_url.as_deref().map(Arc::from),
        })
    }
}

/// The deployment's SSRF guard, for registration (its allow-list was checked when
/// the settings were read; an unreadable one admits nothing).
fn registration_guard(settings: &Settings) -> herald_core::net::guard::AddressGuard {
    herald_core::net::guard::AddressGuard::from_list(&settings.pipeline.allow_private_cidrs)
        .unwrap_or_else(|_| herald_core::net::guard::AddressGuard::strict())
}

/// One route of the API: what it is, and which statuses it can answer with (the
/// OpenAPI test holds the document to this table).
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template, OpenAPI syntax (`/v2/integrations/{id}`).
    pub path: &'static str,
    /// Every status the route answers with.
    pub statuses: &'static [u16],
    handler: fn() -> MethodRouter<AppState>,
}

/// The API's routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            path: "/v2/integrations",
            statuses: &[201, 400, 403, 413, 415, 422, 500],
            handler: || post(create_integration),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations",
            statuses: &[200, 400, 403, 500],
            handler: || get(list_integrations),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations/{id}",
            statuses: &[200, 400, 403, 404, 500],
            handler: || get(get_integration),
        },
        Route {
            method: Method::PUT,
            path: "/v2/integrations/{id}",
            statuses: &[200, 400, 403, 404, 409, 413, 415, 422, 500],
            handler: || put(update_integration),
        },
        Route {
            method: Method::DELETE,
            path: "/v2/integrations/{id}",
            statuses: &[204, 400, 403, 404, 500],
            handler: || delete(delete_integration),
        },
        Route {
            method: Method::GET,
            path: "/v2/observable-events",
            statuses: &[200],
            handler: || get(observable_events),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations/external-id",
            statuses: &[200, 400, 403, 500],
            handler: || get(external_id),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations/logs",
            statuses: &[200, 400, 403, 500],
            handler: || get(store_logs),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations/{id}/logs",
            statuses: &[200, 400, 403, 404, 500],
            handler: || get(integration_logs),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations/{id}/jobs",
            statuses: &[200, 400, 403, 404, 500],
            handler: || get(integration_jobs),
        },
        Route {
            method: Method::GET,
            path: "/v2/integrations/{id}/jobs/{job_id}/logs",
            statuses: &[200, 400, 403, 404, 500],
            handler: || get(job_logs),
        },
        Route {
            method: Method::POST,
            path: "/v2/integrations/{id}/test",
            statuses: &[200, 400, 403, 404, 413, 415, 422, 500],
            handler: || post(test_integration),
        },
        Route {
            method: Method::POST,
            path: "/v2/integrations/{id}/replay",
            statuses: &[200, 400, 403, 404, 409, 500, 503],
            handler: || post(replay_integration),
        },
        Route {
            method: Method::POST,
            path: "/v2/events",
            statuses: &[202, 400, 403, 404, 413, 415, 422, 503],
            handler: || post(ingest_events),
        },
    ]
}

/// The router with every route, JSON:API fallbacks for unknown paths and methods,
/// panic isolation and request logging.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in routes() {
        router = router.route(route.path, (route.handler)());
    }
    router
        .route("/openapi.yaml", get(openapi))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "something went wrong on our side; try again later",
        None,
    )
    .into_response()
}

/// Logs method, route, status, duration and, under IAM, the caller's ARN; never
/// bodies, queries or headers.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let caller = req.extensions().get::<IamCaller>().map(|c| c.0.clone());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".into());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    tracing::info!(
        %method,
        route,
        caller,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn unknown_route() -> ApiError {
    Errors::no_such_route().into()
}

async fn method_not_allowed() -> ApiError {
    Errors::method_not_allowed().into()
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

/// The base of absolute links: `HERALD_PUBLIC_URL`, else the request's own
/// scheme and host (API Gateway sets `X-Forwarded-Proto`), else relative links.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
    let Some(host) = host else {
        return String::new();
    };
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// Reads and parses a JSON body: 415 for another content type, 413 past
/// [`MAX_BODY_BYTES`], 400 for anything that is not JSON.
async fn json_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    Ok(jsonapi::read_json(headers, body, MAX_BODY_BYTES).await?)
}

/// `{"data": <resource>}` with a status.
fn document(status: StatusCode, data: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "data": data }).to_string(),
    )
        .into_response()
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found())
}

async fn create_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body).await?;
    let created = state.integrations.create(&store, &body).await??;
    tracing::info!(store = %store, integration = %created.id, kind = created.target.kind().as_str(), "integration created");
    let base = base_url(&state, &headers);
    state
        .integrations
        .announce(&store, Change::Created(&created), &base)
        .await;
    Ok(document(StatusCode::CREATED, created.to_resource(&base)))
}

async fn get_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let found = state.integrations.get(&store, id).await??;
    Ok(document(
        StatusCode::OK,
        found.to_resource(&base_url(&state, &headers)),
    ))
}

async fn update_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let body = json_body(&headers, body).await?;
    let updated = state.integrations.update(&store, id, &body).await??;
    tracing::info!(store = %store, integration = %id, "integration updated");
    let base = base_url(&state, &headers);
    state
        .integrations
        .announce(&store, Change::Updated(&updated), &base)
        .await;
    Ok(document(StatusCode::OK, updated.to_resource(&base)))
}

async fn delete_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    state.integrations.delete(&store, id).await??;
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
async fn external_id(
    State(state): State<AppState>,
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

/// Parses `page[limit]` and `page[offset]`.
fn page_of(params: &[(String, String)]) -> Result<Page, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Page::parse(param("page[limit]"), param("page[offset]")).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            e.detail,
            Some(Source::Parameter(e.parameter.into())),
        )
    })
}

/// A list document: `data`, `links` (self/first/prev/next/last) and `meta`
/// (`meta.results.lower_bound`: whether there may be more than `meta.results.total`).
fn list_document(base: &str, path: &str, page: Page, total: Total, data: Vec<Value>) -> Response {
    let nav = page.navigation(total.count);
    let link = |offset: usize| {
        format!(
            "{base}{path}?page[limit]={}&page[offset]={offset}",
            page.limit
        )
    };
    let body = json!({
        "data": data,
        "links": {
            "self": link(page.offset),
            "first": link(nav.first),
            "prev": nav.prev.map(link),
            "next": nav.next.map(link),
            "last": link(nav.last),
        },
        "meta": {
            "page": { "limit": page.limit, "offset": page.offset, "current": nav.current, "total": nav.total_pages },
            "results": { "total": total.count, "lower_bound": total.lower_bound }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn list_integrations(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let (items, total) = state.integrations.list(&store, page).await?;
    let base = base_url(&state, &headers);
    let data = items.iter().map(|i| i.to_resource(&base)).collect();
    Ok(list_document(
        &base,
        "/v2/integrations",
        page,
        Total::exact(total),
        data,
    ))
}

async fn store_logs(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let (items, counted) = state.log.store_logs(&store, page).await?;
    let data = items.iter().map(|a| a.to_resource()).collect();
    Ok(list_document(
        &base_url(&state, &headers),
        "/v2/integrations/logs",
        page,
        page.bounded_total(counted),
        data,
    ))
}

/// The integration named in the path, or 404 (unknown, malformed, another store's).
async fn owned_integration(state: &AppState, store: &StoreId, id: &str) -> Result<Uuid, ApiError> {
    let id = parse_id(id)?;
    state.integrations.get(store, id).await??;
    Ok(id)
}

async fn integration_logs(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let id = owned_integration(&state, &store, &id).await?;
    let (items, counted) = state.log.integration_logs(&store, id, page).await?;
    let data = items.iter().map(|a| a.to_resource()).collect();
    let path = format!("/v2/integrations/{id}/logs");
    Ok(list_document(
        &base_url(&state, &headers),
        &path,
        page,
        page.bounded_total(counted),
        data,
    ))
}

async fn integration_jobs(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = page_of(&params)?;
    let id = owned_integration(&state, &store, &id).await?;
    let (items, counted) = state.log.integration_jobs(&store, id, page).await?;
    let data = items.iter().map(|j| j.to_resource()).collect();
    let path = format!("/v2/integrations/{id}/jobs");
    Ok(list_document(
        &base_url(&state, &headers),
        &path,
        page,
        page.bounded_total(counted),
        data,
    ))
}

async fn job_logs(
    State(state): State<AppState>,
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
    let data = items.iter().map(|a| a.to_resource()).collect();
    let path = format!("/v2/integrations/{id}/jobs/{job_id}/logs");
    Ok(list_document(
        &base_url(&state, &headers),
        &path,
        page,
        page.bounded_total(counted),
        data,
    ))
}

/// How long one replay call scans the DLQ (API Gateway answers within 30 s).
pub const REPLAY_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// `POST /v2/integrations/{id}/replay`: moves the integration's dead-lettered jobs
/// back to the internal queue, with a fresh retry budget. Only this store's
/// integration's jobs move, and only they are counted (`scanned`); `complete: false`
/// means the DLQ was not scanned to its end within the call, or another replay held
/// some of it meanwhile: call again.
async fn replay_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let integration = state.integrations.get(&store, id).await??;
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

/// `POST /v2/integrations/{id}/test`: delivers a sample event now (enabled or not)
/// and answers with the recorded attempt. Body optional:
/// `{"data": {"type": "test", "triggered_by": "<event key>"}}`; the default event is
/// the first the integration observes.
async fn test_integration(
    State(state): State<AppState>,
    Tenant(store): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let integration = state.integrations.get(&store, id).await??;
    let Some(deliverer) = state.deliverer.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "test deliveries are not available here",
            None,
        ));
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = if declared == Some(0) || (declared.is_none() && !jsonapi::is_json(&headers)) {
        Value::Null
    } else {
        json_body(&headers, body).await?
    };
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

/// Largest `POST /v2/events` body (a Lambda invocation carries at most 6 MB).
pub use herald_core::ingest::request::MAX_EVENTS_BODY_BYTES;

/// `POST /v2/events`: `{"data": <event>}` or `{"data": [<event>, ...]}`, answered as
/// the ingest function answers it ([`herald_core::ingest::request::post_events`]).
async fn ingest_events(
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

async fn observable_events() -> Response {
    let data: Vec<Value> = catalog::all()
        .iter()
        .map(|e| {
            json!({
                "type": "observable-event",
                "id": e.key,
                "resource": e.resource,
                "action": e.action,
                "legacy": e.legacy,
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
