//! Any JSON as an incoming event (`herald_core::job::parse_event`), sent by an HTTP
//! caller acting for a store or by direct invocation (the first byte decides).
//!
//! Invariants: it never panics; a refusal has errors, each pointing into the event;
//! an accepted event has an observable type, a bounded printable id and the caller's
//! store, and — written back as an event — parses to exactly itself.
#![no_main]

use chrono::{TimeZone, Utc};
use herald_core::catalog;
use herald_core::job::{parse_event, MAX_EVENT_BYTES, MAX_EVENT_ID};
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
