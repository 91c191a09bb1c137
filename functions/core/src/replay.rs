//! Replay (`POST /v2/integrations/{id}/replay`): moves one integration's
//! dead-lettered jobs back to the internal queue, each at attempt 1 with a fresh
//! retry budget (the fan-out dead-letters a job with its attempt number).
//!
//! A DLQ holds every store's dead letters and SQS cannot select messages, so a replay
//! scans: it receives batches, re-queues and deletes the jobs of the integration being
//! replayed, and keeps every other message hidden only while the scan runs, so that it
//! sees each message once, then makes them visible again at once (visibility 0)
//! instead of leaving them hidden for a visibility timeout, hidden from their own
//! store's replay. Releasing them batch by batch would hand them back to the same scan,
//! which could then never tell it had seen the whole queue.
//!
//! `complete` is claimed only when a receive came back empty *and* no message of the
//! DLQ was in flight once the scan had released its own: a message another replay
//! holds may be one of this integration's. The in-flight count is SQS's approximation;
//! when it lags, a call answers `complete: false` once more than needed, never the
//! other way round for the messages this scan held.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::Result;
use crate::job::DeliveryJob;
use crate::model::StoreId;
use crate::ports::{DeadLetters, OutgoingJob, Redrive};

/// How much longer than the scan's remaining time a received message stays hidden:
/// should the process stop before it releases them, they reappear shortly after.
const HIDE_MARGIN: Duration = Duration::from_secs(5);

/// A dead-lettered body's job, if it is one of `integration` in `store`.
fn job_of(body: &str, store: &StoreId, integration: Uuid) -> Option<DeliveryJob> {
    DeliveryJob::parse(body)
        .ok()
        .filter(|j| j.integration_id == integration && j.store_id == store.as_str())
}

/// Moves the dead-lettered jobs of `store`'s `integration` back to the internal queue
/// as new messages, and only those; scans for at most `time` (an API call's budget).
pub async fn redrive(
    dead: &dyn DeadLetters,
    store: &StoreId,
    integration: Uuid,
    time: Duration,
) -> Result<Redrive> {
    let started = Instant::now();
    let mut done = Redrive::default();
    // What this scan hides and must hand back: others' messages, and its own jobs
    // that could not be re-queued (they stay dead-lettered, for a later replay).
    let mut held: Vec<String> = Vec::new();
    let scanned = scan(
        dead,
        store,
        integration,
        started,
        time,
        &mut done,
        &mut held,
    )
    .await;
    let released = dead.release_dead(&held).await;
    let reached_end = scanned?;
    released?;
    done.complete = reached_end && dead.dead_in_flight().await? == 0;
    Ok(done)
}

/// The scan: `Ok(true)` when a receive came back empty within `time`.
async fn scan(
    dead: &dyn DeadLetters,
    store: &StoreId,
    integration: Uuid,
    started: Instant,
    time: Duration,
    done: &mut Redrive,
    held: &mut Vec<String>,
) -> Result<bool> {
    loop {
        let Some(left) = time.checked_sub(started.elapsed()).filter(|l| !l.is_zero()) else {
            return Ok(false);
        };
        let batch = dead.receive_dead(left + HIDE_MARGIN).await?;
        if batch.is_empty() {
            return Ok(true);
        }
        let mut mine = Vec::new();
        for m in batch {
            match job_of(&m.body, store, integration) {
                Some(job) => mine.push((m, job)),
                None => held.push(m.receipt),
            }
        }
        done.scanned += mine.len();
        if mine.is_empty() {
            continue;
        }
        // Each job starts again at attempt 1, with a fresh retry budget.
        let jobs: Vec<OutgoingJob> = mine
            .iter()
            .enumerate()
            .map(|(i, (_, job))| OutgoingJob {
                entry_id: i.to_string(),
                body: job.clone().restarted().to_body(),
                delay: Duration::ZERO,
            })
            .collect();
        let mut failed: Vec<String> = Vec::new();
        for batch in crate::queue::batches(&jobs) {
            failed.extend(dead.requeue(batch).await?.into_iter().map(|f| f.entry_id));
        }
        for (i, (m, _)) in mine.into_iter().enumerate() {
            if failed.contains(&i.to_string()) {
                held.push(m.receipt);
                continue;
            }
            // Re-queued: remove it from the DLQ. Should this fail, the job is in both
            // queues, and a later replay may deliver it once more (at least once).
            dead.delete_dead(&m.receipt).await?;
            done.moved += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Event;
    use crate::memory::MemoryQueue;
    use crate::ports::{JobQueue, JobSource};
    use crate::testkit::store;

    fn job(store: &StoreId, integration: Uuid, n: usize) -> String {
        DeliveryJob::new(
            store,
            integration,
            Event {
                id: format!("evt-{n}"),
                kind: "order.paid".into(),
                occurred_at: chrono::Utc::now(),
                payload: serde_json::json!({"data": {}}).into(),
            },
            chrono::Utc::now(),
        )
        .to_body()
    }

    /// Sends `bodies` through `queue` until they are dead-lettered (its messages die
    /// on their second receive).
    async fn dead_letter(queue: &MemoryQueue, bodies: &[String]) {
        let before = queue.dead_letters().len();
        let entries: Vec<OutgoingJob> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| OutgoingJob {
                entry_id: i.to_string(),
                body: b.clone(),
                delay: Duration::ZERO,
            })
            .collect();
        assert!(queue.send_batch(&entries).await.expect("send").is_empty());
        let first = JobSource::receive(queue, 100, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(first.len(), bodies.len());
        assert!(JobSource::receive(queue, 100, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!(queue.dead_letters().len(), before + bodies.len());
    }

    /// A memory queue (visibility 0, dead after one receive) whose DLQ holds `bodies`.
    async fn dead_lettered(bodies: &[String]) -> MemoryQueue {
        let queue = MemoryQueue::new(Duration::ZERO, 1);
        dead_letter(&queue, bodies).await;
        queue
    }

    #[tokio::test]
    async fn a_replay_moves_its_jobs_counts_only_them_and_leaves_other_stores_dead_letters_visible()
    {
        // GIVEN two stores' dead letters in one DLQ (and one that is not a job)
        let (s, t) = (store("s"), store("t"));
        let (x, z) = (Uuid::now_v7(), Uuid::now_v7());
        let bodies = [
            job(&s, x, 1),
            job(&t, z, 2),
            job(&t, x, 3),
            job(&s, x, 4),
            "not a job".to_owned(),
        ];
        let queue = dead_lettered(&bodies).await;

        // WHEN store s replays x
        let first = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");

        // THEN it moved and counted its two jobs, and nothing it left is in flight:
        // store t's replay, right after, finds its job and is complete
        assert_eq!(
            first,
            Redrive {
                moved: 2,
                scanned: 2,
                complete: true
            }
        );
        assert_eq!(queue.dead_in_flight().await.expect("count"), 0);
        let second = redrive(&queue, &t, z, Duration::from_secs(20))
            .await
            .expect("redrive");
        assert_eq!(
            second,
            Redrive {
                moved: 1,
                scanned: 1,
                complete: true
            }
        );
        assert_eq!(queue.dead_letters(), [bodies[2].clone(), bodies[4].clone()]);
        assert_eq!(queue.len(), 3, "the moved jobs are queued again");
    }

    #[tokio::test]
    async fn a_replay_is_not_complete_while_another_replay_holds_dead_letters() {
        // GIVEN a concurrent replay holding store t's dead letter, and s's dead letter
        let (s, t) = (store("s"), store("t"));
        let (x, z) = (Uuid::now_v7(), Uuid::now_v7());
        let queue = dead_lettered(&[job(&t, z, 1)]).await;
        let other = queue
            .receive_dead(Duration::from_secs(60))
            .await
            .expect("hold");
        assert_eq!(other.len(), 1);
        dead_letter(&queue, &[job(&s, x, 2)]).await;

        // WHEN store s replays x
        let done = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");

        // THEN it moves its job but does not claim to have seen everything; once the
        // other replay lets go, the next call is complete
        assert_eq!(
            done,
            Redrive {
                moved: 1,
                scanned: 1,
                complete: false
            }
        );
        queue
            .release_dead(&[other[0].receipt.clone()])
            .await
            .expect("release");
        let again = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");
        assert_eq!(
            again,
            Redrive {
                moved: 0,
                scanned: 0,
                complete: true
            }
        );
    }

    #[tokio::test]
    async fn a_replayed_job_starts_again_at_attempt_one_with_a_fresh_budget() {
        // GIVEN a job the fan-out dead-lettered after its sixth attempt
        let s = store("s");
        let x = Uuid::now_v7();
        let mut dead = DeliveryJob::parse(&job(&s, x, 1)).expect("job");
        dead.attempt = 6;
        dead.first_queued_at = Some(chrono::Utc::now());
        let queue = MemoryQueue::new(Duration::ZERO, 1);
        let entry = OutgoingJob {
            entry_id: "0".into(),
            body: dead.to_body(),
            delay: Duration::ZERO,
        };
        assert!(queue.dead_letter(&[entry]).await.expect("dlq").is_empty());

        // WHEN it is replayed
        let done = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");

        // THEN the queue holds it as a new job: attempt 1, its budget from now on
        assert_eq!(done.moved, 1);
        let back = JobSource::receive(&queue, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(back.len(), 1);
        assert_eq!(
            DeliveryJob::parse(&back[0].body).expect("job"),
            dead.restarted()
        );
    }

    #[tokio::test]
    async fn jobs_that_could_not_be_requeued_stay_dead_lettered_and_visible() {
        let s = store("s");
        let x = Uuid::now_v7();
        let queue = dead_lettered(&[job(&s, x, 1), job(&s, x, 2)]).await;
        queue.fail_next_sends(1);
        let done = redrive(&queue, &s, x, Duration::from_secs(20))
            .await
            .expect("redrive");
        assert_eq!(
            done,
            Redrive {
                moved: 1,
                scanned: 2,
                complete: true
            }
        );
        assert_eq!(queue.dead_letters().len(), 1);
        assert_eq!(queue.dead_in_flight().await.expect("count"), 0);
    }
}
