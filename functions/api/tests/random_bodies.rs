//! Property tests: whatever body a client sends, the API answers with a 2xx or a
//! 4xx JSON:API error, never a 5xx and never a panic.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use herald_api::settings::Settings;
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::memory::MemoryIntegrationStore;
use herald_core::model::StoreId;
use herald_core::validate::Policy;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

fn app() -> axum::Router {
    let settings = Settings {
        pipeline: herald_core::config::PipelineSettings::memory(),
        tenancy: Tenancy::Header {
            default: StoreId::parse("default").expect("store"),
        },
        max_per_store: 100,
        policy: Policy {
            allow_http_webhooks: true,
            allow_plain_stomp: true,
        },
        public_url: None,
        portal: Default::default(),
    };
    herald_api::router(AppState::new(
        Arc::new(MemoryIntegrationStore::new()),
        &settings,
    ))
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "integration",
            "webhook",
            "aws_sqs",
            "stomp",
            "aws_eventbridge",
            "aws_sns",
            "arn:aws:events:eu-west-1:123456789012:event-bus/b",
            "arn:aws:sns:eu-west-1:123456789012:t.fifo",
            "order.paid",
            "https://example.com/x",
            "stomp+ssl://b:61614",
            "eu-west-1",
            "****1234",
            "",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "data",
            "type",
            "name",
            "description",
            "enabled",
            "integration_type",
            "observes",
            "configuration",
            "url",
            "secret_key",
            "region",
            "aws_access_key_id",
            "aws_secret_access_key",
            "role_arn",
            "external_id",
            "addresses",
            "destination",
            "username",
            "password",
            "links",
            "meta",
            "id",
        ])
        .prop_map(str::to_owned),
        "[a-z_/~]{0,12}",
    ]
}

/// A valid create body with one field replaced by an arbitrary value.
fn mutated_valid_body() -> impl Strategy<Value = Value> {
    let fields = prop::sample::select(vec![
        "/data/type",
        "/data/name",
        "/data/description",
        "/data/enabled",
        "/data/integration_type",
        "/data/observes",
        "/data/configuration",
        "/data/configuration/url",
        "/data/configuration/secret_key",
        "/data",
    ]);
    (fields, any_json()).prop_map(|(pointer, value)| {
        let mut body = json!({"data": {
            "type": "integration", "integration_type": "webhook", "name": "n", "description": "d",
            "enabled": true, "observes": ["order.paid"],
            "configuration": {"url": "https://example.com/hook", "secret_key": "0123456789abcdef"}
        }});
        if let Some(slot) = body.pointer_mut(pointer) {
            *slot = value;
        }
        body
    })
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any_json().prop_map(|v| v.to_string().into_bytes()),
        mutated_valid_body().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn status_of(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    rt.block_on(async {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("infallible");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("every response body is JSON")
        };
        (status, json)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn random_create_bodies_never_produce_a_5xx(body in any_body()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let (status, json) = status_of(&rt, &app(), "POST", "/v2/integrations", body);
        prop_assert!(status == 201 || (400..500).contains(&status), "status {status}: {json}");
        if status != 201 {
            prop_assert!(json["errors"][0]["detail"].is_string(), "{json}");
        }
    }

    #[test]
    fn random_update_bodies_never_produce_a_5xx(body in any_body()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let app = app();
        let valid = json!({"data": {"type": "integration", "integration_type": "webhook", "name": "n",
            "configuration": {"url": "https://example.com/hook"}}});
        let (created, doc) = status_of(&rt, &app, "POST", "/v2/integrations", valid.to_string().into_bytes());
        prop_assert_eq!(created, 201);
        let id = doc["data"]["id"].as_str().expect("id").to_owned();
        let (status, json) = status_of(&rt, &app, "PUT", &format!("/v2/integrations/{id}"), body);
        prop_assert!(status == 200 || (400..500).contains(&status), "status {status}: {json}");
    }
}
