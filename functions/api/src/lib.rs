//! Herald's Integrations API: one axum router, served by the `api` Lambda function
//! (through `lambda_http`) and by the dev server (through `axum::serve`).
//!
//! The contract follows Elastic Path's Integrations API: JSON:API bodies, EP field
//! names, masked secrets, `{"errors": [...]}` with a pointer per problem.

pub mod authorizer;
mod documents;
pub mod error;
mod handlers;
pub mod hosts;
pub mod lambda;
pub mod oidc;
pub mod portal;
pub mod settings;
pub mod tenancy;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use herald_core::ingest::Ingest;
use herald_core::integrations::Integrations;
use herald_core::jsonapi::Errors;
use herald_core::memory::{MemoryDeliveryLog, MemoryIdempotency};
use herald_core::ports::{
    DeadLetters, Deliverer, DeliveryLog, IdempotencyStore, IntegrationStore, JobQueue,
};
use herald_core::telemetry::LineQuota;
use herald_core::wiring::Components;

use crate::error::ApiError;
use crate::handlers::event_data::event_data;
use crate::handlers::events::*;
use crate::handlers::integrations::*;
use crate::handlers::logs::*;

pub use crate::handlers::events::REPLAY_TIME;
use crate::settings::Settings;
use crate::tenancy::{IamCaller, Tenancy};

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
    /// The internal queue, for replays from the archive.
    pub queue: Option<Arc<dyn JobQueue>>,
    /// Claims: which jobs a range replay has replayed already.
    pub claims: Arc<dyn IdempotencyStore>,
    /// How the caller's store is found.
    pub tenancy: Tenancy,
    /// Base of absolute links, when configured.
    pub public_url: Option<Arc<str>>,
    /// The portal's sign-in and policy.
    pub portal: Arc<portal::Portal>,
    /// Opens `dataref` tokens (`GET /v2/event-data/{token}`), where configured.
    pub event_data: Option<Arc<herald_core::event_data::EventData>>,
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
            queue: None,
            claims: Arc::new(MemoryIdempotency::new()),
            tenancy: settings.tenancy.clone(),
            public_url: settings.public_url.as_deref().map(Arc::from),
            portal: Arc::new(portal::Portal::new(&settings.tenancy, &settings.portal)),
            event_data: None,
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
            queue: components.queue.clone(),
            claims: components.idempotency.clone(),
            tenancy: settings.tenancy.clone(),
            public_url: settings.public_url.as_deref().map(Arc::from),
            portal: Arc::new(portal::Portal::new(&settings.tenancy, &settings.portal)),
            event_data: components.event_data.clone(),
        })
    }
}

/// The deployment's SSRF guard, for registration (parsed when the settings were read).
fn registration_guard(settings: &Settings) -> herald_core::net::guard::AddressGuard {
    settings.pipeline.address_guard.clone()
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
    handler: fn() -> MethodRouter<Arc<AppState>>,
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
            path: "/v2/integrations/{id}/rotate-secret",
            statuses: &[200, 400, 403, 404, 409, 413, 415, 422, 500],
            handler: || post(rotate_secret),
        },
        Route {
            method: Method::POST,
            path: "/v2/integrations/{id}/replay",
            statuses: &[200, 400, 403, 404, 409, 413, 415, 422, 500, 503],
            handler: || post(replay_integration),
        },
        Route {
            method: Method::POST,
            path: "/v2/integrations/{id}/jobs/{job_id}/replay",
            statuses: &[202, 400, 403, 404, 409, 500, 503],
            handler: || post(replay_job),
        },
        Route {
            method: Method::GET,
            path: "/v2/event-data/{token}",
            statuses: &[200, 307, 404, 410, 500],
            handler: || get(event_data),
        },
        Route {
            method: Method::POST,
            path: "/v2/events",
            statuses: &[202, 400, 403, 404, 413, 415, 422, 503],
            handler: || post(ingest_events),
        },
    ]
}

/// The router with every route, the portal's files (`/portal`), JSON:API fallbacks for unknown paths and methods,
/// panic isolation and request logging.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in routes() {
        router = router.route(route.path, (route.handler)());
    }
    router
        .route("/openapi.yaml", get(openapi))
        .route("/portal", get(portal::page))
        .route("/portal/{asset}", get(portal::asset))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::new(state))
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
/// bodies, queries or headers. At most `HERALD_LOG_LINES_PER_SECOND` lines a second in
/// the dev server (every request in Lambda); the rest are counted.
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
    static LINES: LineQuota = LineQuota::new("request");
    if !LINES.admit() {
        return response;
    }
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

/// Largest `POST /v2/events` body (a Lambda invocation carries at most 6 MB).
pub use herald_core::ingest::request::MAX_EVENTS_BODY_BYTES;
