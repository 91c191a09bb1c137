//! Helpers for the core's own unit tests, and (feature `testkit`) for its integration
//! tests, the other crates' tests and the harness.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::job::{DeliveryJob, Event};
use crate::memory::MemoryIntegrationStore;
use crate::model::{Integration, Secret, StompConfig, StoreId, Target, WebhookConfig};
use crate::ports::IntegrationStore;

/// The store id `s` (which must be valid).
pub fn store(s: &str) -> StoreId {
    StoreId::parse(s).expect("store id")
}

/// A webhook integration named `name` of store `store_id` to `https://example.com/<name>`.
pub fn webhook(name: &str, store_id: &str, observes: &[&str], enabled: bool) -> Integration {
    let now = Utc::now();
    Integration {
        id: Uuid::now_v7(),
        store_id: store(store_id),
        name: name.into(),
        description: String::new(),
        enabled,
        observes: observes.iter().map(|s| s.to_string()).collect(),
        target: Target::Webhook(WebhookConfig {
            url: format!("https://example.com/{name}"),
            secret_key: None,
            retiring: None,
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        delivery: Default::default(),
    }
}

/// An enabled webhook integration named `name` of store `store_id` to `url`, observing
/// `order.paid`.
pub fn webhook_to(name: &str, store_id: &str, url: &str) -> Integration {
    Integration {
        target: Target::Webhook(WebhookConfig {
            url: url.into(),
            secret_key: None,
            retiring: None,
        }),
        ..webhook(name, store_id, &["order.paid"], true)
    }
}

/// A STOMP integration of store `s` to `addresses`, observing `order.paid`.
pub fn stomp(addresses: &[&str]) -> Integration {
    let mut i = webhook("broker", "s", &["order.paid"], true);
    i.target = Target::Stomp(StompConfig {
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        destination: "/queue/orders".into(),
        username: "herald".into(),
        password: Secret::new("a-broker-password"),
        virtual_host: None,
    });
    i
}

/// A job of `i` for an event of the first kind it observes.
pub fn job_for(i: &Integration) -> DeliveryJob {
    let event = Event {
        id: format!("evt-{}", i.name),
        kind: i.observes[0].clone(),
        occurred_at: Utc::now(),
        payload: serde_json::json!({"data": {"id": "1"}}).into(),
    };
    DeliveryJob::new(&i.store_id, i.id, event, Utc::now())
}

/// An embedded integration store holding `integrations`.
pub async fn seeded(integrations: &[&Integration]) -> Arc<MemoryIntegrationStore> {
    let store = Arc::new(MemoryIntegrationStore::new());
    for i in integrations {
        store.insert(i, 100).await.expect("insert");
    }
    store
}

/// An integration store that counts reads (`get` and `list`).
pub struct Counting {
    inner: Arc<MemoryIntegrationStore>,
    reads: std::sync::atomic::AtomicUsize,
}

impl Counting {
    /// Counting the reads of `inner`.
    pub fn new(inner: Arc<MemoryIntegrationStore>) -> Self {
        Self {
            inner,
            reads: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The reads so far.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn read(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl IntegrationStore for Counting {
    async fn insert(
        &self,
        i: &Integration,
        m: usize,
    ) -> crate::Result<crate::ports::InsertOutcome> {
        self.inner.insert(i, m).await
    }
    async fn get(&self, s: &StoreId, id: Uuid) -> crate::Result<Option<Integration>> {
        self.read();
        self.inner.get(s, id).await
    }
    async fn list(&self, s: &StoreId) -> crate::Result<Vec<Integration>> {
        self.read();
        self.inner.list(s).await
    }
    async fn replace(
        &self,
        i: &Integration,
        v: u64,
    ) -> crate::Result<crate::ports::ReplaceOutcome> {
        self.inner.replace(i, v).await
    }
    async fn delete(&self, s: &StoreId, id: Uuid) -> crate::Result<bool> {
        self.inner.delete(s, id).await
    }
    async fn external_id(&self, s: &StoreId) -> crate::Result<String> {
        self.inner.external_id(s).await
    }
    async fn record_health(
        &self,
        s: &StoreId,
        id: Uuid,
        r: &crate::model::HealthReport,
    ) -> crate::Result<Option<crate::model::HealthChange>> {
        self.inner.record_health(s, id, r).await
    }
}

/// A writer that keeps what is written to it and counts the writes; its clones
/// share both (a log subscriber's or the metrics' output, read back by the test).
#[derive(Clone, Default)]
pub struct Captured {
    bytes: Arc<std::sync::Mutex<Vec<u8>>>,
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.lock().expect("captured").clone()).expect("utf-8")
    }

    /// How many writes it took.
    pub fn writes(&self) -> usize {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.bytes.lock().expect("captured").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One batch a [`Recording`] queue was given: where it went, and its entries' sizes
/// and delays.
#[derive(Clone, Debug, PartialEq)]
pub struct SentBatch {
    /// `true`: to the dead-letter queue.
    pub dead: bool,
    /// Each entry's message size, in bytes.
    pub sizes: Vec<usize>,
    /// Each entry's delay.
    pub delays: Vec<std::time::Duration>,
}

/// The embedded queue, keeping every batch it was given (what a sender builds).
pub struct Recording {
    /// The queue the batches go on to.
    pub inner: Arc<crate::memory::MemoryQueue>,
    batches: std::sync::Mutex<Vec<SentBatch>>,
}

impl Recording {
    /// Recording what goes to `inner`.
    pub fn new(inner: Arc<crate::memory::MemoryQueue>) -> Self {
        Self {
            inner,
            batches: Default::default(),
        }
    }

    /// The batches so far.
    pub fn batches(&self) -> Vec<SentBatch> {
        self.batches.lock().expect("batches").clone()
    }

    fn keep(&self, jobs: &[crate::ports::OutgoingJob], dead: bool) {
        self.batches.lock().expect("batches").push(SentBatch {
            dead,
            sizes: jobs.iter().map(crate::queue::message_bytes).collect(),
            delays: jobs.iter().map(|j| j.delay).collect(),
        });
    }
}

#[async_trait::async_trait]
impl crate::ports::JobQueue for Recording {
    async fn send_batch(
        &self,
        jobs: &[crate::ports::OutgoingJob],
    ) -> crate::Result<Vec<crate::ports::SendFailure>> {
        self.keep(jobs, false);
        self.inner.send_batch(jobs).await
    }
    async fn change_visibility(
        &self,
        receipt: &str,
        delay: std::time::Duration,
    ) -> crate::Result<()> {
        self.inner.change_visibility(receipt, delay).await
    }
    async fn dead_letter(
        &self,
        jobs: &[crate::ports::OutgoingJob],
    ) -> crate::Result<Vec<crate::ports::SendFailure>> {
        self.keep(jobs, true);
        self.inner.dead_letter(jobs).await
    }
}
