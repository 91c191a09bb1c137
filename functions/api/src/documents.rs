//! What every handler answers with: JSON:API documents (a resource, a paged list
//! with its links and meta), the request's JSON body, ids and pages read from the path
//! and query, and the base of absolute links.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::filter::{Filter, Listed, Subject};
use herald_core::jsonapi::{self};
use herald_core::page::{Page, Total};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{ApiError, Source};

use crate::{AppState, MAX_BODY_BYTES};

/// The base of absolute links: `HERALD_PUBLIC_URL`, else the request's own
/// scheme and host (API Gateway sets `X-Forwarded-Proto`), else relative links.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
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
pub(crate) async fn json_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    Ok(jsonapi::read_json(headers, body, MAX_BODY_BYTES).await?)
}

/// `{"data": <resource>}` with a status.
pub(crate) fn document(status: StatusCode, data: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "data": data }).to_string(),
    )
        .into_response()
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found())
}

/// Parses `page[limit]` and `page[offset]`.
pub(crate) fn page_of(params: &[(String, String)]) -> Result<Page, ApiError> {
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

/// Parses `filter` for `subject`'s listing (absent: everything): a 400 naming
/// the part at fault, its source the `filter` parameter.
pub(crate) fn filter_of(params: &[(String, String)], subject: Subject) -> Result<Filter, ApiError> {
    let Some((_, raw)) = params.iter().find(|(k, _)| k == "filter") else {
        return Ok(Filter::default());
    };
    Filter::parse(raw, subject).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            e.detail,
            Some(Source::Parameter("filter".into())),
        )
    })
}

/// A list document: `data`, `links` (self/first/prev/next/last, each with the
/// listing's `filter`) and `meta` (`meta.results.lower_bound`: whether there may be
/// more than `meta.results.total`). `carry_on`, when a filtered listing spent its read
/// budget before its page was full, is where `next` goes instead: the same filter
/// before the time the scan reached, and the offset left to skip there.
pub(crate) fn list_document(
    base: &str,
    path: &str,
    (page, filter): (Page, &Filter),
    total: Total,
    carry_on: Option<(Filter, usize)>,
    data: Vec<Value>,
) -> Response {
    let nav = page.navigation(total.count);
    let link = |filter: &Filter, offset: usize| {
        let mut link = format!(
            "{base}{path}?page[limit]={}&page[offset]={offset}",
            page.limit
        );
        if let Some(f) = filter.to_param() {
            link.push_str("&filter=");
            link.push_str(&f);
        }
        link
    };
    let next = match &carry_on {
        Some((later, offset)) => Some(link(later, *offset)),
        None => nav.next.map(|o| link(filter, o)),
    };
    let body = json!({
        "data": data,
        "links": {
            "self": link(filter, page.offset),
            "first": link(filter, nav.first),
            "prev": nav.prev.map(|o| link(filter, o)),
            "next": next,
            "last": link(filter, nav.last),
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

/// A page of a listing answered as a list document at `path`: `items` shown with
/// `show`, `total` as counted (exact, or a lower bound).
pub(crate) fn listing<T>(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    page: Page,
    (items, total): (Vec<T>, Total),
    show: impl Fn(&T, &str) -> Value,
) -> Response {
    let base = base_url(state, headers);
    let data = items.iter().map(|item| show(item, &base)).collect();
    list_document(&base, path, (page, &Filter::default()), total, None, data)
}

/// A page of the delivery log answered as a list document at `path`, as [`listing`]
/// does. When the scan spent its read budget, the total is a lower bound, and unless
/// the page is full and more were counted past it, `next` carries on before the time
/// the scan reached (none when that is no earlier than the filter's own end).
pub(crate) fn log_listing<T>(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    (page, filter): (Page, &Filter),
    listed: Listed<T>,
    show: impl Fn(&T, &str) -> Value,
) -> Response {
    let base = base_url(state, headers);
    let data = listed.items.iter().map(|item| show(item, &base)).collect();
    let mut total = page.bounded_total(listed.counted);
    let carry_on = listed.reached.and_then(|reached| {
        total.lower_bound = true;
        let later = filter.before(reached);
        // A scan that got no further than its filter's end has no next page to link.
        (listed.counted <= page.offset + page.limit && later != *filter)
            .then(|| (later, page.offset.saturating_sub(listed.counted)))
    });
    list_document(&base, path, (page, filter), total, carry_on, data)
}
