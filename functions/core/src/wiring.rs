//! Builds the adapters a process needs from its settings, once, at start. Binaries
//! call this and hand the result to their handlers; nothing here runs per request.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::attempt_log::DynamoDeliveryLog;
use crate::aws::claims::DynamoIdempotency;
use crate::aws::dynamo::DynamoIntegrationStore;
use crate::aws::kms::{KmsKeys, KmsMac};
use crate::aws::rate::DynamoRateLimiter;
use crate::aws::s3::S3Bodies;
use crate::aws::sqs::{SqsDeadLetters, SqsJobQueue};
use crate::cache::IntegrationCache;
use crate::config::{Backend, PipelineSettings};
use crate::delivery::eventbridge::EventBridgeDeliverer;
use crate::delivery::sns::SnsDeliverer;
use crate::delivery::sqs::SqsDeliverer;
use crate::delivery::stomp::StompDeliverer;
use crate::delivery::webhook::WebhookDeliverer;
use crate::delivery::TargetDeliverer;
use crate::error::{Error, Result};
use crate::event_data::EventData;
use crate::fanout::Fanout;
use crate::ingest::{Ingest, IngestSettings};
use crate::memory::{
    MemoryBodies, MemoryDeliveryLog, MemoryIdempotency, MemoryIntegrationStore, MemoryMacKey,
    MemoryQueue, MemoryRateLimiter,
};
use crate::ports::{
    DeadLetters, Deliverer, DeliveryLog, EventBodies, IdempotencyStore, IntegrationStore, JobQueue,
    JobSource, RateLimiter, RetiredSecrets,
};
use crate::retry::RetryPolicy;
use crate::secrets::Vault;

/// The embedded queue's visibility timeout (the dev server's stand-in for the
/// template's 6 × fan-out timeout).
pub const LOCAL_VISIBILITY: Duration = Duration::from_secs(180);

/// How long a broker may take to answer a CONNECT or a SEND.
pub const STOMP_TIMEOUT: Duration = Duration::from_secs(10);

/// How much longer than the longest target timeout the fan-out lets one attempt run
/// before it cuts it.
const ATTEMPT_SLACK: Duration = Duration::from_secs(5);

/// Every adapter, built for one backend.
#[derive(Clone)]
pub struct Components {
    /// Integrations.
    pub integrations: Arc<dyn IntegrationStore>,
    /// The sweep of ended rotations' previous secrets ([`crate::sweep`]): the same
    /// store as `integrations`.
    pub retired_secrets: Arc<dyn RetiredSecrets>,
    /// Their short-lived per-process cache.
    pub cache: Arc<IntegrationCache>,
    /// Attempts and jobs.
    pub log: Arc<dyn DeliveryLog>,
    /// Event claims.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Integrations' rate buckets (`delivery.max_per_second`), shared by every
    /// fan-out of the backend: this process's memory, or the table.
    pub rate: Arc<dyn RateLimiter>,
    /// The internal queue, when this process has one.
    pub queue: Option<Arc<dyn JobQueue>>,
    /// Receiving from the internal queue (the dev server's poller).
    pub source: Option<Arc<dyn JobSource>>,
    /// The embedded queue itself, for inspection (memory backend only).
    pub memory_queue: Option<Arc<MemoryQueue>>,
    /// The internal queue's DLQ, for replay (where configured).
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// Event payloads too large for a queue message (where configured: the memory
    /// backend always, the bucket `HERALD_EVENT_BUCKET` names).
    pub bodies: Option<Arc<dyn EventBodies>>,
    /// The `dataref` tokens of those bodies (where configured: the memory backend
    /// always, with a random key; the KMS key `HERALD_DATAREF_KEY_ID` names with the
    /// bucket). Mints URLs when `HERALD_PUBLIC_URL` is set.
    pub event_data: Option<Arc<EventData>>,
    /// The AWS configuration customer-queue clients derive from.
    aws: aws_config::SdkConfig,
    settings: PipelineSettings,
}

/// `data`, minting URLs under the API's public address when it is known.
fn event_data(data: EventData, settings: &PipelineSettings) -> Arc<EventData> {
    Arc::new(match &settings.public_url {
        Some(base) => data.minting_at(base),
        None => data,
    })
}

impl Components {
    /// Builds the adapters. With the AWS backend this loads the AWS configuration
    /// once; `check` verifies the table exists (the dev server does, Lambdas skip it).
    pub async fn build(settings: &PipelineSettings, check: bool) -> Result<Self> {
        let cache = |store: &Arc<dyn IntegrationStore>| {
            Arc::new(IntegrationCache::new(
                store.clone(),
                settings.integration_cache,
            ))
        };
        Ok(match settings.backend {
            Backend::Memory => {
                // Only customer queues use AWS here; a fixed region keeps loading from
                // looking anything up (each integration names its own region).
                let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new("us-east-1"))
                    .load()
                    .await;
                let q = Arc::new(MemoryQueue::new(
                    LOCAL_VISIBILITY,
                    crate::retry::MAX_RECEIVES,
                ));
                let store = Arc::new(MemoryIntegrationStore::sealed(Arc::new(Vault::local()?)));
                let integrations: Arc<dyn IntegrationStore> = store.clone();
                let bodies: Arc<dyn EventBodies> = Arc::new(MemoryBodies::new());
                let event_data = event_data(
                    EventData::new(Arc::new(MemoryMacKey::random()?), bodies.clone()),
                    settings,
                );
                Self {
                    cache: cache(&integrations),
                    integrations,
                    retired_secrets: store,
                    log: Arc::new(MemoryDeliveryLog::default()),
                    idempotency: Arc::new(MemoryIdempotency::new()),
                    rate: Arc::new(MemoryRateLimiter::new()),
                    queue: Some(q.clone()),
                    source: Some(q.clone()),
                    dead_letters: Some(q.clone()),
                    memory_queue: Some(q),
                    bodies: Some(bodies),
                    event_data: Some(event_data),
                    aws,
                    settings: settings.clone(),
                }
            }
            Backend::Aws => {
                let sdk = crate::aws::load_config().await;
                let table = settings.table.clone().unwrap_or_default();
                let mut store = DynamoIntegrationStore::from_sdk(&sdk, table.clone());
                if let Some(key) = &settings.kms_key_id {
                    store = store.with_vault(Arc::new(Vault::new(Arc::new(KmsKeys::from_sdk(
                        &sdk,
                        key.clone(),
                    )))));
                }
                if check {
                    store.check_table().await?;
                }
                let sqs = settings.queue_url.as_ref().map(|url| {
                    let queue = SqsJobQueue::from_sdk(&sdk, url.clone());
                    Arc::new(match &settings.dlq_url {
                        Some(dlq) => queue.with_dead_letter_queue(dlq.clone()),
                        None => queue,
                    })
                });
                let store = Arc::new(store);
                let integrations: Arc<dyn IntegrationStore> = store.clone();
                let dead_letters = match (&sqs, &settings.dlq_url) {
                    (Some(q), Some(dlq)) => Some(Arc::new(SqsDeadLetters::from_sdk(
                        &sdk,
                        dlq.clone(),
                        q.as_ref().clone(),
                    )) as Arc<dyn DeadLetters>),
                    _ => None,
                };
                let bodies = settings.event_bucket.as_ref().map(|bucket| {
                    Arc::new(S3Bodies::from_sdk(&sdk, bucket.clone())) as Arc<dyn EventBodies>
                });
                let event_data = match (&bodies, &settings.dataref_key_id) {
                    (Some(bodies), Some(key)) => Some(event_data(
                        EventData::new(
                            Arc::new(KmsMac::from_sdk(&sdk, key.clone())),
                            bodies.clone(),
                        ),
                        settings,
                    )),
                    _ => None,
                };
                Self {
                    dead_letters,
                    bodies,
                    event_data,
                    cache: cache(&integrations),
                    integrations,
                    retired_secrets: store,
                    log: Arc::new(DynamoDeliveryLog::from_sdk(
                        &sdk,
                        table.clone(),
                        settings.log_retention,
                    )),
                    rate: Arc::new(DynamoRateLimiter::from_sdk(&sdk, table.clone())),
                    idempotency: Arc::new(DynamoIdempotency::from_sdk(&sdk, table)),
                    queue: sqs.clone().map(|q| q as Arc<dyn JobQueue>),
                    source: sqs.map(|q| q as Arc<dyn JobSource>),
                    memory_queue: None,
                    aws: sdk,
                    settings: settings.clone(),
                }
            }
        })
    }

    /// Fails unless this process can open integration secrets: with the AWS backend,
    /// `HERALD_KMS_KEY_ID` must be set (the api re-masks and tests, the fan-out
    /// delivers; ingest routes on masks and needs no key).
    pub fn require_secrets(&self) -> Result<()> {
        if self.settings.backend == Backend::Aws && self.settings.kms_key_id.is_none() {
            return Err(Error::Config(
                "HERALD_KMS_KEY_ID must be set: this function seals or opens integration secrets"
                    .into(),
            ));
        }
        Ok(())
    }

    fn queue(&self) -> Result<Arc<dyn JobQueue>> {
        self.queue.clone().ok_or_else(|| {
            Error::Config("HERALD_QUEUE_URL must be set (the internal queue)".into())
        })
    }

    /// The ingest use case.
    pub fn ingest(&self) -> Result<Ingest> {
        Ok(Ingest::new(
            self.cache.clone(),
            self.idempotency.clone(),
            self.queue()?,
            IngestSettings::default(),
        )
        .with_bodies(self.bodies.clone()))
    }

    /// The ingest through which the API announces integration changes
    /// ([`crate::integrations::Integrations::announcing`]), when this process has
    /// the internal queue. It reads a store's integrations afresh at every change
    /// (no cache): changes are rare, and an integration created a moment ago must
    /// hear of the next one.
    pub fn announcer(&self) -> Option<Ingest> {
        let queue = self.queue.clone()?;
        Some(
            Ingest::new(
                Arc::new(IntegrationCache::new(
                    self.integrations.clone(),
                    Duration::ZERO,
                )),
                self.idempotency.clone(),
                queue,
                IngestSettings::default(),
            )
            .with_bodies(self.bodies.clone()),
        )
    }

    /// Every target's deliverer, with its clients (built here, once).
    pub fn deliverer(&self) -> Result<Arc<dyn Deliverer>> {
        let guard = self.settings.address_guard.clone();
        let extra_ca = |path: &Option<String>, setting: &str| match path {
            Some(path) => crate::net::client::read_pem(path)
                .map_err(|e| Error::Config(format!("{setting}: {e}"))),
            None => Ok(Vec::new()),
        };
        let webhook = WebhookDeliverer::new(guard.clone(), self.settings.webhook_timeout)
            .map_err(Error::Config)?
            .trusting(extra_ca(
                &self.settings.webhook_extra_ca,
                "HERALD_WEBHOOK_EXTRA_CA",
            )?);
        let sqs = SqsDeliverer::new(self.aws.clone());
        let eventbridge = EventBridgeDeliverer::new(self.aws.clone());
        let sns = SnsDeliverer::new(self.aws.clone());
        let stomp_ca = extra_ca(&self.settings.stomp_extra_ca, "HERALD_STOMP_EXTRA_CA")?;
        let stomp = StompDeliverer::new(guard, &stomp_ca, STOMP_TIMEOUT)
            .map_err(Error::Config)?
            .dangerous_allow_plain(self.settings.allow_plain_stomp);
        Ok(Arc::new(
            TargetDeliverer::new(Arc::new(webhook))
                .with_sqs(Arc::new(sqs))
                .with_stomp(Arc::new(stomp))
                .with_eventbridge(Arc::new(eventbridge))
                .with_sns(Arc::new(sns)),
        ))
    }

    /// The fan-out use case. With the AWS backend it needs the DLQ
    /// (`HERALD_DLQ_URL`): it moves jobs there after their last attempt.
    pub fn fanout(&self) -> Result<Fanout> {
        self.require_secrets()?;
        if self.settings.backend == Backend::Aws && self.settings.dlq_url.is_none() {
            return Err(Error::Config(
                "HERALD_DLQ_URL must be set: the fan-out moves jobs to the DLQ after their last attempt".into(),
            ));
        }
        if self.settings.backend == Backend::Aws
            && self.bodies.is_some()
            && (self.event_data.is_none() || self.settings.public_url.is_none())
        {
            return Err(Error::Config(
                "HERALD_DATAREF_KEY_ID and HERALD_PUBLIC_URL must be set with HERALD_EVENT_BUCKET: the fan-out hands queue messages a dataref of data too large for them".into(),
            ));
        }
        Ok(Fanout::new(
            self.cache.clone(),
            self.deliverer()?,
            self.log.clone(),
            self.queue()?,
            RetryPolicy::scaled(self.settings.retry_scale),
        )
        .with_metrics(self.settings.emf_metrics)
        .with_stack(self.settings.stack_name.clone())
        .with_auto_disable(self.settings.auto_disable_after)
        .with_rate_limiter(self.rate.clone())
        .with_bodies(self.bodies.clone())
        .with_event_data(self.event_data.clone())
        .with_alerts(self.announcer())
        // Past every target's own timeout, so that their reasons come first.
        .with_attempt_limit(
            self.settings
                .webhook_timeout
                .max(STOMP_TIMEOUT)
                .max(crate::delivery::sqs::SEND_TIMEOUT)
                + ATTEMPT_SLACK,
        ))
    }
}
