//! AWS KMS as the [`KeyWrapper`] of [`crate::secrets`]: one `GenerateDataKey` per
//! integration write, one `Decrypt` per data key per [`crate::secrets::KEY_CACHE_TTL`]
//! on reads. Both carry the integration's encryption context, so KMS itself refuses
//! to unwrap a key for another store or integration (and CloudTrail shows which
//! integration each call was for).

use async_trait::async_trait;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, MacAlgorithmSpec};
use aws_sdk_kms::Client;

use super::backend_error;
use crate::error::{Error, Result};
use crate::ports::MacKey;
use crate::secrets::{Context, DataKey, KeyWrapper, KEY_LEN};

const SERVICE: &str = "KMS";

/// Data keys from a KMS key (`HERALD_KMS_KEY_ID`: key id, ARN or alias).
#[derive(Clone, Debug)]
pub struct KmsKeys {
    client: Client,
    key_id: String,
}

impl KmsKeys {
    /// Uses `key_id` through a client built from the process-wide configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            key_id: key_id.into(),
        }
    }
}

fn key_of(bytes: &[u8]) -> Result<[u8; KEY_LEN]> {
    <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| Error::Backend {
        service: SERVICE,
        message: format!("expected a {KEY_LEN}-byte data key"),
        retryable: false,
    })
}

#[async_trait]
impl KeyWrapper for KmsKeys {
    async fn generate(&self, ctx: &Context) -> Result<DataKey> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        let plain = key_of(out.plaintext().map(Blob::as_ref).unwrap_or_default())?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        if wrapped.is_empty() {
            return Err(Error::Backend {
                service: SERVICE,
                message: "GenerateDataKey returned no ciphertext".into(),
                retryable: false,
            });
        }
        Ok(DataKey { plain, wrapped })
    }

    async fn unwrap(&self, ctx: &Context, wrapped: &[u8]) -> Result<[u8; KEY_LEN]> {
        // No KeyId: a symmetric ciphertext names its key; the function's policy allows
        // Decrypt on Herald's key only.
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(ctx.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        key_of(out.plaintext().map(Blob::as_ref).unwrap_or_default())
    }
}

/// An HMAC key in KMS (`HERALD_DATAREF_KEY_ID`: `KeySpec: HMAC_256`, `KeyUsage:
/// GENERATE_VERIFY_MAC`) as the [`MacKey`] of `dataref` tokens: its bytes never leave
/// KMS; the fan-out may only `GenerateMac` and the API only `VerifyMac`, which compares
/// in KMS. <https://docs.aws.amazon.com/kms/latest/developerguide/hmac.html>
#[derive(Clone, Debug)]
pub struct KmsMac {
    client: Client,
    key_id: String,
}

impl KmsMac {
    /// Uses `key_id` through a client built from the process-wide configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            key_id: key_id.into(),
        }
    }
}

#[async_trait]
impl MacKey for KmsMac {
    async fn mac(&self, message: &[u8]) -> Result<Vec<u8>> {
        let out = self
            .client
            .generate_mac()
            .key_id(&self.key_id)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message))
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(out.mac().map(|m| m.as_ref().to_vec()).unwrap_or_default())
    }

    async fn verify(&self, message: &[u8], mac: &[u8]) -> Result<bool> {
        match self
            .client
            .verify_mac()
            .key_id(&self.key_id)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message))
            .mac(Blob::new(mac))
            .send()
            .await
        {
            Ok(out) => Ok(out.mac_valid()),
            // A wrong code is an error in KMS's API, an answer here.
            Err(e) if e.code() == Some("KMSInvalidMacException") => Ok(false),
            Err(e) => Err(backend_error(SERVICE, e)),
        }
    }
}

/// Creates an HMAC key named `alias` unless the alias exists (for `make run-aws` and
/// tests on moto). Returns the alias.
pub async fn ensure_local_mac_key(sdk: &aws_config::SdkConfig, alias: &str) -> Result<String> {
    ensure_alias(sdk, alias, true).await
}

/// Creates a symmetric key named `alias` (`alias/...`) unless the alias exists (for
/// `make run-aws` and tests on moto). Returns the alias.
pub async fn ensure_local_key(sdk: &aws_config::SdkConfig, alias: &str) -> Result<String> {
    ensure_alias(sdk, alias, false).await
}

async fn ensure_alias(sdk: &aws_config::SdkConfig, alias: &str, hmac: bool) -> Result<String> {
    let client = Client::new(sdk);
    let aliases = client
        .list_aliases()
        .send()
        .await
        .map_err(|e| backend_error(SERVICE, e))?;
    if aliases
        .aliases()
        .iter()
        .any(|a| a.alias_name() == Some(alias))
    {
        return Ok(alias.to_owned());
    }
    let create = client.create_key();
    let create = if hmac {
        create
            .description("Herald dataref tokens (local)")
            .key_spec(aws_sdk_kms::types::KeySpec::Hmac256)
            .key_usage(aws_sdk_kms::types::KeyUsageType::GenerateVerifyMac)
    } else {
        create.description("Herald integration secrets (local)")
    };
    let key = create.send().await.map_err(|e| backend_error(SERVICE, e))?;
    let key_id = key
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .unwrap_or_default();
    client
        .create_alias()
        .alias_name(alias)
        .target_key_id(key_id)
        .send()
        .await
        .map_err(|e| backend_error(SERVICE, e))?;
    Ok(alias.to_owned())
}
