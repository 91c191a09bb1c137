//! Event intake: validate each event, claim its id once (an id the sender gave: one
//! Herald gives is new), find the store's enabled integrations that observe it, and
//! queue one delivery job per (event, integration).
//!
//! Nothing is lost silently: an event whose jobs could not all be queued has its claim
//! released and is reported as failed, so the sender can send it again (job ids are
//! stable, so jobs that did get queued are deduplicated by receivers).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::cache::{observers, IntegrationCache};
use crate::catalog;
use crate::job::{
    json_len, parse_event_text, parse_named_event, text_len, DeliveryJob, Event, Payload, Stored,
    MAX_EVENT_BYTES, MAX_INLINE_PAYLOAD,
};
use crate::model::StoreId;
use crate::ports::{EventBodies, IdempotencyStore, JobQueue, OutgoingJob};
use crate::validate::FieldError;

pub mod request;

/// Most events in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 100;

/// How an ingest behaves.
#[derive(Clone, Debug)]
pub struct IngestSettings {
    /// How long an event id is remembered (a resend within it is a duplicate).
    pub idempotency_ttl: Duration,
    /// Rounds of `SendMessageBatch` for entries that keep failing retryably.
    pub send_rounds: u32,
    /// Pause before the second round (doubled each round).
    pub send_backoff: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            idempotency_ttl: Duration::from_secs(24 * 3600),
            send_rounds: 4,
            send_backoff: Duration::from_millis(50),
        }
    }
}

/// What became of one event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventStatus {
    /// Queued: this many jobs (0 when no enabled integration observes it).
    Accepted {
        /// Jobs queued.
        jobs: usize,
    },
    /// The id was seen before within the idempotency window; nothing was queued.
    Duplicate,
    /// The event is malformed; nothing was queued.
    Invalid(Vec<FieldError>),
    /// Queuing failed; nothing to rely on was queued and the sender should resend.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The outcome of one event of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct EventResult {
    /// Position in the request.
    pub index: usize,
    /// The event id (the sender's or the one assigned), when the event was valid.
    pub id: Option<String>,
    /// What happened.
    pub status: EventStatus,
}

impl EventResult {
    /// The JSON the callers see for this event.
    pub fn to_json(&self) -> Value {
        match &self.status {
            EventStatus::Accepted { jobs } => {
                json!({"id": self.id, "status": "accepted", "jobs": jobs})
            }
            EventStatus::Duplicate => json!({"id": self.id, "status": "duplicate", "jobs": 0}),
            EventStatus::Invalid(errors) => json!({
                "index": self.index,
                "status": "invalid",
                "errors": errors.iter().map(|e| json!({
                    "status": 422, "title": "Failed Validation", "detail": e.detail,
                    "source": {"pointer": e.pointer}
                })).collect::<Vec<_>>()
            }),
            EventStatus::Failed { reason } => {
                json!({"id": self.id, "status": "failed", "detail": reason})
            }
        }
    }
}

/// An incoming event, as ingest takes it: parsed (a direct invocation's, Herald's own)
/// or as its JSON text (`POST /v2/events`, whose events are never parsed into trees).
pub trait Incoming: Sync {
    /// The event validated ([`parse_event`](crate::job::parse_event)), and whether its sender named it (gave
    /// it an id).
    fn read(
        &self,
        store_from_caller: Option<&StoreId>,
        pointer: &str,
        now: DateTime<Utc>,
    ) -> Result<(StoreId, Event, bool), Vec<FieldError>>;

    /// Bytes of its JSON text written compactly, when more than [`MAX_EVENT_BYTES`].
    fn oversize(&self) -> Option<usize>;
}

impl Incoming for Value {
    fn read(
        &self,
        store_from_caller: Option<&StoreId>,
        pointer: &str,
        now: DateTime<Utc>,
    ) -> Result<(StoreId, Event, bool), Vec<FieldError>> {
        parse_named_event(self, store_from_caller, pointer, now)
    }

    fn oversize(&self) -> Option<usize> {
        Some(json_len(self)).filter(|&n| n > MAX_EVENT_BYTES)
    }
}

impl Incoming for &RawValue {
    fn read(
        &self,
        store_from_caller: Option<&StoreId>,
        pointer: &str,
        now: DateTime<Utc>,
    ) -> Result<(StoreId, Event, bool), Vec<FieldError>> {
        parse_event_text(self, store_from_caller, pointer, now)
    }

    fn oversize(&self) -> Option<usize> {
        // Compact text is never longer than the text.
        let text = self.get();
        (text.len() > MAX_EVENT_BYTES)
            .then(|| text_len(text))
            .filter(|&n| n > MAX_EVENT_BYTES)
    }
}

/// The ingest use case.
pub struct Ingest {
    integrations: Arc<IntegrationCache>,
    idempotency: Arc<dyn IdempotencyStore>,
    queue: Arc<dyn JobQueue>,
    settings: IngestSettings,
    /// Where payloads too large for a queue message are stored (none: such events
    /// are refused).
    bodies: Option<Arc<dyn EventBodies>>,
}

impl Ingest {
    /// Ingest over these ports.
    pub fn new(
        integrations: Arc<IntegrationCache>,
        idempotency: Arc<dyn IdempotencyStore>,
        queue: Arc<dyn JobQueue>,
        settings: IngestSettings,
    ) -> Self {
        Self {
            integrations,
            idempotency,
            queue,
            settings,
            bodies: None,
        }
    }

    /// Stores payloads too large for a queue message ([`MAX_INLINE_PAYLOAD`]) in
    /// `bodies`, and queues their jobs with a claim check ([`Stored`]).
    pub fn with_bodies(mut self, bodies: Option<Arc<dyn EventBodies>>) -> Self {
        self.bodies = bodies;
        self
    }

    /// Ingests raw events from a sender. `caller_store` is the HTTP caller's store
    /// (`None` on direct invoke); `pointer` gives each event's JSON pointer prefix.
    /// Herald's own operational events ([`crate::alerts`]) are refused.
    pub async fn ingest(
        &self,
        raw: &[impl Incoming],
        caller_store: Option<&StoreId>,
        pointer: impl Fn(usize) -> String,
    ) -> Vec<EventResult> {
        self.take(raw, caller_store, pointer, false).await
    }

    /// Emits `event`, one of Herald's own (an integration change, an operational
    /// event), for `store`: as [`Ingest::ingest`], but operational events are taken.
    pub async fn emit(&self, store: &StoreId, event: &Value) -> EventResult {
        let mut results = self
            .take(
                std::slice::from_ref(event),
                Some(store),
                |_| String::new(),
                true,
            )
            .await;
        results.pop().unwrap_or(EventResult {
            index: 0,
            id: None,
            status: EventStatus::Failed {
                reason: "nothing was ingested".into(),
            },
        })
    }

    async fn take(
        &self,
        raw: &[impl Incoming],
        caller_store: Option<&StoreId>,
        pointer: impl Fn(usize) -> String,
        from_herald: bool,
    ) -> Vec<EventResult> {
        let now = Utc::now();
        let mut results: Vec<EventResult> = Vec::with_capacity(raw.len());
        let mut valid: Vec<(usize, StoreId, Event)> = Vec::new();
        // Events the sender named: only their ids can have been sent before.
        let mut named = HashSet::new();
        for (index, incoming) in raw.iter().enumerate() {
            match incoming.read(caller_store, &pointer(index), now) {
                Ok((_, event, _)) if !from_herald && catalog::is_emitted_by_herald(&event.kind) => {
                    results.push(EventResult {
                        index,
                        id: None,
                        status: EventStatus::Invalid(vec![crate::validate::FieldError {
                            pointer: format!("{}/type", pointer(index)),
                            detail: "is emitted by Herald itself; it cannot be sent".into(),
                        }]),
                    });
                }
                Ok((_, event, _))
                    if self.bodies.is_none() && event.payload.text().len() > MAX_INLINE_PAYLOAD =>
                {
                    results.push(EventResult {
                        index,
                        id: None,
                        status: EventStatus::Invalid(vec![crate::validate::FieldError {
                            pointer: format!("{}/payload", pointer(index)),
                            detail: format!("is larger than {MAX_INLINE_PAYLOAD} bytes, the most a queue message carries, and this deployment stores no larger ones (HERALD_EVENT_BUCKET)"),
                        }]),
                    });
                }
                Ok((store, event, is_named)) => {
                    results.push(EventResult {
                        index,
                        id: Some(event.id.clone()),
                        status: EventStatus::Accepted { jobs: 0 },
                    });
                    if is_named {
                        named.insert(index);
                    }
                    valid.push((index, store, event));
                }
                Err(errors) => results.push(EventResult {
                    index,
                    id: None,
                    status: EventStatus::Invalid(errors),
                }),
            }
        }

        // The same id twice in one request is a duplicate too.
        let mut seen = HashSet::new();
        let mut unique = Vec::new();
        for (index, store, event) in valid {
            if seen.insert((store.clone(), event.id.clone())) {
                unique.push((index, store, event));
            } else {
                results[index].status = EventStatus::Duplicate;
            }
        }

        // An id Herald gave (a new UUIDv7) cannot have been sent before: its event
        // needs no claim, and costs no write. Its jobs are queued now; a claimed
        // event's at its claim's first time, so that a resend's jobs keep their ids.
        let (to_claim, unnamed): (Vec<_>, Vec<_>) = unique
            .into_iter()
            .partition(|(index, _, _)| named.contains(index));
        let now_ms = crate::job::to_millis(now);
        let mut claimed: Vec<_> = unnamed
            .into_iter()
            .map(|(index, store, event)| (index, store, event, now_ms))
            .collect();
        let ttl = self.settings.idempotency_ttl;
        let keys: Vec<(StoreId, String)> = to_claim
            .iter()
            .map(|(_, store, event)| (store.clone(), event.id.clone()))
            .collect();
        let claims = self.idempotency.take_all(&keys, ttl).await;
        for ((index, store, event), claim) in to_claim.into_iter().zip(claims) {
            match claim {
                Ok(Some(at)) => claimed.push((index, store, event, at)),
                Ok(None) => results[index].status = EventStatus::Duplicate,
                Err(e) => {
                    tracing::error!(error = %e, "idempotency claim failed");
                    results[index].status = EventStatus::Failed {
                        reason: "the event could not be recorded; send it again".into(),
                    };
                }
            }
        }
        claimed.sort_unstable_by_key(|(index, _, _, _)| *index);

        // One store query per store, not per event.
        let stores: Vec<StoreId> = claimed.iter().map(|(_, s, _, _)| s.clone()).collect();
        let lists = self.integrations.snapshot(&stores).await;

        let mut jobs: Vec<(usize, DeliveryJob)> = Vec::new();
        let mut queued_events: HashMap<usize, (StoreId, String)> = HashMap::new();
        // The payloads to store before their jobs are queued, by event.
        let mut to_store = Vec::new();
        let mut to_release = Vec::new();
        for (index, store, event, queued_at) in claimed {
            let list = match lists.get(&store) {
                Some(Ok(list)) => list,
                other => {
                    if let Some(Err(e)) = other {
                        tracing::error!(error = %e, store = %store, "reading integrations failed");
                    }
                    results[index].status = EventStatus::Failed {
                        reason: "integrations could not be read; send the event again".into(),
                    };
                    if named.contains(&index) {
                        to_release.push((store, event.id));
                    }
                    continue;
                }
            };
            let mut targets = observers(list, &event.kind);
            // An operational event never goes to the integration it concerns.
            if let Some(subject) = crate::alerts::subject(&event) {
                targets.retain(|i| i.id != subject);
            }
            results[index].status = EventStatus::Accepted {
                jobs: targets.len(),
            };
            // A payload too large for a message is stored (if anyone observes it),
            // and its jobs carry the claim check instead.
            let parts = match targets.is_empty() {
                true => None,
                false => Stored::parts(&store, &event.payload),
            };
            let (event, stored) = match parts {
                Some(parts) => {
                    let stored = parts.stored.clone();
                    to_store.push((index, parts.objects));
                    let event = Event {
                        payload: Payload::absent(),
                        ..event
                    };
                    (event, Some(stored))
                }
                None => (event, None),
            };
            for integration in targets {
                let mut job = DeliveryJob::new(&store, integration.id, event.clone(), queued_at);
                job.stored = stored.clone();
                jobs.push((index, job));
            }
            queued_events.insert(index, (store, event.id));
        }

        let mut failed_events: HashMap<usize, String> = HashMap::new();
        for (index, reason) in self.store_bodies(to_store).await {
            failed_events.insert(index, reason);
        }
        let jobs: Vec<(usize, DeliveryJob)> = jobs
            .into_iter()
            .filter(|(index, _)| !failed_events.contains_key(index))
            .collect();
        let unqueued = self.send_all(&jobs).await;
        for (i, reason) in unqueued {
            failed_events.entry(jobs[i].0).or_insert(reason);
        }
        for (index, reason) in failed_events {
            let Some((store, id)) = queued_events.remove(&index) else {
                continue;
            };
            tracing::error!(event = %id, reason = %reason, "event could not be queued");
            results[index].status = EventStatus::Failed {
                reason: "the event could not be queued; send it again".into(),
            };
            if named.contains(&index) {
                to_release.push((store, id));
            }
        }
        for (store, id) in to_release {
            if let Err(e) = self.idempotency.release(&store, &id).await {
                tracing::error!(error = %e, event = %id, "releasing an idempotency claim failed; a resend within the window will be taken for a duplicate");
            }
        }
        results
    }

    /// Stores the payloads of `events` (their objects, by event index), all at once;
    /// returns the events whose payload could not be stored, with the reason.
    async fn store_bodies(
        &self,
        events: Vec<(usize, Vec<(String, bytes::Bytes)>)>,
    ) -> Vec<(usize, String)> {
        let Some(bodies) = &self.bodies else {
            return Vec::new();
        };
        let puts = events.into_iter().map(|(index, objects)| async move {
            let stored = join_all(
                objects
                    .into_iter()
                    .map(|(key, body)| async move { bodies.put(&key, body).await }),
            )
            .await;
            stored
                .into_iter()
                .find_map(|r| r.err())
                .map(|e| (index, format!("storing the payload failed: {e}")))
        });
        join_all(puts).await.into_iter().flatten().collect()
    }

    /// Sends every job, retrying entries that fail retryably; returns the indexes
    /// (into `jobs`) that could not be queued, with the reason.
    async fn send_all(&self, jobs: &[(usize, DeliveryJob)]) -> Vec<(usize, String)> {
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        let mut given_up = Vec::new();
        let mut pause = self.settings.send_backoff;
        for round in 0..self.settings.send_rounds.max(1) {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            // A request's batches go out together: its latency is one SQS round trip,
            // not one per batch. Batches are cut by SQS's count and byte limits.
            let entries: Vec<OutgoingJob> = pending
                .iter()
                .map(|&i| OutgoingJob {
                    entry_id: i.to_string(),
                    body: jobs[i].1.to_body(),
                    delay: Duration::ZERO,
                })
                .collect();
            let sends = crate::queue::batches(&entries)
                .into_iter()
                .map(|batch| async move { (batch, self.queue.send_batch(batch).await) });
            let mut retry = Vec::new();
            for (chunk, sent) in join_all(sends).await {
                match sent {
                    Ok(failures) => {
                        for f in failures {
                            let Ok(i) = f.entry_id.parse::<usize>() else {
                                continue;
                            };
                            if f.retryable {
                                retry.push((i, f.reason));
                            } else {
                                given_up.push((i, f.reason));
                            }
                        }
                    }
                    Err(e) => {
                        let retryable = e.is_retryable();
                        for i in chunk
                            .iter()
                            .filter_map(|j| j.entry_id.parse::<usize>().ok())
                        {
                            if retryable {
                                retry.push((i, e.to_string()));
                            } else {
                                given_up.push((i, e.to_string()));
                            }
                        }
                    }
                }
            }
            if round + 1 == self.settings.send_rounds.max(1) {
                given_up.extend(retry);
                break;
            }
            pending = retry.into_iter().map(|(i, _)| i).collect();
        }
        given_up
    }
}

#[cfg(test)]
mod tests;
