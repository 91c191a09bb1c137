//! Integrations' rate buckets in memory: one process's fan-outs share them (the dev
//! server's pollers, tests).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lock;
use crate::error::Result;
use crate::model::StoreId;
use crate::ports::{RateLimiter, Slots};

/// Buckets kept before the idle ones (their next token already free) are dropped.
const KEPT: usize = 1024;

/// Each integration's next free send time.
#[derive(Default)]
pub struct MemoryRateLimiter {
    next: Mutex<HashMap<(StoreId, Uuid), DateTime<Utc>>>,
}

impl MemoryRateLimiter {
    /// No bucket yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn reserve(
        &self,
        store: &StoreId,
        id: Uuid,
        per_second: u32,
        count: u32,
    ) -> Result<Option<Slots>> {
        let interval = Slots::interval(per_second);
        let now = Utc::now();
        let mut next = lock(&self.next);
        if next.len() >= KEPT {
            next.retain(|_, free| *free > now);
        }
        let free = next.entry((store.clone(), id)).or_insert(now);
        let first = (*free).max(now);
        let slots = Slots {
            first,
            interval,
            count,
        };
        *free = slots.nth(count);
        Ok(Some(slots))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> StoreId {
        StoreId::parse("s").expect("store")
    }

    #[tokio::test]
    async fn an_idle_bucket_starts_now_and_later_reservations_follow_on_at_the_rate() {
        // GIVEN an integration at 50 a second nobody has reserved for
        let limiter = MemoryRateLimiter::new();
        let id = Uuid::new_v4();
        let before = Utc::now();

        // WHEN ten send times are reserved, then five more
        let a = limiter
            .reserve(&store(), id, 50, 10)
            .await
            .expect("ok")
            .expect("slots");
        let b = limiter
            .reserve(&store(), id, 50, 5)
            .await
            .expect("ok")
            .expect("slots");

        // THEN the first starts now, 20 ms apart, and the second right after it
        assert!(a.first >= before && a.first <= Utc::now(), "{a:?}");
        assert_eq!(a.interval, Duration::from_millis(20));
        assert_eq!(b.first, a.nth(10));
        assert_eq!(b.count, 5);
        // another integration has its own bucket
        let other = limiter
            .reserve(&store(), Uuid::new_v4(), 50, 1)
            .await
            .expect("ok")
            .expect("slots");
        assert!(other.first < b.first);
    }

    #[tokio::test]
    async fn concurrent_reservations_never_get_two_send_times_closer_than_the_interval() {
        let limiter = std::sync::Arc::new(MemoryRateLimiter::new());
        let id = Uuid::new_v4();
        let takers = (0..8).map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                for n in 1..=10 {
                    let s = limiter
                        .reserve(&store(), id, 1000, n)
                        .await
                        .expect("ok")
                        .expect("slots");
                    times.extend((0..n).map(|k| s.nth(k)));
                }
                times
            })
        });
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        for t in takers {
            times.extend(t.await.expect("taker"));
        }
        times.sort();
        assert_eq!(times.len(), 8 * 55);
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= chrono::Duration::milliseconds(1),
                "{pair:?}"
            );
        }
    }
}
