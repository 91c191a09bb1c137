//! Herald's fault-injection suite. Each scenario runs the embedded pipeline — the
//! same ingest, internal queue semantics (visibility, receive counts, DLQ) and
//! fan-out handler as the dev server — against a [`receiver::Receiver`] on 127.0.0.1
//! that fails on purpose, and accounts for every event: delivered, or in the DLQ.
//!
//! The customer-queue scenario delivers to a real SQS queue in moto through
//! [`sqs_proxy::SqsProxy`], which throttles the sends it is told to.
//!
//! The retry schedule is compressed with `retry_scale` (the 30-minute budget becomes
//! `30 min × scale`); everything else is the production code path. `make reliability`
//! runs the full sizes and prints the table; `make test` runs the same scenarios at
//! small sizes (`tests/fast.rs`).

pub mod receiver;
pub mod scenarios;
pub mod sqs_proxy;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use chrono::Utc;
use herald_core::config::PipelineSettings;
use herald_core::delivery::sqs::SqsDeliverer;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::TargetDeliverer;
use herald_core::fanout::{self, Fanout};
use herald_core::ingest::{EventResult, Ingest};
use herald_core::job::DeliveryJob;
use herald_core::memory::MemoryQueue;
use herald_core::model::{Integration, SqsAuth, SqsConfig, StoreId, Target, WebhookConfig};
use herald_core::ports::InsertOutcome;
use herald_core::retry::RetryPolicy;
use herald_core::wiring::Components;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The delivery budget Herald promises, before scaling.
pub const BUDGET: Duration = Duration::from_secs(30 * 60);

/// The longest a STOMP attempt takes in the pipeline (the wiring's broker timeout):
/// scenarios with a broker that never answers wait that much longer to drain.
pub const STOMP_ATTEMPT: Duration = herald_core::wiring::STOMP_TIMEOUT;

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Every secret the scenarios gave an integration (for the log scan).
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Remembers a secret handed to an integration.
fn remember_secret(secret: &str) {
    SECRETS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(secret.to_owned());
}

/// The secrets handed out so far.
pub fn secrets() -> Vec<String> {
    SECRETS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A fresh Standard Webhooks secret (`whsec_` + 24 random bytes, base64).
fn webhook_secret() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..24).map(|_| fastrand::u8(..)).collect();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}
static HOOK: Once = Once::new();

/// Counts every panic in the process from now on (the default hook still prints it).
pub fn count_panics() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// Panics counted so far.
pub fn panics() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

/// How big and how fast a run is.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Events of the flaky-receiver scenario.
    pub flaky_events: usize,
    /// Events of the other scenarios.
    pub events: usize,
    /// Concurrent posts of the same event in the idempotency scenario.
    pub same_event_posts: usize,
    /// Retry-schedule compression.
    pub retry_scale: f64,
    /// Webhook timeout.
    pub webhook_timeout: Duration,
    /// Concurrent fan-out pollers (Lambda's concurrent invocations).
    pub pollers: usize,
    /// `HERALD_AUTO_DISABLE_AFTER` (0 in the scenarios that count jobs into the DLQ:
    /// a disabled integration's remaining jobs are discarded, not dead-lettered).
    pub auto_disable_after: u32,
    /// Jobs of the dead-endpoint scenario on the embedded queue.
    pub dead_endpoint_jobs: usize,
    /// Jobs of the dead-endpoint scenario on SQS in moto (whose ReceiveMessage
    /// slows with every message in the queue).
    pub dead_endpoint_jobs_on_moto: usize,
}

impl Size {
    /// `make reliability`.
    pub const FULL: Size = Size {
        flaky_events: 100_000,
        events: 2_000,
        same_event_posts: 1_000,
        retry_scale: 0.01,
        webhook_timeout: Duration::from_secs(2),
        pollers: 64,
        auto_disable_after: 0,
        dead_endpoint_jobs: 5_000,
        dead_endpoint_jobs_on_moto: 300,
    };
    /// The subset `make test` runs.
    pub const FAST: Size = Size {
        flaky_events: 1_000,
        events: 200,
        same_event_posts: 200,
        retry_scale: 0.005,
        webhook_timeout: Duration::from_secs(1),
        pollers: 8,
        auto_disable_after: 0,
        dead_endpoint_jobs: 5_000,
        dead_endpoint_jobs_on_moto: 200,
    };

    /// The scaled delivery budget.
    pub fn budget(&self) -> Duration {
        BUDGET.mul_f64(self.retry_scale)
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Events sent.
    pub events: usize,
    /// Deliveries expected (events × observing integrations).
    pub expected: usize,
    /// Expected deliveries neither delivered nor in the DLQ.
    pub lost: usize,
    /// Deliveries beyond the first.
    pub duplicates: usize,
    /// Deliveries first accepted within the scaled budget.
    pub within_budget: usize,
    /// Jobs in the DLQ.
    pub dead_lettered: usize,
    /// Named checks and whether they held.
    pub checks: Vec<(String, bool)>,
    /// Figures worth printing (injected faults, latencies).
    pub notes: String,
}

impl Report {
    /// Lost = 0 and every check held.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.checks.iter().all(|(_, ok)| *ok)
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Scans captured log output for every secret handed out, and for credentials in
/// headers: the "secrets" row of the table.
pub fn secrets_report(log: &str) -> Report {
    let secrets = secrets();
    let lower = log.to_ascii_lowercase();
    let leaked: usize = secrets
        .iter()
        .map(|s| log.matches(s.as_str()).count())
        .sum();
    let headers = ["authorization:", "x-moltin-secret-key", "passcode:"]
        .iter()
        .map(|h| lower.matches(h).count())
        .sum::<usize>();
    let lines = log.lines().count();
    Report {
        scenario: "secrets in the captured logs of every scenario".into(),
        events: lines,
        expected: 0,
        lost: 0,
        duplicates: 0,
        within_budget: 0,
        dead_lettered: 0,
        checks: vec![
            ("secrets were handed out".into(), !secrets.is_empty()),
            ("logs were captured".into(), lines > 0),
            ("0 secrets in the logs".into(), leaked == 0),
            ("0 credential headers in the logs".into(), headers == 0),
        ],
        notes: format!(
            "{lines} log lines scanned for {} secrets (webhook keys, broker passwords): {leaked} found; credential headers: {headers}",
            secrets.len()
        ),
    }
}

/// The table `make reliability` prints (Markdown).
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | events | deliveries | lost | duplicates | within budget | DLQ | result | notes |\n|---|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in reports {
        let result = if r.passed() {
            "pass".to_owned()
        } else {
            format!("FAIL ({})", r.failures().join(", "))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} | {} |\n",
            r.scenario,
            r.events,
            r.expected,
            r.lost,
            r.duplicates,
            r.within_budget,
            r.expected,
            r.dead_lettered,
            result,
            r.notes
        ));
    }
    out
}

/// The embedded pipeline with its pollers running.
pub struct Pipeline {
    /// Every adapter.
    pub components: Components,
    /// The ingest use case.
    pub ingest: Ingest,
    /// The internal queue (for the DLQ and for injecting raw messages).
    pub queue: Arc<MemoryQueue>,
    /// The retry schedule in force.
    pub retry: RetryPolicy,
    /// How many pollers run.
    pub poller_count: usize,
    stop: watch::Sender<bool>,
    pollers: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Builds the embedded pipeline for `size` and starts its pollers.
    pub async fn start(size: &Size) -> Result<Self, String> {
        Self::start_with(size, None).await
    }

    /// The embedded pipeline with `sqs` delivering to customer queues in place of the
    /// process's default SQS client: the wiring of `Components::deliverer`, with an
    /// [`SqsDeliverer`] built on another AWS configuration (e.g. `moto_config` of a
    /// proxy in front of moto). Webhooks are delivered as usual; STOMP is not wired.
    pub async fn start_with_customer_sqs(size: &Size, sqs: SqsDeliverer) -> Result<Self, String> {
        Self::start_with(size, Some(sqs)).await
    }

    async fn start_with(size: &Size, customer_sqs: Option<SqsDeliverer>) -> Result<Self, String> {
        let mut settings = PipelineSettings::memory();
        settings.retry_scale = size.retry_scale;
        settings.webhook_timeout = size.webhook_timeout;
        settings.auto_disable_after = size.auto_disable_after;
        let components = Components::build(&settings, false)
            .await
            .map_err(|e| e.to_string())?;
        let ingest = components.ingest().map_err(|e| e.to_string())?;
        let fanout = Arc::new(match customer_sqs {
            None => components.fanout().map_err(|e| e.to_string())?,
            Some(sqs) => {
                let guard = settings.address_guard.clone();
                let webhook = WebhookDeliverer::new(guard, settings.webhook_timeout)?;
                let deliverer = TargetDeliverer::new(Arc::new(webhook)).with_sqs(Arc::new(sqs));
                Fanout::new(
                    components.cache.clone(),
                    Arc::new(deliverer),
                    components.log.clone(),
                    components.queue.clone().ok_or("no job queue")?,
                    RetryPolicy::scaled(settings.retry_scale),
                )
                .with_auto_disable(settings.auto_disable_after)
            }
        });
        let queue = components
            .memory_queue
            .clone()
            .ok_or("the embedded backend has a memory queue")?;
        let source = components.source.clone().ok_or("no job source")?;
        let (stop, stopped) = watch::channel(false);
        let deadline = size.webhook_timeout + Duration::from_secs(15);
        let pollers = (0..size.pollers)
            .map(|_| {
                tokio::spawn(fanout::poll(
                    source.clone(),
                    fanout.clone(),
                    deadline,
                    stopped.clone(),
                ))
            })
            .collect();
        Ok(Self {
            components,
            ingest,
            queue,
            retry: RetryPolicy::scaled(size.retry_scale),
            poller_count: size.pollers,
            stop,
            pollers,
        })
    }

    /// Registers an enabled webhook integration observing `order.paid`, with a
    /// signing secret of its own (so deliveries are signed, and the log scan has
    /// something to look for).
    pub async fn add_webhook(&self, store: &StoreId, url: String) -> Result<Uuid, String> {
        let secret = webhook_secret();
        remember_secret(&secret);
        self.register(
            store,
            "reliability",
            Target::Webhook(WebhookConfig {
                url,
                secret_key: Some(herald_core::model::Secret::new(secret)),
                retiring: None,
            }),
        )
        .await
    }

    /// Registers an enabled STOMP integration observing `order.paid`.
    pub async fn add_stomp(
        &self,
        store: &StoreId,
        address: &str,
        destination: &str,
        password: &str,
    ) -> Result<Uuid, String> {
        remember_secret(password);
        self.register(
            store,
            "reliability-stomp",
            Target::Stomp(herald_core::model::StompConfig {
                addresses: vec![address.to_owned()],
                destination: destination.to_owned(),
                username: "herald".into(),
                password: herald_core::model::Secret::new(password),
                virtual_host: None,
            }),
        )
        .await
    }

    /// Inserts an enabled integration of `store` named `name` observing `order.paid`.
    async fn register(&self, store: &StoreId, name: &str, target: Target) -> Result<Uuid, String> {
        let now = Utc::now();
        let integration = Integration {
            id: Uuid::now_v7(),
            store_id: store.clone(),
            name: name.into(),
            description: String::new(),
            enabled: true,
            observes: vec!["order.paid".into()],
            target,
            created_at: now,
            updated_at: now,
            version: 1,
            health: Default::default(),
            delivery: Default::default(),
        };
        match self
            .components
            .integrations
            .insert(&integration, 1000)
            .await
        {
            Ok(InsertOutcome::Inserted) => Ok(integration.id),
            other => Err(format!("inserting an integration: {other:?}")),
        }
    }

    /// Registers an enabled customer-SQS integration observing `order.paid`, sending
    /// to `queue_url` with static keys (the secret key goes to the log scan).
    pub async fn add_sqs(&self, store: &StoreId, queue_url: &str) -> Result<Uuid, String> {
        let secret = webhook_secret();
        remember_secret(&secret);
        self.register(
            store,
            "reliability-sqs",
            Target::AwsSqs(SqsConfig {
                url: queue_url.to_owned(),
                region: "us-east-1".into(),
                auth: SqsAuth::Keys {
                    access_key_id: herald_core::model::Secret::new("AKIAIOSFODNN7RELIABLE"),
                    secret_access_key: herald_core::model::Secret::new(secret),
                },
            }),
        )
        .await
    }

    /// Ingests `events` in requests of at most 100, `parallel` requests at a time.
    pub async fn send(
        self: &Arc<Self>,
        store: &StoreId,
        events: Vec<Value>,
        parallel: usize,
    ) -> Vec<EventResult> {
        let chunks: Vec<Vec<Value>> = events
            .chunks(herald_core::ingest::MAX_EVENTS_PER_REQUEST)
            .map(<[Value]>::to_vec)
            .collect();
        let mut results = Vec::new();
        for group in chunks.chunks(parallel.max(1)) {
            let mut tasks = Vec::new();
            for chunk in group {
                let (this, store, chunk) = (self.clone(), store.clone(), chunk.clone());
                tasks.push(tokio::spawn(async move {
                    this.ingest
                        .ingest(&chunk, Some(&store), |i| format!("/data/{i}"))
                        .await
                }));
            }
            for t in tasks {
                if let Ok(r) = t.await {
                    results.extend(r);
                }
            }
        }
        results
    }

    /// Event ids of the jobs in the DLQ, with their integration ids.
    pub fn dead_letters(&self) -> HashSet<(String, String)> {
        self.queue
            .dead_letters()
            .iter()
            .filter_map(|body| DeliveryJob::parse(body).ok())
            .map(|j| (j.event.id, j.integration_id.to_string()))
            .collect()
    }

    /// Stops the pollers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for p in self.pollers {
            let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
        }
    }
}

/// An `order.paid` event with a given id.
pub fn event(id: &str) -> Value {
    serde_json::json!({
        "id": id,
        "type": "order.paid",
        "payload": {"data": {"type": "order", "id": id, "status": "paid"}},
    })
}

/// Waits until `done` holds, checking every 50 ms, for at most `limit`.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
