//! What the api router and the ingest function answer alike over HTTP: JSON:API error
//! documents (`{"errors": [{"status", "title", "detail", "source"}]}`) and the
//! reading of a JSON request body.

use http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};

use crate::validate::FieldError;

/// Where in the request a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
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
struct Problem {
    detail: String,
    source: Option<Source>,
}

/// An error answer: one or more problems sharing one status.
#[derive(Debug, Clone)]
pub struct Errors {
    status: StatusCode,
    problems: Vec<Problem>,
}

impl Errors {
    /// One problem.
    pub fn new(status: StatusCode, detail: impl Into<String>, source: Option<Source>) -> Self {
        Self {
            status,
            problems: vec![Problem {
                detail: detail.into(),
                source,
            }],
        }
    }

    /// 422 with one problem per field error.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            problems: errors
                .into_iter()
                .map(|e| Problem {
                    detail: e.detail,
                    source: Some(Source::Pointer(e.pointer)),
                })
                .collect(),
        }
    }

    /// 413 with one problem per field error (parts of the body too large).
    pub fn too_large(errors: Vec<FieldError>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::invalid(errors)
        }
    }

    /// 404 for a path no route serves.
    pub fn no_such_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such route", None)
    }

    /// 405 for a method the route does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "this method is not allowed on this route",
            None,
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `{"errors": [...]}` document.
    pub fn to_document(&self) -> Value {
        let title = match self.status.as_u16() {
            422 => "Failed Validation",
            _ => self.status.canonical_reason().unwrap_or("Error"),
        };
        let errors: Vec<Value> = self
            .problems
            .iter()
            .map(|p| {
                let mut e = json!({
                    "status": self.status.as_u16(),
                    "title": title,
                    "detail": p.detail,
                });
                match &p.source {
                    Some(Source::Pointer(ptr)) => e["source"] = json!({ "pointer": ptr }),
                    Some(Source::Parameter(name)) => e["source"] = json!({ "parameter": name }),
                    Some(Source::Header(name)) => e["source"] = json!({ "header": name }),
                    None => {}
                }
                e
            })
            .collect();
        json!({ "errors": errors })
    }
}

/// Whether the request says its body is JSON (`application/json` or
/// `application/vnd.api+json`, parameters ignored).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| m == "application/json" || m == "application/vnd.api+json")
}

/// Reads and parses a JSON body of at most `limit` bytes: 415 for another content
/// type, 413 past the limit (declared or read), 400 for anything that is not JSON.
pub async fn read_json<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Value, Errors>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    parse_json(&read_body(headers, body, limit).await?)
}

/// `bytes` parsed as JSON, or 400 saying why they are not.
pub fn parse_json(bytes: &[u8]) -> Result<Value, Errors> {
    serde_json::from_slice(bytes).map_err(|e| {
        Errors::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
            Some(Source::Pointer(String::new())),
        )
    })
}

/// Reads a JSON body of at most `limit` bytes, unparsed: 415 for another content
/// type, 413 past the limit (declared or read).
pub async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<bytes::Bytes, Errors>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !is_json(headers) {
        return Err(Errors::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with Content-Type: application/json",
            Some(Source::Header("Content-Type".into())),
        ));
    }
    let too_large = || {
        Errors::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body must be at most {limit} bytes"),
            None,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    Ok(Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                too_large()
            } else {
                Errors::new(StatusCode::BAD_REQUEST, "the body could not be read", None)
            }
        })?
        .to_bytes())
}
