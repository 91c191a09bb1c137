//! The delivery log in DynamoDB (attempts and their jobs' states), in the same table
//! as the integrations and the event claims ([`super::claims`]).
//!
//! | item | `pk` | `sk` | GSI1 (`gsi1pk`/`gsi1sk`) | GSI2 (`gsi2pk`/`gsi2sk`) | GSI3 (`gsi3pk`/`gsi3sk`) |
//! |---|---|---|---|---|---|
//! | attempt | `LOGS#<store>#<integration>#<n>` | log id (UUIDv7) | `LOGS#<store>#<n>`, log id | `JOBLOGS#<store>#<job>`, log id | `JOBS#<store>#<integration>#<n>`, `<enqueued at>#<job id>#<log id>` |
//!
//! An attempt's item also holds its job's state after it (`status`, `enqueued_at`), so
//! a delivery is one item. A job's attempts sit side by side in GSI3 (their sort keys
//! start with the job's), newest first when read backwards: the jobs listing reads
//! the first item of each job there, its latest attempt. Earlier builds kept a
//! separate job item (`pk` `JOBS#<store>#<integration>`); it is not read, and its TTL
//! removes it.
//!
//! **Write sharding.** `<n>` is the attempt's shard, `0` to [`LOG_SHARDS`]` - 1`, from
//! its job id ([`shard_of`]): a store's (and an integration's) attempts spread over
//! [`LOG_SHARDS`] partition keys, so one store writes at up to that many times one
//! partition's rate (1,000 writes a second each), and a job's attempts stay together.
//! See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-sharding.html>.
//!
//! **Bounded listings.** A listing reads each of its partition keys newest first, a
//! few items at a time, and merges them by sort key until the newest
//! [`Page::count_cap`] items (or jobs) are known: never the whole history, so a
//! request reads about `offset + 2 × limit` items plus one chunk per key, whatever
//! the history; its total is exact below that cap and a lower bound at it
//! ([`Page::bounded_total`]). Items written before the keys were sharded (under the
//! same keys without `#<n>`) are read as one more key of the merge, until their
//! retention expires them.
//!
//! Every item carries `expires_at` (epoch seconds) for DynamoDB TTL. TTL deletion is
//! lazy (up to days late), so reads filter expired items.
//! See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/howitworks-ttl.html>.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::StalledStreamProtectionConfig;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::backend_error;
use super::batch_write::BatchWriter;
use crate::attempt::{Attempt, JobRecord, JobStatus, LogEntry};
use crate::error::{Error, Result};
use crate::job::rfc3339_ms;
use crate::json::json_escaped;
use crate::model::StoreId;
use crate::page::Page;
use crate::ports::DeliveryLog;

const SERVICE: &str = "DynamoDB";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn epoch(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The longest one request of the delivery log may take.
pub const LOG_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest one call of the delivery log may take, its retries included.
pub const LOG_WRITE_TIMEOUT: Duration = Duration::from_secs(8);

/// Attempts and job states in DynamoDB, kept for `retention`. Reads go through the
/// SDK's client; the fan-out's writes through a [`BatchWriter`].
#[derive(Debug)]
pub struct DynamoDeliveryLog {
    client: Client,
    writer: BatchWriter,
    table: String,
    retention: Duration,
}

impl DynamoDeliveryLog {
    /// The log in `table` of the account, region and endpoint of `sdk`, items
    /// expiring after `retention`.
    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        table: impl Into<String>,
        retention: Duration,
    ) -> Self {
        let table = table.into();
        Self {
            client: Client::from_conf(Self::client_config(sdk.into())),
            writer: BatchWriter::from_sdk(sdk, table.clone(), LOG_ATTEMPT_TIMEOUT),
            table,
            retention,
        }
    }

    /// The log's read client's configuration, from `config`: its time is bounded by
    /// timeouts (one request, and the whole call with its retries) instead of by the
    /// SDK's stalled-stream protection, whose throughput checks cost CPU on every
    /// request (`make bench`). Writes have the same bounds (see [`DeliveryLog::record`]).
    fn client_config(config: aws_sdk_dynamodb::Config) -> aws_sdk_dynamodb::Config {
        let timeouts = config
            .timeout_config()
            .map_or_else(TimeoutConfig::builder, |t| t.to_builder())
            .operation_attempt_timeout(LOG_ATTEMPT_TIMEOUT)
            .operation_timeout(LOG_WRITE_TIMEOUT)
            .build();
        config
            .to_builder()
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(timeouts)
            .build()
    }

    /// A query of the unexpired items under `key`, newest first.
    fn query(&self, index: Option<&str>, key_attr: &str, key: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression("#k = :k")
            .filter_expression("expires_at > :now")
            .expression_attribute_names("#k", key_attr)
            .expression_attribute_values(":k", s(key))
            .expression_attribute_values(":now", n(epoch(Utc::now())))
            .scan_index_forward(false)
    }

    /// The newest items under `keys` (partition keys of one index, or of the table)
    /// merged newest first by their sort key (`sort_attr`), as far as the newest
    /// `want` units: an item starts a unit when `starts(previous, item)` says so (each
    /// item for attempts; the first of a job's run for jobs). Each key is read a few
    /// items at a time, and only while it may still hold one of those units, so the
    /// items read are about as many as the units' own, plus at most one chunk per key,
    /// whatever lies beyond. Returns the items of the newest units, at most `want`
    /// (fewer when the keys hold fewer).
    async fn newest(
        &self,
        index: Option<&str>,
        (key_attr, sort_attr): (&str, &str),
        keys: Vec<String>,
        want: usize,
        starts: impl Fn(Option<&Row>, &Row) -> bool,
    ) -> Result<Vec<Row>> {
        let mut sources: Vec<Source> = keys.into_iter().map(Source::new).collect();
        // All items read so far, newest first.
        let mut merged: Vec<(String, Row)> = Vec::new();
        let (mut items_read, mut queries) = (0usize, 0usize);
        loop {
            // Units among the items read newer than each key's position: a key still
            // open is read further only while fewer than `want` units lie above it.
            let needed: Vec<(usize, usize)> = sources
                .iter()
                .enumerate()
                .filter(|(_, src)| !src.done)
                .filter_map(|(i, src)| {
                    let above = match &src.seen_to {
                        None => 0,
                        Some(seen) => units_above(&merged, seen, &starts),
                    };
                    (above < want).then(|| (i, want - above))
                })
                .collect();
            if needed.is_empty() {
                break;
            }
            let share = needed.len();
            let reads = needed.iter().map(|&(i, missing)| {
                let src = &sources[i];
                // A fair share of the missing units, in items (a key's own items per
                // unit so far: jobs have several attempts), and one more.
                let per_unit = src.items.div_ceil(src.units.max(1)).max(1);
                let limit = (missing.div_ceil(share) * per_unit + 1).min(MAX_CHUNK);
                let query = self
                    .query(index, key_attr, &src.key)
                    .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(src.start.clone());
                async move { (i, query.send().await) }
            });
            for (i, answer) in futures_util::future::join_all(reads).await {
                let out = answer.map_err(|e| backend_error(SERVICE, e))?;
                queries += 1;
                items_read += out.scanned_count().max(0) as usize;
                let src = &mut sources[i];
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => {
                        src.seen_to = k.get(sort_attr).and_then(|v| v.as_s().ok()).cloned();
                        src.start = Some(k.clone());
                    }
                    _ => src.done = true,
                }
                let first = merged.len();
                for item in out.items.unwrap_or_default() {
                    let sort = item
                        .get(sort_attr)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .ok_or_else(|| Item(&item).corrupt(sort_attr))?;
                    let previous = match merged.len() {
                        at if at == first => src.last.as_ref(),
                        at => Some(&merged[at - 1].1),
                    };
                    src.units += usize::from(starts(previous, &item));
                    src.items += 1;
                    merged.push((sort, item));
                }
                if merged.len() > first {
                    src.last = merged.last().map(|(_, row)| row.clone());
                }
            }
            merged.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        }
        let mut rows = Vec::new();
        let mut units = 0;
        let mut previous: Option<&Row> = None;
        for (_, row) in &merged {
            if starts(previous, row) {
                if units == want {
                    break;
                }
                units += 1;
            }
            rows.push(row.clone());
            previous = Some(row);
        }
        tracing::debug!(
            keys = sources.len(),
            queries,
            items_read,
            units,
            "a delivery log listing"
        );
        Ok(rows)
    }

    /// A page of the attempts under `keys`, newest first, and their number counted up
    /// to [`Page::count_cap`].
    async fn attempts(
        &self,
        index: Option<&str>,
        attrs: (&str, &str),
        keys: Vec<String>,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        let items = self
            .newest(index, attrs, keys, page.count_cap(), each_item)
            .await?;
        let total = items.len();
        Ok((
            page.slice(items)
                .iter()
                .map(attempt_from)
                .collect::<Result<_>>()?,
            total,
        ))
    }

    /// The items [`DeliveryLog::record`] writes, in DynamoDB's JSON: one per attempt,
    /// holding its job's state too.
    pub fn put_items(&self, entries: &[LogEntry]) -> Vec<Vec<u8>> {
        entries.iter().map(|e| self.put_item(e)).collect()
    }

    /// One entry's item, written straight into DynamoDB's JSON: ids are formatted
    /// into buffers on the stack and keys built in parts.
    fn put_item(&self, e: &LogEntry) -> Vec<u8> {
        let a = &e.attempt;
        let mut ids = [[0u8; uuid::fmt::Hyphenated::LENGTH]; 3];
        let [log_id, integration_id, job_id] = &mut ids;
        let log_id: &str = a.id.hyphenated().encode_lower(log_id);
        let integration_id: &str = a.integration_id.hyphenated().encode_lower(integration_id);
        let job_id: &str = a.job_id.hyphenated().encode_lower(job_id);
        let (enqueued, created) = (rfc3339_ms(&e.enqueued_at), rfc3339_ms(&a.created_at));
        let (enqueued_at, created_at) = (enqueued.as_str(), created.as_str());
        let store = a.store_id.as_str();
        let shard = SHARD_NAMES[shard_of(a.job_id)];
        let mut item = JsonItem::with_capacity(1024 + a.body.len());
        item.s_parts("pk", &["LOGS#", store, "#", integration_id, "#", shard]);
        item.s("sk", log_id);
        item.s_parts("gsi1pk", &["LOGS#", store, "#", shard]);
        item.s("gsi1sk", log_id);
        item.s_parts("gsi2pk", &["JOBLOGS#", store, "#", job_id]);
        item.s("gsi2sk", log_id);
        item.s_parts("gsi3pk", &["JOBS#", store, "#", integration_id, "#", shard]);
        item.s_parts("gsi3sk", &[enqueued_at, "#", job_id, "#", log_id]);
        item.s("entity", "attempt");
        item.s("id", log_id);
        item.s("store_id", store);
        item.s("integration_id", integration_id);
        item.s("job_id", job_id);
        item.s("event_id", &a.event_id);
        item.s("event_type", &a.event_type);
        item.n("attempt", a.attempt);
        item.bool("succeeded", a.succeeded);
        item.n("processing_time", a.processing_time);
        item.s("created_at", created_at);
        item.n(
            "expires_at",
            epoch(a.created_at) + self.retention.as_secs() as i64,
        );
        item.s("status", e.status.as_str());
        item.s("enqueued_at", enqueued_at);
        if let Some(code) = a.status_code {
            item.n("status_code", code);
        }
        if !a.body.is_empty() {
            item.s("body", &a.body);
        }
        if let Some(detail) = &a.error_detail {
            item.s("error_detail", detail);
        }
        item.finish()
    }
}

/// Partition keys a store's (and an integration's) attempts are spread over.
pub const LOG_SHARDS: usize = 16;

/// The shards' names, as written into keys.
const SHARD_NAMES: [&str; LOG_SHARDS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
];

/// The most items one query of a listing asks for.
const MAX_CHUNK: usize = 1_000;

/// An item as a query answers it.
type Row = HashMap<String, AttributeValue>;

/// The shard of a job's attempts: FNV-1a of its id's bytes, so it is the same in
/// every build and every process, and all of a job's attempts share it.
pub fn shard_of(job: Uuid) -> usize {
    let hash = job
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % LOG_SHARDS as u64) as usize
}

/// The partition keys of a listing under `base`: its shards `<base>#0` …, then
/// `base` itself, where items written before the keys were sharded sit.
fn sharded(base: String) -> Vec<String> {
    let mut keys: Vec<String> = SHARD_NAMES.iter().map(|n| format!("{base}#{n}")).collect();
    keys.push(base);
    keys
}

/// One partition key's part of a merged listing.
struct Source {
    key: String,
    /// Where its next read starts (the last `LastEvaluatedKey`).
    start: Option<Row>,
    /// The sort key of the last item read (returned or filtered out): every newer
    /// item under the key has been read.
    seen_to: Option<String>,
    /// Whether every item under the key has been read.
    done: bool,
    /// Items and units read from it, and the last item.
    items: usize,
    units: usize,
    last: Option<Row>,
}

impl Source {
    fn new(key: String) -> Self {
        Self {
            key,
            start: None,
            seen_to: None,
            done: false,
            items: 0,
            units: 0,
            last: None,
        }
    }
}

/// The units that start among the items of `merged` (newest first) newer than `seen`.
fn units_above(
    merged: &[(String, Row)],
    seen: &str,
    starts: impl Fn(Option<&Row>, &Row) -> bool,
) -> usize {
    let mut previous = None;
    let mut units = 0;
    for (sort, row) in merged {
        if sort.as_str() <= seen {
            break;
        }
        units += usize::from(starts(previous, row));
        previous = Some(row);
    }
    units
}

/// Whether `item` is the first (the latest attempt) of its job's run, in GSI3's
/// order where a job's attempts come one after another.
fn starts_a_job(previous: Option<&Row>, item: &Row) -> bool {
    previous.and_then(|p| p.get("job_id")) != item.get("job_id")
}

/// Every item is a unit of its own.
fn each_item(_: Option<&Row>, _: &Row) -> bool {
    true
}

/// An item being written in DynamoDB's JSON (`{"name":{"S":"value"},…}`). Attribute
/// names are Herald's own (letters, digits and `_`), written as they are.
struct JsonItem(Vec<u8>);

impl JsonItem {
    fn with_capacity(n: usize) -> Self {
        let mut buf = Vec::with_capacity(n);
        buf.push(b'{');
        Self(buf)
    }
    fn key(&mut self, name: &str, kind: &[u8]) {
        debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":{");
        self.0.extend_from_slice(kind);
        self.0.push(b':');
    }
    fn s(&mut self, name: &str, value: &str) {
        self.s_parts(name, &[value]);
    }
    /// A string attribute whose value is `parts` one after another.
    fn s_parts(&mut self, name: &str, parts: &[&str]) {
        self.key(name, b"\"S\"");
        self.0.push(b'"');
        for part in parts {
            json_escaped(&mut self.0, part);
        }
        self.0.extend_from_slice(b"\"}");
    }
    fn n(&mut self, name: &str, value: impl std::fmt::Display) {
        use std::io::Write;
        self.key(name, b"\"N\"");
        // A number's text (digits, `-`, `.`) needs no escape.
        let _ = write!(self.0, "\"{value}\"");
        self.0.push(b'}');
    }
    fn bool(&mut self, name: &str, value: bool) {
        self.key(name, b"\"BOOL\"");
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
        self.0.push(b'}');
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

struct Item<'a>(&'a HashMap<String, AttributeValue>);

impl Item<'_> {
    fn text(&self, name: &str) -> Result<String> {
        self.0
            .get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| self.corrupt(name))
    }
    fn opt_text(&self, name: &str) -> Option<String> {
        self.0.get(name).and_then(|v| v.as_s().ok()).cloned()
    }
    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T> {
        self.0
            .get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.corrupt(name))
    }
    fn opt_number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.0
            .get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
    }
    fn uuid(&self, name: &str) -> Result<Uuid> {
        Uuid::parse_str(&self.text(name)?).map_err(|_| self.corrupt(name))
    }
    fn time(&self, name: &str) -> Result<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.text(name)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.corrupt(name))
    }
    fn corrupt(&self, name: &str) -> Error {
        Error::Corrupt {
            key: self.opt_text("pk").unwrap_or_default(),
            reason: format!("{name} is missing or malformed"),
        }
    }
}

fn attempt_from(item: &HashMap<String, AttributeValue>) -> Result<Attempt> {
    let i = Item(item);
    Ok(Attempt {
        id: i.uuid("id")?,
        store_id: i.text("store_id")?,
        integration_id: i.uuid("integration_id")?,
        job_id: i.uuid("job_id")?,
        event_id: i.text("event_id")?,
        event_type: i.text("event_type")?,
        attempt: i.number("attempt")?,
        succeeded: *item
            .get("succeeded")
            .and_then(|v| v.as_bool().ok())
            .ok_or_else(|| i.corrupt("succeeded"))?,
        status_code: i.opt_number("status_code"),
        body: i.opt_text("body").unwrap_or_default(),
        error_detail: i.opt_text("error_detail"),
        processing_time: i.number("processing_time")?,
        created_at: i.time("created_at")?,
    })
}

/// A job's state from its latest attempt's item.
fn job_from(item: &HashMap<String, AttributeValue>) -> Result<JobRecord> {
    let i = Item(item);
    let attempt = attempt_from(item)?;
    Ok(LogEntry {
        status: JobStatus::parse(&i.text("status")?).ok_or_else(|| i.corrupt("status"))?,
        enqueued_at: i.time("enqueued_at")?,
        attempt,
    }
    .job())
}

#[async_trait]
impl DeliveryLog for DynamoDeliveryLog {
    /// Up to 25 items per `BatchWriteItem` and 8 requests at once, what comes back
    /// unprocessed (or meets a retryable error) written again, each request bounded
    /// by [`LOG_ATTEMPT_TIMEOUT`] and the whole write by [`LOG_WRITE_TIMEOUT`].
    async fn record(&self, entries: &[LogEntry]) -> Result<()> {
        match tokio::time::timeout(
            LOG_WRITE_TIMEOUT,
            self.writer.write(self.put_items(entries)),
        )
        .await
        {
            Ok(written) => written,
            Err(_) => Err(Error::Backend {
                service: SERVICE,
                message: format!("the log write took longer than {LOG_WRITE_TIMEOUT:?}"),
                retryable: true,
            }),
        }
    }

    async fn store_logs(&self, store: &StoreId, page: Page) -> Result<(Vec<Attempt>, usize)> {
        self.attempts(
            Some("gsi1"),
            ("gsi1pk", "gsi1sk"),
            sharded(format!("LOGS#{store}")),
            page,
        )
        .await
    }

    async fn integration_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        self.attempts(
            None,
            ("pk", "sk"),
            sharded(format!("LOGS#{store}#{integration}")),
            page,
        )
        .await
    }

    async fn integration_jobs(
        &self,
        store: &StoreId,
        integration: Uuid,
        page: Page,
    ) -> Result<(Vec<JobRecord>, usize)> {
        // A job is the run of its attempts in GSI3, its latest attempt first: it is
        // counted once, and read from that first item.
        let items = self
            .newest(
                Some("gsi3"),
                ("gsi3pk", "gsi3sk"),
                sharded(format!("JOBS#{store}#{integration}")),
                page.count_cap(),
                starts_a_job,
            )
            .await?;
        let mut latest = Vec::new();
        let mut previous = None;
        for item in &items {
            if starts_a_job(previous, item) {
                latest.push(item);
            }
            previous = Some(item);
        }
        let total = latest.len();
        let jobs = page.slice(latest);
        Ok((
            jobs.into_iter().map(job_from).collect::<Result<_>>()?,
            total,
        ))
    }

    async fn job_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        job: Uuid,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        // The job id is derived from the integration id, so the job's partition holds
        // only this integration's attempts; the filter below is a second lock.
        let (attempts, total) = self
            .attempts(
                Some("gsi2"),
                ("gsi2pk", "gsi2sk"),
                vec![format!("JOBLOGS#{store}#{job}")],
                page,
            )
            .await?;
        if attempts.iter().any(|a| a.integration_id != integration) {
            return Ok((Vec::new(), 0));
        }
        Ok((attempts, total))
    }
}
