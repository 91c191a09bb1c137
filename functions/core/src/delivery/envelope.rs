//! What a target receives: Elastic Path's webhook body.

use serde_json::{json, Value};

use crate::catalog;
use crate::job::DeliveryJob;
use crate::model::Integration;

/// The payload as delivered: for `*.deleted` events only `{data: {id, type}}`, as
/// Elastic Path sends them; otherwise the event's payload unchanged.
pub fn delivered_payload(job: &DeliveryJob) -> Value {
    if catalog::is_deletion(&job.event.kind) {
        let data = &job.event.payload["data"];
        let mut slim = serde_json::Map::new();
        for key in ["id", "type"] {
            if let Some(v) = data.get(key) {
                slim.insert(key.to_owned(), v.clone());
            }
        }
        json!({ "data": slim })
    } else {
        job.event.payload.clone()
    }
}

/// The webhook body: `id`, `triggered_by`, `attempt`, `integration` (never its
/// configuration), `resources` (the payload as a JSON string, deprecated in EP but
/// still read by older receivers) and `payload`.
pub fn webhook_body(job: &DeliveryJob, integration: &Integration, attempt: u32) -> Vec<u8> {
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
    serde_json::to_vec(&body).unwrap_or_default()
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
        };
        let event = Event {
            id: "evt-1".into(),
            kind: kind.into(),
            occurred_at: now,
            payload,
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
}
