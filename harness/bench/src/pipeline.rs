//! End to end through the dev server (`herald-local`): events posted to
//! `POST /v2/events`, through ingest, the queue and the fan-out pollers, to the
//! receiver, which counts them. Once with the embedded backend, once on moto
//! ([`table`]); and as `make run` serves one event per request to many clients at
//! once ([`per_request_table`]).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::receiver::{unix_us, Receiver};
use crate::stats::{median, process_cpu, quantile, ratios, spread};
use crate::throughput::payload;

struct DevServer {
    child: Child,
    base: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevServer {
    /// Starts `herald-local` on a free loopback port, logging at WARN, and reads
    /// where it listens.
    fn start(binary: &Path, env: &[(String, String)], log: &Path) -> Result<Self, String> {
        let mut env = env.to_vec();
        env.push(("RUST_LOG".into(), "warn".into()));
        Self::start_with(binary, &env, log)
    }

    /// Starts `herald-local` on a free loopback port with `env` (and its log level,
    /// INFO unless `env` names one, as `make run` runs it), and reads where it
    /// listens.
    fn start_with(binary: &Path, env: &[(String, String)], log: &Path) -> Result<Self, String> {
        let mut command = Command::new(binary);
        command
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", "0");
        Self::spawn(command, log)
    }

    /// Starts the bench's own forwarder (`herald-bench forwarder`), the `e2e`
    /// section's baseline, in the dev server's place.
    fn forwarder(log: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        command.arg("forwarder");
        Self::spawn(command, log)
    }

    /// Runs `command`, its stderr to `log`, and reads where it listens from the first
    /// line it prints.
    fn spawn(mut command: Command, log: &Path) -> Result<Self, String> {
        let err = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {command:?}: {e}"))?;
        let line = child
            .stdout
            .take()
            .and_then(|out| BufReader::new(out).lines().next())
            .and_then(|l| l.ok())
            .unwrap_or_default();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .map(str::to_owned);
        match base {
            Some(base) => Ok(Self { child, base }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{command:?} did not start (see {}): {line:?}",
                    log.display()
                ))
            }
        }
    }
}

/// Events per second end to end, `n` events of 1 KiB in requests of 100 (`senders`
/// at a time), one webhook integration; counted when the receiver has them all.
async fn once(
    server: &DevServer,
    receiver: &Receiver,
    client: &reqwest::Client,
    n: usize,
    senders: usize,
) -> Result<f64, String> {
    let store = format!("bench-{}", Uuid::new_v4().simple());
    let created = client
        .post(format!("{}/v2/integrations", server.base))
        .header("x-store-id", &store)
        .json(&json!({"data": {
            "type": "integration", "integration_type": "webhook", "name": "bench",
            "enabled": true, "observes": ["order.paid"],
            "configuration": {"url": receiver.url()}
        }}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if created.status().as_u16() != 201 {
        return Err(format!("creating the integration: {}", created.status()));
    }
    let before = receiver.count().await?;
    let requests: Vec<serde_json::Value> = (0..n)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|c| {
            json!({"data": c.iter().map(|i| json!({
                "id": format!("{store}-{i}"), "type": "order.paid", "payload": payload(1024)
            })).collect::<Vec<_>>()})
        })
        .collect();
    let started = Instant::now();
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders = (0..senders).map(|_| {
        let (requests, next, client, base, store) = (
            requests.clone(),
            next.clone(),
            client.clone(),
            server.base.clone(),
            store.clone(),
        );
        async move {
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = requests.get(k) else {
                    return Ok::<(), String>(());
                };
                let r = client
                    .post(format!("{base}/v2/events"))
                    .header("x-store-id", &store)
                    .json(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status().as_u16() != 202 {
                    return Err(format!("POST /v2/events answered {}", r.status()));
                }
            }
        }
    });
    for sent in join_all(senders).await {
        sent?;
    }
    let done = receiver
        .wait_for(before + n, Duration::from_secs(180))
        .await?;
    Ok(n as f64 / done.duration_since(started).as_secs_f64())
}

/// The pipeline rows: the embedded backend, and moto when `moto_env` is given.
pub async fn table(
    binary: &Path,
    receiver: &Receiver,
    moto_env: Option<Vec<(String, String)>>,
    runs: usize,
    logs: &Path,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = String::from(
        "| pipeline through the dev server (POST /v2/events → ingest → queue → fan-out pollers → receiver) | events | events/s |\n|---|---:|---|\n",
    );
    let embedded = DevServer::start(
        binary,
        &[("HERALD_BACKEND".into(), "memory".into())],
        &logs.join("herald-local-memory.log"),
    )?;
    let n = 5000;
    let mut rates = Vec::new();
    for run in 0..=runs {
        let r = once(&embedded, receiver, &client, n, 4).await?;
        if run > 0 {
            rates.push(r);
        }
    }
    drop(embedded);
    out.push_str(&format!(
        "| embedded backend (`make run`; 4 requests at a time) | {n} | {} |\n",
        spread(&rates, 0)
    ));
    if let Some(env) = moto_env {
        let aws = DevServer::start(binary, &env, &logs.join("herald-local-aws.log"))?;
        // moto's SQS slows with the queue's depth: this row measures moto mostly.
        let n = 100;
        let mut rates = Vec::new();
        for run in 0..=runs {
            let r = once(&aws, receiver, &client, n, 1).await?;
            if run > 0 {
                rates.push(r);
            }
        }
        out.push_str(&format!(
            "| `HERALD_BACKEND=aws` on moto (DynamoDB, SQS, KMS; one request at a time) | {n} | {} |\n",
            spread(&rates, 0)
        ));
    }
    Ok(out)
}

/// One run of [`per_request`].
struct PerRequest {
    accepted_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    /// The client's (this process's) and the receiver's CPU per event.
    others_us: f64,
}

/// A webhook integration for a new store, delivering `order.paid` to the receiver;
/// the store's name.
async fn webhook_store(
    server: &DevServer,
    receiver: &Receiver,
    client: &reqwest::Client,
) -> Result<String, String> {
    let store = format!("bench-{}", Uuid::new_v4().simple());
    let created = client
        .post(format!("{}/v2/integrations", server.base))
        .header("x-store-id", &store)
        .json(&json!({"data": {
            "type": "integration", "integration_type": "webhook", "name": "bench",
            "enabled": true, "observes": ["order.paid"],
            "configuration": {"url": receiver.url()}
        }}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if created.status().as_u16() != 201 {
        return Err(format!("creating the integration: {}", created.status()));
    }
    Ok(store)
}

/// `n` events of 1 KiB, one per `POST /v2/events`, from `connections` keep-alive
/// connections each posting its next event as soon as the last is accepted (202).
/// Each event carries when it was sent; the receiver notes when it got it. Accepted/s
/// is counted to the last 202, delivered/s to the last receipt; the server's CPU
/// (all its threads, from /proc) is divided by `n`. Every event must reach the
/// receiver exactly once within the time limit.
async fn per_request(
    server: &DevServer,
    receiver: &Receiver,
    setup: &reqwest::Client,
    n: usize,
    connections: usize,
) -> Result<PerRequest, String> {
    let store = webhook_store(server, receiver, setup).await?;
    let authority = server
        .base
        .strip_prefix("http://")
        .ok_or("the server's address is not http://")?
        .to_owned();
    let before = receiver.count().await?;
    receiver.receipts().await?;
    let pid = server.child.id();
    let cpu_before = process_cpu(pid).ok_or("the server's CPU time is not readable")?;
    let others = || {
        process_cpu(std::process::id())
            .zip(process_cpu(receiver.pid()))
            .map(|(a, b)| a + b)
            .ok_or("the client's or the receiver's CPU time is not readable")
    };
    let others_before = others()?;
    let pad = "x".repeat(1024);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started_us = unix_us();
    let started = Instant::now();
    let posters = (0..connections).map(|_| {
        let (authority, store, pad, next) =
            (authority.clone(), store.clone(), pad.clone(), next.clone());
        async move {
            let mut connection = Poster::connect(&authority, &store).await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                let body = format!(
                    r#"{{"data":{{"id":"{store}-{i}","type":"order.paid","payload":{{"data":{{"type":"order","id":"o-{i}","sent_us":{},"note":"{pad}"}}}}}}}}"#,
                    unix_us()
                );
                let (status, text) = connection.post(body).await?;
                if status != 202 {
                    return Err(format!("POST /v2/events answered {status}: {text}"));
                }
            }
        }
    });
    for posted in join_all(posters).await {
        posted?;
    }
    let accepted = started.elapsed().as_secs_f64();
    receiver
        .wait_for(before + n, Duration::from_secs(120))
        .await?;
    let cpu = process_cpu(pid)
        .ok_or("the server's CPU time is not readable")?
        .saturating_sub(cpu_before);
    let others_cpu = others()?.saturating_sub(others_before);
    let receipts = receiver.receipts().await?;
    if receipts.len() != n {
        return Err(format!(
            "the receiver noted {} receipts of {n} events sent",
            receipts.len()
        ));
    }
    let last = receipts.iter().map(|(_, r)| *r).max().unwrap_or(started_us);
    let mut latencies: Vec<f64> = receipts
        .iter()
        .map(|(s, r)| r.saturating_sub(*s) as f64 / 1000.0)
        .collect();
    Ok(PerRequest {
        accepted_per_s: n as f64 / accepted.max(1e-9),
        delivered_per_s: n as f64 * 1e6 / last.saturating_sub(started_us).max(1) as f64,
        p50_ms: quantile(&mut latencies, 0.5),
        p99_ms: quantile(&mut latencies, 0.99),
        cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
        others_us: others_cpu.as_secs_f64() * 1e6 / n as f64,
    })
}

/// One keep-alive connection of the `e2e` client: hyper's HTTP/1.1 connection and
/// nothing above it (no pool, no URL parsed per request), so that the client takes as
/// little of the machine as it can from the server it measures.
struct Poster {
    requests: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    /// The `Host` and `X-Store-Id` of every request.
    host: http::HeaderValue,
    store: http::HeaderValue,
}

impl Drop for Poster {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Poster {
    /// A connection to `authority` that posts events for `store`.
    async fn connect(authority: &str, store: &str) -> Result<Self, String> {
        let header = |v: &str| http::HeaderValue::from_str(v).map_err(|e| e.to_string());
        let (host, store) = (header(authority)?, header(store)?);
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (requests, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            requests,
            driver,
            host,
            store,
        })
    }

    /// `POST /v2/events` of `body`: the answer's status and body, within a minute.
    async fn post(&mut self, body: String) -> Result<(u16, String), String> {
        use http_body_util::BodyExt;
        let request = http::Request::post("/v2/events")
            .header(http::header::HOST, self.host.clone())
            .header("x-store-id", self.store.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            // A request sent before the connection is ready is refused.
            self.requests
                .ready()
                .await
                .map_err(|e| format!("POST /v2/events: {e}"))?;
            let answer = self
                .requests
                .send_request(request)
                .await
                .map_err(|e| format!("POST /v2/events: {e}"))?;
            let status = answer.status().as_u16();
            // Read to the end, so the connection is ready for the next request.
            let body = answer
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .map_err(|_| "POST /v2/events: no answer within a minute".to_owned())?
    }
}

/// Concurrency levels of [`per_request_table`]: 16 and 64 connections.
pub const CONNECTIONS: [usize; 2] = [16, 64];

/// The dev server as `make run` starts it (the embedded backend, INFO to its log),
/// `n` events per run, one per request, at each of [`CONNECTIONS`], and the same runs
/// against the [forwarder](crate::forwarder) in its place, each Herald run followed by
/// a forwarder run: a pair to warm up, then `runs` pairs; each figure is the median
/// (and range) of the runs, each ratio the median of the pairs' ratios.
pub async fn per_request_table(
    binary: &Path,
    receiver: &Receiver,
    n: usize,
    runs: usize,
    logs: &Path,
) -> Result<String, String> {
    let server = DevServer::start_with(
        binary,
        &[("HERALD_BACKEND".into(), "memory".into())],
        &logs.join("herald-local-per-request.log"),
    )?;
    let forwarder = DevServer::forwarder(&logs.join("forwarder.log"))?;
    // Creates each run's integration; the events go on the runs' own connections.
    let setup = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let header = "| server | connections | accepted/s | delivered/s | delivered ÷ accepted | p50 (ms) | p99 (ms) | server CPU per event (µs) | client and receiver CPU per event (µs) | lost |\n\
         |---|---:|---|---|---|---|---|---|---|---:|\n";
    let mut out = format!(
        "`{}` (embedded backend, its default log level to a file), and the forwarder \
         (`herald-bench forwarder`: answers 202 once the body is read and posts it to \
         the receiver, keeping, checking and logging nothing) in its place as the \
         baseline; client and receiver each a process of their own; {n} events of \
         1 KiB per run, one per `POST /v2/events`, each connection posting its next \
         event when the last is accepted; latency from the client's send to the \
         receiver's receipt; each Herald run followed by a forwarder run, a pair to \
         warm up, then {runs} pairs: median (min–max)\n\n{header}",
        binary.display()
    );
    let mut verdicts = Vec::new();
    let mut baseline = Vec::new();
    for connections in CONNECTIONS {
        let (mut measured, mut forwarded) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let r = per_request(&server, receiver, &setup, n, connections).await?;
            let f = per_request(&forwarder, receiver, &setup, n, connections).await?;
            if run > 0 {
                measured.push(r);
                forwarded.push(f);
            }
        }
        let row = |name: &str, of: &[PerRequest]| {
            let of = |f: fn(&PerRequest) -> f64| of.iter().map(f).collect::<Vec<f64>>();
            let keeping_up = ratios(&of(|r| r.delivered_per_s), &of(|r| r.accepted_per_s));
            format!(
                "| {name} | {connections} | {} | {} | {} | {} | {} | {} | {} | 0 |\n",
                spread(&of(|r| r.accepted_per_s), 0),
                spread(&of(|r| r.delivered_per_s), 0),
                spread(&keeping_up, 2),
                spread(&of(|r| r.p50_ms), 2),
                spread(&of(|r| r.p99_ms), 2),
                spread(&of(|r| r.cpu_us), 1),
                spread(&of(|r| r.others_us), 1),
            )
        };
        out.push_str(&row("Herald", &measured));
        out.push_str(&row("forwarder", &forwarded));
        let of = |from: &[PerRequest], f: fn(&PerRequest) -> f64| {
            from.iter().map(f).collect::<Vec<f64>>()
        };
        let delivered = |r: &PerRequest| r.delivered_per_s;
        baseline.push(format!(
            "- {connections} connections: {}",
            spread(
                &ratios(&of(&measured, delivered), &of(&forwarded, delivered)),
                2
            )
        ));
        match connections {
            16 => {
                let rate = median(of(&measured, delivered));
                let p99 = median(of(&measured, |r| r.p99_ms));
                let ceiling = median(of(&forwarded, delivered));
                verdicts.push(format!(
                    "- 16 connections, ≥ 15,000 delivered/s with p99 ≤ 5 ms: {} ({rate:.0}/s, \
                     p99 {p99:.2} ms; the forwarder, on the same machine: {ceiling:.0}/s)",
                    met(rate >= 15_000.0 && p99 <= 5.0)
                ));
            }
            64 => {
                let kept = median(ratios(
                    &of(&measured, delivered),
                    &of(&measured, |r| r.accepted_per_s),
                ));
                verdicts.push(format!(
                    "- 64 connections, delivered/s ≥ 0.95 × accepted/s: {} ({kept:.2})",
                    met(kept >= 0.95)
                ));
            }
            _ => {}
        }
    }
    out.push_str(&format!(
        "\nlost: events that did not reach the receiver (a run with any fails the section)\n\n\
         Herald's delivered/s ÷ the forwarder's, run by run:\n{}\n\n\
         targets, on the medians:\n{}\n",
        baseline.join("\n"),
        verdicts.join("\n")
    ));
    Ok(out)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}
