//! Delivery to targets: one module per target type behind [`crate::ports::Deliverer`],
//! and the dispatcher that picks one by the integration's target type. What an attempt
//! comes to and leaves behind is in [`crate::attempt`].

pub mod envelope;
pub mod sqs;
pub mod stomp;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{Integration, Target};
use crate::ports::Deliverer;

/// Chooses the deliverer for each integration's target type.
pub struct TargetDeliverer {
    webhook: Arc<dyn Deliverer>,
    sqs: Option<Arc<dyn Deliverer>>,
    stomp: Option<Arc<dyn Deliverer>>,
}

impl TargetDeliverer {
    /// Dispatches webhooks to `webhook`; other targets are refused.
    pub fn new(webhook: Arc<dyn Deliverer>) -> Self {
        Self {
            webhook,
            sqs: None,
            stomp: None,
        }
    }

    /// Dispatches `stomp` integrations to `stomp`.
    pub fn with_stomp(mut self, stomp: Arc<dyn Deliverer>) -> Self {
        self.stomp = Some(stomp);
        self
    }

    /// Dispatches `aws_sqs` integrations to `sqs`.
    pub fn with_sqs(mut self, sqs: Arc<dyn Deliverer>) -> Self {
        self.sqs = Some(sqs);
        self
    }
}

#[async_trait]
impl Deliverer for TargetDeliverer {
    async fn deliver(
        &self,
        integration: &Integration,
        job: &DeliveryJob,
        attempt: u32,
    ) -> DeliveryResult {
        match (&integration.target, &self.sqs, &self.stomp) {
            (Target::Webhook(_), _, _) => self.webhook.deliver(integration, job, attempt).await,
            (Target::AwsSqs(_), Some(sqs), _) => sqs.deliver(integration, job, attempt).await,
            (Target::Stomp(_), _, Some(stomp)) => stomp.deliver(integration, job, attempt).await,
            _ => DeliveryResult::failed(
                Outcome::Permanent,
                format!(
                    "delivery to {} targets is not available in this version of Herald",
                    integration.target.kind().as_str()
                ),
                Duration::ZERO,
            ),
        }
    }
}
