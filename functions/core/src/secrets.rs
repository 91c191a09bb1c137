//! Secrets at rest: envelope encryption of an integration's secret fields.
//!
//! Before an integration is stored, its secret fields (webhook `secret_key`, SQS
//! access keys, STOMP `password`) are taken out of the configuration, which keeps
//! only their masks, and sealed into one blob:
//!
//! ```text
//! "HV1" | u16 length of the wrapped data key | wrapped data key | 12-byte nonce | AES-256-GCM ciphertext + tag
//! ```
//!
//! Each write asks the [`KeyWrapper`] for a fresh 256-bit data key: KMS
//! `GenerateDataKey` in AWS ([`crate::aws::kms::KmsKeys`]), a process-local master
//! key in the embedded default ([`LocalKeys`]). The encryption context
//! `{herald:store, herald:integration}` is bound both to the wrapped key (KMS refuses
//! to unwrap it for another integration) and, as additional authenticated data, to the
//! ciphertext, so a blob copied onto another item does not open.
//!
//! Opening unwraps the data key (cached by its wrapped form for a few minutes, so
//! the integration cache's refreshes cost no KMS call) and decrypts. Processes that
//! only route events (ingest) never open: they read the masked configuration.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    secret_fields, Integration, IntegrationType, RetiringSecret, Secret, StoreId, Target,
    WebhookConfig,
};
use crate::validate::parse_stored_target;

const MAGIC: &[u8] = b"HV1";
/// Length of a data key (AES-256).
pub const KEY_LEN: usize = 32;
/// How long an unwrapped data key is kept in memory.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(300);
/// How many unwrapped data keys are kept at most.
pub const KEY_CACHE_CAP: usize = 4096;

/// The encryption context of one integration's secrets: KMS binds the wrapped key to
/// it, and it is the ciphertext's additional authenticated data.
pub type Context = BTreeMap<String, String>;

/// The encryption context of an integration's secrets.
pub fn context(store: &StoreId, integration: Uuid) -> Context {
    BTreeMap::from([
        ("herald:integration".to_owned(), integration.to_string()),
        ("herald:store".to_owned(), store.as_str().to_owned()),
    ])
}

fn aad(ctx: &Context) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (k, v) in ctx {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// A data key: in clear for this process only, and wrapped for storage.
pub struct DataKey {
    /// The key itself.
    pub plain: [u8; KEY_LEN],
    /// The key encrypted under the master key (stored beside the ciphertext).
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Where data keys come from and how they are unwrapped.
#[async_trait]
pub trait KeyWrapper: Send + Sync {
    /// A new data key for `ctx`.
    async fn generate(&self, ctx: &Context) -> Result<DataKey>;
    /// The data key `wrapped` was made from, if it was wrapped for `ctx`.
    async fn unwrap(&self, ctx: &Context, wrapped: &[u8]) -> Result<[u8; KEY_LEN]>;
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out)
        .map_err(|_| Error::Config("the system random number generator failed".into()))?;
    Ok(out)
}

fn cipher(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!()))
}

/// `nonce | ciphertext + tag` of `plain` under `key`, bound to `aad`.
fn seal_with(key: &[u8; KEY_LEN], aad_bytes: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let nonce = random::<NONCE_LEN>()?;
    let mut sealed = plain.to_vec();
    cipher(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad_bytes),
            &mut sealed,
        )
        .map_err(|_| Error::Config("sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open_with(key: &[u8; KEY_LEN], aad_bytes: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = body.to_vec();
    let plain = cipher(key)
        .open_in_place(nonce, Aad::from(aad_bytes), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

/// Data keys wrapped with a master key held in this process: the embedded default's
/// stand-in for KMS (same envelope, same context binding).
pub struct LocalKeys {
    master: [u8; KEY_LEN],
}

impl fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKeys(<redacted>)")
    }
}

impl LocalKeys {
    /// A master key from the system's random number generator (lives as long as the
    /// process, as the embedded store does).
    pub fn random() -> Result<Self> {
        Ok(Self { master: random()? })
    }
}

#[async_trait]
impl KeyWrapper for LocalKeys {
    async fn generate(&self, ctx: &Context) -> Result<DataKey> {
        let plain = random::<KEY_LEN>()?;
        let wrapped = seal_with(&self.master, &aad(ctx), &plain)?;
        Ok(DataKey { plain, wrapped })
    }

    async fn unwrap(&self, ctx: &Context, wrapped: &[u8]) -> Result<[u8; KEY_LEN]> {
        open_with(&self.master, &aad(ctx), wrapped)
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k.as_slice()).ok())
            .ok_or_else(|| Error::Corrupt {
                key: "secrets".into(),
                reason: "the data key does not open under this master key and context".into(),
            })
    }
}

/// An integration's secrets, sealed: the configuration with masks in place of the
/// secrets, and the blob that holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The `configuration` object, every secret masked (safe to store and show).
    pub configuration: Value,
    /// The envelope; `None` when the target has no secret.
    pub blob: Option<Vec<u8>>,
}

type KeyCache = HashMap<Vec<u8>, (Instant, [u8; KEY_LEN])>;

/// Seals and opens integrations' secrets with envelope encryption.
pub struct Vault {
    keys: Arc<dyn KeyWrapper>,
    cache: Mutex<KeyCache>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault(<redacted>)")
    }
}

impl Vault {
    /// A vault over `keys`.
    pub fn new(keys: Arc<dyn KeyWrapper>) -> Self {
        Self {
            keys,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The embedded default: a random process-local master key.
    pub fn local() -> Result<Self> {
        Ok(Self::new(Arc::new(LocalKeys::random()?)))
    }

    /// Takes the secrets out of `target` and seals them for `(store, integration)`.
    pub async fn seal(
        &self,
        store: &StoreId,
        integration: Uuid,
        target: &Target,
    ) -> Result<Sealed> {
        let configuration = target.configuration(false);
        let blob = self
            .seal_secrets(store, integration, target_secrets(target))
            .await?;
        Ok(Sealed {
            configuration,
            blob,
        })
    }

    /// The envelope of `secrets` (field name to value) for `(store, integration)`;
    /// `None` when there are none.
    async fn seal_secrets(
        &self,
        store: &StoreId,
        integration: Uuid,
        secrets: Map<String, Value>,
    ) -> Result<Option<Vec<u8>>> {
        if secrets.is_empty() {
            return Ok(None);
        }
        let ctx = context(store, integration);
        let key = self.keys.generate(&ctx).await?;
        let wrapped_len = u16::try_from(key.wrapped.len())
            .map_err(|_| Error::Config("the wrapped data key is too long".into()))?;
        let sealed = seal_with(
            &key.plain,
            &aad(&ctx),
            Value::Object(secrets).to_string().as_bytes(),
        )?;
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&wrapped_len.to_be_bytes());
        blob.extend_from_slice(&key.wrapped);
        blob.extend_from_slice(&sealed);
        self.remember(key.wrapped, key.plain);
        Ok(Some(blob))
    }

    /// The target with its secrets back in place: `configuration` is the masked form
    /// [`Vault::seal`] returned and `blob` its envelope.
    pub async fn open(
        &self,
        store: &StoreId,
        integration: Uuid,
        kind: IntegrationType,
        configuration: &Value,
        blob: &[u8],
    ) -> Result<Target> {
        let secrets = self.open_secrets(store, integration, blob).await?;
        target_with(integration, kind, configuration, &secrets)
    }

    /// The secrets (field name to value) sealed in `blob` for `(store, integration)`.
    async fn open_secrets(
        &self,
        store: &StoreId,
        integration: Uuid,
        blob: &[u8],
    ) -> Result<Map<String, Value>> {
        let corrupt = |reason: &str| corrupt(integration, reason);
        let rest = blob
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt("unknown envelope version"))?;
        if rest.len() < 2 {
            return Err(corrupt("truncated envelope"));
        }
        let wrapped_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        if rest.len() < wrapped_len {
            return Err(corrupt("truncated envelope"));
        }
        let (wrapped, sealed) = rest.split_at(wrapped_len);
        let ctx = context(store, integration);
        let key = match self.cached(wrapped) {
            Some(key) => key,
            None => {
                let key = self.keys.unwrap(&ctx, wrapped).await?;
                self.remember(wrapped.to_vec(), key);
                key
            }
        };
        let plain = open_with(&key, &aad(&ctx), sealed)
            .ok_or_else(|| corrupt("the ciphertext does not open for this integration"))?;
        serde_json::from_slice(&plain).map_err(|_| corrupt("not a JSON object"))
    }

    /// The integration as stored: its target with masks in place of secrets, and the
    /// blob holding them (`None` when it has none). A webhook's retiring secret is
    /// sealed beside its secret, under [`RETIRING_FIELD`].
    pub async fn seal_integration(
        &self,
        integration: &Integration,
    ) -> Result<(Integration, Option<Vec<u8>>)> {
        let mut secrets = target_secrets(&integration.target);
        let retiring = match &integration.target {
            Target::Webhook(WebhookConfig {
                retiring: Some(r), ..
            }) => Some(r),
            _ => None,
        };
        if let Some(r) = retiring {
            secrets.insert(RETIRING_FIELD.into(), Value::from(r.secret.expose()));
        }
        let blob = self
            .seal_secrets(&integration.store_id, integration.id, secrets)
            .await?;
        let mut masked = integration.clone();
        masked.target = masked_target(
            integration.target.kind(),
            &integration.target.configuration(false),
        )
        .map_err(|reason| corrupt(integration.id, &reason))?;
        if let (Target::Webhook(c), Some(r)) = (&mut masked.target, retiring) {
            c.retiring = Some(RetiringSecret {
                secret: Secret::new(r.secret.masked()),
                until: r.until,
            });
        }
        Ok((masked, blob))
    }

    /// The stored form of [`Vault::seal_integration`] with its secrets back in place.
    pub async fn open_integration(
        &self,
        mut masked: Integration,
        blob: &[u8],
    ) -> Result<Integration> {
        let secrets = self.open_secrets(&masked.store_id, masked.id, blob).await?;
        let until = match &masked.target {
            Target::Webhook(WebhookConfig {
                retiring: Some(r), ..
            }) => Some(r.until),
            _ => None,
        };
        masked.target = target_with(
            masked.id,
            masked.target.kind(),
            &masked.target.configuration(true),
            &secrets,
        )?;
        if let (Target::Webhook(c), Some(until), Some(Value::String(secret))) =
            (&mut masked.target, until, secrets.get(RETIRING_FIELD))
        {
            c.retiring = Some(RetiringSecret {
                secret: Secret::new(secret.clone()),
                until,
            });
        }
        Ok(masked)
    }

    fn cached(&self, wrapped: &[u8]) -> Option<[u8; KEY_LEN]> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(wrapped)
            .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(_, key)| *key)
    }

    fn remember(&self, wrapped: Vec<u8>, key: [u8; KEY_LEN]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= KEY_CACHE_CAP {
            cache.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
            if cache.len() >= KEY_CACHE_CAP {
                cache.clear();
            }
        }
        cache.insert(wrapped, (Instant::now(), key));
    }
}

/// The name a webhook's retiring secret is sealed under, beside its `secret_key`.
pub const RETIRING_FIELD: &str = "retiring_secret_key";

fn corrupt(integration: Uuid, reason: &str) -> Error {
    Error::Corrupt {
        key: format!("INTEGRATION#{integration}"),
        reason: format!("secrets: {reason}"),
    }
}

/// The target's secret fields, in clear.
fn target_secrets(target: &Target) -> Map<String, Value> {
    let Value::Object(clear) = target.configuration(true) else {
        unreachable!("a configuration is always an object")
    };
    clear
        .into_iter()
        .filter(|(field, _)| secret_fields(target.kind()).contains(&field.as_str()))
        .collect()
}

/// The target of `configuration` (masked) with `secrets` put back in place.
fn target_with(
    integration: Uuid,
    kind: IntegrationType,
    configuration: &Value,
    secrets: &Map<String, Value>,
) -> Result<Target> {
    let Value::Object(mut cfg) = configuration.clone() else {
        return Err(corrupt(integration, "the configuration is not an object"));
    };
    for (field, value) in secrets {
        if secret_fields(kind).contains(&field.as_str()) {
            cfg.insert(field.clone(), value.clone());
        }
    }
    parse_stored_target(kind, &Value::Object(cfg)).map_err(|errors| {
        corrupt(
            integration,
            &errors
                .iter()
                .map(|e| format!("{} {}", e.pointer, e.detail))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// A new webhook secret in the Standard Webhooks form: `whsec_` and 32 random bytes
/// (from the operating system's generator) in base64, so the official verification
/// libraries take it as it is ([`crate::signing`] decodes it the same way).
pub fn generate_webhook_secret() -> Result<Secret> {
    use base64::Engine;
    let bytes = random::<32>()?;
    Ok(Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )))
}

/// The target as a process without the key sees it: secrets are their masks.
pub fn masked_target(kind: IntegrationType, configuration: &Value) -> Result<Target, String> {
    crate::validate::parse_masked_target(kind, configuration).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{} {}", e.pointer, e.detail))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Secret, SqsAuth, SqsConfig, StompConfig, WebhookConfig};

    fn store() -> StoreId {
        StoreId::parse("store-a").expect("valid")
    }

    fn stomp() -> Target {
        Target::Stomp(StompConfig {
            addresses: vec!["stomp://127.0.0.1:61613".into()],
            destination: "/queue/orders".into(),
            username: "herald".into(),
            password: Secret::new("correct-horse-battery"),
            virtual_host: None,
        })
    }

    #[tokio::test]
    async fn sealed_secrets_leave_only_masks_in_the_configuration_and_open_back() {
        let vault = Vault::local().expect("vault");
        let id = Uuid::now_v7();
        let sealed = vault.seal(&store(), id, &stomp()).await.expect("seal");
        let text = sealed.configuration.to_string();
        assert!(!text.contains("correct-horse"), "{text}");
        assert!(
            text.contains(&crate::mask::mask("correct-horse-battery")),
            "{text}"
        );
        let blob = sealed.blob.expect("a blob");
        assert!(!String::from_utf8_lossy(&blob).contains("correct-horse"));
        let opened = vault
            .open(
                &store(),
                id,
                IntegrationType::Stomp,
                &sealed.configuration,
                &blob,
            )
            .await
            .expect("open");
        assert_eq!(opened, stomp());
    }

    #[tokio::test]
    async fn a_blob_does_not_open_for_another_integration_or_store() {
        let vault = Vault::local().expect("vault");
        let id = Uuid::now_v7();
        let sealed = vault.seal(&store(), id, &stomp()).await.expect("seal");
        let blob = sealed.blob.expect("a blob");
        let other_store = StoreId::parse("store-b").expect("valid");
        for (s, i) in [(store(), Uuid::now_v7()), (other_store, id)] {
            let err = vault
                .open(&s, i, IntegrationType::Stomp, &sealed.configuration, &blob)
                .await
                .expect_err("must not open");
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn a_tampered_or_truncated_blob_is_refused_not_panicked_on() {
        let vault = Vault::local().expect("vault");
        let id = Uuid::now_v7();
        let sealed = vault.seal(&store(), id, &stomp()).await.expect("seal");
        let blob = sealed.blob.expect("a blob");
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut cases = vec![flipped, Vec::new(), b"HV1".to_vec(), b"XX1abc".to_vec()];
        for n in 0..blob.len() {
            cases.push(blob[..n].to_vec());
        }
        for case in cases {
            let got = vault
                .open(
                    &store(),
                    id,
                    IntegrationType::Stomp,
                    &sealed.configuration,
                    &case,
                )
                .await;
            assert!(got.is_err());
        }
    }

    #[tokio::test]
    async fn a_second_vault_with_another_master_key_cannot_open() {
        let id = Uuid::now_v7();
        let sealed = Vault::local()
            .expect("vault")
            .seal(&store(), id, &stomp())
            .await
            .expect("seal");
        let got = Vault::local()
            .expect("vault")
            .open(
                &store(),
                id,
                IntegrationType::Stomp,
                &sealed.configuration,
                &sealed.blob.expect("blob"),
            )
            .await;
        assert!(got.is_err());
    }

    #[tokio::test]
    async fn targets_without_secrets_need_no_blob() {
        let vault = Vault::local().expect("vault");
        let target = Target::AwsSqs(SqsConfig {
            url: "https://sqs.us-east-1.amazonaws.com/123456789012/q".into(),
            region: "us-east-1".into(),
            auth: SqsAuth::AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/herald".into(),
                external_id: "ext-1".into(),
            },
        });
        let sealed = vault
            .seal(&store(), Uuid::now_v7(), &target)
            .await
            .expect("seal");
        assert_eq!(sealed.blob, None);
        let hook = Target::Webhook(WebhookConfig {
            url: "https://example.com/hook".into(),
            secret_key: None,
            retiring: None,
        });
        let sealed = vault
            .seal(&store(), Uuid::now_v7(), &hook)
            .await
            .expect("seal");
        assert_eq!(sealed.blob, None);
    }

    #[test]
    fn masked_access_keys_read_back_for_processes_without_the_key() {
        let cfg = serde_json::json!({
            "url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
            "region": "us-east-1",
            "aws_access_key_id": "****************MPLE",
            "aws_secret_access_key": "************************************EKEY",
        });
        let target = masked_target(IntegrationType::AwsSqs, &cfg).expect("masked target");
        assert_eq!(target.configuration(false), cfg);
    }

    #[test]
    fn masked_access_keys_of_a_bus_or_a_topic_read_back_too() {
        let keys = serde_json::json!({
            "aws_access_key_id": "****************MPLE",
            "aws_secret_access_key": "************************************EKEY",
        });
        for (kind, mut cfg) in [
            (
                IntegrationType::AwsEventBridge,
                serde_json::json!({"event_bus_arn": "arn:aws:events:us-east-1:123456789012:event-bus/b",
                    "region": "us-east-1"}),
            ),
            (
                IntegrationType::AwsSns,
                serde_json::json!({"topic_arn": "arn:aws:sns:us-east-1:123456789012:t",
                    "region": "us-east-1"}),
            ),
        ] {
            for (k, v) in keys.as_object().expect("object") {
                cfg[k] = v.clone();
            }
            let target = masked_target(kind, &cfg).expect("masked target");
            assert_eq!(target.configuration(false), cfg, "{kind:?}");
        }
    }
}
