//! The Integrations API through the router, with the embedded store: every route,
//! status and error shape of the contract.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::memory::MemoryIntegrationStore;
use herald_core::model::StoreId;
use herald_core::validate::Policy;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn settings(max_per_store: usize) -> Settings {
    Settings {
        pipeline: herald_core::config::PipelineSettings::memory(),
        tenancy: Tenancy::Header {
            default: StoreId::parse("default").expect("valid"),
        },
        max_per_store,
        policy: Policy {
            allow_http_webhooks: false,
            allow_plain_stomp: false,
        },
        public_url: None,
        portal: Default::default(),
    }
}

fn app_with(max_per_store: usize) -> Router {
    let state = AppState::new(
        Arc::new(MemoryIntegrationStore::new()),
        &settings(max_per_store),
    );
    herald_api::router(state)
}

fn app() -> Router {
    app_with(100)
}

struct Reply {
    status: StatusCode,
    body: Value,
    raw: String,
}

async fn call(app: &Router, req: Request<Body>) -> Reply {
    let res = app
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let raw = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
    };
    Reply { status, body, raw }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    store: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "herald.test");
    if let Some(store) = store {
        req = req.header("x-store-id", store);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    call(app, req).await
}

fn webhook(name: &str) -> Value {
    json!({"data": {
        "type": "integration",
        "integration_type": "webhook",
        "name": name,
        "description": "Send a shipping notification via email with discount code.",
        "enabled": true,
        "observes": ["order.fulfilled"],
        "configuration": {"url": "https://ilovelamp.now.sh/send-shipped-email", "secret_key": "SOME_SECRET_KEY"}
    }})
}

async fn create(app: &Router, store: &str, name: &str) -> Value {
    let r = send(
        app,
        "POST",
        "/v2/integrations",
        Some(store),
        Some(webhook(name)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    r.body["data"].clone()
}

fn pointers(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| {
            e["source"]["pointer"]
                .as_str()
                .unwrap_or("<none>")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn create_returns_201_with_the_integration_and_its_secret_masked() {
    let app = app();
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        None,
        Some(webhook("Order shipping notification")),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let data = &r.body["data"];
    let id = data["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(data["type"], "integration");
    assert_eq!(data["name"], "Order shipping notification");
    assert_eq!(data["integration_type"], "webhook");
    assert_eq!(data["enabled"], true);
    assert_eq!(data["observes"], json!(["order.fulfilled"]));
    assert_eq!(
        data["configuration"]["url"],
        "https://ilovelamp.now.sh/send-shipped-email"
    );
    assert_eq!(data["configuration"]["secret_key"], "***********_KEY");
    assert_eq!(
        data["links"]["self"],
        format!("http://herald.test/v2/integrations/{id}")
    );
    let created = data["meta"]["timestamps"]["created_at"]
        .as_str()
        .expect("created_at");
    assert_eq!(created.len(), "2021-08-27T08:41:23.621Z".len(), "{created}");
    assert!(created.ends_with('Z'));
    assert_eq!(data["meta"]["timestamps"]["updated_at"], created);
    assert!(!r.raw.contains("SOME_SECRET_KEY"));
}

#[tokio::test]
async fn links_use_https_behind_a_proxy_and_the_public_url_when_configured() {
    let app = app();
    let req = Request::builder()
        .method("POST")
        .uri("/v2/integrations")
        .header(header::HOST, "abc.execute-api.eu-west-1.amazonaws.com")
        .header("x-forwarded-proto", "https")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(webhook("a").to_string()))
        .expect("request");
    let r = call(&app, req).await;
    let link = r.body["data"]["links"]["self"].as_str().expect("link");
    assert!(
        link.starts_with("https://abc.execute-api.eu-west-1.amazonaws.com/v2/integrations/"),
        "{link}"
    );

    let mut s = settings(100);
    s.public_url = Some("https://api.example.com".into());
    let app = herald_api::router(AppState::new(Arc::new(MemoryIntegrationStore::new()), &s));
    let r = send(&app, "POST", "/v2/integrations", None, Some(webhook("a"))).await;
    let link = r.body["data"]["links"]["self"].as_str().expect("link");
    assert!(
        link.starts_with("https://api.example.com/v2/integrations/"),
        "{link}"
    );
}

#[tokio::test]
async fn get_returns_the_integration_and_404_for_unknown_malformed_or_foreign_ids() {
    let app = app();
    let created = create(&app, "store-a", "mine").await;
    let id = created["id"].as_str().expect("id");

    let r = send(
        &app,
        "GET",
        &format!("/v2/integrations/{id}"),
        Some("store-a"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"], created);

    for (path, store) in [
        (
            format!("/v2/integrations/{}", uuid::Uuid::now_v7()),
            "store-a",
        ),
        ("/v2/integrations/not-a-uuid".to_owned(), "store-a"),
        (format!("/v2/integrations/{id}"), "store-b"),
    ] {
        let r = send(&app, "GET", &path, Some(store), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path} as {store}");
        assert_eq!(r.body["errors"][0]["status"], 404);
        assert_eq!(r.body["errors"][0]["title"], "Not Found");
    }
}

#[tokio::test]
async fn no_route_can_read_or_change_another_stores_integration() {
    let app = app();
    let id = create(&app, "store-a", "mine").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v2/integrations/{id}");
    let put = send(
        &app,
        "PUT",
        &path,
        Some("store-b"),
        Some(json!({"data": {"type": "integration", "name": "stolen"}})),
    )
    .await;
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    let del = send(&app, "DELETE", &path, Some("store-b"), None).await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    // Every route that names an integration, with store-b's header.
    let job = uuid::Uuid::new_v4();
    for (method, uri, body) in [
        ("GET", path.clone(), None),
        ("GET", format!("{path}/logs"), None),
        ("GET", format!("{path}/jobs"), None),
        ("GET", format!("{path}/jobs/{job}/logs"), None),
        (
            "POST",
            format!("{path}/test"),
            Some(json!({"data": {"type": "test"}})),
        ),
        ("POST", format!("{path}/replay"), None),
    ] {
        let r = send(&app, method, &uri, Some("store-b"), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}: {}", r.raw);
    }
    let logs = send(&app, "GET", "/v2/integrations/logs", Some("store-b"), None).await;
    assert_eq!(logs.body["data"], json!([]));
    let list = send(&app, "GET", "/v2/integrations", Some("store-b"), None).await;
    assert_eq!(list.body["data"], json!([]));
    let mine = send(&app, "GET", &path, Some("store-a"), None).await;
    assert_eq!(mine.body["data"]["name"], "mine");
}

#[tokio::test]
async fn a_bad_store_header_is_a_400_pointing_at_the_header() {
    let r = send(&app(), "GET", "/v2/integrations", Some("a b"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["source"]["header"], "X-Store-Id");
}

#[tokio::test]
async fn list_paginates_with_links_and_meta() {
    let app = app();
    for i in 0..5 {
        create(&app, "s", &format!("integration {i}")).await;
    }
    let r = send(
        &app,
        "GET",
        "/v2/integrations?page[limit]=2&page[offset]=2",
        Some("s"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let names: Vec<_> = r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("integration 2"), json!("integration 3")]);
    assert_eq!(
        r.body["meta"]["page"],
        json!({"limit": 2, "offset": 2, "current": 2, "total": 3})
    );
    assert_eq!(r.body["meta"]["results"]["total"], 5);
    let base = "http://herald.test/v2/integrations?page[limit]=2&page[offset]=";
    assert_eq!(r.body["links"]["self"], format!("{base}2"));
    assert_eq!(r.body["links"]["first"], format!("{base}0"));
    assert_eq!(r.body["links"]["prev"], format!("{base}0"));
    assert_eq!(r.body["links"]["next"], format!("{base}4"));
    assert_eq!(r.body["links"]["last"], format!("{base}4"));

    let r = send(&app, "GET", "/v2/integrations", Some("s"), None).await;
    assert_eq!(r.body["data"].as_array().expect("data").len(), 5);
    assert_eq!(r.body["meta"]["page"]["limit"], 100);
    assert_eq!(r.body["links"]["next"], Value::Null);
    assert_eq!(r.body["links"]["prev"], Value::Null);
}

#[tokio::test]
async fn a_log_listing_counts_through_the_next_page_and_says_when_its_total_is_a_lower_bound() {
    use herald_core::attempt::{Attempt, JobStatus, LogEntry};
    use herald_core::memory::MemoryDeliveryLog;
    use herald_core::ports::DeliveryLog;

    // GIVEN a store with 250 attempts
    let log = Arc::new(MemoryDeliveryLog::default());
    let integration = uuid::Uuid::now_v7();
    let entries: Vec<LogEntry> = (0..250u32)
        .map(|n| LogEntry {
            attempt: Attempt {
                id: uuid::Uuid::now_v7(),
                store_id: "s".into(),
                integration_id: integration,
                job_id: uuid::Uuid::now_v7(),
                event_id: format!("evt-{n}"),
                event_type: "order.fulfilled".into(),
                attempt: 1,
                succeeded: true,
                status_code: Some(200),
                body: String::new(),
                error_detail: None,
                processing_time: 0.01,
                created_at: chrono::Utc::now(),
            },
            status: JobStatus::Delivered,
            enqueued_at: chrono::Utc::now(),
            replay_of: None,
            archive: None,
        })
        .collect();
    log.record(&entries).await.expect("record");
    let mut state = AppState::new(Arc::new(MemoryIntegrationStore::new()), &settings(100));
    state.log = log;
    let app = herald_api::router(state);
    let base = "http://herald.test/v2/integrations/logs?page[limit]=100&page[offset]=";

    // WHEN the first page is listed THEN the total is counted to the end of the next
    // page only, and said to be a lower bound
    let r = send(&app, "GET", "/v2/integrations/logs", Some("s"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["data"].as_array().expect("data").len(), 100);
    assert_eq!(
        r.body["meta"],
        json!({
            "page": {"limit": 100, "offset": 0, "current": 1, "total": 2},
            "results": {"total": 200, "lower_bound": true}
        })
    );
    assert_eq!(r.body["links"]["next"], format!("{base}100"));
    assert_eq!(r.body["links"]["last"], format!("{base}100"));

    // WHEN the second page is listed THEN the end is in reach: the total is exact
    let r = send(
        &app,
        "GET",
        "/v2/integrations/logs?page[offset]=100",
        Some("s"),
        None,
    )
    .await;
    assert_eq!(
        r.body["meta"],
        json!({
            "page": {"limit": 100, "offset": 100, "current": 2, "total": 3},
            "results": {"total": 250, "lower_bound": false}
        })
    );
    assert_eq!(r.body["links"]["next"], format!("{base}200"));
    assert_eq!(r.body["links"]["last"], format!("{base}200"));
}

#[tokio::test]
async fn list_masks_every_secret() {
    let app = app();
    create(&app, "s", "one").await;
    let r = send(&app, "GET", "/v2/integrations", Some("s"), None).await;
    assert_eq!(
        r.body["data"][0]["configuration"]["secret_key"],
        "***********_KEY"
    );
    assert!(!r.raw.contains("SOME_SECRET_KEY"));
}

#[tokio::test]
async fn bad_pagination_parameters_are_400_naming_the_parameter() {
    let app = app();
    for (query, param) in [
        ("page[limit]=0", "page[limit]"),
        ("page[limit]=101", "page[limit]"),
        ("page[limit]=ten", "page[limit]"),
        ("page[offset]=-3", "page[offset]"),
    ] {
        let r = send(
            &app,
            "GET",
            &format!("/v2/integrations?{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.body["errors"][0]["source"]["parameter"], param, "{query}");
    }
}

fn keyless_sqs(external_id: Option<&str>) -> Value {
    let mut configuration = json!({
        "url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
        "region": "eu-west-1",
        "role_arn": "arn:aws:iam::123456789012:role/herald-delivery-orders"
    });
    if let Some(id) = external_id {
        configuration["external_id"] = json!(id);
    }
    json!({"data": {"type": "integration", "integration_type": "aws_sqs", "name": "queue",
        "observes": ["order.paid"], "configuration": configuration}})
}

#[tokio::test]
async fn keyless_sqs_uses_the_external_id_herald_issued_to_the_store_and_no_other() {
    let app = app();
    // GIVEN each store reads its own external id, issued once and never chosen
    let read = |store: &'static str| {
        let app = app.clone();
        async move {
            let r = send(
                &app,
                "GET",
                "/v2/integrations/external-id",
                Some(store),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
            assert_eq!(r.body["data"]["type"], "integration-external-id");
            assert_eq!(r.body["data"]["session_tags"]["herald:store"], store);
            r.body["data"]["external_id"]
                .as_str()
                .expect("external_id")
                .to_owned()
        }
    };
    let mine = read("store-a").await;
    assert_eq!(read("store-a").await, mine, "stable");
    let theirs = read("store-b").await;
    assert_ne!(mine, theirs);
    assert!(mine.starts_with("herald-") && mine.len() == 39, "{mine}");

    // WHEN a keyless integration leaves the external id out, THEN Herald fills in the store's
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("store-a"),
        Some(keyless_sqs(None)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(
        r.body["data"]["configuration"]["external_id"],
        mine.as_str()
    );
    let path = format!(
        "/v2/integrations/{}",
        r.body["data"]["id"].as_str().expect("id")
    );

    // Sending the issued one is fine; another store's, or one of its own choosing, is refused.
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("store-a"),
        Some(keyless_sqs(Some(&mine))),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    for chosen in [theirs.as_str(), "my-own-choice"] {
        let r = send(
            &app,
            "POST",
            "/v2/integrations",
            Some("store-a"),
            Some(keyless_sqs(Some(chosen))),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
        assert_eq!(pointers(&r.body), ["/data/configuration/external_id"]);
        let r = send(
            &app,
            "PUT",
            &path,
            Some("store-a"),
            Some(
                json!({"data": {"type": "integration", "configuration": {"external_id": chosen}}}),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
        assert_eq!(pointers(&r.body), ["/data/configuration/external_id"]);
    }
    let r = send(&app, "GET", &path, Some("store-a"), None).await;
    assert_eq!(
        r.body["data"]["configuration"]["external_id"],
        mine.as_str()
    );
}

#[tokio::test]
async fn moving_a_webhook_to_a_new_url_needs_its_secret_again() {
    let app = app();
    let created = create(&app, "s", "hook").await;
    let path = format!("/v2/integrations/{}", created["id"].as_str().expect("id"));
    for configuration in [
        json!({"url": "https://attacker.example/collect"}),
        json!({"url": "https://attacker.example/collect", "secret_key": "***********_KEY"}),
    ] {
        let r = send(
            &app,
            "PUT",
            &path,
            Some("s"),
            Some(json!({"data": {"type": "integration", "configuration": configuration}})),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
        assert_eq!(pointers(&r.body), ["/data/configuration/secret_key"]);
    }
    let r = send(&app, "GET", &path, Some("s"), None).await;
    assert_eq!(
        r.body["data"]["configuration"]["url"],
        "https://ilovelamp.now.sh/send-shipped-email"
    );
    let r = send(
        &app,
        "PUT",
        &path,
        Some("s"),
        Some(json!({"data": {"type": "integration", "configuration": {
            "url": "https://new.example/hook", "secret_key": "SOME_SECRET_KEY"}}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body["data"]["configuration"]["url"],
        "https://new.example/hook"
    );
}

#[tokio::test]
async fn update_is_partial_and_keeps_a_secret_sent_back_masked() {
    let app = app();
    let created = create(&app, "s", "before").await;
    let path = format!("/v2/integrations/{}", created["id"].as_str().expect("id"));
    let r = send(
        &app,
        "PUT",
        &path,
        Some("s"),
        Some(
            json!({"data": {"type": "integration", "name": "after", "enabled": false,
            "configuration": {"url": "https://ilovelamp.now.sh/send-shipped-email", "secret_key": "***********_KEY"}}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let data = &r.body["data"];
    assert_eq!(data["name"], "after");
    assert_eq!(data["enabled"], false);
    assert_eq!(data["description"], created["description"]);
    assert_eq!(data["observes"], created["observes"]);
    assert_eq!(
        data["configuration"]["url"],
        "https://ilovelamp.now.sh/send-shipped-email"
    );
    assert_eq!(data["configuration"]["secret_key"], "***********_KEY");
    assert_eq!(
        data["meta"]["timestamps"]["created_at"],
        created["meta"]["timestamps"]["created_at"]
    );
    assert!(
        data["meta"]["timestamps"]["updated_at"].as_str()
            >= created["meta"]["timestamps"]["updated_at"].as_str()
    );

    // A new secret replaces the old one: its last four characters show.
    let r = send(
        &app,
        "PUT",
        &path,
        Some("s"),
        Some(json!({"data": {"type": "integration", "configuration": {"secret_key": "a-new-secret-9876"}}})),
    )
    .await;
    assert_eq!(
        r.body["data"]["configuration"]["secret_key"],
        "*************9876"
    );
}

#[tokio::test]
async fn update_can_change_the_type_only_with_a_full_configuration() {
    let app = app();
    let id = create(&app, "s", "x").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v2/integrations/{id}");
    let r = send(
        &app,
        "PUT",
        &path,
        Some("s"),
        Some(json!({"data": {"type": "integration", "integration_type": "aws_sqs"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(pointers(&r.body), vec!["/data/configuration"]);
    let r = send(
        &app,
        "PUT",
        &path,
        Some("s"),
        Some(
            json!({"data": {"type": "integration", "integration_type": "aws_sqs", "configuration": {
                "url": "https://sqs.eu-west-1.amazonaws.com/123456789/epcc-external-queue",
                "aws_access_key_id": "ASIAJLVYNHUWCPKOPSYQ",
                "aws_secret_access_key": "mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ",
                "region": "eu-west-1"
            }}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["data"]["integration_type"], "aws_sqs");
    assert_eq!(
        r.body["data"]["configuration"]["aws_access_key_id"],
        "****************PSYQ"
    );
    assert!(r.body["data"]["configuration"].get("secret_key").is_none());
}

#[tokio::test]
async fn delete_returns_204_then_404() {
    let app = app();
    let id = create(&app, "s", "x").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v2/integrations/{id}");
    let r = send(&app, "DELETE", &path, Some("s"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    assert_eq!(
        send(&app, "DELETE", &path, Some("s"), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, "GET", &path, Some("s"), None).await.status,
        StatusCode::NOT_FOUND
    );
    let put = send(
        &app,
        "PUT",
        &path,
        Some("s"),
        Some(json!({"data": {"type": "integration", "name": "back"}})),
    )
    .await;
    assert_eq!(
        put.status,
        StatusCode::NOT_FOUND,
        "an update never resurrects a deleted integration"
    );
}

#[tokio::test]
async fn validation_errors_are_422_with_one_error_per_problem() {
    let body = json!({"data": {"type": "integration", "integration_type": "webhook", "name": "",
        "observes": ["order.paid", "nope"], "configuration": {"url": "ftp://x"}}});
    let r = send(&app(), "POST", "/v2/integrations", None, Some(body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        pointers(&r.body),
        vec!["/data/name", "/data/observes/1", "/data/configuration/url"]
    );
    for e in r.body["errors"].as_array().expect("errors") {
        assert_eq!(e["status"], 422);
        assert_eq!(e["title"], "Failed Validation");
        assert!(!e["detail"].as_str().expect("detail").is_empty());
    }
}

#[tokio::test]
async fn plain_http_webhooks_are_refused_unless_the_deployment_allows_them() {
    let mut body = webhook("x");
    body["data"]["configuration"]["url"] = json!("http://example.com/hook");
    let r = send(&app(), "POST", "/v2/integrations", None, Some(body)).await;
    assert_eq!(pointers(&r.body), vec!["/data/configuration/url"]);
}

#[tokio::test]
async fn the_store_limit_refuses_the_next_create_with_a_clear_detail() {
    let app = app_with(3);
    for i in 0..3 {
        create(&app, "s", &format!("{i}")).await;
    }
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("s"),
        Some(webhook("one too many")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = r.body["errors"][0]["detail"].as_str().expect("detail");
    assert!(detail.contains("maximum of 3 integrations"), "{detail}");
    // Another store is not affected, and deleting one frees a place.
    create(&app, "other", "fine").await;
    let list = send(&app, "GET", "/v2/integrations", Some("s"), None).await;
    let id = list.body["data"][0]["id"].as_str().expect("id").to_owned();
    send(
        &app,
        "DELETE",
        &format!("/v2/integrations/{id}"),
        Some("s"),
        None,
    )
    .await;
    create(&app, "s", "fits again").await;
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let req = Request::builder()
        .method("POST")
        .uri("/v2/integrations")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"data\": "))
        .expect("request");
    let r = call(&app(), req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["errors"][0]["detail"]
        .as_str()
        .expect("detail")
        .contains("not valid JSON"));
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_is_a_415() {
    for ct in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ] {
        let mut req = Request::builder().method("POST").uri("/v2/integrations");
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let r = call(
            &app(),
            req.body(Body::from(webhook("x").to_string()))
                .expect("request"),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(r.body["errors"][0]["source"]["header"], "Content-Type");
    }
    for ct in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
        "Application/JSON",
    ] {
        let req = Request::builder()
            .method("POST")
            .uri("/v2/integrations")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(webhook("x").to_string()))
            .expect("request");
        assert_eq!(call(&app(), req).await.status, StatusCode::CREATED, "{ct}");
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413_whether_or_not_its_length_is_declared() {
    let big = format!(
        "{{\"data\": {{\"name\": \"{}\"}}}}",
        "x".repeat(herald_api::MAX_BODY_BYTES)
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v2/integrations")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .expect("request");
    assert_eq!(
        call(&app(), req).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Without a Content-Length header the limit applies while reading.
    let req = Request::builder()
        .method("POST")
        .uri("/v2/integrations")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .expect("request");
    let r = call(&app(), req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["errors"][0]["status"], 413);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_api_errors() {
    let app = app();
    let r = send(&app, "GET", "/v2/nothing-here", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["errors"][0]["status"], 404);
    let r = send(&app, "PATCH", "/v2/integrations", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["errors"][0]["status"], 405);
}

#[tokio::test]
async fn observable_events_lists_the_catalog() {
    let r = send(&app(), "GET", "/v2/observable-events", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let data = r.body["data"].as_array().expect("data");
    assert_eq!(data.len(), herald_core::catalog::all().len());
    assert_eq!(r.body["meta"]["results"]["total"], data.len());
    let paid = data
        .iter()
        .find(|e| e["id"] == "order.paid")
        .expect("order.paid listed");
    assert_eq!(
        paid,
        &json!({"type": "observable-event", "id": "order.paid", "resource": "order", "action": "paid", "legacy": false, "emitted_by": "platform"})
    );
}

#[tokio::test]
async fn the_seed_stomp_and_sqs_bodies_are_created_with_secrets_masked() {
    let app = app();
    let sqs = json!({"data": {
    "type": "integration", "name": "Cart updated notifications",
    "description": "Send an SQS message when a cart is updated", "enabled": true,
    "observes": ["cart.updated"], "integration_type": "aws_sqs",
    "configuration": {
        "url": "https://sqs.eu-west-1.amazonaws.com/123456789/epcc-external-queue",
        "aws_access_key_id": "ASIAJLVYNHUWCPKOPSYQ",
        "aws_secret_access_key": "mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ",
        "region": "eu-west-1"
    }}});
    let r = send(&app, "POST", "/v2/integrations", None, Some(sqs)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(
        r.body["data"]["configuration"],
        json!({
            "url": "https://sqs.eu-west-1.amazonaws.com/123456789/epcc-external-queue",
            "aws_access_key_id": "****************PSYQ",
            "aws_secret_access_key": "************************************pUSJ",
            "region": "eu-west-1"
        })
    );
}

#[tokio::test]
async fn replay_moves_only_this_integrations_dead_jobs_back_to_the_queue() {
    use herald_core::job::{DeliveryJob, Event};
    use herald_core::memory::MemoryQueue;
    use herald_core::ports::{JobQueue, JobSource, OutgoingJob};

    let store = Arc::new(MemoryIntegrationStore::new());
    // One receive, then the DLQ: jobs are dead after being received twice.
    let queue = Arc::new(MemoryQueue::new(std::time::Duration::ZERO, 1));
    let mut state = AppState::new(store, &settings(100));
    state.dead_letters = Some(queue.clone());
    let app = herald_api::router(state);
    let x = create(&app, "store-a", "x").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let y = create(&app, "store-a", "y").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let a = StoreId::parse("store-a").expect("store");
    let body = |integration: &str, n: usize| {
        DeliveryJob::new(
            &a,
            integration.parse().expect("uuid"),
            Event {
                id: format!("evt-{n}"),
                kind: "order.fulfilled".into(),
                occurred_at: chrono::Utc::now(),
                payload: json!({"data": {}}).into(),
            },
            chrono::Utc::now(),
        )
        .to_body()
    };
    let bodies = [body(&x, 1), body(&x, 2), body(&y, 3)];
    let entries: Vec<OutgoingJob> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| OutgoingJob {
            entry_id: i.to_string(),
            body: b.clone(),
            delay: std::time::Duration::ZERO,
        })
        .collect();
    assert!(queue.send_batch(&entries).await.expect("send").is_empty());
    // Received once (visibility 0: visible again at once), then moved to the DLQ.
    assert_eq!(
        queue
            .receive(10, std::time::Duration::ZERO)
            .await
            .expect("r")
            .len(),
        3
    );
    assert!(queue
        .receive(10, std::time::Duration::ZERO)
        .await
        .expect("r")
        .is_empty());
    assert_eq!(queue.dead_letters().len(), 3);

    let r = send(
        &app,
        "POST",
        &format!("/v2/integrations/{x}/replay"),
        Some("store-b"),
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another store cannot replay it"
    );
    let r = send(
        &app,
        "POST",
        &format!("/v2/integrations/{x}/replay"),
        Some("store-a"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["data"]["replayed"], 2);
    assert_eq!(
        r.body["data"]["scanned"], 2,
        "only this integration's dead letters are counted"
    );
    assert_eq!(r.body["data"]["complete"], true);
    assert_eq!(
        queue.dead_letters(),
        vec![bodies[2].clone()],
        "y's job stays"
    );
    let mut back: Vec<String> = queue
        .receive(10, std::time::Duration::ZERO)
        .await
        .expect("receive")
        .into_iter()
        .map(|m| {
            assert_eq!(m.receive_count, 1, "a fresh retry budget");
            m.body
        })
        .collect();
    back.sort();
    let mut expected = vec![bodies[0].clone(), bodies[1].clone()];
    expected.sort();
    assert_eq!(back, expected);

    // A disabled integration is not replayed into a discard.
    let off = send(
        &app,
        "PUT",
        &format!("/v2/integrations/{y}"),
        Some("store-a"),
        Some(json!({"data": {"type": "integration", "enabled": false}})),
    )
    .await;
    assert_eq!(off.status, StatusCode::OK);
    let r = send(
        &app,
        "POST",
        &format!("/v2/integrations/{y}/replay"),
        Some("store-a"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
    assert_eq!(r.body["errors"][0]["source"]["pointer"], "/data/enabled");
}

#[tokio::test]
async fn replay_without_a_dead_letter_queue_is_a_clear_503() {
    let app = app();
    let id = create(&app, "store-a", "x").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = send(
        &app,
        "POST",
        &format!("/v2/integrations/{id}/replay"),
        Some("store-a"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.raw);
    assert!(r.raw.contains("HERALD_DLQ_URL"));
}

#[tokio::test]
async fn internal_address_literals_are_refused_at_registration_with_a_pointer() {
    let mut s = settings(100);
    s.pipeline.address_guard = herald_core::net::guard::AddressGuard::strict();
    let app = herald_api::router(AppState::new(Arc::new(MemoryIntegrationStore::new()), &s));
    let hooks = [
        "https://127.0.0.1/hook",
        "https://127.1/hook",
        "https://2130706433/hook",
        "https://0x7f000001/hook",
        "https://0177.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://10.0.0.1/hook",
        "https://192.168.1.1/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
    ];
    for url in hooks {
        let mut body = webhook("ssrf");
        body["data"]["configuration"]["url"] = json!(url);
        let r = send(
            &app,
            "POST",
            "/v2/integrations",
            Some("store-a"),
            Some(body),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.raw
        );
        assert_eq!(pointers(&r.body), ["/data/configuration/url"], "{url}");
    }
    // A zone id is not a URL host at all.
    let mut body = webhook("zone");
    body["data"]["configuration"]["url"] = json!("https://[fe80::1%25eth0]/hook");
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("store-a"),
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    // STOMP brokers too, each address with its own pointer.
    let stomp = json!({"data": {
        "type": "integration", "integration_type": "stomp", "name": "broker",
        "observes": ["order.paid"],
        "configuration": {
            "addresses": ["stomp+ssl://broker.example.com:61614", "stomp://10.0.0.7:61613", "stomp://2130706433:61613"],
            "destination": "/queue/orders", "username": "u", "password": "p4ssw0rd-long"
        }
    }});
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("store-a"),
        Some(stomp),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    assert_eq!(
        pointers(&r.body),
        [
            "/data/configuration/addresses/1",
            "/data/configuration/addresses/2"
        ]
    );
    // An update cannot move a webhook onto an internal address either.
    let id = create(&app, "store-a", "public").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = send(
        &app,
        "PUT",
        &format!("/v2/integrations/{id}"),
        Some("store-a"),
        Some(json!({"data": {"type": "integration", "configuration": {"url": "https://169.254.169.254/", "secret_key": "SOME_SECRET_KEY"}}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    assert_eq!(pointers(&r.body), ["/data/configuration/url"]);
}

#[tokio::test]
async fn a_plain_stomp_broker_is_refused_at_registration_where_the_deployment_allows_only_tls() {
    // GIVEN a deployment without AllowPlainStomp
    let app = app_with(100);
    let stomp = |addresses: Value| {
        json!({"data": {
            "type": "integration", "integration_type": "stomp", "name": "broker",
            "observes": ["order.paid"],
            "configuration": {
                "addresses": addresses,
                "destination": "/queue/orders", "username": "u", "password": "p4ssw0rd-long"
            }
        }})
    };
    // WHEN a broker list names a plain address
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("store-a"),
        Some(stomp(json!([
            "stomp+ssl://broker.example.com:61614",
            "tcp://broker.example.com:61613"
        ]))),
    )
    .await;
    // THEN it is refused, pointing at that address
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    assert_eq!(
        r.body["errors"],
        json!([{
            "status": 422,
            "title": "Failed Validation",
            "detail": "must use TLS (stomp+ssl:// or ssl://): this deployment does not allow plain STOMP, which would send the broker password in clear text",
            "source": {"pointer": "/data/configuration/addresses/1"}
        }])
    );
    // AND TLS addresses alone are accepted
    let r = send(
        &app,
        "POST",
        "/v2/integrations",
        Some("store-a"),
        Some(stomp(json!([
            "stomp+ssl://broker.example.com:61614",
            "ssl://b.example.com"
        ]))),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
}

/// An attempt of `integration`'s job `n`, made `ms` after the epoch.
fn attempt_at(
    integration: uuid::Uuid,
    n: u32,
    succeeded: bool,
    ms: i64,
) -> herald_core::attempt::LogEntry {
    use herald_core::attempt::{Attempt, JobStatus, LogEntry};
    let at = chrono::DateTime::from_timestamp_millis(ms).expect("time");
    LogEntry {
        attempt: Attempt {
            id: uuid::Uuid::now_v7(),
            store_id: "s".into(),
            integration_id: integration,
            job_id: uuid::Uuid::from_u128(u128::from(n)),
            event_id: format!("evt-{n}"),
            event_type: "order.paid".into(),
            attempt: 1,
            succeeded,
            status_code: Some(if succeeded { 200 } else { 500 }),
            body: String::new(),
            error_detail: None,
            processing_time: 0.01,
            created_at: at,
        },
        status: if succeeded {
            JobStatus::Delivered
        } else {
            JobStatus::Retrying
        },
        enqueued_at: at,
        replay_of: None,
        archive: None,
    }
}

/// A router whose log holds `entries`, with one integration of store `s` (its id).
async fn app_with_log(entries: Vec<herald_core::attempt::LogEntry>) -> (Router, String) {
    use herald_core::memory::MemoryDeliveryLog;
    use herald_core::ports::DeliveryLog;
    let log = Arc::new(MemoryDeliveryLog::default());
    log.record(&entries).await.expect("record");
    let mut state = AppState::new(Arc::new(MemoryIntegrationStore::new()), &settings(100));
    state.log = log;
    let app = herald_api::router(state);
    let id = create(&app, "s", "hook").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    (app, id)
}

#[tokio::test]
async fn a_filter_that_does_not_parse_is_400_naming_the_filter_parameter_and_the_part() {
    let (app, id) = app_with_log(Vec::new()).await;
    for (path, filter, detail) in [
        (
            "/v2/integrations/logs".to_owned(),
            "eq(colour,red)",
            "`eq(colour,red)`: unknown field `colour`: this listing filters on succeeded, triggered_by, created_at",
        ),
        (
            format!("/v2/integrations/{id}/logs"),
            "eq(succeeded,false):eq(status,failed)",
            "`eq(status,failed)`: unknown field `status`: this listing filters on succeeded, triggered_by, created_at",
        ),
        (
            format!("/v2/integrations/{id}/jobs"),
            "eq(succeeded,false)",
            "`eq(succeeded,false)`: unknown field `succeeded`: this listing filters on status, triggered_by, created_at",
        ),
        (
            format!("/v2/integrations/{id}/jobs"),
            "ne(status,failed)",
            "`ne(status,failed)`: `status` takes only `eq`",
        ),
        (
            "/v2/integrations/logs".to_owned(),
            "ge(created_at,yesterday)",
            "`ge(created_at,yesterday)`: `created_at` takes an RFC 3339 time",
        ),
    ] {
        let r = send(&app, "GET", &format!("{path}?filter={filter}"), Some("s"), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{filter}: {}", r.raw);
        assert_eq!(r.body["errors"][0]["source"]["parameter"], "filter", "{filter}");
        assert_eq!(r.body["errors"][0]["detail"], detail, "{filter}");
    }
}

#[tokio::test]
async fn a_filtered_page_lists_what_the_filter_keeps_and_carries_it_in_every_link() {
    // GIVEN five failures among ten attempts
    let integration = uuid::Uuid::now_v7();
    let entries = (0..10u32)
        .map(|n| attempt_at(integration, n, n % 2 == 0, 1_000 * i64::from(n)))
        .collect();
    let (app, _) = app_with_log(entries).await;
    // WHEN the failures' second page is listed
    let r = send(
        &app,
        "GET",
        "/v2/integrations/logs?filter=eq(succeeded,false)&page[limit]=2&page[offset]=2",
        Some("s"),
        None,
    )
    .await;
    // THEN it holds the third and fourth newest failures, counted exactly, and every
    // link keeps the filter
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let events: Vec<_> = r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["event"]["id"].clone())
        .collect();
    assert_eq!(events, vec![json!("evt-5"), json!("evt-3")], "{}", r.raw);
    assert_eq!(
        r.body["meta"]["results"],
        json!({"total": 5, "lower_bound": false})
    );
    let link = |offset: usize| {
        format!("http://herald.test/v2/integrations/logs?page[limit]=2&page[offset]={offset}&filter=eq(succeeded,false)")
    };
    assert_eq!(
        r.body["links"],
        json!({"self": link(2), "first": link(0), "prev": link(0), "next": link(4), "last": link(4)})
    );
}

#[tokio::test]
async fn a_filtered_listing_that_spends_its_budget_links_next_to_where_its_scan_stopped() {
    // GIVEN three failures older than twenty thousand successes (more than a filtered
    // listing looks at)
    let integration = uuid::Uuid::now_v7();
    let mut entries: Vec<_> = (1..=3u32)
        .map(|n| attempt_at(integration, n, false, i64::from(n)))
        .collect();
    entries.extend((10..20_011u32).map(|n| attempt_at(integration, n, true, i64::from(n))));
    let (app, _) = app_with_log(entries).await;
    // WHEN the failures are listed
    let r = send(
        &app,
        "GET",
        "/v2/integrations/logs?filter=eq(succeeded,false)&page[limit]=2",
        Some("s"),
        None,
    )
    .await;
    // THEN none is found yet, the total is a lower bound, and next carries on before
    // the newest attempt the scan did not look at
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["data"], json!([]));
    assert_eq!(
        r.body["meta"]["results"],
        json!({"total": 0, "lower_bound": true})
    );
    let next = "http://herald.test/v2/integrations/logs?page[limit]=2&page[offset]=0&filter=eq(succeeded,false):lt(created_at,1970-01-01T00:00:00.010000001Z)";
    assert_eq!(r.body["links"]["next"], next);
    // AND following it finds the failures, newest first
    let r = send(
        &app,
        "GET",
        next.trim_start_matches("http://herald.test"),
        Some("s"),
        None,
    )
    .await;
    let events: Vec<_> = r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["event"]["id"].clone())
        .collect();
    assert_eq!(events, vec![json!("evt-3"), json!("evt-2")], "{}", r.raw);
    assert_eq!(
        r.body["meta"]["results"],
        json!({"total": 3, "lower_bound": false})
    );
    assert_eq!(
        r.body["links"]["next"],
        "http://herald.test/v2/integrations/logs?page[limit]=2&page[offset]=2&filter=eq(succeeded,false):lt(created_at,1970-01-01T00:00:00.010000001Z)"
    );
}
