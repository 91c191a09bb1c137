//! Events as the commerce backend sends them: their limits, the payload kept as the
//! JSON text it came as, and the validation of one incoming event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::catalog;
use crate::model::StoreId;
use crate::validate::FieldError;

/// Largest event accepted, in bytes of its JSON (5 MiB). A payload too large for a
/// queue message ([`super::MAX_INLINE_PAYLOAD`]) is stored, and its jobs carry a claim
/// check ([`super::Stored`]).
pub const MAX_EVENT_BYTES: usize = 5 * 1024 * 1024;

/// Longest event id.
pub const MAX_EVENT_ID: usize = 128;

/// The fields an event may have.
pub const EVENT_FIELDS: [&str; 5] = ["id", "type", "store_id", "occurred_at", "payload"];

/// A validated event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's id: the sender's, or one Herald assigned. Deduplication key.
    pub id: String,
    /// Observable event key (`order.paid`).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (the sender's clock), else when Herald received it.
    #[serde(deserialize_with = "super::timestamp::deserialize")]
    pub occurred_at: DateTime<Utc>,
    /// `{"data": {...}, "included"?: {...}}`; absent from a job whose payload is
    /// stored ([`super::DeliveryJob::stored`]).
    #[serde(
        default = "Payload::absent",
        skip_serializing_if = "Payload::is_absent"
    )]
    pub payload: Payload,
}

/// An event's payload as JSON text: serialized once, at ingest, and carried as text
/// through the queue, so that the fan-out writes it into a webhook body without
/// parsing it into a tree and serializing it again. Targets that need fields of it
/// ([`Payload::value`]) parse it when they do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The payload of `value`, as compact JSON text (the order of keys kept).
    pub fn new(value: &(impl Serialize + ?Sized)) -> Self {
        // JSON values and maps always serialize: their keys are strings.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// No payload (`null`): what a job whose payload is stored carries. An event's
    /// payload is never `null` ([`parse_event`] wants an object).
    pub fn absent() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// Whether this is [`Payload::absent`].
    pub fn is_absent(&self) -> bool {
        self.text() == "null"
    }

    /// The payload whose JSON text is `text`, checked to be JSON.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The payload parsed into a tree (`Null` if the text is not JSON, which cannot
    /// happen for a payload made by [`Payload::new`] or read by [`DeliveryJob::parse`]).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::new(&value)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

/// Validates one incoming event. `store_from_caller` is the store named by the HTTP
/// caller (then a `store_id` in the event must match it or be absent); on direct
/// invoke it is `None` and the event must carry `store_id`. `pointer` prefixes every
/// error (`/data/3`).
pub fn parse_event(
    raw: &Value,
    store_from_caller: Option<&StoreId>,
    pointer: &str,
    now: DateTime<Utc>,
) -> Result<(StoreId, Event), Vec<FieldError>> {
    let mut errors = Vec::new();
    let err = |errors: &mut Vec<FieldError>, field: &str, detail: &str| {
        errors.push(FieldError {
            pointer: format!("{pointer}{field}"),
            detail: detail.to_owned(),
        })
    };
    let Some(obj) = raw.as_object() else {
        err(&mut errors, "", "an event must be a JSON object");
        return Err(errors);
    };
    for key in obj.keys() {
        if !EVENT_FIELDS.contains(&key.as_str()) {
            err(
                &mut errors,
                &format!("/{}", crate::validate::escape_pointer(key)),
                "is not a field of an event (id, type, store_id, occurred_at, payload)",
            );
        }
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => Some(Uuid::now_v7().to_string()),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_EVENT_ID
                && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(s.clone())
        }
        Some(_) => {
            err(
                &mut errors,
                "/id",
                "must be 1 to 128 printable ASCII characters without spaces",
            );
            None
        }
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) if catalog::is_observable(t) => Some(t.clone()),
        Some(Value::String(_)) => {
            err(
                &mut errors,
                "/type",
                "is not an observable event; GET /v2/observable-events lists them",
            );
            None
        }
        None => {
            err(&mut errors, "/type", "is required");
            None
        }
        Some(_) => {
            err(&mut errors, "/type", "must be a string");
            None
        }
    };
    let store = match (obj.get("store_id"), store_from_caller) {
        (None | Some(Value::Null), Some(s)) => Some(s.clone()),
        (None | Some(Value::Null), None) => {
            err(
                &mut errors,
                "/store_id",
                "is required when the event is sent by direct invocation",
            );
            None
        }
        (Some(Value::String(raw)), caller) => match StoreId::parse(raw) {
            Some(s) if caller.is_none_or(|c| *c == s) => Some(s),
            Some(_) => {
                err(
                    &mut errors,
                    "/store_id",
                    "does not match the store this request acts for",
                );
                None
            }
            None => {
                err(
                    &mut errors,
                    "/store_id",
                    "must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ -",
                );
                None
            }
        },
        (Some(_), _) => {
            err(&mut errors, "/store_id", "must be a string");
            None
        }
    };
    let occurred_at = match obj.get("occurred_at") {
        None | Some(Value::Null) => Some(now),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                err(&mut errors, "/occurred_at", "must be an RFC 3339 timestamp");
                None
            }
        },
        Some(_) => {
            err(
                &mut errors,
                "/occurred_at",
                "must be an RFC 3339 timestamp string",
            );
            None
        }
    };
    let payload = match obj.get("payload") {
        Some(Value::Object(p)) => check_payload(p, pointer, &mut errors),
        None => {
            err(&mut errors, "/payload", "is required: {\"data\": {...}}");
            None
        }
        Some(_) => {
            err(
                &mut errors,
                "/payload",
                "must be an object: {\"data\": {...}}",
            );
            None
        }
    };
    if json_len(raw) > MAX_EVENT_BYTES {
        err(
            &mut errors,
            "",
            &format!(
                "the event is larger than {MAX_EVENT_BYTES} bytes (5 MiB), the most Herald takes"
            ),
        );
    }
    match (id, kind, store, occurred_at, payload) {
        (Some(id), Some(kind), Some(store), Some(occurred_at), Some(payload))
            if errors.is_empty() =>
        {
            Ok((
                store,
                Event {
                    id,
                    kind,
                    occurred_at,
                    payload,
                },
            ))
        }
        _ => Err(errors),
    }
}

/// The length of `value`'s JSON text, counted as it is written, never held.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a JSON value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn check_payload(
    p: &Map<String, Value>,
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Payload> {
    let before = errors.len();
    match p.get("data") {
        Some(Value::Object(_)) => {}
        Some(_) => errors.push(FieldError {
            pointer: format!("{pointer}/payload/data"),
            detail: "must be an object".into(),
        }),
        None => errors.push(FieldError {
            pointer: format!("{pointer}/payload/data"),
            detail: "is required".into(),
        }),
    }
    match p.get("included") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => errors.push(FieldError {
            pointer: format!("{pointer}/payload/included"),
            detail: "must be an object".into(),
        }),
    }
    for key in p.keys() {
        if key != "data" && key != "included" {
            errors.push(FieldError {
                pointer: format!("{pointer}/payload/{}", crate::validate::escape_pointer(key)),
                detail: "is not a field of a payload (data, included)".into(),
            });
        }
    }
    (errors.len() == before).then(|| Payload::new(p))
}
