//! The dev server's JWT authorizer (`HERALD_AUTH=jwt`): API Gateway's rules against
//! an issuer on loopback whose discovery document and keys a test server serves, with
//! RSA keys made at test time.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use herald_api::authorizer::JwtAuthorizer;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::memory::MemoryIntegrationStore;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const AUDIENCE: &str = "herald-portal";

/// An issuer on loopback: its discovery document and its one key, `key-1`.
struct Issuer {
    url: String,
    key: KeyPair,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWK of `key`'s public half, named `kid`.
fn jwk(key: &KeyPair, kid: &str) -> Value {
    let public = key.public_key();
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    })
}

/// `claims` signed RS256 by `key`, its header naming `kid`.
fn sign(key: &KeyPair, kid: &str, claims: &Value) -> String {
    let head = b64(json!({"alg": "RS256", "typ": "JWT", "kid": kid})
        .to_string()
        .as_bytes());
    let body = b64(claims.to_string().as_bytes());
    let message = format!("{head}.{body}");
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{message}.{}", b64(&signature))
}

async fn issuer() -> Issuer {
    let key = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/pool-1", listener.local_addr().expect("addr"));
    let discovery = json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/auth"),
        "token_endpoint": format!("{url}/token"),
        "jwks_uri": format!("{url}/jwks"),
    });
    let keys = json!({"keys": [jwk(&key, "key-1")]});
    let app = Router::new()
        .route(
            "/pool-1/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/pool-1/jwks", get(move || async move { Json(keys) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer { url, key }
}

impl Issuer {
    /// Claims that API Gateway would accept, for `store`.
    fn claims(&self, store: &str) -> Value {
        json!({
            "iss": self.url, "aud": AUDIENCE, "sub": "owner-1", "store_id": store,
            "iat": now() - 10, "nbf": now() - 10, "exp": now() + 600,
        })
    }

    fn token(&self, claims: &Value) -> String {
        sign(&self.key, "key-1", claims)
    }

    /// The API as the dev server serves it with `HERALD_AUTH=jwt`.
    fn api(&self) -> Router {
        let settings = Settings::memory(Tenancy::JwtClaim {
            claim: "store_id".into(),
        });
        let authorizer =
            JwtAuthorizer::new(&self.url, vec![AUDIENCE.into()], true).expect("authorizer");
        herald_api::authorizer::router(
            AppState::new(Arc::new(MemoryIntegrationStore::new()), &settings),
            Arc::new(authorizer),
        )
    }
}

struct Answer {
    status: StatusCode,
    challenge: String,
    body: Value,
}

async fn call(
    api: &Router,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1");
    if let Some(authorization) = authorization {
        req = req.header(header::AUTHORIZATION, authorization);
    }
    let req = match body {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let res = api.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Answer {
        status,
        challenge,
        body,
    }
}

fn webhook(name: &str) -> Value {
    json!({"data": {
        "type": "integration", "name": name, "integration_type": "webhook", "enabled": true,
        "observes": ["order.paid"],
        "configuration": {"url": "https://ilovelamp.now.sh/send-shipped-email", "secret_key": "SOME_SECRET_KEY"}
    }})
}

#[tokio::test]
async fn a_token_signed_by_the_issuers_key_is_accepted_and_acts_for_the_store_it_names() {
    let issuer = issuer().await;
    let api = issuer.api();
    let shop_a = format!("Bearer {}", issuer.token(&issuer.claims("shop-a")));
    let shop_b = format!("Bearer {}", issuer.token(&issuer.claims("shop-b")));

    let created = call(
        &api,
        "POST",
        "/v2/integrations",
        Some(&shop_a),
        Some(webhook("Shipping")),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let listed = call(&api, "GET", "/v2/integrations", Some(&shop_a), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let names: Vec<&str> = listed.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Shipping"]);

    let other = call(&api, "GET", "/v2/integrations", Some(&shop_b), None).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body["data"], json!([]));
}

#[tokio::test]
async fn a_token_with_client_id_and_no_aud_is_accepted_as_api_gateway_accepts_cognitos_access_tokens(
) {
    let issuer = issuer().await;
    let api = issuer.api();
    let mut claims = issuer.claims("shop-a");
    let claims_map = claims.as_object_mut().expect("object");
    claims_map.remove("aud");
    claims_map.insert("client_id".into(), json!(AUDIENCE));
    // API Gateway takes the token with or without the Bearer prefix.
    let listed = call(
        &api,
        "GET",
        "/v2/integrations",
        Some(&issuer.token(&claims)),
        None,
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.challenge);
    assert_eq!(listed.body["data"], json!([]));
}

#[tokio::test]
async fn every_token_api_gateway_would_refuse_is_answered_401_unauthorized() {
    let issuer = issuer().await;
    let api = issuer.api();
    let good = issuer.claims("shop-a");
    let with = |name: &str, value: Value| {
        let mut claims = good.clone();
        claims[name] = value;
        claims
    };
    let stranger = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "no token in the Authorization header"),
        (
            "not a JWT",
            Some("Bearer not-a-token".into()),
            "the token is not a JWT",
        ),
        (
            "basic credentials",
            Some("Basic b3duZXI6cGFzcw==".into()),
            "the Authorization header is not a bearer token",
        ),
        (
            "expired",
            Some(issuer.token(&with("exp", json!(now() - 60)))),
            "the token has expired",
        ),
        (
            "not yet valid",
            Some(issuer.token(&with("nbf", json!(now() + 600)))),
            "the token is not valid yet (nbf)",
        ),
        (
            "issued in the future",
            Some(issuer.token(&with("iat", json!(now() + 600)))),
            "the token was issued in the future (iat)",
        ),
        (
            "another issuer",
            Some(issuer.token(&with("iss", json!("https://id.example/pool-2")))),
            "the token's issuer (iss) is not this API's",
        ),
        (
            "another audience",
            Some(issuer.token(&with("aud", json!("someone-else")))),
            "the token's audience (aud or client_id) is not this API's",
        ),
        (
            "another audience, and this API's client_id",
            Some(issuer.token(&{
                let mut c = with("aud", json!("someone-else"));
                c["client_id"] = json!(AUDIENCE);
                c
            })),
            "the token's audience (aud or client_id) is not this API's",
        ),
        (
            "no expiry",
            Some(issuer.token(&{
                let mut c = good.clone();
                c.as_object_mut().expect("object").remove("exp");
                c
            })),
            "the token lacks exp or iss",
        ),
        (
            "signed by another key under the issuer's kid",
            Some(sign(&stranger, "key-1", &good)),
            "the token's signature is not valid",
        ),
        (
            "a kid the issuer does not have",
            Some(sign(&issuer.key, "key-2", &good)),
            "the token's key (kid) is not one of the issuer's",
        ),
        (
            "not signed (alg none)",
            Some(format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(good.to_string().as_bytes())
            )),
            "the token is not a JWT",
        ),
        (
            "signed with a shared secret (HS256)",
            Some(format!(
                "{}.{}.{}",
                b64(br#"{"alg":"HS256","typ":"JWT","kid":"key-1"}"#),
                b64(good.to_string().as_bytes()),
                b64(b"0123456789abcdef0123456789abcdef")
            )),
            "the token is not signed with an RSA algorithm",
        ),
    ];
    for (case, token, why) in cases {
        let authorization = token.map(|t| {
            if t.contains(' ') {
                t
            } else {
                format!("Bearer {t}")
            }
        });
        let refused = call(
            &api,
            "GET",
            "/v2/integrations",
            authorization.as_deref(),
            None,
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(refused.body, json!({"message": "Unauthorized"}), "{case}");
        assert_eq!(
            refused.challenge,
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\""),
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_valid_token_without_the_store_claim_passes_the_authorizer_and_is_forbidden() {
    let issuer = issuer().await;
    let api = issuer.api();
    let mut claims = issuer.claims("shop-a");
    claims.as_object_mut().expect("object").remove("store_id");
    let answer = call(
        &api,
        "GET",
        "/v2/integrations",
        Some(&format!("Bearer {}", issuer.token(&claims))),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.body["errors"][0]["detail"],
        "the access token has no store_id claim naming a store"
    );
}

#[tokio::test]
async fn the_portals_files_need_no_token_as_in_the_template() {
    let issuer = issuer().await;
    let api = issuer.api();
    for uri in ["/portal", "/portal/portal.js"] {
        let answer = call(&api, "GET", uri, None, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn a_dataref_needs_no_token_as_in_the_template() {
    // GET /v2/event-data/{token} is the template's one /v2 route without the
    // authorizer: a queue message's reader follows it with no credentials. A made-up
    // token is the route's own 404, not the authorizer's 401.
    let issuer = issuer().await;
    let api = issuer.api();
    let answer = call(&api, "GET", "/v2/event-data/not-a-token", None, None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}
