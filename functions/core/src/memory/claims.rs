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
/// many are held (DynamoDB's TTL keeps them a day). At most [`CLAIMS_HELD`] are held
/// (or the cap given): past it the claim that would expire soonest is given up,
/// so a dev server that takes events for hours holds a bounded number. An event
/// sent again after its claim was given up is taken as new.
pub struct MemoryIdempotency {
    claims: Mutex<Claims>,
    cap: usize,
}

/// How many claims the embedded backend holds at most by default, about 64 MB of them:
/// the ids of the last ten seconds or so at the dev server's full speed, of the whole
/// day the claims last at a developer's pace.
pub const CLAIMS_HELD: usize = 200_000;

impl Default for MemoryIdempotency {
    fn default() -> Self {
        Self::with_cap(CLAIMS_HELD)
    }
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
    soonest: Soonest,
}

/// Expiries, soonest on top.
type Soonest = std::collections::BinaryHeap<std::cmp::Reverse<(Instant, (StoreId, String))>>;

impl MemoryIdempotency {
    /// No claims, holding at most [`CLAIMS_HELD`].
    pub fn new() -> Self {
        Self::default()
    }

    /// No claims, holding at most `cap` (at least one).
    pub fn with_cap(cap: usize) -> Self {
        Self {
            claims: Mutex::default(),
            cap: cap.max(1),
        }
    }

    /// How many claims are held, expired ones not yet dropped included.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        lock(&self.claims).held.len()
    }
}

impl Claims {
    /// Claims `event_id` of `store` for `ttl`, holding at most `cap` claims: when its
    /// first claim was made, or `None` while it is held.
    fn take(
        &mut self,
        store: &StoreId,
        event_id: &str,
        ttl: Duration,
        cap: usize,
    ) -> Option<DateTime<Utc>> {
        let Claims { held, soonest } = self;
        let now = Instant::now();
        Self::drop_soonest(held, soonest, |at, _| at <= now);
        let key = (store.clone(), event_id.to_owned());
        let until = now + ttl;
        let since = match held.get(&key) {
            Some(h) if !h.released => return None,
            Some(h) => h.since,
            None => {
                // One more would be over the cap: the ones that expire soonest go.
                Self::drop_soonest(held, soonest, |_, held| held >= cap);
                crate::job::to_millis(Utc::now())
            }
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

    /// Drops the claims that expire soonest while `go(their expiry, how many are
    /// held)`; an expiry whose claim has since been made again is passed over.
    fn drop_soonest(
        held: &mut HashMap<(StoreId, String), Held>,
        soonest: &mut Soonest,
        go: impl Fn(Instant, usize) -> bool,
    ) {
        while let Some(std::cmp::Reverse((at, _))) = soonest.peek() {
            if !go(*at, held.len()) {
                break;
            }
            if let Some(std::cmp::Reverse((at, key))) = soonest.pop() {
                if held.get(&key).map(|h| h.until) == Some(at) {
                    held.remove(&key);
                }
            }
        }
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
        Ok(lock(&self.claims).take(store, event_id, ttl, self.cap))
    }

    /// One lock for the request's claims, not one each.
    async fn take_all(
        &self,
        keys: &[(StoreId, String)],
        ttl: Duration,
    ) -> Vec<Result<Option<DateTime<Utc>>>> {
        let mut claims = lock(&self.claims);
        keys.iter()
            .map(|(store, id)| Ok(claims.take(store, id, ttl, self.cap)))
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
