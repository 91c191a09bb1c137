//! Delivery jobs: one event for one integration, the unit that is queued, delivered,
//! retried and logged, and its wire format (the queue message's body). Events as they
//! come in are in `event`, timestamps in [`timestamp`].

mod event;
mod stored;
pub mod timestamp;

pub use event::{
    json_len, parse_event, parse_event_text, parse_named_event, text_len, Event, Payload,
    EVENT_FIELDS, MAX_EVENT_BYTES, MAX_EVENT_ID,
};
pub(crate) use stored::key as body_key;
#[cfg(test)]
pub(crate) use stored::sha256_hex;
pub use stored::{Fetched, Stored, StoredParts, MAX_INLINE_DATA, MAX_INLINE_PAYLOAD};
pub use timestamp::{rfc3339_ms, to_millis};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::StoreId;

/// What to deliver: one event to one integration. Serialized as the internal queue's
/// message body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// Format version of this message.
    pub v: u8,
    /// Stable across retries: derived from the event id and the integration id. The
    /// receiver sees it as `webhook-id` and can deduplicate on it.
    pub job_id: Uuid,
    /// Owning store.
    pub store_id: String,
    /// Target integration.
    pub integration_id: Uuid,
    /// When ingest queued the job; the retry budget counts from here.
    #[serde(deserialize_with = "timestamp::deserialize")]
    pub enqueued_at: DateTime<Utc>,
    /// The event.
    pub event: Event,
    /// The attempt this message is for: 1 from ingest and replay, one more on each
    /// retry (the fan-out sends the job again for it). A body without it (written
    /// before retries were sent again) is attempt 1.
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempt: u32,
    /// When the message of attempt 1 was queued (its `SentTimestamp`): the retry
    /// budget counts from here. Absent on attempt 1, whose own message tells it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::deserialize_option"
    )]
    pub first_queued_at: Option<DateTime<Utc>>,
    /// Not to be attempted before this: a wait longer than one message can be
    /// delayed ([`crate::queue::MAX_DELAY`]) is several sends, and each one that
    /// comes early is sent on, without an attempt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::deserialize_option"
    )]
    pub not_before: Option<DateTime<Utc>>,
    /// The send time reserved for this job in its integration's rate bucket
    /// (`delivery.max_per_second`, [`crate::ports::RateLimiter`]): a job sent back to
    /// wait for it is delivered at it without reserving again. Waiting is not an
    /// attempt: the attempt number stays.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::deserialize_option"
    )]
    pub slot: Option<DateTime<Utc>>,
    /// The claim check of an event whose payload is too large for a queue message
    /// ([`MAX_INLINE_PAYLOAD`]): where ingest stored it, the event carrying no
    /// payload of its own. Every send of the job (retries, the DLQ, replay) carries
    /// the reference, never the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
    /// The job this one replays (`POST …/jobs/{job_id}/replay`, or a range replay
    /// from the archive): a replay is a new job, with an id of its own (a new
    /// `webhook-id`, which receivers that deduplicate do not drop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<Uuid>,
    /// The stored payload, once the fan-out has fetched it for an attempt (never
    /// written to a message).
    #[serde(skip)]
    pub fetched: Option<std::sync::Arc<Fetched>>,
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(attempt: &u32) -> bool {
    *attempt == 1
}

/// Namespace of job ids (UUIDv5 over `"<event id>/<integration id>"`).
const JOB_NAMESPACE: Uuid = Uuid::from_u128(0x5f1c_2a7e_9d4b_4c61_8e3a_b0d2_71f4_c9e8);

/// The job id of an (event, integration) pair queued at `enqueued_at`: the same on
/// every retry and on every re-ingestion of the event while its claim holds (ingest
/// queues it at the claim's time). A UUIDv8: its first 48 bits are `enqueued_at` in
/// milliseconds, as in a UUIDv7 ([`job_time`]), so the delivery log finds a job's
/// attempts from its id alone; the rest is the pair's UUIDv5 ([`legacy_job_id`]).
pub fn job_id(event_id: &str, integration_id: Uuid, enqueued_at: DateTime<Utc>) -> Uuid {
    let mut bytes = *legacy_job_id(event_id, integration_id).as_bytes();
    let ms = enqueued_at.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::new_v8(bytes)
}

/// The job id earlier builds gave an (event, integration) pair: the UUIDv5 of
/// `"<event id>/<integration id>"`, with no time in it. Jobs they queued still parse.
pub fn legacy_job_id(event_id: &str, integration_id: Uuid) -> Uuid {
    Uuid::new_v5(
        &JOB_NAMESPACE,
        format!("{event_id}/{integration_id}").as_bytes(),
    )
}

/// When a job was queued, from its id (to the millisecond): the first 48 bits of a
/// UUIDv8 of [`job_id`] (or of a UUIDv7); `None` for an id of an earlier build.
pub fn job_time(job: Uuid) -> Option<DateTime<Utc>> {
    if !matches!(job.get_version_num(), 7 | 8) {
        return None;
    }
    let b = job.as_bytes();
    let ms = b[..6].iter().fold(0i64, |ms, &x| (ms << 8) | i64::from(x));
    DateTime::from_timestamp_millis(ms)
}

impl DeliveryJob {
    /// A job for `event` to `integration_id`.
    pub fn new(
        store: &StoreId,
        integration_id: Uuid,
        event: Event,
        enqueued_at: DateTime<Utc>,
    ) -> Self {
        Self {
            v: 1,
            job_id: job_id(&event.id, integration_id, enqueued_at),
            store_id: store.as_str().to_owned(),
            integration_id,
            enqueued_at,
            event,
            attempt: 1,
            first_queued_at: None,
            not_before: None,
            slot: None,
            stored: None,
            replay_of: None,
            fetched: None,
        }
    }

    /// The event's payload: the one the job carries, or the stored one the fan-out
    /// fetched (absent, `null`, before it is fetched).
    pub fn payload(&self) -> &Payload {
        match &self.fetched {
            Some(fetched) => &fetched.payload,
            None => &self.event.payload,
        }
    }

    /// Parses a queue message body; `Err` names what is wrong (the job is then
    /// poison: logged and acknowledged, never retried).
    pub fn parse(body: &str) -> Result<Self, String> {
        let job: DeliveryJob =
            serde_json::from_str(body).map_err(|e| format!("not a delivery job: {e}"))?;
        if job.v != 1 {
            return Err(format!("unknown job version {}", job.v));
        }
        if StoreId::parse(&job.store_id).is_none() {
            return Err("job has an invalid store_id".into());
        }
        if job.job_id != job_id(&job.event.id, job.integration_id, job.enqueued_at)
            && job.job_id != legacy_job_id(&job.event.id, job.integration_id)
        {
            return Err("job_id does not match its event and integration".into());
        }
        if job.attempt == 0 {
            return Err("job attempt must be 1 or more".into());
        }
        match (&job.stored, job.event.payload.is_absent()) {
            (None, true) => return Err("job has neither a payload nor a stored one".into()),
            (Some(_), false) => return Err("job has both a payload and a stored one".into()),
            (Some(stored), true) => stored.check()?,
            (None, false) => {}
        }
        Ok(job)
    }

    /// The same job as queued anew for its first attempt, with a fresh retry
    /// budget (what replay sends).
    pub fn restarted(self) -> Self {
        Self {
            attempt: 1,
            first_queued_at: None,
            not_before: None,
            slot: None,
            ..self
        }
    }

    /// A replay of this job (as the archive keeps it): the same event, for the same
    /// integration, queued anew at `at` for its first attempt: a new job, whose id
    /// ([`job_id`] of the event, the integration and `at`) is its own, naming this
    /// one in `replay_of`.
    pub fn replayed_at(self, at: DateTime<Utc>) -> Self {
        let replay_of = Some(self.job_id);
        Self {
            job_id: job_id(&self.event.id, self.integration_id, at),
            enqueued_at: at,
            replay_of,
            fetched: None,
            ..self.restarted()
        }
    }

    /// The store, already checked by [`DeliveryJob::parse`] or [`DeliveryJob::new`].
    pub fn store(&self) -> Option<StoreId> {
        StoreId::parse(&self.store_id)
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::validate::FieldError;
    use serde_json::Value;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T08:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn store() -> StoreId {
        StoreId::parse("s1").expect("store")
    }

    fn pointers(r: Result<(StoreId, Event), Vec<FieldError>>) -> Vec<String> {
        r.expect_err("invalid")
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    #[test]
    fn a_number_in_the_payload_is_the_same_after_the_queue_hop() {
        // Found by `cargo fuzz` (job_parser): with serde_json's best-effort float
        // parsing, this literal read back from the job body came out one bit off.
        let literal = format!("{}1", "8".repeat(70));
        let raw: Value = serde_json::from_str(&format!(
            r#"{{"type": "order.paid", "payload": {{"data": {{"total": {literal}}}}}}}"#
        ))
        .expect("json");
        let (store, event) = parse_event(&raw, Some(&store()), "", now()).expect("valid");
        let job = DeliveryJob::new(&store, Uuid::nil(), event, now());
        let again = DeliveryJob::parse(&job.to_body()).expect("job");
        assert_eq!(again, job);
        assert_eq!(again.to_body(), job.to_body());
    }

    #[test]
    fn a_minimal_event_gets_an_id_and_the_receive_time() {
        let (s, e) = parse_event(
            &json!({"type": "order.paid", "payload": {"data": {"id": "o1"}}}),
            Some(&store()),
            "/data",
            now(),
        )
        .expect("valid");
        assert_eq!(s, store());
        assert_eq!(e.kind, "order.paid");
        assert_eq!(e.occurred_at, now());
        assert!(Uuid::parse_str(&e.id).is_ok());
    }

    #[test]
    fn an_event_keeps_its_own_id_and_time() {
        let (_, e) = parse_event(
            &json!({"id": "evt-1", "type": "cart.updated", "occurred_at": "2026-01-02T03:04:05.678Z",
                    "payload": {"data": {"id": "c"}, "included": {"items": []}}}),
            Some(&store()),
            "/data",
            now(),
        )
        .expect("valid");
        assert_eq!(e.id, "evt-1");
        assert_eq!(rfc3339_ms(&e.occurred_at), "2026-01-02T03:04:05.678Z");
        assert_eq!(e.payload.value()["included"], json!({"items": []}));
    }

    #[test]
    fn every_problem_of_an_event_is_named_with_its_pointer() {
        let bad = json!({"id": "has space", "type": "order.exploded", "occurred_at": "yesterday",
                         "payload": {"data": [], "included": 3, "extra": 1}, "other": true});
        assert_eq!(
            pointers(parse_event(&bad, Some(&store()), "/data/2", now())),
            vec![
                "/data/2/other",
                "/data/2/id",
                "/data/2/type",
                "/data/2/occurred_at",
                "/data/2/payload/data",
                "/data/2/payload/included",
                "/data/2/payload/extra"
            ]
        );
        assert_eq!(
            pointers(parse_event(&json!("x"), Some(&store()), "/data", now())),
            vec!["/data"]
        );
        assert_eq!(
            pointers(parse_event(
                &json!({"type": "order.paid"}),
                Some(&store()),
                "",
                now()
            )),
            vec!["/payload"]
        );
    }

    #[test]
    fn direct_invocations_must_name_the_store_and_http_callers_may_not_name_another() {
        let ev = json!({"type": "order.paid", "payload": {"data": {}}});
        assert_eq!(
            pointers(parse_event(&ev, None, "", now())),
            vec!["/store_id"]
        );
        let mut named = ev.clone();
        named["store_id"] = json!("s2");
        assert_eq!(
            parse_event(&named, None, "", now())
                .expect("valid")
                .0
                .as_str(),
            "s2"
        );
        assert_eq!(
            pointers(parse_event(&named, Some(&store()), "", now())),
            vec!["/store_id"]
        );
        named["store_id"] = json!("s1");
        assert!(parse_event(&named, Some(&store()), "", now()).is_ok());
    }

    fn read_text(
        text: &str,
        caller: Option<&StoreId>,
    ) -> Result<(StoreId, Event, bool), Vec<FieldError>> {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(text).expect("json");
        parse_event_text(&raw, caller, "/data", now())
    }

    #[test]
    fn an_events_payload_keeps_the_digits_and_escapes_its_sender_wrote_without_the_whitespace() {
        let (_, event, named) = read_text(
            "{\"type\": \"order.paid\",\n \"payload\": {\"data\": {\"total\": 19.90, \"ref\": 123456789012345678901234567890,\n\t\"note\": \"a \\\" b\\u00e9 \", \"e\": 1E2}}}",
            Some(&store()),
        )
        .expect("valid");
        assert!(!named);
        assert_eq!(
            event.payload.text(),
            r#"{"data":{"total":19.90,"ref":123456789012345678901234567890,"note":"a \" b\u00e9 ","e":1E2}}"#
        );
    }

    #[test]
    fn an_event_read_from_its_text_is_refused_with_the_same_errors_as_its_tree() {
        let bad = r#"{"id": "has space", "type": "order.exploded", "occurred_at": "yesterday",
                      "payload": {"data": [], "included": 3, "extra": 1}, "other": true}"#;
        let tree: Value = serde_json::from_str(bad).expect("json");
        assert_eq!(
            read_text(bad, Some(&store())).expect_err("invalid"),
            parse_event(&tree, Some(&store()), "/data", now()).expect_err("invalid")
        );
        // A field twice: the tree keeps the last, and so does the text.
        let (_, event, named) = read_text(
            r#"{"id": "a", "id": "b", "type": "order.paid", "payload": {"data": {}}}"#,
            Some(&store()),
        )
        .expect("valid");
        assert_eq!((event.id.as_str(), named), ("b", true));
        // An array is not an event, though serde would read a struct from one.
        assert_eq!(
            read_text(
                r#"["e1", "order.paid", null, null, {"data": {}}]"#,
                Some(&store())
            )
            .expect_err("invalid")
            .len(),
            1
        );
    }

    #[test]
    fn an_event_larger_than_5_mib_is_refused() {
        let big = json!({"type": "order.paid", "payload": {"data": {"blob": "x".repeat(MAX_EVENT_BYTES)}}});
        assert_eq!(
            pointers(parse_event(&big, Some(&store()), "/data", now())),
            vec!["/data"]
        );
    }

    #[test]
    fn job_ids_are_stable_per_event_integration_and_queue_time() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let t = now();
        assert_eq!(job_id("e1", a, t), job_id("e1", a, t));
        assert_ne!(job_id("e1", a, t), job_id("e1", b, t));
        assert_ne!(job_id("e1", a, t), job_id("e2", a, t));
        assert_ne!(
            job_id("e1", a, t),
            job_id("e1", a, t + chrono::TimeDelta::milliseconds(1))
        );
    }

    #[test]
    fn a_job_id_tells_when_its_job_was_queued_to_the_millisecond() {
        let t = Utc
            .timestamp_opt(1_800_000_000, 123_456_789)
            .single()
            .expect("time");
        let id = job_id("e1", Uuid::now_v7(), t);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(
            job_time(id),
            Some(
                Utc.timestamp_opt(1_800_000_000, 123_000_000)
                    .single()
                    .expect("ms")
            )
        );
        assert_eq!(job_time(legacy_job_id("e1", Uuid::now_v7())), None);
    }

    #[test]
    fn a_job_an_earlier_build_queued_with_a_time_less_id_still_parses() {
        let (store, event) = parse_event(
            &json!({"id": "e1", "type": "order.paid", "payload": {"data": {}}}),
            Some(&store()),
            "",
            now(),
        )
        .expect("valid");
        let integration = Uuid::now_v7();
        let mut job = DeliveryJob::new(&store, integration, event, now());
        job.job_id = legacy_job_id("e1", integration);
        assert_eq!(DeliveryJob::parse(&job.to_body()), Ok(job.clone()));
        job.job_id = Uuid::now_v7();
        assert_eq!(
            DeliveryJob::parse(&job.to_body()),
            Err("job_id does not match its event and integration".to_owned())
        );
    }

    #[test]
    fn a_body_written_before_retries_were_sent_again_is_attempt_one() {
        // The fuzz seed: a body as ingest wrote it before the attempt fields.
        let old = include_str!("../../../../fuzz/seeds/job_parser/valid");
        let job = DeliveryJob::parse(old).expect("an old body parses");
        assert_eq!(
            (job.attempt, job.first_queued_at, job.not_before),
            (1, None, None)
        );
        // Attempt 1 writes none of the new fields: ingest's bodies are as before.
        let body = job.to_body();
        assert!(
            !body.contains("attempt")
                && !body.contains("first_queued_at")
                && !body.contains("not_before"),
            "{body}"
        );
    }

    #[test]
    fn a_retry_body_carries_its_attempt_and_times_and_a_restart_drops_them() {
        let job = DeliveryJob::parse(include_str!("../../../../fuzz/seeds/job_parser/retried"))
            .expect("a retried body parses");
        assert_eq!(job.attempt, 4);
        assert_eq!(
            job.first_queued_at.map(|t| rfc3339_ms(&t)).as_deref(),
            Some("2026-11-22T08:00:01.250Z")
        );
        assert_eq!(
            job.not_before.map(|t| rfc3339_ms(&t)).as_deref(),
            Some("2026-11-22T08:25:00.000Z")
        );
        assert_eq!(DeliveryJob::parse(&job.to_body()), Ok(job.clone()));
        let restarted = job.restarted();
        assert_eq!(
            (
                restarted.attempt,
                restarted.first_queued_at,
                restarted.not_before
            ),
            (1, None, None)
        );
        let mut zero: Value = serde_json::from_str(&restarted.to_body()).expect("json");
        zero["attempt"] = json!(0);
        assert_eq!(
            DeliveryJob::parse(&zero.to_string()),
            Err("job attempt must be 1 or more".to_owned())
        );
    }

    #[test]
    fn a_claim_checked_job_carries_the_reference_never_the_payload_on_every_send() {
        // GIVEN a job whose payload is stored, and fetched for an attempt
        let (s, e) = parse_event(
            &json!({"id": "big", "type": "order.paid", "payload": {"data": {"id": "o1"}}}),
            Some(&store()),
            "",
            now(),
        )
        .expect("valid");
        let payload = e.payload.clone();
        let mut job = DeliveryJob::new(
            &s,
            Uuid::now_v7(),
            Event {
                payload: Payload::absent(),
                ..e
            },
            now(),
        );
        let stored = Stored {
            sha256: "0".repeat(64),
            bytes: 17,
            data_sha256: None,
        };
        job.stored = Some(stored.clone());
        job.fetched = Some(std::sync::Arc::new(Fetched {
            payload: payload.clone(),
            data_ref: Some(("https://bucket.example/secret-url".into(), "1".repeat(64))),
        }));
        assert_eq!(job.payload(), &payload);
        // WHEN it is written as a message (a retry's, the DLQ's)
        let body = job.to_body();
        // THEN it names the stored payload and carries neither it nor its URL
        let wire: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            wire["stored"],
            json!({"sha256": "0".repeat(64), "bytes": 17})
        );
        assert_eq!(wire["event"].get("payload"), None);
        assert!(
            !body.contains("secret-url") && !body.contains("o1"),
            "{body}"
        );
        // AND it reads back as the claim check, not yet fetched
        let again = DeliveryJob::parse(&body).expect("parses");
        assert_eq!(
            (again.stored.as_ref(), again.fetched.as_ref()),
            (Some(&stored), None)
        );
        assert!(again.payload().is_absent());
        // AND a job with neither a payload nor a stored one, or both, is poison
        let mut neither = wire.clone();
        neither.as_object_mut().expect("object").remove("stored");
        assert_eq!(
            DeliveryJob::parse(&neither.to_string()),
            Err("job has neither a payload nor a stored one".to_owned())
        );
        let mut both = wire;
        both["event"]["payload"] = json!({"data": {}});
        assert_eq!(
            DeliveryJob::parse(&both.to_string()),
            Err("job has both a payload and a stored one".to_owned())
        );
    }

    #[test]
    fn a_job_round_trips_through_its_message_body_and_poison_is_named() {
        let (s, e) = parse_event(
            &json!({"id": "e", "type": "order.paid", "payload": {"data": {}}}),
            Some(&store()),
            "",
            now(),
        )
        .expect("valid");
        let job = DeliveryJob::new(&s, Uuid::now_v7(), e, now());
        assert_eq!(DeliveryJob::parse(&job.to_body()).expect("parses"), job);
        assert!(DeliveryJob::parse("not json").is_err());
        let mut tampered: Value = serde_json::from_str(&job.to_body()).expect("json");
        tampered["job_id"] = json!(Uuid::now_v7());
        assert!(DeliveryJob::parse(&tampered.to_string())
            .expect_err("tampered")
            .contains("job_id"));
        tampered["v"] = json!(9);
        assert!(DeliveryJob::parse(&tampered.to_string()).is_err());
    }
}

#[cfg(test)]
mod properties {
    //! Hostile input: whatever an event or a queue message holds, the parsers answer
    //! with a value or errors that point into it, never a panic (10,000 cases each).

    use chrono::SecondsFormat;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "id",
                "type",
                "store_id",
                "occurred_at",
                "payload",
                "data",
                "included",
                "v",
                "job_id",
                "integration_id",
                "enqueued_at",
                "event",
                "attempt",
                "first_queued_at",
                "not_before",
            ])
            .prop_map(str::to_owned),
            "\\PC{0,12}",
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,40}".prop_map(Value::from),
            prop::sample::select(vec![
                "order.paid",
                "cart.updated",
                "2026-11-22T08:00:00Z",
                "s1",
                "",
                " ",
                "00000000-0000-0000-0000-000000000000",
                "1",
            ])
            .prop_map(Value::from),
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// An object with an event's fields, each valid or not, often all valid.
    fn event_like() -> impl Strategy<Value = Value> {
        let object = || {
            prop::collection::vec((key(), any_json()), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
        };
        let field = |valid: BoxedStrategy<Value>| {
            prop::option::weighted(0.7, prop_oneof![3 => valid, 1 => any_json()])
        };
        (
            field(prop_oneof![Just(Value::Null), "[!-~]{1,12}".prop_map(Value::from)].boxed()),
            field(
                prop::sample::select(vec!["order.paid", "cart.updated"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            field(
                prop::sample::select(vec!["s1", "s2"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            field(
                prop::sample::select(vec![
                    "2026-11-22T08:00:00Z",
                    "2026-11-22T08:00:00.123+02:00",
                ])
                .prop_map(Value::from)
                .boxed(),
            ),
            field(
                (
                    prop_oneof![3 => object(), 1 => any_json()],
                    prop::option::of(prop_oneof![Just(Value::Null), object(), any_json()]),
                )
                    .prop_map(|(data, included)| {
                        let mut p = Map::new();
                        p.insert("data".into(), data);
                        if let Some(i) = included {
                            p.insert("included".into(), i);
                        }
                        Value::Object(p)
                    })
                    .boxed(),
            ),
        )
            .prop_map(|(id, kind, store, at, payload)| {
                let mut event = Map::new();
                for (k, v) in [
                    ("id", id),
                    ("type", kind),
                    ("store_id", store),
                    ("occurred_at", at),
                    ("payload", payload),
                ] {
                    if let Some(v) = v {
                        event.insert(k.into(), v);
                    }
                }
                Value::Object(event)
            })
    }

    fn valid_job() -> Value {
        let store = StoreId::parse("s1").expect("store");
        let event = Event {
            id: "evt-1".into(),
            kind: "order.paid".into(),
            occurred_at: Utc::now(),
            payload: serde_json::json!({"data": {"id": "o-1"}}).into(),
        };
        serde_json::from_str(&DeliveryJob::new(&store, Uuid::now_v7(), event, Utc::now()).to_body())
            .expect("json")
    }

    /// 10,000 cases, or `PROPTEST_CASES` (`make fuzz`).
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn any_event_is_parsed_or_refused_with_pointers_into_it(
            value in any_json(),
            direct in any::<bool>(),
        ) {
            let store = StoreId::parse("s1").expect("store");
            let caller = (!direct).then_some(&store);
            match parse_event(&value, caller, "/data/3", Utc::now()) {
                Ok((_, event)) => {
                    prop_assert!(crate::catalog::is_observable(&event.kind));
                    prop_assert!(!event.id.is_empty() && event.id.len() <= MAX_EVENT_ID);
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for e in errors {
                        prop_assert!(e.pointer.starts_with("/data/3"), "{}", e.pointer);
                        prop_assert!(!e.detail.is_empty());
                    }
                }
            }
        }

        #[test]
        fn an_event_read_from_its_text_is_the_event_read_from_its_tree(
            value in prop_oneof![any_json(), event_like()],
            pretty in any::<bool>(),
            direct in any::<bool>(),
        ) {
            let store = StoreId::parse("s1").expect("store");
            let caller = (!direct).then_some(&store);
            let text = match pretty {
                true => serde_json::to_string_pretty(&value),
                false => serde_json::to_string(&value),
            }.expect("json");
            let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&text).expect("json");
            let now = Utc::now();
            let from_text = parse_event_text(&raw, caller, "/data/3", now);
            let from_tree = parse_event(&value, caller, "/data/3", now);
            match (from_text, from_tree) {
                (Ok((s1, mut e1, named)), Ok((s2, e2))) => {
                    prop_assert_eq!(s1, s2);
                    prop_assert_eq!(named, value.get("id").is_some_and(|id| !id.is_null()));
                    if !named {
                        e1.id = e2.id.clone();
                    }
                    prop_assert_eq!(e1, e2);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "text: {:?}, tree: {:?}", a.map(|r| r.1), b.map(|r| r.1)),
            }
        }

        #[test]
        fn a_timestamp_reads_back_as_the_instant_written_in_every_precision(
            secs in -62_135_596_800i64..253_402_300_799i64,
            nanos in 0u32..1_000_000_000,
        ) {
            #[derive(serde::Deserialize)]
            struct At(#[serde(deserialize_with = "timestamp::deserialize")] DateTime<Utc>);
            let t = DateTime::from_timestamp(secs, nanos).expect("in range");
            for format in [SecondsFormat::Secs, SecondsFormat::Millis, SecondsFormat::Micros, SecondsFormat::Nanos, SecondsFormat::AutoSi] {
                let text = t.to_rfc3339_opts(format, true);
                let read = serde_json::from_value::<At>(Value::String(text.clone())).ok().map(|at| at.0);
                prop_assert!(read.is_some(), "{}", text);
                prop_assert_eq!(read, text.parse::<DateTime<Utc>>().ok());
            }
        }

        #[test]
        fn any_queue_message_is_a_checked_job_or_refused(raw in "\\PC{0,200}", value in any_json()) {
            for body in [raw, value.to_string()] {
                if let Ok(job) = DeliveryJob::parse(&body) {
                    prop_assert_eq!(job.job_id, job_id(&job.event.id, job.integration_id, job.enqueued_at));
                }
            }
        }

        #[test]
        fn a_valid_job_with_any_field_replaced_is_never_mistaken(
            field in prop::sample::select(vec![
                "v", "job_id", "store_id", "integration_id", "enqueued_at", "event",
                "attempt", "first_queued_at", "not_before",
            ]),
            replacement in any_json(),
        ) {
            let mut job = valid_job();
            job[field] = replacement;
            if let Ok(parsed) = DeliveryJob::parse(&job.to_string()) {
                prop_assert_eq!(parsed.job_id, job_id(&parsed.event.id, parsed.integration_id, parsed.enqueued_at));
                prop_assert!(StoreId::parse(&parsed.store_id).is_some());
                prop_assert_eq!(parsed.v, 1);
                prop_assert!(parsed.attempt >= 1);
            }
        }

        #[test]
        fn a_retried_job_reads_back_as_written_whatever_its_attempt_and_times(
            attempt in 1u32..,
            first in prop::option::of(-62_135_596_800i64..253_402_300_799i64),
            wait in prop::option::of(-62_135_596_800i64..253_402_300_799i64),
            nanos in 0u32..1_000_000_000,
        ) {
            let mut job = DeliveryJob::parse(&valid_job().to_string()).expect("valid");
            job.attempt = attempt;
            job.first_queued_at = first.and_then(|s| DateTime::from_timestamp(s, nanos));
            job.not_before = wait.and_then(|s| DateTime::from_timestamp(s, nanos));
            let again = DeliveryJob::parse(&job.to_body());
            prop_assert_eq!(again, Ok(job));
        }
    }
}
