//! The customer SNS target against moto (loopback): messages are published to a topic
//! with an SQS queue subscribed, and read back from that queue as SNS delivers them
//! (raw, or as its JSON notification). Integrations keep real ARNs; the endpoint
//! override sends the calls to moto, as `AWS_ENDPOINT_URL` does in the dev server.

use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::Utc;
use herald_core::attempt::Outcome;
use herald_core::aws::local::{create_topic_into_queue, moto_config};
use herald_core::delivery::envelope::cloud_event;
use herald_core::delivery::sns::SnsDeliverer;
use herald_core::delivery::DeliverTo;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{Integration, Secret, SnsConfig, SqsAuth, StoreId, Target};
use serde_json::{json, Value};
use uuid::Uuid;

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

fn integration(topic_arn: &str) -> Integration {
    let now = Utc::now();
    Integration {
        id: Uuid::now_v7(),
        store_id: StoreId::parse("s").expect("store"),
        name: "topic".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["order.paid".into()],
        target: Target::AwsSns(SnsConfig {
            topic_arn: topic_arn.into(),
            region: "us-east-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("AKIAIOSFODNN7TESTKEY"),
                secret_access_key: Secret::new("test-secret-for-moto"),
            },
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        delivery: Default::default(),
    }
}

/// `i`'s aws_sns configuration, as the dispatcher hands it to the deliverer.
fn config(i: &Integration) -> &SnsConfig {
    match &i.target {
        Target::AwsSns(config) => config,
        other => panic!("not an aws_sns target: {other:?}"),
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

async fn read_all(sdk: &aws_config::SdkConfig, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    aws_sdk_sqs::Client::new(sdk)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive")
        .messages()
        .to_vec()
}

fn topic_name(fifo: bool) -> String {
    format!(
        "customer-topic-{}{}",
        Uuid::new_v4().simple(),
        if fifo { ".fifo" } else { "" }
    )
}

#[tokio::test]
async fn a_raw_subscription_gets_the_cloud_event_with_the_type_and_jobid_attributes() {
    // GIVEN a topic with a queue subscribed for raw delivery
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (topic, queue) = create_topic_into_queue(&sdk, &topic_name(false), true)
        .await
        .expect("topic");
    let i = integration(&topic);
    let j = job(&i, order("o-1"));
    // WHEN a job is delivered to the topic
    let result = SnsDeliverer::new(sdk.clone())
        .deliver(&i, config(&i), &j, 1)
        .await;
    // THEN the queue holds the CloudEvent, with the attributes `type` and `jobid`
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert_eq!(result.status_code, Some(200));
    assert!(result.body.starts_with("MessageId "), "{}", result.body);
    let messages = read_all(&sdk, &queue).await;
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON");
    assert_eq!(body, cloud_event(&j, &i));
    assert_eq!(body["data"], order("o-1")["data"]);
    let attributes = messages[0].message_attributes().expect("attributes");
    let shown: Vec<(&str, Option<&str>, Option<&str>)> = {
        let mut v: Vec<_> = attributes
            .iter()
            .map(|(k, a)| (k.as_str(), Some(a.data_type()), a.string_value()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        shown,
        [
            ("jobid", Some("String"), Some(j.job_id.to_string().as_str())),
            ("type", Some("String"), Some("order.paid")),
        ]
    );
}

#[tokio::test]
async fn a_notification_subscription_gets_the_cloud_event_as_the_message_with_both_attributes() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (topic, queue) = create_topic_into_queue(&sdk, &topic_name(false), false)
        .await
        .expect("topic");
    let i = integration(&topic);
    let j = job(&i, order("o-2"));
    let result = SnsDeliverer::new(sdk.clone())
        .deliver(&i, config(&i), &j, 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    let messages = read_all(&sdk, &queue).await;
    assert_eq!(messages.len(), 1);
    let note: Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON");
    assert_eq!(note["Type"], "Notification");
    assert_eq!(note["TopicArn"], topic);
    assert_eq!(
        format!("MessageId {}", note["MessageId"].as_str().expect("id")),
        result.body
    );
    let message: Value =
        serde_json::from_str(note["Message"].as_str().expect("Message")).expect("JSON");
    assert_eq!(message, cloud_event(&j, &i));
    assert_eq!(
        note["MessageAttributes"],
        json!({
            "jobid": {"Type": "String", "Value": j.job_id.to_string()},
            "type": {"Type": "String", "Value": "order.paid"},
        })
    );
}

#[tokio::test]
async fn fifo_topics_get_a_group_and_a_deduplication_id_so_retries_do_not_duplicate() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (topic, queue) = create_topic_into_queue(&sdk, &topic_name(true), true)
        .await
        .expect("topic");
    let i = integration(&topic);
    let j = job(&i, order("o-42"));
    let deliverer = SnsDeliverer::new(sdk.clone());
    for attempt in 1..=2 {
        let result = deliverer.deliver(&i, config(&i), &j, attempt).await;
        assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    }
    let messages = read_all(&sdk, &queue).await;
    assert_eq!(messages.len(), 1, "the retry was deduplicated");
    let system = messages[0].attributes().expect("system attributes");
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .map(String::as_str),
        Some("o-42")
    );
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::MessageDeduplicationId)
            .map(String::as_str),
        Some(j.job_id.to_string().as_str())
    );
}

#[tokio::test]
async fn a_missing_topic_is_retried_with_a_detail_that_says_so() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let i = integration("arn:aws:sns:us-east-1:123456789012:no-such-topic");
    let result = SnsDeliverer::new(sdk)
        .deliver(&i, config(&i), &job(&i, order("o")), 1)
        .await;
    assert_eq!(
        result.outcome,
        Outcome::Retryable { retry_after: None },
        "{result:?}"
    );
    assert_eq!(
        result.error_detail.as_deref(),
        Some("the topic does not exist")
    );
}

#[tokio::test]
async fn included_resources_are_elided_past_the_message_limit_and_a_resource_too_large_fails_for_good(
) {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (topic, queue) = create_topic_into_queue(&sdk, &topic_name(false), true)
        .await
        .expect("topic");
    let i = integration(&topic);
    let deliverer = SnsDeliverer::new(sdk.clone());

    let big = json!({"data": {"id": "o-4", "type": "order"}, "included": {"blob": "x".repeat(300 * 1024)}});
    let result = deliverer.deliver(&i, config(&i), &job(&i, big), 1).await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    let messages = read_all(&sdk, &queue).await;
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON");
    assert_eq!(body["included"], json!({"meta": {"includes_elided": true}}));

    // 256 KiB less the attributes: "type" + "String" + "order.paid" and "jobid" +
    // "String" + a job id of 36 characters.
    let huge = json!({"data": {"id": "o-5", "type": "order", "note": "x".repeat(300 * 1024)}});
    let result = deliverer.deliver(&i, config(&i), &job(&i, huge), 1).await;
    assert_eq!(result.outcome, Outcome::Permanent, "{result:?}");
    let detail = result.error_detail.expect("detail");
    assert!(
        detail.ends_with("more than the target's limit of 262077"),
        "{detail}"
    );
}
