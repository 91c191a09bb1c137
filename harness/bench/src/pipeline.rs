//! End to end through the dev server (`herald-local`): events posted to
//! `POST /v2/events`, through ingest, the queue and the fan-out pollers, to the
//! receiver, which counts them. Once with the embedded backend, once on moto.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::receiver::Receiver;
use crate::stats::spread;
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
    /// Starts `herald-local` on a free loopback port and reads where it listens.
    fn start(binary: &Path, env: &[(String, String)], log: &Path) -> Result<Self, String> {
        let err = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let mut child = Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
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
                    "herald-local did not start (see {}): {line:?}",
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
        "| pipeline through the dev server (POST /v2/events → ingest → queue → 4 fan-out pollers → receiver) | events | events/s |\n|---|---:|---|\n",
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
