//! The dev server's JWT authorizer: what API Gateway's JWT authorizer does before the
//! `api` function sees a request under `AuthMode=JWT`, done on loopback so that the
//! portal's OpenID Connect sign-in and the JWT tenancy run end to end without AWS.
//!
//! The rules are API Gateway's
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html>):
//! the token from `Authorization` (with or without `Bearer `), an RSA signature by the
//! key its `kid` names in the issuer's JWKS (`jwks_uri` of its discovery document),
//! `iss` equal to the issuer, `aud` in the audience list (`client_id` when there is no
//! `aud`), `exp` after now, `nbf` and `iat` before now. A refused token is a 401 with
//! `{"message":"Unauthorized"}`, as API Gateway answers; an accepted one hands its
//! claims to the router as [`AuthorizerClaims`], as the Lambda edge
//! ([`crate::lambda`]) does from API Gateway's request context. Like the template,
//! only `/v2/...` routes are authorized but `GET /v2/event-data/{token}` (a dataref,
//! its token its own capability); the portal's files are not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::oidc::Discovery;
use crate::tenancy::AuthorizerClaims;
use crate::AppState;

/// The least time between two reads of the issuer's keys when a token names a key
/// they lack (a rotation), so that made-up `kid`s cannot make the server hammer the
/// issuer.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Validates bearer tokens as API Gateway's JWT authorizer does.
#[derive(Debug)]
pub struct JwtAuthorizer {
    discovery: Discovery,
    audiences: Vec<String>,
    keys: tokio::sync::Mutex<Option<(Instant, Arc<JwkSet>)>>,
}

/// Why a token was refused: said in `WWW-Authenticate`, never with the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl JwtAuthorizer {
    /// An authorizer for `issuer` (`HERALD_JWT_ISSUER`) accepting `audiences`
    /// (`HERALD_JWT_AUDIENCE`, API Gateway's audience list); `loopback_http` allows an
    /// `http` issuer on loopback.
    pub fn new(issuer: &str, audiences: Vec<String>, loopback_http: bool) -> Result<Self, String> {
        let audiences: Vec<String> = audiences
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err("the JWT authorizer needs at least one audience (client id)".into());
        }
        Ok(Self {
            discovery: Discovery::new(issuer, loopback_http)?,
            audiences,
            keys: tokio::sync::Mutex::new(None),
        })
    }

    /// The claims of the token in `authorization`, or why it is refused.
    pub async fn authorize(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<AuthorizerClaims, Refused> {
        let refused = |why: &str| Refused(why.to_owned());
        let raw = authorization
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| refused("no token in the Authorization header"))?;
        let token = match raw.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => return Err(refused("the Authorization header is not a bearer token")),
            None => raw,
        };
        let head =
            jsonwebtoken::decode_header(token).map_err(|_| refused("the token is not a JWT"))?;
        if !matches!(
            head.alg,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
        ) {
            return Err(refused("the token is not signed with an RSA algorithm"));
        }
        let kid = head
            .kid
            .ok_or_else(|| refused("the token names no key (kid)"))?;
        let key = self.key(&kid).await?;

        let mut rules = Validation::new(head.alg);
        rules.leeway = 0;
        rules.validate_nbf = true;
        rules.set_required_spec_claims(&["exp", "iss"]);
        rules.set_issuer(&[self.discovery.issuer()]);
        // `aud` or, without it, `client_id`: checked below, as API Gateway does.
        rules.validate_aud = false;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &rules)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                refused(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidIssuer => "the token's issuer (iss) is not this API's",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks exp or iss",
                    _ => "the token is not valid",
                })
            })?
            .claims;
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => self.audiences.contains(aud),
            Some(Value::Array(auds)) => auds.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|x| x == a))
            }),
            Some(_) => false,
            None => claims
                .get("client_id")
                .and_then(Value::as_str)
                .is_some_and(|c| self.audiences.iter().any(|x| x == c)),
        };
        if !audience_ok {
            return Err(refused(
                "the token's audience (aud or client_id) is not this API's",
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_some_and(|iat| iat > now)
        {
            return Err(refused("the token was issued in the future (iat)"));
        }
        Ok(AuthorizerClaims(
            claims
                .iter()
                .map(|(k, v)| (k.clone(), claim_text(v)))
                .collect::<HashMap<_, _>>(),
        ))
    }

    /// The issuer's key `kid`, read again (at most every [`REFRESH_AT_MOST_EVERY`]) when
    /// the keys held lack it.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Refused> {
        let mut held = self.keys.lock().await;
        let stale = match &*held {
            Some((at, keys)) => keys.find(kid).is_none() && at.elapsed() >= REFRESH_AT_MOST_EVERY,
            None => true,
        };
        if stale {
            match self.fetch_keys().await {
                Ok(keys) => *held = Some((Instant::now(), Arc::new(keys))),
                Err(why) => {
                    tracing::warn!(why, "the issuer's keys could not be read");
                    return Err(Refused("the issuer's keys could not be read".into()));
                }
            }
        }
        let jwk = held
            .as_ref()
            .and_then(|(_, keys)| keys.find(kid).cloned())
            .ok_or_else(|| Refused("the token's key (kid) is not one of the issuer's".into()))?;
        DecodingKey::from_jwk(&jwk).map_err(|_| Refused("the issuer's key is not usable".into()))
    }

    async fn fetch_keys(&self) -> Result<JwkSet, String> {
        let meta = self.discovery.metadata().await?;
        let body = self.discovery.get(&meta.jwks_uri).await?;
        serde_json::from_slice(&body)
            .map_err(|e| format!("{} is not a JWK set: {e}", meta.jwks_uri))
    }
}

/// A claim as API Gateway hands it to the function: a string as it is, an array as
/// `[a b]`, any other value as its JSON text.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(claim_text).collect::<Vec<_>>().join(" ")
        ),
        other => other.to_string(),
    }
}

/// The router as the dev server serves it under `HERALD_AUTH=jwt`: [`crate::router`]
/// behind `authorizer` on every `/v2/...` route.
pub fn router(state: AppState, authorizer: Arc<JwtAuthorizer>) -> Router {
    crate::router(state).layer(middleware::from_fn_with_state(authorizer, authorize))
}

async fn authorize(
    State(authorizer): State<Arc<JwtAuthorizer>>,
    mut req: Request,
    next: Next,
) -> Response {
    // As the template: /v2 routes are authorized but the dataref's, whose token is
    // its own capability; the portal's files are open.
    let path = req.uri().path();
    if !path.starts_with("/v2/") || path.starts_with(herald_core::event_data::PATH) {
        return next.run(req).await;
    }
    // Only the authorizer's claims reach the router, never a caller's.
    req.extensions_mut().remove::<AuthorizerClaims>();
    match authorizer
        .authorize(req.headers().get(header::AUTHORIZATION))
        .await
    {
        Ok(claims) => {
            req.extensions_mut().insert(claims);
            next.run(req).await
        }
        Err(Refused(why)) => {
            tracing::info!(why, path = req.uri().path(), "refused a bearer token");
            let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{why}\"");
            (
                StatusCode::UNAUTHORIZED,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_str(&challenge)
                            .unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
                    ),
                ],
                r#"{"message":"Unauthorized"}"#,
            )
                .into_response()
        }
    }
}
