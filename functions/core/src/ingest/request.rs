//! `POST /v2/events` over HTTP, as the api router (dev server) and the ingest function
//! both answer it: `{"data": <event>}` or `{"data": [<event>, ...]}` for the store the
//! caller acts for.

use http::{header::HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{EventStatus, Incoming, Ingest, MAX_EVENTS_PER_REQUEST};
use crate::job::MAX_EVENT_BYTES;
use crate::jsonapi::{self, Errors};
use crate::model::StoreId;
use crate::validate::FieldError;

/// Largest `POST /v2/events` body: the largest event ([`MAX_EVENT_BYTES`], 5 MiB) and
/// room for the request's own JSON around it. (Through API Gateway, the Lambda
/// invocation that carries the body is at most 6 MB.)
pub const MAX_EVENTS_BODY_BYTES: usize = MAX_EVENT_BYTES + 64 * 1024;

/// Reads the body (415, 413, 400 as [`jsonapi::read_json`]) and ingests its events for
/// `store`. 413 naming each event larger than [`MAX_EVENT_BYTES`] (nothing is
/// ingested). 202 with each event's id, status and job count; 422 when every event is
/// invalid; 503 when some could not be queued (the document says which: send those
/// again).
///
/// The events are read as the JSON text they came as ([`crate::job::parse_event_text`]): no tree of
/// them is built, and their payloads are delivered as their sender wrote them. A body
/// that does not read so (not an object, not JSON, `data` twice) is parsed into a
/// tree, which answers as before.
pub async fn post_events<B>(
    ingest: &Ingest,
    store: &StoreId,
    headers: &HeaderMap,
    body: B,
) -> Result<(StatusCode, Value), Errors>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The document, its events unread.
    #[derive(Deserialize)]
    struct Document<'a> {
        #[serde(default, borrow)]
        data: Option<&'a RawValue>,
    }

    let bytes = jsonapi::read_body(headers, body, MAX_EVENTS_BODY_BYTES).await?;
    // serde reads a struct from an array too: only an object is a document.
    let document = match bytes.trim_ascii_start().first() {
        Some(b'{') => serde_json::from_slice::<Document<'_>>(&bytes).ok(),
        _ => None,
    };
    if let Some(document) = document {
        let data = match document
            .data
            .map(|d| (d, d.get().as_bytes().trim_ascii_start().first()))
        {
            Some((one, Some(b'{'))) => Data::One(one),
            Some((list, Some(b'['))) => match serde_json::from_str::<Vec<&RawValue>>(list.get()) {
                Ok(list) => Data::List(list),
                Err(_) => Data::Neither,
            },
            _ => Data::Neither,
        };
        return take(ingest, store, data).await;
    }
    let mut body = jsonapi::parse_json(&bytes)?;
    // The events are taken out of the document, not copied.
    let data = match body.get_mut("data").map(Value::take) {
        Some(event @ Value::Object(_)) => Data::One(event),
        Some(Value::Array(list)) => Data::List(list),
        _ => Data::Neither,
    };
    take(ingest, store, data).await
}

/// A document's `data`: an event, a list, or neither.
enum Data<E> {
    One(E),
    List(Vec<E>),
    Neither,
}

async fn take<E: Incoming>(
    ingest: &Ingest,
    store: &StoreId,
    data: Data<E>,
) -> Result<(StatusCode, Value), Errors> {
    let invalid = |detail: String| {
        Errors::invalid(vec![FieldError {
            pointer: "/data".into(),
            detail,
        }])
    };
    let (events, single) = match data {
        Data::One(event) => (vec![event], true),
        Data::List(list) if list.is_empty() => {
            return Err(invalid("must list at least one event".into()))
        }
        Data::List(list) if list.len() > MAX_EVENTS_PER_REQUEST => {
            return Err(invalid(format!(
                "must list at most {MAX_EVENTS_PER_REQUEST} events"
            )))
        }
        Data::List(list) => (list, false),
        Data::Neither => {
            return Err(invalid(
                "is required: an event object or a list of events".into(),
            ))
        }
    };
    let pointer = |i: usize| {
        if single {
            "/data".to_owned()
        } else {
            format!("/data/{i}")
        }
    };
    let too_large: Vec<FieldError> = events
        .iter()
        .enumerate()
        .filter_map(|(i, event)| {
            event.oversize().map(|bytes| FieldError {
                pointer: pointer(i),
                detail: format!(
                    "the event is {bytes} bytes of JSON, more than the {MAX_EVENT_BYTES} (5 MiB) an event may be"
                ),
            })
        })
        .collect();
    if !too_large.is_empty() {
        return Err(Errors::too_large(too_large));
    }
    let results = ingest.ingest(&events, Some(store), pointer).await;
    if results
        .iter()
        .all(|r| matches!(r.status, EventStatus::Invalid(_)))
    {
        let errors = results
            .into_iter()
            .flat_map(|r| match r.status {
                EventStatus::Invalid(errors) => errors,
                _ => Vec::new(),
            })
            .collect();
        return Err(Errors::invalid(errors));
    }
    let failed = results
        .iter()
        .any(|r| matches!(r.status, EventStatus::Failed { .. }));
    let status = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::ACCEPTED
    };
    let mut data: Vec<Value> = results.iter().map(|r| r.to_json()).collect();
    let data = if single {
        data.swap_remove(0)
    } else {
        Value::Array(data)
    };
    Ok((status, json!({ "data": data })))
}
