//! The delivery log in DynamoDB (attempts and their jobs' states), in the same table
//! as the integrations and the event claims ([`super::claims`]).
//!
//! **Pages.** A write packs the attempts it records for one integration into pages
//! (`log_page`): one item holds up to `PAGE_MOST` attempts whose jobs were
//! queued within `PAGE_SPAN_MS` of each other, each with its job's state after it.
//! An item costs one write unit a kilobyte plus as many again for each index it lands
//! in, so a page of a batch's attempts costs about what one attempt's item did.
//!
//! | item | `pk` | `sk` | GSI1 (`gsi1pk`/`gsi1sk`) | GSI3 (`gsi3pk`/`gsi3sk`) |
//! |---|---|---|---|---|
//! | page | `LOGP#<store>#<integration>#<n>` | `<last job's time>#<page>` | `LOGP#<store>#<n>`, `<newest attempt's time>#<page>` | `LOGP#<store>#<integration>#<n>`, `<newest attempt's time>#<page>` |
//!
//! Times are milliseconds, written in 13 digits so that keys sort by them. A store's
//! attempts newest first are GSI1's, an integration's GSI3's; an integration's jobs
//! newest first are the table's own order. A job's id tells when it was queued
//! ([`crate::job::job_time`]), and a page's jobs were queued within `PAGE_SPAN_MS`
//! of each other, so a job's attempts are in the pages whose key's time is in the span
//! after it: one bounded query a shard. GSI2 holds no page.
//!
//! **Write sharding.** `<n>` is the page's shard, `0` to [`PAGE_SHARDS`]` - 1`, taken in
//! turn: a store's (and an integration's) pages spread over [`PAGE_SHARDS`] partition
//! keys, so one store writes at up to that many times one partition's rate.
//! See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-sharding.html>.
//!
//! **Bounded listings.** A listing reads each of its partition keys newest first, a
//! few items at a time, and merges them until the newest [`Page::count_cap`] attempts
//! (or jobs) are known: an attempt is placed once every key still open has been read
//! past its time. It reads about as many pages as hold those attempts, plus one chunk
//! per key, whatever the history; its total is exact below that cap and a lower bound
//! at it ([`Page::bounded_total`]).
//!
//! **Items of earlier builds**, one an attempt (below), are read as more keys of each
//! merge until their retention expires them; the fan-out still writes them for jobs
//! queued by those builds, whose ids tell no time:
//!
//! | item | `pk` | `sk` | GSI1 | GSI2 | GSI3 |
//! |---|---|---|---|---|---|
//! | attempt | `LOGS#<store>#<integration>[#<n>]` | log id (UUIDv7) | `LOGS#<store>[#<n>]`, log id | `JOBLOGS#<store>#<job>`, log id | `JOBS#<store>#<integration>[#<n>]`, `<enqueued at>#<job id>#<log id>` |
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
use futures_util::StreamExt;
use uuid::Uuid;

use super::backend_error;
use super::batch_write::BatchWriter;
use super::log_page::{self, job_ms, PAGE_SPAN_MS};
use crate::attempt::{Attempt, JobRecord, JobStatus, LogEntry};
use crate::error::{Error, Result};
use crate::filter::{Filter, Listed, READ_BUDGET};
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
    /// The shard of the next page (pages take the shards in turn, from a random one).
    next_shard: std::sync::atomic::AtomicUsize,
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
            next_shard: std::sync::atomic::AtomicUsize::new(fastrand::usize(..PAGE_SHARDS)),
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

    /// A query of the unexpired items under `key` whose sort keys (`sort_attr`) are in
    /// `range` (from, to; both inclusive, either open), newest first.
    fn query(
        &self,
        index: Option<&str>,
        (key_attr, sort_attr): (&str, &str),
        key: &str,
        range: &(Option<String>, Option<String>),
    ) -> QueryFluentBuilder {
        let condition = match range {
            (None, None) => "#k = :k",
            (Some(_), None) => "#k = :k AND #s >= :from",
            (None, Some(_)) => "#k = :k AND #s <= :to",
            (Some(_), Some(_)) => "#k = :k AND #s BETWEEN :from AND :to",
        };
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(condition)
            .filter_expression("expires_at > :now")
            .expression_attribute_names("#k", key_attr)
            .expression_attribute_values(":k", s(key))
            .expression_attribute_values(":now", n(epoch(Utc::now())))
            .scan_index_forward(false);
        if range.0.is_some() || range.1.is_some() {
            query = query.expression_attribute_names("#s", sort_attr);
        }
        if let Some(from) = &range.0 {
            query = query.expression_attribute_values(":from", s(from.clone()));
        }
        if let Some(to) = &range.1 {
            query = query.expression_attribute_values(":to", s(to.clone()));
        }
        query
    }

    /// The entries of the newest `want` units (attempts or jobs, as `unit` says) under
    /// `sources` that `filter` keeps, merged. Each key is read a few items at a time,
    /// and only while it may still hold one of those units: a unit is placed once every
    /// key still open has been read past its time. So the items read are about as many
    /// as hold the units, plus at most one chunk per key, whatever lies beyond. The
    /// filter's times are key conditions ([`Shape::range`]); a filtered listing reads
    /// at most [`READ_BUDGET`] items, and when it stops there returns only the units it
    /// placed, and the time (ms) it reached: every unit newer was looked at. Returns
    /// every entry of the kept units (all of each job's), at most `want` units.
    async fn merged(
        &self,
        mut sources: Vec<Source>,
        unit: Unit,
        want: usize,
        filter: &Filter,
    ) -> Result<(Vec<LogEntry>, Option<i64>)> {
        let mut entries: Vec<LogEntry> = Vec::new();
        let (mut items_read, mut queries) = (0usize, 0usize);
        let budget = (!filter.is_empty()).then_some(READ_BUDGET);
        let since = filter.since.map(|t| t.timestamp_millis());
        let mut reached = None;
        loop {
            // A key read past the filter's start holds nothing more it keeps.
            for src in &mut sources {
                if let (Some(b), Some(since)) = (src.bound, since) {
                    src.done |= b < since;
                }
            }
            let units = unit.newest_first(&entries, filter);
            // No unit still unread is newer than the frontier.
            let frontier = sources
                .iter()
                .filter(|src| !src.done)
                .map(|src| src.bound.unwrap_or(i64::MAX))
                .max();
            let placed = match frontier {
                None => units.len(),
                Some(f) => units.iter().take_while(|(t, _)| *t > f).count(),
            };
            if placed >= want || frontier.is_none() {
                break;
            }
            let left = budget.map(|b| b.saturating_sub(items_read));
            if let (Some(0), Some(f)) = (left, frontier) {
                // The budget is spent: what is placed is answered, and where it stopped
                // (every unit after it has been looked at).
                reached = Some(f.saturating_add(1));
                let placed: std::collections::HashSet<Uuid> = units
                    .iter()
                    .take_while(|(t, _)| *t > f)
                    .map(|(_, id)| *id)
                    .collect();
                entries.retain(|e| placed.contains(&unit.key(e).1));
                break;
            }
            // Only keys that may still hold one of the newest `want` are read on.
            let cutoff = units.get(want.saturating_sub(1)).map(|(t, _)| *t);
            let mut open: Vec<usize> = sources
                .iter()
                .enumerate()
                .filter(|(_, src)| !src.done)
                .filter(|(_, src)| match (cutoff, src.bound) {
                    (Some(c), Some(b)) => b >= c,
                    _ => true,
                })
                .map(|(i, _)| i)
                .collect();
            if let Some(left) = left {
                // Within the budget: the keys furthest behind (never read first), at
                // least an item each.
                open.sort_by_key(|&i| std::cmp::Reverse(sources[i].bound.unwrap_or(i64::MAX)));
                open.truncate(left);
            }
            let share = (want - placed).div_ceil(open.len().max(1));
            let per_key = left.map_or(usize::MAX, |l| (l / open.len().max(1)).max(1));
            let reads = open.iter().map(|&i| {
                let src = &sources[i];
                let limit = src.shape.chunk(share).min(per_key);
                let query = self
                    .query(
                        src.index,
                        (src.key_attr, src.sort_attr),
                        &src.key,
                        &src.shape.range(filter),
                    )
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
                        let sort = k.get(src.sort_attr).and_then(|v| v.as_s().ok());
                        src.bound = Some(
                            sort.and_then(|key| src.shape.bound(key))
                                .ok_or_else(|| Item(k).corrupt(src.sort_attr))?,
                        );
                        src.start = Some(k.clone());
                    }
                    _ => src.done = true,
                }
                for item in out.items.unwrap_or_default() {
                    let read = src.shape.entries(&item)?.into_iter();
                    // An attempt the filter drops is dropped now; a job's entries wait
                    // until its latest is known.
                    match unit {
                        Unit::Attempt => {
                            entries.extend(read.filter(|e| filter.keeps_attempt(&e.attempt)));
                        }
                        Unit::Job => entries.extend(read),
                    }
                }
            }
        }
        let keep: std::collections::HashSet<(i64, Uuid)> = unit
            .newest_first(&entries, filter)
            .into_iter()
            .take(want)
            .collect();
        entries.retain(|e| keep.contains(&unit.key(e)));
        tracing::debug!(
            keys = sources.len(),
            queries,
            items_read,
            entries = entries.len(),
            budget_spent = reached.is_some(),
            "a delivery log listing"
        );
        Ok((entries, reached))
    }

    /// A page of the attempts under `sources`, newest first, and their number counted
    /// up to [`Page::count_cap`].
    async fn attempts(
        &self,
        sources: Vec<Source>,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<Attempt>> {
        let (mut entries, reached) = self
            .merged(sources, Unit::Attempt, page.count_cap(), filter)
            .await?;
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(Unit::Attempt.key(e)));
        Ok(Listed {
            counted: entries.len(),
            items: page.slice(entries).into_iter().map(|e| e.attempt).collect(),
            reached: reached.and_then(DateTime::from_timestamp_millis),
        })
    }

    /// The shard the next page or archive item goes to: round robin over
    /// [`PAGE_SHARDS`], from a random start per process.
    fn next_shard(&self) -> &'static str {
        SHARD_NAMES[self
            .next_shard
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % PAGE_SHARDS]
    }

    /// When a page's items expire (its newest attempt plus the retention), in epoch
    /// seconds.
    fn expires_at(&self, page: &log_page::Page<'_>) -> i64 {
        page.newest_ms.div_euclid(1000) + self.retention.as_secs() as i64
    }

    /// The item of a page of attempts, in DynamoDB's JSON.
    fn page_item(&self, page: &log_page::Page<'_>) -> Vec<u8> {
        let Some(first) = page.entries.first() else {
            return Vec::new();
        };
        let id = Uuid::now_v7();
        let shard = self.next_shard();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let integration: &str = first
            .attempt
            .integration_id
            .hyphenated()
            .encode_lower(&mut buf);
        let store = first.attempt.store_id.as_str();
        let newest = log_page::sort_key(page.newest_ms, id);
        let data = log_page::encode(page);
        let mut item = JsonItem::with_capacity(512 + data.len() * 4 / 3);
        item.s_parts("pk", &["LOGP#", store, "#", integration, "#", shard]);
        item.s("sk", &log_page::sort_key(page.last_job_ms, id));
        item.s_parts("gsi1pk", &["LOGP#", store, "#", shard]);
        item.s("gsi1sk", &newest);
        item.s_parts("gsi3pk", &["LOGP#", store, "#", integration, "#", shard]);
        item.s("gsi3sk", &newest);
        item.s("entity", "log-page");
        item.n("expires_at", self.expires_at(page));
        item.n("count", page.entries.len());
        item.b("d", &data);
        item.finish()
    }

    /// The keys of the pages of `base` (`LOGP#<store>[#<integration>]`): its shards.
    fn page_keys(base: &str) -> Vec<String> {
        SHARD_NAMES[..PAGE_SHARDS]
            .iter()
            .map(|n| format!("{base}#{n}"))
            .collect()
    }

    /// The items [`DeliveryLog::record`] writes, in DynamoDB's JSON: pages of each
    /// integration's attempts, and an item an attempt for jobs whose ids tell no time.
    pub fn put_items(&self, entries: &[LogEntry]) -> Vec<Vec<u8>> {
        let mut items = Vec::new();
        // Each integration's entries (by store and integration), with their jobs' times.
        type Group<'a> = ((&'a str, Uuid), Vec<(i64, &'a LogEntry)>);
        let mut paged: Vec<Group<'_>> = Vec::new();
        for e in entries {
            let Some(job) = job_ms(e.attempt.job_id) else {
                items.push(self.put_item(e));
                continue;
            };
            let key = (e.attempt.store_id.as_str(), e.attempt.integration_id);
            match paged.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push((job, e)),
                None => paged.push((key, vec![(job, e)])),
            }
        }
        for (_, group) in paged {
            for page in log_page::pages(group) {
                items.push(self.page_item(&page));
                items.extend(
                    log_page::archive_chunks(&page)
                        .iter()
                        .map(|bodies| self.archive_item(&page, bodies)),
                );
            }
        }
        items
    }

    /// An archive item of a page's jobs ([`LogEntry::archive`]): their bodies,
    /// deflated, under `ARCH#<store>#<integration>#<n>` by the page's last job's time
    /// (as the page itself), on the table alone: no index holds it, so it costs one
    /// write unit a kilobyte (docs/decisions/0007).
    fn archive_item(&self, page: &log_page::Page<'_>, bodies: &[&str]) -> Vec<u8> {
        let Some(first) = page.entries.first() else {
            return Vec::new();
        };
        let id = Uuid::now_v7();
        let shard = self.next_shard();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let integration: &str = first
            .attempt
            .integration_id
            .hyphenated()
            .encode_lower(&mut buf);
        let data = log_page::encode_archive(bodies);
        let mut item = JsonItem::with_capacity(256 + data.len() * 4 / 3);
        item.s_parts(
            "pk",
            &[
                "ARCH#",
                first.attempt.store_id.as_str(),
                "#",
                integration,
                "#",
                shard,
            ],
        );
        item.s("sk", &log_page::sort_key(page.last_job_ms, id));
        item.s("entity", "archive");
        item.n("expires_at", self.expires_at(page));
        item.b("d", &data);
        item.finish()
    }

    /// One entry's item as earlier builds wrote it, straight into DynamoDB's JSON: ids are formatted
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

/// Partition keys a store's (and an integration's) pages are spread over.
pub const PAGE_SHARDS: usize = 4;

/// Partition keys earlier builds spread a store's attempt items over.
pub const LOG_SHARDS: usize = 16;

/// The shards' names, as written into keys.
const SHARD_NAMES: [&str; LOG_SHARDS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
];

/// The attempts of one page were all made within this long of each other: a page
/// holds one `record` call's, which the fan-out makes once a batch, within one
/// invocation, and a Lambda function runs 15 minutes at most
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html>).
const PAGE_ATTEMPTS_SPREAD_MS: i64 = 15 * 60 * 1000;

/// Archive queries in flight at once, at most (a range replay's jobs may lie in many
/// runs).
const ARCHIVE_READS_AT_ONCE: usize = 16;

/// The job id of an archived body, read without parsing its event.
fn archived_job_id(body: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        job_id: Uuid,
    }
    serde_json::from_str::<Id>(body).ok().map(|i| i.job_id)
}

/// The most items one query of a listing asks for.
const MAX_CHUNK: usize = 1_000;

/// Attempts a page holds, about, when a listing sizes its reads.
const ATTEMPTS_A_PAGE: usize = 8;

/// An item as a query answers it.
type Row = HashMap<String, AttributeValue>;

/// The shard of a job's attempt items in earlier builds: FNV-1a of its id's bytes.
/// They still write items so for jobs whose ids tell no time.
pub fn shard_of(job: Uuid) -> usize {
    let hash = job
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % LOG_SHARDS as u64) as usize
}

/// The partition keys of earlier builds' items under `base`: its shards `<base>#0` …,
/// then `base` itself, where items written before the keys were sharded sit.
fn sharded(base: String) -> Vec<String> {
    let mut keys: Vec<String> = SHARD_NAMES.iter().map(|n| format!("{base}#{n}")).collect();
    keys.push(base);
    keys
}

/// What a listing counts.
#[derive(Clone, Copy)]
enum Unit {
    /// Attempts, by the time they were made.
    Attempt,
    /// Jobs, by the time they were queued (a job's attempts are one unit).
    Job,
}

impl Unit {
    /// An entry's unit and its time (ms), by which units sort.
    fn key(self, e: &LogEntry) -> (i64, Uuid) {
        match self {
            Self::Attempt => (e.attempt.created_at.timestamp_millis(), e.attempt.id),
            Self::Job => (
                job_ms(e.attempt.job_id).unwrap_or_else(|| e.enqueued_at.timestamp_millis()),
                e.attempt.job_id,
            ),
        }
    }

    /// The units of `entries` that `filter` keeps, each once, newest first: an
    /// attempt by itself, a job as it stands after its latest attempt.
    fn newest_first(self, entries: &[LogEntry], filter: &Filter) -> Vec<(i64, Uuid)> {
        let mut units: Vec<(i64, Uuid)> = match self {
            Self::Attempt => entries
                .iter()
                .filter(|e| filter.keeps_attempt(&e.attempt))
                .map(|e| self.key(e))
                .collect(),
            Self::Job => {
                let mut latest: HashMap<Uuid, &LogEntry> = HashMap::new();
                for e in entries {
                    let held = latest.entry(e.attempt.job_id).or_insert(e);
                    if Self::Attempt.key(e) > Self::Attempt.key(held) {
                        *held = e;
                    }
                }
                latest
                    .into_values()
                    .filter(|e| filter.keeps_job(&e.job()))
                    .map(|e| self.key(e))
                    .collect()
            }
        };
        units.sort_unstable_by(|a, b| b.cmp(a));
        units.dedup();
        units
    }
}

/// How the items under a key are sorted, and what they hold.
#[derive(Clone, Copy)]
enum Shape {
    /// Pages by their newest attempt's time (GSI1, GSI3).
    PagesByAttempt,
    /// Pages by their last job's time (the table's own keys).
    PagesByJob,
    /// Earlier builds' attempt items by log id, a UUIDv7 (the table, GSI1, GSI2).
    ItemsByAttempt,
    /// Earlier builds' attempt items by their job's queue time (GSI3).
    ItemsByJob,
}

impl Shape {
    /// The newest time (ms) a unit still unread under a key can have, from the sort
    /// key of the last item read there.
    fn bound(self, sort: &str) -> Option<i64> {
        match self {
            Self::PagesByAttempt | Self::PagesByJob => log_page::sort_key_ms(sort),
            // An attempt's time is taken a moment after its id's: into the next ms.
            Self::ItemsByAttempt => Uuid::parse_str(sort)
                .ok()
                .and_then(|id| id.get_timestamp())
                .map(|t| {
                    let (secs, nanos) = t.to_unix();
                    secs as i64 * 1000 + i64::from(nanos / 1_000_000) + 1
                }),
            Self::ItemsByJob => sort
                .split('#')
                .next()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis()),
        }
    }

    /// The sort keys (from, to; inclusive) under which the units in `filter`'s time
    /// range lie. A page's key time is at least each of its units' (its newest
    /// attempt's, its last job's), so a page older than the start holds none. Going
    /// the other way, a page's jobs lie within `PAGE_SPAN_MS` of its key and its
    /// attempts within [`PAGE_ATTEMPTS_SPREAD_MS`], so pages are read that far past
    /// the end. Items of earlier builds are read whole (their keys are done once read
    /// past the start).
    fn range(self, filter: &Filter) -> (Option<String>, Option<String>) {
        let spread = match self {
            Self::PagesByAttempt => PAGE_ATTEMPTS_SPREAD_MS,
            Self::PagesByJob => PAGE_SPAN_MS,
            Self::ItemsByAttempt | Self::ItemsByJob => return (None, None),
        };
        let from = filter
            .since
            .map(|t| format!("{:013}", t.timestamp_millis().max(0)));
        // The newest ms a kept unit can have is the one before the end's (rounded up).
        let to = filter.until.map(|t| {
            let ms = t.timestamp_millis() + i64::from(t.timestamp_subsec_nanos() % 1_000_000 != 0);
            format!("{:013}#~", (ms - 1 + spread).max(0))
        });
        (from, to)
    }

    /// Items to ask a key for when it should give `units` more.
    fn chunk(self, units: usize) -> usize {
        match self {
            Self::PagesByAttempt | Self::PagesByJob => units.div_ceil(ATTEMPTS_A_PAGE) + 1,
            Self::ItemsByAttempt | Self::ItemsByJob => units + 1,
        }
        .min(MAX_CHUNK)
    }

    /// The entries an item holds.
    fn entries(self, item: &Row) -> Result<Vec<LogEntry>> {
        match self {
            Self::PagesByAttempt | Self::PagesByJob => page_entries(item),
            Self::ItemsByAttempt | Self::ItemsByJob => Ok(vec![item_entry(item)?]),
        }
    }
}

/// One partition key's part of a merged listing.
struct Source {
    index: Option<&'static str>,
    key_attr: &'static str,
    sort_attr: &'static str,
    key: String,
    shape: Shape,
    /// Where its next read starts (the last `LastEvaluatedKey`).
    start: Option<Row>,
    /// Whether every item under the key has been read.
    done: bool,
    /// No unit still unread under the key is newer than this (ms); `None` before the
    /// first read.
    bound: Option<i64>,
}

impl Source {
    /// The keys `keys` of `index` (`None`: the table), sorted by `sort_attr`.
    fn all(
        index: Option<&'static str>,
        (key_attr, sort_attr): (&'static str, &'static str),
        shape: Shape,
        keys: Vec<String>,
    ) -> Vec<Self> {
        keys.into_iter()
            .map(|key| Self {
                index,
                key_attr,
                sort_attr,
                key,
                shape,
                start: None,
                done: false,
                bound: None,
            })
            .collect()
    }
}

/// The entries of a page's item.
fn page_entries(item: &Row) -> Result<Vec<LogEntry>> {
    let data = item
        .get("d")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| Item(item).corrupt("d"))?;
    log_page::decode(data.as_ref()).map_err(|reason| Error::Corrupt {
        key: Item(item).opt_text("pk").unwrap_or_default(),
        reason,
    })
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
    fn b(&mut self, name: &str, value: &[u8]) {
        use base64::Engine;
        self.key(name, b"\"B\"");
        self.0.push(b'"');
        let start = self.0.len();
        self.0.resize(start + value.len().div_ceil(3) * 4, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(value, &mut self.0[start..])
            .unwrap_or(0);
        self.0.truncate(start + written);
        self.0.extend_from_slice(b"\"}");
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

/// An earlier build's attempt item, with its job's state after it.
fn item_entry(item: &Row) -> Result<LogEntry> {
    let i = Item(item);
    Ok(LogEntry {
        status: JobStatus::parse(&i.text("status")?).ok_or_else(|| i.corrupt("status"))?,
        enqueued_at: i.time("enqueued_at")?,
        attempt: attempt_from(item)?,
        replay_of: None,
        archive: None,
    })
}

#[async_trait]
impl DeliveryLog for DynamoDeliveryLog {
    /// Pages of the entries (earlier builds' items for jobs whose ids tell no time), up
    /// to 25 items per `BatchWriteItem` and 8 requests at once, what comes back
    /// unprocessed (or meets a retryable error) written again, each request bounded by
    /// [`LOG_ATTEMPT_TIMEOUT`] and the whole write by [`LOG_WRITE_TIMEOUT`].
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

    async fn store_logs(
        &self,
        store: &StoreId,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<Attempt>> {
        let gsi1 = (Some("gsi1"), ("gsi1pk", "gsi1sk"));
        let mut sources = Source::all(
            gsi1.0,
            gsi1.1,
            Shape::PagesByAttempt,
            Self::page_keys(&format!("LOGP#{store}")),
        );
        sources.extend(Source::all(
            gsi1.0,
            gsi1.1,
            Shape::ItemsByAttempt,
            sharded(format!("LOGS#{store}")),
        ));
        self.attempts(sources, filter, page).await
    }

    async fn integration_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<Attempt>> {
        let mut sources = Source::all(
            Some("gsi3"),
            ("gsi3pk", "gsi3sk"),
            Shape::PagesByAttempt,
            Self::page_keys(&format!("LOGP#{store}#{integration}")),
        );
        sources.extend(Source::all(
            None,
            ("pk", "sk"),
            Shape::ItemsByAttempt,
            sharded(format!("LOGS#{store}#{integration}")),
        ));
        self.attempts(sources, filter, page).await
    }

    async fn integration_jobs(
        &self,
        store: &StoreId,
        integration: Uuid,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<JobRecord>> {
        let mut sources = Source::all(
            None,
            ("pk", "sk"),
            Shape::PagesByJob,
            Self::page_keys(&format!("LOGP#{store}#{integration}")),
        );
        sources.extend(Source::all(
            Some("gsi3"),
            ("gsi3pk", "gsi3sk"),
            Shape::ItemsByJob,
            sharded(format!("JOBS#{store}#{integration}")),
        ));
        let (entries, reached) = self
            .merged(sources, Unit::Job, page.count_cap(), filter)
            .await?;
        // A job's state is its newest attempt's (by time: a replay numbers its
        // attempts from 1 again).
        let mut latest: HashMap<Uuid, &LogEntry> = HashMap::new();
        for e in &entries {
            let newer = |held: &&LogEntry| Unit::Attempt.key(e) > Unit::Attempt.key(held);
            match latest.get(&e.attempt.job_id) {
                Some(held) if !newer(held) => {}
                _ => {
                    latest.insert(e.attempt.job_id, e);
                }
            }
        }
        let mut jobs: Vec<&LogEntry> = latest.into_values().collect();
        jobs.sort_unstable_by_key(|e| std::cmp::Reverse(Unit::Job.key(e)));
        Ok(Listed {
            counted: jobs.len(),
            items: page.slice(jobs).into_iter().map(LogEntry::job).collect(),
            reached: reached.and_then(DateTime::from_timestamp_millis),
        })
    }

    async fn archived(
        &self,
        store: &StoreId,
        integration: Uuid,
        jobs: &[Uuid],
    ) -> Result<Vec<String>> {
        // The jobs' times, in runs no more than a page's span apart: one range of
        // archive items a run, from its first job's time to a span past its last's.
        let mut times: Vec<i64> = jobs.iter().filter_map(|j| job_ms(*j)).collect();
        times.sort_unstable();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for t in times {
            match runs.last_mut() {
                Some((_, last)) if t - *last <= PAGE_SPAN_MS => *last = t,
                _ => runs.push((t, t)),
            }
        }
        let keys = Self::page_keys(&format!("ARCH#{store}#{integration}"));
        let mut ranges: Vec<(String, (Option<String>, Option<String>))> = Vec::new();
        for (from, to) in &runs {
            for key in &keys {
                let range = (
                    Some(format!("{from:013}")),
                    Some(format!("{:013}#~", to + PAGE_SPAN_MS)),
                );
                ranges.push((key.clone(), range));
            }
        }
        let reads: Vec<_> = ranges
            .iter()
            .map(|(key, range)| {
                self.query(None, ("pk", "sk"), key, range)
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Vec<_>>()
            })
            .collect();
        let wanted: std::collections::HashSet<Uuid> = jobs.iter().copied().collect();
        let mut found: HashMap<Uuid, String> = HashMap::new();
        let answers: Vec<_> = futures_util::stream::iter(reads)
            .buffer_unordered(ARCHIVE_READS_AT_ONCE)
            .collect()
            .await;
        for items in answers {
            for item in items {
                let item = item.map_err(|e| backend_error(SERVICE, e))?;
                let data = item
                    .get("d")
                    .and_then(|v| v.as_b().ok())
                    .ok_or_else(|| Item(&item).corrupt("d"))?;
                let bodies =
                    log_page::decode_archive(data.as_ref()).map_err(|reason| Error::Corrupt {
                        key: Item(&item).opt_text("pk").unwrap_or_default(),
                        reason,
                    })?;
                for body in bodies {
                    if let Some(id) = archived_job_id(&body).filter(|id| wanted.contains(id)) {
                        found.entry(id).or_insert(body);
                    }
                }
            }
        }
        Ok(found.into_values().collect())
    }

    async fn job_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        job: Uuid,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        let Some(queued) = job_ms(job) else {
            // A job of an earlier build: its attempts are items of their own under
            // GSI2. The job id is derived from the integration id, so the job's
            // partition holds only this integration's attempts; the filter below is a
            // second lock.
            let listed = self
                .attempts(
                    Source::all(
                        Some("gsi2"),
                        ("gsi2pk", "gsi2sk"),
                        Shape::ItemsByAttempt,
                        vec![format!("JOBLOGS#{store}#{job}")],
                    ),
                    &Filter::default(),
                    page,
                )
                .await?;
            let (attempts, total) = (listed.items, listed.counted);
            if attempts.iter().any(|a| a.integration_id != integration) {
                return Ok((Vec::new(), 0));
            }
            return Ok((attempts, total));
        };
        // The pages whose last job was queued in the span after this one, in each
        // shard of the integration: every page that can hold its attempts.
        let range = (
            Some(format!("{queued:013}")),
            Some(format!("{:013}#~", queued + PAGE_SPAN_MS)),
        );
        let reads = Self::page_keys(&format!("LOGP#{store}#{integration}"))
            .into_iter()
            .map(|key| {
                self.query(None, ("pk", "sk"), &key, &range)
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Vec<_>>()
            });
        let mut entries = Vec::new();
        for items in futures_util::future::join_all(reads).await {
            for item in items {
                let item = item.map_err(|e| backend_error(SERVICE, e))?;
                entries.extend(
                    page_entries(&item)?
                        .into_iter()
                        .filter(|e| e.attempt.job_id == job),
                );
            }
        }
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(Unit::Attempt.key(e)));
        let total = entries.len();
        let attempts = entries.into_iter().map(|e| e.attempt).collect();
        Ok((page.slice(attempts), total))
    }
}
