//! moto for the dev server (`make run-aws`), the demo, tests and harnesses: an AWS
//! configuration that can only reach a loopback endpoint, and the resources the
//! template would create.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use super::backend_error;
use super::dynamo::DynamoIntegrationStore;
use crate::error::{Error, Result};

/// An AWS configuration for a moto server at `endpoint`, with moto's test
/// credentials. Refuses any endpoint that is not on loopback, so a test or demo can
/// never reach a real account.
pub async fn moto_config(endpoint: &str) -> Result<SdkConfig> {
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"];
    if !loopback.iter().any(|p| endpoint.starts_with(p)) {
        return Err(Error::Config(format!(
            "{endpoint} is not a loopback endpoint"
        )));
    }
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "moto",
        )))
        .load()
        .await)
}

/// The internal queue and its dead-letter queue, with the redrive policy the template
/// sets (`maxReceiveCount` = the retry schedule's attempts). Returns both URLs.
pub async fn create_queues(
    sdk: &SdkConfig,
    name: &str,
    max_receives: u32,
    visibility_secs: u32,
) -> Result<(String, String)> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(|e| backend_error("SQS", e))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_owned();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| backend_error("SQS", e))?;
    let dlq_arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    let queue = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string(),
        )
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        )
        .send()
        .await
        .map_err(|e| backend_error("SQS", e))?;
    Ok((queue.queue_url().unwrap_or_default().to_owned(), dlq_url))
}

/// Creates the table and the queues (for `make run-aws` and tests).
pub async fn bootstrap(
    sdk: &SdkConfig,
    table: &str,
    queue: &str,
    max_receives: u32,
) -> Result<(String, String)> {
    DynamoIntegrationStore::create_table(&aws_sdk_dynamodb::Client::new(sdk), table).await?;
    create_queues(sdk, queue, max_receives, 180).await
}

/// A queue named `name` (FIFO when the name ends in `.fifo`), for the targets that
/// are read back through a queue: its URL and ARN.
async fn reading_queue(sdk: &SdkConfig, name: &str) -> Result<(String, String)> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut create = sqs.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let url = create
        .send()
        .await
        .map_err(|e| backend_error("SQS", e))?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| backend_error("SQS", e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Ok((url, arn))
}

/// An EventBridge event bus named `name` whose rule sends every event Herald puts
/// (`source` `herald`) to a new queue `<name>-events`: the bus ARN and the queue URL,
/// where the events can be read back as EventBridge delivers them.
pub async fn create_bus_into_queue(sdk: &SdkConfig, name: &str) -> Result<(String, String)> {
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let bus_arn = events
        .create_event_bus()
        .name(name)
        .send()
        .await
        .map_err(|e| backend_error("EventBridge", e))?
        .event_bus_arn()
        .unwrap_or_default()
        .to_owned();
    let (queue_url, queue_arn) = reading_queue(sdk, &format!("{name}-events")).await?;
    events
        .put_rule()
        .name("herald-events")
        .event_bus_name(name)
        .event_pattern(json!({"source": [crate::delivery::eventbridge::SOURCE]}).to_string())
        .send()
        .await
        .map_err(|e| backend_error("EventBridge", e))?;
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("queue")
        .arn(queue_arn)
        .build()
        .map_err(|e| Error::Config(format!("an EventBridge target: {e}")))?;
    events
        .put_targets()
        .rule("herald-events")
        .event_bus_name(name)
        .targets(target)
        .send()
        .await
        .map_err(|e| backend_error("EventBridge", e))?;
    Ok((bus_arn, queue_url))
}

/// An SNS topic named `name` (FIFO when the name ends in `.fifo`) with a new queue
/// subscribed to it, raw (the message as published, its attributes as the queue
/// message's) or not (SNS's JSON notification): the topic ARN and the queue URL.
pub async fn create_topic_into_queue(
    sdk: &SdkConfig,
    name: &str,
    raw: bool,
) -> Result<(String, String)> {
    let sns = aws_sdk_sns::Client::new(sdk);
    let fifo = name.ends_with(".fifo");
    let mut create = sns.create_topic().name(name);
    if fifo {
        create = create.attributes("FifoTopic", "true");
    }
    let topic_arn = create
        .send()
        .await
        .map_err(|e| backend_error("SNS", e))?
        .topic_arn()
        .unwrap_or_default()
        .to_owned();
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let queue_name = format!("{base}-messages{}", if fifo { ".fifo" } else { "" });
    let (queue_url, queue_arn) = reading_queue(sdk, &queue_name).await?;
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", raw.to_string())
        .send()
        .await
        .map_err(|e| backend_error("SNS", e))?;
    Ok((topic_arn, queue_url))
}
