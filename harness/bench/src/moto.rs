//! The measurements that need DynamoDB, SQS and KMS: moto on loopback (named by
//! `AWS_ENDPOINT_URL`, which `make bench` starts and sets). Ingest against a raw
//! `SendMessageBatch` loop to the same queue, and the `fanout` bootstrap's peak
//! memory on a 1,000-record batch.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use futures_util::future::join_all;
use herald_core::aws::claims::DynamoIdempotency;
use herald_core::aws::dynamo::DynamoIntegrationStore;
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::config::{Backend, PipelineDefaults, PipelineSettings};
use herald_core::ingest::{EventStatus, Ingest, IngestSettings};
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::StoreId;
use herald_core::wiring::Components;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::lambda::Function;
use crate::stats::{median, ratios, spread};
use crate::throughput::{batches, integration, payload};

/// A fresh table, internal queue (+ DLQ) and KMS key on moto.
pub struct Moto {
    /// The loopback endpoint.
    pub endpoint: String,
    sdk: aws_config::SdkConfig,
    table: String,
    queue_url: String,
    dlq_url: String,
    key: String,
}

impl Moto {
    /// Creates the resources on the moto server at `AWS_ENDPOINT_URL` (refused
    /// unless it is on loopback).
    pub async fn setup() -> Result<Self, String> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .map_err(|_| "AWS_ENDPOINT_URL (moto) is not set".to_owned())?;
        let sdk = herald_core::aws::local::moto_config(&endpoint)
            .await
            .map_err(|e| e.to_string())?;
        let name = format!("bench-{}", Uuid::new_v4().simple());
        let (queue_url, dlq_url) = herald_core::aws::local::bootstrap(&sdk, &name, &name, 6)
            .await
            .map_err(|e| format!("creating the table and queues on moto: {e}"))?;
        let key = "alias/herald-bench".to_owned();
        herald_core::aws::kms::ensure_local_key(&sdk, &key)
            .await
            .map_err(|e| format!("creating the KMS key on moto: {e}"))?;
        Ok(Self {
            endpoint,
            sdk,
            table: name,
            queue_url,
            dlq_url,
            key,
        })
    }

    /// The AWS configuration of moto itself (unmetered).
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    /// The pipeline settings of a function on these resources.
    pub fn settings(&self) -> PipelineSettings {
        let mut s = PipelineSettings::memory();
        s.backend = Backend::Aws;
        s.table = Some(self.table.clone());
        s.queue_url = Some(self.queue_url.clone());
        s.dlq_url = Some(self.dlq_url.clone());
        s.kms_key_id = Some(self.key.clone());
        s.address_guard =
            herald_core::net::guard::AddressGuard::from_list("127.0.0.0/8").expect("a CIDR");
        s
    }

    /// The environment a bootstrap runs with on these resources (loopback only).
    pub fn lambda_env(&self) -> Vec<(String, String)> {
        owned(&[
            ("HERALD_BACKEND", "aws"),
            ("HERALD_TABLE", self.table.as_str()),
            ("HERALD_QUEUE_URL", self.queue_url.as_str()),
            ("HERALD_DLQ_URL", self.dlq_url.as_str()),
            ("HERALD_KMS_KEY_ID", self.key.as_str()),
            ("HERALD_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
    }

    /// The environment of a dev server on moto with a table and queues of its own
    /// (it creates them: `HERALD_CREATE_LOCAL_RESOURCES`).
    pub fn dev_server_env(&self) -> Vec<(String, String)> {
        let name = format!("bench-pipe-{}", Uuid::new_v4().simple());
        let base = self.endpoint.trim_end_matches('/');
        let mut env: Vec<(String, String)> = self
            .lambda_env()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("HERALD_"))
            .collect();
        for (k, v) in [
            ("HERALD_BACKEND", "aws".to_owned()),
            ("HERALD_TABLE", name.clone()),
            ("HERALD_QUEUE_URL", format!("{base}/123456789012/{name}")),
            ("HERALD_DLQ_URL", format!("{base}/123456789012/{name}-dlq")),
            ("HERALD_KMS_KEY_ID", self.key.clone()),
            ("HERALD_CREATE_LOCAL_RESOURCES", "true".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        env
    }

    /// Where the ingest measurement keeps its event claims: a region of moto's with
    /// no other table, a fresh claims table for each measured request, made and
    /// dropped off the clock (so that no request pays for the ones before it).
    fn claims_sdk(&self) -> aws_config::SdkConfig {
        self.sdk
            .to_builder()
            .region(aws_config::Region::new("us-west-2"))
            .build()
    }

    async fn fresh_claims(&self) -> Result<String, String> {
        let name = format!("claims-{}", Uuid::new_v4().simple());
        let client = aws_sdk_dynamodb::Client::new(&self.claims_sdk());
        DynamoIntegrationStore::create_table(&client, &name)
            .await
            .map_err(|e| format!("creating a claims table on moto: {e}"))?;
        Ok(name)
    }

    async fn drop_claims(&self, name: &str) {
        let client = aws_sdk_dynamodb::Client::new(&self.claims_sdk());
        let _ = client.delete_table().table_name(name).send().await;
    }

    /// A new empty queue (moto allows one purge a minute, and its SQS scans the
    /// whole queue on every send, so each measured request gets a fresh queue).
    async fn fresh_queue(&self) -> Result<String, String> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let out = sqs
            .create_queue()
            .queue_name(format!("bench-{}", Uuid::new_v4().simple()))
            .send()
            .await
            .map_err(|e| format!("CreateQueue: {e}"))?;
        out.queue_url()
            .map(str::to_owned)
            .ok_or_else(|| "CreateQueue: no URL".to_owned())
    }
}

/// The environment of a bootstrap when no moto runs: the aws backend with names
/// that are never called at init, and an endpoint on loopback all the same.
pub fn offline_env() -> Vec<(String, String)> {
    owned(&[
        ("HERALD_BACKEND", "aws"),
        ("HERALD_TABLE", "bench-offline"),
        (
            "HERALD_QUEUE_URL",
            "http://127.0.0.1:9/123456789012/bench-offline",
        ),
        (
            "HERALD_DLQ_URL",
            "http://127.0.0.1:9/123456789012/bench-offline-dlq",
        ),
        ("HERALD_KMS_KEY_ID", "alias/herald-bench"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn event(id: String) -> Event {
    Event {
        id,
        kind: "order.paid".into(),
        occurred_at: Utc::now(),
        payload: payload(1024).into(),
    }
}

/// Ingest (validate, claim, route, queue) of `n` events in requests of 100, against
/// a raw loop sending the same job bodies with `SendMessageBatch` (10 per call, the
/// 10 calls of a request's worth in flight together) to the same queue.
pub async fn ingest_table(moto: &Moto, url: &str, runs: usize) -> Result<String, String> {
    // As the ingest function runs: a store's integrations read once per cache TTL.
    let mut settings = moto.settings();
    settings.integration_cache =
        Duration::from_millis(PipelineDefaults::LAMBDA.integration_cache_ms as u64);
    let components = Components::build(&settings, false)
        .await
        .map_err(|e| e.to_string())?;
    let store = StoreId::parse("bench-ingest").ok_or("store")?;
    let target = integration(components.integrations.as_ref(), store.as_str(), url, None).await?;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk);
    let n = 1000usize;
    let claims_client = aws_sdk_dynamodb::Client::new(&moto.claims_sdk());
    let (mut ing, mut raw, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let events: Vec<Value> = (0..n)
            .map(|i| {
                let e = event(format!("ingest-{run}-{i}-{}", Uuid::new_v4().simple()));
                json!({"id": e.id, "type": e.kind, "payload": e.payload})
            })
            .collect();
        // moto's SQS scans the whole queue on every send (its cost grows with the
        // queue's depth), so each request goes to a fresh queue made off the clock:
        // both sides send into an empty queue, as into SQS.
        let mut took = Duration::ZERO;
        for request in events.chunks(100) {
            let queue = Arc::new(SqsJobQueue::from_sdk(&moto.sdk, moto.fresh_queue().await?));
            let claims = moto.fresh_claims().await?;
            let ingest = Ingest::new(
                components.cache.clone(),
                Arc::new(DynamoIdempotency::from_sdk(&moto.claims_sdk(), &claims)),
                queue,
                IngestSettings::default(),
            );
            let started = Instant::now();
            let results = ingest
                .ingest(request, Some(&store), |i| format!("/data/{i}"))
                .await;
            took += started.elapsed();
            moto.drop_claims(&claims).await;
            if let Some(bad) = results
                .iter()
                .find(|r| r.status != EventStatus::Accepted { jobs: 1 })
            {
                return Err(format!("ingest: {:?}", bad.status));
            }
        }
        let ingest_rate = n as f64 / took.as_secs_f64();

        let bodies: Vec<String> = (0..n)
            .map(|i| {
                DeliveryJob::new(
                    &store,
                    target.id,
                    event(format!("raw-{run}-{i}")),
                    Utc::now(),
                )
                .to_body()
            })
            .collect();
        let mut took = Duration::ZERO;
        for request in bodies.chunks(100) {
            let queue = moto.fresh_queue().await?;
            let started = Instant::now();
            let sent = send_all(&sqs, &queue, request).await;
            took += started.elapsed();
            sent?;
        }
        let raw_rate = n as f64 / took.as_secs_f64();

        // The calls an ingest cannot do without, made directly: the request's claims
        // (the items and condition ingest writes), then its sends.
        let mut took = Duration::ZERO;
        for (k, request) in bodies.chunks(100).enumerate() {
            let queue = moto.fresh_queue().await?;
            let claims = moto.fresh_claims().await?;
            let ids: Vec<String> = (0..request.len())
                .map(|i| format!("both-{run}-{k}-{i}"))
                .collect();
            let started = Instant::now();
            let claimed = claim_all(&claims_client, &claims, &store, &ids).await;
            let sent = send_all(&sqs, &queue, request).await;
            took += started.elapsed();
            moto.drop_claims(&claims).await;
            claimed?;
            sent?;
        }
        let both_rate = n as f64 / took.as_secs_f64();
        if run > 0 {
            ing.push(ingest_rate);
            raw.push(raw_rate);
            both.push(both_rate);
        }
    }
    Ok(format!(
        "| ingest on moto, {n} events of 1 KiB in requests of 100 (each into a fresh queue and claims table) | events/s |\n|---|---|\n| raw `SendMessageBatch` loop (10 per call, a request's 10 calls at once) | {} |\n| raw claims and sends: the request's claims (conditional `PutItem`s, all at once), then its `SendMessageBatch` calls | {} |\n| ingest (validate, claim the id, route, queue) | {} |\n| **ratio** ingest ÷ raw | **{}** |\n| ceiling: raw claims and sends ÷ raw | {} |\n| ingest ÷ raw claims and sends | {} |\n\nmedian (min–max) of the runs after a warm-up; the claims are the contract's idempotency (an event id is taken once within 24 h), so the ceiling is the most the ratio can be on moto\n",
        spread(&raw, 0),
        spread(&both, 0),
        spread(&ing, 0),
        spread(&ratios(&ing, &raw), 2),
        spread(&ratios(&both, &raw), 2),
        spread(&ratios(&ing, &both), 2),
    ))
}

/// `bodies` sent to `queue`, 10 per `SendMessageBatch`, all the calls at once.
async fn send_all(sqs: &aws_sdk_sqs::Client, queue: &str, bodies: &[String]) -> Result<(), String> {
    let calls = bodies.chunks(10).map(|entries| {
        let mut call = sqs.send_message_batch().queue_url(queue);
        for (k, body) in entries.iter().enumerate() {
            if let Ok(entry) = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(k.to_string())
                .message_body(body)
                .build()
            {
                call = call.entries(entry);
            }
        }
        call.send()
    });
    for out in join_all(calls).await {
        let out = out.map_err(|e| format!("SendMessageBatch: {e}"))?;
        if !out.failed().is_empty() {
            return Err("SendMessageBatch: failed entries".into());
        }
    }
    Ok(())
}

/// `ids` of `store` claimed in `table`, each its own conditional `PutItem`, all at once:
/// the requests Herald's ingest sends (`DynamoIdempotency::claim_request`: its items and
/// condition, for its TTL), and none of its handling around them.
async fn claim_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    store: &StoreId,
    ids: &[String],
) -> Result<(), String> {
    let (now, ttl) = (Utc::now(), IngestSettings::default().idempotency_ttl);
    let puts = ids
        .iter()
        .map(|id| DynamoIdempotency::claim_request(client, table, store, id, now, ttl).send());
    for out in join_all(puts).await {
        out.map_err(|e| format!("PutItem: {e}"))?;
    }
    Ok(())
}

/// The `fanout` bootstrap's peak RSS on one batch of `records` webhook jobs (1 KiB
/// each) delivered to the receiver at `url`, with DynamoDB, SQS and KMS on moto.
pub async fn batch_peak(
    moto: &Moto,
    dir: &Path,
    url: &str,
    records: usize,
    runs: usize,
    logs: &Path,
) -> Result<(Vec<f64>, usize), String> {
    let components = Components::build(&moto.settings(), false)
        .await
        .map_err(|e| e.to_string())?;
    let target = integration(components.integrations.as_ref(), "bench-batch", url, None).await?;
    let fanout = Function::at(dir, "fanout", moto.lambda_env());
    let mut peaks = Vec::new();
    for run in 0..runs {
        let mut event = SqsEvent::default();
        event.records = batches(&target, 1024, records, records, run + 5000)
            .into_iter()
            .flat_map(|b| b.records)
            .collect();
        let now = Utc::now().timestamp_millis().to_string();
        for r in &mut event.records {
            r.attributes.insert("SentTimestamp".into(), now.clone());
        }
        let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        let (response, peak_kb) = fanout.invoke(body, logs, Duration::from_secs(120)).await?;
        let answer: Value = serde_json::from_slice(&response).map_err(|e| e.to_string())?;
        let failed = answer["batchItemFailures"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(usize::MAX);
        if failed != 0 {
            return Err(format!("{failed} of {records} records failed: {answer}"));
        }
        peaks.push(peak_kb as f64 / 1024.0);
    }
    Ok((peaks, records))
}

/// The peak RSS line for the report.
pub fn peak_line(peaks: &[f64], records: usize) -> String {
    format!(
        "| `fanout` bootstrap, one batch of {records} webhook records (1 KiB) | peak RSS {} MB (VmHWM; median {:.1}) |\n",
        spread(peaks, 1),
        median(peaks.to_vec())
    )
}
