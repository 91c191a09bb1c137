//! What a deployed stack would be billed for, per delivered event: 1 KiB `order.paid`
//! events posted to `POST /v2/events` in requests of 100, each observed by one signed
//! webhook integration, run through the ingest and fan-out code on moto behind the
//! meter (a recording proxy, [`crate::meter`]), the internal queue read and acknowledged
//! as Lambda's SQS event source does (batches of 10, `DeleteMessageBatch` for the
//! records not reported failed).
//!
//! Counted from the wire: SQS requests (each 64 KiB of a request or its answer is one),
//! DynamoDB write and read request units from the sizes of the items written and read
//! (every global secondary index an item lands in is one more write; a transaction's
//! writes count twice), KMS requests. Measured in the process: the handlers' CPU per
//! invocation (Lambda bills duration in whole milliseconds at the function's memory)
//! and the bytes of log lines and EMF records they write (CloudWatch Logs ingestion).
//! Assumed, and said so in the table: Lambda's platform records per invocation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::{AttributeValue, ProjectionType};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use herald_core::aws::attempt_log::DynamoDeliveryLog;
use herald_core::aws::claims::DynamoIdempotency;
use herald_core::aws::dynamo::DynamoIntegrationStore;
use herald_core::aws::kms::KmsKeys;
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::cache::IntegrationCache;
use herald_core::config::PipelineDefaults;
use herald_core::ingest::{EventStatus, Ingest, IngestSettings};
use herald_core::metrics::MetricsOut;
use herald_core::model::StoreId;
use herald_core::ports::IntegrationStore;
use herald_core::secrets::Vault;
use herald_core::wiring::Components;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::meter::{Call, Meter};
use crate::moto::Moto;
use crate::receiver::Receiver;
use crate::stats::{cpu_time, median};
use crate::throughput::payload;

/// us-east-1 list prices, as published on AWS's pricing pages. This machine has no
/// internet: [`PRICES_AS_OF`] is when they were last checked, not fetched at run time.
pub struct Prices {
    /// API Gateway HTTP API, per request (first 300 million a month; 512 KiB each).
    pub http_api_request: f64,
    /// Lambda, per request.
    pub lambda_request: f64,
    /// Lambda duration, per GB-second, arm64 (the template's default architecture).
    pub lambda_gb_second_arm64: f64,
    /// SQS standard queue, per request (64 KiB each; after the first million a month).
    pub sqs_request: f64,
    /// DynamoDB on-demand, standard table class, per write request unit.
    pub dynamodb_wru: f64,
    /// DynamoDB on-demand, standard table class, per read request unit.
    pub dynamodb_rru: f64,
    /// KMS, per request.
    pub kms_request: f64,
    /// CloudWatch Logs, standard class, per GB ingested.
    pub logs_gb: f64,
    /// EventBridge, per custom event published (64 KiB each).
    pub eventbridge_event: f64,
    /// EventBridge API destinations, per invocation.
    pub eventbridge_api_destination: f64,
}

/// When [`PRICES`] were checked against AWS's pricing pages.
pub const PRICES_AS_OF: &str = "2026-12-05";

/// See [`Prices`].
pub const PRICES: Prices = Prices {
    http_api_request: 1.00e-6,
    lambda_request: 0.20e-6,
    lambda_gb_second_arm64: 0.000_013_333_4,
    sqs_request: 0.40e-6,
    dynamodb_wru: 0.625e-6,
    dynamodb_rru: 0.125e-6,
    kms_request: 0.03 / 10_000.0,
    logs_gb: 0.50,
    eventbridge_event: 1.00e-6,
    eventbridge_api_destination: 0.20e-6,
};

/// The ingest and fanout functions' `MemorySize` in template.yaml (a test holds them
/// equal).
pub const FUNCTION_MEMORY_MB: f64 = 256.0;

/// Lambda's platform records per invocation in the JSON log format (`platform.start`,
/// `platform.report`, ...): assumed, not measured (no Lambda runs here).
pub const PLATFORM_LOG_BYTES_PER_INVOCATION: f64 = 1024.0;

/// API Gateway's access log line per request (the template's format): assumed.
pub const ACCESS_LOG_BYTES_PER_REQUEST: f64 = 512.0;

/// Events per `POST /v2/events` request in the measured run.
const EVENTS_PER_REQUEST: usize = 100;

/// Records per fan-out invocation (the template's `FanoutBatchSize` default).
const BATCH_SIZE: usize = 10;

/// Records per fan-out invocation of a large store's stack: `FanoutBatchSize=100` with
/// `FanoutBatchingWindowSeconds=1` (the event source still receives ten at a time).
const LARGE_BATCH_SIZE: usize = 100;

/// Messages one `ReceiveMessage` (and one `DeleteMessageBatch`) takes at most.
const SQS_BATCH: usize = 10;

/// The size DynamoDB bills for an attribute value in its JSON form.
/// See <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>.
pub fn value_size(v: &Value) -> u64 {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    let number = |n: &str| {
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
        (significant as u64).div_ceil(2) + 1
    };
    let text = |x: &Value| x.as_str().map_or(0, |s| s.len() as u64);
    let binary = |x: &Value| x.as_str().map_or(0, |s| (s.len() as u64 * 3) / 4);
    let each =
        |f: &dyn Fn(&Value) -> u64| inner.as_array().map_or(0, |a| a.iter().map(f).sum::<u64>());
    match kind.as_str() {
        "S" => text(inner),
        "N" => inner.as_str().map_or(0, number),
        "B" => binary(inner),
        "BOOL" | "NULL" => 1,
        "SS" => each(&text),
        "NS" => each(&|x| x.as_str().map_or(0, number)),
        "BS" => each(&binary),
        "L" => 3 + each(&|x| value_size(x) + 1),
        "M" => {
            3 + inner.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, x)| k.len() as u64 + value_size(x) + 1)
                    .sum::<u64>()
            })
        }
        _ => 0,
    }
}

/// An item's size: each attribute's name and value.
pub fn item_size(item: &Value) -> u64 {
    item.as_object().map_or(0, |m| {
        m.iter().map(|(k, v)| k.len() as u64 + value_size(v)).sum()
    })
}

/// What a global secondary index holds of an item.
#[derive(Clone, Debug)]
pub struct Index {
    /// Its key attributes (partition, then sort if any).
    pub keys: Vec<String>,
    /// `None`: every attribute (`ALL`); otherwise the projected non-key attributes.
    pub projected: Option<Vec<String>>,
}

/// A table's key attributes and indexes.
#[derive(Clone, Debug, Default)]
pub struct TableShape {
    /// The primary key's attributes.
    pub keys: Vec<String>,
    /// Its global secondary indexes.
    pub indexes: Vec<Index>,
}

impl TableShape {
    /// Write request units of one write of `item` (its state after the write): the
    /// table's, plus one write per index the item is in, of the entry's size.
    pub fn write_units(&self, item: &Value) -> f64 {
        let units = |bytes: u64| bytes.max(1).div_ceil(1024) as f64;
        let mut total = units(item_size(item));
        let Some(attrs) = item.as_object() else {
            return total;
        };
        for index in &self.indexes {
            if !index.keys.iter().all(|k| attrs.contains_key(k)) {
                continue;
            }
            let entry = match &index.projected {
                None => item_size(item),
                Some(extra) => attrs
                    .iter()
                    .filter(|(k, _)| {
                        self.keys.contains(k) || index.keys.contains(k) || extra.contains(k)
                    })
                    .map(|(k, v)| k.len() as u64 + value_size(v))
                    .sum(),
            };
            total += units(entry);
        }
        total
    }
}

/// Request units, split by what they are for.
#[derive(Debug, Default, Clone)]
pub struct Units {
    /// Write request units by item kind (its `entity` attribute).
    pub writes: BTreeMap<String, f64>,
    /// Items written by kind, and their total size in bytes.
    pub items: BTreeMap<String, (u64, u64)>,
    /// Read request units.
    pub reads: f64,
    /// SQS requests by operation (64 KiB chunks).
    pub sqs: BTreeMap<String, f64>,
    /// KMS requests.
    pub kms: f64,
    /// Calls of any other service or operation not priced here.
    pub other: BTreeMap<String, u64>,
}

fn entity(item: &Value) -> String {
    item["entity"]["S"].as_str().unwrap_or("other").to_owned()
}

/// Prices `calls` by the request units they consume. `tables` gives each table's
/// shape; `after` the items updated in place (`UpdateItem`), as they are after the
/// run, by table and key (their key attributes' JSON).
pub fn units(
    calls: &[Call],
    tables: &HashMap<String, TableShape>,
    after: &HashMap<(String, String), Value>,
) -> Units {
    let mut u = Units::default();
    let empty = TableShape::default();
    let shape = |t: &str| tables.get(t).unwrap_or(&empty);
    let write = |u: &mut Units, table: &str, item: &Value, factor: f64| {
        let kind = entity(item);
        *u.writes.entry(kind.clone()).or_default() += factor * shape(table).write_units(item);
        let seen = u.items.entry(kind).or_default();
        seen.0 += 1;
        seen.1 += item_size(item);
    };
    for call in calls {
        let (rq, rs) = (&call.request, &call.response);
        let table = rq["TableName"].as_str().unwrap_or_default();
        let eventually = |rq: &Value| {
            if rq["ConsistentRead"] == true {
                1.0
            } else {
                0.5
            }
        };
        match (call.service(), call.name()) {
            ("DynamoDB_20120810", "PutItem") => write(&mut u, table, &rq["Item"], 1.0),
            ("DynamoDB_20120810", "UpdateItem") => {
                let key = (table.to_owned(), rq["Key"].to_string());
                let item = after
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| rq["Key"].clone());
                write(&mut u, table, &item, 1.0);
            }
            ("DynamoDB_20120810", "DeleteItem") => {
                *u.writes.entry("deleted".into()).or_default() += 1.0;
            }
            ("DynamoDB_20120810", "BatchWriteItem") => {
                let unprocessed =
                    |t: &str| rs["UnprocessedItems"][t].as_array().map_or(0, Vec::len);
                for (t, requests) in rq["RequestItems"].as_object().into_iter().flatten() {
                    let done = requests
                        .as_array()
                        .map_or(0, |r| r.len().saturating_sub(unprocessed(t)));
                    for r in requests.as_array().into_iter().flatten().take(done) {
                        if r["PutRequest"].is_object() {
                            write(&mut u, t, &r["PutRequest"]["Item"], 1.0);
                        } else {
                            *u.writes.entry("deleted".into()).or_default() += 1.0;
                        }
                    }
                }
            }
            ("DynamoDB_20120810", "TransactWriteItems") => {
                for t in rq["TransactItems"].as_array().into_iter().flatten() {
                    if let Some(put) = t.get("Put") {
                        let table = put["TableName"].as_str().unwrap_or_default();
                        write(&mut u, table, &put["Item"], 2.0);
                    } else if let Some(update) = t.get("Update") {
                        let table = update["TableName"].as_str().unwrap_or_default();
                        let key = (table.to_owned(), update["Key"].to_string());
                        let item = after
                            .get(&key)
                            .cloned()
                            .unwrap_or_else(|| update["Key"].clone());
                        write(&mut u, table, &item, 2.0);
                    } else {
                        *u.writes.entry("transaction other".into()).or_default() += 2.0;
                    }
                }
            }
            ("DynamoDB_20120810", "GetItem") => {
                let bytes = item_size(&rs["Item"]).max(1);
                u.reads += bytes.div_ceil(4096) as f64 * eventually(rq);
            }
            ("DynamoDB_20120810", "Query") => {
                let returned: u64 = rs["Items"]
                    .as_array()
                    .map_or(0, |items| items.iter().map(item_size).sum());
                // Filtered-out items are read too: scale by scanned ÷ returned.
                let (count, scanned) = (rs["Count"].as_f64(), rs["ScannedCount"].as_f64());
                let scale = match (count, scanned) {
                    (Some(c), Some(s)) if c > 0.0 && s > c => s / c,
                    _ => 1.0,
                };
                let bytes = ((returned as f64 * scale) as u64).max(1);
                u.reads += bytes.div_ceil(4096) as f64 * eventually(rq);
            }
            ("AmazonSQS", op) => {
                let chunks = call.request_bytes.max(call.response_bytes).max(1);
                *u.sqs.entry(op.to_owned()).or_default() += chunks.div_ceil(64 * 1024) as f64;
            }
            ("TrentService", _) => u.kms += 1.0,
            _ => *u.other.entry(call.op.clone()).or_default() += 1,
        }
    }
    u
}

/// The table's key attributes and indexes, read from DynamoDB (here: moto).
async fn shape(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<TableShape, String> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| format!("DescribeTable: {e}"))?;
    let t = out.table().ok_or("DescribeTable: no table")?;
    let keys = |k: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
        k.iter().map(|e| e.attribute_name().to_owned()).collect()
    };
    Ok(TableShape {
        keys: keys(t.key_schema()),
        indexes: t
            .global_secondary_indexes()
            .iter()
            .map(|g| Index {
                keys: keys(g.key_schema()),
                projected: match g.projection().and_then(|p| p.projection_type()) {
                    Some(ProjectionType::All) | None => None,
                    Some(_) => Some(
                        g.projection()
                            .map(|p| p.non_key_attributes().to_vec())
                            .unwrap_or_default(),
                    ),
                },
            })
            .collect(),
    })
}

/// DynamoDB's JSON of an SDK item (as the meter records it), for sizing.
fn json_of(item: &HashMap<String, AttributeValue>) -> Value {
    fn one(v: &AttributeValue) -> Value {
        match v {
            AttributeValue::S(s) => json!({"S": s}),
            AttributeValue::N(n) => json!({"N": n}),
            AttributeValue::Bool(b) => json!({"BOOL": b}),
            AttributeValue::Null(_) => json!({"NULL": true}),
            AttributeValue::Ss(v) => json!({"SS": v}),
            AttributeValue::Ns(v) => json!({"NS": v}),
            AttributeValue::L(v) => json!({"L": v.iter().map(one).collect::<Vec<_>>()}),
            AttributeValue::M(m) => {
                json!({"M": m.iter().map(|(k, v)| (k.clone(), one(v))).collect::<serde_json::Map<_, _>>()})
            }
            AttributeValue::B(b) => json!({"B": "x".repeat(b.as_ref().len() * 4 / 3)}),
            _ => Value::Null,
        }
    }
    Value::Object(item.iter().map(|(k, v)| (k.clone(), one(v))).collect())
}

/// The SDK form of a key as the meter recorded it (strings and numbers only).
fn key_of(key: &Value) -> HashMap<String, AttributeValue> {
    key.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let value = if let Some(s) = v["S"].as_str() {
                AttributeValue::S(s.to_owned())
            } else {
                AttributeValue::N(v["N"].as_str()?.to_owned())
            };
            Some((k.clone(), value))
        })
        .collect()
}

/// What one run measured.
struct Run {
    deliveries: usize,
    ingest_invocations: usize,
    fanout_invocations: usize,
    /// Billed milliseconds: each invocation's CPU rounded up to a whole millisecond.
    ingest_billed_ms: f64,
    fanout_billed_ms: f64,
    ingest_cpu_us: f64,
    fanout_cpu_us: f64,
    log_bytes: u64,
}

/// Runs `n` events through ingest and fan-out on moto behind the meter.
#[allow(clippy::too_many_arguments)]
async fn once(
    moto: &Moto,
    meter: &Meter,
    receiver: &Receiver,
    store: &StoreId,
    n: usize,
    run: usize,
    log_bytes: &AtomicU64,
    stdout: MetricsOut,
    batch: usize,
) -> Result<Run, String> {
    let metered = herald_core::aws::local::moto_config(&meter.url)
        .await
        .map_err(|e| e.to_string())?;
    let cache_ttl = Duration::from_millis(PipelineDefaults::LAMBDA.integration_cache_ms as u64);
    let settings = moto.settings();
    let table = settings.table.clone().unwrap_or_default();
    let integrations: Arc<dyn IntegrationStore> = Arc::new(
        DynamoIntegrationStore::from_sdk(&metered, table.clone()).with_vault(Arc::new(Vault::new(
            Arc::new(KmsKeys::from_sdk(
                &metered,
                settings.kms_key_id.clone().unwrap_or_default(),
            )),
        ))),
    );
    let cache = Arc::new(IntegrationCache::new(integrations.clone(), cache_ttl));
    let queue_url = settings.queue_url.clone().unwrap_or_default();
    let queue = Arc::new(SqsJobQueue::from_sdk(&metered, queue_url.clone()));
    // Ingest as the function wires it.
    let ingest = Ingest::new(
        cache.clone(),
        Arc::new(DynamoIdempotency::from_sdk(&metered, table.clone())),
        queue.clone(),
        IngestSettings::default(),
    );
    // The fan-out as the function wires it (its Lambda defaults), on the metered clients.
    let mut components = Components::build(&settings, false)
        .await
        .map_err(|e| e.to_string())?;
    components.integrations = integrations;
    components.cache = cache;
    components.log = Arc::new(DynamoDeliveryLog::from_sdk(
        &metered,
        table,
        settings.log_retention,
    ));
    components.queue = Some(queue);
    let fanout = Arc::new(
        components
            .fanout()
            .map_err(|e| e.to_string())?
            .with_metrics_to(stdout)
            .with_stack(Some("herald".into())),
    );
    // Lambda's event source mapping: receives and deletes on the account's bill too.
    let sqs = aws_sdk_sqs::Client::new(&metered);
    let before = receiver.count().await?;
    let logs0 = log_bytes.load(Ordering::SeqCst);
    let mut r = Run {
        deliveries: 0,
        ingest_invocations: 0,
        fanout_invocations: 0,
        ingest_billed_ms: 0.0,
        fanout_billed_ms: 0.0,
        ingest_cpu_us: 0.0,
        fanout_cpu_us: 0.0,
        log_bytes: 0,
    };
    for k in 0..n.div_ceil(EVENTS_PER_REQUEST) {
        let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
            .map(|i| {
                json!({"id": format!("cost-{run}-{k}-{i}-{}", Uuid::new_v4().simple()),
                       "type": "order.paid", "payload": payload(1024)})
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "data": events })).map_err(|e| e.to_string())?;
        let cpu0 = cpu_time();
        let parsed: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let raw = parsed["data"].as_array().cloned().unwrap_or_default();
        let results = ingest
            .ingest(&raw, Some(store), |i| format!("/data/{i}"))
            .await;
        let cpu = cpu_time().saturating_sub(cpu0);
        r.ingest_invocations += 1;
        r.ingest_cpu_us += cpu.as_secs_f64() * 1e6;
        r.ingest_billed_ms += (cpu.as_secs_f64() * 1e3).ceil().max(1.0);
        if let Some(bad) = results
            .iter()
            .find(|x| x.status != EventStatus::Accepted { jobs: 1 })
        {
            return Err(format!("ingest: {:?}", bad.status));
        }
        // The request's jobs, as the event source hands them out: received ten at a
        // time, invoked `batch` at a time, deleted ten at a time.
        let mut left = EVENTS_PER_REQUEST;
        let mut empty = 0;
        while left > 0 && empty < 50 {
            let mut messages = Vec::new();
            while messages.len() < batch.min(left) && empty < 50 {
                let got = sqs
                    .receive_message()
                    .queue_url(&queue_url)
                    .max_number_of_messages(SQS_BATCH.min(batch) as i32)
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .send()
                    .await
                    .map_err(|e| format!("ReceiveMessage: {e}"))?;
                if got.messages().is_empty() {
                    empty += 1;
                }
                messages.extend(got.messages.unwrap_or_default());
            }
            if messages.is_empty() {
                continue;
            }
            let mut event = SqsEvent::default();
            event.records = messages
                .iter()
                .map(|m| {
                    let mut record = SqsMessage::default();
                    record.message_id = m.message_id().map(str::to_owned);
                    record.receipt_handle = m.receipt_handle().map(str::to_owned);
                    record.body = m.body().map(str::to_owned);
                    for (name, value) in m.attributes().into_iter().flatten() {
                        record
                            .attributes
                            .insert(name.as_str().to_owned(), value.clone());
                    }
                    record
                })
                .collect();
            let cpu0 = cpu_time();
            let answer = herald_fanout::process(&fanout, event, None).await;
            let cpu = cpu_time().saturating_sub(cpu0);
            r.fanout_invocations += 1;
            r.fanout_cpu_us += cpu.as_secs_f64() * 1e6;
            r.fanout_billed_ms += (cpu.as_secs_f64() * 1e3).ceil().max(1.0);
            if !answer.batch_item_failures.is_empty() {
                return Err(format!(
                    "{} records failed",
                    answer.batch_item_failures.len()
                ));
            }
            for chunk in messages.chunks(SQS_BATCH) {
                let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle()?)
                            .build()
                            .ok()
                    })
                    .collect();
                sqs.delete_message_batch()
                    .queue_url(&queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| format!("DeleteMessageBatch: {e}"))?;
            }
            left = left.saturating_sub(messages.len());
            r.deliveries += messages.len();
        }
        if left > 0 {
            return Err(format!(
                "{left} jobs of request {k} never came off the queue"
            ));
        }
    }
    let delivered = receiver.count().await? - before;
    if delivered < r.deliveries {
        return Err(format!(
            "the receiver got {delivered} of {} deliveries",
            r.deliveries
        ));
    }
    r.log_bytes = log_bytes.load(Ordering::SeqCst) - logs0;
    Ok(r)
}

/// The cost table: `runs` runs of 1,000 events.
pub async fn table(
    moto: &Moto,
    receiver: &Receiver,
    runs: usize,
    log_bytes: &AtomicU64,
    stdout: MetricsOut,
    logs: &Path,
) -> Result<String, String> {
    let direct = moto.sdk().clone();
    let settings = moto.settings();
    let table = settings.table.clone().unwrap_or_default();
    let store = StoreId::parse(&format!("cost-{}", Uuid::new_v4().simple())).ok_or("store")?;
    let components = Components::build(&settings, false)
        .await
        .map_err(|e| e.to_string())?;
    // A signed webhook: the secret is decrypted (KMS) once per cache fill.
    crate::throughput::integration(
        components.integrations.as_ref(),
        store.as_str(),
        &receiver.url(),
        Some("whsec-cost-bench-0123456789abcdef"),
    )
    .await?;
    let measure = async |batch: usize, first_run: usize| -> Result<(Units, Vec<Run>), String> {
        let meter = Meter::start(
            &moto.endpoint,
            &logs.join(format!("cost-meter-{batch}.jsonl")),
        )?;
        let n = 1000;
        let mut measured = Vec::new();
        for run in first_run..first_run + runs {
            measured.push(
                once(
                    moto,
                    &meter,
                    receiver,
                    &store,
                    n,
                    run,
                    log_bytes,
                    stdout.clone(),
                    batch,
                )
                .await?,
            );
        }
        let calls = meter.calls()?;
        let client = aws_sdk_dynamodb::Client::new(&direct);
        let mut tables = HashMap::new();
        tables.insert(table.clone(), shape(&client, &table).await?);
        // Items updated in place, as they are now: the size their writes were billed at.
        let mut after = HashMap::new();
        for call in calls.iter().filter(|c| c.name() == "UpdateItem") {
            let t = call.request["TableName"].as_str().unwrap_or_default();
            let key = (t.to_owned(), call.request["Key"].to_string());
            if after.contains_key(&key) {
                continue;
            }
            let got = client
                .get_item()
                .table_name(t)
                .set_key(Some(key_of(&call.request["Key"])))
                .send()
                .await
                .map_err(|e| format!("GetItem: {e}"))?;
            if let Some(item) = got.item() {
                after.insert(key, json_of(item));
            }
        }
        Ok((units(&calls, &tables, &after), measured))
    };
    let (u, measured) = measure(BATCH_SIZE, 0).await?;
    let (large_u, large) = measure(LARGE_BATCH_SIZE, runs).await?;
    let (mut out, _) = report(&u, &measured, BATCH_SIZE);
    let (_, (total, unnamed)) = report(&large_u, &large, LARGE_BATCH_SIZE);
    out.push_str(&format!(
        "\nThe same runs with a large store's settings, `FanoutBatchSize={LARGE_BATCH_SIZE}` and `FanoutBatchingWindowSeconds=1` (fan-out invocations of up to {LARGE_BATCH_SIZE} records, so fewer invocations and fuller log pages; the event source still receives and deletes ten at a time): **${total:.2}** per million deliveries, **${unnamed:.2}** for events sent without ids.\n"
    ));
    Ok(out)
}

/// A per-delivery figure and its price per million deliveries.
struct Line {
    what: String,
    per_delivery: String,
    price: String,
    per_million: f64,
}

/// A per-request (or per-unit) price as the table shows it: dollars per million.
fn per_million(price: f64, unit: &str) -> String {
    format!("{} per million{unit}", dollars(price * 1e6))
}

/// `$0.625`, `$1.00`: up to four decimals, at least two.
fn dollars(x: f64) -> String {
    let text = format!("{x:.4}");
    let trimmed = text.trim_end_matches('0');
    let decimals = trimmed.split('.').nth(1).map_or(0, str::len);
    format!("${trimmed}{}", "0".repeat(2usize.saturating_sub(decimals)))
}

/// The table of `u` and `runs` (invocations of `batch` records), and its totals: all
/// events, and events sent without ids.
fn report(u: &Units, runs: &[Run], batch: usize) -> (String, (f64, f64)) {
    let p = &PRICES;
    let deliveries: usize = runs.iter().map(|r| r.deliveries).sum();
    let d = deliveries.max(1) as f64;
    let sum = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).sum::<f64>();
    let gb = FUNCTION_MEMORY_MB / 1024.0;
    let ingest_inv = sum(&|r| r.ingest_invocations as f64) / d;
    let fanout_inv = sum(&|r| r.fanout_invocations as f64) / d;
    let billed_s = (sum(&|r| r.ingest_billed_ms) + sum(&|r| r.fanout_billed_ms)) / 1e3 / d;
    let ingest_cpu = median(
        runs.iter()
            .map(|r| r.ingest_cpu_us / r.deliveries.max(1) as f64)
            .collect(),
    );
    let fanout_cpu = median(
        runs.iter()
            .map(|r| r.fanout_cpu_us / r.deliveries.max(1) as f64)
            .collect(),
    );
    let log_bytes = sum(&|r| r.log_bytes as f64) / d;
    let invocations = ingest_inv + fanout_inv;
    let logged = log_bytes
        + invocations * PLATFORM_LOG_BYTES_PER_INVOCATION
        + ingest_inv * ACCESS_LOG_BYTES_PER_REQUEST;
    let million = 1e6;
    let mut lines = vec![
        Line {
            what: format!("API Gateway HTTP API requests (`POST /v2/events`, {EVENTS_PER_REQUEST} events each)"),
            per_delivery: format!("{ingest_inv:.3}"),
            price: per_million(p.http_api_request, ""),
            per_million: ingest_inv * p.http_api_request * million,
        },
        Line {
            what: format!("Lambda requests (ingest {ingest_inv:.3}, fan-out {fanout_inv:.3})"),
            per_delivery: format!("{invocations:.3}"),
            price: per_million(p.lambda_request, ""),
            per_million: invocations * p.lambda_request * million,
        },
        Line {
            what: format!(
                "Lambda duration, {FUNCTION_MEMORY_MB:.0} MB arm64: measured CPU per event (ingest {ingest_cpu:.0} µs, fan-out {fanout_cpu:.0} µs), each invocation rounded up to 1 ms"
            ),
            per_delivery: format!("{:.6} GB-s", billed_s * gb),
            price: format!("${:.10} per GB-s", p.lambda_gb_second_arm64),
            per_million: billed_s * gb * p.lambda_gb_second_arm64 * million,
        },
    ];
    for (op, n) in &u.sqs {
        lines.push(Line {
            what: format!("SQS `{op}` (64 KiB chunks)"),
            per_delivery: format!("{:.3}", n / d),
            price: per_million(p.sqs_request, ""),
            per_million: n / d * p.sqs_request * million,
        });
    }
    for (kind, wru) in &u.writes {
        let detail = match u.items.get(kind) {
            Some((count, bytes)) if *count > 0 => {
                format!(", {:.0} B an item", *bytes as f64 / *count as f64)
            }
            _ => String::new(),
        };
        lines.push(Line {
            what: format!("DynamoDB writes: `{kind}` items{detail}, with their index entries"),
            per_delivery: format!("{:.2} WRU", wru / d),
            price: per_million(p.dynamodb_wru, " WRU"),
            per_million: wru / d * p.dynamodb_wru * million,
        });
    }
    lines.push(Line {
        what: "DynamoDB reads (integrations per cache fill, health)".into(),
        per_delivery: format!("{:.4} RRU", u.reads / d),
        price: per_million(p.dynamodb_rru, " RRU"),
        per_million: u.reads / d * p.dynamodb_rru * million,
    });
    lines.push(Line {
        what: "KMS requests (a secret per cache fill)".into(),
        per_delivery: format!("{:.4}", u.kms / d),
        price: format!("{} per 10,000", dollars(p.kms_request * 10_000.0)),
        per_million: u.kms / d * p.kms_request * million,
    });
    lines.push(Line {
        what: format!(
            "CloudWatch Logs: {log_bytes:.0} B of log lines and EMF measured, plus {PLATFORM_LOG_BYTES_PER_INVOCATION:.0} B of platform records an invocation and {ACCESS_LOG_BYTES_PER_REQUEST:.0} B of access log a request (assumed)"
        ),
        per_delivery: format!("{logged:.0} B"),
        price: format!("{} per GB", dollars(p.logs_gb)),
        per_million: logged / 1e9 * p.logs_gb * million,
    });
    let total: f64 = lines.iter().map(|l| l.per_million).sum();
    let single = total - lines[0].per_million - lines[1].per_million
        + (p.http_api_request + p.lambda_request * (1.0 + fanout_inv)) * million;
    // Events sent without an id are named by Herald and take no claim: the same work
    // less the claims' writes.
    let claims =
        u.writes.get("event-claim").copied().unwrap_or_default() / d * p.dynamodb_wru * million;
    let unnamed = total - claims;
    let eventbridge = (p.eventbridge_event + p.eventbridge_api_destination) * million;
    let mut out = format!(
        "{deliveries} deliveries of 1 KiB `order.paid` events to one signed webhook (runs of 1,000), through ingest and fan-out on moto; requests counted on the wire, item sizes from the items written; us-east-1 list prices as of {PRICES_AS_OF} (AWS's pricing pages; first-million free tiers not counted)\n\n| billed for | per delivery | price | $ per million deliveries |\n|---|---:|---|---:|\n"
    );
    for l in &lines {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} |\n",
            l.what, l.per_delivery, l.price, l.per_million
        ));
    }
    out.push_str(&format!(
        "| **Herald, events posted {EVENTS_PER_REQUEST} to a request** | | | **{total:.2}** |\n| Herald, the same events sent without ids (Herald names them, so they take no claim: the total less the `event-claim` writes) | | | {unnamed:.2} |\n| Herald, one event a request (API Gateway and ingest invoked per event) | | | {single:.2} |\n| Amazon EventBridge API destinations, the same work: `PutEvents` ({} events) + invocation ({}); no per-attempt log | | | {eventbridge:.2} |\n\nLambda duration is billed on wall time; this counts CPU only. Each 10 ms a fan-out invocation waits on receivers or DynamoDB adds ${:.3} per million deliveries (batches of {batch}). Not per delivery: KMS key ($1 a month), alarms, the dashboard, and the event source's empty receives when the queue is idle.\n",
        per_million(p.eventbridge_event, ""),
        per_million(p.eventbridge_api_destination, ""),
        10.0 / 1e3 * gb * p.lambda_gb_second_arm64 * fanout_inv * million,
    ));
    if !u.other.is_empty() {
        out.push_str(&format!("\nUnpriced calls: {:?}\n", u.other));
    }
    (out, (total, unnamed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_size_counts_names_strings_and_numbers_as_dynamodb_documents() {
        // "pk" (2) + "STORE#a" (7); "n" (1) + 12345 (5 significant digits: 3 + 1);
        // "ok" (2) + a boolean (1); "m" (1) + a map: 3 + ("k" 1 + "v" 1 + 1).
        let item = json!({
            "pk": {"S": "STORE#a"},
            "n": {"N": "12345"},
            "ok": {"BOOL": true},
            "m": {"M": {"k": {"S": "v"}}},
        });
        assert_eq!(item_size(&item), 9 + 5 + 3 + 7);
    }

    #[test]
    fn a_write_costs_one_unit_a_kilobyte_and_one_more_per_index_it_lands_in() {
        let shape = TableShape {
            keys: vec!["pk".into(), "sk".into()],
            indexes: vec![
                Index {
                    keys: vec!["g1".into()],
                    projected: None,
                },
                Index {
                    keys: vec!["g2".into()],
                    projected: Some(vec![]),
                },
            ],
        };
        let big = "x".repeat(1500);
        let item =
            json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "g1": {"S": "c"}, "body": {"S": big}});
        // 2 units for the table, 2 for the ALL index; not in g2.
        assert_eq!(shape.write_units(&item), 4.0);
        let both = json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "g1": {"S": "c"}, "g2": {"S": "d"}, "body": {"S": big}});
        // Plus one for the keys-only entry of g2.
        assert_eq!(shape.write_units(&both), 5.0);
    }

    #[test]
    fn transactions_count_twice_and_eventually_consistent_queries_half() {
        let shape = TableShape {
            keys: vec!["pk".into()],
            indexes: vec![],
        };
        let tables = HashMap::from([("t".to_owned(), shape)]);
        let call = |op: &str, request: Value, response: Value| Call {
            op: format!("DynamoDB_20120810.{op}"),
            request_bytes: 0,
            response_bytes: 0,
            request,
            response,
        };
        let claim = json!({"pk": {"S": "a"}, "entity": {"S": "event-claim"}});
        let calls = [
            call(
                "TransactWriteItems",
                json!({"TransactItems": [{"Put": {"TableName": "t", "Item": claim}}]}),
                json!({}),
            ),
            call(
                "Query",
                json!({"TableName": "t"}),
                json!({"Items": [{"pk": {"S": "x".repeat(5000)}}], "Count": 1, "ScannedCount": 1}),
            ),
        ];
        let u = units(&calls, &tables, &HashMap::new());
        assert_eq!(u.writes.get("event-claim"), Some(&2.0));
        // 5,002 bytes: two 4 KiB units, halved.
        assert_eq!(u.reads, 1.0);
    }

    #[test]
    fn prices_are_shown_as_the_constants_say() {
        assert_eq!(
            per_million(PRICES.dynamodb_wru, " WRU"),
            "$0.625 per million WRU"
        );
        assert_eq!(
            per_million(PRICES.http_api_request, ""),
            "$1.00 per million"
        );
        assert_eq!(dollars(PRICES.kms_request * 10_000.0), "$0.03");
    }

    #[test]
    fn the_functions_memory_is_the_templates() {
        // The functions an event goes through; the sweeper (a few thousand scheduled
        // runs a month, whatever the traffic) is no part of the cost per delivery.
        let template = include_str!("../../../template.yaml");
        let mut sizes = Vec::new();
        let mut function = "";
        for line in template.lines() {
            if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
                if !name.starts_with(' ') {
                    function = name;
                }
            }
            if let Some(size) = line.trim().strip_prefix("MemorySize: ") {
                sizes.push((function, size.parse::<f64>().ok()));
            }
        }
        let priced: Vec<_> = sizes
            .iter()
            .filter(|(f, _)| ["ApiFunction", "IngestFunction", "FanoutFunction"].contains(f))
            .collect();
        assert_eq!(priced.len(), 3, "{sizes:?}");
        for (function, size) in priced {
            assert_eq!(*size, Some(FUNCTION_MEMORY_MB), "{function}");
        }
    }
}
