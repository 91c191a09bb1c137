//! JSON:API error responses: `{"errors": [{"status", "title", "detail", "source"}]}`,
//! rendered by [`herald_core::jsonapi::Errors`] (the ingest function answers with the
//! same documents).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::integrations::{Failure, Rejection};
use herald_core::jsonapi::Errors;
use herald_core::validate::FieldError;

pub use herald_core::jsonapi::Source;

/// An error response: one or more problems sharing one status.
#[derive(Debug)]
pub struct ApiError(Errors);

impl ApiError {
    /// One problem.
    pub fn new(status: StatusCode, detail: impl Into<String>, source: Option<Source>) -> Self {
        Self(Errors::new(status, detail, source))
    }

    /// 404 with the standard detail.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "integration not found", None)
    }

    /// 422 with one problem per field error.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        Self(Errors::invalid(errors))
    }

    /// A 500 whose body says nothing about the cause; the cause is logged here.
    pub fn internal(err: &herald_core::Error) -> Self {
        tracing::error!(error = %err, retryable = err.is_retryable(), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "something went wrong on our side; try again later",
            None,
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status()
    }
}

impl From<Errors> for ApiError {
    fn from(e: Errors) -> Self {
        Self(e)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(errors) => Self::invalid(errors),
            Rejection::NotFound => Self::not_found(),
            Rejection::LimitReached { max } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("this store already has the maximum of {max} integrations; delete one before creating another"),
                Some(Source::Pointer("/data".into())),
            ),
            Rejection::Conflict => Self::new(
                StatusCode::CONFLICT,
                "the integration was changed by another request while this one was applied; try again",
                None,
            ),
            Rejection::NotAWebhook(kind) => Self::new(
                StatusCode::CONFLICT,
                format!("only a webhook integration has a secret to rotate; this one is {}", kind.as_str()),
                None,
            ),
        }
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(r) => r.into(),
            Failure::Failed(e) => e.into(),
        }
    }
}

impl From<herald_core::Error> for ApiError {
    fn from(e: herald_core::Error) -> Self {
        Self::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.0.to_document().to_string(),
        )
            .into_response()
    }
}
