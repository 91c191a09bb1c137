//! Integrations' rate buckets in DynamoDB, in the same table as the integrations: one
//! item per rate-limited integration, shared by every fan-out invocation.
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | rate bucket | `STORE#<store>` | `RATE#<integration id>` |
//!
//! The item holds `next_free` (epoch microseconds): the time the integration's next
//! send is free ([`crate::ports::RateLimiter`]). A reservation is one conditional
//! `UpdateItem` (a small item: one write unit), in one of two forms:
//!
//! - idle (`next_free` has passed, or no item): `SET next_free = now + count × interval`
//!   if `attribute_not_exists(next_free) OR next_free <= now`; the send times start now;
//! - busy (`next_free` ahead): `SET next_free = next_free + count × interval` if
//!   `next_free > now`, answering the new value (`UPDATED_NEW`); the send times start
//!   at the old one.
//!
//! Neither form reads first, and concurrent busy reservations never conflict (the
//! addition is atomic): a condition fails only when the bucket turned idle or busy
//! meanwhile, and the other form is then tried. The form to try first is the one the
//! last answer calls for, so a reservation is one write, two when the bucket changed
//! form; after [`ROUNDS`] failed conditions it gives up (`None`: the jobs wait a
//! moment). A failed condition costs a write unit too.
//!
//! Times are the fan-out's clock (Lambda's hosts keep theirs by NTP, within
//! milliseconds of each other). The item carries `expires_at` for TTL, a week after
//! each reservation, so an integration's bucket leaves the table once idle (a line of
//! waiting jobs a week long, with no reservation for a week, would be forgotten).
//! See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html>.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::backend_error;
use crate::error::Result;
use crate::model::StoreId;
use crate::ports::{RateLimiter, Slots};

const SERVICE: &str = "DynamoDB";

/// Most conditional writes one reservation makes.
pub const ROUNDS: usize = 4;

/// How long a bucket stays after its last reservation (its TTL): a week.
const IDLE_TTL_SECS: i64 = 7 * 86_400;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Rate buckets in DynamoDB.
#[derive(Debug)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
    /// Each bucket's next free time at its last answer: the form tried first.
    busy: Mutex<HashMap<(StoreId, Uuid), i64>>,
}

/// Buckets whose last answer is remembered before the idle ones are forgotten.
const KEPT: usize = 1024;

impl DynamoRateLimiter {
    /// Buckets in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            busy: Mutex::default(),
        }
    }

    /// Builds the client from the process-wide AWS configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), table)
    }

    fn key(store: &StoreId, id: Uuid) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s(format!("STORE#{store}"))),
            ("sk".to_owned(), s(format!("RATE#{id}"))),
        ])
    }

    /// The next free time last seen for a bucket, if it was ahead of now then.
    fn seen(&self, key: &(StoreId, Uuid)) -> Option<i64> {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    fn remember(&self, key: (StoreId, Uuid), next_free: i64, now: i64) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy.len() >= KEPT {
            busy.retain(|_, free| *free > now);
        }
        busy.insert(key, next_free);
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_else(Utc::now)
}

#[async_trait]
impl RateLimiter for DynamoRateLimiter {
    async fn reserve(
        &self,
        store: &StoreId,
        id: Uuid,
        per_second: u32,
        count: u32,
    ) -> Result<Option<Slots>> {
        let interval = Slots::interval(per_second);
        let span = interval.as_micros() as i64 * i64::from(count);
        let key = (store.clone(), id);
        let now = micros(Utc::now());
        let mut busy = self.seen(&key).is_some_and(|free| free > now);
        for _ in 0..ROUNDS {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(store, id)))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":entity", s("rate-bucket"))
                .return_values(ReturnValue::UpdatedNew);
            let update = if busy {
                update
                    .update_expression(
                        "SET next_free = next_free + :span, entity = :entity, expires_at = :until",
                    )
                    .condition_expression("next_free > :now")
                    .expression_attribute_values(":span", n(span))
                    .expression_attribute_values(
                        ":until",
                        n((now + span) / 1_000_000 + IDLE_TTL_SECS),
                    )
            } else {
                update
                    .update_expression(
                        "SET next_free = :next, entity = :entity, expires_at = :until",
                    )
                    .condition_expression("attribute_not_exists(next_free) OR next_free <= :now")
                    .expression_attribute_values(":next", n(now + span))
                    .expression_attribute_values(
                        ":until",
                        n((now + span) / 1_000_000 + IDLE_TTL_SECS),
                    )
            };
            match update.send().await {
                Ok(out) => {
                    let next_free = out
                        .attributes()
                        .and_then(|a| a.get("next_free"))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(now + span);
                    self.remember(key, next_free, now);
                    return Ok(Some(Slots {
                        first: at(next_free - span),
                        interval,
                        count,
                    }));
                }
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => busy = !busy,
                Err(e) => return Err(backend_error(SERVICE, e)),
            }
        }
        Ok(None)
    }
}
