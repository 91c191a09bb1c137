//! Hostile endpoints must never hold Herald's resources past an attempt: peers on
//! 127.0.0.1 that accept connections and never finish the exchange (a TLS tarpit, a
//! slow-drip HTTP answer, a STOMP broker that floods receipts for other sends). Each
//! test checks that the attempt ends by its deadline as a failure that says why, and
//! that afterwards the peer holds no connection from Herald.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald_core::attempt::{DeliveryResult, JobStatus, Outcome};
use herald_core::cache::IntegrationCache;
use herald_core::delivery::sqs::SqsDeliverer;
use herald_core::delivery::stomp::StompDeliverer;
use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::delivery::{DeliverTo, TargetDeliverer};
use herald_core::fanout::Fanout;
use herald_core::filter::Filter;
use herald_core::job::{DeliveryJob, Event};
use herald_core::memory::{MemoryDeliveryLog, MemoryIntegrationStore, MemoryQueue};
use herald_core::model::{
    Integration, Secret, SqsAuth, SqsConfig, StompConfig, Target, WebhookConfig,
};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_core::page::Page;
use herald_core::ports::{DeliveryLog, IntegrationStore, JobQueue, JobSource, OutgoingJob};
use herald_core::retry::RetryPolicy;
use herald_core::testkit::webhook;
use herald_testkit::hostile::{Behaviour, Hostile};
use serde_json::json;

/// How long the tests wait, at most, for a peer's connections to close.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// An outer bound on any one attempt in these tests: far past every deadline set
/// here, so reaching it means the deadline did not hold.
const RUNAWAY: Duration = Duration::from_secs(60);

fn loopback() -> AddressGuard {
    AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")])
}

fn integration(store: &str, target: Target) -> Integration {
    Integration {
        target,
        ..webhook(store, store, &["order.paid"], true)
    }
}

fn webhook_to(url: &str) -> Target {
    Target::Webhook(WebhookConfig {
        url: url.into(),
        secret_key: Some(Secret::new("a-test-signing-secret")),
        retiring: None,
    })
}

fn stomp_to(address: &str) -> Target {
    Target::Stomp(StompConfig {
        addresses: vec![address.into()],
        destination: "/queue/orders".into(),
        username: "herald".into(),
        password: Secret::new("a-test-broker-password"),
        virtual_host: None,
    })
}

fn job(i: &Integration, n: usize) -> DeliveryJob {
    let event = Event {
        id: format!("evt-{n}"),
        kind: "order.paid".into(),
        occurred_at: Utc::now(),
        payload: json!({"data": {"id": format!("order-{n}"), "type": "order"}}).into(),
    };
    DeliveryJob::new(&i.store_id, i.id, event, Utc::now())
}

/// Runs `n` attempts at `i`, whose configuration `config` takes out, one after
/// another, each bounded by [`RUNAWAY`]; returns their results.
async fn attempts<C: Sync>(
    deliverer: &dyn DeliverTo<C>,
    config: fn(&Integration) -> &C,
    i: &Integration,
    n: usize,
) -> Vec<DeliveryResult> {
    let mut results = Vec::new();
    for k in 0..n {
        let result = tokio::time::timeout(RUNAWAY, deliverer.deliver(i, config(i), &job(i, k), 1))
            .await
            .expect("the attempt ended by its deadline");
        results.push(result);
    }
    results
}

/// `i`'s webhook configuration, as the dispatcher hands it to the deliverer.
fn webhook_config(i: &Integration) -> &WebhookConfig {
    match &i.target {
        Target::Webhook(config) => config,
        other => panic!("not a webhook target: {other:?}"),
    }
}

/// `i`'s aws_sqs configuration, as the dispatcher hands it to the deliverer.
fn sqs_config(i: &Integration) -> &SqsConfig {
    match &i.target {
        Target::AwsSqs(config) => config,
        other => panic!("not a aws_sqs target: {other:?}"),
    }
}

/// `i`'s STOMP configuration, as the dispatcher hands it to the deliverer.
fn stomp_config(i: &Integration) -> &StompConfig {
    match &i.target {
        Target::Stomp(config) => config,
        other => panic!("not a STOMP target: {other:?}"),
    }
}

fn assert_failed_with(results: &[DeliveryResult], says: &str) {
    for r in results {
        assert_eq!(r.outcome, Outcome::Retryable { retry_after: None }, "{r:?}");
        let detail = r.error_detail.as_deref().unwrap_or_default();
        assert!(detail.contains(says), "{detail:?} does not say {says:?}");
    }
}

#[tokio::test]
async fn a_tls_tarpit_keeps_no_webhook_connection_once_the_attempts_are_over() {
    let tarpit = Hostile::start(Behaviour::Tarpit).await;
    let deliverer =
        WebhookDeliverer::new(loopback(), Duration::from_millis(300)).expect("deliverer");
    let i = integration("s", webhook_to(&format!("https://{}/hook", tarpit.addr)));
    let results = attempts(&deliverer, webhook_config, &i, 5).await;
    assert_failed_with(&results, "no answer within 300 ms");
    assert!(tarpit.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(
        tarpit.all_closed_within(CLOSE_LIMIT).await,
        "{:?} connections still open",
        tarpit.open
    );
}

#[tokio::test]
async fn a_slow_drip_answer_keeps_no_webhook_connection_once_the_attempts_are_over() {
    let drip = Hostile::start(Behaviour::SlowDrip).await;
    let deliverer =
        WebhookDeliverer::new(loopback(), Duration::from_millis(400)).expect("deliverer");
    let i = integration("s", webhook_to(&format!("http://{}/hook", drip.addr)));
    let results = attempts(&deliverer, webhook_config, &i, 3).await;
    assert_failed_with(&results, "no answer within 400 ms");
    assert!(
        drip.all_closed_within(CLOSE_LIMIT).await,
        "{:?} connections still open",
        drip.open
    );
}

#[tokio::test]
async fn a_broker_flooding_other_receipts_is_cut_at_the_attempts_deadline() {
    let broker = Hostile::start(Behaviour::StompReceiptFlood).await;
    let deliverer = StompDeliverer::new(loopback(), &[], Duration::from_millis(700))
        .expect("deliverer")
        .dangerous_allow_plain(true);
    let i = integration("s", stomp_to(&format!("stomp://{}", broker.addr)));
    let results = attempts(&deliverer, stomp_config, &i, 2).await;
    assert_failed_with(&results, "by the attempt's deadline");
    assert!(
        broker.all_closed_within(CLOSE_LIMIT).await,
        "{:?} connections still open",
        broker.open
    );
}

#[tokio::test]
async fn a_stomp_tls_tarpit_is_cut_at_the_attempts_deadline() {
    let tarpit = Hostile::start(Behaviour::Tarpit).await;
    let deliverer =
        StompDeliverer::new(loopback(), &[], Duration::from_millis(500)).expect("deliverer");
    let i = integration("s", stomp_to(&format!("stomp+ssl://{}", tarpit.addr)));
    let results = attempts(&deliverer, stomp_config, &i, 2).await;
    assert_failed_with(&results, "by the attempt's deadline");
    assert!(
        tarpit.all_closed_within(CLOSE_LIMIT).await,
        "{:?} connections still open",
        tarpit.open
    );
}

#[tokio::test]
async fn a_customer_sqs_endpoint_that_never_answers_is_cut_at_the_attempts_deadline() {
    let tarpit = Hostile::start(Behaviour::Tarpit).await;
    let sdk = herald_core::aws::local::moto_config(&format!("http://{}", tarpit.addr))
        .await
        .expect("config");
    let deliverer = SqsDeliverer::new(sdk).with_timeout(Duration::from_millis(800));
    let i = integration(
        "s",
        Target::AwsSqs(SqsConfig {
            url: "https://sqs.us-east-1.amazonaws.com/123456789012/orders".into(),
            region: "us-east-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("AKIAFIXTUREFIXTURE00"),
                secret_access_key: Secret::new("fixture-not-a-secret"),
            },
        }),
    );
    let results = attempts(&deliverer, sqs_config, &i, 2).await;
    assert_failed_with(&results, "no answer");
    assert!(
        tarpit.all_closed_within(CLOSE_LIMIT).await,
        "{:?} connections still open",
        tarpit.open
    );
}

/// A fan-out over every target, whose attempts it cuts after `limit` (shorter than
/// the targets' own 20 s timeouts), and one job queued per integration.
async fn fanout_cutting_at(
    limit: Duration,
    integrations: &[&Integration],
) -> (Fanout, Arc<MemoryQueue>, Arc<MemoryDeliveryLog>) {
    let store = Arc::new(MemoryIntegrationStore::new());
    for i in integrations {
        store.insert(i, 100).await.expect("insert");
    }
    let long = Duration::from_secs(20);
    let deliverer = TargetDeliverer::new(Arc::new(
        WebhookDeliverer::new(loopback(), long).expect("webhook"),
    ))
    .with_stomp(Arc::new(
        StompDeliverer::new(loopback(), &[], long)
            .expect("stomp")
            .dangerous_allow_plain(true),
    ));
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 6));
    let log = Arc::new(MemoryDeliveryLog::default());
    let fanout = Fanout::new(
        Arc::new(IntegrationCache::new(store, Duration::from_secs(5))),
        Arc::new(deliverer),
        log.clone(),
        queue.clone(),
        RetryPolicy::scaled(0.0),
    )
    .with_attempt_limit(limit);
    let entries: Vec<OutgoingJob> = integrations
        .iter()
        .enumerate()
        .map(|(n, i)| OutgoingJob {
            entry_id: n.to_string(),
            body: job(i, n).to_body(),
            delay: std::time::Duration::ZERO,
        })
        .collect();
    assert!(queue.send_batch(&entries).await.expect("send").is_empty());
    (fanout, queue, log)
}

#[tokio::test]
async fn an_attempt_cut_by_the_fanout_closes_what_it_had_open_and_the_other_store_is_delivered() {
    // GIVEN one store behind a TLS tarpit, one behind a broker flooding receipts, and
    // a healthy store, in one batch
    let tarpit = Hostile::start(Behaviour::Tarpit).await;
    let flood = Hostile::start(Behaviour::StompReceiptFlood).await;
    let receiver = herald_testkit::receiver::Receiver::start().await;
    let stuck_tls = integration(
        "tarpit",
        webhook_to(&format!("https://{}/hook", tarpit.addr)),
    );
    let stuck_stomp = integration("flood", stomp_to(&format!("stomp://{}", flood.addr)));
    let healthy = integration("healthy", webhook_to(&receiver.url()));
    let (fanout, queue, log) = fanout_cutting_at(
        Duration::from_millis(800),
        &[&stuck_tls, &stuck_stomp, &healthy],
    )
    .await;

    // WHEN the batch runs
    let records = queue.receive(10, Duration::ZERO).await.expect("receive");
    let failed = tokio::time::timeout(RUNAWAY, fanout.process(records, None))
        .await
        .expect("the batch ended");

    // THEN the healthy store got its event, the two stuck attempts were cut, recorded
    // with their reason and retried (each sent again for attempt 2, so no record is
    // reported failed), and neither hostile peer holds a connection
    assert_eq!(receiver.received(), 1);
    assert!(failed.is_empty(), "{failed:?}");
    let mut retried = Vec::new();
    while let Ok(batch) = queue.receive(10, Duration::from_secs(1)).await {
        if batch.is_empty() {
            break;
        }
        retried.extend(batch.iter().map(|m| {
            let job = herald_core::job::DeliveryJob::parse(&m.body).expect("job");
            (job.integration_id, job.attempt)
        }));
        for m in batch {
            queue.delete(&m.receipt).await.expect("delete");
        }
    }
    retried.sort();
    let mut expected = vec![(stuck_tls.id, 2), (stuck_stomp.id, 2)];
    expected.sort();
    assert_eq!(retried, expected);
    for stuck in [&stuck_tls, &stuck_stomp] {
        let logs = log
            .integration_logs(
                &stuck.store_id,
                stuck.id,
                &Filter::default(),
                Page::default(),
            )
            .await
            .expect("logs")
            .items;
        assert_eq!(logs.len(), 1, "{}", stuck.name);
        assert_eq!(
            logs[0].error_detail.as_deref(),
            Some("cut short: the attempt did not finish within 0.8 s")
        );
        let jobs = log
            .integration_jobs(
                &stuck.store_id,
                stuck.id,
                &Filter::default(),
                Page::default(),
            )
            .await
            .expect("jobs")
            .items;
        assert_eq!(jobs[0].status, JobStatus::Retrying);
    }
    for peer in [&tarpit, &flood] {
        assert!(
            peer.all_closed_within(CLOSE_LIMIT).await,
            "{:?} connections still open",
            peer.open
        );
    }
}
