//! R_tput, R_sign, CPU per event and open-loop latency: the fan-out handler (the
//! `fanout` function's code, attempts logged with its DynamoDB adapter to the
//! receiver, one batch of `concurrency` records at a time) against a raw reqwest loop
//! posting the very bodies the fan-out sends to the same receiver at the same
//! concurrency, side by side in one run, on a current-thread runtime as in the
//! functions. A second table splits the CPU per event (batch barrier, embedded log,
//! the function's log).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use herald_core::aws::attempt_log::DynamoDeliveryLog;
use herald_core::config::{PipelineDefaults, PipelineSettings};
use herald_core::fanout::Fanout;
use herald_core::job::{DeliveryJob, Event};
use herald_core::metrics::MetricsOut;
use herald_core::model::{Integration, Secret, StoreId, Target, WebhookConfig};
use herald_core::ports::{InsertOutcome, IntegrationStore};
use herald_core::wiring::Components;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::stats::{cpu_time, median, quantile, ratios, spread};

/// One measurement: events per second and CPU per event.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rate: f64,
    cpu_us: f64,
}

/// Runs `work` (`n` events) and measures its rate and its CPU per event.
async fn timed(
    n: usize,
    work: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Sample, String> {
    let cpu0 = cpu_time();
    let started = Instant::now();
    work.await?;
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64();
    Ok(Sample {
        rate: n as f64 / wall,
        cpu_us: cpu * 1e6 / n as f64,
    })
}

/// The raw baseline: `concurrency` tasks posting `bodies`, each once, until all are
/// done. Each body is handed to reqwest as it is, without a copy.
async fn raw_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
) -> Result<Sample, String> {
    let n = bodies.len();
    let next = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    timed(n, async {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let body = next.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(body) = body else { break };
                    post(&client, &url, body).await?;
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    })
    .await
}

/// The raw loop with the handler's batch semantics: `concurrency` posts at a time,
/// all of them finished before the next `concurrency` start (as one invocation of
/// the fan-out delivers its batch before the next batch comes). Isolates what the
/// batch barrier costs from what the handler's own work costs.
async fn raw_batches(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
) -> Result<Sample, String> {
    // An invocation-shaped loop whose batches have no log requests.
    let batches = bodies.len().div_ceil(concurrency.max(1));
    raw_invocations(client, url, bodies, vec![Vec::new(); batches], concurrency).await
}

/// The raw loop shaped as an invocation of the function: [`raw_batches`], and after
/// each batch the requests of its attempt log (the very `BatchWriteItem` JSON the
/// function's log sends for those deliveries, built beforehand, as many requests and
/// as many at once as the log sends them), posted with reqwest to the same receiver.
/// What any handler with the function's duties (deliver the batch, then persist its
/// attempts) spends at the least: the ceiling of R_tput, measured.
async fn raw_invocations(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<Vec<u8>>,
    logs: Vec<Vec<Vec<u8>>>,
    concurrency: usize,
) -> Result<Sample, String> {
    use futures_util::StreamExt;
    let n = bodies.len();
    let mut bodies = bodies.into_iter();
    let log_url = root(url).to_owned();
    timed(n, async {
        for requests in logs {
            let batch: futures_util::stream::FuturesUnordered<_> = bodies
                .by_ref()
                .take(concurrency)
                .map(|body| post(client, url, body))
                .collect();
            let results: Vec<Result<(), String>> = batch.collect().await;
            results.into_iter().collect::<Result<(), String>>()?;
            let writes: Vec<Result<(), String>> = futures_util::stream::iter(requests)
                .map(|body| log_post(client, &log_url, body))
                .buffer_unordered(herald_core::aws::batch_write::REQUESTS_IN_FLIGHT)
                .collect()
                .await;
            writes.into_iter().collect::<Result<(), String>>()?;
        }
        Ok(())
    })
    .await
}

/// One `BatchWriteItem` request's JSON posted to the receiver, its answer read.
async fn log_post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    post_with(client, url, BATCH_WRITE, body).await
}

/// The headers of a webhook POST and of a `BatchWriteItem` request.
const WEBHOOK: &[(&str, &str)] = &[("content-type", "application/json")];
const BATCH_WRITE: &[(&str, &str)] = &[
    ("content-type", "application/x-amz-json-1.0"),
    ("x-amz-target", "DynamoDB_20120810.BatchWriteItem"),
];

/// The attempt log's requests per batch for `batches`, as the function's log builds
/// them for deliveries that succeeded at the first attempt: what the invocation-shaped
/// raw loop posts after each batch.
fn log_bodies_of(batches: &[SqsEvent], log: &DynamoDeliveryLog, table: &str) -> Vec<Vec<Vec<u8>>> {
    use herald_core::attempt::{log_entry, JobStatus};
    use herald_core::aws::batch_write::{request_body, ITEMS_PER_REQUEST};
    let result = delivered();
    batches
        .iter()
        .map(|b| {
            let entries: Vec<_> = b
                .records
                .iter()
                .filter_map(|m| DeliveryJob::parse(m.body.as_deref()?).ok())
                .map(|job| log_entry(&job, 1, JobStatus::Delivered, &result))
                .collect();
            log.put_items(&entries)
                .chunks(ITEMS_PER_REQUEST)
                .map(|chunk| request_body(table, chunk))
                .collect()
        })
        .collect()
}

/// The webhook bodies the fan-out sends for `batches`: what the raw loop posts.
fn bodies_of(batches: &[SqsEvent], integration: &Integration) -> Vec<Vec<u8>> {
    batches
        .iter()
        .flat_map(|b| &b.records)
        .filter_map(|m| DeliveryJob::parse(m.body.as_deref()?).ok())
        .map(|job| herald_core::delivery::envelope::webhook_body(&job, integration, 1))
        .collect()
}

/// The fan-out handler: batches of `concurrency` records (one invocation at a time,
/// each delivering its records concurrently), `n` records in all.
async fn fanout_run(
    fanout: &Arc<Fanout>,
    batches: Vec<SqsEvent>,
    n: usize,
) -> Result<Sample, String> {
    timed(n, async {
        for batch in batches {
            let response = herald_fanout::process(fanout, batch, None).await;
            if !response.batch_item_failures.is_empty() {
                return Err(format!(
                    "{} records failed",
                    response.batch_item_failures.len()
                ));
            }
        }
        Ok(())
    })
    .await
}

/// An event payload of about `size` bytes.
pub fn payload(size: usize) -> serde_json::Value {
    serde_json::json!({"data": {"type": "order", "id": "o-1", "note": "x".repeat(size)}})
}

/// SQS batches of `concurrency` jobs for `integration`, `n` jobs in all, each event
/// padded so that the webhook body is about `size` bytes.
pub fn batches(
    integration: &Integration,
    size: usize,
    n: usize,
    concurrency: usize,
    run: usize,
) -> Vec<SqsEvent> {
    let jobs: Vec<SqsMessage> = (0..n)
        .map(|i| {
            let event = Event {
                id: format!("bench-{run}-{i}"),
                kind: "order.paid".into(),
                occurred_at: Utc::now(),
                payload: payload(size).into(),
            };
            let job = DeliveryJob::new(&integration.store_id, integration.id, event, Utc::now());
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("m-{run}-{i}"));
            m.receipt_handle = Some(format!("r-{run}-{i}"));
            m.body = Some(job.to_body());
            m.attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            m
        })
        .collect();
    jobs.chunks(concurrency)
        .map(|c| {
            let mut e = SqsEvent::default();
            e.records = c.to_vec();
            e
        })
        .collect()
}

/// A webhook integration of `store` observing `order.paid`, to `url`.
pub(crate) fn webhook(store: &str, url: &str, secret: Option<&str>) -> Result<Integration, String> {
    let now = Utc::now();
    Ok(Integration {
        id: Uuid::now_v7(),
        store_id: StoreId::parse(store).ok_or("store id")?,
        name: "bench".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["order.paid".into()],
        target: Target::Webhook(WebhookConfig {
            url: url.to_owned(),
            secret_key: secret.map(Secret::new),
            retiring: None,
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        delivery: Default::default(),
    })
}

/// [`webhook`], inserted into `into`.
pub async fn integration(
    into: &dyn IntegrationStore,
    store: &str,
    url: &str,
    secret: Option<&str>,
) -> Result<Integration, String> {
    let i = webhook(store, url, secret)?;
    match into.insert(&i, 100).await {
        Ok(InsertOutcome::Inserted) => Ok(i),
        other => Err(format!("inserting the integration: {other:?}")),
    }
}

/// The webhook body the fan-out sends `integration` for an event of about `size`
/// bytes: what the raw loop posts.
fn sample_body(integration: &Integration, size: usize) -> Arc<Vec<u8>> {
    let job = DeliveryJob::new(
        &integration.store_id,
        integration.id,
        Event {
            id: "bench".into(),
            kind: "order.paid".into(),
            occurred_at: Utc::now(),
            payload: payload(size).into(),
        },
        Utc::now(),
    );
    Arc::new(herald_core::delivery::envelope::webhook_body(
        &job,
        integration,
        1,
    ))
}

/// One webhook POST of `body` to `url`, its answer read to the end.
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    post_with(client, url, WEBHOOK, body).await
}

/// One POST of `body` to `url` with `headers`, its answer read to the end.
async fn post_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(), String> {
    let mut request = client.post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let res = request.body(body).send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("receiver answered {}", res.status()));
    }
    let _ = res.bytes().await;
    Ok(())
}

/// A prepared single-record batch per arrival, for the open-loop runs.
fn single_batches(integration: &Integration, n: usize, tag: &str) -> Vec<SqsEvent> {
    batches(integration, 1024, n, 1, 0)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            // Unique event ids per run, so every arrival is a new job.
            for r in &mut e.records {
                r.message_id = Some(format!("{tag}-{i}"));
            }
            e
        })
        .collect()
}

/// Most arrivals of an open loop in flight at once, on either side: a sender's bounded
/// pool of connections. An arrival that finds them all busy waits for one, and that
/// wait counts in its latency.
const OPEN_LOOP_IN_FLIGHT: usize = 256;

/// Open-loop arrivals at `rate` per second for `n` arrivals: arrival `i` is due at
/// `start + i / rate` whether or not earlier ones are done, and its latency counts
/// from when it was due (no coordinated omission). Returns latencies in ms.
async fn open_loop<F, Fut>(rate: f64, n: usize, start: F) -> Result<Vec<f64>, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let slots = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let work = start(i);
        let slots = slots.clone();
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            work.await?;
            Ok::<f64, String>(due.elapsed().as_secs_f64() * 1e3)
        });
    }
    let mut latencies = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.map_err(|e| e.to_string())??);
    }
    Ok(latencies)
}

/// What the runs share: the fan-out as the function runs it, the same handler with
/// the embedded log, a webhook integration (unsigned) and one signed with a fixture
/// secret, both to the receiver, and a plain reqwest client.
struct Setup {
    /// The function's fan-out: attempts logged with the DynamoDB adapter (to the
    /// receiver's BatchWriteItem answer, so the log costs what it costs the function
    /// on the client side, with no DynamoDB behind it to wait on).
    function: Arc<Fanout>,
    /// The dev server's fan-out: attempts kept in the embedded log (100,000 of them).
    embedded: Arc<Fanout>,
    unsigned: Integration,
    signed: Integration,
    client: reqwest::Client,
    /// The function's log adapter, also to build the requests the invocation-shaped
    /// raw loop posts (those are built beforehand and posted with reqwest).
    items: Arc<DynamoDeliveryLog>,
}

/// The table the function's log writes to (the receiver answers for any).
const LOG_TABLE: &str = "bench-log";

/// The receiver's root URL (without the webhook path): where the log's requests go.
fn root(url: &str) -> &str {
    url.trim_end_matches("/hook")
}

async fn setup(url: &str, stdout: MetricsOut) -> Result<Setup, String> {
    let mut settings = PipelineSettings::memory();
    settings.webhook_timeout = Duration::from_secs(10);
    // The function's integration cache (the embedded default has none, so that the dev
    // server sees every change at once): the fanout function reads a store's
    // integrations once per TTL, not once per batch.
    settings.integration_cache =
        Duration::from_millis(PipelineDefaults::LAMBDA.integration_cache_ms as u64);
    let mut components = Components::build(&settings, false)
        .await
        .map_err(|e| e.to_string())?;
    let embedded = Arc::new(components.fanout().map_err(|e| e.to_string())?);
    // A loopback-only AWS configuration (refuses anything else), at the receiver.
    let sdk = herald_core::aws::local::moto_config(root(url))
        .await
        .map_err(|e| e.to_string())?;
    let items = Arc::new(DynamoDeliveryLog::from_sdk(
        &sdk,
        LOG_TABLE,
        settings.log_retention,
    ));
    components.log = items.clone();
    let function = Arc::new(
        components
            .fanout()
            .map_err(|e| e.to_string())?
            // Its EMF records per batch (HERALD_EMF_METRICS is on in Lambda), to its
            // stdout: the log sink's pipe, beside its log lines; named by stack, as
            // the template's HERALD_STACK_NAME does.
            .with_metrics_to(stdout)
            .with_stack(Some("herald".into())),
    );
    let store = components.integrations.as_ref();
    let unsigned = integration(store, "bench", url, None).await?;
    let signed = integration(store, "bench", url, Some(SECRET)).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Setup {
        function,
        embedded,
        unsigned,
        signed,
        client,
        items,
    })
}

/// The throughput tables, for the receiver at `url`: R_tput and R_sign, then where
/// the fan-out's CPU per event goes. The function's EMF records go to `stdout`.
pub async fn run(url: String, runs: usize, stdout: MetricsOut) -> Result<String, String> {
    let url = url.as_str();
    let Setup {
        function,
        embedded,
        unsigned,
        signed,
        client,
        items,
    } = setup(url, stdout).await?;
    let mut table = String::from(
        "| body | concurrency | raw loop (events/s) | fan-out (events/s) | R_tput | fan-out signed (events/s) | R_sign | R_sign's ceiling | CPU/event raw (µs) | CPU/event fan-out (µs) | CPU ratio |\n|---|---:|---:|---:|---|---:|---|---|---:|---:|---:|\n",
    );
    let mut parts = String::from(
        "| body | concurrency | raw loop | raw loop, one batch at a time | raw loop as an invocation | fan-out, embedded log | fan-out (the function's log) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut bounds = String::from(
        "| body | concurrency | raw loop, one batch at a time ÷ raw loop | **ceiling**: raw loop as an invocation ÷ raw loop | fan-out ÷ raw loop as an invocation | R_tput with the embedded log | fan-out, embedded log ÷ raw loop, one batch at a time |\n|---|---:|---|---|---|---|---|\n",
    );
    // HERALD_BENCH_TPUT=16384x64,1024x10 runs only those (size x concurrency): for
    // profiling one of them.
    let picked = std::env::var("HERALD_BENCH_TPUT").unwrap_or_default();
    let wanted = |size: usize, concurrency: usize| {
        picked.is_empty()
            || picked
                .split(',')
                .any(|p| p.trim() == format!("{size}x{concurrency}"))
    };
    for size in [1024usize, 16 * 1024] {
        for concurrency in [10usize, 64] {
            if !wanted(size, concurrency) {
                continue;
            }
            let n = if size > 4096 { 5_000 } else { 10_000 };
            let (mut raw, mut barrier, mut shaped, mut plain, mut sign, mut kept) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            // Run 0 warms up (connections, allocator) and is not counted. Every run
            // has jobs of its own (new event ids).
            for run in 0..=runs {
                let jobs =
                    |k: usize, to: &Integration| batches(to, size, n, concurrency, 10 * run + k);
                // The raw loops post the very bodies the fan-out sends for these jobs.
                let first = jobs(0, &unsigned);
                let bodies = bodies_of(&first, &unsigned);
                let logs = log_bodies_of(&first, &items, LOG_TABLE);
                let r = raw_loop(&client, url, bodies.clone(), concurrency).await?;
                let b = raw_batches(&client, url, bodies.clone(), concurrency).await?;
                let i = raw_invocations(&client, url, bodies, logs, concurrency).await?;
                let f = fanout_run(&function, jobs(1, &unsigned), n).await?;
                let s = fanout_run(&function, jobs(2, &signed), n).await?;
                let e = fanout_run(&embedded, jobs(3, &unsigned), n).await?;
                if run > 0 {
                    raw.push(r);
                    barrier.push(b);
                    shaped.push(i);
                    plain.push(f);
                    sign.push(s);
                    kept.push(e);
                }
            }
            let rate = |v: &[Sample]| v.iter().map(|s| s.rate).collect::<Vec<_>>();
            let cpu = |v: &[Sample]| median(v.iter().map(|s| s.cpu_us).collect());
            let (cpu_raw, cpu_fan) = (cpu(&raw), cpu(&plain));
            // What a signature cannot cost less than: its HMAC over the body, per run
            // beside the unsigned fan-out's CPU of that run.
            let hmac = hmac_us(
                &bodies_of(&batches(&signed, size, 1, 1, 0), &signed)[0],
                runs,
            );
            let ceilings: Vec<f64> = plain.iter().map(|p| p.cpu_us / (p.cpu_us + hmac)).collect();
            table.push_str(&format!(
                "| {} KiB | {concurrency} | {:.0} | {:.0} | **{}** | {:.0} | **{}** | {} | {cpu_raw:.0} | {cpu_fan:.0} | {:.2} |\n",
                size / 1024,
                median(rate(&raw)),
                median(rate(&plain)),
                spread(&ratios(&rate(&plain), &rate(&raw)), 2),
                median(rate(&sign)),
                spread(&ratios(&rate(&sign), &rate(&plain)), 2),
                spread(&ceilings, 2),
                cpu_fan / cpu_raw.max(1e-9),
            ));
            parts.push_str(&format!(
                "| {} KiB | {concurrency} | {cpu_raw:.0} | {:.0} | {:.0} | {:.0} | {cpu_fan:.0} |\n",
                size / 1024,
                cpu(&barrier),
                cpu(&shaped),
                cpu(&kept),
            ));
            bounds.push_str(&format!(
                "| {} KiB | {concurrency} | {} | **{}** | {} | {} | {} |\n",
                size / 1024,
                spread(&ratios(&rate(&barrier), &rate(&raw)), 2),
                spread(&ratios(&rate(&shaped), &rate(&raw)), 2),
                spread(&ratios(&rate(&plain), &rate(&shaped)), 2),
                spread(&ratios(&rate(&kept), &rate(&raw)), 2),
                spread(&ratios(&rate(&kept), &rate(&barrier)), 2),
            ));
        }
    }
    table.push_str(
        "\nmedian of the runs after a warm-up (min–max of the per-run ratios); fan-out = the fanout function's handler as the function runs it (posting with Herald's HTTP client on hyper), attempts logged with its DynamoDB adapter, one batch of `concurrency` records at a time; raw loop = `concurrency` tasks posting with reqwest the very bodies the fan-out sends for the same jobs, each once, without a copy; both on a current-thread runtime, as the functions run; R_sign = signed ÷ unsigned fan-out; R_sign's ceiling = the unsigned fan-out's CPU per event ÷ (that + the signature alone: `signing::sign`, HMAC-SHA-256 over the body and base64, measured here), per run: what R_sign can be when CPU-bound, however the rest is done\n\n",
    );
    table.push_str(&bounds);
    table.push_str(
        "\nevents/s ratios of the same runs, median (min–max of the per-run ratios). Raw loop, one batch at a time = the raw loop posting `concurrency` bodies and waiting for all of them before the next, as an invocation delivers its batch; raw loop as an invocation = that, and after each batch the requests of its attempt log (the function's `BatchWriteItem` JSON for those deliveries, built beforehand) posted with reqwest: the least any handler with the function's duties does, so its ratio to the raw loop is the most R_tput can be; fan-out ÷ it = what Herald's own code costs\n\n",
    );
    table.push_str(&parts);
    table.push_str(
        "\nCPU per event in µs, medians of the same runs; fan-out, embedded log = the handler with the dev server's in-memory log (100,000 attempts kept) instead of the DynamoDB adapter; the function's log = BatchWriteItem requests (25 items, one per delivery: its attempt and its job state) answered at once by the receiver\n",
    );
    Ok(table)
}

/// Open-loop p50/p99 at half the raw loop's best 1 KiB rate (measured here, at
/// concurrency 10 and 64), raw loop vs fan-out handler (its EMF records to `stdout`).
pub async fn latency(url: String, runs: usize, stdout: MetricsOut) -> Result<String, String> {
    let url = url.as_str();
    let Setup {
        function: fanout,
        unsigned,
        client,
        ..
    } = setup(url, stdout).await?;
    let mut table = String::new();
    let body = sample_body(&unsigned, 1024);
    let mut raw_max = 0f64;
    for (k, concurrency) in [10, 64, 10, 64].into_iter().enumerate() {
        let jobs = batches(&unsigned, 1024, 20_000, concurrency, 80_000 + k);
        let r = raw_loop(&client, url, bodies_of(&jobs, &unsigned), concurrency).await?;
        raw_max = raw_max.max(r.rate);
    }
    // Open loop at half the raw loop's best 1 KiB rate (the point), and at a
    // quarter; each arrival is one POST (raw) or one single-record batch through the
    // handler (fan-out).
    table.push_str(&format!(
        "| open loop, 1 KiB (raw loop's best: {raw_max:.0}/s) | arrivals/s | p50 (ms) | p99 (ms) |\n|---|---:|---|---|\n"
    ));
    for share in [2.0, 4.0] {
        let rate = (raw_max / share).max(100.0);
        let arrivals = ((rate * 2.0) as usize).clamp(200, 40_000);
        let (mut raw50, mut raw99, mut fan50, mut fan99) = (vec![], vec![], vec![], vec![]);
        for run in 0..=runs {
            // Warm connections for both (the pools keep them).
            let warm = batches(&unsigned, 1024, 2_000, 64, 70_000 + run);
            raw_loop(&client, url, bodies_of(&warm, &unsigned), 64).await?;
            let (c, u, b) = (client.clone(), url.to_owned(), body.clone());
            let mut raw = open_loop(rate, arrivals, move |_| {
                let (c, u, b) = (c.clone(), u.clone(), b.clone());
                async move { post(&c, &u, b.to_vec()).await }
            })
            .await?;
            fanout_run(
                &fanout,
                batches(&unsigned, 1024, 2_000, 64, 90_000 + run),
                2_000,
            )
            .await?;
            let prepared = Arc::new(std::sync::Mutex::new(
                single_batches(&unsigned, arrivals, &format!("lat-{share}-{run}"))
                    .into_iter()
                    .map(Some)
                    .collect::<Vec<_>>(),
            ));
            let failures = Arc::new(AtomicUsize::new(0));
            let (f, p, fails) = (fanout.clone(), prepared.clone(), failures.clone());
            let mut fan = open_loop(rate, arrivals, move |i| {
                let batch = p
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_default();
                let (f, fails) = (f.clone(), fails.clone());
                async move {
                    let response = herald_fanout::process(&f, batch, None).await;
                    fails.fetch_add(response.batch_item_failures.len(), Ordering::Relaxed);
                    Ok(())
                }
            })
            .await?;
            if failures.load(Ordering::Relaxed) > 0 {
                return Err("records failed in the latency run".into());
            }
            if run > 0 {
                raw50.push(quantile(&mut raw, 0.5));
                raw99.push(quantile(&mut raw, 0.99));
                fan50.push(quantile(&mut fan, 0.5));
                fan99.push(quantile(&mut fan, 0.99));
            }
        }
        table.push_str(&format!(
            "| raw loop (one POST per arrival) | {rate:.0} | {} | {} |\n| fan-out (one single-record batch per arrival) | {rate:.0} | {} | {} |\n",
            spread(&raw50, 2),
            spread(&raw99, 2),
            spread(&fan50, 2),
            spread(&fan99, 2),
        ));
    }
    table.push_str("\nlatency counts from each arrival's due time (no coordinated omission), 2 s of arrivals per run; median (min–max) of the runs\n");
    Ok(table)
}

/// The signed integration's secret: a fixture in Standard Webhooks' format, made for
/// this bench.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// µs of one Standard Webhooks signature of `body` (its HMAC-SHA-256 and base64),
/// median of `runs` rounds of 2,000 after a warm-up round.
fn hmac_us(body: &[u8], runs: usize) -> f64 {
    let mut rounds: Vec<f64> = (0..=runs.max(1))
        .map(|_| {
            let started = Instant::now();
            for _ in 0..2_000 {
                std::hint::black_box(herald_core::signing::sign(SECRET, "msg", 1, body));
            }
            started.elapsed().as_secs_f64() * 1e6 / 2_000.0
        })
        .collect();
    rounds.remove(0);
    median(rounds)
}

/// The handler's own work per event, without any I/O: what the fan-out does that a
/// raw loop posting a prepared body does not (µs per event, median of the runs).
pub fn work_table(runs: usize) -> Result<String, String> {
    use herald_core::attempt::{log_entry, JobStatus};
    let now = Utc::now();
    let i = webhook("bench", "http://127.0.0.1:9/hook", None)?;
    let mut out = String::from(
        "| body | parse the queued job | build the webhook body | sign it | log entry | its DynamoDB item | total |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    // The function's log, only to build its items (nothing is sent).
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let log = DynamoDeliveryLog::from_sdk(&sdk, "bench-log", Duration::from_secs(86_400));
    for size in [1024usize, 16 * 1024] {
        let n = 5_000;
        let job = DeliveryJob::new(
            &i.store_id,
            i.id,
            Event {
                id: "work".into(),
                kind: "order.paid".into(),
                occurred_at: now,
                payload: payload(size).into(),
            },
            now,
        );
        let text = job.to_body();
        let body = herald_core::delivery::envelope::webhook_body(&job, &i, 1);
        let result = delivered();
        let time = |f: &dyn Fn()| {
            let mut per = Vec::new();
            for _ in 0..=runs {
                let started = Instant::now();
                for _ in 0..n {
                    f();
                }
                per.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
            }
            per.remove(0);
            median(per)
        };
        let parse = time(&|| {
            std::hint::black_box(DeliveryJob::parse(std::hint::black_box(&text)).is_ok());
        });
        let build = time(&|| {
            std::hint::black_box(herald_core::delivery::envelope::webhook_body(&job, &i, 1));
        });
        let sign = hmac_us(&body, runs);
        let record = time(&|| {
            std::hint::black_box(log_entry(&job, 1, JobStatus::Delivered, &result));
        });
        let entries = [log_entry(&job, 1, JobStatus::Delivered, &result)];
        let items = time(&|| {
            std::hint::black_box(log.put_items(&entries));
        });
        out.push_str(&format!(
            "| {} KiB | {parse:.1} | {build:.1} | {sign:.1} | {record:.1} | {items:.1} | {:.1} |\n",
            size / 1024,
            parse + build + sign + record + items
        ));
    }
    out.push_str("\nµs per event on one thread, median of the runs; compare with the CPU/event columns above\n");
    Ok(out)
}

/// What the function's log costs per write: one `record` of `k` entries (one
/// delivery each) at a time to the receiver, for a few `k`; CPU µs per write and per
/// entry, median of the runs. Beside it, the baseline: the same requests' JSON, built
/// beforehand, posted with reqwest (unsigned) to the same receiver: the HTTP exchange
/// alone, so that what the log adds to it (building the items and the request,
/// credentials and signing) shows.
pub async fn log_table(url: String, runs: usize) -> Result<String, String> {
    use herald_core::attempt::{log_entry, JobStatus};
    use herald_core::ports::DeliveryLog;
    let sdk = herald_core::aws::local::moto_config(root(&url))
        .await
        .map_err(|e| e.to_string())?;
    let log = DynamoDeliveryLog::from_sdk(&sdk, "bench-log", Duration::from_secs(86_400));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let i = webhook("bench", &url, None)?;
    let now = Utc::now();
    let job = DeliveryJob::new(
        &i.store_id,
        i.id,
        Event {
            id: "log".into(),
            kind: "order.paid".into(),
            occurred_at: now,
            payload: payload(16).into(),
        },
        now,
    );
    let result = delivered();
    let mut out = String::from(
        "| entries per write | BatchWriteItem requests | CPU per write (µs) | CPU per entry (µs) | baseline: the same requests' JSON posted with reqwest (µs per write) | log ÷ baseline |\n|---:|---:|---:|---:|---:|---|\n",
    );
    for k in [1usize, 10, 25, 64] {
        let entries: Vec<_> = (0..k)
            .map(|_| log_entry(&job, 1, JobStatus::Delivered, &result))
            .collect();
        // The baseline's bodies, built once: what it measures is the HTTP exchange.
        let bodies: Vec<Vec<u8>> = log
            .put_items(&entries)
            .chunks(herald_core::aws::batch_write::ITEMS_PER_REQUEST)
            .map(|chunk| herald_core::aws::batch_write::request_body("bench-log", chunk))
            .collect();
        let writes = 400;
        let (mut sdk_us, mut raw_us) = (Vec::new(), Vec::new());
        for _ in 0..=runs {
            let sample = timed(writes, async {
                for _ in 0..writes {
                    log.record(&entries).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await?;
            sdk_us.push(sample.cpu_us);
            let sample = timed(writes, async {
                for _ in 0..writes {
                    for body in &bodies {
                        log_post(&client, root(&url), body.clone()).await?;
                    }
                }
                Ok(())
            })
            .await?;
            raw_us.push(sample.cpu_us);
        }
        sdk_us.remove(0);
        raw_us.remove(0);
        let ratios: Vec<f64> = sdk_us.iter().zip(&raw_us).map(|(a, b)| a / b).collect();
        let (cpu, raw) = (median(sdk_us), median(raw_us));
        out.push_str(&format!(
            "| {k} | {} | {cpu:.0} | {:.1} | {raw:.0} | {} |\n",
            k.div_ceil(25),
            cpu / k as f64,
            spread(&ratios, 1)
        ));
    }
    out.push_str("\nthe fanout function's DynamoDB log (`record`: its items built in DynamoDB's JSON, each request signed with the AWS SDK's SigV4 signer and posted with Herald's HTTP client on hyper) to the receiver, which answers each BatchWriteItem at once; baseline = the same requests' JSON, built beforehand, posted with reqwest: the HTTP exchange alone; one write at a time on a current-thread runtime; median of the runs after a warm-up (min–max of the per-run ratios)\n");
    Ok(out)
}

/// A delivery's result as the receiver gives it: 200, no body, 1 ms.
pub(crate) fn delivered() -> herald_core::attempt::DeliveryResult {
    herald_core::attempt::DeliveryResult {
        outcome: herald_core::attempt::Outcome::Delivered,
        status_code: Some(200),
        body: String::new(),
        error_detail: None,
        duration: Duration::from_millis(1),
    }
}
