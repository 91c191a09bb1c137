//! Herald's `delivery` attribute and the webhook secret rotation, through the API
//! with the embedded pipeline, delivering to a receiver on 127.0.0.1: what the
//! receiver sees is what a store's endpoint would see.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use herald_core::config::PipelineSettings;
use herald_core::model::{StoreId, Target};
use herald_core::ports::ReplaceOutcome;
use herald_core::signing;
use herald_core::wiring::Components;
use serde_json::{json, Value};

use common::send;

async fn app() -> (Router, Components) {
    // The receiver listens on plain http, on loopback (which the embedded pipeline's
    // guard admits, as the dev server's does).
    common::embedded_app(&PipelineSettings::memory(), true, false).await
}

/// The requests a receiver on 127.0.0.1 saw: headers and body.
type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn record(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.lock().expect("lock").push((headers, body));
    StatusCode::NO_CONTENT
}

/// A receiver answering 204 to every `POST /hook`; its URL and what it saw.
async fn receiver() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/hook", post(record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn webhook(url: &str, secret: &str, delivery: Option<Value>) -> Value {
    let mut body = json!({"data": {
        "type": "integration", "integration_type": "webhook", "name": "hook", "enabled": true,
        "observes": ["order.paid"],
        "configuration": {"url": url, "secret_key": secret}
    }});
    if let Some(d) = delivery {
        body["data"]["delivery"] = d;
    }
    body
}

async fn create(app: &Router, body: Value) -> Value {
    let (status, created) = send(app, "POST", "/v2/integrations", "s1", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["data"].clone()
}

/// One test delivery of integration `id`; the request the receiver saw for it.
async fn deliver_once(app: &Router, id: &str, seen: &Seen) -> (HeaderMap, Bytes) {
    let before = seen.lock().expect("lock").len();
    let (status, attempt) = send(
        app,
        "POST",
        &format!("/v2/integrations/{id}/test"),
        "s1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{attempt}");
    assert_eq!(attempt["data"]["succeeded"], json!(true), "{attempt}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), before + 1);
    seen[before].clone()
}

fn header_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

/// Whether `secret` verifies the request's `webhook-signature`.
fn verifies(secret: &str, (headers, body): &(HeaderMap, Bytes)) -> bool {
    let id = header_of(headers, "webhook-id").expect("webhook-id");
    let ts: i64 = header_of(headers, "webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .expect("number");
    let signature = header_of(headers, "webhook-signature").expect("webhook-signature");
    signing::verify(secret, &id, ts, body, &signature)
}

/// The `v1,` signatures of a request.
fn signatures(headers: &HeaderMap) -> usize {
    header_of(headers, "webhook-signature")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| s.starts_with("v1,"))
        .count()
}

fn pointers(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["source"]["pointer"].as_str().unwrap_or("-").to_owned())
        .collect()
}

const SECRET: &str = "an-old-shared-secret";

#[tokio::test]
async fn with_secret_header_false_deliveries_are_signed_but_never_carry_the_secret() {
    // GIVEN two webhooks with one secret: one as Elastic Path has it, one with
    // `delivery.secret_header: false`
    let (app, _components) = app().await;
    let (url, seen) = receiver().await;
    let plain = create(&app, webhook(&url, SECRET, None)).await;
    let quiet = create(
        &app,
        webhook(&url, SECRET, Some(json!({"secret_header": false}))),
    )
    .await;
    assert!(plain.get("delivery").is_none(), "{plain}");
    assert_eq!(quiet["delivery"], json!({"secret_header": false}));

    // WHEN each delivers
    let sent_plain = deliver_once(&app, plain["id"].as_str().expect("id"), &seen).await;
    let sent_quiet = deliver_once(&app, quiet["id"].as_str().expect("id"), &seen).await;

    // THEN the first carries the secret, the second does not; both verify with it
    assert_eq!(
        header_of(&sent_plain.0, "x-moltin-secret-key").as_deref(),
        Some(SECRET)
    );
    assert_eq!(header_of(&sent_quiet.0, "x-moltin-secret-key"), None);
    assert!(verifies(SECRET, &sent_plain));
    assert!(verifies(SECRET, &sent_quiet));
}

#[tokio::test]
async fn delivery_options_change_field_by_field_and_null_clears_them() {
    let (app, _components) = app().await;
    let created = create(
        &app,
        webhook(
            "https://example.com/hook",
            SECRET,
            Some(json!({"secret_header": false})),
        ),
    )
    .await;
    let uri = format!("/v2/integrations/{}", created["id"].as_str().expect("id"));
    let put = |delivery: Value| json!({"data": {"type": "integration", "delivery": delivery}});

    let (status, updated) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(put(json!({"retry_window_minutes": 120}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["data"]["delivery"],
        json!({"secret_header": false, "retry_window_minutes": 120})
    );
    let (_, updated) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(put(json!({"secret_header": null}))),
    )
    .await;
    assert_eq!(
        updated["data"]["delivery"],
        json!({"retry_window_minutes": 120})
    );
    let (_, updated) = send(&app, "PUT", &uri, "s1", Some(put(Value::Null))).await;
    assert!(updated["data"].get("delivery").is_none(), "{updated}");
    let (_, read) = send(&app, "GET", &uri, "s1", None).await;
    assert!(read["data"].get("delivery").is_none(), "{read}");
}

#[tokio::test]
async fn a_rate_limit_of_any_target_type_is_stored_shown_and_cleared_by_null() {
    // GIVEN an SQS integration created with a rate limit at its upper bound
    let (app, _components) = app().await;
    let sqs = json!({"data": {
        "type": "integration", "integration_type": "aws_sqs", "name": "q",
        "observes": ["order.paid"], "delivery": {"max_per_second": 1000},
        "configuration": {"url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
            "region": "eu-west-1", "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    }});
    let (status, created) = send(&app, "POST", "/v2/integrations", "s1", Some(sqs)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["delivery"], json!({"max_per_second": 1000}));
    let uri = format!(
        "/v2/integrations/{}",
        created["data"]["id"].as_str().expect("id")
    );
    let put = |delivery: Value| json!({"data": {"type": "integration", "delivery": delivery}});

    // WHEN it is lowered to the lower bound, alongside another option
    let (status, updated) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(put(
            json!({"max_per_second": 1, "retry_window_minutes": 60}),
        )),
    )
    .await;
    // THEN both show, and read back
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["data"]["delivery"],
        json!({"retry_window_minutes": 60, "max_per_second": 1})
    );
    let (_, read) = send(&app, "GET", &uri, "s1", None).await;
    assert_eq!(
        read["data"]["delivery"],
        json!({"retry_window_minutes": 60, "max_per_second": 1})
    );

    // WHEN it is set to null THEN the limit is gone and the other option stays
    let (_, updated) = send(
        &app,
        "PUT",
        &uri,
        "s1",
        Some(put(json!({"max_per_second": null}))),
    )
    .await;
    assert_eq!(
        updated["data"]["delivery"],
        json!({"retry_window_minutes": 60})
    );
}

#[tokio::test]
async fn bad_delivery_values_are_422_with_a_pointer_to_each() {
    let (app, _components) = app().await;
    let cases = [
        (json!("fast"), vec!["/data/delivery"]),
        (
            json!({"secret_header": "no", "retry_window_minutes": 29, "retries": 3}),
            vec![
                "/data/delivery/retries",
                "/data/delivery/secret_header",
                "/data/delivery/retry_window_minutes",
            ],
        ),
        (
            json!({"retry_window_minutes": 1441}),
            vec!["/data/delivery/retry_window_minutes"],
        ),
        (
            json!({"retry_window_minutes": 60.5}),
            vec!["/data/delivery/retry_window_minutes"],
        ),
        (
            json!({"retry_window_minutes": -30}),
            vec!["/data/delivery/retry_window_minutes"],
        ),
        (
            json!({"max_per_second": 0}),
            vec!["/data/delivery/max_per_second"],
        ),
        (
            json!({"max_per_second": 1001}),
            vec!["/data/delivery/max_per_second"],
        ),
        (
            json!({"max_per_second": 2.5}),
            vec!["/data/delivery/max_per_second"],
        ),
        (
            json!({"max_per_second": "50"}),
            vec!["/data/delivery/max_per_second"],
        ),
        (
            json!({"max_per_second": -1}),
            vec!["/data/delivery/max_per_second"],
        ),
    ];
    for (delivery, expected) in cases {
        let (status, body) = send(
            &app,
            "POST",
            "/v2/integrations",
            "s1",
            Some(webhook("https://example.com/hook", SECRET, Some(delivery))),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(pointers(&body), expected, "{body}");
    }
    // secret_header means nothing to a queue
    let sqs = json!({"data": {
        "type": "integration", "integration_type": "aws_sqs", "name": "q",
        "observes": ["order.paid"], "delivery": {"secret_header": false},
        "configuration": {"url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
            "region": "eu-west-1", "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    }});
    let (status, body) = send(&app, "POST", "/v2/integrations", "s1", Some(sqs)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(pointers(&body), ["/data/delivery/secret_header"]);
}

#[tokio::test]
async fn a_rotation_returns_its_generated_secret_once_and_signs_with_both_during_the_overlap() {
    // GIVEN a webhook with a secret
    let (app, _components) = app().await;
    let (url, seen) = receiver().await;
    let created = create(&app, webhook(&url, SECRET, None)).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let rotate = format!("/v2/integrations/{id}/rotate-secret");

    // WHEN its secret is rotated without a body
    let (status, rotated) = send(&app, "POST", &rotate, "s1", None).await;

    // THEN the answer holds the new secret in clear, once, and the integration with
    // every secret masked and when the overlap ends (a day from now)
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["meta"]["secret_key"]
        .as_str()
        .expect("the generated secret")
        .to_owned();
    assert!(new.starts_with("whsec_") && new.len() == 50, "{new}");
    let masked = herald_core::mask::mask(&new);
    assert_eq!(
        rotated["data"]["configuration"]["secret_key"],
        json!(masked)
    );
    let rotation = &rotated["data"]["meta"]["secret_rotation"];
    assert_eq!(
        rotation["previous_secret_key"],
        json!(herald_core::mask::mask(SECRET))
    );
    let ends: chrono::DateTime<chrono::Utc> = rotation["ends_at"]
        .as_str()
        .expect("ends_at")
        .parse()
        .expect("time");
    let left = ends - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(1430) && left <= chrono::Duration::minutes(1440),
        "{left}"
    );
    let (_, read) = send(&app, "GET", &format!("/v2/integrations/{id}"), "s1", None).await;
    assert!(!read.to_string().contains(&new), "{read}");
    assert!(read.get("meta").is_none(), "{read}");
    assert_eq!(read["data"]["meta"]["secret_rotation"], *rotation);

    // WHEN it delivers during the overlap
    let sent = deliver_once(&app, &id, &seen).await;

    // THEN it carries one signature per secret, each verifying, and the new secret
    assert_eq!(signatures(&sent.0), 2);
    assert!(verifies(&new, &sent));
    assert!(verifies(SECRET, &sent));
    assert_eq!(
        header_of(&sent.0, "x-moltin-secret-key").as_deref(),
        Some(new.as_str())
    );
}

#[tokio::test]
async fn a_rotation_to_a_chosen_secret_without_overlap_signs_with_that_secret_alone() {
    let (app, _components) = app().await;
    let (url, seen) = receiver().await;
    let created = create(&app, webhook(&url, SECRET, None)).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let body = json!({"data": {"type": "secret-rotation", "secret_key": "a-new-shared-secret", "overlap_minutes": 0}});
    let (status, rotated) = send(
        &app,
        "POST",
        &format!("/v2/integrations/{id}/rotate-secret"),
        "s1",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert!(
        rotated.get("meta").is_none(),
        "a chosen secret is not echoed"
    );
    assert!(rotated["data"]["meta"].get("secret_rotation").is_none());

    let sent = deliver_once(&app, &id, &seen).await;
    assert_eq!(signatures(&sent.0), 1);
    assert!(verifies("a-new-shared-secret", &sent));
    assert!(!verifies(SECRET, &sent));
}

#[tokio::test]
async fn bad_rotations_are_422_with_pointers_409_for_a_queue_and_404_for_another_store() {
    let (app, _components) = app().await;
    let created = create(&app, webhook("https://example.com/hook", SECRET, None)).await;
    let rotate = format!(
        "/v2/integrations/{}/rotate-secret",
        created["id"].as_str().expect("id")
    );
    let cases = [
        (json!([1]), vec![""]),
        (json!({"data": "x"}), vec!["/data"]),
        (
            json!({"data": {"type": "rotation", "secret_key": "", "overlap_minutes": 10081, "when": 1}}),
            vec![
                "/data/when",
                "/data/type",
                "/data/secret_key",
                "/data/overlap_minutes",
            ],
        ),
        (
            json!({"data": {"secret_key": 7, "overlap_minutes": -1}}),
            vec!["/data/secret_key", "/data/overlap_minutes"],
        ),
        (
            json!({"data": {"secret_key": SECRET}}),
            vec!["/data/secret_key"],
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = send(&app, "POST", &rotate, "s1", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(pointers(&answer), expected, "{answer}");
    }
    // Another store's integration does not exist for the caller.
    let (status, _) = send(&app, "POST", &rotate, "s2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was rotated by any of these.
    let (_, read) = send(
        &app,
        "GET",
        &rotate.replace("/rotate-secret", ""),
        "s1",
        None,
    )
    .await;
    assert!(read["data"]["meta"].get("secret_rotation").is_none());
    assert_eq!(
        read["data"]["meta"]["timestamps"],
        created["meta"]["timestamps"]
    );

    // A queue has no secret to rotate.
    let stomp = json!({"data": {
        "type": "integration", "integration_type": "stomp", "name": "q", "observes": ["order.paid"],
        "configuration": {"addresses": ["stomp+ssl://broker.example.com:61614"],
            "destination": "/queue/orders", "username": "u", "password": "a-password"}
    }});
    let queue = create(&app, stomp).await;
    let (status, answer) = send(
        &app,
        "POST",
        &format!(
            "/v2/integrations/{}/rotate-secret",
            queue["id"].as_str().expect("id")
        ),
        "s1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(
        answer["errors"][0]["detail"],
        json!("only a webhook integration has a secret to rotate; this one is stomp")
    );
}

#[tokio::test]
async fn after_the_overlap_a_delivery_carries_one_signature_and_the_old_secret_is_gone() {
    // GIVEN a rotated webhook whose overlap ended a minute ago (set through the store)
    let (app, components) = app().await;
    let (url, seen) = receiver().await;
    let created = create(&app, webhook(&url, SECRET, None)).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, rotated) = send(
        &app,
        "POST",
        &format!("/v2/integrations/{id}/rotate-secret"),
        "s1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["meta"]["secret_key"]
        .as_str()
        .expect("secret")
        .to_owned();
    let store = StoreId::parse("s1").expect("store");
    let uuid = id.parse().expect("uuid");
    let mut stored = components
        .integrations
        .get(&store, uuid)
        .await
        .expect("get")
        .expect("found");
    let Target::Webhook(config) = &mut stored.target else {
        panic!("a webhook")
    };
    let retiring = config.retiring.as_mut().expect("a retiring secret");
    assert_eq!(retiring.secret.expose(), SECRET);
    retiring.until = chrono::Utc::now() - chrono::Duration::minutes(1);
    stored.version += 1;
    let replaced = components
        .integrations
        .replace(&stored, stored.version - 1)
        .await
        .expect("replace");
    assert_eq!(replaced, ReplaceOutcome::Replaced);

    // WHEN it delivers
    let sent = deliver_once(&app, &id, &seen).await;

    // THEN one signature, the new secret's; the rotation is no longer shown, and the
    // store holds the old secret no more
    assert_eq!(signatures(&sent.0), 1);
    assert!(verifies(&new, &sent));
    assert!(!verifies(SECRET, &sent));
    let (_, read) = send(&app, "GET", &format!("/v2/integrations/{id}"), "s1", None).await;
    assert!(
        read["data"]["meta"].get("secret_rotation").is_none(),
        "{read}"
    );
    let stored = components
        .integrations
        .get(&store, uuid)
        .await
        .expect("get")
        .expect("found");
    let Target::Webhook(config) = &stored.target else {
        panic!("a webhook")
    };
    assert_eq!(config.retiring, None);
}
