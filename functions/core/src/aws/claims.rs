//! Event claims in DynamoDB, in the same table as the integrations: an event id is
//! taken once per store for the claim's time to live (the contract's deduplication).
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | event claim | `STORE#<store>` | `EVENT#<event id>` |
//!
//! A claim keeps the time it was first taken (`claimed_at`, epoch milliseconds): a
//! claim given back (`released`, when an event could not be queued) and taken again
//! by a resend answers that time, so the resend's jobs get the ids of the first
//! send's ([`crate::job::job_id`] is made of it) and receivers deduplicate them.
//!
//! A claim carries `expires_at` (epoch seconds) for DynamoDB TTL. TTL deletion is lazy
//! (up to days late), so a claim whose `expires_at` has passed may be taken again.
//! See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/howitworks-ttl.html>.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::backend_error;
use crate::error::Result;
use crate::model::StoreId;
use crate::ports::IdempotencyStore;

const SERVICE: &str = "DynamoDB";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Event claims in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoIdempotency {
    client: Client,
    table: String,
}

impl DynamoIdempotency {
    /// Claims in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Builds the client from the process-wide AWS configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), table)
    }

    fn key(store: &StoreId, event_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s(format!("STORE#{store}"))),
            ("sk".to_owned(), s(format!("EVENT#{event_id}"))),
        ])
    }

    /// The conditional `UpdateItem` that takes the claim of `event_id` of `store` in
    /// `table` at `now` for `ttl`: free when nobody holds it, its holder's time is up
    /// (TTL deletes late) or it was given back; its first time (`claimed_at`, epoch ms)
    /// is kept, and comes back in the answer (`ALL_NEW`). One write unit, as a
    /// conditional `PutItem` (the item is small); a transaction would cost two.
    pub fn claim_request(
        client: &Client,
        table: &str,
        store: &StoreId,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        client
            .update_item()
            .table_name(table)
            .set_key(Some(Self::key(store, event_id)))
            .update_expression(
                "SET entity = :entity, expires_at = :until, claimed_at = if_not_exists(claimed_at, :ms) REMOVE released",
            )
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(":entity", s("event-claim"))
            .expression_attribute_values(":until", n(now.timestamp() + ttl.as_secs() as i64))
            .expression_attribute_values(":ms", n(now.timestamp_millis()))
            .expression_attribute_values(":now", n(now.timestamp()))
            .expression_attribute_values(":released", AttributeValue::Bool(true))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
    }
}

/// A claim is free when nobody holds it, its holder's time is up (TTL deletes late),
/// or it was given back.
const CLAIM_CONDITION: &str =
    "attribute_not_exists(pk) OR expires_at < :now OR released = :released";

#[async_trait]
impl IdempotencyStore for DynamoIdempotency {
    async fn take(
        &self,
        store: &StoreId,
        event_id: &str,
        ttl: Duration,
    ) -> Result<Option<DateTime<Utc>>> {
        let now = Utc::now();
        let result = Self::claim_request(&self.client, &self.table, store, event_id, now, ttl)
            .send()
            .await;
        match result {
            Ok(out) => {
                let first = out
                    .attributes()
                    .and_then(|item| item.get("claimed_at"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|ms| ms.parse().ok())
                    .and_then(DateTime::from_timestamp_millis);
                // An item without its time is one an earlier build claimed: now.
                Ok(Some(first.unwrap_or_else(|| crate::job::to_millis(now))))
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(backend_error(SERVICE, e)),
        }
    }

    async fn release(&self, store: &StoreId, event_id: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(store, event_id)))
            .update_expression("SET released = :released")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":released", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Nothing to give back.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(backend_error(SERVICE, e)),
        }
    }
}
