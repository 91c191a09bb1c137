//! DynamoDB adapter for [`IntegrationStore`]: one table, generic keys.
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | integration | `STORE#<store>` | `INTEGRATION#<id>` |
//! | store counter | `STORE#<store>` | `STORE` (attribute `integration_count`) |
//!
//! A webhook in a secret rotation's overlap also carries `gsi4pk` = `ROTATIONS` and
//! `gsi4sk` = the overlap's end: the sparse index `gsi4` (keys only) holds just the
//! integrations whose previous secret is stored, so the sweep
//! ([`crate::sweep`]) finds the ended ones with one `Query` (`gsi4sk <= now`), never a
//! scan. Both go with the previous secret.
//!
//! All integrations of a store share a partition, so listing is one `Query` and ids
//! (UUIDv7) sort in creation order. Creating and deleting go through
//! `TransactWriteItems` together with the store's counter, so the per-store limit
//! holds under concurrent creates. Replacing is conditional on the version read, so a
//! concurrent update is never lost and a deleted integration is never resurrected.
//! See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html>.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::backend_error;
use crate::error::{Error, Result};
use crate::model::{
    format_timestamp, DeliveryOptions, Health, HealthChange, HealthReport, Integration,
    IntegrationType, RetiringSecret, Secret, StoreId, Target, WebhookConfig,
};
use crate::ports::{
    EndedRotation, InsertOutcome, IntegrationStore, ReplaceOutcome, RetiredSecrets,
};
use crate::secrets::{masked_target, Vault};
use crate::validate::parse_stored_target;

const SERVICE: &str = "DynamoDB";
const COUNTER_SK: &str = "STORE";
/// The sparse index of the rotations whose previous secret is stored.
pub const ROTATION_INDEX: &str = "gsi4";
/// Its one partition key value.
const ROTATIONS: &str = "ROTATIONS";

/// Integrations in a DynamoDB table (`HERALD_TABLE`).
///
/// Secrets never reach the table in clear: `configuration` holds their masks and
/// the `secrets` binary attribute their envelope ([`crate::secrets`]). A store
/// without a [`Vault`] (ingest, which only routes) reads the masks and cannot write
/// an integration that has secrets.
#[derive(Clone, Debug)]
pub struct DynamoIntegrationStore {
    client: Client,
    table: String,
    vault: Option<Arc<Vault>>,
}

fn pk(store: &StoreId) -> String {
    format!("STORE#{store}")
}

fn sk(id: Uuid) -> String {
    format!("INTEGRATION#{id}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn key(store: &StoreId, id: Uuid) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(pk(store))),
        ("sk".to_owned(), s(sk(id))),
    ])
}

fn counter_key(store: &StoreId) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(pk(store))),
        ("sk".to_owned(), s(COUNTER_SK)),
    ])
}

impl DynamoIntegrationStore {
    /// Uses `table` through `client` (built once per process).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            vault: None,
        }
    }

    /// Seals and opens secrets with `vault` (the api and fan-out functions).
    pub fn with_vault(mut self, vault: Arc<Vault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// The item for `i`, its secrets sealed; a retiring secret whose overlap has
    /// ended is not written.
    async fn write_item(&self, i: &Integration) -> Result<HashMap<String, AttributeValue>> {
        let mut i = i.clone();
        i.retire_expired(Utc::now());
        let (stored, blob) = match &self.vault {
            Some(vault) => vault.seal_integration(&i).await?,
            None if i.target.configuration(true) == i.target.configuration(false)
                && !has_retiring(&i) =>
            {
                (i, None)
            }
            None => {
                return Err(Error::Config(
                    "this process holds no key for integration secrets (HERALD_KMS_KEY_ID)".into(),
                ))
            }
        };
        let mut item = to_item(&stored);
        if let Some(blob) = blob {
            item.insert("secrets".into(), AttributeValue::B(Blob::new(blob)));
        }
        Ok(item)
    }

    /// The integration in `item`, its secrets opened when this process holds the key;
    /// a retiring secret whose overlap has ended is not read.
    async fn read_item(&self, item: &HashMap<String, AttributeValue>) -> Result<Integration> {
        let blob = item.get("secrets").and_then(|v| v.as_b().ok());
        let integration = from_item(item, blob.is_some())?;
        let mut integration = match (&self.vault, blob) {
            (Some(vault), Some(blob)) => vault.open_integration(integration, blob.as_ref()).await?,
            _ => integration,
        };
        integration.retire_expired(Utc::now());
        Ok(integration)
    }

    /// Builds the client from the process-wide AWS configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), table)
    }

    /// Creates the table as the template does (for tests and local moto setups):
    /// `pk`/`sk`, the three log indexes `gsi1`, `gsi2` and `gsi3`, and the rotations'
    /// sparse index `gsi4` (keys only).
    pub async fn create_table(client: &Client, table: &str) -> Result<()> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let mut request = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest);
        for name in [
            "pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk", "gsi4pk",
            "gsi4sk",
        ] {
            request = request.attribute_definitions(built_ok(attr(name))?);
        }
        request = request
            .key_schema(built_ok(key("pk", KeyType::Hash))?)
            .key_schema(built_ok(key("sk", KeyType::Range))?);
        for index in ["gsi1", "gsi2", "gsi3", ROTATION_INDEX] {
            let projection = if index == ROTATION_INDEX {
                ProjectionType::KeysOnly
            } else {
                ProjectionType::All
            };
            let gsi = GlobalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(built_ok(key(&format!("{index}pk"), KeyType::Hash))?)
                .key_schema(built_ok(key(&format!("{index}sk"), KeyType::Range))?)
                .projection(Projection::builder().projection_type(projection).build())
                .build();
            request = request.global_secondary_indexes(built_ok(gsi)?);
        }
        request
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }

    /// Checks that the table exists, so a misconfigured process fails at start, not
    /// on its first request.
    pub async fn check_table(&self) -> Result<()> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }
}

fn has_retiring(i: &Integration) -> bool {
    matches!(
        &i.target,
        Target::Webhook(WebhookConfig {
            retiring: Some(_),
            ..
        })
    )
}

fn to_item(i: &Integration) -> HashMap<String, AttributeValue> {
    let mut item = key(&i.store_id, i.id);
    item.insert("entity".into(), s("integration"));
    item.insert("id".into(), s(i.id.to_string()));
    item.insert("store_id".into(), s(i.store_id.as_str()));
    item.insert("name".into(), s(&i.name));
    item.insert("description".into(), s(&i.description));
    item.insert("enabled".into(), AttributeValue::Bool(i.enabled));
    item.insert("integration_type".into(), s(i.target.kind().as_str()));
    item.insert(
        "observes".into(),
        AttributeValue::L(i.observes.iter().map(s).collect()),
    );
    // Masked by the caller when the integration has secrets (see `Self::write_item`).
    item.insert(
        "configuration".into(),
        s(i.target.configuration(true).to_string()),
    );
    item.insert("created_at".into(), s(format_timestamp(&i.created_at)));
    item.insert("updated_at".into(), s(format_timestamp(&i.updated_at)));
    item.insert("version".into(), AttributeValue::N(i.version.to_string()));
    health_attributes(&i.health, &mut item);
    if !i.delivery.is_unset() {
        item.insert("delivery".into(), s(i.delivery.to_json().to_string()));
    }
    // The retiring secret itself is in the `secrets` envelope; here its mask and end.
    if let Target::Webhook(WebhookConfig {
        retiring: Some(r), ..
    }) = &i.target
    {
        item.insert("retiring_secret_mask".into(), s(r.secret.masked()));
        item.insert("retiring_until".into(), s(format_timestamp(&r.until)));
        item.insert("gsi4pk".into(), s(ROTATIONS));
        item.insert("gsi4sk".into(), s(format_timestamp(&r.until)));
    }
    item
}

/// The `delivery` options of an item (none on items written before them).
fn delivery_of(item: &HashMap<String, AttributeValue>) -> Result<DeliveryOptions> {
    let Some(text) = item.get("delivery").and_then(|v| v.as_s().ok()) else {
        return Ok(DeliveryOptions::default());
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Corrupt {
        key: "delivery".into(),
        reason: e.to_string(),
    })?;
    Ok(DeliveryOptions {
        secret_header: value.get("secret_header").and_then(|v| v.as_bool()),
        retry_window_minutes: value
            .get("retry_window_minutes")
            .and_then(|v| v.as_u64())
            .and_then(|m| u32::try_from(m).ok()),
        max_per_second: value
            .get("max_per_second")
            .and_then(|v| v.as_u64())
            .and_then(|m| u32::try_from(m).ok()),
    })
}

/// The health attributes (`health_*`) of an item; absent ones are left out.
fn health_attributes(h: &Health, item: &mut HashMap<String, AttributeValue>) {
    item.insert(
        "health_failures".into(),
        AttributeValue::N(h.consecutive_failures.to_string()),
    );
    if let Some(t) = &h.last_success_at {
        item.insert("health_last_success".into(), s(format_timestamp(t)));
    }
    if let Some(t) = &h.last_failure_at {
        item.insert("health_last_failure".into(), s(format_timestamp(t)));
    }
    if let Some(r) = &h.disabled_reason {
        item.insert("health_reason".into(), s(r));
    }
}

/// The health in an item (items written before health was tracked read as healthy).
fn health_of(item: &HashMap<String, AttributeValue>) -> Health {
    let time = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Health {
        consecutive_failures: item
            .get("health_failures")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        last_success_at: time("health_last_success"),
        last_failure_at: time("health_last_failure"),
        disabled_reason: item
            .get("health_reason")
            .and_then(|v| v.as_s().ok())
            .cloned(),
    }
}

/// `sealed`: the configuration's secrets are masks (their envelope is beside it).
/// Items written before secrets were sealed hold them in clear and read as such
/// (they are sealed on their next write).
fn from_item(item: &HashMap<String, AttributeValue>, sealed: bool) -> Result<Integration> {
    let item_key = item
        .get("sk")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_else(|| "<no sk>".into());
    let corrupt = |reason: String| Error::Corrupt {
        key: item_key.clone(),
        reason,
    };
    let text = |name: &str| -> Result<&String> {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| corrupt(format!("{name} is missing or not a string")))
    };
    let time = |name: &str| -> Result<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text(name)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(format!("{name}: {e}")))
    };
    let id = Uuid::parse_str(text("id")?).map_err(|e| corrupt(format!("id: {e}")))?;
    let store_id = StoreId::parse(text("store_id")?).ok_or_else(|| corrupt("store_id".into()))?;
    let kind = IntegrationType::parse(text("integration_type")?)
        .ok_or_else(|| corrupt("integration_type".into()))?;
    let cfg: serde_json::Value = serde_json::from_str(text("configuration")?)
        .map_err(|e| corrupt(format!("configuration is not JSON: {e}")))?;
    let mut target = if sealed {
        masked_target(kind, &cfg).map_err(|e| corrupt(format!("configuration: {e}")))?
    } else {
        parse_stored_target(kind, &cfg).map_err(|errors| {
            corrupt(format!(
                "configuration: {}",
                errors
                    .iter()
                    .map(|e| format!("{} {}", e.pointer, e.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?
    };
    if let (Target::Webhook(c), Some(mask), Ok(until)) = (
        &mut target,
        item.get("retiring_secret_mask").and_then(|v| v.as_s().ok()),
        time("retiring_until"),
    ) {
        c.retiring = Some(RetiringSecret {
            secret: Secret::new(mask.clone()),
            until,
        });
    }
    let observes = item
        .get("observes")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| corrupt("observes is missing".into()))?
        .iter()
        .map(|v| {
            v.as_s()
                .cloned()
                .map_err(|_| corrupt("observes holds a non-string".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt("version".into()))?;
    Ok(Integration {
        id,
        store_id,
        name: text("name")?.clone(),
        description: text("description")?.clone(),
        enabled: *item
            .get("enabled")
            .and_then(|v| v.as_bool().ok())
            .ok_or_else(|| corrupt("enabled".into()))?,
        observes,
        target,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        version,
        health: health_of(item),
        delivery: delivery_of(item).map_err(|e| corrupt(e.to_string()))?,
    })
}

fn built_ok<T>(r: std::result::Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T> {
    r.map_err(|e| Error::Config(format!("building a DynamoDB request: {e}")))
}

/// The cancellation reasons of a cancelled transaction, when the service listed them.
pub(crate) fn cancellation_reasons(
    err: &aws_sdk_dynamodb::error::SdkError<
        TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> Option<&[aws_sdk_dynamodb::types::CancellationReason]> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(e.cancellation_reasons()),
        _ => None,
    }
}

/// Whether a transaction was cancelled because the condition of item `index` failed.
pub(crate) fn condition_failed_at<E: ProvideErrorMetadata>(
    err: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    reasons: Option<&[aws_sdk_dynamodb::types::CancellationReason]>,
    index: usize,
) -> bool {
    if err.code() != Some("TransactionCanceledException") {
        return false;
    }
    match reasons {
        Some(reasons) if !reasons.is_empty() => reasons
            .get(index)
            .and_then(|r| r.code())
            .is_some_and(|c| c == "ConditionalCheckFailed"),
        // Some implementations list the reasons only in the message:
        // "Transaction cancelled, please refer cancellation reasons for specific
        // reasons [None, ConditionalCheckFailed]".
        _ => err
            .message()
            .and_then(|m| {
                m.rsplit_once('[')
                    .map(|(_, list)| list.trim_end_matches(']').to_owned())
            })
            .and_then(|list| {
                list.split(',')
                    .nth(index)
                    .map(|r| r.trim() == "ConditionalCheckFailed")
            })
            .unwrap_or(false),
    }
}

#[async_trait]
impl IntegrationStore for DynamoIntegrationStore {
    async fn insert(
        &self,
        integration: &Integration,
        max_per_store: usize,
    ) -> Result<InsertOutcome> {
        let put = built_ok(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(self.write_item(integration).await?))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )?;
        let count = built_ok(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(counter_key(&integration.store_id)))
                .update_expression("ADD integration_count :one")
                .condition_expression(
                    "attribute_not_exists(integration_count) OR integration_count < :max",
                )
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":max", AttributeValue::N(max_per_store.to_string()))
                .build(),
        )?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(InsertOutcome::Inserted),
            Err(err) => {
                let reasons = cancellation_reasons(&err);
                if condition_failed_at(&err, reasons, 1) {
                    Ok(InsertOutcome::LimitReached)
                } else {
                    Err(backend_error(SERVICE, err))
                }
            }
        }
    }

    async fn get(&self, store: &StoreId, id: Uuid) -> Result<Option<Integration>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(store, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        match out.item() {
            Some(item) => Ok(Some(self.read_item(item).await?)),
            None => Ok(None),
        }
    }

    async fn list(&self, store: &StoreId) -> Result<Vec<Integration>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk(store)))
                .expression_attribute_values(":prefix", s("INTEGRATION#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| backend_error(SERVICE, e))?;
            for item in out.items() {
                items.push(self.read_item(item).await?);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    async fn replace(
        &self,
        integration: &Integration,
        expected_version: u64,
    ) -> Result<ReplaceOutcome> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.write_item(integration).await?))
            .condition_expression("attribute_exists(pk) AND version = :expected")
            .expression_attribute_values(
                ":expected",
                AttributeValue::N(expected_version.to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(ReplaceOutcome::Replaced),
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => {
                // Tell "changed meanwhile" from "deleted meanwhile".
                Ok(
                    match self.get(&integration.store_id, integration.id).await? {
                        Some(_) => ReplaceOutcome::VersionConflict,
                        None => ReplaceOutcome::NotFound,
                    },
                )
            }
            Err(err) => Err(backend_error(SERVICE, err)),
        }
    }

    async fn record_health(
        &self,
        store: &StoreId,
        id: Uuid,
        report: &HealthReport,
    ) -> Result<Option<HealthChange>> {
        // Read the health, enabled flag and version (never the secrets), apply the
        // report, and write it back conditional on the version and the failure count
        // read: a concurrent API update or report makes us read again, so that each
        // report applies to what the one before it left.
        for _ in 0..10 {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(store, id)))
                .consistent_read(true)
                .projection_expression(
                    "enabled, version, health_failures, health_last_success, health_last_failure, health_reason",
                )
                .send()
                .await
                .map_err(|e| backend_error(SERVICE, e))?;
            let Some(item) = out.item() else {
                return Ok(None);
            };
            let enabled = item
                .get("enabled")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false);
            let version: u64 = item
                .get("version")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let before = health_of(item);
            let mut health = before.clone();
            let disable = report.apply(&mut health, enabled);
            let mut attrs = HashMap::new();
            health_attributes(&health, &mut attrs);
            let mut sets = Vec::new();
            let mut values = HashMap::from([
                (
                    ":expected".to_owned(),
                    AttributeValue::N(version.to_string()),
                ),
                (
                    ":failures_read".to_owned(),
                    AttributeValue::N(before.consecutive_failures.to_string()),
                ),
            ]);
            for (name, value) in attrs {
                sets.push(format!("{name} = :{name}"));
                values.insert(format!(":{name}"), value);
            }
            if disable {
                sets.push("enabled = :false".into());
                sets.push("version = :next".into());
                sets.push("updated_at = :now".into());
                values.insert(":false".into(), AttributeValue::Bool(false));
                values.insert(":next".into(), AttributeValue::N((version + 1).to_string()));
                values.insert(":now".into(), s(format_timestamp(&Utc::now())));
            }
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(store, id)))
                .update_expression(format!("SET {}", sets.join(", ")))
                // Items written before health was tracked have no count: zero.
                .condition_expression(if before.consecutive_failures == 0 {
                    "attribute_exists(pk) AND version = :expected AND (attribute_not_exists(health_failures) OR health_failures = :failures_read)"
                } else {
                    "attribute_exists(pk) AND version = :expected AND health_failures = :failures_read"
                })
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            match result {
                Ok(_) => {
                    return Ok(Some(HealthChange {
                        before,
                        after: health,
                        disabled: disable,
                    }))
                }
                Err(err) if err.code() == Some("ConditionalCheckFailedException") => continue,
                Err(err) => return Err(backend_error(SERVICE, err)),
            }
        }
        Err(Error::Backend {
            service: SERVICE,
            message: "the integration kept changing while its health was recorded".into(),
            retryable: true,
        })
    }

    /// Kept on the store's counter item: `if_not_exists` makes the first writer's value
    /// the one every later (and every concurrent) request reads back.
    async fn external_id(&self, store: &StoreId) -> Result<String> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(counter_key(store)))
            .update_expression("SET external_id = if_not_exists(external_id, :issued)")
            .expression_attribute_values(":issued", s(crate::model::issue_external_id()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        match out.attributes().and_then(|a| a.get("external_id")) {
            Some(AttributeValue::S(id)) => Ok(id.clone()),
            _ => Err(Error::Backend {
                service: SERVICE,
                message: "the store's external id was not returned".into(),
                retryable: true,
            }),
        }
    }

    async fn delete(&self, store: &StoreId, id: Uuid) -> Result<bool> {
        let delete = built_ok(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(store, id)))
                .condition_expression("attribute_exists(pk)")
                .build(),
        )?;
        let count = built_ok(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(counter_key(store)))
                .update_expression("ADD integration_count :minus_one")
                .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()))
                .build(),
        )?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => {
                let reasons = cancellation_reasons(&err);
                if condition_failed_at(&err, reasons, 0) {
                    Ok(false)
                } else {
                    Err(backend_error(SERVICE, err))
                }
            }
        }
    }
}

/// The rotation a `gsi4` entry names; `None` for an entry that is not one.
fn ended_rotation(item: &HashMap<String, AttributeValue>) -> Option<EndedRotation> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
    let store_id = StoreId::parse(text("pk")?.strip_prefix("STORE#")?)?;
    let id = Uuid::parse_str(text("sk")?.strip_prefix("INTEGRATION#")?).ok()?;
    let until = DateTime::parse_from_rfc3339(text("gsi4sk")?)
        .ok()?
        .with_timezone(&Utc);
    Some(EndedRotation {
        store_id,
        id,
        until,
    })
}

#[async_trait]
impl RetiredSecrets for DynamoIntegrationStore {
    /// One `Query` of the sparse index `gsi4` (keys only) per page of 1 MB: it holds
    /// only the integrations in a rotation, so a sweep with nothing to do reads
    /// nothing but its empty answer.
    async fn ended_rotations(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EndedRotation>> {
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(ROTATION_INDEX)
                .key_condition_expression("gsi4pk = :rotations AND gsi4sk <= :now")
                .expression_attribute_values(":rotations", s(ROTATIONS))
                .expression_attribute_values(":now", s(format_timestamp(&now)))
                .limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| backend_error(SERVICE, e))?;
            out.extend(page.items().iter().filter_map(ended_rotation));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Reads the item (consistently), seals its secrets again without the previous
    /// one, and writes the new envelope with one `UpdateItem` conditional on the
    /// version read and the rotation's end: a rotation, an edit or a health change
    /// made meanwhile fails the condition, and nothing is written. Only the envelope
    /// and the rotation's attributes change (the version too stays: what the API
    /// shows is the same, as reads drop an ended rotation already).
    async fn remove_retired_secret(&self, ended: &EndedRotation) -> Result<bool> {
        let Some(vault) = &self.vault else {
            return Err(Error::Config(
                "this process holds no key for integration secrets (HERALD_KMS_KEY_ID)".into(),
            ));
        };
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(&ended.store_id, ended.id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        let Some(item) = out.item() else {
            return Ok(false);
        };
        let until = format_timestamp(&ended.until);
        if item.get("retiring_until").and_then(|v| v.as_s().ok()) != Some(&until) {
            return Ok(false);
        }
        let mut integration = self.read_item(item).await?;
        if let Target::Webhook(c) = &mut integration.target {
            c.retiring = None;
        }
        let (_, blob) = vault.seal_integration(&integration).await?;
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&ended.store_id, ended.id)))
            .condition_expression("version = :read AND retiring_until = :until")
            .expression_attribute_values(
                ":read",
                AttributeValue::N(integration.version.to_string()),
            )
            .expression_attribute_values(":until", s(until));
        let remove = "REMOVE retiring_secret_mask, retiring_until, gsi4pk, gsi4sk";
        request = match blob {
            Some(blob) => request
                .update_expression(format!("SET secrets = :secrets {remove}"))
                .expression_attribute_values(":secrets", AttributeValue::B(Blob::new(blob))),
            None => request.update_expression(format!("{remove}, secrets")),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(err) => Err(backend_error(SERVICE, err)),
        }
    }
}
