//! Events as the commerce backend sends them: their limits, the payload kept as the
//! JSON text it came as, and the validation of one incoming event.

use std::borrow::Cow;

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

    /// The payload whose JSON text is `raw` as its sender wrote it (key order,
    /// numbers and string escapes kept), without the whitespace between its tokens.
    fn from_raw(raw: &RawValue) -> Self {
        match compact(raw.get()) {
            Cow::Borrowed(_) => Self(raw.to_owned()),
            // Whitespace between the tokens of JSON removed is JSON still.
            Cow::Owned(text) => Self::from_text(text).unwrap_or_else(|_| Self(raw.to_owned())),
        }
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
    /// happen for a payload made by [`Payload::new`] or read by [`crate::job::DeliveryJob::parse`]).
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
        Some(Value::String(s)) if is_event_id(s) => Some(s.clone()),
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

/// Whether `id` may be an event's id: 1 to [`MAX_EVENT_ID`] printable ASCII characters.
fn is_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_EVENT_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The fields of an incoming event, read from its text: strings borrowed where they
/// hold no escape, the payload as its text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventText<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    store_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The fields of an incoming payload, read from its text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadText<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    included: Option<&'a RawValue>,
}

/// Validates one incoming event given as its JSON text, as [`parse_event`] does the
/// parsed event, and tells whether the sender named it (gave it an id). The event's
/// tree is never built: its payload is kept as the sender wrote it ([`Payload`],
/// whitespace between tokens removed), so that numbers keep every digit they came
/// with. An event this cannot read at once (an invalid one, or one with a field
/// twice) is parsed and validated as [`parse_event`] does, for its errors.
pub fn parse_event_text(
    raw: &RawValue,
    store_from_caller: Option<&StoreId>,
    pointer: &str,
    now: DateTime<Utc>,
) -> Result<(StoreId, Event, bool), Vec<FieldError>> {
    if let Some(read) = read_event_text(raw, store_from_caller, now) {
        return Ok(read);
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| {
        vec![FieldError {
            pointer: pointer.to_owned(),
            detail: format!("is not JSON: {e}"),
        }]
    })?;
    parse_named_event(&value, store_from_caller, pointer, now)
}

/// [`parse_event`], and whether the sender named the event (gave it an id): how an
/// event already parsed into a tree is read, and one its text could not give.
pub fn parse_named_event(
    value: &Value,
    store_from_caller: Option<&StoreId>,
    pointer: &str,
    now: DateTime<Utc>,
) -> Result<(StoreId, Event, bool), Vec<FieldError>> {
    let named = value.get("id").is_some_and(|id| !id.is_null());
    parse_event(value, store_from_caller, pointer, now).map(|(store, event)| (store, event, named))
}

/// A valid event read from its text, or `None` (then [`parse_event`] says why).
fn read_event_text(
    raw: &RawValue,
    store_from_caller: Option<&StoreId>,
    now: DateTime<Utc>,
) -> Option<(StoreId, Event, bool)> {
    // serde reads a struct from an array too: only an object is an event.
    let text = raw.get();
    if !is_object(text) || (text.len() > MAX_EVENT_BYTES && text_len(text) > MAX_EVENT_BYTES) {
        return None;
    }
    let fields: EventText<'_> = serde_json::from_str(text).ok()?;
    let (id, named) = match fields.id {
        None => (Uuid::now_v7().to_string(), false),
        Some(id) if is_event_id(&id) => (id.into_owned(), true),
        Some(_) => return None,
    };
    if !catalog::is_observable(&fields.kind) {
        return None;
    }
    let store = match (fields.store_id, store_from_caller) {
        (None, caller) => caller?.clone(),
        (Some(named), caller) => {
            let store = StoreId::parse(&named)?;
            if caller.is_some_and(|c| *c != store) {
                return None;
            }
            store
        }
    };
    let occurred_at = match fields.occurred_at {
        None => now,
        Some(at) => DateTime::parse_from_rfc3339(&at).ok()?.with_timezone(&Utc),
    };
    if !is_object(fields.payload.get()) {
        return None;
    }
    let payload: PayloadText<'_> = serde_json::from_str(fields.payload.get()).ok()?;
    if !is_object(payload.data.get()) || payload.included.is_some_and(|i| !is_object(i.get())) {
        return None;
    }
    Some((
        store,
        Event {
            id,
            kind: fields.kind.into_owned(),
            occurred_at,
            payload: Payload::from_raw(fields.payload),
        },
        named,
    ))
}

/// Whether the JSON text `text` is an object.
fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// The JSON text `text` without the whitespace between its tokens (borrowed when it
/// has none there).
fn compact(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut from = 0;
    spaces_between_tokens(text, |at| {
        // Whitespace is ASCII: `at` is a character boundary.
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[from..at]);
        from = at + 1;
    });
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[from..]);
            Cow::Owned(out)
        }
    }
}

/// The length of the JSON text `text` without the whitespace between its tokens: the
/// length of its compact form, as [`json_len`] counts a parsed value's.
pub fn text_len(text: &str) -> usize {
    let mut spaces = 0;
    spaces_between_tokens(text, |_| spaces += 1);
    text.len() - spaces
}

/// Calls `f` with the position of each whitespace byte of the JSON text `text` that
/// is not in a string.
fn spaces_between_tokens(text: &str, mut f: impl FnMut(usize)) {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        match b {
            b'"' => {
                // To the string's closing quote, past every escaped character.
                at += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', bytes.get(at..).unwrap_or_default()) {
                        Some(i) if bytes[at + i] == b'\\' => at += i + 2,
                        Some(i) => {
                            at += i + 1;
                            break;
                        }
                        None => return,
                    }
                }
            }
            b' ' | b'\n' | b'\t' | b'\r' => {
                f(at);
                at += 1;
            }
            _ => at += 1,
        }
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
