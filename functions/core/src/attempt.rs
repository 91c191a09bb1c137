//! What a delivery attempt comes to ([`Outcome`], [`DeliveryResult`]) and what it
//! leaves behind: the attempt record, its job's state after it, and the log entry
//! holding both (Elastic Path's integration logs and jobs).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::job::{rfc3339_ms, DeliveryJob};

/// How many bytes of a response body are kept in a log.
pub const MAX_LOGGED_BODY: usize = 4096;

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The target accepted it.
    Delivered,
    /// It failed; a later attempt may succeed (optionally not before `retry_after`).
    Retryable {
        /// The target's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// It failed in a way retrying cannot fix (refused address, unsupported target).
    Permanent,
}

/// The result of one delivery attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryResult {
    /// Success, retryable or permanent failure.
    pub outcome: Outcome,
    /// The target's status code, when it answered.
    pub status_code: Option<u16>,
    /// The first [`MAX_LOGGED_BODY`] bytes of the answer.
    pub body: String,
    /// Why it failed, for a person.
    pub error_detail: Option<String>,
    /// How long the attempt took.
    pub duration: Duration,
}

impl DeliveryResult {
    /// A failure without an answer from the target.
    pub fn failed(outcome: Outcome, detail: impl Into<String>, duration: Duration) -> Self {
        Self {
            outcome,
            status_code: None,
            body: String::new(),
            error_detail: Some(detail.into()),
            duration,
        }
    }
}

/// One recorded attempt (Elastic Path's integration log).
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// Log id (UUIDv7: sorts by time).
    pub id: Uuid,
    /// Owning store.
    pub store_id: String,
    /// The integration.
    pub integration_id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// The event.
    pub event_id: String,
    /// The event key.
    pub event_type: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Whether it was delivered.
    pub succeeded: bool,
    /// The target's status code.
    pub status_code: Option<u16>,
    /// The start of the target's answer.
    pub body: String,
    /// Why it failed.
    pub error_detail: Option<String>,
    /// Seconds the attempt took.
    pub processing_time: f64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Delivered.
    Delivered,
    /// Failed, another attempt is scheduled.
    Retrying,
    /// Failed on its last attempt; the job is in the dead-letter queue.
    Failed,
    /// Not delivered and not retried (integration deleted or disabled, refused target).
    Discarded,
}

impl JobStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Discarded => "discarded",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Delivered,
            Self::Retrying,
            Self::Failed,
            Self::Discarded,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }
}

/// The state of one job after its latest attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// The job id.
    pub job_id: Uuid,
    /// Owning store.
    pub store_id: String,
    /// The integration.
    pub integration_id: Uuid,
    /// The event.
    pub event_id: String,
    /// The event key.
    pub event_type: String,
    /// Status after the latest attempt.
    pub status: JobStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Latest status code.
    pub last_status_code: Option<u16>,
    /// Latest failure.
    pub last_error: Option<String>,
    /// When ingest queued it.
    pub enqueued_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The job it replays, when it is a replay.
    pub replay_of: Option<Uuid>,
}

fn relationship(kind: &str, id: impl ToString) -> Value {
    json!({ "data": { "type": kind, "id": id.to_string() } })
}

impl Attempt {
    /// The API's log object.
    pub fn to_resource(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "type": "integration-log",
            "succeeded": self.succeeded,
            "attempt": self.attempt,
            "processing_time": self.processing_time,
            "status_code": self.status_code,
            "body": self.body,
            "error_detail": self.error_detail,
            "event": { "id": self.event_id, "type": self.event_type },
            "relationships": {
                "integration": relationship("integration", self.integration_id),
                "job": relationship("integration-job", self.job_id),
            },
            "meta": { "timestamps": { "created_at": rfc3339_ms(&self.created_at) } }
        })
    }
}

impl JobRecord {
    /// The API's job object (`meta.replay_of` names the job a replay replays).
    pub fn to_resource(&self) -> Value {
        let mut resource = json!({
            "id": self.job_id.to_string(),
            "type": "integration-job",
            "status": self.status.as_str(),
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "event": { "id": self.event_id, "type": self.event_type },
            "relationships": { "integration": relationship("integration", self.integration_id) },
            "meta": { "timestamps": {
                "created_at": rfc3339_ms(&self.enqueued_at),
                "updated_at": rfc3339_ms(&self.updated_at),
            } }
        });
        if let Some(of) = self.replay_of {
            resource["meta"]["replay_of"] = json!(of.to_string());
        }
        resource
    }
}

/// What one attempt leaves in the log: the attempt, and its job's state after it.
/// A job's state is always its latest attempt's, so the log stores the two together.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// The attempt.
    pub attempt: Attempt,
    /// The job's status after it.
    pub status: JobStatus,
    /// When ingest queued the job.
    pub enqueued_at: DateTime<Utc>,
    /// The job it replays, when it is a replay ([`DeliveryJob::replay_of`]).
    pub replay_of: Option<Uuid>,
    /// The job's message body as first queued, kept for replay (the event archive):
    /// the fan-out sets it on a job's first attempt, so the log keeps each job once.
    /// Its payload is the event's, or the claim check of a stored one.
    pub archive: Option<String>,
}

impl LogEntry {
    /// The job's state after this attempt.
    pub fn job(&self) -> JobRecord {
        let a = &self.attempt;
        JobRecord {
            job_id: a.job_id,
            store_id: a.store_id.clone(),
            integration_id: a.integration_id,
            event_id: a.event_id.clone(),
            event_type: a.event_type.clone(),
            status: self.status,
            attempts: a.attempt,
            last_status_code: a.status_code,
            last_error: a.error_detail.clone(),
            enqueued_at: self.enqueued_at,
            updated_at: a.created_at,
            replay_of: self.replay_of,
        }
    }
}

/// The log entry one attempt leaves behind.
pub fn log_entry(
    job: &DeliveryJob,
    attempt: u32,
    status: JobStatus,
    result: &DeliveryResult,
) -> LogEntry {
    LogEntry {
        attempt: Attempt {
            id: Uuid::now_v7(),
            store_id: job.store_id.clone(),
            integration_id: job.integration_id,
            job_id: job.job_id,
            event_id: job.event.id.clone(),
            event_type: job.event.kind.clone(),
            attempt,
            succeeded: status == JobStatus::Delivered,
            status_code: result.status_code,
            body: result.body.clone(),
            error_detail: result.error_detail.clone(),
            processing_time: result.duration.as_secs_f64(),
            created_at: Utc::now(),
        },
        status,
        enqueued_at: job.enqueued_at,
        replay_of: job.replay_of,
        archive: None,
    }
}
