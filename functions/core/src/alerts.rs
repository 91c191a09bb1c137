//! Herald's operational events: what a store can observe of its own integrations'
//! health, delivered through the same pipeline as its commerce events.
//!
//! - `herald.integration.disabled`: Herald disabled an integration (too many failed
//!   jobs in a row, or its target answered `410 Gone`);
//! - `herald.integration.failing`: an integration's first job failed for good after a
//!   success;
//! - `herald.integration.recovered`: a delivery succeeded after failed jobs.
//!
//! The payload's `data` is the integration as the API shows it (secrets masked) after
//! the change, with `meta.alert`: the reason, the last error and the job that caused
//! it. Three rules keep them from going round in circles:
//! - only Herald emits them (ingest refuses them from senders);
//! - one is never delivered to the integration it concerns ([`subject`]);
//! - the delivery of one never causes another ([`Alert::of`] is not asked for jobs of
//!   operational events), so an integration that fails on them is disabled as any
//!   other, silently.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::catalog;
use crate::job::Event;
use crate::model::{HealthChange, Integration};

/// One of the operational events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// `herald.integration.disabled`.
    Disabled,
    /// `herald.integration.failing`.
    Failing,
    /// `herald.integration.recovered`.
    Recovered,
}

impl Alert {
    /// The event key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Disabled => "herald.integration.disabled",
            Self::Failing => "herald.integration.failing",
            Self::Recovered => "herald.integration.recovered",
        }
    }

    /// The alert a health change calls for, if any. A change that disables an
    /// integration is announced as that alone, though it may be its first failure
    /// too.
    pub fn of(change: &HealthChange) -> Option<Self> {
        let (before, after) = (&change.before, &change.after);
        if change.disabled {
            Some(Self::Disabled)
        } else if before.consecutive_failures == 0
            && after.consecutive_failures > 0
            && before.last_success_at.is_some()
        {
            Some(Self::Failing)
        } else if before.consecutive_failures > 0 && after.consecutive_failures == 0 {
            Some(Self::Recovered)
        } else {
            None
        }
    }

    /// `meta.alert.reason`: what happened, as a word.
    fn reason(self, gone: bool) -> &'static str {
        match self {
            Self::Disabled if gone => "gone",
            Self::Disabled => "failed_jobs",
            Self::Failing => "failing",
            Self::Recovered => "recovered",
        }
    }
}

/// What caused an alert.
pub struct Cause<'a> {
    /// The job whose attempt changed the integration's health.
    pub job_id: Uuid,
    /// What that attempt's failure said (none for a recovery).
    pub last_error: Option<&'a str>,
    /// Whether the target answered that it is gone (`410`).
    pub gone: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// The operational event `alert` for `integration` (its state before the change),
/// changed by `change`, caused by `cause`: without an id, so Herald names it (a new
/// UUIDv7, which needs no claim).
pub fn event(
    alert: Alert,
    integration: &Integration,
    change: &HealthChange,
    cause: &Cause<'_>,
) -> Value {
    let mut now = integration.clone();
    now.health = change.after.clone();
    if change.disabled {
        now.enabled = false;
    }
    // The API's own links are not known here: the path alone.
    let mut data = now.to_resource("");
    data["meta"]["alert"] = json!({
        "reason": alert.reason(cause.gone),
        "detail": change.after.disabled_reason.as_deref().filter(|_| change.disabled),
        "last_error": cause.last_error,
        "job_id": cause.job_id.to_string(),
    });
    json!({
        "type": alert.key(),
        "occurred_at": crate::job::rfc3339_ms(&cause.at),
        "payload": { "data": data },
    })
}

/// The integration an operational event concerns (its payload's `data.id`), which
/// it is never delivered to; `None` for every other event.
pub fn subject(event: &Event) -> Option<Uuid> {
    if !catalog::is_emitted_by_herald(&event.kind) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Payload {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        id: Uuid,
    }
    serde_json::from_str::<Payload>(event.payload.text())
        .ok()
        .map(|p| p.data.id)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::model::Health;

    fn change(before: (u32, bool), after: u32, disabled: bool) -> HealthChange {
        let health = |failures: u32, succeeded: bool| Health {
            consecutive_failures: failures,
            last_success_at: succeeded.then(Utc::now),
            ..Health::default()
        };
        HealthChange {
            before: health(before.0, before.1),
            after: health(after, true),
            disabled,
        }
    }

    #[test]
    fn a_first_failure_after_a_success_is_failing_and_later_ones_are_nothing() {
        assert_eq!(
            Alert::of(&change((0, true), 1, false)),
            Some(Alert::Failing)
        );
        assert_eq!(Alert::of(&change((1, true), 2, false)), None);
        // Never succeeded: nothing to fall from.
        assert_eq!(Alert::of(&change((0, false), 1, false)), None);
    }

    #[test]
    fn a_success_after_failures_is_a_recovery_and_after_successes_nothing() {
        assert_eq!(
            Alert::of(&change((3, true), 0, false)),
            Some(Alert::Recovered)
        );
        assert_eq!(Alert::of(&change((0, true), 0, false)), None);
    }

    #[test]
    fn a_change_that_disables_is_announced_as_disabled_alone() {
        assert_eq!(
            Alert::of(&change((0, true), 1, true)),
            Some(Alert::Disabled)
        );
        assert_eq!(
            Alert::of(&change((19, true), 20, true)),
            Some(Alert::Disabled)
        );
    }
}
