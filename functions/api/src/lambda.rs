//! The Lambda edge: turns API Gateway's authorizer context into [`AuthorizerClaims`]
//! (JWT) or an [`IamCaller`] (IAM) so that the router itself never sees Lambda types.

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;

use crate::tenancy::{AuthorizerClaims, IamCaller};
use crate::AppState;

/// The router as the `api` function serves it: [`crate::router`] plus the authorizer
/// layer. Events from `events/` run through this in tests.
pub fn router(state: AppState) -> Router {
    crate::router(state).layer(middleware::from_fn(authorizer_from_context))
}

async fn authorizer_from_context(mut req: Request, next: Next) -> Response {
    let authorizer = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.authorizer.as_ref(),
        _ => None,
    };
    let claims = authorizer
        .and_then(|a| a.jwt.as_ref())
        .map(|jwt| jwt.claims.clone());
    let caller = authorizer
        .and_then(|a| a.iam.as_ref())
        .and_then(|iam| iam.user_arn.clone());
    if let Some(claims) = claims {
        req.extensions_mut().insert(AuthorizerClaims(claims));
    }
    if let Some(caller) = caller {
        req.extensions_mut().insert(IamCaller(caller));
    }
    next.run(req).await
}
