//! Event claims in DynamoDB, in the same table as the integrations: an event id is
//! taken once per store for the claim's time to live (the contract's deduplication).
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | event claim | `STORE#<store>` | `EVENT#<event id>` |
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

    fn claim_item(
        store: &StoreId,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> HashMap<String, AttributeValue> {
        let mut item = Self::key(store, event_id);
        item.insert("entity".into(), s("event-claim"));
        item.insert(
            "expires_at".into(),
            n(now.timestamp() + ttl.as_secs() as i64),
        );
        item
    }

    /// The conditional `PutItem` that claims `event_id` of `store` in `table` at `now`
    /// for `ttl`: the item and condition every claim writes.
    pub fn claim_request(
        client: &Client,
        table: &str,
        store: &StoreId,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        client
            .put_item()
            .table_name(table)
            .set_item(Some(Self::claim_item(store, event_id, now, ttl)))
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(":now", n(now.timestamp()))
    }
}

/// A claim is free when nobody holds it or its holder's time is up (TTL deletes late).
const CLAIM_CONDITION: &str = "attribute_not_exists(pk) OR expires_at < :now";

#[async_trait]
impl IdempotencyStore for DynamoIdempotency {
    async fn claim(&self, store: &StoreId, event_id: &str, ttl: Duration) -> Result<bool> {
        let result =
            Self::claim_request(&self.client, &self.table, store, event_id, Utc::now(), ttl)
                .send()
                .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(backend_error(SERVICE, e)),
        }
    }

    async fn release(&self, store: &StoreId, event_id: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(store, event_id)))
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }
}
