//! `dataref`: the URL a queue message carries in place of an event's `data` too large
//! for it. It is a capability served by the API (`GET /v2/event-data/{token}`), not a
//! presigned S3 URL: a URL presigned by a Lambda role dies with the role's temporary
//! credentials (hours), whatever its `X-Amz-Expires` says, while a `dataref` must hold
//! for 7 days.
//!
//! The token binds the store, the SHA-256 of the body (which names its object,
//! [`crate::job::Stored`]) and the expiry with an HMAC-SHA-256 of a key nobody reads
//! ([`MacKey`]: KMS in AWS, a random per-process key in the dev server). The route
//! checks the code, then the expiry, then answers with a redirect to a GET presigned
//! for a few minutes (a 5 MiB body is over a Lambda response's 6 MB once encoded) or,
//! in the dev server, with the bytes.
//!
//! A token that is not one Herald made, or was changed in any byte, opens nothing
//! and says nothing of why ([`Opened::NotFound`]): the route is no oracle.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::model::StoreId;
use crate::ports::{BodyAt, EventBodies, MacKey};

/// How long a `dataref` is valid: 7 days (then its route answers 410 Gone).
pub const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the URL a `dataref` redirects to is valid: time to follow the redirect
/// and read 5 MiB.
pub const REDIRECT_VALIDITY: Duration = Duration::from_secs(5 * 60);

/// The API route's path before the token.
pub const PATH: &str = "/v2/event-data/";

/// The token format's version, its first byte.
const VERSION: u8 = 1;

/// Bytes of an HMAC-SHA-256.
const MAC_LEN: usize = 32;

/// Bytes of the signed part before the store: version, expiry, SHA-256.
const FIXED_LEN: usize = 1 + 8 + 32;

/// The longest token read: a longer string is no token (and is never sent to KMS).
const MAX_TOKEN: usize = 512;

/// What a `dataref` token opens.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Not a token Herald made (forged, changed, truncated, garbage).
    NotFound,
    /// A token Herald made, past its expiry.
    Expired,
    /// A token Herald made, whose body is no longer stored (it expired with the
    /// delivery log).
    Gone,
    /// The body: where to fetch it, or itself.
    Body(BodyAt),
}

/// Makes `dataref` URLs (the fan-out) and opens their tokens (the API).
pub struct EventData {
    key: Arc<dyn MacKey>,
    bodies: Arc<dyn EventBodies>,
    /// The API's public base URL, which minted URLs start with (none: this process
    /// only opens tokens).
    base: Option<String>,
}

impl EventData {
    /// Tokens of `key` over the bodies of `bodies`.
    pub fn new(key: Arc<dyn MacKey>, bodies: Arc<dyn EventBodies>) -> Self {
        Self {
            key,
            bodies,
            base: None,
        }
    }

    /// Mints URLs under `base` (`https://<api>`, no path): the API's public address.
    pub fn minting_at(mut self, base: &str) -> Self {
        self.base = Some(base.trim_end_matches('/').to_owned());
        self
    }

    /// The `dataref` of the body of `store` whose SHA-256 (lowercase hex) is `sha256`,
    /// valid [`VALIDITY`] from `now`.
    pub async fn link(&self, store: &str, sha256: &str, now: DateTime<Utc>) -> Result<String> {
        let base = self.base.as_deref().ok_or_else(|| {
            Error::Config("HERALD_PUBLIC_URL must be set: dataref URLs start with it".into())
        })?;
        let store = StoreId::parse(store)
            .ok_or_else(|| Error::Config(format!("{store:?} is not a store id")))?;
        let digest = unhex(sha256)
            .ok_or_else(|| Error::Config(format!("{sha256:?} is not a SHA-256 in hex")))?;
        let expires = (now + VALIDITY).timestamp().max(0) as u64;
        let mut signed = Vec::with_capacity(FIXED_LEN + store.as_str().len());
        signed.push(VERSION);
        signed.extend_from_slice(&expires.to_be_bytes());
        signed.extend_from_slice(&digest);
        signed.extend_from_slice(store.as_str().as_bytes());
        let mac = self.key.mac(&signed).await?;
        Ok(format!(
            "{base}{PATH}{}.{}",
            URL_SAFE_NO_PAD.encode(&signed),
            URL_SAFE_NO_PAD.encode(mac)
        ))
    }

    /// What `token` opens now. `Err` only when the key or the bodies cannot be
    /// reached; any string gets an answer.
    pub async fn open(&self, token: &str) -> Result<Opened> {
        self.open_at(token, Utc::now()).await
    }

    /// What `token` opens at `now`.
    async fn open_at(&self, token: &str, now: DateTime<Utc>) -> Result<Opened> {
        let Some((signed, mac)) = decode(token) else {
            return Ok(Opened::NotFound);
        };
        if !self.key.verify(&signed, &mac).await? {
            return Ok(Opened::NotFound);
        }
        // Made by Herald from here on; checked all the same.
        let (head, store) = signed.split_at(FIXED_LEN);
        let Some(store) = std::str::from_utf8(store).ok().and_then(StoreId::parse) else {
            return Ok(Opened::NotFound);
        };
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&head[1..9]);
        if u64::from_be_bytes(expires) < now.timestamp().max(0) as u64 {
            return Ok(Opened::Expired);
        }
        let sha256: String = head[9..].iter().map(|b| format!("{b:02x}")).collect();
        let key = crate::job::body_key(store.as_str(), &sha256);
        Ok(match self.bodies.open(&key, REDIRECT_VALIDITY).await? {
            Some(at) => Opened::Body(at),
            None => Opened::Gone,
        })
    }
}

/// The signed part and the code of a token shaped as Herald makes them; `None` for
/// anything else.
fn decode(token: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    let (signed, mac) = token.split_once('.')?;
    // Canonical base64url only (no padding, no stray trailing bits): a token changed
    // in any character decodes to other bytes or not at all.
    let signed = URL_SAFE_NO_PAD.decode(signed).ok()?;
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    let shaped = mac.len() == MAC_LEN
        && signed.len() > FIXED_LEN
        && signed.len() <= FIXED_LEN + StoreId::MAX_LEN
        && signed[0] == VERSION;
    shaped.then_some((signed, mac))
}

/// The 32 bytes of a SHA-256 in lowercase hex.
fn unhex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
