//! The claim check: an event payload too large for a queue message is stored (in
//! the stack's bucket, or the dev server's memory) and its jobs carry where, by
//! content: the SHA-256 of the payload's JSON text names its object.
//!
//! Why by content rather than by event id: the same key always holds the same bytes,
//! so an event sent again (after its idempotency window) with other content can never
//! change what an earlier job of it delivers on a retry or a replay; storing the same
//! payload again only restarts its expiry. The store's id prefixes the key, so one
//! store's bodies are apart from another's.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::Payload;
use crate::model::StoreId;

/// Longest payload (bytes of its JSON text) a job carries itself: with the job's own
/// fields it fits in an SQS message (256 KiB). A longer one is stored.
pub const MAX_INLINE_PAYLOAD: usize = 240 * 1024;

/// Longest `data` of a stored payload that is not also stored on its own. A queue
/// message (a CloudEvent) with `data` up to this and its included resources elided
/// fits in an SQS message; a longer `data` may not, and the message then carries
/// `dataref`, a URL of this object, in its place.
pub const MAX_INLINE_DATA: usize = 128 * 1024;

/// Where a job's payload is stored: the SHA-256 (lowercase hex) of its JSON text, and
/// of its `data` when that is stored on its own too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// SHA-256 of the payload's JSON text.
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: usize,
    /// SHA-256 of the JSON text of the payload's `data`, when it is stored on its own
    /// (longer than [`MAX_INLINE_DATA`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
}

/// The objects to store for one payload, and the claim check that names them.
pub struct StoredParts {
    /// What the job carries.
    pub stored: Stored,
    /// (key, JSON text) of each object: the payload, then its `data` if stored apart.
    pub objects: Vec<(String, bytes::Bytes)>,
}

/// A stored payload fetched for an attempt, and the URL of its `data` for a queue
/// message that cannot carry it. `Debug` shows neither: the payload is the store
/// owner's data and the URL lets anyone holding it read it.
#[derive(Clone, PartialEq)]
pub struct Fetched {
    /// The payload.
    pub payload: Payload,
    /// A URL that serves the payload's `data`, and its SHA-256, when it is stored on
    /// its own.
    pub data_ref: Option<(String, String)>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("bytes", &self.payload.text().len())
            .field("data_ref", &self.data_ref.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The object key of a stored body of `store` whose SHA-256 is `sha256`.
pub fn key(store: &str, sha256: &str) -> String {
    format!("events/{store}/{sha256}")
}

impl Stored {
    /// The claim check of `payload` of `store` and the objects to store, when the
    /// payload is too large for a job to carry ([`MAX_INLINE_PAYLOAD`]); `None` when
    /// it is not.
    pub fn parts(store: &StoreId, payload: &Payload) -> Option<StoredParts> {
        let text = payload.text();
        if text.len() <= MAX_INLINE_PAYLOAD {
            return None;
        }
        let sha256 = sha256_hex(text.as_bytes());
        let mut objects = vec![(
            key(store.as_str(), &sha256),
            bytes::Bytes::copy_from_slice(text.as_bytes()),
        )];
        // `data` as its own JSON text: exactly what a queue message writes for it (the
        // payload's text is compact JSON).
        #[derive(serde::Deserialize)]
        struct Members<'a> {
            #[serde(borrow)]
            data: Option<&'a RawValue>,
        }
        let data = serde_json::from_str::<Members<'_>>(text)
            .ok()
            .and_then(|m| m.data)
            .map(|d| d.get().to_owned());
        let data_sha256 = data.filter(|d| d.len() > MAX_INLINE_DATA).map(|d| {
            let sha = sha256_hex(d.as_bytes());
            objects.push((key(store.as_str(), &sha), bytes::Bytes::from(d)));
            sha
        });
        Some(StoredParts {
            stored: Stored {
                sha256,
                bytes: text.len(),
                data_sha256,
            },
            objects,
        })
    }

    /// The key of the stored payload of a job of `store`.
    pub fn payload_key(&self, store: &str) -> String {
        key(store, &self.sha256)
    }

    /// The key of its `data` stored on its own, if it is.
    pub fn data_key(&self, store: &str) -> Option<String> {
        self.data_sha256.as_deref().map(|sha| key(store, sha))
    }

    /// `Err` names what is wrong with a claim check read from a message.
    pub fn check(&self) -> Result<(), String> {
        let hex =
            |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(&self.sha256) || !self.data_sha256.as_deref().is_none_or(hex) {
            return Err("job's stored payload is not named by a SHA-256".into());
        }
        Ok(())
    }

    /// The payload read back from the store, checked against this claim check:
    /// `Err` says how it differs.
    pub fn verify(&self, body: &[u8]) -> Result<Payload, String> {
        if body.len() != self.bytes || sha256_hex(body) != self.sha256 {
            return Err(format!(
                "the stored payload ({} bytes) is not the one the job names ({} bytes, SHA-256 {})",
                body.len(),
                self.bytes,
                self.sha256
            ));
        }
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| "the stored payload is not UTF-8".to_owned())?;
        Payload::from_text(text).map_err(|e| format!("the stored payload is not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store() -> StoreId {
        StoreId::parse("s1").expect("store")
    }

    #[test]
    fn a_payload_a_message_can_carry_is_not_stored() {
        let payload =
            Payload::new(&json!({"data": {"blob": "x".repeat(MAX_INLINE_PAYLOAD - 100)}}));
        assert!(Stored::parts(&store(), &payload).is_none());
    }

    #[test]
    fn a_larger_payload_is_stored_under_its_sha256_and_a_large_data_apart_from_it() {
        // GIVEN a payload whose data alone is larger than a message may hold
        let data = json!({"id": "o1", "type": "order", "note": "x".repeat(MAX_INLINE_PAYLOAD)});
        let payload = Payload::new(&json!({"data": data, "included": {"items": [1, 2]}}));
        // WHEN its claim check is made
        let parts = Stored::parts(&store(), &payload).expect("stored");
        // THEN the payload is one object and its data another, each named by the
        // SHA-256 of its bytes under the store's prefix
        let data_text = data.to_string();
        let payload_sha = sha256_hex(payload.text().as_bytes());
        let data_sha = sha256_hex(data_text.as_bytes());
        assert_eq!(
            parts.stored,
            Stored {
                sha256: payload_sha.clone(),
                bytes: payload.text().len(),
                data_sha256: Some(data_sha.clone()),
            }
        );
        assert_eq!(
            parts.objects,
            vec![
                (
                    format!("events/s1/{payload_sha}"),
                    bytes::Bytes::from(payload.text().to_owned())
                ),
                (
                    format!("events/s1/{data_sha}"),
                    bytes::Bytes::from(data_text)
                ),
            ]
        );
        // AND the payload read back verifies, and other bytes do not
        assert_eq!(parts.stored.verify(payload.text().as_bytes()), Ok(payload));
        assert!(parts.stored.verify(b"{\"data\":{}}").is_err());
    }

    #[test]
    fn a_large_payload_whose_data_is_small_stores_the_payload_alone() {
        let payload = Payload::new(
            &json!({"data": {"id": "o1"}, "included": {"blob": "x".repeat(MAX_INLINE_PAYLOAD)}}),
        );
        let parts = Stored::parts(&store(), &payload).expect("stored");
        assert_eq!(parts.stored.data_sha256, None);
        assert_eq!(parts.objects.len(), 1);
    }

    #[test]
    fn a_claim_check_not_named_by_sha256_is_refused() {
        let mut stored = Stored {
            sha256: "a".repeat(64),
            bytes: 1,
            data_sha256: None,
        };
        assert_eq!(stored.check(), Ok(()));
        stored.data_sha256 = Some("../other-store".into());
        assert_eq!(
            stored.check(),
            Err("job's stored payload is not named by a SHA-256".to_owned())
        );
    }
}
