//! Which store a request acts for. Every integration route resolves the caller's
//! store first; nothing below it can name another store.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use herald_core::access::{self, StoreAccess};
use herald_core::model::StoreId;

use crate::error::ApiError;
use crate::AppState;

/// The header that names the store for trusted callers (dev server, IAM-signed calls).
pub const STORE_HEADER: &str = access::STORE_HEADER;

/// Claims of a validated JWT, put on the request by the Lambda edge
/// ([`crate::lambda`]) from API Gateway's authorizer context.
#[derive(Clone, Debug, Default)]
pub struct AuthorizerClaims(pub HashMap<String, String>);

/// The IAM identity that signed the request (API Gateway's
/// `requestContext.authorizer.iam.userArn`), put on the request by the Lambda edge
/// ([`crate::lambda`]).
#[derive(Clone, Debug)]
pub struct IamCaller(pub String);

/// How the store of a request is determined.
#[derive(Clone, Debug)]
pub enum Tenancy {
    /// The dev server: `X-Store-Id`, or `default` when absent.
    Header {
        /// Store used when the header is absent.
        default: StoreId,
    },
    /// JWT authorizer (the template's default): a claim of the validated token.
    JwtClaim {
        /// Claim name (`HERALD_STORE_CLAIM`, default `store_id`).
        claim: String,
    },
    /// IAM authorizer: the caller holds `execute-api:Invoke` and names the store with
    /// `X-Store-Id`, which is then required; `access` says which stores each caller
    /// may name (empty: any).
    IamHeader {
        /// `HERALD_IAM_STORE_ACCESS`.
        access: StoreAccess,
    },
}

/// The caller's store, extracted per [`Tenancy`].
#[derive(Clone, Debug)]
pub struct Tenant(pub StoreId);

impl FromRequestParts<Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let store = match &state.tenancy {
            Tenancy::Header { default } => {
                access::store_header(&parts.headers)?.unwrap_or_else(|| default.clone())
            }
            Tenancy::IamHeader { access } => {
                let caller = parts.extensions.get::<IamCaller>().map(|c| c.0.as_str());
                access::iam_store(&parts.headers, caller, access)?
            }
            Tenancy::JwtClaim { claim } => {
                let value = parts
                    .extensions
                    .get::<AuthorizerClaims>()
                    .and_then(|c| c.0.get(claim));
                let Some(value) = value else {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("the access token has no {claim} claim naming a store"),
                        None,
                    ));
                };
                StoreId::parse(value).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("the access token's {claim} claim is not a valid store id"),
                        None,
                    )
                })?
            }
        };
        Ok(Tenant(store))
    }
}
