//! The internal queue on Amazon SQS: [`JobQueue`] for ingest and fan-out,
//! [`JobSource`] for the dev server's poller (`HERALD_BACKEND=aws`), and its
//! dead-letter queue for replay ([`SqsDeadLetters`]).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};

use super::backend_error;
use crate::error::{Error, Result};
use crate::ports::{JobQueue, JobSource, OutgoingJob, QueuedJob, SendFailure};

const SERVICE: &str = "SQS";

/// SQS error codes that mean "try again later" (throttling, service trouble), for
/// the internal queue and for customer queues alike.
pub const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KmsThrottled",
];

/// The internal queue (`HERALD_QUEUE_URL`) and, for the fan-out's moves after a
/// job's last attempt, its dead-letter queue (`HERALD_DLQ_URL`).
#[derive(Clone, Debug)]
pub struct SqsJobQueue {
    client: Client,
    url: String,
    dlq_url: Option<String>,
}

impl SqsJobQueue {
    /// Uses the queue at `url` through `client` (built once per process).
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            dlq_url: None,
        }
    }

    /// Sends dead letters ([`JobQueue::dead_letter`]) to the queue at `dlq_url`.
    pub fn with_dead_letter_queue(mut self, dlq_url: impl Into<String>) -> Self {
        self.dlq_url = Some(dlq_url.into());
        self
    }

    /// One `SendMessageBatch` of `jobs` to `url`; the entries SQS did not take.
    async fn send_to(&self, url: &str, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let entries = jobs
            .iter()
            .map(|j| {
                // Whole seconds, never shorter than asked: a retry is not made early.
                let delay = j.delay.min(crate::queue::MAX_DELAY).as_secs_f64().ceil() as i32;
                SendMessageBatchRequestEntry::builder()
                    .id(&j.entry_id)
                    .message_body(&j.body)
                    .set_delay_seconds((delay > 0).then_some(delay))
                    .build()
                    .map_err(|e| Error::Config(format!("building an SQS entry: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        // A 200 can still carry failed entries.
        Ok(out
            .failed()
            .iter()
            .map(|f| SendFailure {
                entry_id: f.id().to_owned(),
                reason: format!("{}: {}", f.code(), f.message().unwrap_or("no message")),
                retryable: !f.sender_fault() || RETRYABLE_CODES.contains(&f.code()),
            })
            .collect())
    }

    /// Builds the client from the process-wide AWS configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), url)
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.send_to(&self.url, jobs).await
    }

    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<()> {
        // SQS allows at most 12 hours.
        let secs = delay.as_secs().min(43_200) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }

    async fn dead_letter(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        let url = self.dlq_url.as_deref().ok_or_else(|| {
            Error::Config(
                "HERALD_DLQ_URL must be set: jobs go there after their last attempt".into(),
            )
        })?;
        let undelayed: Vec<OutgoingJob> = jobs
            .iter()
            .map(|j| OutgoingJob {
                delay: Duration::ZERO,
                ..j.clone()
            })
            .collect();
        self.send_to(url, &undelayed).await
    }
}

#[async_trait]
impl JobSource for SqsJobQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueuedJob>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attrs = m.attributes();
                let count = attrs
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let sent_at = attrs
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .unwrap_or_else(Utc::now);
                Some(QueuedJob {
                    message_id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count: count,
                    sent_at,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }
}

/// The internal queue's dead-letter queue (`HERALD_DLQ_URL`), for replay
/// ([`crate::replay::redrive`] scans it through these operations).
#[derive(Clone, Debug)]
pub struct SqsDeadLetters {
    client: Client,
    dlq_url: String,
    queue: SqsJobQueue,
}

impl SqsDeadLetters {
    /// Replays from `dlq_url` into `queue`.
    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        dlq_url: impl Into<String>,
        queue: SqsJobQueue,
    ) -> Self {
        Self {
            client: Client::new(sdk),
            dlq_url: dlq_url.into(),
            queue,
        }
    }
}

#[async_trait]
impl crate::ports::DeadLetters for SqsDeadLetters {
    async fn receive_dead(&self, hide: Duration) -> Result<Vec<crate::ports::DeadLetter>> {
        // Long polling (a wait of at least 1 s) asks every server: a short poll samples
        // some, and its empty answer would not mean that nothing is visible.
        // See <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html>.
        let hide = hide.as_secs_f64().ceil().clamp(1.0, 43_200.0) as i32;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(hide)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(crate::ports::DeadLetter {
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body()?.to_owned(),
                })
            })
            .collect())
    }

    async fn release_dead(&self, receipts: &[String]) -> Result<()> {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| Error::Config(format!("building an SQS entry: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| backend_error(SERVICE, e))?;
            if !out.failed().is_empty() {
                // They reappear by themselves when their hide ends, shortly after.
                tracing::warn!(
                    failed = out.failed().len(),
                    "some dead letters could not be made visible at once"
                );
            }
        }
        Ok(())
    }

    async fn delete_dead(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }

    async fn requeue(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.queue.send_batch(jobs).await
    }

    async fn dead_in_flight(&self) -> Result<usize> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dlq_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Backend {
                service: SERVICE,
                message:
                    "GetQueueAttributes answered without ApproximateNumberOfMessagesNotVisible"
                        .into(),
                retryable: true,
            })
    }
}
