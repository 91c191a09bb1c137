//! The customer SQS target: the event as a CloudEvents message in the store owner's
//! own queue, with the integration's own credentials (static keys, or a role assumed
//! with an external id).
//!
//! Clients are cached per integration and credential set, reused across invocations
//! and never shared between integrations. Assumed-role credentials are cached by the
//! client's identity cache until shortly before they expire. The standard endpoint
//! environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_STS`) is
//! honoured, which is how tests reach moto while integrations keep real queue URLs.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_sdk_sqs::Client;
use uuid::Uuid;

use super::envelope::{cloud_event, data_ref, fit_message};
use super::DeliverTo;
use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{Integration, SqsAuth, SqsConfig, StoreId, STORE_SESSION_TAG};

/// SQS's message size limit (the classic 256 KiB; queues may allow more, never less).
pub const MAX_SQS_MESSAGE: usize = 256 * 1024;

/// How long one send to a customer queue may take, credentials included: the
/// SDK's own retries of it happen within this too.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Delivers to customer queues.
pub struct SqsDeliverer {
    base: SdkConfig,
    timeout: Duration,
    clients: Mutex<HashMap<(Uuid, u64), Client>>,
}

impl SqsDeliverer {
    /// Delivers with clients derived from `base` (the process's AWS configuration:
    /// endpoints, retries), each with its integration's own credentials, each send
    /// given up after [`SEND_TIMEOUT`].
    pub fn new(base: SdkConfig) -> Self {
        Self {
            base,
            timeout: SEND_TIMEOUT,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Gives each send up after `timeout` instead: the whole operation (assuming
    /// the role, connecting, every SDK retry) ends by then, and with it its
    /// connections.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn fingerprint(config: &SqsConfig) -> u64 {
        let mut h = DefaultHasher::new();
        config.region.hash(&mut h);
        match &config.auth {
            SqsAuth::Keys {
                access_key_id,
                secret_access_key,
            } => {
                access_key_id.expose().hash(&mut h);
                secret_access_key.expose().hash(&mut h);
            }
            SqsAuth::AssumeRole {
                role_arn,
                external_id,
            } => {
                role_arn.hash(&mut h);
                external_id.hash(&mut h);
            }
        }
        h.finish()
    }

    async fn client(&self, integration: Uuid, store: &StoreId, config: &SqsConfig) -> Client {
        let key = (integration, Self::fingerprint(config));
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let region = Region::new(config.region.clone());
        let credentials = match &config.auth {
            SqsAuth::Keys {
                access_key_id,
                secret_access_key,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id.expose(),
                secret_access_key.expose(),
                None,
                None,
                "herald-integration",
            )),
            SqsAuth::AssumeRole {
                role_arn,
                external_id,
            } => SharedCredentialsProvider::new(
                // The store rides along as a session tag, which the customer's trust
                // policy requires: a role trusts Herald only while it acts for the
                // role's own store, whatever external id an integration carries.
                AssumeRoleProvider::builder(role_arn)
                    .external_id(external_id)
                    .tags([(STORE_SESSION_TAG, store.as_str())])
                    .session_name(format!("herald-{}", integration.simple()))
                    .region(region.clone())
                    .configure(&self.base)
                    .build()
                    .await,
            ),
        };
        let client = Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&self.base)
                .region(region)
                .credentials_provider(credentials)
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_timeout(self.timeout)
                        .connect_timeout(self.timeout)
                        .build(),
                )
                .build(),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        // Credentials of an integration changed: drop its old clients.
        clients.retain(|(id, _), _| *id != integration);
        clients.insert(key, client.clone());
        client
    }
}

/// The error code: from the parsed error, else from an XML `<Code>` in the raw body
/// (some SQS-compatible endpoints answer JSON-protocol requests with XML errors).
fn error_code<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> Option<String> {
    if let Some(code) = err.code() {
        return Some(code.to_owned());
    }
    let raw = err.raw_response()?;
    let from_xml = raw
        .body()
        .bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|body| {
            let start = body.find("<Code>")? + "<Code>".len();
            let end = body[start..].find("</Code>")? + start;
            Some(body[start..end].to_owned())
        });
    from_xml.or_else(|| (raw.status().as_u16() == 403).then(|| "AccessDenied".to_owned()))
}

fn classify<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> (Outcome, String) {
    let retry = Outcome::Retryable { retry_after: None };
    match err {
        SdkError::TimeoutError(_) => (
            retry,
            "no answer from the queue by the attempt's deadline".into(),
        ),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (retry, "the queue could not be reached".into())
        }
        _ => {
            let code = error_code(err).unwrap_or_else(|| "unknown".to_owned());
            let code = code.as_str();
            let detail = match code {
                "AccessDenied" | "AccessDeniedException" => {
                    "access denied: the credentials may not send to this queue".to_owned()
                }
                "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => {
                    "the queue does not exist".to_owned()
                }
                "InvalidClientTokenId"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
                | "ExpiredToken"
                | "InvalidSecurity" => {
                    format!("invalid credentials ({code})")
                }
                c if c.starts_with("KMS.") => {
                    format!("the queue's KMS key refused the message ({code})")
                }
                c if crate::aws::sqs::RETRYABLE_CODES.contains(&c) => {
                    format!("the queue is throttling or unavailable ({code})")
                }
                _ => format!("the queue refused the message ({code})"),
            };
            // Configuration problems (access, credentials, a missing queue) can be
            // fixed by the store owner within the retry budget, so they are retried
            // too; the detail says which it is.
            (retry, detail)
        }
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
        let group = config.url.ends_with(".fifo").then(|| {
            event["data"]["id"]
                .as_str()
                .filter(|s| !s.is_empty() && s.len() <= 128)
                .unwrap_or(&job.event.kind)
                .to_owned()
        });
        let body = match fit_message(event, MAX_SQS_MESSAGE, data_ref(job)) {
            Ok(body) => body,
            Err(detail) => {
                return DeliveryResult::failed(Outcome::Permanent, detail, started.elapsed())
            }
        };
        let client = self
            .client(integration.id, &integration.store_id, config)
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
                let (outcome, detail) = classify(&e);
                DeliveryResult::failed(outcome, detail, started.elapsed())
            }
        }
    }
}
