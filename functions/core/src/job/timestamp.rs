//! A job's timestamps read back, as chrono reads RFC 3339 (why not a hand-written
//! reader for Herald's own form: `docs/decisions/0004-timestamp-codec.md`).
//! And the form Herald writes them in ([`rfc3339_ms`]).

use chrono::{DateTime, Utc};
use serde::de::{Deserializer, Error, Visitor};

/// For `#[serde(deserialize_with)]` on an optional timestamp (with `default`).
pub fn deserialize_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Timestamp(#[serde(deserialize_with = "deserialize")] DateTime<Utc>);
    serde::Deserialize::deserialize(d).map(|t: Option<Timestamp>| t.map(|t| t.0))
}

/// For `#[serde(deserialize_with)]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Timestamp;
    impl Visitor<'_> for Timestamp {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
            s.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Timestamp)
}
/// `t` to the millisecond (truncated): the precision of a job id's time, of a claim's
/// and of everything the log stores.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Formats a timestamp as RFC 3339 with milliseconds (`2026-05-01T12:00:00.123Z`:
/// UTC, milliseconds truncated): Herald's form.
pub fn rfc3339_ms(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
