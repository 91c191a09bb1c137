//! Herald's `delivery` attribute: an object of optional fields, each `null` to go
//! back to Elastic Path's behaviour. On an update, fields left out keep their value
//! and `"delivery": null` clears them all.

use super::*;
use crate::model::DeliveryOptions;

const FIELDS: &[&str] = &["secret_header", "retry_window_minutes", "max_per_second"];

/// The `delivery` of a request over `current` (the stored options; default on a
/// create), or `None` when it has errors (pushed to `errors`).
pub(super) fn parse(
    current: DeliveryOptions,
    value: Option<&Value>,
    errors: &mut Vec<FieldError>,
) -> Option<DeliveryOptions> {
    let obj = match value {
        None => return Some(current),
        Some(Value::Null) => return Some(DeliveryOptions::default()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            errors.push(FieldError::new(
                "/data/delivery",
                "must be an object, e.g. {\"secret_header\": false}, or null",
            ));
            return None;
        }
    };
    let before = errors.len();
    let mut next = current;
    for key in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        errors.push(FieldError::new(
            format!("/data/delivery/{}", escape_pointer(key)),
            format!("is not a delivery option (options: {})", FIELDS.join(", ")),
        ));
    }
    match obj.get("secret_header") {
        None => {}
        Some(Value::Null) => next.secret_header = None,
        Some(Value::Bool(b)) => next.secret_header = Some(*b),
        Some(_) => errors.push(FieldError::new(
            "/data/delivery/secret_header",
            "must be true or false (or null for the default, true)",
        )),
    }
    let (min, max) = (
        DeliveryOptions::DEFAULT_RETRY_WINDOW_MINUTES,
        DeliveryOptions::MAX_RETRY_WINDOW_MINUTES,
    );
    match obj.get("retry_window_minutes") {
        None => {}
        Some(Value::Null) => next.retry_window_minutes = None,
        Some(v) => match v.as_u64().filter(|m| (u64::from(min)..=u64::from(max)).contains(m)) {
            Some(m) => next.retry_window_minutes = u32::try_from(m).ok(),
            None => errors.push(FieldError::new(
                "/data/delivery/retry_window_minutes",
                format!("must be a whole number of minutes from {min} to {max} (or null for the default, {min})"),
            )),
        },
    }
    let most = DeliveryOptions::MAX_PER_SECOND;
    match obj.get("max_per_second") {
        None => {}
        Some(Value::Null) => next.max_per_second = None,
        Some(v) => match v.as_u64().filter(|n| (1..=u64::from(most)).contains(n)) {
            Some(n) => next.max_per_second = u32::try_from(n).ok(),
            None => errors.push(FieldError::new(
                "/data/delivery/max_per_second",
                format!("must be a whole number of deliveries per second from 1 to {most} (or null for no limit)"),
            )),
        },
    }
    (errors.len() == before).then_some(next)
}

/// Options that mean nothing for the integration's type are refused: `secret_header`
/// is a webhook's.
pub(super) fn check_for(
    kind: IntegrationType,
    options: &DeliveryOptions,
    errors: &mut Vec<FieldError>,
) {
    if kind != IntegrationType::Webhook && options.secret_header.is_some() {
        errors.push(FieldError::new(
            "/data/delivery/secret_header",
            format!(
                "applies to webhook integrations only, not {}; send null to remove it",
                kind.as_str()
            ),
        ));
    }
}
