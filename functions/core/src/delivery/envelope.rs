//! What a target receives: Elastic Path's webhook body, and its queue message (a
//! CloudEvents 1.0 JSON document), in the shapes Elastic Path publishes.

use serde_json::{json, Map, Value};

use crate::catalog;
use crate::job::DeliveryJob;
use crate::json::json_string;
use crate::model::Integration;

/// The `id` and `type` of a payload's resource, as an object with the two members
/// in `order` (each only when present): all that Elastic Path delivers for a
/// `*.deleted` event.
fn reference(payload: &Value, order: [&str; 2]) -> Value {
    let data = &payload["data"];
    let mut slim = Map::new();
    for key in order {
        if let Some(v) = data.get(key) {
            slim.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(slim)
}

/// The webhook body: `id`, `triggered_by`, `attempt`, `integration` (never its
/// configuration), `resources` and `payload`. For most events `payload` is the
/// event's payload (`{"data", "included"?}`) and `resources` the same as a JSON
/// string (deprecated in EP but still read by older receivers); for `*.deleted`
/// events, as Elastic Path's example shows, `payload` is `{"type", "id"}` and
/// `resources` the object `{"id", "type"}`.
///
/// Written straight to bytes: the payload's JSON text, as the job carries it, is
/// written once escaped (as the `resources` string) and once as it is, never parsed
/// into a tree. The bytes are those of the equivalent `json!` document (a test holds
/// them equal).
pub fn webhook_body(job: &DeliveryJob, integration: &Integration, attempt: u32) -> Vec<u8> {
    let deletion = catalog::is_deletion(&job.event.kind);
    let capacity = if deletion {
        512
    } else {
        2 * job.payload().text().len() + 512
    };
    let mut out = Vec::with_capacity(capacity);
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
    if deletion {
        let payload = job.payload().value();
        out.extend_from_slice(reference(&payload, ["id", "type"]).to_string().as_bytes());
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(reference(&payload, ["type", "id"]).to_string().as_bytes());
    } else {
        let payload = job.payload().text();
        json_string(&mut out, payload);
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload.as_bytes());
    }
    out.push(b'}');
    out
}

/// The queue message: a CloudEvents 1.0 JSON document, as Elastic Path sends it to
/// SQS and STOMP queues. `data` is the resource itself (the payload's `data`; for
/// `*.deleted` events only its `{"id", "type"}`), and the payload's `included`, when
/// present, is a top-level `included` beside it. `id` is the event id (as in the
/// webhook body). Herald adds two attributes a CloudEvents consumer ignores or knows:
/// `jobid` (an extension attribute: the job id, stable across retries, to deduplicate
/// on) and `time` (the standard attribute: when the event happened). Members in
/// Elastic Path's published (alphabetical) order.
pub fn cloud_event(job: &DeliveryJob, integration: &Integration) -> Value {
    let payload = job.payload().value();
    let (data, included) = if catalog::is_deletion(&job.event.kind) {
        (reference(&payload, ["id", "type"]), None)
    } else {
        let Value::Object(mut payload) = payload else {
            return cloud_event_of(job, integration, Value::Null, None);
        };
        let data = payload.remove("data").unwrap_or(Value::Null);
        (data, payload.remove("included").filter(|i| !i.is_null()))
    };
    cloud_event_of(job, integration, data, included)
}

fn cloud_event_of(
    job: &DeliveryJob,
    integration: &Integration,
    data: Value,
    included: Option<Value>,
) -> Value {
    let mut event = Map::new();
    event.insert("data".into(), data);
    event.insert("datacontenttype".into(), "application/json".into());
    event.insert("id".into(), job.event.id.clone().into());
    if let Some(included) = included {
        event.insert("included".into(), included);
    }
    event.insert("integrationid".into(), integration.id.to_string().into());
    event.insert("jobid".into(), job.job_id.to_string().into());
    event.insert(
        "source".into(),
        format!("herald/stores/{}", job.store_id).into(),
    );
    event.insert("specversion".into(), "1.0".into());
    event.insert("storeid".into(), job.store_id.clone().into());
    event.insert(
        "time".into(),
        crate::job::rfc3339_ms(&job.event.occurred_at).into(),
    );
    event.insert("type".into(), job.event.kind.clone().into());
    Value::Object(event)
}

/// Serializes a CloudEvent within `limit` bytes: when too large, its `included`
/// becomes `{"meta": {"includes_elided": true}}`, as Elastic Path's SQS guide shows;
/// when still too large and `data_ref` gives a URL of `data` and its SHA-256 (a
/// stored payload's, [`crate::job::Fetched`]), `data` gives way to them: the
/// attributes `dataref` (CloudEvents' claim-check extension: the URL serves exactly
/// what `data` would have been) and `datasha256` (Herald's: the SHA-256 of those
/// bytes, lowercase hex). When even that is too large, or there was nothing to do,
/// `Err` says so (the attempt fails permanently; `data` is never cut).
pub fn fit_message(
    mut event: Value,
    limit: usize,
    data_ref: Option<&(String, String)>,
) -> Result<String, String> {
    let whole = event.to_string();
    if whole.len() <= limit {
        return Ok(whole);
    }
    if let Some(included) = event.get_mut("included") {
        *included = json!({ "meta": { "includes_elided": true } });
    }
    let slim = event.to_string();
    if slim.len() <= limit {
        return Ok(slim);
    }
    if let (Some((url, sha256)), Value::Object(members)) = (data_ref, &mut event) {
        members.remove("data");
        members.insert("dataref".into(), url.clone().into());
        members.insert("datasha256".into(), sha256.clone().into());
        // Elastic Path's (alphabetical) order.
        members.sort_keys();
        let referenced = event.to_string();
        if referenced.len() <= limit {
            return Ok(referenced);
        }
    }
    Err(format!(
        "the event is {} bytes without its included resources, more than the target's limit of {limit}",
        slim.len()
    ))
}

/// The message group of a job's CloudEvent `event` in a FIFO queue or topic: the
/// resource's id (so that one resource's events keep their order and others' do not
/// wait behind them), else the event key.
pub fn message_group(event: &Value, job: &DeliveryJob) -> String {
    event["data"]["id"]
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or(&job.event.kind)
        .to_owned()
}

/// The queue message for a job, or the permanent failure to record when it cannot fit
/// in `limit` bytes.
pub fn queue_message(
    job: &DeliveryJob,
    integration: &Integration,
    limit: usize,
) -> Result<String, String> {
    fit_message(cloud_event(job, integration), limit, data_ref(job))
}

/// The URL of a stored payload's `data` and its SHA-256, when the fan-out has one.
pub fn data_ref(job: &DeliveryJob) -> Option<&(String, String)> {
    job.fetched.as_ref()?.data_ref.as_ref()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::job::Event;
    use crate::model::{Secret, StoreId, Target, WebhookConfig};

    fn job(kind: &str, payload: Value) -> (DeliveryJob, Integration) {
        let store = StoreId::parse("s").expect("store");
        let now = Utc::now();
        let integration = Integration {
            description: "d".into(),
            target: Target::Webhook(WebhookConfig {
                url: "https://example.com".into(),
                secret_key: Some(Secret::new("top-secret-value")),
                retiring: None,
            }),
            ..crate::testkit::webhook("Hook", "s", &[kind], true)
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
    fn the_queue_message_is_a_cloud_event_whose_data_is_the_resource_itself() {
        // GIVEN an event whose payload has a resource and included resources
        let payload = json!({"data": {"id": "c1", "type": "cart", "name": "Cart"},
            "included": {"items": [{"id": "i1"}]}});
        let (job, integration) = job("cart.updated", payload);
        // WHEN it becomes a queue message
        let ce = cloud_event(&job, &integration);
        // THEN `data` is the resource, `included` sits beside it, and the attributes
        // come in Elastic Path's (alphabetical) order
        let time = ce["time"].as_str().expect("time").to_owned();
        assert!(chrono::DateTime::parse_from_rfc3339(&time).is_ok());
        assert_eq!(
            serde_json::to_string(&ce).expect("json"),
            json!({
                "data": {"id": "c1", "type": "cart", "name": "Cart"},
                "datacontenttype": "application/json",
                "id": "evt-1",
                "included": {"items": [{"id": "i1"}]},
                "integrationid": integration.id.to_string(),
                "jobid": job.job_id.to_string(),
                "source": "herald/stores/s",
                "specversion": "1.0",
                "storeid": "s",
                "time": time,
                "type": "cart.updated",
            })
            .to_string()
        );
    }

    #[test]
    fn a_queue_message_without_included_resources_has_no_included_member() {
        let (job, integration) = job(
            "cart.updated",
            json!({"data": {"id": "c1", "type": "cart"}}),
        );
        let ce = cloud_event(&job, &integration);
        assert_eq!(ce["data"], json!({"id": "c1", "type": "cart"}));
        assert_eq!(ce.get("included"), None);
    }

    #[test]
    fn an_oversized_message_replaces_included_with_the_elided_marker() {
        // GIVEN a message whose included resources make it too large
        let payload =
            json!({"data": {"id": "o1", "type": "order"}, "included": {"blob": "x".repeat(5000)}});
        let (job, integration) = job("order.paid", payload);
        let ce = cloud_event(&job, &integration);
        let whole: Value =
            serde_json::from_str(&fit_message(ce.clone(), 100_000, None).expect("fits"))
                .expect("json");
        assert_eq!(whole["included"]["blob"].as_str().map(str::len), Some(5000));
        // WHEN it is fitted within a smaller limit
        let slim: Value =
            serde_json::from_str(&fit_message(ce.clone(), 2_000, None).expect("fits slim"))
                .expect("json");
        // THEN `included` says it was elided, as Elastic Path's SQS guide shows, and
        // `data` is untouched
        assert_eq!(slim["included"], json!({"meta": {"includes_elided": true}}));
        assert_eq!(slim["data"], json!({"id": "o1", "type": "order"}));
        let err = fit_message(ce, 100, None).expect_err("too large even slim");
        assert!(err.contains("limit of 100"), "{err}");
    }

    #[test]
    fn a_message_whose_data_alone_is_too_large_carries_dataref_and_datasha256_in_its_place() {
        // GIVEN a message whose data is too large even with included elided, and the
        // URL of that data stored on its own
        let data = json!({"id": "o1", "type": "order", "note": "x".repeat(5000)});
        let (job, integration) = job(
            "order.paid",
            json!({"data": data, "included": {"items": [1]}}),
        );
        let data_ref = (
            "https://bucket.example/events/s/abc?X-Amz-Signature=1".to_owned(),
            "ab".repeat(32),
        );
        let ce = cloud_event(&job, &integration);
        // WHEN it is fitted within a limit its data alone exceeds
        let fitted = fit_message(ce.clone(), 2_000, Some(&data_ref)).expect("fits by reference");
        // THEN data gives way to dataref and datasha256, in Elastic Path's order, and
        // included says it was elided
        let time = ce["time"].as_str().expect("time");
        assert_eq!(
            fitted,
            json!({
                "datacontenttype": "application/json",
                "dataref": data_ref.0,
                "datasha256": data_ref.1,
                "id": "evt-1",
                "included": {"meta": {"includes_elided": true}},
                "integrationid": integration.id.to_string(),
                "jobid": job.job_id.to_string(),
                "source": "herald/stores/s",
                "specversion": "1.0",
                "storeid": "s",
                "time": time,
                "type": "order.paid",
            })
            .to_string()
        );
        // AND a message that fits keeps its data, whatever URL there is
        let whole: Value =
            serde_json::from_str(&fit_message(ce, 100_000, Some(&data_ref)).expect("fits"))
                .expect("json");
        assert_eq!(whole["data"], data);
        assert_eq!(whole.get("dataref"), None);
    }

    #[test]
    fn an_oversized_message_without_included_resources_is_refused_not_marked() {
        let (job, integration) = job(
            "order.paid",
            json!({"data": {"id": "o1", "note": "x".repeat(5000)}}),
        );
        let err = fit_message(cloud_event(&job, &integration), 2_000, None).expect_err("too large");
        assert!(err.contains("limit of 2000"), "{err}");
    }

    #[test]
    fn deletions_carry_only_the_id_and_type_in_elastic_paths_shapes() {
        // GIVEN a deletion whose payload carries more than the id and type
        let (job, integration) = job(
            "cart.deleted",
            json!({"data": {"type": "cart", "items": [1, 2], "id": "c1"}, "included": {"x": 1}}),
        );
        // THEN the webhook body's payload is {type, id} and resources the object {id, type}
        let body = String::from_utf8(webhook_body(&job, &integration, 1)).expect("utf-8");
        assert!(
            body.ends_with(
                r#","resources":{"id":"c1","type":"cart"},"payload":{"type":"cart","id":"c1"}}"#
            ),
            "{body}"
        );
        // AND the queue message's data is {id, type}, with nothing included
        let ce = cloud_event(&job, &integration);
        assert_eq!(
            serde_json::to_string(&ce["data"]).expect("json"),
            r#"{"id":"c1","type":"cart"}"#
        );
        assert_eq!(ce.get("included"), None);
    }

    /// The body as a `json!` document would serialize it: the reference the direct
    /// writer must match byte for byte.
    fn reference_body(job: &DeliveryJob, integration: &Integration, attempt: u32) -> Vec<u8> {
        let full = job.payload().value();
        let (resources, payload) = if catalog::is_deletion(&job.event.kind) {
            let d = &full["data"];
            (
                json!({"id": d["id"], "type": d["type"]}),
                json!({"type": d["type"], "id": d["id"]}),
            )
        } else {
            (Value::String(full.to_string()), full)
        };
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
            "resources": resources,
            "payload": payload,
        });
        serde_json::to_vec(&body).expect("json")
    }

    #[test]
    fn the_written_body_is_byte_for_byte_the_json_document() {
        let tricky = json!({"data": {"id": "o-1", "type": "order", "note": "quote \" backslash \\ newline \n tab \t unicode é ☃ \u{1}",
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
}
