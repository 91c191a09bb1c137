//! Any JSON as an incoming event (`herald_core::job::parse_event`), sent by an HTTP
//! caller acting for a store or by direct invocation (the first byte decides).
//!
//! Invariants: it never panics; a refusal has errors, each pointing into the event;
//! an accepted event has an observable type, a bounded printable id and the caller's
//! store, and — written back as an event — parses to exactly itself. Read from its
//! text (`parse_event_text`, as `POST /v2/events` reads it), the same JSON gives the
//! same errors, or the same event with the same payload.
#![no_main]

use chrono::{TimeZone, Utc};
use herald_core::catalog;
use herald_core::job::{parse_event, parse_event_text, MAX_EVENT_BYTES, MAX_EVENT_ID};
use herald_core::model::StoreId;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let now = Utc
        .timestamp_opt(1_790_000_000, 0)
        .single()
        .expect("a fixed time");
    let store = StoreId::parse("s1").expect("a valid store id");
    let caller = (mode & 1 == 0).then_some(&store);
    let raw: Box<serde_json::value::RawValue> =
        serde_json::from_slice(rest).expect("JSON a tree was read from");
    match (
        parse_event_text(&raw, caller, "/data/7", now),
        parse_event(&value, caller, "/data/7", now),
    ) {
        (Ok((s1, mut e1, named)), Ok((s2, e2))) => {
            assert_eq!(s1, s2);
            assert_eq!(named, value.get("id").is_some_and(|id| !id.is_null()));
            if !named {
                e1.id = e2.id.clone();
            }
            assert_eq!(e1.payload.value(), e2.payload.value());
            assert_eq!(
                (&e1.id, &e1.kind, e1.occurred_at),
                (&e2.id, &e2.kind, e2.occurred_at)
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("text: {:?}, tree: {:?}", a.map(|r| r.1), b.map(|r| r.1)),
    }
    match parse_event(&value, caller, "/data/7", now) {
        Ok((parsed_store, event)) => {
            assert!(catalog::is_observable(&event.kind), "{event:?}");
            assert!(
                !event.id.is_empty()
                    && event.id.len() <= MAX_EVENT_ID
                    && event.id.bytes().all(|b| b.is_ascii_graphic()),
                "{event:?}"
            );
            if let Some(c) = caller {
                assert_eq!(&parsed_store, c);
            }
            let again = json!({
                "id": event.id,
                "type": event.kind,
                "store_id": parsed_store.as_str(),
                "occurred_at": event.occurred_at,
                "payload": event.payload,
            });
            if again.to_string().len() <= MAX_EVENT_BYTES {
                let (store2, event2) = parse_event(&again, None, "", now)
                    .expect("an accepted event, written back, is accepted");
                assert_eq!(store2, parsed_store);
                assert_eq!(event2, event);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(e.pointer.starts_with("/data/7"), "{}", e.pointer);
                assert!(!e.detail.is_empty());
            }
        }
    }
});
