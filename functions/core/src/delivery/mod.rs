//! Delivery to targets: one module per target type, each behind [`DeliverTo`] with
//! its own configuration, and the dispatcher ([`TargetDeliverer`], the
//! [`crate::ports::Deliverer`]) that picks one by the integration's target type and
//! hands it that type's configuration. What an attempt comes to and leaves behind is
//! in [`crate::attempt`].

mod customer_aws;
pub mod envelope;
pub mod eventbridge;
pub mod sns;
pub mod sqs;
pub mod stomp;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{
    EventBridgeConfig, Integration, SnsConfig, SqsConfig, StompConfig, Target, WebhookConfig,
};
use crate::ports::Deliverer;

/// Delivers to one target type, whose configuration is `C`. The dispatcher takes the
/// configuration out of the integration once and hands it over, so a deliverer is
/// never handed another type's integration and has nothing to check.
#[async_trait]
pub trait DeliverTo<C: Sync>: Send + Sync {
    /// One attempt at `config`, `integration`'s target; never panics on bad input,
    /// never returns early without an outcome.
    async fn deliver(
        &self,
        integration: &Integration,
        config: &C,
        job: &DeliveryJob,
        attempt: u32,
    ) -> DeliveryResult;
}

/// Chooses the deliverer for each integration's target type.
pub struct TargetDeliverer {
    webhook: Arc<dyn DeliverTo<WebhookConfig>>,
    sqs: Option<Arc<dyn DeliverTo<SqsConfig>>>,
    stomp: Option<Arc<dyn DeliverTo<StompConfig>>>,
    eventbridge: Option<Arc<dyn DeliverTo<EventBridgeConfig>>>,
    sns: Option<Arc<dyn DeliverTo<SnsConfig>>>,
}

impl TargetDeliverer {
    /// Dispatches webhooks to `webhook`; other targets are refused.
    pub fn new(webhook: Arc<dyn DeliverTo<WebhookConfig>>) -> Self {
        Self {
            webhook,
            sqs: None,
            stomp: None,
            eventbridge: None,
            sns: None,
        }
    }

    /// Dispatches `stomp` integrations to `stomp`.
    pub fn with_stomp(mut self, stomp: Arc<dyn DeliverTo<StompConfig>>) -> Self {
        self.stomp = Some(stomp);
        self
    }

    /// Dispatches `aws_sqs` integrations to `sqs`.
    pub fn with_sqs(mut self, sqs: Arc<dyn DeliverTo<SqsConfig>>) -> Self {
        self.sqs = Some(sqs);
        self
    }

    /// Dispatches `aws_eventbridge` integrations to `eventbridge`.
    pub fn with_eventbridge(mut self, eventbridge: Arc<dyn DeliverTo<EventBridgeConfig>>) -> Self {
        self.eventbridge = Some(eventbridge);
        self
    }

    /// Dispatches `aws_sns` integrations to `sns`.
    pub fn with_sns(mut self, sns: Arc<dyn DeliverTo<SnsConfig>>) -> Self {
        self.sns = Some(sns);
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
        match &integration.target {
            Target::Webhook(config) => {
                return self
                    .webhook
                    .deliver(integration, config, job, attempt)
                    .await
            }
            Target::AwsSqs(config) => {
                if let Some(sqs) = &self.sqs {
                    return sqs.deliver(integration, config, job, attempt).await;
                }
            }
            Target::Stomp(config) => {
                if let Some(stomp) = &self.stomp {
                    return stomp.deliver(integration, config, job, attempt).await;
                }
            }
            Target::AwsEventBridge(config) => {
                if let Some(eventbridge) = &self.eventbridge {
                    return eventbridge.deliver(integration, config, job, attempt).await;
                }
            }
            Target::AwsSns(config) => {
                if let Some(sns) = &self.sns {
                    return sns.deliver(integration, config, job, attempt).await;
                }
            }
        }
        DeliveryResult::failed(
            Outcome::Permanent,
            format!(
                "delivery to {} targets is not available in this version of Herald",
                integration.target.kind().as_str()
            ),
            Duration::ZERO,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::{
        EventBridgeConfig, Secret, SnsConfig, SqsAuth, SqsConfig, StompConfig, WebhookConfig,
    };
    use crate::testkit::{job_for, stomp, webhook};

    /// A deliverer of one target type that answers with what it was handed: the
    /// configuration's address and the integration's name.
    struct Echo;

    fn echo(address: &str, integration: &Integration, attempt: u32) -> DeliveryResult {
        DeliveryResult {
            outcome: Outcome::Delivered,
            status_code: None,
            body: format!("{address} for {} at attempt {attempt}", integration.name),
            error_detail: None,
            duration: Duration::ZERO,
        }
    }

    #[async_trait]
    impl DeliverTo<WebhookConfig> for Echo {
        async fn deliver(
            &self,
            integration: &Integration,
            config: &WebhookConfig,
            _job: &DeliveryJob,
            attempt: u32,
        ) -> DeliveryResult {
            echo(&format!("webhook {}", config.url), integration, attempt)
        }
    }

    #[async_trait]
    impl DeliverTo<SqsConfig> for Echo {
        async fn deliver(
            &self,
            integration: &Integration,
            config: &SqsConfig,
            _job: &DeliveryJob,
            attempt: u32,
        ) -> DeliveryResult {
            echo(&format!("queue {}", config.url), integration, attempt)
        }
    }

    #[async_trait]
    impl DeliverTo<StompConfig> for Echo {
        async fn deliver(
            &self,
            integration: &Integration,
            config: &StompConfig,
            _job: &DeliveryJob,
            attempt: u32,
        ) -> DeliveryResult {
            echo(
                &format!("broker {}", config.addresses[0]),
                integration,
                attempt,
            )
        }
    }

    #[async_trait]
    impl DeliverTo<EventBridgeConfig> for Echo {
        async fn deliver(
            &self,
            integration: &Integration,
            config: &EventBridgeConfig,
            _job: &DeliveryJob,
            attempt: u32,
        ) -> DeliveryResult {
            echo(
                &format!("bus {}", config.event_bus_arn),
                integration,
                attempt,
            )
        }
    }

    #[async_trait]
    impl DeliverTo<SnsConfig> for Echo {
        async fn deliver(
            &self,
            integration: &Integration,
            config: &SnsConfig,
            _job: &DeliveryJob,
            attempt: u32,
        ) -> DeliveryResult {
            echo(&format!("topic {}", config.topic_arn), integration, attempt)
        }
    }

    fn keys() -> SqsAuth {
        SqsAuth::Keys {
            access_key_id: Secret::new("AKIAIOSFODNN7EXAMPLE"),
            secret_access_key: Secret::new("a-secret-access-key"),
        }
    }

    fn bus() -> Integration {
        let mut i = webhook("bus", "s", &["order.paid"], true);
        i.target = Target::AwsEventBridge(EventBridgeConfig {
            event_bus_arn: "arn:aws:events:eu-west-1:123456789012:event-bus/orders".into(),
            region: "eu-west-1".into(),
            detail_type_prefix: None,
            auth: keys(),
        });
        i
    }

    fn topic() -> Integration {
        let mut i = webhook("topic", "s", &["order.paid"], true);
        i.target = Target::AwsSns(SnsConfig {
            topic_arn: "arn:aws:sns:eu-west-1:123456789012:orders".into(),
            region: "eu-west-1".into(),
            auth: keys(),
        });
        i
    }

    fn sqs() -> Integration {
        let mut i = webhook("queue", "s", &["order.paid"], true);
        i.target = Target::AwsSqs(SqsConfig {
            url: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders".into(),
            region: "eu-west-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("AKIAIOSFODNN7EXAMPLE"),
                secret_access_key: Secret::new("a-secret-access-key"),
            },
        });
        i
    }

    #[tokio::test]
    async fn each_integration_goes_to_the_deliverer_of_its_target_type_with_its_configuration() {
        // GIVEN a dispatcher with a deliverer for each target type
        let dispatcher = TargetDeliverer::new(Arc::new(Echo))
            .with_sqs(Arc::new(Echo))
            .with_stomp(Arc::new(Echo))
            .with_eventbridge(Arc::new(Echo))
            .with_sns(Arc::new(Echo));
        // WHEN an integration of each type is delivered to
        let hook = webhook("hook", "s", &["order.paid"], true);
        let queue = sqs();
        let broker = stomp(&["stomp+ssl://mq.example.com:61614"]);
        let (bus, topic) = (bus(), topic());
        let mut bodies = Vec::new();
        for (i, attempt) in [
            (&hook, 1),
            (&queue, 2),
            (&broker, 3),
            (&bus, 4),
            (&topic, 5),
        ] {
            bodies.push(dispatcher.deliver(i, &job_for(i), attempt).await.body);
        }
        // THEN each went to its own type's deliverer, with its own configuration
        assert_eq!(
            bodies,
            [
                "webhook https://example.com/hook for hook at attempt 1",
                "queue https://sqs.eu-west-1.amazonaws.com/123456789012/orders for queue at attempt 2",
                "broker stomp+ssl://mq.example.com:61614 for broker at attempt 3",
                "bus arn:aws:events:eu-west-1:123456789012:event-bus/orders for bus at attempt 4",
                "topic arn:aws:sns:eu-west-1:123456789012:orders for topic at attempt 5",
            ]
        );
    }

    #[tokio::test]
    async fn a_target_type_without_a_deliverer_fails_for_good() {
        // GIVEN a dispatcher with a webhook deliverer only
        let dispatcher = TargetDeliverer::new(Arc::new(Echo));
        // WHEN a queue and a broker integration are delivered to
        let queue = sqs();
        let broker = stomp(&["stomp+ssl://mq.example.com:61614"]);
        let queued = dispatcher.deliver(&queue, &job_for(&queue), 1).await;
        let brokered = dispatcher.deliver(&broker, &job_for(&broker), 1).await;
        // THEN both fail for good, saying which type is not delivered to
        assert_eq!(
            queued,
            DeliveryResult::failed(
                Outcome::Permanent,
                "delivery to aws_sqs targets is not available in this version of Herald",
                Duration::ZERO
            )
        );
        assert_eq!(
            brokered,
            DeliveryResult::failed(
                Outcome::Permanent,
                "delivery to stomp targets is not available in this version of Herald",
                Duration::ZERO
            )
        );
    }
}
