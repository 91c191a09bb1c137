//! The integration model: what a store owner registers, and the five kinds of target.
//!
//! Secrets live in [`Secret`], whose `Debug` is redacted, so that no `{:?}` of an
//! integration can put a credential in a log line. Rendering for the API always goes
//! through [`Integration::to_resource`], which masks every secret.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::mask::mask;

/// The store (tenant) an integration belongs to.
///
/// Store ids come from the caller (a JWT claim, or a header for trusted callers), so
/// they are checked before use: 1 to 128 characters from `[A-Za-z0-9._:@-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StoreId(String);

impl StoreId {
    /// The longest store id accepted.
    pub const MAX_LEN: usize = 128;

    /// Checks and wraps a store id; `None` when it is empty, too long or has a
    /// character outside `[A-Za-z0-9._:@-]`.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
            });
        ok.then(|| Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A credential or shared secret. `Debug` never shows it; [`Secret::masked`] is the
/// only form that may leave the service.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the code that must use it (signing, authenticating).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The form shown in API responses: `*` for every character but the last four.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The kinds of integration, named as in Elastic Path's `integration_type` (its three,
/// and Herald's `aws_eventbridge` and `aws_sns`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IntegrationType {
    /// An HTTP endpoint that receives a `POST` per event.
    Webhook,
    /// The store owner's own Amazon SQS queue.
    AwsSqs,
    /// A queue on a STOMP broker (ActiveMQ, Amazon MQ, RabbitMQ).
    Stomp,
    /// The store owner's own Amazon EventBridge event bus.
    AwsEventBridge,
    /// The store owner's own Amazon SNS topic.
    AwsSns,
}

impl IntegrationType {
    /// Every type, in the order the API documents them.
    pub const ALL: [IntegrationType; 5] = [
        Self::Webhook,
        Self::AwsSqs,
        Self::Stomp,
        Self::AwsEventBridge,
        Self::AwsSns,
    ];

    /// The wire name (`webhook`, `aws_sqs`, `stomp`, `aws_eventbridge`, `aws_sns`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::AwsSqs => "aws_sqs",
            Self::Stomp => "stomp",
            Self::AwsEventBridge => "aws_eventbridge",
            Self::AwsSns => "aws_sns",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// Where and how an integration's events are delivered.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Target {
    /// `integration_type: webhook`.
    Webhook(WebhookConfig),
    /// `integration_type: aws_sqs`.
    AwsSqs(SqsConfig),
    /// `integration_type: stomp`.
    Stomp(StompConfig),
    /// `integration_type: aws_eventbridge`.
    AwsEventBridge(EventBridgeConfig),
    /// `integration_type: aws_sns`.
    AwsSns(SnsConfig),
}

/// Configuration of a webhook integration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WebhookConfig {
    /// Absolute http(s) URL that receives the `POST`.
    pub url: String,
    /// Shared secret: sent as `X-Moltin-Secret-Key` and used to sign deliveries.
    pub secret_key: Option<Secret>,
    /// The secret a rotation replaced, still signing deliveries until its overlap
    /// ends (`POST /v2/integrations/{id}/rotate-secret`). Not part of the
    /// `configuration` object: it is shown (masked) in `meta.secret_rotation`.
    pub retiring: Option<RetiringSecret>,
}

/// A webhook secret on its way out: deliveries carry a signature with it as well as
/// with the current secret until `until`, so receivers switch at their own pace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RetiringSecret {
    /// The previous secret.
    pub secret: Secret,
    /// When it stops signing; the sweep ([`crate::sweep`]) takes it out of storage
    /// within minutes after (or the integration's next write, if that comes first).
    pub until: DateTime<Utc>,
}

impl WebhookConfig {
    /// The secrets that sign a delivery made at `now`: the current one, then the
    /// retiring one while its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        let retiring = self
            .retiring
            .as_ref()
            .filter(|r| r.until > now)
            .map(|r| &r.secret);
        self.secret_key.iter().chain(retiring).collect()
    }
}

/// Herald's extension of an integration (its `delivery` attribute): how deliveries
/// are made. Every field is optional; one left unset behaves as Elastic Path does, and
/// an integration with none set is shown without `delivery`, as Elastic Path shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DeliveryOptions {
    /// `secret_header` (webhooks): send the secret in `X-Moltin-Secret-Key`. Unset:
    /// yes, as Elastic Path does.
    pub secret_header: Option<bool>,
    /// `retry_window_minutes`: how long a job is retried before it is dead-lettered.
    /// Unset: [`DeliveryOptions::DEFAULT_RETRY_WINDOW_MINUTES`].
    pub retry_window_minutes: Option<u32>,
    /// `max_per_second`: the most deliveries the integration is sent per second,
    /// across every fan-out invocation ([`crate::ports::RateLimiter`]). Unset: no limit.
    pub max_per_second: Option<u32>,
}

impl DeliveryOptions {
    /// The retry window without `retry_window_minutes` (Elastic Path's 30 minutes).
    pub const DEFAULT_RETRY_WINDOW_MINUTES: u32 = 30;
    /// The longest retry window (a day).
    pub const MAX_RETRY_WINDOW_MINUTES: u32 = 1440;
    /// The highest `max_per_second`.
    pub const MAX_PER_SECOND: u32 = 1000;

    /// Whether deliveries carry the secret in `X-Moltin-Secret-Key`.
    pub fn sends_secret_header(&self) -> bool {
        self.secret_header.unwrap_or(true)
    }

    /// How long a job is retried, from its first attempt.
    pub fn retry_window(&self) -> Duration {
        let minutes = self
            .retry_window_minutes
            .unwrap_or(Self::DEFAULT_RETRY_WINDOW_MINUTES);
        Duration::from_secs(u64::from(minutes) * 60)
    }

    /// Whether no field is set (the integration behaves exactly as Elastic Path's).
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }

    /// The `delivery` object: the fields that are set.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if let Some(v) = self.secret_header {
            map.insert("secret_header".into(), Value::Bool(v));
        }
        if let Some(v) = self.retry_window_minutes {
            map.insert("retry_window_minutes".into(), Value::from(v));
        }
        if let Some(v) = self.max_per_second {
            map.insert("max_per_second".into(), Value::from(v));
        }
        Value::Object(map)
    }
}

/// Configuration of an Amazon SQS integration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SqsConfig {
    /// The queue URL (`https://sqs.<region>.amazonaws.com/<account>/<queue>`).
    pub url: String,
    /// The queue's region.
    pub region: String,
    /// How Herald authenticates to the store owner's account.
    pub auth: SqsAuth,
}

/// Configuration of an Amazon EventBridge integration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventBridgeConfig {
    /// The event bus ARN (`arn:aws:events:<region>:<account>:event-bus/<name>`).
    pub event_bus_arn: String,
    /// The bus's region.
    pub region: String,
    /// Put before the event key in each event's `DetailType` (`acme.` gives
    /// `acme.order.paid`); none: the event key alone.
    pub detail_type_prefix: Option<String>,
    /// How Herald authenticates to the store owner's account (as for SQS).
    pub auth: SqsAuth,
}

/// Configuration of an Amazon SNS integration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SnsConfig {
    /// The topic ARN (`arn:aws:sns:<region>:<account>:<name>`, `.fifo` for a FIFO topic).
    pub topic_arn: String,
    /// The topic's region.
    pub region: String,
    /// How Herald authenticates to the store owner's account (as for SQS).
    pub auth: SqsAuth,
}

impl SnsConfig {
    /// Whether the topic is a FIFO topic (its name ends in `.fifo`): each message
    /// then needs a group id and a deduplication id.
    pub fn is_fifo(&self) -> bool {
        self.topic_arn.ends_with(".fifo")
    }
}

/// Credentials for a customer's AWS target (SQS queue, EventBridge bus, SNS topic).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SqsAuth {
    /// Static access keys, as Elastic Path takes them.
    Keys {
        /// `aws_access_key_id`.
        access_key_id: Secret,
        /// `aws_secret_access_key`.
        secret_access_key: Secret,
    },
    /// Keyless: Herald assumes this role (with the external id) at delivery time.
    AssumeRole {
        /// `role_arn`.
        role_arn: String,
        /// `external_id`, guarding against the confused-deputy problem.
        external_id: String,
    },
}

/// A new external id: `herald-` and 128 random bits in hex (from the operating
/// system's generator, through `uuid`'s v4), within IAM's alphabet for external ids.
/// Stores never choose their own: a chosen one can be another store's.
pub fn issue_external_id() -> String {
    format!("herald-{}", Uuid::new_v4().simple())
}

/// The session tag every customer role session carries: the store Herald delivers
/// for. The customer's trust policy requires it (`aws:RequestTag/herald:store`).
pub const STORE_SESSION_TAG: &str = "herald:store";

/// Configuration of a STOMP integration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StompConfig {
    /// Broker addresses, one per broker for failover (`stomp+ssl://host:61614`).
    pub addresses: Vec<String>,
    /// Destination, e.g. `/queue/orders`.
    pub destination: String,
    /// Broker login.
    pub username: String,
    /// Broker passcode.
    pub password: Secret,
    /// The CONNECT frame's `host` (RabbitMQ's virtual host); default the broker's host.
    pub virtual_host: Option<String>,
}

/// Names of the configuration fields that hold secrets, by integration type.
pub fn secret_fields(kind: IntegrationType) -> &'static [&'static str] {
    match kind {
        IntegrationType::Webhook => &["secret_key"],
        IntegrationType::AwsSqs | IntegrationType::AwsEventBridge | IntegrationType::AwsSns => {
            &["aws_access_key_id", "aws_secret_access_key"]
        }
        IntegrationType::Stomp => &["password"],
    }
}

impl Target {
    /// The `integration_type` of this target.
    pub fn kind(&self) -> IntegrationType {
        match self {
            Self::Webhook(_) => IntegrationType::Webhook,
            Self::AwsSqs(_) => IntegrationType::AwsSqs,
            Self::Stomp(_) => IntegrationType::Stomp,
            Self::AwsEventBridge(_) => IntegrationType::AwsEventBridge,
            Self::AwsSns(_) => IntegrationType::AwsSns,
        }
    }

    /// The AWS credentials of a target in the store owner's AWS account (SQS,
    /// EventBridge, SNS); `None` for the others.
    pub fn aws_auth(&self) -> Option<&SqsAuth> {
        match self {
            Self::AwsSqs(c) => Some(&c.auth),
            Self::AwsEventBridge(c) => Some(&c.auth),
            Self::AwsSns(c) => Some(&c.auth),
            Self::Webhook(_) | Self::Stomp(_) => None,
        }
    }

    /// [`Target::aws_auth`], to change.
    pub fn aws_auth_mut(&mut self) -> Option<&mut SqsAuth> {
        match self {
            Self::AwsSqs(c) => Some(&mut c.auth),
            Self::AwsEventBridge(c) => Some(&mut c.auth),
            Self::AwsSns(c) => Some(&mut c.auth),
            Self::Webhook(_) | Self::Stomp(_) => None,
        }
    }

    /// The `configuration` object. With `reveal` false every secret is masked (the
    /// API form); with `reveal` true secrets are in clear (the storage form only).
    pub fn configuration(&self, reveal: bool) -> Value {
        let secret = |s: &Secret| {
            if reveal {
                Value::String(s.expose().to_owned())
            } else {
                Value::String(s.masked())
            }
        };
        let mut map = Map::new();
        match self {
            Self::Webhook(c) => {
                map.insert("url".into(), json!(c.url));
                if let Some(s) = &c.secret_key {
                    map.insert("secret_key".into(), secret(s));
                }
            }
            Self::AwsSqs(c) => {
                map.insert("url".into(), json!(c.url));
                map.insert("region".into(), json!(c.region));
            }
            Self::AwsEventBridge(c) => {
                map.insert("event_bus_arn".into(), json!(c.event_bus_arn));
                map.insert("region".into(), json!(c.region));
                if let Some(p) = &c.detail_type_prefix {
                    map.insert("detail_type_prefix".into(), json!(p));
                }
            }
            Self::AwsSns(c) => {
                map.insert("topic_arn".into(), json!(c.topic_arn));
                map.insert("region".into(), json!(c.region));
            }
            Self::Stomp(c) => {
                map.insert("addresses".into(), json!(c.addresses));
                map.insert("destination".into(), json!(c.destination));
                map.insert("username".into(), json!(c.username));
                map.insert("password".into(), secret(&c.password));
                if let Some(h) = &c.virtual_host {
                    map.insert("host".into(), json!(h));
                }
            }
        }
        match self.aws_auth() {
            Some(SqsAuth::Keys {
                access_key_id,
                secret_access_key,
            }) => {
                map.insert("aws_access_key_id".into(), secret(access_key_id));
                map.insert("aws_secret_access_key".into(), secret(secret_access_key));
            }
            Some(SqsAuth::AssumeRole {
                role_arn,
                external_id,
            }) => {
                map.insert("role_arn".into(), json!(role_arn));
                map.insert("external_id".into(), json!(external_id));
            }
            None => {}
        }
        Value::Object(map)
    }
}

/// An integration as stored: who owns it, what it observes, where it delivers.
#[derive(Clone, PartialEq, Debug)]
pub struct Integration {
    /// Server-assigned id (UUIDv7, so ids sort in creation order).
    pub id: Uuid,
    /// The owning store.
    pub store_id: StoreId,
    /// Human name, required.
    pub name: String,
    /// Free text, may be empty.
    pub description: String,
    /// Only enabled integrations receive events. Defaults to `false`, as in Elastic Path.
    pub enabled: bool,
    /// Observable event keys (see [`crate::catalog`]), without duplicates.
    pub observes: Vec<String>,
    /// Where events go.
    pub target: Target,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version; bumped on every write.
    pub version: u64,
    /// How its deliveries have been going (written by the fan-out).
    pub health: Health,
    /// Herald's `delivery` options (none set: as Elastic Path delivers).
    pub delivery: DeliveryOptions,
}

/// How an integration's deliveries have been going. The fan-out records a success
/// (at most once a minute per integration and process, and always after failures),
/// every job that failed for good, and disables the integration after
/// `HERALD_AUTO_DISABLE_AFTER` consecutive failed jobs or at once on a webhook's
/// `410 Gone`. Re-enabling it through the API resets the count.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Health {
    /// Jobs in a row that failed for good (retries exhausted or refused).
    pub consecutive_failures: u32,
    /// The last delivery that succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last job that failed for good.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Why Herald disabled the integration, when it did.
    pub disabled_reason: Option<String>,
}

impl Health {
    /// `healthy`, `failing` or `disabled`, given whether the integration is enabled.
    pub fn status(&self, enabled: bool) -> &'static str {
        if !enabled {
            "disabled"
        } else if self.consecutive_failures > 0 {
            "failing"
        } else {
            "healthy"
        }
    }

    /// The `meta.health` object of the API.
    pub fn to_json(&self, enabled: bool) -> Value {
        json!({
            "status": self.status(enabled),
            "consecutive_failures": self.consecutive_failures,
            "last_success_at": self.last_success_at.as_ref().map(format_timestamp),
            "last_failure_at": self.last_failure_at.as_ref().map(format_timestamp),
            "disabled_reason": if enabled { None } else { self.disabled_reason.clone() },
        })
    }
}

/// What the fan-out reports about an integration's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthReport {
    /// A delivery succeeded.
    Succeeded {
        /// When.
        at: DateTime<Utc>,
    },
    /// A job failed for good; disable after `disable_after` in a row (0: never).
    JobFailed {
        /// When.
        at: DateTime<Utc>,
        /// The threshold.
        disable_after: u32,
        /// What the last attempt said.
        reason: String,
    },
    /// The target said it is gone for good (`410 Gone`): disable now.
    Gone {
        /// When.
        at: DateTime<Utc>,
        /// What it said.
        reason: String,
    },
}

/// What one health report changed ([`crate::ports::IntegrationStore::record_health`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthChange {
    /// The health the report was applied to.
    pub before: Health,
    /// The health it left.
    pub after: Health,
    /// Whether this report disabled the integration.
    pub disabled: bool,
}

impl HealthReport {
    /// Applies the report to `health`; `true` when the integration must now be
    /// disabled (it was enabled and crossed the threshold, or is gone).
    pub fn apply(&self, health: &mut Health, enabled: bool) -> bool {
        match self {
            Self::Succeeded { at } => {
                health.consecutive_failures = 0;
                health.last_success_at = Some(*at);
                false
            }
            Self::JobFailed {
                at,
                disable_after,
                reason,
            } => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                health.last_failure_at = Some(*at);
                let disable =
                    enabled && *disable_after > 0 && health.consecutive_failures >= *disable_after;
                if disable {
                    health.disabled_reason = Some(format!(
                        "disabled by Herald after {} consecutive failed jobs; last: {reason}",
                        health.consecutive_failures
                    ));
                }
                disable
            }
            Self::Gone { at, reason } => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                health.last_failure_at = Some(*at);
                if enabled {
                    health.disabled_reason =
                        Some(format!("disabled by Herald: the target is gone ({reason})"));
                }
                enabled
            }
        }
    }
}

/// Formats a timestamp as the API does: RFC 3339, milliseconds, `Z`.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Integration {
    /// The JSON:API resource object, secrets masked. `base_url` is prepended to
    /// `links.self` (e.g. `https://api.example.com`); it may be empty. `delivery` is
    /// there only when an option is set, `meta.secret_rotation` only while a rotated
    /// webhook secret still signs.
    pub fn to_resource(&self, base_url: &str) -> Value {
        let mut resource = json!({
            "id": self.id.to_string(),
            "type": "integration",
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "integration_type": self.target.kind().as_str(),
            "observes": self.observes,
            "configuration": self.target.configuration(false),
            "links": { "self": format!("{base_url}/v2/integrations/{}", self.id) },
            "meta": {
                "timestamps": {
                    "created_at": format_timestamp(&self.created_at),
                    "updated_at": format_timestamp(&self.updated_at),
                },
                "health": self.health.to_json(self.enabled),
            }
        });
        if !self.delivery.is_unset() {
            resource["delivery"] = self.delivery.to_json();
        }
        if let Target::Webhook(WebhookConfig {
            retiring: Some(r), ..
        }) = &self.target
        {
            resource["meta"]["secret_rotation"] = json!({
                "previous_secret_key": r.secret.masked(),
                "ends_at": format_timestamp(&r.until),
            });
        }
        resource
    }

    /// Drops a retiring webhook secret whose overlap has ended by `now`: the stores
    /// call it on every read and write, so an ended rotation is never shown and never
    /// signs, whether or not the sweep ([`crate::sweep`]) has taken it out yet.
    pub fn retire_expired(&mut self, now: DateTime<Utc>) {
        if let Target::Webhook(c) = &mut self.target {
            if c.retiring.as_ref().is_some_and(|r| r.until <= now) {
                c.retiring = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_secret_never_shows_it() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let cfg = WebhookConfig {
            url: "https://example.com".into(),
            secret_key: Some(s),
            retiring: None,
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn store_ids_are_limited_to_a_safe_alphabet() {
        assert!(StoreId::parse("default").is_some());
        assert!(StoreId::parse("store-1.eu_west:a@b").is_some());
        assert!(StoreId::parse("").is_none());
        assert!(StoreId::parse("a b").is_none());
        assert!(StoreId::parse("a#b").is_none());
        assert!(StoreId::parse(&"x".repeat(129)).is_none());
        assert!(StoreId::parse(&"x".repeat(128)).is_some());
    }

    #[test]
    fn integration_types_round_trip_through_their_wire_names() {
        for t in IntegrationType::ALL {
            assert_eq!(IntegrationType::parse(t.as_str()), Some(t));
        }
        assert_eq!(IntegrationType::parse("kafka"), None);
    }
}
