//! A page of the delivery log: the attempts one write made for one integration, whose
//! jobs were queued close together, packed into one DynamoDB item.
//!
//! An item costs one write unit per kilobyte, plus as many again for each index it
//! lands in, whatever its size below a kilobyte. One item per attempt with three
//! indexes cost four write units an attempt; a page of a batch's attempts costs about
//! three units in all (`make bench`, section `cost`; docs/decisions/0005).
//!
//! The attempts are written as compact JSON rows, deflated, in one binary attribute:
//! rows of one integration's deliveries repeat themselves (ids share their time, the
//! same event type, status and codes), so they shrink to about a third.

use std::io::Read;

use chrono::{DateTime, Utc};
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::attempt::{Attempt, JobStatus, LogEntry};
use crate::job::{job_id, job_time};

/// The most attempts a page holds.
pub const PAGE_MOST: usize = 100;

/// A page's jobs were all queued within this many milliseconds of its first: a job's
/// attempts are found under the pages whose last job was queued in the span after
/// the job ([`crate::job::job_time`] tells when from its id).
pub const PAGE_SPAN_MS: i64 = 1_000;

/// The most bytes of rows (before deflating) a page holds: well inside DynamoDB's
/// 400 KB item even when the rows do not deflate at all.
const PAGE_BYTES_MOST: usize = 256 * 1024;

/// The most bytes an inflated page may have: a page's rows never come near it, so a
/// larger one is corrupt (and is not inflated further).
const INFLATED_MOST: u64 = 4 * PAGE_BYTES_MOST as u64;

/// What a page's binary attribute holds, before deflating.
#[derive(Serialize, Deserialize)]
struct Rows {
    /// The store.
    s: String,
    /// The integration.
    i: Uuid,
    /// The time (ms) the rows' times count from.
    b: i64,
    /// One row per attempt.
    r: Vec<Row>,
}

/// One attempt: `[id, job ("" when its id is the one `job_id` derives), event id, event
/// type, attempt, succeeded, status code, processing time (s), created (ms after `b`),
/// queued (ms after `b`), job status, body, error detail, the job it replays (absent
/// when none; rows written before replays have no such element)]`.
#[derive(Serialize, Deserialize)]
struct Row(
    Uuid,
    String,
    String,
    String,
    u32,
    bool,
    Option<u16>,
    f64,
    i64,
    i64,
    String,
    String,
    Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")] Option<Uuid>,
);

/// When a job was queued, in ms, as pages sort it: from its id, which every job
/// Herald queues carries (`None` for ids of earlier builds, which the log writes one
/// item an attempt, as they did).
pub fn job_ms(job: Uuid) -> Option<i64> {
    job_time(job).map(|t| t.timestamp_millis())
}

/// A page of entries of one store's integration, ready to write.
pub struct Page<'a> {
    /// The entries, their jobs queued within [`PAGE_SPAN_MS`] of the first's.
    pub entries: Vec<&'a LogEntry>,
    /// When its first job was queued (ms).
    pub first_job_ms: i64,
    /// When its last job was queued (ms): at most [`PAGE_SPAN_MS`] after the first.
    pub last_job_ms: i64,
    /// When its newest attempt was made (ms).
    pub newest_ms: i64,
}

/// Cuts the entries of one store's integration whose job ids tell their time into
/// pages: sorted by the time their jobs were queued, a new page whenever the span, the
/// count or the size would pass its limit.
pub fn pages<'a>(mut entries: Vec<(i64, &'a LogEntry)>) -> Vec<Page<'a>> {
    entries.sort_by_key(|(job, e)| (*job, e.attempt.created_at));
    let mut pages: Vec<Page<'a>> = Vec::new();
    let mut bytes = 0;
    for (job, entry) in entries {
        let size = row_size(entry);
        let created = entry.attempt.created_at.timestamp_millis();
        match pages.last_mut() {
            Some(page)
                if job - page.first_job_ms <= PAGE_SPAN_MS
                    && page.entries.len() < PAGE_MOST
                    && bytes + size <= PAGE_BYTES_MOST =>
            {
                page.entries.push(entry);
                page.last_job_ms = job;
                page.newest_ms = page.newest_ms.max(created);
                bytes += size;
            }
            _ => {
                pages.push(Page {
                    entries: vec![entry],
                    first_job_ms: job,
                    last_job_ms: job,
                    newest_ms: created,
                });
                bytes = size;
            }
        }
    }
    pages
}

/// About the bytes an entry's row takes (its strings and a bound for the rest).
fn row_size(e: &LogEntry) -> usize {
    let a = &e.attempt;
    160 + a.event_id.len()
        + a.event_type.len()
        + a.body.len()
        + a.error_detail.as_ref().map_or(0, String::len)
}

/// The page's rows, deflated.
pub fn encode(page: &Page<'_>) -> Vec<u8> {
    let Some(first) = page.entries.first() else {
        return Vec::new();
    };
    let base = page.first_job_ms;
    let rows = Rows {
        s: first.attempt.store_id.clone(),
        i: first.attempt.integration_id,
        b: base,
        r: page
            .entries
            .iter()
            .map(|e| {
                let a = &e.attempt;
                let derived = job_id(&a.event_id, a.integration_id, e.enqueued_at) == a.job_id;
                Row(
                    a.id,
                    if derived {
                        String::new()
                    } else {
                        a.job_id.to_string()
                    },
                    a.event_id.clone(),
                    a.event_type.clone(),
                    a.attempt,
                    a.succeeded,
                    a.status_code,
                    a.processing_time,
                    a.created_at.timestamp_millis() - base,
                    e.enqueued_at.timestamp_millis() - base,
                    e.status.as_str().to_owned(),
                    a.body.clone(),
                    a.error_detail.clone(),
                    e.replay_of,
                )
            })
            .collect(),
    };
    let mut out = DeflateEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail, and the rows always serialize (string keys).
    let _ = serde_json::to_writer(&mut out, &rows);
    out.finish().unwrap_or_default()
}

/// The entries of a page's deflated rows; `Err` says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<Vec<LogEntry>, String> {
    let mut json = Vec::new();
    DeflateDecoder::new(bytes)
        .take(INFLATED_MOST)
        .read_to_end(&mut json)
        .map_err(|e| format!("the page does not inflate: {e}"))?;
    let rows: Rows = serde_json::from_slice(&json).map_err(|e| format!("the page's rows: {e}"))?;
    let time = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(rows.b.saturating_add(ms))
            .ok_or_else(|| format!("a time out of range: {ms}"))
    };
    rows.r
        .into_iter()
        .map(|row| {
            let Row(
                id,
                job,
                event_id,
                event_type,
                n,
                ok,
                code,
                took,
                created,
                queued,
                status,
                body,
                error,
                replay_of,
            ) = row;
            let enqueued_at = time(queued)?;
            let job_id = if job.is_empty() {
                job_id(&event_id, rows.i, enqueued_at)
            } else {
                Uuid::parse_str(&job).map_err(|_| format!("a job id: {job}"))?
            };
            Ok(LogEntry {
                attempt: Attempt {
                    id,
                    store_id: rows.s.clone(),
                    integration_id: rows.i,
                    job_id,
                    event_id,
                    event_type,
                    attempt: n,
                    succeeded: ok,
                    status_code: code,
                    body,
                    error_detail: error,
                    processing_time: took,
                    created_at: time(created)?,
                },
                status: JobStatus::parse(&status).ok_or_else(|| format!("a status: {status}"))?,
                enqueued_at,
                replay_of,
                archive: None,
            })
        })
        .collect()
}

/// The most bytes of job bodies one archive item holds (before deflating): inside
/// DynamoDB's 400 KB item even when they do not deflate, and more than one job's
/// (a payload over [`crate::job::MAX_INLINE_PAYLOAD`] is stored, not archived).
const ARCHIVE_BYTES_MOST: usize = 300 * 1024;

/// The archived job bodies of a page ([`LogEntry::archive`]), cut into the bodies of
/// archive items: each at most [`ARCHIVE_BYTES_MOST`] bytes (a body larger than that
/// alone in one).
pub fn archive_chunks<'a>(page: &Page<'a>) -> Vec<Vec<&'a str>> {
    let mut chunks: Vec<Vec<&'a str>> = Vec::new();
    let mut bytes = 0;
    for body in page.entries.iter().filter_map(|e| e.archive.as_deref()) {
        match chunks.last_mut() {
            Some(chunk) if bytes + body.len() <= ARCHIVE_BYTES_MOST => {
                chunk.push(body);
                bytes += body.len();
            }
            _ => {
                chunks.push(vec![body]);
                bytes = body.len();
            }
        }
    }
    chunks
}

/// An archive item's job bodies, as a JSON array of them, deflated. A body that is
/// not JSON (never: they are queue messages Herald wrote) is left out.
pub fn encode_archive(bodies: &[&str]) -> Vec<u8> {
    let raw: Vec<&serde_json::value::RawValue> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect();
    let mut out = DeflateEncoder::new(Vec::new(), Compression::default());
    let _ = serde_json::to_writer(&mut out, &raw);
    out.finish().unwrap_or_default()
}

/// The job bodies of an archive item; `Err` says what is wrong with it.
pub fn decode_archive(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut json = Vec::new();
    DeflateDecoder::new(bytes)
        .take(INFLATED_MOST)
        .read_to_end(&mut json)
        .map_err(|e| format!("the archive does not inflate: {e}"))?;
    let raw: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&json).map_err(|e| format!("the archive's jobs: {e}"))?;
    Ok(raw.into_iter().map(|r| r.get().to_owned()).collect())
}

/// A page's sort keys: `<ms, 13 digits>#<page id>`, so that they sort by time.
pub fn sort_key(ms: i64, page: Uuid) -> String {
    format!("{ms:013}#{}", page.simple())
}

/// The time (ms) a sort key of [`sort_key`] starts with.
pub fn sort_key_ms(key: &str) -> Option<i64> {
    key.split('#').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use chrono::{TimeDelta, TimeZone};

    use super::*;

    fn entry(job: Uuid, enqueued_at: DateTime<Utc>, ok: bool) -> LogEntry {
        LogEntry {
            attempt: Attempt {
                id: Uuid::now_v7(),
                store_id: "s".into(),
                integration_id: Uuid::from_u128(7),
                job_id: job,
                event_id: "evt-1".into(),
                event_type: "order.paid".into(),
                attempt: 2,
                succeeded: ok,
                status_code: Some(if ok { 204 } else { 503 }),
                body: if ok {
                    String::new()
                } else {
                    "busy \u{1F600}".into()
                },
                error_detail: (!ok).then(|| "the webhook answered 503".to_owned()),
                processing_time: 0.012_5,
                created_at: enqueued_at + TimeDelta::milliseconds(1_234),
            },
            status: if ok {
                JobStatus::Delivered
            } else {
                JobStatus::Retrying
            },
            enqueued_at,
            replay_of: None,
            archive: None,
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms)
            .single()
            .expect("time")
    }

    #[test]
    fn a_page_gives_back_every_attempt_exactly_with_derived_and_foreign_job_ids() {
        let queued = at(5);
        let herald = job_id("evt-1", Uuid::from_u128(7), queued);
        let entries = [
            entry(herald, queued, false),
            // An id this entry's event and integration do not derive: written out.
            entry(job_id("another", Uuid::from_u128(8), at(9)), at(9), true),
        ];
        let page = pages(
            entries
                .iter()
                .map(|e| (job_ms(e.attempt.job_id).unwrap_or_default(), e))
                .collect(),
        );
        assert_eq!(page.len(), 1);
        let decoded = decode(&encode(&page[0])).expect("decodes");
        let mut expected: Vec<LogEntry> = page[0].entries.iter().map(|e| (*e).clone()).collect();
        expected.sort_by_key(|e| e.attempt.id);
        let mut decoded = decoded;
        decoded.sort_by_key(|e| e.attempt.id);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn pages_are_cut_by_the_span_of_their_jobs_and_by_count() {
        let entries: Vec<LogEntry> = [0, 10, PAGE_SPAN_MS, PAGE_SPAN_MS + 11]
            .into_iter()
            .map(|ms| entry(Uuid::now_v7(), at(ms), true))
            .collect();
        let cut = pages(
            entries
                .iter()
                .zip([0, 10, PAGE_SPAN_MS, PAGE_SPAN_MS + 11])
                .map(|(e, ms)| (ms, e))
                .collect(),
        );
        assert_eq!(
            cut.iter()
                .map(|p| (p.first_job_ms, p.last_job_ms, p.entries.len()))
                .collect::<Vec<_>>(),
            [
                (0, PAGE_SPAN_MS, 3),
                (PAGE_SPAN_MS + 11, PAGE_SPAN_MS + 11, 1)
            ]
        );
        let many: Vec<LogEntry> = (0..PAGE_MOST + 1)
            .map(|_| entry(Uuid::now_v7(), at(0), true))
            .collect();
        let cut = pages(many.iter().map(|e| (0, e)).collect());
        assert_eq!(
            cut.iter().map(|p| p.entries.len()).collect::<Vec<_>>(),
            [PAGE_MOST, 1]
        );
    }

    #[test]
    fn a_page_that_is_not_deflated_rows_is_an_error_not_a_panic() {
        assert!(decode(b"not deflate").is_err());
        let mut out = DeflateEncoder::new(Vec::new(), Compression::default());
        out.write_all(b"{\"s\":1}").expect("write");
        assert!(decode(&out.finish().expect("deflate")).is_err());
    }

    #[test]
    fn sort_keys_sort_by_time_and_give_it_back() {
        let (a, b) = (
            sort_key(999, Uuid::now_v7()),
            sort_key(1_000, Uuid::now_v7()),
        );
        assert!(a < b);
        assert_eq!(sort_key_ms(&b), Some(1_000));
    }
}
