//! The embedded queue: SQS's semantics (visibility, delays, receive counts, a
//! dead-letter queue, batch limits) in memory, for the dev server and tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lock;
use crate::error::Result;
use crate::ports::{
    DeadLetter, DeadLetters, JobQueue, JobSource, OutgoingJob, QueuedJob, SendFailure,
};

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
    sent_at: DateTime<Utc>,
}

/// The queue's messages, each either visible or hidden (delayed, or in flight until
/// its visibility ends), indexed so that sending, receiving, hiding and deleting one
/// message cost the same however many wait: a backlog does not slow its own draining.
#[derive(Debug, Default)]
struct QueueState {
    /// Every message not deleted, by its number in the order of arrival.
    messages: HashMap<u64, Message>,
    /// The visible ones, received in order of arrival.
    visible: std::collections::BTreeSet<u64>,
    /// The hidden ones, by when they become visible (their `visible_at`).
    hidden: std::collections::BTreeSet<(Instant, u64)>,
    /// The number the next message sent gets.
    next: u64,
    dead: Vec<Message>,
    failing_sends: usize,
}

impl QueueState {
    /// Adds `message`, visible or hidden by its `visible_at`.
    fn push(&mut self, message: Message, now: Instant) {
        let n = self.next;
        self.next += 1;
        if message.visible_at <= now {
            self.visible.insert(n);
        } else {
            self.hidden.insert((message.visible_at, n));
        }
        self.messages.insert(n, message);
    }

    /// The number of the message `receipt` was given for, if it is still its receipt.
    fn holder(&self, receipt: &str) -> Option<u64> {
        let n: u64 = receipt.split_once('-')?.0.parse().ok()?;
        let m = self.messages.get(&n)?;
        (m.receipt.as_deref() == Some(receipt)).then_some(n)
    }

    /// Takes message `n` out of the visible and hidden sets.
    fn unlist(&mut self, n: u64) {
        if let Some(m) = self.messages.get(&n) {
            if !self.hidden.remove(&(m.visible_at, n)) {
                self.visible.remove(&n);
            }
        }
    }

    /// Hides message `n` until `at`.
    fn hide(&mut self, n: u64, at: Instant) {
        self.unlist(n);
        if let Some(m) = self.messages.get_mut(&n) {
            m.visible_at = at;
            self.hidden.insert((at, n));
        }
    }
}

/// An in-process queue with SQS semantics: a visibility timeout, a receive count per
/// message, visibility changes, delayed messages (`DelaySeconds`: hidden from
/// receivers but not in flight), SQS's batch limits ([`crate::queue`]), and a
/// dead-letter queue that takes a message when it is received again after
/// `max_receives` receives (SQS's `maxReceiveCount`) or when it is sent there.
pub struct MemoryQueue {
    state: Mutex<QueueState>,
    arrived: tokio::sync::Notify,
    visibility: Duration,
    max_receives: u32,
}

impl MemoryQueue {
    /// A queue whose received messages stay hidden for `visibility` unless changed,
    /// and move to the DLQ after `max_receives` receives.
    pub fn new(visibility: Duration, max_receives: u32) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            arrived: tokio::sync::Notify::new(),
            visibility,
            max_receives,
        }
    }

    /// Messages in the queue (visible, delayed or in flight).
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and not yet deleted or visible again (SQS:
    /// `ApproximateNumberOfMessagesNotVisible`). A delayed message that no one has
    /// received is not in flight.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        let state = lock(&self.state);
        state
            .hidden
            .iter()
            .filter(|(at, n)| {
                *at > now && state.messages.get(n).is_some_and(|m| m.receipt.is_some())
            })
            .count()
    }

    /// Bodies of the messages in the queue, visible, delayed or in flight, in order
    /// of arrival.
    #[cfg(test)]
    pub(crate) fn peek(&self) -> Vec<String> {
        let state = lock(&self.state);
        let mut numbered: Vec<(&u64, &Message)> = state.messages.iter().collect();
        numbered.sort_unstable_by_key(|(n, _)| **n);
        numbered.into_iter().map(|(_, m)| m.body.clone()).collect()
    }

    /// Bodies of the messages in the dead-letter queue.
    pub fn dead_letters(&self) -> Vec<String> {
        lock(&self.state)
            .dead
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Makes the next `n` entries sent fail as a throttled `SendMessageBatch` entry
    /// would (fault injection for tests and drills).
    #[cfg(any(test, feature = "testkit"))]
    pub fn fail_next_sends(&self, n: usize) {
        lock(&self.state).failing_sends = n;
    }
}

/// The dead-letter queue, with SQS's visibility: a received dead letter stays hidden
/// from every other receiver until it is released, deleted, or its time is up.
#[async_trait]
impl DeadLetters for MemoryQueue {
    async fn receive_dead(&self, hide: Duration) -> Result<Vec<DeadLetter>> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let mut batch = Vec::new();
        for m in state
            .dead
            .iter_mut()
            .filter(|m| m.visible_at <= now)
            .take(10)
        {
            let receipt = Uuid::new_v4().to_string();
            m.receipt = Some(receipt.clone());
            m.visible_at = now + hide;
            batch.push(DeadLetter {
                receipt,
                body: m.body.clone(),
            });
        }
        Ok(batch)
    }

    async fn release_dead(&self, receipts: &[String]) -> Result<()> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        for m in state.dead.iter_mut() {
            if m.receipt.as_ref().is_some_and(|r| receipts.contains(r)) {
                m.visible_at = now;
            }
        }
        Ok(())
    }

    async fn delete_dead(&self, receipt: &str) -> Result<()> {
        lock(&self.state)
            .dead
            .retain(|m| m.receipt.as_deref() != Some(receipt));
        Ok(())
    }

    async fn requeue(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.send_batch(jobs).await
    }

    async fn dead_in_flight(&self) -> Result<usize> {
        let now = Instant::now();
        Ok(lock(&self.state)
            .dead
            .iter()
            .filter(|m| m.visible_at > now)
            .count())
    }
}

/// What SQS refuses of a batch as a whole: too many entries or too many bytes.
fn refused_batch(jobs: &[OutgoingJob]) -> Option<crate::Error> {
    let bytes: usize = jobs.iter().map(crate::queue::message_bytes).sum();
    let reason = if jobs.len() > crate::queue::MAX_BATCH_ENTRIES {
        format!("TooManyEntriesInBatchRequest: {} entries", jobs.len())
    } else if bytes > crate::queue::MAX_BATCH_BYTES {
        format!("BatchRequestTooLong: {bytes} bytes")
    } else {
        return None;
    };
    Some(crate::Error::Backend {
        service: "SQS",
        message: reason,
        retryable: false,
    })
}

/// What SQS refuses of one entry, if anything: a message over the size limit or a
/// delay over the longest.
fn refused_entry(job: &OutgoingJob) -> Option<String> {
    if crate::queue::message_bytes(job) > crate::queue::MAX_MESSAGE_BYTES {
        Some("InvalidParameterValue: the message is longer than the queue allows".into())
    } else if job.delay > crate::queue::MAX_DELAY {
        Some("InvalidParameterValue: DelaySeconds is longer than 900".into())
    } else {
        None
    }
}

impl MemoryQueue {
    /// Takes each job as SQS would: the batch's limits first, then each entry's, then
    /// the injected failures; `dead` sends to the DLQ.
    fn take(&self, jobs: &[OutgoingJob], dead: bool) -> Result<Vec<SendFailure>> {
        if let Some(refused) = refused_batch(jobs) {
            return Err(refused);
        }
        let mut failures = Vec::new();
        let mut queued = 0;
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            for job in jobs {
                if let Some(reason) = refused_entry(job) {
                    failures.push(SendFailure {
                        entry_id: job.entry_id.clone(),
                        reason,
                        retryable: false,
                    });
                    continue;
                }
                if state.failing_sends > 0 {
                    state.failing_sends -= 1;
                    failures.push(SendFailure {
                        entry_id: job.entry_id.clone(),
                        reason: "ThrottlingException: injected".into(),
                        retryable: true,
                    });
                    continue;
                }
                let message = Message {
                    id: Uuid::new_v4().to_string(),
                    body: job.body.clone(),
                    receive_count: 0,
                    visible_at: if dead { now } else { now + job.delay },
                    receipt: None,
                    sent_at: Utc::now(),
                };
                if dead {
                    state.dead.push(message);
                } else {
                    state.push(message, now);
                    queued += 1;
                }
            }
        }
        // One receiver woken per message, not every waiting one: a dev server's many
        // idle pollers do not all wake for each event.
        for _ in 0..queued {
            self.arrived.notify_one();
        }
        Ok(failures)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.take(jobs, false)
    }

    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some(n) = state.holder(receipt) {
            state.hide(n, Instant::now() + delay);
        }
        Ok(())
    }

    async fn dead_letter(&self, jobs: &[OutgoingJob]) -> Result<Vec<SendFailure>> {
        self.take(jobs, true)
    }
}

#[async_trait]
impl JobSource for MemoryQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueuedJob>> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let (batch, next_visible) = {
                let mut state = lock(&self.state);
                let state = &mut *state;
                let now = Instant::now();
                // The hidden messages whose time has come are visible again, in order
                // of arrival; those received `max_receives` times go to the DLQ instead,
                // visible there at once, under no receipt yet.
                let mut due = Vec::new();
                while let Some(&(at, n)) = state.hidden.first() {
                    if at > now {
                        break;
                    }
                    state.hidden.pop_first();
                    due.push(n);
                }
                due.sort_unstable();
                for n in due {
                    match state.messages.get(&n).map(|m| m.receive_count) {
                        Some(count) if count >= self.max_receives => {
                            if let Some(mut m) = state.messages.remove(&n) {
                                m.receipt = None;
                                state.dead.push(m);
                            }
                        }
                        Some(_) => {
                            state.visible.insert(n);
                        }
                        None => {}
                    }
                }
                let mut batch = Vec::new();
                while batch.len() < max {
                    let Some(n) = state.visible.pop_first() else {
                        break;
                    };
                    let Some(m) = state.messages.get_mut(&n) else {
                        continue;
                    };
                    if m.receive_count >= self.max_receives {
                        if let Some(mut m) = state.messages.remove(&n) {
                            m.receipt = None;
                            state.dead.push(m);
                        }
                        continue;
                    }
                    m.receive_count += 1;
                    m.visible_at = now + self.visibility;
                    let receipt = format!("{n}-{}", Uuid::new_v4().simple());
                    m.receipt = Some(receipt.clone());
                    batch.push(QueuedJob {
                        message_id: m.id.clone(),
                        receipt,
                        body: m.body.clone(),
                        receive_count: m.receive_count,
                        sent_at: m.sent_at,
                    });
                    state.hidden.insert((m.visible_at, n));
                }
                let next_visible = state.hidden.first().map(|(at, _)| *at);
                (batch, next_visible)
            };
            let now = Instant::now();
            if !batch.is_empty() || now >= until {
                return Ok(batch);
            }
            let wake = next_visible
                .map_or(until, |t| t.min(until))
                .max(now + Duration::from_millis(1));
            let _ = tokio::time::timeout_at(wake.into(), notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some(n) = state.holder(receipt) {
            state.unlist(n);
            state.messages.remove(&n);
        }
        Ok(())
    }
}
