//! The store owner's portal: a page and its ES modules at `/portal`, built into the
//! binary (no CDN, no build step; why: docs/decisions/0006-portal.md). The page calls
//! this same API with `fetch`, naming its store as any client does (`X-Store-Id` on the
//! dev server, a bearer token under JWT), so the files themselves need no store: they
//! are served to anyone, under a Content-Security-Policy that allows no inline code
//! and no other origin but the sign-in's: the issuer's and its token endpoint's, read
//! from the issuer's discovery document once per process ([`crate::oidc`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::jsonapi::Errors;
use serde_json::json;

use crate::error::ApiError;
use crate::oidc::Discovery;
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

/// What the portal's files are served with: fixed per deployment, but for the
/// sign-in under JWT, which the issuer's discovery document completes on first use.
#[derive(Debug)]
pub struct Portal {
    /// The dev server's, IAM's, and a JWT deployment's whose sign-in is not configured.
    fixed: Option<Served>,
    /// A JWT deployment's OpenID Connect sign-in.
    oidc: Option<OidcSignIn>,
}

#[derive(Debug)]
struct OidcSignIn {
    discovery: Discovery,
    client_id: String,
    issuer_origin: String,
}

/// `config.json` and the Content-Security-Policy of every file.
#[derive(Clone, Debug)]
struct Served {
    /// `GET /portal/config.json`: how the page signs in.
    config: String,
    /// The Content-Security-Policy of every portal file.
    policy: HeaderValue,
}

impl Served {
    /// `config`, and a policy that lets the page connect to itself and to `origins`.
    fn new(config: serde_json::Value, origins: &[&str]) -> Self {
        let mut connect = vec!["'self'"];
        for origin in origins {
            if !connect.contains(origin) {
                connect.push(origin);
            }
        }
        let policy = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            connect.join(" ")
        );
        Self {
            config: config.to_string(),
            // Origins are ASCII serializations (`oidc::origin`): valid in a header.
            policy: HeaderValue::from_str(&policy).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
            }),
        }
    }
}

impl Portal {
    /// The portal of a deployment whose API names stores by `tenancy`.
    pub fn new(tenancy: &Tenancy, sign_in: &PortalSignIn) -> Self {
        let fixed = |config| Self {
            fixed: Some(Served::new(config, &[])),
            oidc: None,
        };
        match tenancy {
            Tenancy::Header { default } => {
                fixed(json!({"mode": "header", "default_store": default.as_str()}))
            }
            Tenancy::IamHeader { .. } => fixed(json!({"mode": "iam"})),
            Tenancy::JwtClaim { .. } => {
                let issuer = sign_in.issuer.as_deref().map(|i| i.trim_end_matches('/'));
                let config =
                    json!({"mode": "jwt", "issuer": issuer, "client_id": sign_in.client_id});
                let (Some(issuer), Some(client_id), Some(issuer_origin)) =
                    (issuer, &sign_in.client_id, sign_in.issuer_origin())
                else {
                    // Not configured: the page says so, and needs no other origin.
                    return fixed(config);
                };
                match Discovery::new(issuer, sign_in.loopback_http) {
                    Ok(discovery) => Self {
                        fixed: None,
                        oidc: Some(OidcSignIn {
                            discovery,
                            client_id: client_id.clone(),
                            issuer_origin,
                        }),
                    },
                    Err(why) => fixed(json!({
                        "mode": "jwt", "issuer": issuer, "client_id": client_id,
                        "error": format!("sign-in is unavailable: {why}"),
                    })),
                }
            }
        }
    }

    /// What the files are served with now: under JWT, the issuer's endpoints once its
    /// discovery document is read (the page may then connect to the token endpoint's
    /// origin, which need not be the issuer's), else why not.
    async fn served(&self) -> Served {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let Some(oidc) = &self.oidc else {
            return Served::new(json!({"mode": "jwt"}), &[]);
        };
        let issuer = oidc.discovery.issuer();
        match oidc.discovery.metadata().await {
            Ok(meta) => {
                // Checked by the discovery: an allowed URL, so it has an origin.
                let token_origin =
                    crate::oidc::origin(&meta.token_endpoint, oidc.discovery.loopback_http())
                        .unwrap_or_default();
                Served::new(
                    json!({
                        "mode": "jwt", "issuer": issuer, "client_id": oidc.client_id,
                        "authorization_endpoint": meta.authorization_endpoint,
                        "token_endpoint": meta.token_endpoint,
                    }),
                    &[&oidc.issuer_origin, &token_origin],
                )
            }
            Err(why) => Served::new(
                json!({
                    "mode": "jwt", "issuer": issuer, "client_id": oidc.client_id,
                    "error": format!("the issuer's OpenID configuration could not be read: {why}"),
                }),
                &[&oidc.issuer_origin],
            ),
        }
    }
}

/// `GET /portal`.
pub(crate) async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    serve(&state.portal.served().await, &PAGE, &headers)
}

/// `GET /portal/{name}`: a module, the style sheet, or `config.json`.
pub(crate) async fn asset(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if name == "config.json" {
        let served = state.portal.served().await;
        let mut response = (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            served.config.clone(),
        )
            .into_response();
        secure(&served, response.headers_mut());
        return response;
    }
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(&state.portal.served().await, asset, &headers),
        None => ApiError::from(Errors::no_such_route()).into_response(),
    }
}

fn serve(portal: &Served, asset: &Asset, request: &HeaderMap) -> Response {
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

fn secure(portal: &Served, headers: &mut HeaderMap) {
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
