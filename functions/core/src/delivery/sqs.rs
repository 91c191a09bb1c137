//! The customer SQS target: the event as a CloudEvents message in the store owner's
//! own queue, with the integration's own credentials (static keys, or a role assumed
//! with an external id), through a client per integration
//! (`customer_aws`).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_sdk_sqs::Client;

use super::customer_aws::{classify, CustomerClients, Service};
use super::envelope::{cloud_event, data_ref, fit_message, message_group};
use super::DeliverTo;
use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{Integration, SqsConfig};

pub use super::customer_aws::SEND_TIMEOUT;

/// SQS's message size limit (the classic 256 KiB; queues may allow more, never less).
pub const MAX_SQS_MESSAGE: usize = 256 * 1024;

const SQS: Service = Service {
    noun: "queue",
    missing: &[
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    ],
    busy: &[],
    refused_for_good: &[],
};

/// Delivers to customer queues.
pub struct SqsDeliverer {
    clients: CustomerClients<Client>,
}

impl SqsDeliverer {
    /// Delivers with clients derived from `base` (the process's AWS configuration:
    /// endpoints, retries), each with its integration's own credentials, each send
    /// given up after [`SEND_TIMEOUT`].
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self {
            clients: CustomerClients::new(base),
        }
    }

    /// Gives each send up after `timeout` instead: the whole operation (assuming
    /// the role, connecting, every SDK retry) ends by then, and with it its
    /// connections.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.clients.set_timeout(timeout);
        self
    }
}

#[async_trait]
impl DeliverTo<SqsConfig> for SqsDeliverer {
    async fn deliver(
        &self,
        integration: &Integration,
        config: &SqsConfig,
        job: &DeliveryJob,
        _attempt: u32,
    ) -> DeliveryResult {
        let started = Instant::now();
        let event = cloud_event(job, integration);
        // A FIFO queue's group: the resource's id, read from the message itself.
        let group = config
            .url
            .ends_with(".fifo")
            .then(|| message_group(&event, job));
        let body = match fit_message(event, MAX_SQS_MESSAGE, data_ref(job)) {
            Ok(body) => body,
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
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .ok()
        };
        let mut send = client
            .send_message()
            .queue_url(&config.url)
            .message_body(body)
            .set_message_attributes(Some(
                [
                    ("type", attr(&job.event.kind)),
                    ("jobid", attr(&job.job_id.to_string())),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect(),
            ));
        if let Some(group) = group {
            send = send
                .message_group_id(group)
                .message_deduplication_id(job.job_id.to_string());
        }
        match send.send().await {
            Ok(out) => DeliveryResult {
                outcome: Outcome::Delivered,
                status_code: Some(200),
                body: format!("MessageId {}", out.message_id().unwrap_or_default()),
                error_detail: None,
                duration: started.elapsed(),
            },
            Err(e) => {
                let (outcome, detail) = classify(&e, &SQS);
                DeliveryResult::failed(outcome, detail, started.elapsed())
            }
        }
    }
}
