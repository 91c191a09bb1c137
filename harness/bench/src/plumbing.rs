//! Herald's hand-written plumbing against the maintained library doing the same work,
//! side by side in one run, on a current-thread runtime as the functions run:
//!
//! - webhook POSTs: Herald's HTTP client (`net::client`, as the webhook deliverer
//!   uses it) vs hyper-util's legacy pooled `Client` vs reqwest, to the receiver;
//! - the attempt log's `BatchWriteItem`: Herald's `BatchWriter` vs the SDK's
//!   DynamoDB client, the same items, to the receiver (which answers it);
//! - the events of `POST /v2/events`: read as their JSON text (`parse_event_text`,
//!   with its hand-written compaction of payloads) vs parsed into serde_json trees;
//!
//! The decisions these figures carry are in `docs/decisions/`, with those of the
//! pieces that lost to their library (the JSON escaper, the timestamp codec) and went.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use herald_core::attempt::{log_entry, JobStatus};
use herald_core::aws::attempt_log::DynamoDeliveryLog;
use herald_core::aws::batch_write::{BatchWriter, ITEMS_PER_REQUEST, REQUESTS_IN_FLIGHT};
use herald_core::job::{DeliveryJob, Event};
use herald_core::net::client::{Destination, HttpClient, Options, SystemResolver};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use crate::stats::{cpu_time, median, ratios, spread};

/// The deliverer's timeout for the bench (every client gets the same).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer's body the deliverer keeps.
const MAX_BODY: usize = herald_core::attempt::MAX_LOGGED_BODY;

/// One of the three clients, ready to post to the receiver's webhook URL.
enum Poster {
    Herald(HttpClient, Destination),
    Hyper(HyperClient<HttpConnector, Full<Bytes>>, http::Uri),
    Reqwest(reqwest::Client, String),
}

impl Poster {
    fn all(url: &str) -> Result<Vec<(&'static str, Poster)>, String> {
        // Herald's client as the webhook deliverer builds it (its resolver is never
        // asked for an IP literal's address: the guard's resolver would not be either).
        let herald = HttpClient::new(Options {
            connect_timeout: TIMEOUT,
            idle_timeout: Duration::from_secs(60),
            resolver: Arc::new(SystemResolver),
            extra_roots: Vec::new(),
        })?;
        let to = herald.destination(&url::Url::parse(url).map_err(|e| e.to_string())?)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(TIMEOUT));
        let hyper = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let reqwest = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(vec![
            ("Herald (net::client)", Poster::Herald(herald, to)),
            (
                "hyper-util legacy Client",
                Poster::Hyper(hyper, url.parse().map_err(|e| format!("{e}"))?),
            ),
            ("reqwest", Poster::Reqwest(reqwest, url.to_owned())),
        ])
    }

    /// One POST of `body` with `headers`, its answer's body read (up to [`MAX_BODY`]
    /// for Herald's, as the deliverer reads it), all within [`TIMEOUT`].
    async fn post(&self, headers: &HeaderMap, body: Bytes) -> Result<(), String> {
        let status = match self {
            Poster::Herald(client, to) => {
                client
                    .post(to, headers.clone(), body, TIMEOUT, MAX_BODY)
                    .await
                    .map_err(|e| format!("{e:?}"))?
                    .status
            }
            Poster::Hyper(client, uri) => {
                let mut request = http::Request::new(Full::new(body));
                *request.method_mut() = http::Method::POST;
                *request.uri_mut() = uri.clone();
                *request.headers_mut() = headers.clone();
                let exchange = async {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let _ = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                        .collect()
                        .await;
                    Ok::<_, String>(status)
                };
                tokio::time::timeout(TIMEOUT, exchange)
                    .await
                    .map_err(|_| "timed out".to_owned())??
            }
            Poster::Reqwest(client, url) => {
                let response = client
                    .post(url)
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let _ = response.bytes().await;
                status
            }
        };
        if !status.is_success() {
            return Err(format!("the receiver answered {status}"));
        }
        Ok(())
    }
}

/// Events per second and CPU µs per request of `n` POSTs of `bodies` (cycled) at
/// `concurrency`.
async fn posts(
    poster: &Poster,
    headers: &HeaderMap,
    bodies: &[Bytes],
    n: usize,
    concurrency: usize,
) -> Result<(f64, f64), String> {
    let next = AtomicUsize::new(0);
    let cpu0 = cpu_time();
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok::<(), String>(());
            }
            poster
                .post(headers, bodies[i % bodies.len()].clone())
                .await?;
        }
    });
    futures_util::future::try_join_all(workers).await?;
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64();
    Ok((n as f64 / wall, cpu * 1e6 / n as f64))
}

/// The headers the webhook deliverer sends on an unsigned delivery.
fn webhook_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static("Herald-Webhooks/0.1"));
    headers.insert(
        "x-moltin-integration-trigger",
        HeaderValue::from_static("order.paid"),
    );
    headers.insert(
        "webhook-id",
        HeaderValue::from_static("0195f0d0-0000-7000-8000-000000000000"),
    );
    headers.insert("webhook-timestamp", HeaderValue::from(1_767_225_600i64));
    headers
}

/// The webhook bodies of 256 jobs of about `size` bytes, as the fan-out writes them.
fn webhook_bodies(size: usize) -> Result<Vec<Bytes>, String> {
    let integration = crate::throughput::webhook("bench", "http://127.0.0.1:9/hook", None)?;
    Ok(crate::throughput::batches(&integration, size, 256, 256, 0)
        .iter()
        .flat_map(|b| &b.records)
        .filter_map(|m| DeliveryJob::parse(m.body.as_deref()?).ok())
        .map(|job| herald_core::delivery::envelope::webhook_body(&job, &integration, 1).into())
        .collect())
}

/// The HTTP client table.
async fn http_table(url: &str, runs: usize, out: &mut String) -> Result<(), String> {
    let posters = Poster::all(url)?;
    let headers = webhook_headers();
    let bodies = webhook_bodies(1024)?;
    let n = 10_000;
    out.push_str("| concurrency | client | events/s | CPU per request (µs) | events/s ÷ Herald's | CPU ÷ Herald's |\n|---:|---|---:|---:|---|---|\n");
    for concurrency in [10usize, 64] {
        // Per client: the runs' rates and CPU, the clients interleaved within a run.
        let mut rates = vec![Vec::new(); posters.len()];
        let mut cpus = vec![Vec::new(); posters.len()];
        for run in 0..=runs {
            for (k, (_, poster)) in posters.iter().enumerate() {
                let (rate, cpu) = posts(poster, &headers, &bodies, n, concurrency).await?;
                if run > 0 {
                    rates[k].push(rate);
                    cpus[k].push(cpu);
                }
            }
        }
        for (k, (name, _)) in posters.iter().enumerate() {
            let (rate, cpu) = (&rates[k], &cpus[k]);
            let vs = |mine: &[f64], herald: &[f64]| {
                if k == 0 {
                    "1".to_owned()
                } else {
                    spread(&ratios(mine, herald), 2)
                }
            };
            out.push_str(&format!(
                "| {concurrency} | {name} | {:.0} | {:.1} | {} | {} |\n",
                median(rate.clone()),
                median(cpu.clone()),
                vs(rate, &rates[0]),
                vs(cpu, &cpus[0]),
            ));
        }
    }
    out.push_str(&format!(
        "\n{n} POSTs of 1 KiB webhook bodies (the fan-out's, with the deliverer's headers) per client per run, `concurrency` tasks on one current-thread runtime, the clients in turn within each run; median of the runs after a warm-up (min–max of the per-run ratios); CPU = this process's, per request; each client with the deliverer's limits: 10 s for the whole exchange, connections kept alive 60 s, no proxy, no redirects\n\n"
    ));
    Ok(())
}

/// A DynamoDB-JSON item (as the log writes it) as the SDK's attribute map.
fn attribute_map(item: &[u8]) -> Result<HashMap<String, AttributeValue>, String> {
    fn value(v: &serde_json::Value) -> Result<AttributeValue, String> {
        let (kind, inner) = v
            .as_object()
            .and_then(|o| o.iter().next())
            .ok_or("not an attribute value")?;
        Ok(match (kind.as_str(), inner) {
            ("S", serde_json::Value::String(s)) => AttributeValue::S(s.clone()),
            ("N", serde_json::Value::String(n)) => AttributeValue::N(n.clone()),
            ("BOOL", serde_json::Value::Bool(b)) => AttributeValue::Bool(*b),
            ("B", serde_json::Value::String(b)) => {
                use base64::Engine as _;
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| format!("a B attribute: {e}"))?,
                ))
            }
            ("NULL", _) => AttributeValue::Null(true),
            (other, _) => return Err(format!("an attribute of type {other}")),
        })
    }
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(item).map_err(|e| e.to_string())?;
    parsed
        .iter()
        .map(|(k, v)| Ok((k.clone(), value(v)?)))
        .collect()
}

/// The log table: CPU per write of `k` entries, Herald's writer vs the SDK.
async fn log_table(url: &str, runs: usize, out: &mut String) -> Result<(), String> {
    let root = url.trim_end_matches("/hook");
    let sdk = herald_core::aws::local::moto_config(root)
        .await
        .map_err(|e| e.to_string())?;
    let log = DynamoDeliveryLog::from_sdk(&sdk, "bench-log", Duration::from_secs(86_400));
    let writer = BatchWriter::from_sdk(&sdk, "bench-log", TIMEOUT);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let integration = crate::throughput::webhook("bench", url, None)?;
    let now = Utc::now();
    let result = crate::throughput::delivered();
    out.push_str("| entries per write | BatchWriteItem requests | Herald's BatchWriter: CPU per write (µs) | SDK `batch_write_item`: CPU per write (µs) | SDK ÷ Herald |\n|---:|---:|---:|---:|---|\n");
    for k in [1usize, 25, 64] {
        let writes = 300;
        let entries: Vec<_> = (0..k)
            .map(|i| {
                let job = DeliveryJob::new(
                    &integration.store_id,
                    integration.id,
                    Event {
                        id: format!("log-{i}"),
                        kind: "order.paid".into(),
                        occurred_at: now,
                        payload: crate::throughput::payload(16).into(),
                    },
                    now,
                );
                log_entry(&job, 1, JobStatus::Delivered, &result)
            })
            .collect();
        let items = log.put_items(&entries);
        let requests: Vec<WriteRequest> = items
            .iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(attribute_map(item)?))
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<_, String>>()?;
        let (mut herald, mut sdk_us) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            // The inputs of every write made beforehand: the measured CPU is the write's.
            let mut inputs: Vec<Vec<Vec<u8>>> = (0..writes).map(|_| items.clone()).collect();
            let cpu0 = cpu_time();
            for items in inputs.drain(..) {
                writer.write(items).await.map_err(|e| e.to_string())?;
            }
            let ours = cpu_time().saturating_sub(cpu0).as_secs_f64() * 1e6 / writes as f64;
            let mut inputs: Vec<Vec<WriteRequest>> =
                (0..writes).map(|_| requests.clone()).collect();
            let cpu0 = cpu_time();
            for requests in inputs.drain(..) {
                sdk_write(&dynamo, requests).await?;
            }
            let theirs = cpu_time().saturating_sub(cpu0).as_secs_f64() * 1e6 / writes as f64;
            if run > 0 {
                herald.push(ours);
                sdk_us.push(theirs);
            }
        }
        out.push_str(&format!(
            "| {k} | {} | {:.0} | {:.0} | **{}** |\n",
            k.div_ceil(ITEMS_PER_REQUEST),
            median(herald.clone()),
            median(sdk_us.clone()),
            spread(&ratios(&sdk_us, &herald), 2),
        ));
    }
    out.push_str("\nthe attempt log's items for `k` deliveries (built beforehand, the same for both), written to the receiver, which answers every BatchWriteItem at once with nothing unprocessed; Herald = `aws::batch_write::BatchWriter::write` (its request JSON, SigV4 with aws-sigv4, posted with `net::client`); SDK = `aws_sdk_dynamodb::Client::batch_write_item` with the same items as attribute maps, 25 per request, up to 8 requests at once, as the writer sends them; same credentials and endpoint (moto's test config pointed at the receiver); 300 writes per run, one at a time; median of the runs after a warm-up (min–max of the per-run ratios)\n\n");
    Ok(())
}

/// One write through the SDK, as the writer does it: 25 items per request, up to 8
/// requests at once.
async fn sdk_write(
    dynamo: &aws_sdk_dynamodb::Client,
    mut requests: Vec<WriteRequest>,
) -> Result<(), String> {
    let mut chunks = Vec::new();
    while !requests.is_empty() {
        let rest = requests.split_off(requests.len().min(ITEMS_PER_REQUEST));
        chunks.push(std::mem::replace(&mut requests, rest));
    }
    let answers: Vec<Result<(), String>> = futures_util::stream::iter(chunks)
        .map(|chunk| async move {
            let answer = dynamo
                .batch_write_item()
                .request_items("bench-log", chunk)
                .send()
                .await
                .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
            match answer.unprocessed_items() {
                Some(left) if !left.is_empty() => Err("items left unprocessed".to_owned()),
                _ => Ok(()),
            }
        })
        .buffer_unordered(REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    answers.into_iter().collect()
}

/// Events per run of [`events_table`].
const EVENTS_PER_RUN: usize = 20_000;

/// `POST /v2/events` bodies carrying [`EVENTS_PER_RUN`] events of 1 KiB (as the
/// `make run` section sends them), `per_request` to a body, their payloads
/// pretty-printed (an indented line per field) or not; `tree` puts `"data": null`
/// first, a field twice, which the text read refuses: such a body is parsed into a
/// tree, as every body was before the text read.
fn event_bodies(per_request: usize, pretty: bool, tree: bool) -> Vec<Bytes> {
    let pad = "x".repeat(1024);
    let (nl, top, at, sp) = match pretty {
        true => ("\n", "\n  ", "\n    ", " "),
        false => ("", "", "", ""),
    };
    let event = |i: usize| {
        format!(
            r#"{{"id":"e-{i}","type":"order.paid","payload":{{{top}"data":{sp}{{{at}"type":{sp}"order",{at}"id":{sp}"o-{i}",{at}"sent_us":{sp}{i},{at}"note":{sp}"{pad}"{top}}}{nl}}}}}"#
        )
    };
    (0..EVENTS_PER_RUN / per_request)
        .map(|r| {
            let events: Vec<String> = (r * per_request..(r + 1) * per_request)
                .map(event)
                .collect();
            let first = if tree { r#""data":null,"# } else { "" };
            Bytes::from(format!(r#"{{{first}"data":[{}]}}"#, events.join(",")))
        })
        .collect()
}

/// CPU per event of `herald_core::ingest::request::post_events` over the embedded
/// adapters (one webhook integration observing the events, a fresh queue and fresh
/// claims), taking `bodies` one after the other.
async fn ingest_cpu(bodies: &[Bytes]) -> Result<f64, String> {
    use herald_core::cache::IntegrationCache;
    use herald_core::ingest::{request::post_events, Ingest, IngestSettings};
    use herald_core::memory::{MemoryIdempotency, MemoryQueue};
    use herald_core::testkit::{seeded, store, webhook};

    let store = store("s1");
    let integrations = seeded(&[&webhook("bench", "s1", &["order.paid"], true)]).await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let ingest = Ingest::new(
        Arc::new(IntegrationCache::new(integrations, Duration::from_secs(5))),
        Arc::new(MemoryIdempotency::new()),
        queue.clone(),
        IngestSettings::default(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let before = cpu_time();
    for body in bodies {
        let (status, _) = post_events(&ingest, &store, &headers, Full::new(body.clone()))
            .await
            .map_err(|e| format!("POST /v2/events: {e:?}"))?;
        if status != http::StatusCode::ACCEPTED {
            return Err(format!("POST /v2/events answered {status}"));
        }
    }
    let cpu = cpu_time().saturating_sub(before);
    if queue.len() != EVENTS_PER_RUN {
        return Err(format!("{} jobs queued of {EVENTS_PER_RUN}", queue.len()));
    }
    Ok(cpu.as_secs_f64() * 1e6 / EVENTS_PER_RUN as f64)
}

async fn events_table(runs: usize, out: &mut String) -> Result<(), String> {
    out.push_str("| events per request | payloads | as text: CPU per event (µs) | as trees: CPU per event (µs) | trees ÷ text |\n|---:|---|---:|---:|---|\n");
    for (per_request, pretty) in [(1, false), (100, false), (1, true)] {
        let (text_bodies, tree_bodies) = (
            event_bodies(per_request, pretty, false),
            event_bodies(per_request, pretty, true),
        );
        let (mut text, mut tree) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let (a, b) = (
                ingest_cpu(&text_bodies).await?,
                ingest_cpu(&tree_bodies).await?,
            );
            if run > 0 {
                text.push(a);
                tree.push(b);
            }
        }
        out.push_str(&format!(
            "| {per_request} | {} | {:.1} | {:.1} | **{}** |\n",
            if pretty { "pretty-printed" } else { "compact" },
            median(text.clone()),
            median(tree.clone()),
            spread(&ratios(&tree, &text), 2),
        ));
    }
    out.push_str(&format!("\n{EVENTS_PER_RUN} events of 1 KiB per run, each named (an id to claim), observed by one webhook integration, through `ingest::request::post_events` over the embedded adapters (the dev server's), one request after another; pretty-printed = each payload field on an indented line of its own, which the text read removes (`compact`, hand-written); as trees = the same bodies with `\"data\":null,` first, a field twice, which the text read refuses, so that they take the path every body took before it: parsed into serde_json trees, each event validated as a tree and its payload written out again; median of the runs after a warm-up (min–max of the per-run ratios)\n\n"));
    Ok(())
}

/// The section: the hand-written pieces Herald keeps, each against the library.
pub async fn table(url: String, runs: usize) -> Result<String, String> {
    let mut out = String::new();
    out.push_str("### Webhook POSTs: HTTP clients\n\n");
    http_table(&url, runs, &mut out).await?;
    out.push_str("### The attempt log's BatchWriteItem: Herald's writer vs the SDK\n\n");
    log_table(&url, runs, &mut out).await?;
    out.push_str("### The events of POST /v2/events: read as text vs parsed into trees\n\n");
    events_table(runs, &mut out).await?;
    out.push_str("The JSON escaper and the timestamp codec were measured here too and replaced by serde_json and chrono: see docs/decisions/.\n");
    Ok(out)
}
