//! Every `events/ingest-*.json` runs through the ingest handler (embedded backend):
//! direct invocations (one event, a batch) and the HTTP event API Gateway sends; and
//! the handler takes nothing else (no other route, no other payload).

use std::path::PathBuf;
use std::sync::Arc;

use herald_core::access::StoreAccess;
use herald_core::config::PipelineSettings;
use herald_core::model::Integration;
use herald_core::wiring::Components;
use herald_ingest::{handle, Deps};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(events_dir().join(name)).expect("event file"))
        .expect("JSON")
}

struct World {
    deps: Deps,
    components: Components,
}

async fn world() -> World {
    world_with(StoreAccess::default()).await
}

async fn world_with(access: StoreAccess) -> World {
    let components = Components::build(&PipelineSettings::memory(), false)
        .await
        .expect("components");
    let hook = Integration {
        observes: vec!["order.paid".into(), "cart.updated".into()],
        ..herald_core::testkit::webhook_to("orders and carts", "default", "http://127.0.0.1:9/hook")
    };
    components
        .integrations
        .insert(&hook, 100)
        .await
        .expect("seed");
    let ingest = Arc::new(components.ingest().expect("ingest"));
    World {
        deps: Deps { ingest, access },
        components,
    }
}

async fn invoke(w: &World, payload: Value) -> Value {
    handle(&w.deps, LambdaEvent::new(payload, Context::default()))
        .await
        .expect("handler")
}

async fn queued(w: &World) -> usize {
    let source = w.components.source.clone().expect("source");
    source
        .receive(100, std::time::Duration::ZERO)
        .await
        .expect("receive")
        .len()
}

#[tokio::test]
async fn every_ingest_event_file_is_accepted_with_its_jobs() {
    let mut seen = 0;
    for entry in std::fs::read_dir(events_dir()).expect("events/") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("name");
        if !name.starts_with("ingest-") {
            continue;
        }
        seen += 1;
        let w = world().await;
        let out = invoke(&w, read(&name)).await;
        let (statuses, jobs): (Vec<String>, u64) = if name == "ingest-http.json" {
            assert_eq!(out["statusCode"], 202, "{name}: {out}");
            let body: Value =
                serde_json::from_str(out["body"].as_str().expect("body")).expect("JSON");
            let data = body["data"].as_array().expect("data").clone();
            (
                data.iter()
                    .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
                    .collect(),
                data.iter().map(|d| d["jobs"].as_u64().unwrap_or(0)).sum(),
            )
        } else {
            let data = out["data"].as_array().expect("data").clone();
            (
                data.iter()
                    .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
                    .collect(),
                data.iter().map(|d| d["jobs"].as_u64().unwrap_or(0)).sum(),
            )
        };
        assert!(statuses.iter().all(|s| s == "accepted"), "{name}: {out}");
        let expected_jobs = match name.as_str() {
            "ingest-direct-single.json" => 1,
            "ingest-direct-batch.json" => 2, // order.paid + cart.updated; address.updated is not observed
            "ingest-http.json" => 2,
            other => panic!("events/{other} has no expectation in this test"),
        };
        assert_eq!(jobs, expected_jobs, "{name}");
        assert_eq!(queued(&w).await as u64, expected_jobs, "{name}");
    }
    assert_eq!(seen, 3);
}

#[tokio::test]
async fn a_direct_event_without_a_store_is_reported_invalid_with_its_pointer() {
    let w = world().await;
    let mut event = read("ingest-direct-single.json");
    event.as_object_mut().expect("object").remove("store_id");
    let out = invoke(&w, event).await;
    assert_eq!(out["data"][0]["status"], "invalid");
    assert_eq!(
        out["data"][0]["errors"][0]["source"]["pointer"],
        "/store_id"
    );
    assert_eq!(queued(&w).await, 0);
}

#[tokio::test]
async fn the_http_event_needs_the_store_header_under_iam() {
    let w = world().await;
    let mut event = read("ingest-http.json");
    event["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("x-store-id");
    let out = invoke(&w, event).await;
    assert_eq!(out["statusCode"], 400);
    assert_eq!(queued(&w).await, 0);
}

#[tokio::test]
async fn the_same_file_sent_twice_queues_its_jobs_once() {
    let w = world().await;
    invoke(&w, read("ingest-direct-batch.json")).await;
    let again = invoke(&w, read("ingest-direct-batch.json")).await;
    assert!(
        again["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|d| d["status"] == "duplicate"),
        "{again}"
    );
    assert_eq!(queued(&w).await, 2);
}

/// The HTTP event of `events/ingest-http.json`, re-aimed at another route.
fn http_event(method: &str, path: &str) -> Value {
    let mut event = read("ingest-http.json");
    event["routeKey"] = format!("{method} {path}").into();
    event["rawPath"] = path.into();
    event["requestContext"]["routeKey"] = format!("{method} {path}").into();
    event["requestContext"]["http"]["method"] = method.into();
    event["requestContext"]["http"]["path"] = path.into();
    event.as_object_mut().expect("object").remove("body");
    event
}

#[tokio::test]
async fn an_http_event_for_any_route_but_post_events_is_refused_without_listing_anything() {
    let w = world().await;
    for (method, path, status) in [
        ("GET", "/v2/integrations", 404),
        ("GET", "/v2/integrations/logs", 404),
        ("GET", "/v2/observable-events", 404),
        ("GET", "/v2/events", 405),
    ] {
        let out = invoke(&w, http_event(method, path)).await;
        assert_eq!(out["statusCode"], status, "{method} {path}: {out}");
        let body: Value = serde_json::from_str(out["body"].as_str().expect("body")).expect("JSON");
        assert!(body.get("data").is_none(), "{method} {path}: {body}");
        assert_eq!(
            body["errors"][0]["status"], status,
            "{method} {path}: {body}"
        );
    }
    assert_eq!(queued(&w).await, 0);
}

async fn invoke_err(w: &World, payload: Value) -> String {
    handle(&w.deps, LambdaEvent::new(payload, Context::default()))
        .await
        .expect_err("refused")
        .to_string()
}

#[tokio::test]
async fn a_payload_of_no_known_shape_fails_the_invocation_with_what_the_function_takes() {
    let w = world().await;
    let takes = "the ingest function takes an API Gateway HTTP API (payload 2.0) event for POST /v2/events, one event object, or a list of 1 to 100 event objects";
    let mut rest_v1 = read("ingest-http.json");
    rest_v1["version"] = "1.0".into();
    for (payload, expected) in [
        (Value::from("order.paid"), format!("a JSON string: {takes}")),
        (Value::Null, format!("a JSON null: {takes}")),
        (serde_json::json!([]), format!("an empty list: {takes}")),
        (
            serde_json::json!({"Records": []}),
            format!("an object with none of the event fields (id, type, store_id, occurred_at, payload): {takes}"),
        ),
        (
            rest_v1,
            format!("an API Gateway event of another kind than HTTP API payload 2.0: {takes}"),
        ),
        (
            Value::Array(vec![read("ingest-direct-single.json"); 101]),
            "a list of 101 events: at most 100 events per invocation".to_owned(),
        ),
    ] {
        assert_eq!(invoke_err(&w, payload).await, expected);
    }
    assert_eq!(queued(&w).await, 0);
}

const MAPPED: &str = "arn:aws:sts::123456789012:assumed-role/commerce-backend/commerce";

/// `events/ingest-http.json` signed by `caller` (none: no IAM identity).
fn signed_by(caller: Option<&str>) -> Value {
    let mut event = read("ingest-http.json");
    assert_eq!(
        event["requestContext"]["authorizer"]["iam"]["userArn"],
        MAPPED
    );
    match caller {
        Some(arn) => event["requestContext"]["authorizer"]["iam"]["userArn"] = arn.into(),
        None => {
            event["requestContext"]
                .as_object_mut()
                .expect("context")
                .remove("authorizer");
        }
    }
    event
}

fn errors(out: &Value) -> Value {
    serde_json::from_str(out["body"].as_str().expect("body")).expect("JSON")
}

#[tokio::test]
async fn a_mapped_caller_posts_events_for_its_store() {
    let w = world_with(
        StoreAccess::parse("arn:aws:sts::123456789012:assumed-role/commerce-*/*=other|default")
            .expect("mapping"),
    )
    .await;
    let out = invoke(&w, signed_by(Some(MAPPED))).await;
    assert_eq!(out["statusCode"], 202, "{out}");
    assert_eq!(queued(&w).await, 2);
}

#[tokio::test]
async fn a_caller_not_mapped_to_the_store_it_names_gets_403_and_nothing_is_queued() {
    let w = world_with(
        StoreAccess::parse(&format!(
            "{MAPPED}=other;arn:aws:sts::123456789012:assumed-role/backoffice/*=default"
        ))
        .expect("mapping"),
    )
    .await;
    for caller in [
        Some(MAPPED),
        Some("arn:aws:sts::123456789012:assumed-role/commerce-backend-2/commerce"),
        None,
    ] {
        let out = invoke(&w, signed_by(caller)).await;
        assert_eq!(out["statusCode"], 403, "{caller:?}: {out}");
        let body = errors(&out);
        assert_eq!(body["errors"][0]["status"], 403, "{caller:?}: {body}");
        assert_eq!(
            body["errors"][0]["source"]["header"], "X-Store-Id",
            "{caller:?}: {body}"
        );
    }
    assert_eq!(queued(&w).await, 0);
}

#[tokio::test]
async fn without_a_mapping_any_iam_caller_may_name_any_store() {
    let w = world().await;
    let out = invoke(
        &w,
        signed_by(Some("arn:aws:sts::999999999999:assumed-role/anyone/x")),
    )
    .await;
    assert_eq!(out["statusCode"], 202, "{out}");
    assert_eq!(queued(&w).await, 2);
}

#[tokio::test]
async fn the_http_event_answers_bad_bodies_as_the_api_router_does() {
    let w = world().await;
    let mut not_json = read("ingest-http.json");
    not_json["headers"]["content-type"] = "text/plain".into();
    let mut unknown_type = read("ingest-http.json");
    unknown_type["body"] = r#"{"data": {"type": "order.lost"}}"#.into();
    for (event, status, source) in [
        (not_json, 415, serde_json::json!({"header": "Content-Type"})),
        (
            unknown_type,
            422,
            serde_json::json!({"pointer": "/data/type"}),
        ),
    ] {
        let out = invoke(&w, event).await;
        assert_eq!(out["statusCode"], status, "{out}");
        assert_eq!(errors(&out)["errors"][0]["source"], source, "{out}");
    }
    assert_eq!(queued(&w).await, 0);
}
