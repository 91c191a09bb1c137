//! Elastic Path's delivery contract, from its published examples (`tests/ep/`, taken
//! verbatim from its public Integrations OpenAPI): Herald, given the same event,
//! delivers the same JSON (the example's ids are given to Herald, so only what Herald
//! deliberately does otherwise is set aside, each said where it is). Webhooks go to
//! a receiver on 127.0.0.1, queue messages are read back from moto's SQS
//! (`MOTO_ENDPOINT`, which `make test` sets), from ActiveMQ (`infra/activemq.sh
//! start`, which `make test` runs) and from a loopback STOMP sink.
//!
//! Then an existing consumer, written only from Elastic Path's document, reads
//! Herald's SQS messages and STOMP frames.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use herald_core::attempt::Outcome;
use herald_core::aws::local::moto_config;
use herald_core::delivery::sqs::SqsDeliverer;
use herald_core::delivery::stomp::StompDeliverer;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::DeliverTo;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{
    Integration, Secret, SqsAuth, SqsConfig, StompConfig, Target, WebhookConfig,
};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_testkit::stomp::StompSink;
use serde_json::{json, Value};
use uuid::Uuid;

/// One of Elastic Path's examples.
fn example(name: &str) -> Value {
    let path = format!("{}/tests/ep/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("example")).expect("JSON")
}

fn integration(
    id: &str,
    store: &str,
    name: &str,
    description: &str,
    target: Target,
) -> Integration {
    Integration {
        id: Uuid::parse_str(id).expect("uuid"),
        description: description.into(),
        target,
        ..herald_core::testkit::webhook(name, store, &[], true)
    }
}

/// The job for event `id` of type `kind` with `payload`, for `integration`.
fn job(integration: &Integration, id: &str, kind: &str, payload: Value) -> DeliveryJob {
    let event = Event {
        id: id.into(),
        kind: kind.into(),
        occurred_at: Utc::now(),
        payload: payload.into(),
    };
    DeliveryJob::new(&integration.store_id, integration.id, event, Utc::now())
}

fn loopback() -> AddressGuard {
    AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")])
}

/// A webhook receiver on 127.0.0.1 that keeps the bodies it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    async fn keep(State(seen): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes) -> &'static str {
        seen.lock().expect("lock").push(body);
        "ok"
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/hook", post(keep))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// Delivers Elastic Path's webhook example's event to a receiver, as the example's
/// integration, and returns the body received.
async fn webhook_body_for(ep: &Value, payload: Value) -> Value {
    let (url, seen) = receiver().await;
    let i = integration(
        ep["integration"]["id"].as_str().expect("id"),
        "s",
        ep["integration"]["name"].as_str().expect("name"),
        ep["integration"]["description"]
            .as_str()
            .expect("description"),
        Target::Webhook(WebhookConfig {
            url,
            secret_key: Some(Secret::new("secret_squirrel")),
            retiring: None,
        }),
    );
    let j = job(
        &i,
        ep["id"].as_str().expect("id"),
        ep["triggered_by"].as_str().expect("kind"),
        payload,
    );
    let result = WebhookDeliverer::new(loopback(), Duration::from_secs(5))
        .expect("client")
        .deliver(&i, webhook_config(&i), &j, 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    let bodies = seen.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 1);
    serde_json::from_slice(&bodies[0]).expect("JSON body")
}

/// Elastic Path's webhook example without its `configuration`: Herald never sends an
/// integration's configuration (its secret would travel in every body).
fn without_configuration(mut ep: Value) -> Value {
    ep.as_object_mut()
        .expect("object")
        .remove("configuration")
        .expect("the example has a configuration");
    ep
}

#[tokio::test]
async fn the_order_paid_webhook_body_is_elastic_paths_example() {
    // GIVEN Elastic Path's order.paid example, and its payload as the event's
    let ep = example("order-paid-webhook");
    // WHEN Herald delivers that event to a webhook
    let body = webhook_body_for(&ep, ep["payload"].clone()).await;
    // THEN the body is the example, `resources` (the payload as a string) included
    assert_eq!(body, without_configuration(ep.clone()));
    assert_eq!(body["resources"], ep["resources"]);
}

#[tokio::test]
async fn the_product_deleted_webhook_body_is_elastic_paths_example() {
    // GIVEN Elastic Path's product.deleted example; the event carries the whole product
    let ep = example("product-deleted-webhook");
    let product = json!({"data": {"type": "product", "id": ep["payload"]["id"], "name": "Lamp",
        "sku": "LAMP-1"}, "included": {"files": [{"id": "f1"}]}});
    // WHEN Herald delivers it
    let body = webhook_body_for(&ep, product).await;
    // THEN only the type and id go out: `payload` {type, id}, `resources` {id, type}
    assert_eq!(
        serde_json::to_string(&body).expect("json"),
        serde_json::to_string(&without_configuration(ep)).expect("json")
    );
}

/// Herald's queue message against Elastic Path's example: the attributes Herald adds
/// (`jobid`, `time`) are set aside, and `source` is Herald's own (a URI reference,
/// as CloudEvents requires; Elastic Path names its own host there). The rest must be
/// the example, member for member and in its order.
fn assert_is_elastic_paths_message(herald: &Value, ep: &Value) {
    let mut herald = herald.clone();
    let attrs = herald.as_object_mut().expect("object");
    assert!(attrs.shift_remove("jobid").is_some_and(|j| j.is_string()));
    let time = attrs.shift_remove("time").expect("time");
    assert!(chrono::DateTime::parse_from_rfc3339(time.as_str().expect("time")).is_ok());
    let source = attrs.get_mut("source").expect("source");
    assert_eq!(
        source.as_str().map(|s| s.starts_with("herald/stores/")),
        Some(true)
    );
    *source = ep["source"].clone();
    assert_eq!(
        serde_json::to_string(&herald).expect("json"),
        serde_json::to_string(ep).expect("json")
    );
}

/// The event Elastic Path's queue example was made from: the resource is its `data`.
fn event_of(ep: &Value) -> Value {
    json!({"data": ep["data"]})
}

/// The deleted product's event as a commerce backend sends it: the whole product.
fn deleted_product(ep: &Value) -> Value {
    json!({"data": {"type": "product", "id": ep["data"]["id"], "name": "Lamp", "sku": "LAMP-1",
        "status": "live"}, "included": {"main_images": [{"id": "img-1"}]}})
}

fn moto_endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

/// A fresh queue on moto: its real-looking URL (what an integration names) and a
/// client of moto to read it back with.
async fn sqs_queue() -> (String, aws_sdk_sqs::Client, aws_config::SdkConfig) {
    let sdk = moto_config(&moto_endpoint()).await.expect("moto");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = format!("ep-contract-{}", Uuid::new_v4().simple());
    sqs.create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create queue");
    (
        format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}"),
        sqs,
        sdk,
    )
}

/// Delivers each (event id, kind, payload) to a new SQS queue on moto as the
/// integration `id` of store `store`, and reads the message bodies back, in order.
async fn through_sqs(id: &str, store: &str, events: &[(&str, &str, Value)]) -> Vec<String> {
    let (url, sqs, sdk) = sqs_queue().await;
    let i = integration(
        id,
        store,
        "queue",
        "",
        Target::AwsSqs(SqsConfig {
            url: url.clone(),
            region: "us-east-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("AKIAIOSFODNN7TESTKEY"),
                secret_access_key: Secret::new("test-secret-for-moto"),
            },
        }),
    );
    let deliverer = SqsDeliverer::new(sdk);
    let mut bodies = Vec::new();
    for (event_id, kind, payload) in events {
        let result = deliverer
            .deliver(
                &i,
                sqs_config(&i),
                &job(&i, event_id, kind, payload.clone()),
                1,
            )
            .await;
        assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
        // One at a time, so that they are read back in order.
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(2)
            .send()
            .await
            .expect("receive");
        let messages = out.messages();
        assert_eq!(messages.len(), 1);
        bodies.push(messages[0].body().expect("body").to_owned());
    }
    bodies
}

/// Delivers each (event id, kind, payload) to a loopback STOMP sink as the
/// integration `id` of store `store`, and returns the frames' bodies, in order.
async fn through_stomp(id: &str, store: &str, events: &[(&str, &str, Value)]) -> Vec<String> {
    let sink = StompSink::start().await;
    let i = integration(
        id,
        store,
        "broker",
        "",
        Target::Stomp(StompConfig {
            addresses: vec![sink.address()],
            destination: "/queue/epcc".into(),
            username: "user1".into(),
            password: Secret::new("password-1"),
            virtual_host: None,
        }),
    );
    let deliverer = StompDeliverer::new(loopback(), &[], Duration::from_secs(5))
        .expect("deliverer")
        .dangerous_allow_plain(true);
    for (event_id, kind, payload) in events {
        let result = deliverer
            .deliver(
                &i,
                stomp_config(&i),
                &job(&i, event_id, kind, payload.clone()),
                1,
            )
            .await;
        assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    }
    let sent = sink.sent();
    assert_eq!(sent.len(), events.len());
    sent.iter()
        .map(|f| {
            assert_eq!(f.header("destination"), Some("/queue/epcc"));
            assert_eq!(f.header("content-type"), Some("application/json"));
            String::from_utf8(f.body.clone()).expect("utf-8")
        })
        .collect()
}

/// Delivers each (event id, kind, payload) to a fresh queue on the test ActiveMQ as
/// the integration `id` of store `store`, and reads the messages' bodies back.
async fn through_activemq(id: &str, store: &str, events: &[(&str, &str, Value)]) -> Vec<String> {
    let run = format!("{}/.run/activemq", herald_testkit::checkout());
    let password = std::fs::read_to_string(format!("{run}/password"))
        .expect("ActiveMQ is not set up: run `make test` or `infra/activemq.sh start`");
    let destination = format!("/queue/herald.ep.{}", Uuid::new_v4().simple());
    let i = integration(
        id,
        store,
        "broker",
        "",
        Target::Stomp(StompConfig {
            addresses: vec!["stomp://127.0.0.1:61613".into()],
            destination: destination.clone(),
            username: "herald".into(),
            password: Secret::new(password.trim()),
            virtual_host: None,
        }),
    );
    let deliverer = StompDeliverer::new(loopback(), &[], Duration::from_secs(10))
        .expect("deliverer")
        .dangerous_allow_plain(true);
    for (event_id, kind, payload) in events {
        let result = deliverer
            .deliver(
                &i,
                stomp_config(&i),
                &job(&i, event_id, kind, payload.clone()),
                1,
            )
            .await;
        assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    }
    herald_core::delivery::stomp::receive(
        "127.0.0.1:61613",
        "herald",
        password.trim(),
        &destination,
        events.len(),
        Duration::from_secs(10),
    )
    .await
    .expect("messages")
    .iter()
    .map(|f| String::from_utf8(f.body.clone()).expect("utf-8"))
    .collect()
}

/// Elastic Path's two queue examples as (event id, kind, payload) to deliver, for
/// their integration and store.
fn queue_examples() -> (Value, Value, Vec<(&'static str, &'static str, Value)>) {
    let cart = example("cart-updated-message");
    let deleted = example("product-deleted-message");
    assert_eq!(cart["integrationid"], deleted["integrationid"]);
    assert_eq!(cart["storeid"], deleted["storeid"]);
    let events = vec![
        (
            "9a21fb54-6c3b-432a-bade-82a60da6b59a",
            "cart.updated",
            event_of(&cart),
        ),
        (
            "efca76df-9fc1-4434-ba26-82339d9b723c",
            "product.deleted",
            deleted_product(&deleted),
        ),
    ];
    assert_eq!(cart["id"], events[0].0);
    assert_eq!(deleted["id"], events[1].0);
    (cart, deleted, events)
}

#[tokio::test]
async fn sqs_messages_are_elastic_paths_cart_updated_and_product_deleted_examples() {
    // GIVEN the events of Elastic Path's two queue examples, for their integration and store
    let (cart, deleted, events) = queue_examples();
    let id = cart["integrationid"].as_str().expect("id");
    let store = cart["storeid"].as_str().expect("store");
    // WHEN Herald delivers them to an SQS queue and they are read back
    let bodies = through_sqs(id, store, &events).await;
    // THEN each is Elastic Path's message
    let parsed: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("JSON"))
        .collect();
    assert_is_elastic_paths_message(&parsed[0], &cart);
    assert_is_elastic_paths_message(&parsed[1], &deleted);
}

#[tokio::test]
async fn stomp_frames_are_elastic_paths_cart_updated_and_product_deleted_examples() {
    // GIVEN the same events
    let (cart, deleted, events) = queue_examples();
    let id = cart["integrationid"].as_str().expect("id");
    let store = cart["storeid"].as_str().expect("store");
    // WHEN Herald delivers them to a STOMP broker
    let bodies = through_stomp(id, store, &events).await;
    // THEN each frame's body is Elastic Path's message
    let parsed: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("JSON"))
        .collect();
    assert_is_elastic_paths_message(&parsed[0], &cart);
    assert_is_elastic_paths_message(&parsed[1], &deleted);
}

#[tokio::test]
async fn activemq_messages_are_elastic_paths_cart_updated_and_product_deleted_examples() {
    // GIVEN the same events
    let (cart, deleted, events) = queue_examples();
    let id = cart["integrationid"].as_str().expect("id");
    let store = cart["storeid"].as_str().expect("store");
    // WHEN Herald delivers them to ActiveMQ and they are read back
    let bodies = through_activemq(id, store, &events).await;
    // THEN each is Elastic Path's message
    let parsed: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("JSON"))
        .collect();
    assert_is_elastic_paths_message(&parsed[0], &cart);
    assert_is_elastic_paths_message(&parsed[1], &deleted);
}

/// A consumer of Elastic Path's queue messages, written only from its document: the
/// message is a CloudEvent whose `data` is the resource (`data.id`, `data.type`),
/// with `included` beside it when there is room (else `included.meta.includes_elided`),
/// and `integrationid`, `storeid` and `type` naming where it comes from.
mod existing_consumer {
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    struct Message {
        #[serde(rename = "type")]
        event: String,
        integrationid: String,
        storeid: String,
        data: Resource,
        #[serde(default)]
        included: Option<Value>,
    }

    #[derive(Deserialize)]
    struct Resource {
        id: String,
        #[serde(rename = "type")]
        kind: String,
    }

    /// What the consumer did with one message, as a line of its own log.
    pub fn process(body: &str) -> Result<String, String> {
        let m: Message = serde_json::from_str(body).map_err(|e| e.to_string())?;
        let included = match &m.included {
            None => "nothing included".to_owned(),
            Some(i) if i["meta"]["includes_elided"] == true => "included elided".to_owned(),
            Some(i) => format!(
                "included {}",
                i.as_object().map(|o| o.len()).unwrap_or_default()
            ),
        };
        Ok(format!(
            "{} {} {} ({included}) from integration {} of store {}",
            m.event, m.data.kind, m.data.id, m.integrationid, m.storeid
        ))
    }
}

/// Events an existing consumer sees: an order with its items, and a deleted product.
fn consumer_events() -> Vec<(&'static str, &'static str, Value)> {
    let paid = example("order-paid-webhook");
    vec![
        ("evt-1", "order.paid", paid["payload"].clone()),
        (
            "evt-2",
            "product.deleted",
            json!({"data": {"type": "product", "id": "p-9", "name": "Lamp"}}),
        ),
    ]
}

const INTEGRATION: &str = "e17db0d8-467b-4bf3-9c26-3dfe8b96e9d7";

/// What the consumer must log for [`consumer_events`], whatever the queue.
fn consumer_log() -> Vec<Result<String, String>> {
    let of = |line: &str| {
        Ok(format!(
            "{line} from integration {INTEGRATION} of store store-1"
        ))
    };
    vec![
        of("order.paid order 1d67160d-dacb-43ed-80ef-c3c4e7ddf764 (included 1)"),
        of("product.deleted product p-9 (nothing included)"),
    ]
}

#[tokio::test]
async fn an_existing_consumer_processes_heralds_sqs_messages() {
    let bodies = through_sqs(INTEGRATION, "store-1", &consumer_events()).await;
    let log: Vec<_> = bodies
        .iter()
        .map(|b| existing_consumer::process(b))
        .collect();
    assert_eq!(log, consumer_log());
}

#[tokio::test]
async fn an_existing_consumer_processes_heralds_activemq_messages() {
    let bodies = through_activemq(INTEGRATION, "store-1", &consumer_events()).await;
    let log: Vec<_> = bodies
        .iter()
        .map(|b| existing_consumer::process(b))
        .collect();
    assert_eq!(log, consumer_log());
}

#[tokio::test]
async fn an_existing_consumer_processes_heralds_stomp_frames() {
    let bodies = through_stomp(INTEGRATION, "store-1", &consumer_events()).await;
    let log: Vec<_> = bodies
        .iter()
        .map(|b| existing_consumer::process(b))
        .collect();
    assert_eq!(log, consumer_log());
}

/// `i`'s webhook configuration, as the dispatcher hands it to the deliverer.
fn webhook_config(i: &Integration) -> &WebhookConfig {
    match &i.target {
        Target::Webhook(config) => config,
        other => panic!("not a webhook target: {other:?}"),
    }
}

/// `i`'s aws_sqs configuration, as the dispatcher hands it to the deliverer.
fn sqs_config(i: &Integration) -> &SqsConfig {
    match &i.target {
        Target::AwsSqs(config) => config,
        other => panic!("not a aws_sqs target: {other:?}"),
    }
}

/// `i`'s STOMP configuration, as the dispatcher hands it to the deliverer.
fn stomp_config(i: &Integration) -> &StompConfig {
    match &i.target {
        Target::Stomp(config) => config,
        other => panic!("not a STOMP target: {other:?}"),
    }
}
