//! `GET /v2/event-data/{token}`: the `dataref` of a queue message whose event's `data`
//! was too large for it ([`herald_core::event_data`]). No authorizer stands before it
//! (template.yaml): the token is the capability. Any string gets a 4xx or the body;
//! only an unreachable key or bucket is a 5xx.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::event_data::Opened;
use herald_core::ports::BodyAt;

use crate::error::ApiError;
use crate::AppState;

/// Redirects to the body (a GET presigned for minutes; the body itself in the dev
/// server), 410 once the token or the body expired, 404 for anything else, with no
/// word on why (the route is no oracle for forging tokens).
pub(crate) async fn event_data(
    State(state): State<Arc<AppState>>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let not_found =
        || ApiError::new(StatusCode::NOT_FOUND, "no such event data", None).into_response();
    let (Some(event_data), Ok(Path(token))) = (&state.event_data, token) else {
        return not_found();
    };
    let no_store = (header::CACHE_CONTROL, "no-store");
    match event_data.open(&token).await {
        Ok(Opened::Body(BodyAt::Url(url))) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, url.as_str()), no_store],
        )
            .into_response(),
        Ok(Opened::Body(BodyAt::Bytes(body))) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json"), no_store],
            body,
        )
            .into_response(),
        Ok(Opened::Expired) => ApiError::new(
            StatusCode::GONE,
            "this dataref has expired: a dataref is valid for 7 days",
            None,
        )
        .into_response(),
        Ok(Opened::Gone) => ApiError::new(
            StatusCode::GONE,
            "the event's data is no longer stored: it expired with the delivery log",
            None,
        )
        .into_response(),
        Ok(Opened::NotFound) => not_found(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}
