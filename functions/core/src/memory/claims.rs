//! Event claims in memory, with their expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::lock;
use crate::error::Result;
use crate::model::StoreId;
use crate::ports::IdempotencyStore;

/// Claimed event ids with their expiry. Expired claims are dropped as claims are
/// made, the soonest first, from a heap: a claim costs the same however many are
/// held (DynamoDB's TTL keeps them a day).
#[derive(Default)]
pub struct MemoryIdempotency {
    claims: Mutex<Claims>,
}

#[derive(Default)]
struct Claims {
    expiry: HashMap<(StoreId, String), Instant>,
    /// Every expiry given, soonest on top; one whose claim has since been released,
    /// or made again with another expiry, is skipped when it comes up.
    soonest: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, (StoreId, String))>>,
}

impl MemoryIdempotency {
    /// No claims.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(&self, store: &StoreId, event_id: &str, ttl: Duration) -> Result<bool> {
        let mut claims = lock(&self.claims);
        let Claims { expiry, soonest } = &mut *claims;
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, _))) = soonest.peek() {
            if *at > now {
                break;
            }
            if let Some(std::cmp::Reverse((at, key))) = soonest.pop() {
                if expiry.get(&key) == Some(&at) {
                    expiry.remove(&key);
                }
            }
        }
        let key = (store.clone(), event_id.to_owned());
        if expiry.contains_key(&key) {
            return Ok(false);
        }
        let at = now + ttl;
        expiry.insert(key.clone(), at);
        soonest.push(std::cmp::Reverse((at, key)));
        Ok(true)
    }

    async fn release(&self, store: &StoreId, event_id: &str) -> Result<()> {
        lock(&self.claims)
            .expiry
            .remove(&(store.clone(), event_id.to_owned()));
        Ok(())
    }
}
