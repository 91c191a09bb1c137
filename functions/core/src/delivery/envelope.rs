//! What a target receives: Elastic Path's webhook body.

use serde_json::{json, Value};

use crate::catalog;
use crate::job::DeliveryJob;
use crate::model::Integration;

/// The payload as delivered: for `*.deleted` events only `{data: {id, type}}`, as
/// Elastic Path sends them; otherwise the event's payload unchanged.
pub fn delivered_payload(job: &DeliveryJob) -> Value {
    let payload = job.event.payload.value();
    if catalog::is_deletion(&job.event.kind) {
        slim(&payload)
    } else {
        payload
    }
}

/// `{data: {id, type}}` of a payload.
fn slim(payload: &Value) -> Value {
    let data = &payload["data"];
    let mut slim = serde_json::Map::new();
    for key in ["id", "type"] {
        if let Some(v) = data.get(key) {
            slim.insert(key.to_owned(), v.clone());
        }
    }
    json!({ "data": slim })
}

/// The webhook body: `id`, `triggered_by`, `attempt`, `integration` (never its
/// configuration), `resources` (the payload as a JSON string, deprecated in EP but
/// still read by older receivers) and `payload`.
///
/// Written straight to bytes: the payload's JSON text, as the job carries it, is
/// written once escaped (as the `resources` string) and once as it is, never parsed
/// into a tree. The bytes are those of the equivalent `json!` document (a test holds
/// them equal).
pub fn webhook_body(job: &DeliveryJob, integration: &Integration, attempt: u32) -> Vec<u8> {
    let payload: std::borrow::Cow<'_, str> = if catalog::is_deletion(&job.event.kind) {
        slim(&job.event.payload.value()).to_string().into()
    } else {
        job.event.payload.text().into()
    };
    let mut out = Vec::with_capacity(2 * payload.len() + 512);
    out.extend_from_slice(b"{\"id\":");
    json_string(&mut out, &job.event.id);
    out.extend_from_slice(b",\"triggered_by\":");
    json_string(&mut out, &job.event.kind);
    out.extend_from_slice(format!(",\"attempt\":{attempt},\"integration\":{{\"id\":").as_bytes());
    json_string(&mut out, &integration.id.to_string());
    out.extend_from_slice(b",\"integration_type\":");
    json_string(&mut out, integration.target.kind().as_str());
    out.extend_from_slice(b",\"name\":");
    json_string(&mut out, &integration.name);
    out.extend_from_slice(b",\"description\":");
    json_string(&mut out, &integration.description);
    out.extend_from_slice(b"},\"resources\":");
    json_string(&mut out, &payload);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.as_bytes());
    out.push(b'}');
    out
}

/// Whether a byte must be escaped in a JSON string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The bytes of `word` (eight, little-endian) that must be escaped, each as its
/// high bit: a byte below 0x20, a '"' or a '\\'. Zero when there is none.
fn escapes_in(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    control | zero_in(word ^ (ONES * u64::from(b'"'))) | zero_in(word ^ (ONES * u64::from(b'\\')))
}

/// Whether none of `block`'s bytes (a multiple of eight) must be escaped.
fn plain(block: &[u8]) -> bool {
    block
        .chunks_exact(8)
        .map(|c| {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            escapes_in(u64::from_le_bytes(word))
        })
        .fold(0, |acc, e| acc | e)
        == 0
}

/// Writes `s` as a JSON string, byte for byte as serde_json writes it (`\"`, `\\`,
/// `\b \t \n \f \r`, other control characters as `\u00xx`; everything else as
/// it is). Skips plain bytes 32, then 8, at a time: a payload is mostly bytes that
/// need no escape.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    json_escaped(out, s);
    out.push(b'"');
}

/// Writes `s` as [`json_string`] does, without the quotes: for a string value written
/// in parts.
pub fn json_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i..i + 32).is_some_and(plain) {
            i += 32;
            continue;
        }
        if bytes.get(i..i + 8).is_some_and(plain) {
            i += 8;
            continue;
        }
        let b = bytes[i];
        if !needs_escape(b) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The queue message: a CloudEvents 1.0 JSON document. `id` is the event id (as in
/// the webhook body), `jobid` the job id (stable across retries), `data` the payload.
pub fn cloud_event(job: &DeliveryJob, integration: &Integration) -> Value {
    json!({
        "specversion": "1.0",
        "id": job.event.id,
        "type": job.event.kind,
        "source": format!("herald/stores/{}", job.store_id),
        "time": crate::job::rfc3339_ms(&job.event.occurred_at),
        "datacontenttype": "application/json",
        "integrationid": integration.id.to_string(),
        "storeid": job.store_id,
        "jobid": job.job_id.to_string(),
        "data": delivered_payload(job),
    })
}

/// Serializes a CloudEvent within `limit` bytes: when too large, `data.included` is
/// dropped and `data.meta.includes_elided` set; when still too large, `Err` says so
/// (the attempt fails permanently; `data` is never cut).
pub fn fit_message(mut event: Value, limit: usize) -> Result<String, String> {
    let whole = event.to_string();
    if whole.len() <= limit {
        return Ok(whole);
    }
    if let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) {
        if data.remove("included").is_some() {
            data.insert("meta".into(), json!({ "includes_elided": true }));
        }
    }
    let slim = event.to_string();
    if slim.len() <= limit {
        Ok(slim)
    } else {
        Err(format!(
            "the event is {} bytes without its included resources, more than the target's limit of {limit}",
            slim.len()
        ))
    }
}

/// The queue message for a job, or the permanent failure to record when it cannot fit
/// in `limit` bytes.
pub fn queue_message(
    job: &DeliveryJob,
    integration: &Integration,
    limit: usize,
) -> Result<String, String> {
    fit_message(cloud_event(job, integration), limit)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::job::Event;
    use crate::model::{Secret, StoreId, Target, WebhookConfig};

    fn job(kind: &str, payload: Value) -> (DeliveryJob, Integration) {
        let store = StoreId::parse("s").expect("store");
        let now = Utc::now();
        let integration = Integration {
            id: Uuid::now_v7(),
            store_id: store.clone(),
            name: "Hook".into(),
            description: "d".into(),
            enabled: true,
            observes: vec![kind.into()],
            target: Target::Webhook(WebhookConfig {
                url: "https://example.com".into(),
                secret_key: Some(Secret::new("top-secret-value")),
            }),
            created_at: now,
            updated_at: now,
            version: 1,
            health: Default::default(),
        };
        let event = Event {
            id: "evt-1".into(),
            kind: kind.into(),
            occurred_at: now,
            payload: payload.into(),
        };
        (
            DeliveryJob::new(&store, integration.id, event, now),
            integration,
        )
    }

    #[test]
    fn the_webhook_body_has_the_elastic_path_fields_and_no_configuration() {
        let payload = json!({"data": {"id": "o1", "type": "order", "status": "paid"}, "included": {"items": [1]}});
        let (job, integration) = job("order.paid", payload.clone());
        let body: Value =
            serde_json::from_slice(&webhook_body(&job, &integration, 2)).expect("json");
        assert_eq!(
            body,
            json!({
                "id": "evt-1",
                "triggered_by": "order.paid",
                "attempt": 2,
                "integration": {"id": integration.id.to_string(), "integration_type": "webhook", "name": "Hook", "description": "d"},
                "resources": payload.to_string(),
                "payload": payload,
            })
        );
        assert!(
            !String::from_utf8_lossy(&webhook_body(&job, &integration, 1))
                .contains("top-secret-value")
        );
    }

    #[test]
    fn the_queue_message_is_a_cloud_event() {
        let payload = json!({"data": {"id": "c1", "type": "cart"}});
        let (job, integration) = job("cart.updated", payload.clone());
        let ce = cloud_event(&job, &integration);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "evt-1");
        assert_eq!(ce["type"], "cart.updated");
        assert_eq!(ce["source"], "herald/stores/s");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["integrationid"], integration.id.to_string());
        assert_eq!(ce["storeid"], "s");
        assert_eq!(ce["jobid"], job.job_id.to_string());
        assert_eq!(ce["data"], payload);
        assert!(chrono::DateTime::parse_from_rfc3339(ce["time"].as_str().expect("time")).is_ok());
    }

    #[test]
    fn an_oversized_message_drops_included_and_says_so() {
        let payload = json!({"data": {"id": "o1"}, "included": {"blob": "x".repeat(5000)}});
        let (job, integration) = job("order.paid", payload);
        let ce = cloud_event(&job, &integration);
        let whole = fit_message(ce.clone(), 100_000).expect("fits");
        assert!(whole.contains("blob"));
        let slim: Value = serde_json::from_str(&fit_message(ce.clone(), 2_000).expect("fits slim"))
            .expect("json");
        assert_eq!(
            slim["data"],
            json!({"data": {"id": "o1"}, "meta": {"includes_elided": true}})
        );
        let err = fit_message(ce, 100).expect_err("too large even slim");
        assert!(err.contains("limit of 100"), "{err}");
    }

    #[test]
    fn deletions_carry_only_the_id_and_type() {
        let (job, integration) = job(
            "cart.deleted",
            json!({"data": {"id": "c1", "type": "cart", "items": [1, 2]}, "included": {"x": 1}}),
        );
        let body: Value =
            serde_json::from_slice(&webhook_body(&job, &integration, 1)).expect("json");
        assert_eq!(
            body["payload"],
            json!({"data": {"id": "c1", "type": "cart"}})
        );
        assert_eq!(
            body["resources"],
            json!({"data": {"id": "c1", "type": "cart"}}).to_string()
        );
    }

    /// The body as a `json!` document would serialize it: the reference the direct
    /// writer must match byte for byte.
    fn reference_body(job: &DeliveryJob, integration: &Integration, attempt: u32) -> Vec<u8> {
        let payload = delivered_payload(job);
        let body = json!({
            "id": job.event.id,
            "triggered_by": job.event.kind,
            "attempt": attempt,
            "integration": {
                "id": integration.id.to_string(),
                "integration_type": integration.target.kind().as_str(),
                "name": integration.name,
                "description": integration.description,
            },
            "resources": payload.to_string(),
            "payload": payload,
        });
        serde_json::to_vec(&body).expect("json")
    }

    #[test]
    fn the_written_body_is_byte_for_byte_the_json_document() {
        let tricky = json!({"data": {"id": "o-1", "note": "quote \" backslash \\ newline \n tab \t unicode é ☃ \u{1}",
            "n": 1.5, "list": [1, null, true, {"k": "v"}]}, "included": {"items": []}});
        for (kind, payload) in [
            ("order.paid", tricky.clone()),
            ("order.deleted", tricky),
            ("cart.updated", json!({"data": {}})),
        ] {
            let (mut job, mut integration) = job(kind, payload);
            job.event.id = "evt \"quoted\" é".into();
            integration.name = "Name with \"quotes\" and \\".into();
            integration.description = "line\nbreak".into();
            for attempt in [1, 6] {
                assert_eq!(
                    String::from_utf8(webhook_body(&job, &integration, attempt)).expect("utf-8"),
                    String::from_utf8(reference_body(&job, &integration, attempt)).expect("utf-8"),
                    "{kind}"
                );
            }
        }
    }

    #[test]
    fn every_kind_of_byte_is_escaped_as_serde_json_escapes_it() {
        // Each escape at every offset of the eight-byte scan, and runs longer than it.
        let specials = [
            "\"", "\\", "\u{0}", "\u{8}", "\t", "\n", "\u{c}", "\r", "\u{1f}", "\u{7f}", "é", "☃",
            "😀",
        ];
        for special in specials {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let s = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    let mut out = Vec::new();
                    json_string(&mut out, &s);
                    assert_eq!(
                        String::from_utf8(out).expect("utf-8"),
                        serde_json::to_string(&s).expect("json"),
                        "{s:?}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in any::<String>(), ascii in "[ -~\t\n\r\u{0}-\u{1f}\u{7f}]{0,64}", sparse in "[a-zé]{0,150}[\"\\\\\u{0}-\u{1f}]?[a-z]{0,150}") {
            // sparse: long plain runs around at most one byte to escape, anywhere
            // in or across the blocks skipped at once.
            for s in [s, ascii, sparse] {
                let mut out = Vec::new();
                super::json_string(&mut out, &s);
                prop_assert_eq!(String::from_utf8(out).expect("utf-8"), serde_json::to_string(&s).expect("json"));
            }
        }
    }
}
