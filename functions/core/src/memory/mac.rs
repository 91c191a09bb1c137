//! A message-authentication key in memory: the dev server's `dataref` key.

use async_trait::async_trait;
use aws_lc_rs::hmac;

use crate::error::{Error, Result};
use crate::ports::MacKey;

/// An HMAC-SHA-256 key drawn at random when the process starts and never written
/// anywhere: the tokens it made stop verifying when the process ends, as the bodies
/// they name (held in memory too) are gone then as well.
pub struct MemoryMacKey {
    key: hmac::Key,
}

impl MemoryMacKey {
    /// A new random key.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| Error::Config("the system random number generator failed".into()))?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }
}

#[async_trait]
impl MacKey for MemoryMacKey {
    async fn mac(&self, message: &[u8]) -> Result<Vec<u8>> {
        Ok(hmac::sign(&self.key, message).as_ref().to_vec())
    }

    async fn verify(&self, message: &[u8], mac: &[u8]) -> Result<bool> {
        // aws-lc's verify compares in constant time.
        Ok(hmac::verify(&self.key, message, mac).is_ok())
    }
}
