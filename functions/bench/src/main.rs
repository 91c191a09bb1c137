//! `herald-bench`: throughput and CPU of the fan-out handler against a raw reqwest
//! loop posting the same bodies to the same receiver at the same concurrency,
//! measured side by side in one run and reported as ratios (absolute rates on a
//! shared machine are noise; ratios are not).
//!
//! The receiver is a separate process (`herald-bench receiver`), a minimal
//! keep-alive HTTP/1.1 server on 127.0.0.1 that answers 200 at once, so the CPU
//! this process spends is the client side only. Everything is on loopback.
//!
//! `herald-bench [--out FILE] [--runs N]` prints a Markdown table and writes it to
//! FILE (default `.run/bench.md`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use herald_core::config::PipelineSettings;
use herald_core::fanout::Fanout;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{Integration, Secret, StoreId, Target, WebhookConfig};
use herald_core::ports::InsertOutcome;
use herald_core::wiring::Components;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.first().map(String::as_str) == Some("receiver") {
        runtime.block_on(receiver());
        return ExitCode::SUCCESS;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = value("--out").unwrap_or_else(|| ".run/bench.md".into());
    let runs: usize = value("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    match runtime.block_on(run(runs)) {
        Ok(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            if let Some(dir) = std::path::Path::new(&out).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(&out, text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The receiver process: prints its port, then answers every request with 200.
async fn receiver() {
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", addr.port());
        let _ = stdout.flush();
    }
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream));
    }
}

async fn answer(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // One request: its head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// CPU time this process has used (all threads), from /proc.
fn cpu_time() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// One measurement: events per second and CPU per event.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rate: f64,
    cpu_us: f64,
}

fn measure(n: usize, started: Instant, cpu0: Duration) -> Sample {
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64();
    Sample {
        rate: n as f64 / wall,
        cpu_us: cpu * 1e6 / n as f64,
    }
}

/// The raw baseline: `concurrency` tasks posting `body` until `n` posts are done.
async fn raw_loop(
    client: &reqwest::Client,
    url: &str,
    body: &Arc<Vec<u8>>,
    n: usize,
    concurrency: usize,
) -> Result<Sample, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, next) =
            (client.clone(), url.to_owned(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !res.status().is_success() {
                    return Err(format!("receiver answered {}", res.status()));
                }
                let _ = res.bytes().await;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(measure(n, started, cpu0))
}

/// The fan-out handler: batches of `concurrency` records (one invocation at a time,
/// each delivering its records concurrently), `n` records in all.
async fn fanout_run(
    fanout: &Arc<Fanout>,
    batches: Vec<SqsEvent>,
    n: usize,
) -> Result<Sample, String> {
    let cpu0 = cpu_time();
    let started = Instant::now();
    for batch in batches {
        let response = herald_fanout::process(fanout, batch, None).await;
        if !response.batch_item_failures.is_empty() {
            return Err(format!(
                "{} records failed",
                response.batch_item_failures.len()
            ));
        }
    }
    Ok(measure(n, started, cpu0))
}

fn payload(size: usize) -> serde_json::Value {
    serde_json::json!({"data": {"type": "order", "id": "o-1", "note": "x".repeat(size)}})
}

/// SQS batches of `concurrency` jobs for `integration`, `n` jobs in all, each event
/// padded so that the webhook body is about `size` bytes.
fn batches(
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
                payload: payload(size),
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn range(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

async fn integration(
    components: &Components,
    url: &str,
    secret: Option<&str>,
) -> Result<Integration, String> {
    let now = Utc::now();
    let i = Integration {
        id: Uuid::now_v7(),
        store_id: StoreId::parse("bench").ok_or("store id")?,
        name: "bench".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["order.paid".into()],
        target: Target::Webhook(WebhookConfig {
            url: url.to_owned(),
            secret_key: secret.map(Secret::new),
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
    };
    match components.integrations.insert(&i, 100).await {
        Ok(InsertOutcome::Inserted) => Ok(i),
        other => Err(format!("inserting the integration: {other:?}")),
    }
}

async fn run(runs: usize) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("receiver")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the receiver: {e}"))?;
    let port = child
        .stdout
        .take()
        .and_then(|out| BufReader::new(out).lines().next())
        .and_then(|l| l.ok())
        .and_then(|l| l.trim().parse::<u16>().ok())
        .ok_or("the receiver did not name its port")?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let result = bench(&url, runs).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn bench(url: &str, runs: usize) -> Result<String, String> {
    let mut settings = PipelineSettings::memory();
    settings.webhook_timeout = Duration::from_secs(10);
    let components = Components::build(&settings, false)
        .await
        .map_err(|e| e.to_string())?;
    let fanout = Arc::new(components.fanout().map_err(|e| e.to_string())?);
    let unsigned = integration(&components, url, None).await?;
    let signed = integration(
        &components,
        url,
        Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    )
    .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;

    let mut table = String::from(
        "| body | concurrency | raw loop (events/s) | fan-out (events/s) | R_tput | fan-out signed (events/s) | R_sign | CPU/event raw (µs) | CPU/event fan-out (µs) | CPU ratio |\n|---|---:|---:|---:|---|---:|---|---:|---:|---:|\n",
    );
    for size in [1024usize, 16 * 1024] {
        for concurrency in [10usize, 64] {
            let n = if size > 4096 { 10_000 } else { 20_000 };
            // The raw loop posts the very body the fan-out sends.
            let sample_job = DeliveryJob::new(
                &unsigned.store_id,
                unsigned.id,
                Event {
                    id: "bench".into(),
                    kind: "order.paid".into(),
                    occurred_at: Utc::now(),
                    payload: payload(size),
                },
                Utc::now(),
            );
            let body = Arc::new(herald_core::delivery::envelope::webhook_body(
                &sample_job,
                &unsigned,
                1,
            ));
            let (mut raw, mut plain, mut sign) = (Vec::new(), Vec::new(), Vec::new());
            // Run 0 warms up (connections, allocator) and is not counted.
            for run in 0..=runs {
                let r = raw_loop(&client, url, &body, n, concurrency).await?;
                let f =
                    fanout_run(&fanout, batches(&unsigned, size, n, concurrency, run), n).await?;
                let s = fanout_run(
                    &fanout,
                    batches(&signed, size, n, concurrency, run + 1000),
                    n,
                )
                .await?;
                if run > 0 {
                    raw.push(r);
                    plain.push(f);
                    sign.push(s);
                }
            }
            let ratios: Vec<f64> = raw
                .iter()
                .zip(&plain)
                .map(|(r, f)| f.rate / r.rate)
                .collect();
            let sign_ratios: Vec<f64> = plain
                .iter()
                .zip(&sign)
                .map(|(f, s)| s.rate / f.rate)
                .collect();
            let cpu_raw = median(raw.iter().map(|s| s.cpu_us).collect());
            let cpu_fan = median(plain.iter().map(|s| s.cpu_us).collect());
            let (rmin, rmax) = range(&ratios);
            let (smin, smax) = range(&sign_ratios);
            table.push_str(&format!(
                "| {} KiB | {concurrency} | {:.0} | {:.0} | **{:.2}** ({rmin:.2}–{rmax:.2}) | {:.0} | **{:.2}** ({smin:.2}–{smax:.2}) | {cpu_raw:.0} | {cpu_fan:.0} | {:.2} |\n",
                size / 1024,
                median(raw.iter().map(|s| s.rate).collect()),
                median(plain.iter().map(|s| s.rate).collect()),
                median(ratios.clone()),
                median(sign.iter().map(|s| s.rate).collect()),
                median(sign_ratios.clone()),
                cpu_fan / cpu_raw.max(1e-9),
            ));
        }
    }
    Ok(format!(
        "{table}\nmedian of {runs} runs after a warm-up (min–max of the per-run ratios); fan-out = the fanout function's handler, one batch of `concurrency` records at a time; raw loop = `concurrency` tasks posting the same body with reqwest; receiver in its own process on 127.0.0.1\n"
    ))
}
