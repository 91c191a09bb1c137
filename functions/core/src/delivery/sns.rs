//! The customer SNS target: the CloudEvent the queues get, published to the store
//! owner's own topic with the message attributes `type` (the event key) and `jobid`,
//! through a client per integration (`customer_aws`). A FIFO topic's
//! messages get a group (the resource's id) and a deduplication id (the job id), as a
//! FIFO queue's do, so a retry inside SNS's five-minute window is not published twice.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;

use super::customer_aws::{classify, CustomerClients, Service};
use super::envelope::{cloud_event, data_ref, fit_message, message_group};
use super::DeliverTo;
use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{Integration, SnsConfig};

/// The largest message SNS publishes, its attributes included
/// (<https://docs.aws.amazon.com/sns/latest/api/API_Publish.html>).
pub const MAX_SNS_MESSAGE: usize = 256 * 1024;

const SNS: Service = Service {
    noun: "topic",
    missing: &["NotFound", "NotFoundException"],
    busy: &["Throttled", "KMSThrottling"],
    refused_for_good: &[
        "InvalidParameter",
        "InvalidParameterValue",
        "MissingParameter",
        "ValidationException",
    ],
};

/// Delivers to customer topics.
pub struct SnsDeliverer {
    clients: CustomerClients<Client>,
}

impl SnsDeliverer {
    /// Delivers with clients derived from `base` (the process's AWS configuration:
    /// endpoints, retries), each with its integration's own credentials, each call
    /// given up after [`super::customer_aws::SEND_TIMEOUT`].
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self {
            clients: CustomerClients::new(base),
        }
    }

    /// Gives each call up after `timeout` instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.clients.set_timeout(timeout);
        self
    }
}

#[async_trait]
impl DeliverTo<SnsConfig> for SnsDeliverer {
    async fn deliver(
        &self,
        integration: &Integration,
        config: &SnsConfig,
        job: &DeliveryJob,
        _attempt: u32,
    ) -> DeliveryResult {
        let started = Instant::now();
        let event = cloud_event(job, integration);
        let group = config.is_fifo().then(|| message_group(&event, job));
        let job_id = job.job_id.to_string();
        let attributes = [
            ("type", job.event.kind.as_str()),
            ("jobid", job_id.as_str()),
        ];
        // SNS counts each attribute's name, data type and value against the limit.
        let attribute_bytes: usize = attributes
            .iter()
            .map(|(name, value)| name.len() + "String".len() + value.len())
            .sum();
        let message = match fit_message(event, MAX_SNS_MESSAGE - attribute_bytes, data_ref(job)) {
            Ok(message) => message,
            Err(detail) => {
                return DeliveryResult::failed(Outcome::Permanent, detail, started.elapsed())
            }
        };
        let client = self
            .clients
            .client(
                integration.id,
                &integration.store_id,
                &config.region,
                &config.auth,
                Client::new,
            )
            .await;
        let mut publish = client
            .publish()
            .topic_arn(&config.topic_arn)
            .message(message);
        for (name, value) in attributes {
            if let Ok(attribute) = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
            {
                publish = publish.message_attributes(name, attribute);
            }
        }
        if let Some(group) = group {
            publish = publish
                .message_group_id(group)
                .message_deduplication_id(job_id);
        }
        match publish.send().await {
            Ok(out) => DeliveryResult {
                outcome: Outcome::Delivered,
                status_code: Some(200),
                body: format!("MessageId {}", out.message_id().unwrap_or_default()),
                error_detail: None,
                duration: started.elapsed(),
            },
            Err(e) => {
                let (outcome, detail) = classify(&e, &SNS);
                DeliveryResult::failed(outcome, detail, started.elapsed())
            }
        }
    }
}
