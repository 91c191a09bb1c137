//! JSON:API error responses: `{"errors": [{"status", "title", "detail", "source"}]}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::integrations::Rejection;
use herald_core::validate::FieldError;
use serde_json::{json, Value};

/// Where in the request a problem is.
#[derive(Debug, Clone)]
pub enum Source {
    /// A JSON pointer into the body.
    Pointer(String),
    /// A query parameter.
    Parameter(String),
    /// A request header.
    Header(String),
}

/// One error object.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    source: Option<Source>,
}

/// An error response: one or more problems sharing one status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    problems: Vec<Problem>,
}

impl ApiError {
    /// One problem.
    pub fn new(status: StatusCode, detail: impl Into<String>, source: Option<Source>) -> Self {
        Self {
            status,
            problems: vec![Problem {
                status,
                detail: detail.into(),
                source,
            }],
        }
    }

    /// 404 with the standard detail.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "integration not found", None)
    }

    /// 422 with one problem per field error.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        Self {
            status,
            problems: errors
                .into_iter()
                .map(|e| Problem {
                    status,
                    detail: e.detail,
                    source: Some(Source::Pointer(e.pointer)),
                })
                .collect(),
        }
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
        self.status
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
        }
    }
}

impl From<herald_core::Error> for ApiError {
    fn from(e: herald_core::Error) -> Self {
        Self::internal(&e)
    }
}

fn title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        422 => "Failed Validation",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<Value> = self
            .problems
            .into_iter()
            .map(|p| {
                let mut e = json!({
                    "status": p.status.as_u16(),
                    "title": title(p.status),
                    "detail": p.detail,
                });
                match p.source {
                    Some(Source::Pointer(ptr)) => e["source"] = json!({ "pointer": ptr }),
                    Some(Source::Parameter(name)) => e["source"] = json!({ "parameter": name }),
                    Some(Source::Header(name)) => e["source"] = json!({ "header": name }),
                    None => {}
                }
                e
            })
            .collect();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "errors": errors }).to_string(),
        )
            .into_response()
    }
}
