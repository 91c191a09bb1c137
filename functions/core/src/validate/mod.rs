//! Validation of integration bodies: every problem found, each with a JSON pointer.
//!
//! Bodies are walked as `serde_json::Value` rather than deserialised into structs, so
//! that one request gets one error per problem (not just the first serde failure),
//! each pointing at its field (`/data/configuration/url`).

mod aws;
mod delivery;
mod eventbridge;
mod rotation;
mod sns;
mod sqs;
mod stomp;
mod webhook;

use std::collections::HashSet;

use serde_json::{Map, Value};
use url::Url;

pub use aws::is_region;
pub use eventbridge::MAX_DETAIL_TYPE_PREFIX;
pub use rotation::{parse_rotation, RotationRequest, MAX_OVERLAP_MINUTES};
pub use sqs::sqs_url_region;
pub use stomp::STOMP_SCHEMES;

use crate::catalog;
use crate::mask::mask;
use crate::model::{
    secret_fields, DeliveryOptions, IntegrationType, Secret, SqsAuth, SqsConfig, StompConfig,
    Target, WebhookConfig,
};

/// One problem with one field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer into the request body (`/data/configuration/url`).
    pub pointer: String,
    /// What is wrong, for a person.
    pub detail: String,
}

impl FieldError {
    fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// What the deployment allows.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Accept `http://` webhook URLs (the dev server does; AWS deployments should not).
    pub allow_http_webhooks: bool,
    /// Accept plain `stomp://` and `tcp://` broker addresses, over which the broker
    /// login and every message travel in clear text (the dev server does; AWS
    /// deployments only when the stack's `AllowPlainStomp` says so).
    pub allow_plain_stomp: bool,
}

impl Policy {
    /// The policy used to read back what was stored: lenient, so that tightening the
    /// deployment's policy never makes an existing integration unreadable.
    pub const STORED: Policy = Policy {
        allow_http_webhooks: true,
        allow_plain_stomp: true,
    };
}

/// Longest `name`.
pub const MAX_NAME: usize = 255;
/// Longest `description`.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest URL.
pub const MAX_URL: usize = 2048;
/// Most STOMP broker addresses.
pub const MAX_ADDRESSES: usize = 10;
/// Longest secret of any kind.
pub const MAX_SECRET: usize = 1024;

/// The attributes of an integration that a request can set.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// `enabled`.
    pub enabled: bool,
    /// `observes`, duplicates removed, order kept.
    pub observes: Vec<String>,
    /// `integration_type` + `configuration`.
    pub target: Target,
    /// `delivery` (Herald's extension).
    pub delivery: DeliveryOptions,
}

const ATTRIBUTES: &[&str] = &[
    "type",
    "id",
    "name",
    "description",
    "enabled",
    "integration_type",
    "observes",
    "configuration",
    // Herald's extension: how deliveries are made.
    "delivery",
    // Elastic Path's own examples send these back; they are read-only and ignored.
    "links",
    "meta",
];

/// Validates a create body (`{"data": {...}}`).
pub fn parse_create(body: &Value, policy: Policy) -> Result<Draft, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(data) = data_object(body, &mut errors) else {
        return Err(errors);
    };
    check_envelope(data, &mut errors);

    let name = match data.get("name") {
        None => {
            errors.push(FieldError::new("/data/name", "is required"));
            None
        }
        Some(v) => name(v, &mut errors),
    };
    let description = description(data.get("description"), &mut errors).unwrap_or_default();
    let enabled = enabled(data.get("enabled"), &mut errors).unwrap_or(false);
    let observes = observes(data.get("observes"), &mut errors).unwrap_or_default();
    let kind = match data.get("integration_type") {
        None => {
            errors.push(FieldError::new("/data/integration_type", "is required"));
            None
        }
        Some(v) => integration_type(v, &mut errors),
    };
    let target = match (kind, data.get("configuration")) {
        (_, None) => {
            errors.push(FieldError::new("/data/configuration", "is required"));
            None
        }
        (None, Some(_)) => None,
        (Some(kind), Some(cfg)) => match cfg.as_object() {
            Some(cfg) => parse_target(kind, cfg, policy, &mut errors),
            None => {
                errors.push(FieldError::new("/data/configuration", "must be an object"));
                None
            }
        },
    };

    let delivery = delivery::parse(
        DeliveryOptions::default(),
        data.get("delivery"),
        &mut errors,
    );
    if let (Some(kind), Some(options)) = (kind, &delivery) {
        delivery::check_for(kind, options, &mut errors);
    }

    match (name, target, delivery) {
        (Some(name), Some(target), Some(delivery)) if errors.is_empty() => Ok(Draft {
            name,
            description,
            enabled,
            observes,
            target,
            delivery,
        }),
        _ => Err(errors),
    }
}

/// Validates an update body against the stored draft and returns the new draft.
///
/// Omitted attributes keep their value. Within `configuration` of an unchanged
/// `integration_type`, omitted fields keep their value, `null` removes an optional
/// field, and a secret sent back exactly as the API masked it keeps the stored
/// secret. Changing `integration_type` requires a complete configuration for the new
/// type.
pub fn apply_update(
    current: &Draft,
    body: &Value,
    policy: Policy,
) -> Result<Draft, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(data) = data_object(body, &mut errors) else {
        return Err(errors);
    };
    check_envelope(data, &mut errors);

    let mut next = current.clone();
    if let Some(v) = data.get("name") {
        if let Some(n) = name(v, &mut errors) {
            next.name = n;
        }
    }
    if let Some(d) = description(data.get("description"), &mut errors) {
        next.description = d;
    }
    if let Some(e) = enabled(data.get("enabled"), &mut errors) {
        next.enabled = e;
    }
    if let Some(o) = observes(data.get("observes"), &mut errors) {
        next.observes = o;
    }
    let current_kind = current.target.kind();
    let kind = match data.get("integration_type") {
        None => Some(current_kind),
        Some(v) => integration_type(v, &mut errors),
    };
    match (kind, data.get("configuration")) {
        (None, _) => {}
        (Some(kind), None) if kind == current_kind => {}
        (Some(kind), None) => errors.push(FieldError::new(
            "/data/configuration",
            format!(
                "is required when integration_type changes (from {} to {}): send the complete configuration for the new type",
                current_kind.as_str(),
                kind.as_str()
            ),
        )),
        (Some(kind), Some(cfg)) => match cfg.as_object() {
            None => errors.push(FieldError::new("/data/configuration", "must be an object")),
            Some(cfg) if kind == current_kind => {
                let merged = merge_configuration(&current.target, cfg);
                if let Some(t) = parse_target(kind, &merged, policy, &mut errors) {
                    next.target = keep_rotation(&current.target, t);
                }
                require_secrets_for_a_new_destination(&current.target, cfg, &merged, &mut errors);
            }
            Some(cfg) => {
                if let Some(t) = parse_target(kind, cfg, policy, &mut errors) {
                    next.target = t;
                }
            }
        },
    }

    if let Some(d) = delivery::parse(current.delivery, data.get("delivery"), &mut errors) {
        next.delivery = d;
        if let Some(kind) = kind {
            delivery::check_for(kind, &next.delivery, &mut errors);
        }
    }

    if errors.is_empty() {
        Ok(next)
    } else {
        Err(errors)
    }
}

/// A rotation's retiring secret stays with an update that keeps the webhook's URL
/// and secret; a new URL or a new secret ends the overlap at once (a stored secret
/// never follows a destination change, and a secret set by hand replaces both).
fn keep_rotation(current: &Target, mut next: Target) -> Target {
    if let (Target::Webhook(was), Target::Webhook(now)) = (current, &mut next) {
        if was.url == now.url && was.secret_key == now.secret_key {
            now.retiring = was.retiring.clone();
        }
    }
    next
}

/// Reads a stored configuration back. Stored data was validated on the way in, so a
/// failure here means the item was damaged; the errors say where.
pub fn parse_stored_target(kind: IntegrationType, cfg: &Value) -> Result<Target, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = cfg.as_object() else {
        return Err(vec![FieldError::new("/configuration", "must be an object")]);
    };
    match parse_target(kind, obj, Policy::STORED, &mut errors) {
        Some(t) if errors.is_empty() => Ok(t),
        _ => Err(errors),
    }
}

/// Reads back a stored configuration whose secrets are masks (see
/// [`crate::secrets`]): for processes that route events but never hold the key. A
/// masked access key id does not look like one, so it is checked as a placeholder and
/// put back as the mask.
pub fn parse_masked_target(kind: IntegrationType, cfg: &Value) -> Result<Target, Vec<FieldError>> {
    let Some(obj) = cfg.as_object() else {
        return Err(vec![FieldError::new("/configuration", "must be an object")]);
    };
    let mut probe = obj.clone();
    let masked_id = match probe.get("aws_access_key_id") {
        Some(Value::String(id)) if secret_fields(kind).contains(&"aws_access_key_id") => {
            let id = id.clone();
            probe.insert("aws_access_key_id".into(), Value::from("MASKEDACCESSKEYID"));
            Some(id)
        }
        _ => None,
    };
    let mut target = parse_stored_target(kind, &Value::Object(probe))?;
    if let (Some(id), Some(SqsAuth::Keys { access_key_id, .. })) =
        (masked_id, target.aws_auth_mut())
    {
        *access_key_id = Secret::new(id);
    }
    Ok(target)
}

/// The configuration fields that say where an integration's deliveries, and with
/// them its secrets, go: the webhook's URL (its secret travels in
/// `X-Moltin-Secret-Key`), the STOMP brokers and virtual host (the password travels
/// in `CONNECT`), the SQS queue, EventBridge bus or SNS topic, its region and the role.
pub fn destination_fields(kind: IntegrationType) -> &'static [&'static str] {
    match kind {
        IntegrationType::Webhook => &["url"],
        IntegrationType::AwsSqs => &["url", "region", "role_arn"],
        IntegrationType::Stomp => &["addresses", "host"],
        IntegrationType::AwsEventBridge => &["event_bus_arn", "region", "role_arn"],
        IntegrationType::AwsSns => &["topic_arn", "region", "role_arn"],
    }
}

/// An update that points the integration somewhere new must carry its secrets again
/// in clear: a stored secret never follows a destination change by itself, or one
/// `PUT` to another host plus a test delivery would hand the secret to that host.
/// Removing a secret (`null`) is fine: nothing is then sent.
fn require_secrets_for_a_new_destination(
    current: &Target,
    update: &Map<String, Value>,
    merged: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    let kind = current.kind();
    let Value::Object(stored) = current.configuration(true) else {
        unreachable!("a configuration is always an object")
    };
    let moved: Vec<&str> = destination_fields(kind)
        .iter()
        .copied()
        // A destination removed is the validation's to refuse, not a new destination.
        .filter(|field| merged.contains_key(*field) && stored.get(*field) != merged.get(*field))
        .collect();
    if moved.is_empty() {
        return;
    }
    for field in secret_fields(kind) {
        let Some(Value::String(secret)) = stored.get(*field) else {
            continue;
        };
        let resent = match update.get(*field) {
            Some(Value::Null) => true,
            Some(Value::String(sent)) => sent == secret || *sent != mask(secret),
            _ => false,
        };
        if !resent {
            errors.push(FieldError::new(
                Config::pointer(field),
                format!(
                    "is required in clear when {} changes: Herald never sends a stored secret to a new destination",
                    moved.join(" or ")
                ),
            ));
        }
    }
}

/// Overlays an update's configuration fields on the stored configuration.
fn merge_configuration(current: &Target, update: &Map<String, Value>) -> Map<String, Value> {
    let Value::Object(mut merged) = current.configuration(true) else {
        unreachable!("a configuration is always an object")
    };
    let secrets = secret_fields(current.kind());
    for (field, value) in update {
        if value.is_null() {
            merged.remove(field);
            continue;
        }
        let masked_echo = secrets.contains(&field.as_str())
            && matches!((value, merged.get(field)),
                (Value::String(sent), Some(Value::String(stored))) if *sent == mask(stored));
        if !masked_echo {
            merged.insert(field.clone(), value.clone());
        }
    }
    merged
}

fn data_object<'a>(
    body: &'a Value,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Map<String, Value>> {
    let Some(top) = body.as_object() else {
        errors.push(FieldError::new(
            "",
            "the body must be a JSON object: {\"data\": {...}}",
        ));
        return None;
    };
    match top.get("data") {
        None => {
            errors.push(FieldError::new("/data", "is required"));
            None
        }
        Some(Value::Object(data)) => Some(data),
        Some(_) => {
            errors.push(FieldError::new("/data", "must be an object"));
            None
        }
    }
}

fn check_envelope(data: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    match data.get("type") {
        None => errors.push(FieldError::new(
            "/data/type",
            "is required and must be \"integration\"",
        )),
        Some(Value::String(t)) if t == "integration" => {}
        Some(_) => errors.push(FieldError::new("/data/type", "must be \"integration\"")),
    }
    for key in data.keys() {
        if !ATTRIBUTES.contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("/data/{}", escape_pointer(key)),
                "is not an attribute of an integration",
            ));
        }
    }
}

fn name(v: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    match v {
        Value::String(s) if s.trim().is_empty() => {
            errors.push(FieldError::new("/data/name", "must not be empty"));
            None
        }
        Value::String(s) if s.chars().count() > MAX_NAME => {
            errors.push(FieldError::new(
                "/data/name",
                format!("must be at most {MAX_NAME} characters"),
            ));
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.push(FieldError::new("/data/name", "must be a string"));
            None
        }
    }
}

fn description(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match v? {
        Value::Null => Some(String::new()),
        Value::String(s) if s.chars().count() > MAX_DESCRIPTION => {
            errors.push(FieldError::new(
                "/data/description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.push(FieldError::new("/data/description", "must be a string"));
            None
        }
    }
}

fn enabled(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        _ => {
            errors.push(FieldError::new("/data/enabled", "must be true or false"));
            None
        }
    }
}

fn observes(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    let items = match v? {
        Value::Array(items) => items,
        _ => {
            errors.push(FieldError::new(
                "/data/observes",
                "must be an array of event keys, e.g. [\"order.paid\"]",
            ));
            return None;
        }
    };
    let before = errors.len();
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(key) if catalog::is_observable(key) => {
                if seen.insert(key.as_str()) {
                    keys.push(key.clone());
                }
            }
            Value::String(key) => errors.push(FieldError::new(
                format!("/data/observes/{i}"),
                format!(
                    "{} is not an observable event; GET /v2/observable-events lists them",
                    quoted(key)
                ),
            )),
            _ => errors.push(FieldError::new(
                format!("/data/observes/{i}"),
                "must be a string",
            )),
        }
    }
    (errors.len() == before).then_some(keys)
}

fn integration_type(v: &Value, errors: &mut Vec<FieldError>) -> Option<IntegrationType> {
    let parsed = v.as_str().and_then(IntegrationType::parse);
    if parsed.is_none() {
        let names: Vec<String> = IntegrationType::ALL
            .iter()
            .map(|t| format!("{:?}", t.as_str()))
            .collect();
        errors.push(FieldError::new(
            "/data/integration_type",
            format!("must be one of {}", names.join(", ")),
        ));
    }
    parsed
}

/// Field reader for one configuration object.
struct Config<'a> {
    obj: &'a Map<String, Value>,
    errors: &'a mut Vec<FieldError>,
}

impl Config<'_> {
    fn pointer(field: &str) -> String {
        format!("/data/configuration/{}", escape_pointer(field))
    }

    fn error(&mut self, field: &str, detail: impl Into<String>) {
        self.errors
            .push(FieldError::new(Self::pointer(field), detail));
    }

    fn only(&mut self, kind: IntegrationType, allowed: &[&str]) {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.error(
                &key,
                format!(
                    "is not a configuration field of a {} integration (fields: {})",
                    kind.as_str(),
                    allowed.join(", ")
                ),
            );
        }
    }

    /// A string field: `None` when absent or null; an error when not a string,
    /// empty, too long or holding control characters.
    fn optional_str(&mut self, field: &str, max: usize) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => {
                self.error(field, "must not be empty");
                None
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                self.error(field, format!("must be at most {max} characters"));
                None
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                self.error(field, "must not contain control characters");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    fn required_str(&mut self, field: &str, max: usize) -> Option<String> {
        if matches!(self.obj.get(field), None | Some(Value::Null)) {
            self.error(field, "is required");
            return None;
        }
        self.optional_str(field, max)
    }

    fn present(&self, field: &str) -> bool {
        !matches!(self.obj.get(field), None | Some(Value::Null))
    }
}

fn parse_target(
    kind: IntegrationType,
    obj: &Map<String, Value>,
    policy: Policy,
    errors: &mut Vec<FieldError>,
) -> Option<Target> {
    let before = errors.len();
    let mut c = Config { obj, errors };
    let target = match kind {
        IntegrationType::Webhook => webhook::parse(&mut c, policy).map(Target::Webhook),
        IntegrationType::AwsSqs => sqs::parse(&mut c).map(Target::AwsSqs),
        IntegrationType::Stomp => stomp::parse(&mut c, policy).map(Target::Stomp),
        IntegrationType::AwsEventBridge => eventbridge::parse(&mut c).map(Target::AwsEventBridge),
        IntegrationType::AwsSns => sns::parse(&mut c).map(Target::AwsSns),
    };
    if errors.len() == before {
        target
    } else {
        None
    }
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Quotes user text for an error detail, shortened so a huge value cannot bloat it.
fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        format!("{:?}…", head)
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests;
