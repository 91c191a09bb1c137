//! Herald's hand-written plumbing against the maintained library doing the same work,
//! side by side in one run, on a current-thread runtime as the functions run:
//!
//! - webhook POSTs: Herald's HTTP client (`net::client`, as the webhook deliverer
//!   uses it) vs hyper-util's legacy pooled `Client` vs reqwest, to the receiver;
//! - the attempt log's `BatchWriteItem`: Herald's `BatchWriter` vs the SDK's
//!   DynamoDB client, the same items, to the receiver (which answers it);
//! - the JSON string escaper (`json::json_string`) vs `serde_json::to_writer`;
//! - the timestamp codec (`job::timestamp`) vs chrono.
//!
//! The decisions these figures carry are in `docs/decisions/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use herald_core::attempt::{log_entry, JobStatus};
use herald_core::aws::batch_write::{BatchWriter, ITEMS_PER_REQUEST, REQUESTS_IN_FLIGHT};
use herald_core::aws::records::DynamoDeliveryLog;
use herald_core::job::{timestamp, DeliveryJob, Event};
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

/// The HTTP client table; the Herald client's CPU per request at each concurrency
/// (the least an event costs, for the per-event shares of the micro rows).
async fn http_table(url: &str, runs: usize, out: &mut String) -> Result<f64, String> {
    let posters = Poster::all(url)?;
    let headers = webhook_headers();
    let bodies = webhook_bodies(1024)?;
    let n = 10_000;
    out.push_str("| concurrency | client | events/s | CPU per request (µs) | events/s ÷ Herald's | CPU ÷ Herald's |\n|---:|---|---:|---:|---|---|\n");
    let mut herald_cpu = f64::INFINITY;
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
        herald_cpu = herald_cpu.min(median(cpus[0].clone()));
    }
    out.push_str(&format!(
        "\n{n} POSTs of 1 KiB webhook bodies (the fan-out's, with the deliverer's headers) per client per run, `concurrency` tasks on one current-thread runtime, the clients in turn within each run; median of the runs after a warm-up (min–max of the per-run ratios); CPU = this process's, per request; each client with the deliverer's limits: 10 s for the whole exchange, connections kept alive 60 s, no proxy, no redirects\n\n"
    ));
    Ok(herald_cpu)
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

/// ns per call of `f` over `rounds` rounds of `n` calls (a warm-up round first).
fn ns_per(rounds: usize, n: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    let mut per = Vec::new();
    for round in 0..=rounds {
        let started = Instant::now();
        for i in 0..n {
            f(i);
        }
        if round > 0 {
            per.push(started.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
    }
    per
}

/// A commerce payload's JSON text of about `size` bytes: an order with line items
/// (a quote every few bytes), as the webhook body carries it escaped.
fn order_text(size: usize) -> String {
    let item = |i: usize| {
        serde_json::json!({"type": "order_item", "id": format!("9e1b2c3d-{i:04}"), "quantity": 2,
            "name": "Cotton T-Shirt \"Classic\"", "sku": "TS-CL-M", "unit_price": {"amount": 1999, "currency": "USD"}})
    };
    let mut items = Vec::new();
    let mut text = String::new();
    while text.len() < size {
        items.push(item(items.len()));
        text = serde_json::json!({"data": {"type": "order", "id": "o-1", "status": "paid", "items": items}})
            .to_string();
    }
    // ASCII: any length is a character boundary.
    text.truncate(size);
    text
}

/// Prose of about `size` bytes with a line break every ~80 bytes: a description or an
/// answer body, few escapes.
fn prose(size: usize) -> String {
    let line =
        "Thanks for your order. Your parcel ships within two business days; track it online.\n";
    line.repeat(size / line.len() + 1)[..size].to_owned()
}

/// The escaper table; its Herald ÷ serde_json ns per KiB of a 1 KiB and of a 16 KiB
/// order, for the per-event shares.
fn json_table(runs: usize, out: &mut String) -> Result<[(f64, f64); 2], String> {
    out.push_str("| string | Herald `json_string` (ns per KiB) | `serde_json::to_writer` (ns per KiB) | serde_json ÷ Herald |\n|---|---:|---:|---|\n");
    let mut order = [(0.0, 0.0); 2];
    for (kind, size) in [
        ("plain", 1024usize),
        ("plain", 16 * 1024),
        ("prose", 1024),
        ("prose", 16 * 1024),
        ("order JSON", 1024),
        ("order JSON", 16 * 1024),
    ] {
        let s = match kind {
            "plain" => "x".repeat(size),
            "prose" => prose(size),
            _ => order_text(size),
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        json_string_check(&s)?;
        let n = (64 * 1024 * 1024 / size).max(1) / 8;
        let mut buf = Vec::with_capacity(2 * size + 2);
        let kib = size as f64 / 1024.0;
        for _ in 0..runs {
            ours.extend(ns_per(1, n, |_| {
                buf.clear();
                herald_core::json::json_string(&mut buf, std::hint::black_box(&s));
                std::hint::black_box(&buf);
            }));
            theirs.extend(ns_per(1, n, |_| {
                buf.clear();
                let _ = serde_json::to_writer(&mut buf, std::hint::black_box(&s));
                std::hint::black_box(&buf);
            }));
        }
        let ours: Vec<f64> = ours.iter().map(|v| v / kib).collect();
        let theirs: Vec<f64> = theirs.iter().map(|v| v / kib).collect();
        if kind == "order JSON" {
            order[usize::from(size > 1024)] = (median(ours.clone()), median(theirs.clone()));
        }
        out.push_str(&format!(
            "| {kind}, {} KiB | {:.0} | {:.0} | **{}** |\n",
            size / 1024,
            median(ours.clone()),
            median(theirs.clone()),
            spread(&ratios(&theirs, &ours), 2),
        ));
    }
    out.push_str("\none thread, into a reused buffer; plain = no byte to escape; prose = a line break every 85 bytes; order JSON = an order's JSON text (a quote to escape every few bytes), as the webhook body carries the payload (escaped, as `resources`); both write the same bytes (checked here); median of the runs (min–max of the per-run ratios)\n\n");
    Ok(order)
}

/// Herald's escaper writes what serde_json writes.
fn json_string_check(s: &str) -> Result<(), String> {
    let mut ours = Vec::new();
    herald_core::json::json_string(&mut ours, s);
    if ours != serde_json::to_vec(s).map_err(|e| e.to_string())? {
        return Err("json_string and serde_json wrote different bytes".into());
    }
    Ok(())
}

/// The timestamp table; (Herald, chrono) ns per call to write one and to read one.
fn time_table(runs: usize, out: &mut String) -> Result<[(f64, f64); 2], String> {
    let base: DateTime<Utc> = "2026-05-01T12:00:00.123Z"
        .parse()
        .map_err(|e| format!("{e}"))?;
    let times: Vec<DateTime<Utc>> = (0..1024)
        .map(|i| base + chrono::Duration::milliseconds(i * 7_654_321))
        .collect();
    let texts: Vec<String> = times
        .iter()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .collect();
    for (t, text) in times.iter().zip(&texts) {
        if timestamp::Millis::of(t).as_str() != text || timestamp::quick(text) != Some(*t) {
            return Err(format!("the codec and chrono differ on {text}"));
        }
    }
    let n = 200_000;
    let (mut write_ours, mut write_chrono, mut read_ours, mut read_chrono) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        write_ours.extend(ns_per(1, n, |i| {
            let m = timestamp::Millis::of(std::hint::black_box(&times[i % 1024]));
            std::hint::black_box(m.as_str());
        }));
        write_chrono.extend(ns_per(1, n, |i| {
            let t = std::hint::black_box(&times[i % 1024]);
            std::hint::black_box(t.to_rfc3339_opts(SecondsFormat::Millis, true));
        }));
        read_ours.extend(ns_per(1, n, |i| {
            std::hint::black_box(timestamp::quick(std::hint::black_box(&texts[i % 1024])));
        }));
        read_chrono.extend(ns_per(1, n, |i| {
            let s = std::hint::black_box(&texts[i % 1024]);
            std::hint::black_box(s.parse::<DateTime<Utc>>().ok());
        }));
    }
    out.push_str("| operation | Herald `job::timestamp` (ns per call) | chrono (ns per call) | chrono ÷ Herald |\n|---|---:|---:|---|\n");
    out.push_str(&format!(
        "| write (`Millis::of` vs `to_rfc3339_opts(SecondsFormat::Millis, true)`) | {:.0} | {:.0} | **{}** |\n",
        median(write_ours.clone()),
        median(write_chrono.clone()),
        spread(&ratios(&write_chrono, &write_ours), 2),
    ));
    out.push_str(&format!(
        "| read (`timestamp::quick` vs `str::parse::<DateTime<Utc>>`) | {:.0} | {:.0} | **{}** |\n",
        median(read_ours.clone()),
        median(read_chrono.clone()),
        spread(&ratios(&read_chrono, &read_ours), 2),
    ));
    out.push_str("\none thread, 1,024 different instants in turn; write = the text of one (Herald's on the stack, chrono's a new String); read = one `2026-…T…:…:….123Z` text back to an instant; both give the same texts and instants (checked here); median of the runs (min–max of the per-run ratios)\n\n");
    Ok([
        (median(write_ours), median(write_chrono)),
        (median(read_ours), median(read_chrono)),
    ])
}

/// The section: the four tables, then what the micro pieces save per event.
pub async fn table(url: String, runs: usize) -> Result<String, String> {
    let mut out = String::new();
    out.push_str("### Webhook POSTs: HTTP clients\n\n");
    let post_cpu = http_table(&url, runs, &mut out).await?;
    out.push_str("### The attempt log's BatchWriteItem: Herald's writer vs the SDK\n\n");
    log_table(&url, runs, &mut out).await?;
    out.push_str("### JSON string escaping\n\n");
    let order = json_table(runs, &mut out)?;
    out.push_str("### Timestamps\n\n");
    let [write, read] = time_table(runs, &mut out)?;
    // Per delivered event: the payload escaped once into the webhook body (the order
    // rows), two timestamps written into its log item and two read from its job.
    out.push_str("### What the micro pieces save per delivered event\n\n| piece | uses per event | saved per event (ns) | ÷ the least CPU of an event (Herald's POST alone) |\n|---|---|---:|---:|\n");
    let post_ns = post_cpu * 1e3;
    for (label, size, (ours, theirs)) in [
        ("JSON escaper, 1 KiB payload", 1.0, order[0]),
        ("JSON escaper, 16 KiB payload", 16.0, order[1]),
    ] {
        let saved = (theirs - ours) * size;
        out.push_str(&format!(
            "| {label} | the payload, once | {saved:.0} | {:.1} % |\n",
            100.0 * saved / post_ns
        ));
    }
    for (label, (ours, theirs)) in [("timestamp write", write), ("timestamp read", read)] {
        let saved = 2.0 * (theirs - ours);
        out.push_str(&format!(
            "| {label} | 2 | {saved:.0} | {:.1} % |\n",
            100.0 * saved / post_ns
        ));
    }
    out.push_str(&format!(
        "\nHerald's POST alone: {post_cpu:.1} µs of CPU per request (its lowest median above); an event costs at least that, so these shares are the most each piece can save\n"
    ));
    Ok(out)
}
