//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the receiver
//! checks `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
//!
//! The key is the integration's `secret_key` as bytes. A secret in the Standard
//! Webhooks form (`whsec_` + base64) is decoded first, so the official verification
//! libraries accept Herald's signatures unchanged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The HMAC key for a secret.
pub fn signing_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header value for one message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = signing_key(secret);
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header (space-separated list of `v1,<sig>`) in
/// constant time. For receivers and tests.
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let key = signing_key(secret);
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|candidate| {
            let Ok(expected) = STANDARD.decode(candidate) else {
                return false;
            };
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
            mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&expected).is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_example_signs_to_its_published_signature() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_plain_secret_is_used_as_its_bytes() {
        // Computed independently: base64(HMAC-SHA256(b"SOME_SECRET_KEY", "id.ts.body")).
        let sig = sign(
            "SOME_SECRET_KEY",
            "0b5f8a2e-1c3d-5e7f-9a1b-2c3d4e5f6a7b",
            1795334400,
            br#"{"id":"evt-1"}"#,
        );
        assert_eq!(sig, "v1,xGMkeMvwGJfDUTojNIYET84rsfyp3nyPD+jM2GyqkIE=");
    }

    #[test]
    fn verification_accepts_the_signature_and_refuses_any_change() {
        let header = sign("k3y-k3y-k3y", "m1", 100, b"body");
        assert!(verify("k3y-k3y-k3y", "m1", 100, b"body", &header));
        assert!(verify(
            "k3y-k3y-k3y",
            "m1",
            100,
            b"body",
            &format!("v1,bm9wZQ== {header}")
        ));
        assert!(!verify("k3y-k3y-k3y", "m1", 100, b"bodY", &header));
        assert!(!verify("k3y-k3y-k3y", "m1", 101, b"body", &header));
        assert!(!verify("k3y-k3y-k3y", "m2", 100, b"body", &header));
        assert!(!verify("other", "m1", 100, b"body", &header));
        assert!(!verify("k3y-k3y-k3y", "m1", 100, b"body", "v2,abc"));
    }
}
