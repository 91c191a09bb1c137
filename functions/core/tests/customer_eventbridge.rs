//! The customer EventBridge target against moto (loopback): events are put on a bus
//! whose rule sends them to an SQS queue, and read back from that queue as
//! EventBridge delivers them. Integrations keep real ARNs; the endpoint override
//! sends the calls to moto, as `AWS_ENDPOINT_URL` does in the dev server.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use herald_core::attempt::Outcome;
use herald_core::aws::local::{create_bus_into_queue, moto_config};
use herald_core::delivery::envelope::cloud_event;
use herald_core::delivery::eventbridge::EventBridgeDeliverer;
use herald_core::delivery::DeliverTo;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{EventBridgeConfig, Integration, Secret, SqsAuth, Target};
use herald_core::testkit::webhook;
use herald_testkit::http::RequestReader;
use serde_json::{json, Value};
use uuid::Uuid;

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

fn keys() -> SqsAuth {
    SqsAuth::Keys {
        access_key_id: Secret::new("AKIAIOSFODNN7TESTKEY"),
        secret_access_key: Secret::new("test-secret-for-moto"),
    }
}

fn integration(bus_arn: &str, prefix: Option<&str>, auth: SqsAuth) -> Integration {
    Integration {
        target: Target::AwsEventBridge(EventBridgeConfig {
            event_bus_arn: bus_arn.into(),
            region: "us-east-1".into(),
            detail_type_prefix: prefix.map(str::to_owned),
            auth,
        }),
        ..webhook("bus", "s", &["order.paid"], true)
    }
}

/// `i`'s aws_eventbridge configuration, as the dispatcher hands it to the deliverer.
fn config(i: &Integration) -> &EventBridgeConfig {
    match &i.target {
        Target::AwsEventBridge(config) => config,
        other => panic!("not an aws_eventbridge target: {other:?}"),
    }
}

fn job(i: &Integration, payload: Value) -> DeliveryJob {
    let event = Event {
        id: format!("evt-{}", Uuid::new_v4().simple()),
        kind: "order.paid".into(),
        occurred_at: Utc::now(),
        payload: payload.into(),
    };
    DeliveryJob::new(&i.store_id, i.id, event, Utc::now())
}

fn order(id: &str) -> Value {
    json!({"data": {"id": id, "type": "order", "status": "paid"}, "included": {"items": [1]}})
}

/// The events the bus's rule sent to the queue, as EventBridge delivers them.
async fn read_events(sdk: &aws_config::SdkConfig, url: &str) -> Vec<Value> {
    let out = aws_sdk_sqs::Client::new(sdk)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    out.messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or_default()).expect("JSON event"))
        .collect()
}

fn bus_name() -> String {
    format!("customer-bus-{}", Uuid::new_v4().simple())
}

#[tokio::test]
async fn an_event_lands_on_the_bus_with_source_herald_the_event_key_as_detail_type_and_the_cloud_event_as_detail(
) {
    // GIVEN a bus whose rule sends Herald's events to a queue
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (bus_arn, queue) = create_bus_into_queue(&sdk, &bus_name()).await.expect("bus");
    let i = integration(&bus_arn, None, keys());
    let j = job(&i, order("o-1"));
    // WHEN a job is delivered to it
    let result = EventBridgeDeliverer::new(sdk.clone())
        .deliver(&i, config(&i), &j, 1)
        .await;
    // THEN it was put, and the rule's queue holds one event from `herald` whose
    // detail-type is the event key and whose detail is the queues' CloudEvent
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.status_code, Some(200));
    assert!(result.body.starts_with("EventId "), "{}", result.body);
    let events = read_events(&sdk, &queue).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["source"], "herald");
    assert_eq!(events[0]["detail-type"], "order.paid");
    assert_eq!(events[0]["detail"], cloud_event(&j, &i));
    assert_eq!(events[0]["detail"]["data"], order("o-1")["data"]);
    assert_eq!(
        format!("EventId {}", events[0]["id"].as_str().expect("id")),
        result.body
    );
}

#[tokio::test]
async fn a_detail_type_prefix_comes_before_the_event_key() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (bus_arn, queue) = create_bus_into_queue(&sdk, &bus_name()).await.expect("bus");
    let i = integration(&bus_arn, Some("acme.commerce."), keys());
    let result = EventBridgeDeliverer::new(sdk.clone())
        .deliver(&i, config(&i), &job(&i, order("o-2")), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    let events = read_events(&sdk, &queue).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "acme.commerce.order.paid");
}

#[tokio::test]
async fn a_role_is_assumed_through_sts_for_keyless_delivery() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (bus_arn, queue) = create_bus_into_queue(&sdk, &bus_name()).await.expect("bus");
    let i = integration(
        &bus_arn,
        None,
        SqsAuth::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/herald-delivery".into(),
            external_id: "herald-0123456789abcdef".into(),
        },
    );
    let result = EventBridgeDeliverer::new(sdk.clone())
        .deliver(&i, config(&i), &job(&i, order("o-3")), 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(read_events(&sdk, &queue).await.len(), 1);
}

#[tokio::test]
async fn a_missing_bus_is_retried_with_a_detail_that_says_so() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let i = integration(
        "arn:aws:events:us-east-1:123456789012:event-bus/no-such-bus",
        None,
        keys(),
    );
    let result = EventBridgeDeliverer::new(sdk)
        .deliver(&i, config(&i), &job(&i, order("o")), 1)
        .await;
    assert_eq!(
        result.outcome,
        Outcome::Retryable { retry_after: None },
        "{result:?}"
    );
    assert_eq!(
        result.error_detail.as_deref(),
        Some("the event bus does not exist")
    );
}

#[tokio::test]
async fn included_resources_are_elided_past_the_entry_limit_and_a_resource_too_large_fails_for_good(
) {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (bus_arn, queue) = create_bus_into_queue(&sdk, &bus_name()).await.expect("bus");
    let i = integration(&bus_arn, None, keys());
    let deliverer = EventBridgeDeliverer::new(sdk.clone());

    // GIVEN an order whose included resources take the entry past 256 KiB
    let big = json!({"data": {"id": "o-4", "type": "order"}, "included": {"blob": "x".repeat(300 * 1024)}});
    // WHEN it is delivered THEN it lands with `included` marked as elided
    let result = deliverer.deliver(&i, config(&i), &job(&i, big), 1).await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    let events = read_events(&sdk, &queue).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["detail"]["included"],
        json!({"meta": {"includes_elided": true}})
    );
    assert_eq!(
        events[0]["detail"]["data"],
        json!({"id": "o-4", "type": "order"})
    );

    // GIVEN a resource too large by itself WHEN it is delivered THEN it fails for
    // good, naming the entry's room for the detail (256 KiB less the time, the
    // source and the detail-type)
    let huge = json!({"data": {"id": "o-5", "type": "order", "note": "x".repeat(300 * 1024)}});
    let result = deliverer.deliver(&i, config(&i), &job(&i, huge), 1).await;
    assert_eq!(result.outcome, Outcome::Permanent, "{result:?}");
    let detail = result.error_detail.expect("detail");
    assert!(
        detail.ends_with("more than the target's limit of 262114"),
        "{detail}"
    );
}

/// What an EventBridge stand-in on loopback answers to `PutEvents`: 200, with the
/// one entry refused with `code`.
async fn refusing_bus(code: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..4 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut requests = RequestReader::new();
                for _ in 0..4 {
                    let Ok(Some(request)) = requests.read(&mut stream).await else {
                        return;
                    };
                    recorder.lock().expect("lock").push(request.text());
                    let body = json!({"FailedEntryCount": 1, "Entries": [
                        {"ErrorCode": code, "ErrorMessage": "refused by the stand-in"}]})
                    .to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

#[tokio::test]
async fn an_entry_refused_inside_a_200_answer_is_read_by_its_error_code() {
    for (code, outcome, detail) in [
        (
            "MalformedDetail",
            Outcome::Permanent,
            "the event bus refused the message for good (MalformedDetail)",
        ),
        (
            "ThrottlingException",
            Outcome::Retryable { retry_after: None },
            "the event bus is throttling or unavailable (ThrottlingException)",
        ),
    ] {
        // GIVEN a bus that answers 200 but refuses the entry
        let (endpoint, seen) = refusing_bus(code).await;
        let sdk = moto_config(&endpoint).await.expect("config");
        let i = integration(
            "arn:aws:events:us-east-1:123456789012:event-bus/orders",
            None,
            keys(),
        );
        // WHEN a job is delivered
        let result = EventBridgeDeliverer::new(sdk)
            .deliver(&i, config(&i), &job(&i, order("o-6")), 1)
            .await;
        // THEN the refusal is the attempt's outcome, not a delivery
        assert_eq!(result.outcome, outcome, "{code}: {result:?}");
        assert_eq!(result.error_detail.as_deref(), Some(detail), "{code}");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1, "one PutEvents, no SDK retry: {seen:?}");
        assert!(seen[0].contains("AWSEvents.PutEvents"), "{}", seen[0]);
    }
}
