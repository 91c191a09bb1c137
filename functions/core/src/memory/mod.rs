//! Embedded in-process adapters: the dev server's default backend and the fake used
//! by fast unit tests. They are complete implementations of the ports, with the same
//! atomicity guarantees as the AWS adapters.

use std::sync::Mutex;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section below is a few field updates that cannot panic half-way,
    // so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod bodies;
mod claims;
mod integrations;
mod log;
mod mac;
mod queue;
mod rate;

pub use bodies::MemoryBodies;
pub use claims::{MemoryIdempotency, CLAIMS_HELD};
pub use integrations::MemoryIntegrationStore;
pub use log::MemoryDeliveryLog;
pub use mac::MemoryMacKey;
pub use queue::MemoryQueue;
pub use rate::MemoryRateLimiter;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::attempt::{Attempt, JobStatus, LogEntry};
    use crate::model::StoreId;
    use crate::ports::{
        DeliveryLog, IdempotencyStore, JobQueue, JobSource, OutgoingJob, QueuedJob,
    };

    /// An attempt of job `n` made at second `updated_s`.
    fn job(n: u32, updated_s: i64) -> LogEntry {
        let at = Utc
            .timestamp_opt(1_800_000_000 + updated_s, 0)
            .single()
            .expect("time");
        LogEntry {
            attempt: Attempt {
                id: Uuid::now_v7(),
                store_id: "s".into(),
                integration_id: Uuid::from_u128(7),
                job_id: Uuid::from_u128(u128::from(n)),
                event_id: format!("e{n}"),
                event_type: "order.paid".into(),
                attempt: 1,
                succeeded: true,
                status_code: Some(200),
                body: String::new(),
                error_detail: None,
                processing_time: 0.1,
                created_at: at,
            },
            status: JobStatus::Delivered,
            enqueued_at: at,
            replay_of: None,
            archive: None,
        }
    }

    fn job_to_send(body: &str, delay: Duration) -> OutgoingJob {
        OutgoingJob {
            entry_id: body.to_owned(),
            body: body.to_owned(),
            delay,
        }
    }

    fn bodies(batch: &[QueuedJob]) -> Vec<&str> {
        batch.iter().map(|j| j.body.as_str()).collect()
    }

    #[tokio::test]
    async fn messages_are_received_in_order_of_arrival_and_a_released_one_comes_before_newer_ones()
    {
        let queue = MemoryQueue::new(Duration::from_secs(60), 5);
        let sent: Vec<OutgoingJob> = ["a", "b", "c", "d"]
            .iter()
            .map(|b| job_to_send(b, Duration::ZERO))
            .collect();
        assert!(queue.send_batch(&sent).await.expect("send").is_empty());
        let first = queue.receive(2, Duration::ZERO).await.expect("receive");
        assert_eq!(bodies(&first), ["a", "b"]);
        assert_eq!(queue.in_flight(), 2);

        // "a" is released: it comes before "c" and "d", received a second time.
        queue
            .change_visibility(&first[0].receipt, Duration::ZERO)
            .await
            .expect("visibility");
        let second = queue.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(bodies(&second), ["a", "c", "d"]);
        assert_eq!(
            second.iter().map(|j| j.receive_count).collect::<Vec<_>>(),
            [2, 1, 1]
        );

        // The receipt of the first receive of "a" no longer deletes it; its new one does.
        queue.delete(&first[0].receipt).await.expect("delete");
        assert_eq!(queue.len(), 4);
        queue.delete(&second[0].receipt).await.expect("delete");
        queue.delete(&first[1].receipt).await.expect("delete");
        assert_eq!(queue.peek(), ["c", "d"]);
        assert_eq!(queue.in_flight(), 2);
    }

    #[tokio::test]
    async fn a_delayed_message_is_neither_received_nor_in_flight_until_its_delay_ends() {
        let queue = MemoryQueue::new(Duration::from_secs(60), 5);
        let sent = [
            job_to_send("later", Duration::from_secs(600)),
            job_to_send("now", Duration::ZERO),
        ];
        assert!(queue.send_batch(&sent).await.expect("send").is_empty());
        let batch = queue.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(bodies(&batch), ["now"]);
        assert!(queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!((queue.len(), queue.in_flight()), (2, 1));
    }

    #[tokio::test]
    async fn a_message_received_its_last_time_goes_to_the_dlq_when_its_visibility_ends() {
        let queue = MemoryQueue::new(Duration::ZERO, 2);
        let sent = [
            job_to_send("x", Duration::ZERO),
            job_to_send("y", Duration::ZERO),
        ];
        assert!(queue.send_batch(&sent).await.expect("send").is_empty());
        for _ in 0..2 {
            let batch = queue.receive(10, Duration::ZERO).await.expect("receive");
            assert_eq!(bodies(&batch), ["x", "y"]);
        }
        assert!(queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!(queue.dead_letters(), ["x", "y"]);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn an_expired_claim_can_be_made_again_and_a_live_one_cannot() {
        let claims = MemoryIdempotency::new();
        let store = StoreId::parse("s").expect("store");
        assert!(claims
            .claim(&store, "e1", Duration::ZERO)
            .await
            .expect("claim"));
        assert!(claims
            .claim(&store, "e2", Duration::from_secs(3600))
            .await
            .expect("claim"));
        assert!(claims
            .claim(&store, "e1", Duration::from_secs(3600))
            .await
            .expect("claim"));
        assert!(!claims
            .claim(&store, "e1", Duration::ZERO)
            .await
            .expect("claim"));
        assert!(!claims
            .claim(&store, "e2", Duration::ZERO)
            .await
            .expect("claim"));
    }

    #[tokio::test]
    async fn past_their_cap_the_embedded_claims_give_up_the_one_that_expires_soonest() {
        let claims = MemoryIdempotency::with_cap(3);
        let store = StoreId::parse("s").expect("store");
        let hour = Duration::from_secs(3600);
        for (id, ttl) in [("a", 2), ("b", 1), ("c", 3)] {
            assert!(claims.claim(&store, id, hour * ttl).await.expect("claim"));
        }
        // A fourth claim: "b" expires soonest and is given up; the others are held.
        assert!(claims.claim(&store, "d", hour).await.expect("claim"));
        assert_eq!(claims.held(), 3);
        for held in ["a", "c", "d"] {
            assert!(!claims.claim(&store, held, hour).await.expect("claim"));
        }
        assert!(claims.claim(&store, "b", hour * 4).await.expect("claim"));
        assert_eq!(claims.held(), 3);
        // Taking them all at once keeps the cap too.
        let keys: Vec<_> = ["e", "f", "g", "h"]
            .iter()
            .map(|id| (store.clone(), (*id).to_owned()))
            .collect();
        let taken = claims.take_all(&keys, hour * 5).await;
        assert!(taken.iter().all(|t| matches!(t, Ok(Some(_)))));
        assert_eq!(claims.held(), 3);
        assert!(!claims.claim(&store, "h", hour).await.expect("claim"));
    }

    #[tokio::test]
    async fn a_claim_given_back_and_taken_again_keeps_its_first_time() {
        let claims = MemoryIdempotency::new();
        let store = StoreId::parse("s").expect("store");
        let hour = Duration::from_secs(3600);
        let first = claims.take(&store, "e", hour).await.expect("take");
        assert!(first.is_some());
        assert_eq!(claims.take(&store, "e", hour).await.expect("held"), None);
        tokio::time::sleep(Duration::from_millis(5)).await;
        claims.release(&store, "e").await.expect("release");
        assert_eq!(claims.take(&store, "e", hour).await.expect("again"), first);
        assert_eq!(claims.take(&store, "e", hour).await.expect("held"), None);
    }

    #[tokio::test]
    async fn a_claim_made_again_after_its_release_keeps_its_own_expiry() {
        let claims = MemoryIdempotency::new();
        let store = StoreId::parse("s").expect("store");
        // The first claim expires at once; released and made again for an hour, the
        // first claim's expiry coming up must not end the second.
        assert!(claims
            .claim(&store, "e", Duration::ZERO)
            .await
            .expect("claim"));
        claims.release(&store, "e").await.expect("release");
        assert!(claims
            .claim(&store, "e", Duration::from_secs(3600))
            .await
            .expect("claim"));
        assert!(!claims
            .claim(&store, "e", Duration::from_secs(3600))
            .await
            .expect("claim"));
        // Claims of other stores are their own.
        let other = StoreId::parse("t").expect("store");
        assert!(claims
            .claim(&other, "e", Duration::from_secs(3600))
            .await
            .expect("claim"));
    }

    #[tokio::test]
    async fn the_job_map_keeps_its_cap_and_the_jobs_updated_last() {
        let log = MemoryDeliveryLog::new(10);
        // Job 0 is the first seen but is updated again and again: it stays, and its
        // earlier updates do not count against the others.
        for n in 0..50u32 {
            log.record(&[job(n, i64::from(n))]).await.expect("record");
            log.record(&[job(0, 100 + i64::from(n))])
                .await
                .expect("record");
            assert!(lock(&log.state).jobs.len() <= 10);
        }
        let state = lock(&log.state);
        let mut kept: Vec<u128> = state.jobs.keys().map(|id| id.as_u128()).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [0, 41, 42, 43, 44, 45, 46, 47, 48, 49],
            "the jobs updated last are kept"
        );
    }
}
