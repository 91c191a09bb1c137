//! The store owner's portal: a page and its ES modules at `/portal`, built into the
//! binary (no CDN, no build step; why: docs/decisions/0006-portal.md). The page calls
//! this same API with `fetch`, naming its store as any client does (`X-Store-Id` on the
//! dev server, a bearer token under JWT), so the files themselves need no store: they
//! are served to anyone, under a Content-Security-Policy that allows no inline code
//! and no other origin but the sign-in issuer's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::jsonapi::Errors;
use serde_json::json;

use crate::error::ApiError;
use crate::settings::PortalSignIn;
use crate::tenancy::Tenancy;
use crate::AppState;

/// One file of the portal, as built in.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// FNV-1a (64 bits) of the body, computed at compile time: the ETag.
    hash: u64,
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../portal/", $name)),
            hash: fnv1a(include_str!(concat!("../portal/", $name)).as_bytes()),
        }
    };
}

/// The page (`GET /portal`).
const PAGE: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Its modules and style (`GET /portal/{name}`).
const ASSETS: &[Asset] = &[
    asset!("portal.css", "text/css; charset=utf-8"),
    asset!("portal.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("signin.js", "text/javascript; charset=utf-8"),
    asset!("integrations.js", "text/javascript; charset=utf-8"),
    asset!("logs.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
];

/// FNV-1a, 64 bits: a strong validator of a file's bytes (not a defence: the files
/// are public).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// What the portal's files are served with, fixed per deployment.
#[derive(Clone, Debug)]
pub struct Portal {
    /// `GET /portal/config.json`: how the page signs in.
    config: String,
    /// The Content-Security-Policy of every portal file.
    policy: HeaderValue,
}

impl Portal {
    /// The portal of a deployment whose API names stores by `tenancy`.
    pub fn new(tenancy: &Tenancy, sign_in: &PortalSignIn) -> Self {
        let (config, issuer) = match tenancy {
            Tenancy::Header { default } => (
                json!({"mode": "header", "default_store": default.as_str()}),
                None,
            ),
            Tenancy::IamHeader { .. } => (json!({"mode": "iam"}), None),
            Tenancy::JwtClaim { .. } => (
                json!({
                    "mode": "jwt",
                    "issuer": sign_in.issuer.as_deref().map(|i| i.trim_end_matches('/')),
                    "client_id": sign_in.client_id,
                }),
                sign_in.issuer_origin(),
            ),
        };
        let connect = match issuer {
            Some(origin) => format!("'self' {origin}"),
            None => "'self'".to_owned(),
        };
        let policy = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        Self {
            config: config.to_string(),
            // The issuer's origin holds only characters a header value may hold.
            policy: HeaderValue::from_str(&policy).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
            }),
        }
    }
}

/// `GET /portal`.
pub(crate) async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    serve(&state.portal, &PAGE, &headers)
}

/// `GET /portal/{name}`: a module, the style sheet, or `config.json`.
pub(crate) async fn asset(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if name == "config.json" {
        let mut response = (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            state.portal.config.clone(),
        )
            .into_response();
        secure(&state.portal, response.headers_mut());
        return response;
    }
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(&state.portal, asset, &headers),
        None => ApiError::from(Errors::no_such_route()).into_response(),
    }
}

fn serve(portal: &Portal, asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    // Revalidated on every load: a deploy is seen at once, and an unchanged file costs
    // a 304.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(portal, headers);
    response
}

fn secure(portal: &Portal, headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, portal.policy.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}
