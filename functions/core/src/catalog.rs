//! The observable-event catalog: the keys an integration may list in `observes`.
//!
//! Taken from Elastic Path's Observable Events reference. Legacy keys (product,
//! brand, category, collection) are still sent by older clients, so they are
//! accepted and flagged as legacy.

use std::sync::OnceLock;

/// One observable event key, e.g. `order.paid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventKey {
    /// The full key (`order.paid`).
    pub key: String,
    /// The resource part (`order`).
    pub resource: &'static str,
    /// The action part (`paid`).
    pub action: &'static str,
    /// Whether the key is kept only for older clients.
    pub legacy: bool,
    /// Whether Herald itself emits it (an operational event, `herald.…`): such
    /// events are never taken from senders ([`is_emitted_by_herald`]).
    pub herald: bool,
}

const CRUD: &[&str] = &["created", "updated", "deleted"];

/// (resource, actions, legacy)
const GROUPS: &[(&str, &[&str], bool)] = &[
    ("account", CRUD, false),
    ("account-member", CRUD, false),
    ("account-membership", CRUD, false),
    ("address", CRUD, false),
    ("cart", &["updated", "deleted"], false),
    ("catalog-release", CRUD, false),
    ("catalog-rule", CRUD, false),
    ("currency", CRUD, false),
    ("customAPIEntryType", CRUD, false),
    ("customer", CRUD, false),
    ("file", &["created", "deleted"], false),
    ("integration", CRUD, false),
    ("one-time-password-token-request", &["created"], false),
    (
        "order",
        &[
            "created",
            "updated",
            "paid",
            "fulfilled",
            "cancelled",
            "authorized",
            "refunded",
        ],
        false,
    ),
    ("payment-gateway", &["updated"], false),
    ("settings", &["created", "updated"], false),
    ("stock-transaction", &["created"], false),
    (
        "subscription",
        &[
            "created",
            "create-failed",
            "canceled",
            "paused",
            "pending_cancel",
            "pending_pause",
            "resumed",
            "closed",
        ],
        false,
    ),
    ("subscription-invoice", &["created", "deleted"], false),
    ("subscription-job", CRUD, false),
    ("subscription-offering", CRUD, false),
    ("subscription-schedule", CRUD, false),
    ("subscription-subscriber", CRUD, false),
    ("transaction", &["created", "updated"], false),
    ("user-authentication-info", CRUD, false),
    ("brand", CRUD, true),
    ("category", CRUD, true),
    ("collection", CRUD, true),
    ("product", CRUD, true),
    // Herald's own operational events ([`crate::alerts`]).
    (
        "herald.integration",
        &["disabled", "failing", "recovered"],
        false,
    ),
];

/// Every observable event key, current ones first, each group in catalog order.
pub fn all() -> &'static [EventKey] {
    static ALL: OnceLock<Vec<EventKey>> = OnceLock::new();
    ALL.get_or_init(|| {
        GROUPS
            .iter()
            .flat_map(|(resource, actions, legacy)| {
                actions.iter().map(move |action| EventKey {
                    key: format!("{resource}.{action}"),
                    resource,
                    action,
                    legacy: *legacy,
                    herald: is_emitted_by_herald(resource),
                })
            })
            .collect()
    })
}

/// Looks a key up in the catalog.
pub fn lookup(key: &str) -> Option<&'static EventKey> {
    all().iter().find(|e| e.key == key)
}

/// Whether `key` may be observed.
pub fn is_observable(key: &str) -> bool {
    lookup(key).is_some()
}

/// Whether events of `key` (or of a resource named so) are Herald's own operational
/// events (`herald.…`), which only Herald emits.
pub fn is_emitted_by_herald(key: &str) -> bool {
    key.starts_with("herald.")
}

/// Whether the event's payload carries only `{id, type}` (Elastic Path sends
/// nothing more for deletions).
pub fn is_deletion(key: &str) -> bool {
    key.ends_with(".deleted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_holds_the_documented_keys() {
        for key in [
            "order.paid",
            "order.refunded",
            "cart.updated",
            "cart.deleted",
            "address.updated",
            "customAPIEntryType.created",
            "subscription.pending_cancel",
            "subscription.create-failed",
            "one-time-password-token-request.created",
            "payment-gateway.updated",
            "stock-transaction.created",
        ] {
            assert!(is_observable(key), "{key} should be observable");
        }
    }

    #[test]
    fn the_catalog_refuses_keys_that_do_not_exist() {
        for key in [
            "cart.created",
            "order.deleted",
            "file.updated",
            "ORDER.PAID",
            "order",
            "",
            "order.paid ",
        ] {
            assert!(!is_observable(key), "{key:?} should not be observable");
        }
    }

    #[test]
    fn legacy_keys_are_accepted_and_flagged() {
        let product = lookup("product.created").expect("legacy key is in the catalog");
        assert!(product.legacy);
        assert!(!lookup("order.paid").expect("order.paid").legacy);
    }

    #[test]
    fn the_catalog_has_no_duplicate_keys() {
        let mut keys: Vec<_> = all().iter().map(|e| e.key.as_str()).collect();
        let before = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), before);
        assert_eq!(before, 88, "85 of Elastic Path's and Herald's own 3");
    }

    #[test]
    fn deletions_are_recognised_by_their_action() {
        assert!(is_deletion("cart.deleted"));
        assert!(!is_deletion("cart.updated"));
    }
}
