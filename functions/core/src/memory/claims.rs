//! Event claims in memory, with their expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::error::Result;
use crate::model::StoreId;
use crate::ports::IdempotencyStore;

/// Claimed event ids with their expiry and first time. Expired claims are dropped as
/// claims are made, the soonest first, from a heap: a claim costs the same however
/// many are held (DynamoDB's TTL keeps them a day).
#[derive(Default)]
pub struct MemoryIdempotency {
    claims: Mutex<Claims>,
}

/// A claim held: until when, since when, and whether it was given back.
struct Held {
    until: Instant,
    since: DateTime<Utc>,
    released: bool,
}

#[derive(Default)]
struct Claims {
    held: HashMap<(StoreId, String), Held>,
    /// Every expiry given, soonest on top; one whose claim has since been made again
    /// with another expiry is skipped when it comes up.
    soonest: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, (StoreId, String))>>,
}

impl MemoryIdempotency {
    /// No claims.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Claims {
    /// Claims `event_id` of `store` for `ttl`: when its first claim was made, or
    /// `None` while it is held.
    fn take(&mut self, store: &StoreId, event_id: &str, ttl: Duration) -> Option<DateTime<Utc>> {
        let Claims { held, soonest } = self;
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, _))) = soonest.peek() {
            if *at > now {
                break;
            }
            if let Some(std::cmp::Reverse((at, key))) = soonest.pop() {
                if held.get(&key).map(|h| h.until) == Some(at) {
                    held.remove(&key);
                }
            }
        }
        let key = (store.clone(), event_id.to_owned());
        let until = now + ttl;
        let since = match held.get(&key) {
            Some(h) if !h.released => return None,
            Some(h) => h.since,
            None => crate::job::to_millis(Utc::now()),
        };
        held.insert(
            key.clone(),
            Held {
                until,
                since,
                released: false,
            },
        );
        soonest.push(std::cmp::Reverse((until, key)));
        Some(since)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn take(
        &self,
        store: &StoreId,
        event_id: &str,
        ttl: Duration,
    ) -> Result<Option<DateTime<Utc>>> {
        Ok(lock(&self.claims).take(store, event_id, ttl))
    }

    /// One lock for the request's claims, not one each.
    async fn take_all(
        &self,
        keys: &[(StoreId, String)],
        ttl: Duration,
    ) -> Vec<Result<Option<DateTime<Utc>>>> {
        let mut claims = lock(&self.claims);
        keys.iter()
            .map(|(store, id)| Ok(claims.take(store, id, ttl)))
            .collect()
    }

    async fn release(&self, store: &StoreId, event_id: &str) -> Result<()> {
        if let Some(h) = lock(&self.claims)
            .held
            .get_mut(&(store.clone(), event_id.to_owned()))
        {
            h.released = true;
        }
        Ok(())
    }
}
