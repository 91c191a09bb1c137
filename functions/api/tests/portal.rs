//! The store owner's portal (`/portal`) through the router, without a browser: what it
//! serves, under which headers, how it learns its sign-in mode, and its weight. The
//! browser tests (`infra/portal_test.py`) drive it against the dev server.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use herald_api::settings::{PortalSignIn, Settings};
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::access::StoreAccess;
use herald_core::memory::MemoryIntegrationStore;
use herald_core::model::StoreId;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PORTAL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/portal");

fn app(tenancy: Tenancy, portal: PortalSignIn) -> Router {
    let settings = Settings {
        portal,
        ..Settings::memory(tenancy)
    };
    herald_api::router(AppState::new(
        Arc::new(MemoryIntegrationStore::new()),
        &settings,
    ))
}

fn dev_server() -> Router {
    app(
        Tenancy::Header {
            default: StoreId::parse("default").expect("valid"),
        },
        PortalSignIn::default(),
    )
}

fn jwt(issuer: Option<&str>, client_id: Option<&str>) -> Router {
    app(
        Tenancy::JwtClaim {
            claim: "store_id".into(),
        },
        PortalSignIn {
            issuer: issuer.map(str::to_owned),
            client_id: client_id.map(str::to_owned),
            // The dev server's: the tests' issuers are on loopback.
            loopback_http: true,
        },
    )
}

async fn get(
    app: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .uri(uri)
        .header(header::HOST, "herald.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, headers, bytes.to_vec())
}

fn header_of<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII"))
        .unwrap_or_default()
}

/// Every file of `functions/api/portal/`, by name.
fn portal_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(PORTAL_DIR)
        .expect("portal dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort();
    names
}

const DEV_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[tokio::test]
async fn the_page_and_every_asset_are_served_without_a_store_under_a_policy_with_no_inline_code() {
    // A JWT deployment: any API route without a token's store claim is a 403, but the
    // portal's static files need no store.
    let app = jwt(None, None);
    let (status, _, _) = get(&app, "/v2/integrations", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let mut served = vec![("/portal".to_owned(), "text/html; charset=utf-8".to_owned())];
    for name in portal_files() {
        if name == "index.html" {
            continue;
        }
        let kind = match name.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            other => panic!("portal/{name}: no content type for {other:?}"),
        };
        served.push((format!("/portal/{name}"), kind.to_owned()));
    }
    assert!(served.len() >= 3, "{served:?}");
    for (uri, kind) in served {
        let (status, headers, body) = get(&app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(header_of(&headers, "content-type"), kind, "{uri}");
        assert_eq!(
            header_of(&headers, "x-content-type-options"),
            "nosniff",
            "{uri}"
        );
        assert_eq!(
            header_of(&headers, "referrer-policy"),
            "no-referrer",
            "{uri}"
        );
        assert_eq!(header_of(&headers, "cache-control"), "no-cache", "{uri}");
        assert!(!header_of(&headers, "etag").is_empty(), "{uri}");
        let policy = header_of(&headers, "content-security-policy");
        assert!(!policy.contains("unsafe"), "{uri}: {policy}");
        assert!(
            policy.starts_with("default-src 'none'; script-src 'self'; style-src 'self';"),
            "{uri}: {policy}"
        );
        let text = String::from_utf8(body).expect("UTF-8");
        assert!(!text.is_empty(), "{uri}");
        // No inline script or style for the policy to refuse.
        assert!(!text.contains(" style=\""), "{uri} has an inline style");
        assert!(!text.contains(" onclick="), "{uri} has an inline handler");
    }
    let (_, _, page) = get(&app, "/portal", &[]).await;
    let page = String::from_utf8(page).expect("UTF-8");
    assert!(page.contains("<script type=\"module\" src=\"/portal/portal.js\"></script>"));
    assert!(
        !page.contains("<script>") && !page.contains("<style"),
        "{page}"
    );
}

#[tokio::test]
async fn the_dev_servers_policy_connects_only_to_itself() {
    let (_, headers, _) = get(&dev_server(), "/portal", &[]).await;
    assert_eq!(header_of(&headers, "content-security-policy"), DEV_POLICY);
}

#[tokio::test]
async fn an_unchanged_asset_is_answered_304_and_an_unknown_one_404() {
    let app = dev_server();
    let (_, headers, _) = get(&app, "/portal/portal.css", &[]).await;
    let etag = header_of(&headers, "etag").to_owned();
    let (status, _, body) = get(&app, "/portal/portal.css", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, _, body) = get(
        &app,
        "/portal/portal.css",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());

    let (status, _, body) = get(&app, "/portal/secrets.txt", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["errors"][0]["detail"], "no such route");
}

async fn config(app: &Router) -> Value {
    let (status, headers, body) = get(app, "/portal/config.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_of(&headers, "content-type"), "application/json");
    assert_eq!(header_of(&headers, "cache-control"), "no-store");
    serde_json::from_slice(&body).expect("JSON")
}

#[tokio::test]
async fn the_portal_learns_its_sign_in_from_the_deployment() {
    assert_eq!(
        config(&dev_server()).await,
        json!({"mode": "header", "default_store": "default"})
    );
    assert_eq!(
        config(&app(
            Tenancy::IamHeader {
                access: StoreAccess::default()
            },
            PortalSignIn {
                issuer: Some("https://id.example".into()),
                client_id: Some("portal".into()),
                loopback_http: false,
            },
        ))
        .await,
        json!({"mode": "iam"})
    );
    assert_eq!(
        config(&jwt(Some("https://id.example/pool-1/"), None)).await,
        json!({"mode": "jwt", "issuer": "https://id.example/pool-1", "client_id": null})
    );
    // Not configured: the page says so, and reaches nothing outside.
    let (_, headers, _) = get(
        &jwt(Some("https://id.example/pool-1"), None),
        "/portal",
        &[],
    )
    .await;
    assert_eq!(header_of(&headers, "content-security-policy"), DEV_POLICY);
}

/// An issuer on loopback (`http://127.0.0.1:<port>/pool-1`) whose discovery document
/// is `document(issuer)`, or a 404 when `None`.
async fn issuer_serving(document: fn(&str) -> Option<Value>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}/pool-1", listener.local_addr().expect("addr"));
    let answer = document(&issuer);
    let app = Router::new().route(
        "/pool-1/.well-known/openid-configuration",
        axum::routing::get(move || async move {
            match answer {
                Some(doc) => axum::Json(doc).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

/// As Amazon Cognito's: the endpoints on another origin than the issuer (its user
/// pool's domain), here `localhost` where the issuer is `127.0.0.1`.
fn cognito_like(issuer: &str) -> Option<Value> {
    let domain = issuer
        .replace("127.0.0.1", "localhost")
        .replace("/pool-1", "");
    Some(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{domain}/oauth2/authorize"),
        "token_endpoint": format!("{domain}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
    }))
}

#[tokio::test]
async fn the_page_may_reach_the_token_endpoint_the_issuers_discovery_names_on_another_origin() {
    let issuer = issuer_serving(cognito_like).await;
    let domain = issuer
        .replace("127.0.0.1", "localhost")
        .replace("/pool-1", "");
    let app = jwt(Some(&issuer), Some("portal-client"));
    assert_eq!(
        config(&app).await,
        json!({
            "mode": "jwt", "issuer": issuer, "client_id": "portal-client",
            "authorization_endpoint": format!("{domain}/oauth2/authorize"),
            "token_endpoint": format!("{domain}/oauth2/token"),
        })
    );
    let issuer_origin = issuer.trim_end_matches("/pool-1");
    for uri in ["/portal", "/portal/signin.js"] {
        let (_, headers, _) = get(&app, uri, &[]).await;
        assert_eq!(
            header_of(&headers, "content-security-policy"),
            DEV_POLICY.replace(
                "connect-src 'self';",
                &format!("connect-src 'self' {issuer_origin} {domain};")
            ),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn an_issuer_whose_discovery_cannot_be_used_leaves_the_page_a_message_and_its_own_origin() {
    fn another_issuer(_: &str) -> Option<Value> {
        Some(json!({
            "issuer": "https://id.example/pool-1",
            "authorization_endpoint": "https://id.example/auth",
            "token_endpoint": "https://id.example/token",
            "jwks_uri": "https://id.example/jwks",
        }))
    }
    fn plain_http_token_endpoint(issuer: &str) -> Option<Value> {
        Some(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": "http://id.example/token",
            "jwks_uri": format!("{issuer}/jwks"),
        }))
    }
    for (document, why) in [
        (
            (|_| None) as fn(&str) -> Option<Value>,
            "{doc} answered HTTP 404".to_owned(),
        ),
        (
            another_issuer,
            "{doc} names the issuer \"https://id.example/pool-1\", not \"{issuer}\"".to_owned(),
        ),
        (
            plain_http_token_endpoint,
            "{doc}: its token_endpoint \"http://id.example/token\" is not an https URL".to_owned(),
        ),
    ] {
        let issuer = issuer_serving(document).await;
        let doc = format!("{issuer}/.well-known/openid-configuration");
        let why = why.replace("{doc}", &doc).replace("{issuer}", &issuer);
        let app = jwt(Some(&issuer), Some("portal-client"));
        assert_eq!(
            config(&app).await,
            json!({
                "mode": "jwt", "issuer": issuer, "client_id": "portal-client",
                "error": format!("the issuer's OpenID configuration could not be read: {why}"),
            })
        );
        let (_, headers, _) = get(&app, "/portal", &[]).await;
        assert_eq!(
            header_of(&headers, "content-security-policy"),
            DEV_POLICY.replace(
                "connect-src 'self';",
                &format!("connect-src 'self' {};", issuer.trim_end_matches("/pool-1"))
            )
        );
    }
}

#[tokio::test]
async fn the_portals_own_files_weigh_under_100_kib_compressed() {
    let app = dev_server();
    let mut total = 0;
    let mut compressed = 0;
    for name in portal_files() {
        let uri = if name == "index.html" {
            "/portal".to_owned()
        } else {
            format!("/portal/{name}")
        };
        let (status, _, body) = get(&app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let on_disk = std::fs::read(format!("{PORTAL_DIR}/{name}")).expect("file");
        assert_eq!(body, on_disk, "{uri} serves portal/{name}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).expect("gzip");
        total += body.len();
        compressed += gz.finish().expect("gzip").len();
    }
    assert!(
        compressed < 100 * 1024,
        "{compressed} bytes gzipped ({total} raw)"
    );
}
