//! An `aws_eventbridge` integration's configuration: the event bus ARN, its region,
//! an optional prefix of each event's `DetailType`, and the credentials (as SQS's).

use super::aws::{parse_auth, parse_region, resource_arn, same_region, AUTH_FIELDS};
use super::*;
use crate::model::EventBridgeConfig;

/// The longest `detail_type_prefix`: with the longest event key it stays within
/// EventBridge's 128 characters of `DetailType`.
pub const MAX_DETAIL_TYPE_PREFIX: usize = 64;

pub(super) fn parse(c: &mut Config<'_>) -> Option<EventBridgeConfig> {
    let mut fields = vec!["event_bus_arn", "region", "detail_type_prefix"];
    fields.extend_from_slice(AUTH_FIELDS);
    c.only(IntegrationType::AwsEventBridge, &fields);
    let region = parse_region(c);
    let arn = c.required_str("event_bus_arn", 1600).and_then(|arn| {
        if event_bus_region(&arn).is_some() {
            Some(arn)
        } else {
            c.error(
                "event_bus_arn",
                "must be an event bus ARN: arn:aws:events:<region>:<account-id>:event-bus/<name>",
            );
            None
        }
    });
    let region = same_region(
        c,
        region,
        arn.as_deref().and_then(event_bus_region),
        "event bus ARN",
    );
    let detail_type_prefix = c.optional_str("detail_type_prefix", MAX_DETAIL_TYPE_PREFIX);
    let auth = parse_auth(c);
    Some(EventBridgeConfig {
        event_bus_arn: arn?,
        region: region?,
        detail_type_prefix,
        auth: auth?,
    })
}

/// The region of an event bus ARN, `None` when `arn` is not one. The bus name is 1
/// to 256 of `[A-Za-z0-9/._-]`.
fn event_bus_region(arn: &str) -> Option<&str> {
    let (region, resource) = resource_arn(arn, "events")?;
    let name = resource.strip_prefix("event-bus/")?;
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    ok.then_some(region)
}
