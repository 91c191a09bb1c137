//! `events/fanout-queues.json` through the fan-out handler: one job for a customer SQS
//! queue (moto) and one for an ActiveMQ queue; both land, none is reported failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use herald_core::aws::local::{create_queues, moto_config};
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::config::PipelineSettings;
use herald_core::delivery::stomp;
use herald_core::model::{Integration, Secret, SqsAuth, SqsConfig, StompConfig, Target};
use herald_core::ports::JobSource;
use herald_core::wiring::Components;
use uuid::Uuid;

const SQS: &str = "0192f6e4-0000-7000-8000-000000000003";
const STOMP: &str = "0192f6e4-0000-7000-8000-000000000004";

fn integration(id: &str, target: Target) -> Integration {
    Integration {
        id: Uuid::parse_str(id).expect("uuid"),
        target,
        ..herald_core::testkit::webhook(id, "default", &["cart.updated"], true)
    }
}

#[tokio::test]
async fn the_queue_targets_batch_file_lands_on_sqs_and_activemq() {
    let endpoint =
        std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT is not set: run `make test`");
    let password = std::fs::read_to_string(format!(
        "{}/.run/activemq/password",
        herald_testkit::checkout()
    ))
    .expect("ActiveMQ is not set up: run `make test`");
    let sdk = moto_config(&endpoint).await.expect("moto");
    let name = format!("customer-{}", Uuid::new_v4().simple());
    let (moto_url, _) = create_queues(&sdk, &name, 6, 30).await.expect("queue");
    let destination = format!("/queue/herald.fanout.{}", Uuid::new_v4().simple());

    // The customer SQS client takes its endpoint from the process's AWS configuration,
    // which for the embedded backend comes from the standard environment.
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let components = Components::build(&PipelineSettings::memory(), false)
        .await
        .expect("components");
    let sqs = integration(
        SQS,
        Target::AwsSqs(SqsConfig {
            url: format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}"),
            region: "us-east-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("AKIAIOSFODNN7TESTKEY"),
                secret_access_key: Secret::new("test-secret"),
            },
        }),
    );
    let broker = integration(
        STOMP,
        Target::Stomp(StompConfig {
            addresses: vec!["stomp://127.0.0.1:61613".into()],
            destination: destination.clone(),
            username: "herald".into(),
            password: Secret::new(password.trim()),
            virtual_host: None,
        }),
    );
    components
        .integrations
        .insert(&sqs, 100)
        .await
        .expect("seed");
    components
        .integrations
        .insert(&broker, 100)
        .await
        .expect("seed");
    let fanout = Arc::new(components.fanout().expect("fanout"));

    let path = PathBuf::from(herald_testkit::checkout()).join("events/fanout-queues.json");
    let batch: SqsEvent =
        serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("SQS event");
    let response = herald_fanout::process(&fanout, batch, None).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    let queue = SqsJobQueue::from_sdk(&sdk, moto_url);
    let messages = queue
        .receive(10, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(messages.len(), 1);
    let ce: serde_json::Value = serde_json::from_str(&messages[0].body).expect("json");
    assert_eq!(
        (ce["type"].as_str(), ce["id"].as_str()),
        (Some("cart.updated"), Some("evt-2001"))
    );

    let frames = stomp::receive(
        "127.0.0.1:61613",
        "herald",
        password.trim(),
        &destination,
        1,
        Duration::from_secs(10),
    )
    .await
    .expect("stomp message");
    let ce: serde_json::Value = serde_json::from_slice(&frames[0].body).expect("json");
    assert_eq!(ce["included"]["items"][0]["sku"], "LAMP-1");
}
