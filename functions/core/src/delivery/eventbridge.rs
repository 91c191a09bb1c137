//! The customer EventBridge target: one event per job on the store owner's own event
//! bus, with `Source` `herald`, `DetailType` the event key (after the integration's
//! `detail_type_prefix`, if any), `Time` when the event happened and `Detail` the
//! CloudEvent the queues get, through a client per integration
//! (`customer_aws`).
//!
//! `PutEvents` answers 200 even when it refuses the entry: the refusal is in the
//! answer's entries (`FailedEntryCount`, `ErrorCode`), and is read as a failed call's
//! code is (<https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html>).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;

use super::customer_aws::{classify, classify_code, CustomerClients, Service};
use super::envelope::{cloud_event, data_ref, fit_message};
use super::DeliverTo;
use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{EventBridgeConfig, Integration};

/// The largest `PutEvents` entry: its `Time` (14 bytes), `Source`, `DetailType` and
/// `Detail` together
/// (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html>).
pub const MAX_EVENTBRIDGE_ENTRY: usize = 256 * 1024;

/// The `Source` of every event Herald puts: a store owner's rules match on it.
pub const SOURCE: &str = "herald";

/// The bytes an entry's `Time` counts for.
const TIME_BYTES: usize = 14;

const EVENTBRIDGE: Service = Service {
    noun: "event bus",
    missing: &["ResourceNotFoundException"],
    busy: &["InternalException"],
    refused_for_good: &["MalformedDetail", "InvalidArgument", "ValidationException"],
};

/// Delivers to customer event buses.
pub struct EventBridgeDeliverer {
    clients: CustomerClients<Client>,
}

impl EventBridgeDeliverer {
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
impl DeliverTo<EventBridgeConfig> for EventBridgeDeliverer {
    async fn deliver(
        &self,
        integration: &Integration,
        config: &EventBridgeConfig,
        job: &DeliveryJob,
        _attempt: u32,
    ) -> DeliveryResult {
        let started = Instant::now();
        let detail_type = format!(
            "{}{}",
            config.detail_type_prefix.as_deref().unwrap_or_default(),
            job.event.kind
        );
        let limit = MAX_EVENTBRIDGE_ENTRY - TIME_BYTES - SOURCE.len() - detail_type.len();
        let detail = match fit_message(cloud_event(job, integration), limit, data_ref(job)) {
            Ok(detail) => detail,
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
        let entry = PutEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .event_bus_name(&config.event_bus_arn)
            .time(DateTime::from_millis(
                job.event.occurred_at.timestamp_millis(),
            ))
            .build();
        match client.put_events().entries(entry).send().await {
            Ok(out) => {
                let first = out.entries().first();
                let refused = first.and_then(|e| e.error_code());
                match (
                    out.failed_entry_count(),
                    refused,
                    first.and_then(|e| e.event_id()),
                ) {
                    (0, None, Some(id)) => DeliveryResult {
                        outcome: Outcome::Delivered,
                        status_code: Some(200),
                        body: format!("EventId {id}"),
                        error_detail: None,
                        duration: started.elapsed(),
                    },
                    (_, code, _) => {
                        let (outcome, detail) =
                            classify_code(code.unwrap_or("unknown"), &EVENTBRIDGE);
                        DeliveryResult::failed(outcome, detail, started.elapsed())
                    }
                }
            }
            Err(e) => {
                let (outcome, detail) = classify(&e, &EVENTBRIDGE);
                DeliveryResult::failed(outcome, detail, started.elapsed())
            }
        }
    }
}
