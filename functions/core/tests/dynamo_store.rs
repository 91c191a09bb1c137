//! The DynamoDB adapter against a real DynamoDB API: moto server on loopback.
//!
//! `make test` starts moto and sets `MOTO_ENDPOINT`. Run alone:
//! `infra/moto.sh start && MOTO_ENDPOINT=http://127.0.0.1:5000 cargo test -p herald-core --test dynamo_store`.

use std::sync::Arc;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::Utc;
use herald_core::aws::dynamo::DynamoIntegrationStore;
use herald_core::aws::kms::{ensure_local_key, KmsKeys};
use herald_core::aws::local::moto_config;
use herald_core::integrations::Integrations;
use herald_core::model::{
    DeliveryOptions, Integration, RetiringSecret, Secret, SqsAuth, SqsConfig, StompConfig, StoreId,
    Target, WebhookConfig,
};
use herald_core::ports::{InsertOutcome, IntegrationStore, ReplaceOutcome};
use herald_core::secrets::Vault;
use herald_core::validate::Policy;
use serde_json::json;
use uuid::Uuid;

/// The moto endpoint; refuses anything but loopback so no test talks to real AWS.
fn endpoint() -> String {
    let url = std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test`, or `infra/moto.sh start` and set MOTO_ENDPOINT=http://127.0.0.1:5000");
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:"),
        "MOTO_ENDPOINT must be on loopback, not {url}"
    );
    url
}

fn client() -> Client {
    client_at(endpoint())
}

/// moto serving one request at a time (`MOTO_SERIAL_ENDPOINT`): DynamoDB isolates
/// conditional writes and transactions, moto's threaded server does not, so tests
/// that race writers on purpose run here.
fn serial_endpoint() -> String {
    let url = std::env::var("MOTO_SERIAL_ENDPOINT")
        .expect("MOTO_SERIAL_ENDPOINT is not set: run `make test`");
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "moto must be on loopback"
    );
    url
}

fn client_at(url: String) -> Client {
    Client::from_conf(config_at(url))
}

fn config_at(url: String) -> aws_sdk_dynamodb::Config {
    aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .build()
}

/// A fresh table per test, so tests run in parallel without seeing each other.
/// Secrets are sealed with a KMS key of its own on the same moto server.
async fn fresh_store() -> DynamoIntegrationStore {
    fresh_store_on(endpoint()).await
}

async fn fresh_store_on(url: String) -> DynamoIntegrationStore {
    fresh_table_on(url).await.0
}

/// The store, and the table's name for scanning it.
async fn fresh_table_on(url: String) -> (DynamoIntegrationStore, String) {
    let (store, table, _vault) = fresh_vaulted_table_on(url).await;
    (store, table)
}

/// The store, its table's name, and its vault (to open a stored envelope).
async fn fresh_vaulted_table_on(url: String) -> (DynamoIntegrationStore, String, Arc<Vault>) {
    let client = client_at(url.clone());
    let table = format!("herald-test-{}", Uuid::new_v4());
    DynamoIntegrationStore::create_table(&client, &table)
        .await
        .expect("create table");
    let sdk = moto_config(&url).await.expect("moto config");
    let alias = ensure_local_key(&sdk, &format!("alias/herald-test-{}", Uuid::new_v4()))
        .await
        .expect("KMS key on moto");
    let vault = Arc::new(Vault::new(Arc::new(KmsKeys::from_sdk(&sdk, alias))));
    let store = DynamoIntegrationStore::new(client, table.clone()).with_vault(vault.clone());
    store.check_table().await.expect("table exists");
    (store, table, vault)
}

fn store_id(s: &str) -> StoreId {
    StoreId::parse(s).expect("store id")
}

fn integration(store: &str, target: Target) -> Integration {
    Integration {
        description: "with a description".into(),
        target,
        ..herald_core::testkit::webhook(
            "An integration",
            store,
            &["order.paid", "cart.updated"],
            true,
        )
    }
}

fn webhook() -> Target {
    Target::Webhook(WebhookConfig {
        url: "https://example.com/hook".into(),
        secret_key: Some(Secret::new("SOME_SECRET_KEY")),
        retiring: None,
    })
}

/// Timestamps are stored with millisecond precision.
fn at_ms(mut i: Integration) -> Integration {
    use chrono::{DurationRound, TimeDelta};
    let ms = TimeDelta::milliseconds(1);
    i.created_at = i.created_at.duration_trunc(ms).expect("trunc");
    i.updated_at = i.updated_at.duration_trunc(ms).expect("trunc");
    i
}

#[tokio::test]
async fn every_target_type_round_trips_through_dynamodb_exactly() {
    let store = fresh_store().await;
    let targets = [
        webhook(),
        Target::Webhook(WebhookConfig {
            url: "http://127.0.0.1:9000/no-secret".into(),
            secret_key: None,
            retiring: None,
        }),
        Target::AwsSqs(SqsConfig {
            url: "https://sqs.eu-west-1.amazonaws.com/123456789/epcc-external-queue".into(),
            region: "eu-west-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new("ASIAJLVYNHUWCPKOPSYQ"),
                secret_access_key: Secret::new("mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ"),
            },
        }),
        Target::AwsSqs(SqsConfig {
            url: "https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo".into(),
            region: "us-east-1".into(),
            auth: SqsAuth::AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/herald".into(),
                external_id: "store-42".into(),
            },
        }),
        Target::Stomp(StompConfig {
            addresses: vec![
                "stomp+ssl://b-1.mq.us-west-2.amazonaws.com:61614".into(),
                "stomp://b-2".into(),
            ],
            destination: "/queue/orders".into(),
            username: "user1".into(),
            password: Secret::new("*******d123"),
            virtual_host: Some("orders".into()),
        }),
    ];
    for target in targets {
        let original = at_ms(integration("s1", target));
        assert_eq!(
            store.insert(&original, 100).await.expect("insert"),
            InsertOutcome::Inserted
        );
        let read = store
            .get(&original.store_id, original.id)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(read, original);
    }
    let listed = store.list(&store_id("s1")).await.expect("list");
    assert_eq!(listed.len(), 5);
    let ids: Vec<_> = listed.iter().map(|i| i.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listed oldest first");
}

/// Every secret of every target type, as given.
const PLAINTEXT_SECRETS: [&str; 4] = [
    "SOME_SECRET_KEY",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "broker-passcode-1234",
];

fn targets_with_every_secret() -> Vec<Target> {
    vec![
        webhook(),
        Target::AwsSqs(SqsConfig {
            url: "https://sqs.us-east-1.amazonaws.com/123456789012/orders".into(),
            region: "us-east-1".into(),
            auth: SqsAuth::Keys {
                access_key_id: Secret::new(PLAINTEXT_SECRETS[1]),
                secret_access_key: Secret::new(PLAINTEXT_SECRETS[2]),
            },
        }),
        Target::Stomp(StompConfig {
            addresses: vec!["stomp+ssl://broker.example.com:61614".into()],
            destination: "/queue/orders".into(),
            username: "herald".into(),
            password: Secret::new(PLAINTEXT_SECRETS[3]),
            virtual_host: None,
        }),
    ]
}

#[tokio::test]
async fn a_scan_of_the_table_finds_no_plaintext_secret_only_masks_and_ciphertext() {
    let (store, table) = fresh_table_on(endpoint()).await;
    let mut written = Vec::new();
    for target in targets_with_every_secret() {
        let i = integration("store-secrets", target);
        store.insert(&i, 10).await.expect("insert");
        // An update writes the item again: it must be sealed again.
        let mut updated = i.clone();
        updated.version = 2;
        updated.name = "renamed".into();
        assert_eq!(
            store.replace(&updated, 1).await.expect("replace"),
            ReplaceOutcome::Replaced
        );
        written.push(updated);
    }
    let scan = client()
        .scan()
        .table_name(&table)
        .send()
        .await
        .expect("scan");
    let dump = format!("{:?}", scan.items());
    for secret in PLAINTEXT_SECRETS {
        assert!(!dump.contains(secret), "{secret} is in the table in clear");
        let tail = &secret[secret.len() - 4..];
        assert!(
            dump.contains(&herald_core::mask::mask(secret)),
            "the mask ending {tail} is stored"
        );
    }
    let sealed = scan
        .items()
        .iter()
        .filter(|item| item.get("secrets").is_some_and(|v| v.as_b().is_ok()))
        .count();
    assert_eq!(sealed, 3, "each integration's secrets are sealed beside it");
    // And they open back, exactly.
    for i in written {
        let got = store.get(&i.store_id, i.id).await.expect("get");
        assert_eq!(got, Some(at_ms(i)));
    }
}

#[tokio::test]
async fn without_the_key_a_store_reads_masks_and_refuses_to_write_secrets() {
    let (store, table) = fresh_table_on(endpoint()).await;
    let i = integration("store-masks", targets_with_every_secret().remove(1));
    store.insert(&i, 10).await.expect("insert");
    let keyless = DynamoIntegrationStore::new(client(), table);
    let read = keyless
        .get(&i.store_id, i.id)
        .await
        .expect("get")
        .expect("found");
    let cfg = read.target.configuration(true).to_string();
    assert!(
        !cfg.contains(PLAINTEXT_SECRETS[1]) && !cfg.contains(PLAINTEXT_SECRETS[2]),
        "{cfg}"
    );
    assert_eq!(read.observes, i.observes);
    let err = keyless
        .insert(&integration("store-masks", webhook()), 10)
        .await
        .expect_err("no key, no write of a secret");
    assert!(err.to_string().contains("HERALD_KMS_KEY_ID"), "{err}");
}

#[tokio::test]
async fn a_sealed_item_copied_to_another_integration_does_not_open() {
    let (store, table) = fresh_table_on(endpoint()).await;
    let i = integration("store-copy", webhook());
    store.insert(&i, 10).await.expect("insert");
    let raw = client()
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("STORE#store-copy".into()))
        .key("sk", AttributeValue::S(format!("INTEGRATION#{}", i.id)))
        .send()
        .await
        .expect("get item");
    let mut item = raw.item().cloned().expect("item");
    let other = Uuid::now_v7();
    item.insert(
        "sk".into(),
        AttributeValue::S(format!("INTEGRATION#{other}")),
    );
    item.insert("id".into(), AttributeValue::S(other.to_string()));
    client()
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put copy");
    let err = store
        .get(&i.store_id, other)
        .await
        .expect_err("the envelope is bound to its integration");
    assert!(!err.to_string().contains("SOME_SECRET_KEY"), "{err}");
}

#[tokio::test]
async fn health_reports_count_failed_jobs_disable_at_the_threshold_and_keep_the_secrets() {
    use herald_core::model::HealthReport;
    let store = fresh_store().await;
    let i = integration("store-health", webhook());
    store.insert(&i, 10).await.expect("insert");
    let failed = |n: u32| HealthReport::JobFailed {
        at: Utc::now(),
        disable_after: 2,
        reason: format!("HTTP 500 #{n}"),
    };
    let change = store
        .record_health(&i.store_id, i.id, &failed(1))
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(
        (
            change.before.consecutive_failures,
            change.after.consecutive_failures,
            change.disabled
        ),
        (0, 1, false)
    );
    let change = store
        .record_health(&i.store_id, i.id, &failed(2))
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(
        (
            change.before.consecutive_failures,
            change.after.consecutive_failures,
            change.disabled
        ),
        (1, 2, true)
    );
    let now = store
        .get(&i.store_id, i.id)
        .await
        .expect("get")
        .expect("found");
    assert!(!now.enabled);
    assert_eq!(now.version, 2, "disabling is a new version");
    assert!(now
        .health
        .disabled_reason
        .as_deref()
        .is_some_and(|r| r.contains("HTTP 500 #2")));
    assert_eq!(now.target, i.target, "the sealed secrets are untouched");
    // A success resets the count; an unknown integration is reported as gone.
    let change = store
        .record_health(
            &i.store_id,
            i.id,
            &HealthReport::Succeeded { at: Utc::now() },
        )
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(change.before.consecutive_failures, 2);
    assert_eq!(change.after.consecutive_failures, 0);
    assert!(change.after.last_success_at.is_some());
    assert_eq!(
        store
            .record_health(&i.store_id, Uuid::now_v7(), &failed(3))
            .await
            .expect("record"),
        None
    );
}

#[tokio::test]
async fn concurrent_failure_reports_each_count_once_and_one_alone_sees_the_first_failure() {
    use herald_core::model::HealthReport;
    // On the serial moto: DynamoDB's conditional writes are isolated, moto's threads
    // are not.
    let store = fresh_store_on(serial_endpoint()).await;
    let i = integration("store-health-race", webhook());
    store.insert(&i, 10).await.expect("insert");
    let failed = HealthReport::JobFailed {
        at: Utc::now(),
        disable_after: 0,
        reason: "HTTP 500".into(),
    };
    // Eight reports at once, as eight fan-out invocations would send them.
    let reports = (0..8).map(|_| store.record_health(&i.store_id, i.id, &failed));
    let changes: Vec<_> = futures_util::future::join_all(reports)
        .await
        .into_iter()
        .map(|r| r.expect("record").expect("exists"))
        .collect();
    let mut befores: Vec<u32> = changes
        .iter()
        .map(|c| c.before.consecutive_failures)
        .collect();
    befores.sort_unstable();
    assert_eq!(befores, (0..8).collect::<Vec<u32>>());
    let now = store
        .get(&i.store_id, i.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(now.health.consecutive_failures, 8);
}

#[tokio::test]
async fn stores_are_isolated_from_each_other() {
    let store = fresh_store().await;
    let mine = integration("store-a", webhook());
    store.insert(&mine, 100).await.expect("insert");
    let other = store_id("store-b");
    assert_eq!(store.get(&other, mine.id).await.expect("get"), None);
    assert!(store.list(&other).await.expect("list").is_empty());
    assert!(!store.delete(&other, mine.id).await.expect("delete"));
    let mut foreign = mine.clone();
    foreign.store_id = other;
    foreign.version = 2;
    assert_eq!(
        store.replace(&foreign, 1).await.expect("replace"),
        ReplaceOutcome::NotFound
    );
    assert!(store
        .get(&store_id("store-a"), mine.id)
        .await
        .expect("get")
        .is_some());
}

#[tokio::test]
async fn the_store_limit_holds_under_concurrent_creates() {
    let store = Arc::new(fresh_store_on(serial_endpoint()).await);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert(&integration("busy", webhook()), 3)
                .await
                .expect("insert")
        }));
    }
    let mut inserted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            InsertOutcome::Inserted => inserted += 1,
            InsertOutcome::LimitReached => refused += 1,
        }
    }
    assert_eq!((inserted, refused), (3, 7));
    assert_eq!(store.list(&store_id("busy")).await.expect("list").len(), 3);
    // Another store has its own count.
    assert_eq!(
        store
            .insert(&integration("quiet", webhook()), 3)
            .await
            .expect("insert"),
        InsertOutcome::Inserted
    );
}

#[tokio::test]
async fn a_stores_external_id_is_issued_once_even_to_concurrent_first_readers() {
    let store = Arc::new(fresh_store_on(serial_endpoint()).await);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.external_id(&store_id("keyless")).await.expect("id")
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].starts_with("herald-"), "{}", ids[0]);
    let other = store.external_id(&store_id("other")).await.expect("id");
    assert_ne!(other, ids[0]);
    // The id lives on the store's counter item: the integration count still holds.
    for _ in 0..2 {
        store
            .insert(&integration("keyless", webhook()), 2)
            .await
            .expect("insert");
    }
    assert_eq!(
        store
            .insert(&integration("keyless", webhook()), 2)
            .await
            .expect("insert"),
        InsertOutcome::LimitReached
    );
    assert_eq!(
        store.external_id(&store_id("keyless")).await.expect("id"),
        ids[0]
    );
}

#[tokio::test]
async fn deleting_frees_a_place_under_the_limit_and_a_second_delete_finds_nothing() {
    let store = fresh_store().await;
    let first = integration("s", webhook());
    store.insert(&first, 2).await.expect("insert");
    store
        .insert(&integration("s", webhook()), 2)
        .await
        .expect("insert");
    assert_eq!(
        store
            .insert(&integration("s", webhook()), 2)
            .await
            .expect("insert"),
        InsertOutcome::LimitReached
    );
    assert!(store
        .delete(&first.store_id, first.id)
        .await
        .expect("delete"));
    assert!(!store
        .delete(&first.store_id, first.id)
        .await
        .expect("delete again"));
    assert_eq!(
        store
            .insert(&integration("s", webhook()), 2)
            .await
            .expect("insert"),
        InsertOutcome::Inserted
    );
}

#[tokio::test]
async fn a_replace_at_a_stale_version_is_a_conflict_and_never_resurrects() {
    let store = fresh_store().await;
    let original = integration("s", webhook());
    store.insert(&original, 100).await.expect("insert");

    let mut v2 = original.clone();
    v2.name = "v2".into();
    v2.version = 2;
    assert_eq!(
        store.replace(&v2, 1).await.expect("replace"),
        ReplaceOutcome::Replaced
    );

    let mut stale = original.clone();
    stale.name = "stale".into();
    stale.version = 2;
    assert_eq!(
        store.replace(&stale, 1).await.expect("replace"),
        ReplaceOutcome::VersionConflict
    );
    assert_eq!(
        store
            .get(&original.store_id, original.id)
            .await
            .expect("get")
            .expect("found")
            .name,
        "v2"
    );

    assert!(store
        .delete(&original.store_id, original.id)
        .await
        .expect("delete"));
    let mut v3 = v2.clone();
    v3.version = 3;
    assert_eq!(
        store.replace(&v3, 2).await.expect("replace"),
        ReplaceOutcome::NotFound
    );
    assert_eq!(
        store
            .get(&original.store_id, original.id)
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn concurrent_partial_updates_of_different_fields_are_all_kept() {
    let store: Arc<dyn IntegrationStore> = Arc::new(fresh_store_on(serial_endpoint()).await);
    let service = Integrations::new(
        store.clone(),
        Policy {
            allow_http_webhooks: false,
            allow_plain_stomp: false,
        },
        100,
    );
    let owner = store_id("s");
    let created = service
        .create(
            &owner,
            &json!({"data": {"type": "integration", "integration_type": "webhook", "name": "n",
                "configuration": {"url": "https://example.com/a", "secret_key": "SOME_SECRET_KEY"}}}),
        )
        .await
        .expect("created");
    let updates = [
        json!({"data": {"type": "integration", "name": "renamed"}}),
        json!({"data": {"type": "integration", "description": "described"}}),
        json!({"data": {"type": "integration", "enabled": true}}),
        json!({"data": {"type": "integration", "observes": ["order.paid"]}}),
        json!({"data": {"type": "integration", "configuration": {"url": "https://example.com/b", "secret_key": "SOME_SECRET_KEY"}}}),
    ];
    let mut tasks = Vec::new();
    for body in updates {
        let service = service.clone();
        let owner = owner.clone();
        tasks.push(tokio::spawn(async move {
            service.update(&owner, created.id, &body).await
        }));
    }
    for t in tasks {
        let outcome = t.await.expect("task");
        // Each writer loses at most once to each of the other four, and re-applies
        // itself on the fresh version, so all five land within the retry budget.
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    let last = store
        .get(&owner, created.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(last.version, 1 + 5, "all five updates landed");
    assert_eq!(last.name, "renamed");
    assert_eq!(last.description, "described");
    assert!(last.enabled);
    assert_eq!(last.observes, vec!["order.paid"]);
    let Target::Webhook(w) = last.target else {
        panic!("webhook")
    };
    assert_eq!(w.url, "https://example.com/b");
    assert_eq!(w.secret_key.expect("kept").expose(), "SOME_SECRET_KEY");
}

#[tokio::test]
async fn a_missing_table_is_reported_at_start() {
    let store = DynamoIntegrationStore::new(client(), format!("missing-{}", Uuid::new_v4()));
    let err = store.check_table().await.expect_err("no such table");
    assert!(
        err.to_string().contains("ResourceNotFoundException"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

mod delivery_log {
    use std::time::Duration;

    use chrono::{DurationRound, TimeDelta, TimeZone, Utc};
    use herald_core::attempt::{Attempt, JobStatus, LogEntry};
    use herald_core::aws::attempt_log::DynamoDeliveryLog;
    use herald_core::aws::dynamo::DynamoIntegrationStore;
    use herald_core::filter::{Filter, Listed};
    use herald_core::page::Page;
    use herald_core::ports::DeliveryLog;
    use uuid::Uuid;

    use super::{client, endpoint, store_id};

    /// The log as the functions build it (`from_sdk`), on the loopback peer at `url`.
    async fn log_at(url: String, table: String, retention: Duration) -> DynamoDeliveryLog {
        let sdk = herald_core::aws::local::moto_config(&url)
            .await
            .expect("loopback config");
        DynamoDeliveryLog::from_sdk(&sdk, table, retention)
    }

    async fn fresh_log(retention: Duration) -> DynamoDeliveryLog {
        let table = format!("herald-log-{}", Uuid::new_v4());
        DynamoIntegrationStore::create_table(&client(), &table)
            .await
            .expect("table");
        log_at(endpoint(), table, retention).await
    }

    #[tokio::test]
    async fn a_log_write_to_a_peer_that_never_answers_gives_up_with_an_error() {
        // A loopback peer that takes connections and never answers on them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let peer = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..16 {
                if let Ok((conn, _)) = listener.accept().await {
                    held.push(conn);
                }
            }
            held
        });
        let log = log_at(url, "silent".into(), Duration::from_secs(3600)).await;
        let entry = logged(attempt("s", Uuid::now_v7(), Uuid::now_v7(), 1, true), 0);
        // Bounded here only so that a hang fails the test instead of stalling it.
        let outcome = tokio::time::timeout(
            3 * herald_core::aws::attempt_log::LOG_WRITE_TIMEOUT,
            log.record(std::slice::from_ref(&entry)),
        )
        .await;
        peer.abort();
        assert!(
            matches!(outcome, Ok(Err(_))),
            "the write fails instead of hanging: {outcome:?}"
        );
    }

    fn attempt(store: &str, integration: Uuid, job: Uuid, n: u32, ok: bool) -> Attempt {
        Attempt {
            id: Uuid::now_v7(),
            store_id: store.into(),
            integration_id: integration,
            job_id: job,
            event_id: "evt".into(),
            event_type: "order.paid".into(),
            attempt: n,
            succeeded: ok,
            status_code: Some(if ok { 200 } else { 500 }),
            body: if ok { String::new() } else { "nope".into() },
            error_detail: (!ok).then(|| "the webhook answered 500".to_owned()),
            processing_time: 0.25,
            // Stored with millisecond precision.
            created_at: Utc::now()
                .duration_trunc(TimeDelta::milliseconds(1))
                .expect("trunc"),
        }
    }

    /// `attempt` logged with the status it leaves its job in, the job queued
    /// `minute` minutes after a fixed time (a job's attempts share it).
    fn logged(attempt: Attempt, minute: i64) -> LogEntry {
        let status = if attempt.succeeded {
            JobStatus::Delivered
        } else {
            JobStatus::Retrying
        };
        LogEntry {
            attempt,
            status,
            enqueued_at: Utc.timestamp_opt(1_800_000_000, 0).single().expect("time")
                + TimeDelta::minutes(minute),
            replay_of: None,
            archive: None,
        }
    }

    #[tokio::test]
    async fn attempts_and_jobs_read_back_newest_first_per_store_integration_and_job() {
        let log = fresh_log(Duration::from_secs(3600)).await;
        let (i1, i2) = (Uuid::now_v7(), Uuid::now_v7());
        let (j1, j2) = (Uuid::now_v7(), Uuid::now_v7());
        let (j3, j4) = (Uuid::now_v7(), Uuid::now_v7());
        let a1 = attempt("s", i1, j1, 1, false);
        let a2 = attempt("s", i1, j1, 2, true);
        let a3 = attempt("s", i2, j2, 1, true);
        let a4 = attempt("s", i1, j3, 1, false);
        let foreign = attempt("t", i1, j4, 1, true);
        log.record(&[
            logged(a1.clone(), 1),
            logged(a2.clone(), 1),
            logged(a3.clone(), 2),
            logged(a4.clone(), 3),
            logged(foreign, 4),
        ])
        .await
        .expect("record");

        let Listed {
            items: all,
            counted: total,
            ..
        } = log
            .store_logs(&store_id("s"), &Filter::default(), Page::default())
            .await
            .expect("store logs");
        assert_eq!(total, 4);
        assert_eq!(all, vec![a4.clone(), a3.clone(), a2.clone(), a1.clone()]);
        let Listed {
            items: page,
            counted: total,
            ..
        } = log
            .store_logs(
                &store_id("s"),
                &Filter::default(),
                Page {
                    limit: 1,
                    offset: 1,
                },
            )
            .await
            .expect("page");
        assert_eq!(
            (page, total),
            (vec![a3.clone()], 3),
            "counted through the next page only: at least 3"
        );

        let Listed {
            items: mine,
            counted: total,
            ..
        } = log
            .integration_logs(&store_id("s"), i1, &Filter::default(), Page::default())
            .await
            .expect("integration logs");
        assert_eq!((mine, total), (vec![a4.clone(), a2.clone(), a1.clone()], 3));
        let (job_logs, total) = log
            .job_logs(&store_id("s"), i1, j1, Page::default())
            .await
            .expect("job logs");
        assert_eq!((job_logs, total), (vec![a2.clone(), a1], 2));
        let (none, total) = log
            .job_logs(&store_id("s"), i2, j1, Page::default())
            .await
            .expect("job logs");
        assert_eq!(
            (none.len(), total),
            (0, 0),
            "a job is only readable through its own integration"
        );

        let Listed {
            items: jobs,
            counted: total,
            ..
        } = log
            .integration_jobs(&store_id("s"), i1, &Filter::default(), Page::default())
            .await
            .expect("jobs");
        assert_eq!(total, 2, "a job is counted once, whatever its attempts");
        assert_eq!(
            jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
            vec![j3, j1],
            "newest first"
        );
        assert_eq!(jobs[0], logged(a4, 3).job(), "a job read back whole");
        assert_eq!(
            jobs[1],
            logged(a2, 1).job(),
            "a job's state is its latest attempt's"
        );
        assert_eq!(
            log.store_logs(&store_id("t"), &Filter::default(), Page::default())
                .await
                .expect("t")
                .counted,
            1
        );
    }

    #[tokio::test]
    async fn a_later_attempt_replaces_the_jobs_state_whatever_batch_it_comes_in() {
        let log = fresh_log(Duration::from_secs(3600)).await;
        let (i, j) = (Uuid::now_v7(), Uuid::now_v7());
        log.record(&[logged(attempt("s", i, j, 1, false), 0)])
            .await
            .expect("record");
        let Listed {
            items: jobs,
            counted: total,
            ..
        } = log
            .integration_jobs(&store_id("s"), i, &Filter::default(), Page::default())
            .await
            .expect("jobs");
        assert_eq!(
            (total, jobs[0].status, jobs[0].attempts),
            (1, JobStatus::Retrying, 1)
        );
        log.record(&[logged(attempt("s", i, j, 2, true), 0)])
            .await
            .expect("record");
        let Listed {
            items: jobs,
            counted: total,
            ..
        } = log
            .integration_jobs(&store_id("s"), i, &Filter::default(), Page::default())
            .await
            .expect("jobs");
        assert_eq!(total, 1);
        assert_eq!(
            (
                jobs[0].status,
                jobs[0].attempts,
                jobs[0].last_error.as_deref()
            ),
            (JobStatus::Delivered, 2, None)
        );
    }

    #[tokio::test]
    async fn a_replayed_jobs_state_is_its_newest_attempts_though_its_number_starts_again() {
        // GIVEN a job that failed its sixth attempt, then was replayed (attempt 1 again)
        let log = fresh_log(Duration::from_secs(3600)).await;
        let (i, j) = (Uuid::now_v7(), Uuid::now_v7());
        let mut last = attempt("s", i, j, 6, false);
        let mut failed = logged(last.clone(), 0);
        failed.status = JobStatus::Failed;
        log.record(&[failed]).await.expect("record");
        tokio::time::sleep(Duration::from_millis(5)).await;
        last = attempt("s", i, j, 1, true);
        log.record(&[logged(last.clone(), 0)])
            .await
            .expect("record");

        // THEN the job reads as delivered, at its replay's first attempt
        let Listed {
            items: jobs,
            counted: total,
            ..
        } = log
            .integration_jobs(&store_id("s"), i, &Filter::default(), Page::default())
            .await
            .expect("jobs");
        assert_eq!(total, 1);
        assert_eq!(jobs[0], logged(last, 0).job());
    }

    #[tokio::test]
    async fn jobs_page_by_job_not_by_attempt() {
        // Five jobs of one to three attempts each, queued a minute apart: pages of two
        // jobs hold two jobs each, however many attempts lie between them.
        let log = fresh_log(Duration::from_secs(3600)).await;
        let i = Uuid::now_v7();
        let jobs: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let mut entries = Vec::new();
        for (minute, &j) in jobs.iter().enumerate() {
            let tries = minute as u32 % 3 + 1;
            for n in 1..=tries {
                entries.push(logged(attempt("s", i, j, n, n == tries), minute as i64));
            }
        }
        log.record(&entries).await.expect("record");
        let mut seen = Vec::new();
        // Counted through the next page: at least 4 from the first page, 5 after.
        for (offset, counted) in [(0, 4), (2, 5), (4, 5)] {
            let Listed {
                items: page,
                counted: total,
                ..
            } = log
                .integration_jobs(
                    &store_id("s"),
                    i,
                    &Filter::default(),
                    Page { limit: 2, offset },
                )
                .await
                .expect("jobs");
            assert_eq!(total, counted);
            assert!(page.iter().all(|j| j.status == JobStatus::Delivered));
            seen.extend(page.iter().map(|j| (j.job_id, j.attempts)));
        }
        let newest_first: Vec<(Uuid, u32)> = jobs
            .iter()
            .enumerate()
            .rev()
            .map(|(minute, &j)| (j, minute as u32 % 3 + 1))
            .collect();
        assert_eq!(seen, newest_first);
    }

    #[tokio::test]
    async fn expired_records_are_not_read_although_ttl_deletes_them_late() {
        let log = fresh_log(Duration::ZERO).await;
        let i = Uuid::now_v7();
        log.record(&[logged(attempt("s", i, Uuid::now_v7(), 1, true), 0)])
            .await
            .expect("record");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            log.integration_logs(&store_id("s"), i, &Filter::default(), Page::default())
                .await
                .expect("logs")
                .counted,
            0
        );
        assert_eq!(
            log.integration_jobs(&store_id("s"), i, &Filter::default(), Page::default())
                .await
                .expect("jobs"),
            Listed::default()
        );
    }

    #[tokio::test]
    async fn a_batch_larger_than_twenty_five_items_is_written_whole() {
        let log = fresh_log(Duration::from_secs(3600)).await;
        let i = Uuid::now_v7();
        let attempts: Vec<_> = (0..60)
            .map(|n| attempt("s", i, Uuid::now_v7(), n + 1, true))
            .collect();
        let entries: Vec<LogEntry> = attempts.iter().map(|a| logged(a.clone(), 0)).collect();
        log.record(&entries).await.expect("record");
        assert_eq!(
            log.integration_logs(
                &store_id("s"),
                i,
                &Filter::default(),
                Page {
                    limit: 10,
                    offset: 55
                }
            )
            .await
            .expect("logs"),
            Listed {
                items: attempts[..5].iter().rev().cloned().collect(),
                counted: 60,
                reached: None
            }
        );
    }
}

/// What a listing of the log costs, whatever the history: items read per request
/// (the `ScannedCount` of each `Query`, counted by a loopback proxy in front of moto),
/// and where a store's attempts are written.
mod log_listing_cost {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_dynamodb::types::AttributeValue;
    use chrono::{DurationRound, TimeDelta, TimeZone, Utc};
    use futures_util::StreamExt;
    use herald_core::attempt::{Attempt, JobRecord, JobStatus, LogEntry};
    use herald_core::aws::attempt_log::DynamoDeliveryLog;
    use herald_core::aws::claims::DynamoIdempotency;
    use herald_core::aws::dynamo::DynamoIntegrationStore;
    use herald_core::filter::{Filter, Listed, Subject, READ_BUDGET};
    use herald_core::model::StoreId;
    use herald_core::page::Page;
    use herald_core::ports::DeliveryLog;
    use herald_core::ports::IdempotencyStore;
    use herald_testkit::proxy::{Exchange, RecordingProxy};
    use uuid::Uuid;

    use super::{client, endpoint, store_id};

    /// Items DynamoDB evaluated for the `Query` requests that passed through.
    #[derive(Default)]
    pub(super) struct Reads {
        items: AtomicUsize,
        queries: AtomicUsize,
        /// Every operation that passed through (`X-Amz-Target`'s last part), in order.
        pub(super) operations: std::sync::Mutex<Vec<String>>,
    }

    impl Reads {
        /// Items read and queries sent since the last call.
        fn take(&self) -> (usize, usize) {
            (
                self.items.swap(0, Ordering::SeqCst),
                self.queries.swap(0, Ordering::SeqCst),
            )
        }
    }

    /// A loopback proxy to moto that counts what each `Query` read.
    pub(super) async fn counting_proxy() -> (RecordingProxy, Arc<Reads>) {
        let reads = Arc::new(Reads::default());
        let into = reads.clone();
        let count = move |e: Exchange| {
            if e.operation() == "Query" && (200..300).contains(&e.status) {
                let doc: serde_json::Value = serde_json::from_slice(&e.response).expect("JSON");
                let scanned = doc["ScannedCount"].as_u64().expect("ScannedCount") as usize;
                into.items.fetch_add(scanned, Ordering::SeqCst);
                into.queries.fetch_add(1, Ordering::SeqCst);
            }
            into.operations
                .lock()
                .expect("operations")
                .push(e.operation().to_owned());
        };
        let proxy = RecordingProxy::start(&endpoint(), Arc::new(count))
            .await
            .expect("proxy");
        (proxy, reads)
    }

    async fn log_at(url: &str, table: &str) -> DynamoDeliveryLog {
        let sdk = herald_core::aws::local::moto_config(url)
            .await
            .expect("loopback config");
        DynamoDeliveryLog::from_sdk(&sdk, table.to_owned(), Duration::from_secs(3600))
    }

    /// A history of `attempts` attempts of store `s` over three integrations: jobs of
    /// one or two attempts, queued 10 ms apart (a hundred a second), with the ids
    /// ingest gives them. Returns the entries in the order they were made (oldest
    /// first) and the table.
    async fn seed(attempts: usize) -> (Vec<LogEntry>, String) {
        seed_with(attempts, |job| Job {
            tries: 1 + u32::from(job % 4 == 0),
            ..Job::default()
        })
        .await
    }

    /// How a seeded job goes: its attempts, whether its last one fails, its event.
    struct Job {
        tries: u32,
        last_fails: bool,
        kind: &'static str,
    }

    impl Default for Job {
        fn default() -> Self {
            Self {
                tries: 1,
                last_fails: false,
                kind: "order.paid",
            }
        }
    }

    /// A history as [`seed`]'s, each job `n` going as `job(n)` says.
    async fn seed_with(attempts: usize, job_of: impl Fn(usize) -> Job) -> (Vec<LogEntry>, String) {
        let table = format!("herald-log-{}", Uuid::new_v4());
        DynamoIntegrationStore::create_table(&client(), &table)
            .await
            .expect("table");
        let integrations = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        let start = Utc.timestamp_opt(1_800_000_000, 0).single().expect("time");
        let mut entries = Vec::with_capacity(attempts);
        let mut job = 0usize;
        while entries.len() < attempts {
            let integration = integrations[job % 3];
            let enqueued_at = start + TimeDelta::milliseconds(10 * job as i64);
            let job_id = herald_core::job::job_id(&format!("evt-{job}"), integration, enqueued_at);
            let how = job_of(job);
            let tries = how.tries;
            for n in 1..=tries {
                if entries.len() == attempts {
                    break;
                }
                let ok = n == tries && !how.last_fails;
                entries.push(LogEntry {
                    attempt: Attempt {
                        id: Uuid::now_v7(),
                        store_id: "s".into(),
                        integration_id: integration,
                        job_id,
                        event_id: format!("evt-{job}"),
                        event_type: how.kind.into(),
                        attempt: n,
                        succeeded: ok,
                        status_code: Some(if ok { 200 } else { 500 }),
                        body: String::new(),
                        error_detail: None,
                        processing_time: 0.01,
                        created_at: enqueued_at + TimeDelta::milliseconds(5),
                    },
                    status: match (ok, n == tries) {
                        (true, _) => JobStatus::Delivered,
                        (false, true) => JobStatus::Failed,
                        (false, false) => JobStatus::Retrying,
                    },
                    enqueued_at,
                    replay_of: None,
                    archive: None,
                });
            }
            job += 1;
        }
        let writer = log_at(&endpoint(), &table).await;
        let written: Vec<_> = futures_util::stream::iter(entries.chunks(100))
            .map(|chunk| writer.record(chunk))
            .buffer_unordered(2)
            .collect()
            .await;
        for w in written {
            w.expect("seeded");
        }
        (entries, table)
    }

    /// The newest first of `entries` that `keep` keeps.
    fn newest(entries: &[LogEntry], keep: impl Fn(&Attempt) -> bool) -> Vec<Attempt> {
        entries
            .iter()
            .rev()
            .map(|e| e.attempt.clone())
            .filter(|a| keep(a))
            .collect()
    }

    /// Lists the first page of 100 of every listing over a history of `attempts`
    /// attempts and checks each read at most `most` items (printed with
    /// `--nocapture`: the figures of docs/performance).
    #[allow(clippy::print_stdout)]
    async fn a_page_of_a_hundred_reads_at_most(attempts: usize, most: usize) {
        let (entries, table) = seed(attempts).await;
        let (proxy, reads) = counting_proxy().await;
        let log = log_at(&proxy.url, &table).await;
        let s = store_id("s");
        let page = Page {
            limit: 100,
            offset: 0,
        };
        let integration = entries[0].attempt.integration_id;
        let job = entries[0].attempt.job_id;
        reads.take();

        let Listed { items, .. } = log
            .store_logs(&s, &Filter::default(), page)
            .await
            .expect("store logs");
        let store_reads = reads.take();
        assert_eq!(items, newest(&entries, |_| true)[..100].to_vec());

        let Listed { items, .. } = log
            .integration_logs(&s, integration, &Filter::default(), page)
            .await
            .expect("integration logs");
        let integration_reads = reads.take();
        assert_eq!(
            items,
            newest(&entries, |a| a.integration_id == integration)[..100].to_vec()
        );

        let Listed {
            items: jobs,
            counted: _,
            ..
        } = log
            .integration_jobs(&s, integration, &Filter::default(), page)
            .await
            .expect("jobs");
        let jobs_reads = reads.take();
        let mut newest_jobs: Vec<Uuid> = Vec::new();
        let mut known = std::collections::HashSet::new();
        for a in newest(&entries, |a| a.integration_id == integration) {
            if known.insert(a.job_id) {
                newest_jobs.push(a.job_id);
            }
        }
        assert_eq!(
            jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
            newest_jobs[..100].to_vec()
        );

        let (items, _) = log.job_logs(&s, integration, job, page).await.expect("job");
        let job_reads = reads.take();
        assert_eq!(items, newest(&entries, |a| a.job_id == job));

        println!(
            "{attempts} attempts, a page of 100 read (items, queries): store {store_reads:?}, integration {integration_reads:?}, jobs {jobs_reads:?}, one job {job_reads:?}"
        );
        for (listing, (items, _)) in [
            ("store logs", store_reads),
            ("integration logs", integration_reads),
            ("integration jobs", jobs_reads),
            ("job logs", job_reads),
        ] {
            assert!(
                items <= most,
                "the {listing} listing read {items} items of a history of {attempts}"
            );
        }
    }

    #[tokio::test]
    async fn a_page_of_a_hundred_reads_a_few_hundred_items_of_a_history_of_thousands() {
        a_page_of_a_hundred_reads_at_most(2_500, 500).await;
    }

    /// The measurement of docs/performance (`--nocapture` prints it): the history is
    /// packed into pages of the attempts each write made, so moto holds it in a few
    /// thousand items.
    #[tokio::test]
    async fn a_page_of_a_hundred_reads_a_few_hundred_items_of_a_hundred_thousand() {
        a_page_of_a_hundred_reads_at_most(100_000, 500).await;
    }

    fn logs(raw: &str) -> Filter {
        Filter::parse(raw, Subject::Logs).expect("filter")
    }

    /// The newest first of the jobs of `entries` (each as its latest attempt left it)
    /// that `keep` keeps.
    fn newest_jobs(entries: &[LogEntry], keep: impl Fn(&JobRecord) -> bool) -> Vec<Uuid> {
        let mut latest: HashMap<Uuid, JobRecord> = HashMap::new();
        for e in entries {
            latest.insert(e.attempt.job_id, e.job());
        }
        let mut jobs: Vec<&JobRecord> = latest.values().filter(|j| keep(j)).collect();
        jobs.sort_by_key(|j| std::cmp::Reverse((j.enqueued_at, j.job_id)));
        jobs.iter().map(|j| j.job_id).collect()
    }

    #[tokio::test]
    #[allow(clippy::print_stdout)]
    async fn a_filtered_listing_keeps_what_each_field_says_and_reads_only_the_time_range_it_asks() {
        // GIVEN 2,500 attempts: every fourth job retried, every seventh failing at
        // last, every fifth an order.created
        let (entries, table) = seed_with(2_500, |job| Job {
            tries: 1 + u32::from(job % 4 == 0),
            last_fails: job % 7 == 0,
            kind: if job % 5 == 0 {
                "order.created"
            } else {
                "order.paid"
            },
        })
        .await;
        let (proxy, reads) = counting_proxy().await;
        let log = log_at(&proxy.url, &table).await;
        let s = store_id("s");
        let page = Page {
            limit: 100,
            offset: 0,
        };
        let integration = entries[0].attempt.integration_id;
        let start = entries[0].enqueued_at;
        let (from, to) = (start + TimeDelta::seconds(5), start + TimeDelta::seconds(7));
        let window = format!(
            "ge(created_at,{}):lt(created_at,{})",
            from.to_rfc3339(),
            to.to_rfc3339()
        );

        // WHEN each field is filtered on THEN each listing is what the history holds
        let failed = log
            .store_logs(&s, &logs("eq(succeeded,false)"), page)
            .await
            .expect("store logs");
        assert_eq!(failed.reached, None);
        assert_eq!(
            failed.items,
            newest(&entries, |a| !a.succeeded)[..100].to_vec()
        );

        let created = log
            .integration_logs(
                &s,
                integration,
                &logs("eq(triggered_by,order.created):eq(succeeded,true)"),
                page,
            )
            .await
            .expect("integration logs");
        let want = newest(&entries, |a| {
            a.integration_id == integration && a.event_type == "order.created" && a.succeeded
        });
        assert_eq!(created.items, want[..want.len().min(100)].to_vec());

        let failed_jobs = log
            .integration_jobs(
                &s,
                integration,
                &Filter::parse("eq(status,failed)", Subject::Jobs).expect("filter"),
                page,
            )
            .await
            .expect("jobs");
        let want = newest_jobs(&entries, |j| {
            j.integration_id == integration && j.status == JobStatus::Failed
        });
        assert_eq!(
            failed_jobs
                .items
                .iter()
                .map(|j| j.job_id)
                .collect::<Vec<_>>(),
            want[..want.len().min(100)].to_vec()
        );
        reads.take();

        // WHEN a two-second window is listed THEN it holds the window's attempts (and
        // jobs), and the time is a key condition: it reads about the window's pages
        let in_window = log
            .store_logs(&s, &logs(&window), page)
            .await
            .expect("window");
        let window_reads = reads.take();
        let want = newest(&entries, |a| a.created_at >= from && a.created_at < to);
        assert_eq!(in_window.items, want[..100].to_vec());
        assert_eq!(in_window.reached, None);
        let jobs_in_window = log
            .integration_jobs(
                &s,
                integration,
                &Filter::parse(&window, Subject::Jobs).expect("filter"),
                page,
            )
            .await
            .expect("jobs window");
        let jobs_window_reads = reads.take();
        let want = newest_jobs(&entries, |j| {
            j.integration_id == integration && j.enqueued_at >= from && j.enqueued_at < to
        });
        assert_eq!(
            jobs_in_window
                .items
                .iter()
                .map(|j| j.job_id)
                .collect::<Vec<_>>(),
            want[..want.len().min(100)].to_vec()
        );
        println!("a two-second window of 2,500 attempts read (items, queries): store {window_reads:?}, jobs {jobs_window_reads:?}");
        assert!(window_reads.0 <= 60, "{window_reads:?}");
        assert!(jobs_window_reads.0 <= 60, "{jobs_window_reads:?}");
    }

    #[tokio::test]
    #[allow(clippy::print_stdout)]
    async fn a_filtered_listing_over_a_long_history_of_successes_reads_at_most_its_budget() {
        // GIVEN 30,000 attempts, all delivered but the ten oldest jobs'
        let (entries, table) = seed_with(30_000, |job| Job {
            last_fails: job < 10,
            ..Job::default()
        })
        .await;
        let (proxy, reads) = counting_proxy().await;
        let log = log_at(&proxy.url, &table).await;
        let s = store_id("s");
        let page = Page {
            limit: 100,
            offset: 0,
        };
        let integration = entries[0].attempt.integration_id;
        reads.take();

        // WHEN the store's failures are listed THEN the request reads no more than
        // the budget, finds none yet, and says how far its scan reached
        let listed = log
            .store_logs(&s, &logs("eq(succeeded,false)"), page)
            .await
            .expect("logs");
        let (store_items, _) = reads.take();
        assert!(store_items <= READ_BUDGET, "{store_items}");
        assert_eq!((listed.items.len(), listed.counted), (0, 0));
        let reached = listed.reached.expect("the scan stopped at its budget");
        assert!(reached > entries[9].attempt.created_at, "{reached}");

        // WHEN the integration's failed jobs are listed, each request carrying on
        // where the last stopped THEN none reads more than the budget, and together
        // they find every failed job, newest first, each once
        let mut filter = Filter::parse("eq(status,failed)", Subject::Jobs).expect("filter");
        let (mut found, mut requests) = (Vec::new(), Vec::new());
        loop {
            let listed = log
                .integration_jobs(&s, integration, &filter, page)
                .await
                .expect("jobs");
            let (items, _) = reads.take();
            requests.push(items);
            assert!(items <= READ_BUDGET, "{requests:?}");
            found.extend(listed.items.into_iter().map(|j| j.job_id));
            match listed.reached {
                Some(reached) => filter = filter.before(reached),
                None => break,
            }
            assert!(requests.len() < 40, "{requests:?}");
        }
        println!(
            "the failures of 30,000 attempts: the store's listing read {store_items} items; the failed jobs' requests read {requests:?}"
        );
        assert!(requests.len() > 1, "{requests:?}");
        let want = newest_jobs(&entries, |j| {
            j.integration_id == integration && j.status == JobStatus::Failed
        });
        assert_eq!(found, want);
        assert_eq!(found.len(), 4);
    }

    #[tokio::test]
    async fn a_requests_claims_are_conditional_writes_of_one_write_unit_each_not_a_transaction() {
        // GIVEN the claims of a store, through a proxy that sees each request
        let table = format!("herald-claims-{}", Uuid::new_v4());
        DynamoIntegrationStore::create_table(&client(), &table)
            .await
            .expect("table");
        let (proxy, seen) = counting_proxy().await;
        let sdk = herald_core::aws::local::moto_config(&proxy.url)
            .await
            .expect("loopback config");
        let claims = DynamoIdempotency::from_sdk(&sdk, table);
        let store = store_id("claims");
        let keys: Vec<(StoreId, String)> = (0..100)
            .map(|i| (store.clone(), format!("e-{i}")))
            .collect();

        // WHEN a request's hundred events are claimed
        let claimed = claims.claim_all(&keys, Duration::from_secs(60)).await;

        // THEN each was taken with its own conditional UpdateItem (one write unit for
        // an item this small; a transaction's writes cost two)
        assert!(claimed.into_iter().all(|c| c.expect("claim")));
        let operations = seen.operations.lock().expect("operations").clone();
        assert_eq!(operations.len(), 100, "{operations:?}");
        assert!(
            operations.iter().all(|o| o == "UpdateItem"),
            "{operations:?}"
        );
    }

    #[tokio::test]
    async fn a_stores_pages_are_spread_over_four_partition_keys_and_hold_every_attempt() {
        let (entries, table) = seed(800).await;
        let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = client()
                .scan()
                .table_name(&table)
                .projection_expression("gsi1pk, #c")
                .expression_attribute_names("#c", "count")
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            for item in out.items() {
                let key = item["gsi1pk"].as_s().expect("gsi1pk").clone();
                let count: usize = item["count"].as_n().expect("count").parse().expect("n");
                *by_key.entry(key).or_default() += count;
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        assert_eq!(by_key.values().sum::<usize>(), entries.len());
        assert_eq!(
            by_key.keys().cloned().collect::<Vec<_>>(),
            (0..4).map(|n| format!("LOGP#s#{n}")).collect::<Vec<_>>(),
            "the store's index keys"
        );
        let fullest = by_key.values().max().copied().unwrap_or(0);
        assert!(
            fullest <= entries.len() / 2,
            "one key holds {fullest} of {} attempts",
            entries.len()
        );
    }

    /// An attempt's item as builds before write sharding wrote it: one partition key
    /// per store, per integration and per integration's jobs.
    fn unsharded_item(e: &LogEntry) -> HashMap<String, AttributeValue> {
        let a = &e.attempt;
        let s = |v: String| AttributeValue::S(v);
        let (store, i, j, id) = (&a.store_id, a.integration_id, a.job_id, a.id);
        let time = herald_core::model::format_timestamp;
        HashMap::from([
            ("pk".into(), s(format!("LOGS#{store}#{i}"))),
            ("sk".into(), s(id.to_string())),
            ("gsi1pk".into(), s(format!("LOGS#{store}"))),
            ("gsi1sk".into(), s(id.to_string())),
            ("gsi2pk".into(), s(format!("JOBLOGS#{store}#{j}"))),
            ("gsi2sk".into(), s(id.to_string())),
            ("gsi3pk".into(), s(format!("JOBS#{store}#{i}"))),
            (
                "gsi3sk".into(),
                s(format!("{}#{j}#{id}", time(&e.enqueued_at))),
            ),
            ("entity".into(), s("attempt".into())),
            ("id".into(), s(id.to_string())),
            ("store_id".into(), s(store.clone())),
            ("integration_id".into(), s(i.to_string())),
            ("job_id".into(), s(j.to_string())),
            ("event_id".into(), s(a.event_id.clone())),
            ("event_type".into(), s(a.event_type.clone())),
            ("attempt".into(), AttributeValue::N(a.attempt.to_string())),
            ("succeeded".into(), AttributeValue::Bool(a.succeeded)),
            (
                "processing_time".into(),
                AttributeValue::N(a.processing_time.to_string()),
            ),
            (
                "status_code".into(),
                AttributeValue::N(a.status_code.unwrap_or_default().to_string()),
            ),
            ("created_at".into(), s(time(&a.created_at))),
            (
                "expires_at".into(),
                AttributeValue::N((Utc::now().timestamp() + 3600).to_string()),
            ),
            ("status".into(), s(e.status.as_str().into())),
            ("enqueued_at".into(), s(time(&e.enqueued_at))),
        ])
    }

    /// `attempt` as written by an earlier build: its job id tells no time (a UUIDv5).
    fn of_an_earlier_build(mut e: LogEntry) -> LogEntry {
        e.attempt.job_id =
            herald_core::job::legacy_job_id(&e.attempt.event_id, e.attempt.integration_id);
        e
    }

    #[tokio::test]
    async fn attempts_of_earlier_builds_items_sharded_or_not_are_listed_with_the_pages() {
        // GIVEN five attempts of one integration, the first two of one job: the first
        // three items of earlier builds (unsharded keys, then sharded ones, written by
        // the fan-out for jobs whose ids tell no time), the last two in pages
        let table = format!("herald-log-{}", Uuid::new_v4());
        DynamoIntegrationStore::create_table(&client(), &table)
            .await
            .expect("table");
        let log = log_at(&endpoint(), &table).await;
        let i = Uuid::now_v7();
        let entry = |job: u32, n: u32| {
            let created_at = Utc::now()
                .duration_trunc(TimeDelta::milliseconds(1))
                .expect("trunc");
            let (secs, ms) = (
                created_at.timestamp() as u64,
                created_at.timestamp_subsec_nanos(),
            );
            LogEntry {
                attempt: Attempt {
                    id: Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, ms)),
                    store_id: "s".into(),
                    integration_id: i,
                    job_id: Uuid::now_v7(),
                    event_id: format!("evt-{job}"),
                    event_type: "order.paid".into(),
                    attempt: n,
                    succeeded: true,
                    status_code: Some(200),
                    body: String::new(),
                    error_detail: None,
                    processing_time: 0.01,
                    created_at,
                },
                status: JobStatus::Delivered,
                enqueued_at: created_at,
                replay_of: None,
                archive: None,
            }
        };
        let mut entries = Vec::new();
        for (job, n) in [(0, 1), (0, 2), (1, 1), (2, 1), (3, 1)] {
            entries.push(entry(job, n));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let (old, new) = entries.split_at_mut(3);
        for e in old.iter_mut() {
            *e = of_an_earlier_build(e.clone());
        }
        for e in &old[..2] {
            client()
                .put_item()
                .table_name(&table)
                .set_item(Some(unsharded_item(e)))
                .send()
                .await
                .expect("put");
        }
        log.record(&old[2..])
            .await
            .expect("an earlier build's item");
        log.record(new).await.expect("pages");
        let s = store_id("s");
        let page = Page::default();

        // THEN every listing finds them all, newest first
        let Listed {
            items: all,
            counted: total,
            ..
        } = log
            .store_logs(&s, &Filter::default(), page)
            .await
            .expect("store");
        assert_eq!((all, total), (newest(&entries, |_| true), 5));
        let Listed {
            items: mine,
            counted: _,
            ..
        } = log
            .integration_logs(&s, i, &Filter::default(), page)
            .await
            .expect("integration");
        assert_eq!(mine, newest(&entries, |_| true));
        let Listed {
            items: jobs,
            counted: total,
            ..
        } = log
            .integration_jobs(&s, i, &Filter::default(), page)
            .await
            .expect("jobs");
        assert_eq!(total, 4);
        let first = entries[0].attempt.clone();
        assert!(
            jobs.iter()
                .any(|j| j.job_id == first.job_id && j.attempts == 2),
            "{jobs:?}"
        );
        let (attempts, _) = log.job_logs(&s, i, first.job_id, page).await.expect("job");
        assert_eq!(attempts, newest(&entries, |a| a.job_id == first.job_id));
        let last = entries[4].attempt.clone();
        let (attempts, _) = log.job_logs(&s, i, last.job_id, page).await.expect("job");
        assert_eq!(attempts, vec![last]);
    }

    #[tokio::test]
    async fn pages_of_a_long_history_merge_the_keys_newest_first_and_count_one_page_ahead() {
        let (entries, table) = seed(265).await;
        let log = log_at(&endpoint(), &table).await;
        let s = store_id("s");
        let expected = newest(&entries, |_| true);
        let mut seen = Vec::new();
        let mut totals = Vec::new();
        for offset in (0..=250).step_by(50) {
            let Listed {
                items,
                counted: total,
                ..
            } = log
                .store_logs(&s, &Filter::default(), Page { limit: 50, offset })
                .await
                .expect("page");
            seen.extend(items);
            totals.push(total);
        }
        assert_eq!(seen, expected, "every attempt once, newest first");
        // Counted through the page after the one asked for: exactly when the history
        // ends before then, else to that bound.
        assert_eq!(totals, vec![100, 150, 200, 250, 265, 265]);
    }
}

/// The log's writer (its own `BatchWriteItem`, signed with the SDK's signer) against
/// moto with its signature checks turned on, and against scripted loopback peers.
mod log_writer {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use chrono::Utc;
    use herald_core::attempt::{Attempt, JobStatus, LogEntry};
    use herald_core::aws::attempt_log::DynamoDeliveryLog;
    use herald_core::aws::dynamo::DynamoIntegrationStore;
    use herald_core::filter::{Filter, Listed};
    use herald_core::page::Page;
    use herald_core::ports::DeliveryLog;
    use uuid::Uuid;

    use super::{moto_config, store_id};

    /// The moto whose request-signature checks this module turns on (no other test
    /// uses it: the checks are server-wide).
    fn auth_endpoint() -> String {
        let url = std::env::var("MOTO_AUTH_ENDPOINT").expect(
            "MOTO_AUTH_ENDPOINT is not set: run `make test` (or MOTO_AUTH=1 infra/with-peers.sh)",
        );
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "MOTO_AUTH_ENDPOINT must be on loopback, not {url}"
        );
        url
    }

    fn entry(store: &str, integration: Uuid) -> LogEntry {
        let now = Utc::now();
        LogEntry {
            attempt: Attempt {
                id: Uuid::now_v7(),
                store_id: store.into(),
                integration_id: integration,
                job_id: Uuid::now_v7(),
                event_id: "evt \"quoted\" \u{e9}\n".into(),
                event_type: "order.paid".into(),
                attempt: 1,
                succeeded: true,
                status_code: Some(200),
                body: "{\"ok\":true}".into(),
                error_detail: None,
                processing_time: 0.125,
                created_at: now,
            },
            status: JobStatus::Delivered,
            enqueued_at: now,
            replay_of: None,
            archive: None,
        }
    }

    /// moto's loopback configuration (`moto_config`), signing with `key` and `secret`.
    async fn signing_with(url: &str, key: &str, secret: &str) -> aws_config::SdkConfig {
        moto_config(url)
            .await
            .expect("loopback config")
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                key, secret, None, None, "test",
            )))
            .build()
    }

    /// An IAM query action on moto (before its checks are on), its XML answer.
    async fn iam(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> String {
        let answer = http
            .post(url)
            // moto routes by the credential scope; nothing checks this one yet.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.iter().chain(&[("Version", "2010-05-08")]))
                    .finish(),
            )
            .send()
            .await
            .expect("iam");
        assert!(
            answer.status().is_success(),
            "{form:?}: {}",
            answer.status()
        );
        answer.text().await.expect("text")
    }

    fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
        text.split_once(open)
            .and_then(|(_, rest)| rest.split_once(close))
            .map(|(v, _)| v)
            .expect("element")
    }

    async fn moto_checks(http: &reqwest::Client, url: &str, after: &str) {
        let answer = http
            .post(format!("{url}/moto-api/reset-auth"))
            .body(after.to_owned())
            .send()
            .await
            .expect("reset-auth");
        assert!(answer.status().is_success());
    }

    #[tokio::test]
    async fn its_requests_pass_moto_s_signature_checks_and_a_wrong_secret_does_not() {
        let url = auth_endpoint();
        let http = reqwest::Client::new();
        moto_checks(&http, &url, "inf").await;
        let setup = moto_config(&url).await.expect("loopback config");
        let table = format!("herald-log-{}", Uuid::new_v4());
        DynamoIntegrationStore::create_table(&aws_sdk_dynamodb::Client::new(&setup), &table)
            .await
            .expect("table");
        let user = format!("herald-{}", Uuid::new_v4().simple());
        iam(
            &http,
            &url,
            &[("Action", "CreateUser"), ("UserName", &user)],
        )
        .await;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:*","Resource":"*"}]}"#;
        iam(
            &http,
            &url,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", &user),
                ("PolicyName", "log"),
                ("PolicyDocument", policy),
            ],
        )
        .await;
        let key = iam(
            &http,
            &url,
            &[("Action", "CreateAccessKey"), ("UserName", &user)],
        )
        .await;
        let (id, secret) = (
            between(&key, "<AccessKeyId>", "</AccessKeyId>").to_owned(),
            between(&key, "<SecretAccessKey>", "</SecretAccessKey>").to_owned(),
        );

        // From here every request's signature is checked, until the end of the test.
        moto_checks(&http, &url, "0").await;
        let retention = Duration::from_secs(3600);
        let log =
            DynamoDeliveryLog::from_sdk(&signing_with(&url, &id, &secret).await, &table, retention);
        let i = Uuid::now_v7();
        let written = log.record(&[entry("s", i)]).await;
        let forged = DynamoDeliveryLog::from_sdk(
            &signing_with(&url, &id, "not-the-secret").await,
            &table,
            retention,
        )
        .record(&[entry("s", i)])
        .await;
        let read = log
            .integration_logs(&store_id("s"), i, &Filter::default(), Page::default())
            .await;
        moto_checks(&http, &url, "inf").await;

        written.expect("a signed write is taken");
        let refused = forged.expect_err("a write signed with the wrong secret is refused");
        assert!(refused.to_string().contains("Signature"), "{refused}");
        assert!(!refused.is_retryable());
        let Listed {
            items: logs,
            counted: total,
            ..
        } = read.expect("read");
        assert_eq!(total, 1, "only the signed write is in the log");
        assert_eq!(logs[0].event_id, "evt \"quoted\" \u{e9}\n");
    }

    /// A loopback peer answering the n-th request (0-based) with `script(n)`; counts
    /// the requests.
    async fn peer(
        script: impl Fn(usize) -> (StatusCode, &'static str) + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let script = Arc::new(script);
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move || {
                let (count, script) = (count.clone(), script.clone());
                async move {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = script(n);
                    (
                        status,
                        [("content-type", "application/x-amz-json-1.0")],
                        body,
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// Records one entry with a log writing to the peer at `url`.
    async fn write_one(url: &str) -> herald_core::error::Result<()> {
        DynamoDeliveryLog::from_sdk(
            &moto_config(url).await.expect("loopback config"),
            "t",
            Duration::from_secs(3600),
        )
        .record(&[entry("s", Uuid::now_v7())])
        .await
    }

    const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#;

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried_until_written() {
        let (url, seen) = peer(|n| match n {
            0 => (StatusCode::BAD_REQUEST, THROTTLED),
            1 => (StatusCode::INTERNAL_SERVER_ERROR, "{}"),
            _ => (StatusCode::OK, r#"{"UnprocessedItems":{}}"#),
        })
        .await;
        write_one(&url).await.expect("written on the third try");
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn items_handed_back_unprocessed_are_sent_again() {
        let (url, seen) = peer(|n| match n {
            0 => (
                StatusCode::OK,
                r#"{"UnprocessedItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"x"}}}}]}}"#,
            ),
            _ => (StatusCode::OK, r#"{"UnprocessedItems":{}}"#),
        })
        .await;
        write_one(&url).await.expect("written");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_request_fails_at_once_without_retries() {
        let (url, seen) = peer(|_| {
            (
                StatusCode::BAD_REQUEST,
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad item"}"#,
            )
        })
        .await;
        let err = write_one(&url).await.expect_err("refused");
        assert!(
            err.to_string().contains("ValidationException: bad item"),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_peer_that_keeps_throttling_fails_the_write_after_its_rounds() {
        let (url, seen) = peer(|_| (StatusCode::BAD_REQUEST, THROTTLED)).await;
        let err = write_one(&url).await.expect_err("gave up");
        assert!(err.to_string().contains("ThrottlingException"), "{err}");
        assert!(err.is_retryable());
        assert_eq!(seen.load(Ordering::SeqCst), 5, "one request per round");
    }
}

/// The raw item of integration `i` in `table`.
async fn raw_item(
    table: &str,
    i: &Integration,
) -> std::collections::HashMap<String, AttributeValue> {
    client()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("STORE#{}", i.store_id)))
        .key("sk", AttributeValue::S(format!("INTEGRATION#{}", i.id)))
        .send()
        .await
        .expect("get item")
        .item()
        .cloned()
        .expect("the item")
}

#[tokio::test]
async fn delivery_options_and_a_rotation_round_trip_sealed_and_an_ended_rotation_leaves_storage() {
    use chrono::{DurationRound, TimeDelta};
    // GIVEN a webhook with delivery options, in a rotation's overlap
    let (store, table) = fresh_table_on(endpoint()).await;
    let mut i = integration("store-rotation", webhook());
    i.delivery = DeliveryOptions {
        secret_header: Some(false),
        retry_window_minutes: Some(120),
        max_per_second: Some(50),
    };
    let until = (Utc::now() + chrono::Duration::hours(1))
        .duration_trunc(TimeDelta::milliseconds(1))
        .expect("trunc");
    if let Target::Webhook(c) = &mut i.target {
        c.retiring = Some(RetiringSecret {
            secret: Secret::new("THE_OLD_SECRET_KEY"),
            until,
        });
    }

    // WHEN it is written and read back
    store.insert(&i, 10).await.expect("insert");

    // THEN it is the same, and the old secret is sealed, only its mask in clear
    let read = store.get(&i.store_id, i.id).await.expect("get");
    assert_eq!(read, Some(at_ms(i.clone())));
    let dump = format!("{:?}", raw_item(&table, &i).await);
    assert!(!dump.contains("THE_OLD_SECRET_KEY"), "{dump}");
    assert!(dump.contains(&herald_core::mask::mask("THE_OLD_SECRET_KEY")));

    // WHEN its overlap has ended (the item says so)
    client()
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("STORE#store-rotation".into()))
        .key("sk", AttributeValue::S(format!("INTEGRATION#{}", i.id)))
        .update_expression("SET retiring_until = :past")
        .expression_attribute_values(
            ":past",
            AttributeValue::S("2026-01-01T00:00:00.000Z".into()),
        )
        .send()
        .await
        .expect("update item");

    // THEN it is read without it, and the next write leaves nothing of it behind
    let mut read = store
        .get(&i.store_id, i.id)
        .await
        .expect("get")
        .expect("found");
    let Target::Webhook(c) = &read.target else {
        panic!("a webhook")
    };
    assert_eq!(c.retiring, None);
    assert_eq!(c.secret_key, Some(Secret::new("SOME_SECRET_KEY")));
    read.name = "renamed".into();
    read.version += 1;
    assert_eq!(
        store
            .replace(&read, read.version - 1)
            .await
            .expect("replace"),
        ReplaceOutcome::Replaced
    );
    let item = raw_item(&table, &i).await;
    assert!(
        !item.contains_key("retiring_until") && !item.contains_key("retiring_secret_mask"),
        "{item:?}"
    );
    assert_eq!(
        store.get(&i.store_id, i.id).await.expect("get"),
        Some(at_ms(read))
    );
}

/// Integrations' rate buckets (`delivery.max_per_second`) in DynamoDB.
mod rate_bucket {
    use chrono::{DateTime, Utc};
    use herald_core::aws::dynamo::DynamoIntegrationStore;
    use herald_core::aws::rate::DynamoRateLimiter;
    use herald_core::ports::RateLimiter;
    use uuid::Uuid;

    use super::{client_at, serial_endpoint, store_id};

    async fn table_on(url: String) -> String {
        let table = format!("herald-rate-{}", Uuid::new_v4());
        DynamoIntegrationStore::create_table(&client_at(url), &table)
            .await
            .expect("table");
        table
    }

    #[tokio::test]
    async fn concurrent_takers_never_get_more_send_times_than_the_rate_allows_in_any_second() {
        // GIVEN eight fan-outs (each its own limiter, as separate Lambda instances)
        // sharing an integration's bucket at 50 a second, on a moto that isolates
        // conditional writes as DynamoDB does
        let url = serial_endpoint();
        let table = table_on(url.clone()).await;
        let id = Uuid::new_v4();

        // WHEN each reserves, ten times over, batches of 1 to 10 send times at once
        let takers = (0..8).map(|_| {
            let limiter = DynamoRateLimiter::new(client_at(url.clone()), table.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                for count in 1..=10 {
                    let slots = limiter
                        .reserve(&store_id("rated"), id, 50, count)
                        .await
                        .expect("reserve")
                        .expect("reserved within its rounds");
                    assert_eq!(slots.count, count);
                    times.extend((0..count).map(|k| slots.nth(k)));
                }
                times
            })
        });
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        for taker in takers {
            times.extend(taker.await.expect("taker"));
        }

        // THEN every send time asked for was given, no two closer than 20 ms, so no
        // one-second window holds more than 50
        times.sort();
        assert_eq!(times.len(), 8 * 55);
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= chrono::Duration::milliseconds(20),
                "{pair:?}"
            );
        }
        let mut most = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= chrono::Duration::seconds(1) {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        assert_eq!(most, 50);
    }

    #[tokio::test]
    async fn a_batchs_reservation_is_one_conditional_update_and_two_when_the_bucket_changed_form() {
        // GIVEN an integration's bucket at 10 a second, through a proxy that sees
        // each request
        let table = table_on(super::endpoint()).await;
        let (proxy, seen) = super::log_listing_cost::counting_proxy().await;
        let sdk = herald_core::aws::local::moto_config(&proxy.url)
            .await
            .expect("loopback config");
        let limiter = DynamoRateLimiter::from_sdk(&sdk, table.clone());
        let (store, id) = (store_id("rated"), Uuid::new_v4());
        let operations = || seen.operations.lock().expect("operations").clone();

        // WHEN a batch of ten reserves on the idle bucket, then another batch
        let before = Utc::now();
        let first = limiter
            .reserve(&store, id, 10, 10)
            .await
            .expect("ok")
            .expect("slots");
        let second = limiter
            .reserve(&store, id, 10, 10)
            .await
            .expect("ok")
            .expect("slots");

        // THEN each was one UpdateItem; the first starts now, the second a second later
        assert_eq!(operations(), ["UpdateItem", "UpdateItem"]);
        assert!(
            first.first >= before && first.first <= Utc::now(),
            "{first:?}"
        );
        assert_eq!(second.first, first.nth(10));

        // WHEN another fan-out (no memory of the bucket) reserves while it is busy
        let other = DynamoRateLimiter::from_sdk(&sdk, table);
        let third = other
            .reserve(&store, id, 10, 1)
            .await
            .expect("ok")
            .expect("slots");

        // THEN it tried the idle form first (refused), then the busy one: two writes
        assert_eq!(operations().len(), 4);
        assert_eq!(third.first, second.nth(10));
    }
}

/// The sweep of ended secret rotations (`herald_core::sweep`) on DynamoDB.
mod rotation_sweep {
    use std::sync::Arc;

    use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
    use herald_core::aws::dynamo::DynamoIntegrationStore;
    use herald_core::integrations::Integrations;
    use herald_core::model::{format_timestamp, Integration, RetiringSecret, Secret, Target};
    use herald_core::ports::{EndedRotation, IntegrationStore, RetiredSecrets};
    use herald_core::secrets::Vault;
    use herald_core::sweep::{sweep, Swept};
    use herald_core::validate::Policy;
    use serde_json::json;

    use super::{client, endpoint, fresh_vaulted_table_on, integration, raw_item, webhook};

    /// The store, its table's name and its vault (to open a stored envelope).
    async fn fresh() -> (DynamoIntegrationStore, String, Arc<Vault>) {
        fresh_vaulted_table_on(endpoint()).await
    }

    fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
        t.duration_trunc(TimeDelta::milliseconds(1)).expect("trunc")
    }

    /// A webhook (secret `SOME_SECRET_KEY`) whose previous secret signs until `until`.
    fn rotating(store: &str, previous: &str, until: DateTime<Utc>) -> Integration {
        let mut i = integration(store, webhook());
        if let Target::Webhook(c) = &mut i.target {
            c.retiring = Some(RetiringSecret {
                secret: Secret::new(previous),
                until,
            });
        }
        i
    }

    /// `i` as the store reads it now.
    async fn current(store: &DynamoIntegrationStore, i: &Integration) -> Integration {
        store
            .get(&i.store_id, i.id)
            .await
            .expect("get")
            .expect("found")
    }

    fn retiring(i: &Integration) -> Option<RetiringSecret> {
        match &i.target {
            Target::Webhook(c) => c.retiring.clone(),
            _ => panic!("a webhook"),
        }
    }

    #[tokio::test]
    async fn the_sweep_removes_an_ended_rotations_previous_secret_from_the_item_and_leaves_one_in_its_window(
    ) {
        // GIVEN two webhooks in a rotation, one's overlap ending in an hour, the
        // other's in three
        let (store, table, vault) = fresh().await;
        let now = ms(Utc::now());
        let ending = rotating(
            "store-sweep",
            "THE_OLD_SECRET_KEY",
            now + Duration::hours(1),
        );
        let lasting = rotating(
            "store-sweep",
            "ANOTHER_OLD_SECRET",
            now + Duration::hours(3),
        );
        store.insert(&ending, 10).await.expect("insert");
        store.insert(&lasting, 10).await.expect("insert");

        // WHEN the sweep runs two hours from now
        let swept = sweep(&store, now + Duration::hours(2))
            .await
            .expect("sweep");

        // THEN it removed the first one's previous secret: not in the item, not in
        // its envelope, not in its resource
        assert_eq!(
            swept,
            Swept {
                removed: 1,
                skipped: 0
            }
        );
        let item = raw_item(&table, &ending).await;
        for gone in ["retiring_until", "retiring_secret_mask", "gsi4pk", "gsi4sk"] {
            assert!(!item.contains_key(gone), "{gone} is left: {item:?}");
        }
        let blob = item["secrets"]
            .as_b()
            .expect("the envelope")
            .as_ref()
            .to_vec();
        let mut masked = current(&store, &ending).await;
        assert_eq!(retiring(&masked), None);
        assert_eq!(masked.version, 1);
        let resource = masked.to_resource("");
        assert!(
            resource["meta"].get("secret_rotation").is_none(),
            "{resource}"
        );
        if let Target::Webhook(c) = &mut masked.target {
            assert_eq!(c.secret_key, Some(Secret::new("SOME_SECRET_KEY")));
            c.retiring = Some(RetiringSecret {
                secret: Secret::new("*"),
                until: now + Duration::hours(1),
            });
        }
        let opened = vault.open_integration(masked, &blob).await.expect("open");
        assert_eq!(retiring(&opened), None, "the envelope still holds it");

        // AND the other one is untouched
        let item = raw_item(&table, &lasting).await;
        let until = format_timestamp(&(now + Duration::hours(3)));
        assert_eq!(item["retiring_until"].as_s().expect("until"), &until);
        assert_eq!(item["gsi4sk"].as_s().expect("index key"), &until);
        let read = current(&store, &lasting).await;
        assert_eq!(
            retiring(&read),
            Some(RetiringSecret {
                secret: Secret::new("ANOTHER_OLD_SECRET"),
                until: now + Duration::hours(3),
            })
        );

        // AND a second sweep at the same time finds nothing to do
        assert_eq!(
            sweep(&store, now + Duration::hours(2))
                .await
                .expect("sweep"),
            Swept::default()
        );
    }

    #[tokio::test]
    async fn a_sweep_that_loses_the_race_to_a_new_rotation_changes_nothing_and_the_new_rotation_stays(
    ) {
        // GIVEN a webhook whose rotation's overlap ends in an hour, found by a sweep
        // running two hours from now
        let (store, _table, _vault) = fresh().await;
        let now = ms(Utc::now());
        let i = rotating("store-race", "THE_OLD_SECRET_KEY", now + Duration::hours(1));
        store.insert(&i, 10).await.expect("insert");
        let found = store
            .ended_rotations(now + Duration::hours(2), 10)
            .await
            .expect("query");
        assert_eq!(
            found,
            [EndedRotation {
                store_id: i.store_id.clone(),
                id: i.id,
                until: now + Duration::hours(1),
            }]
        );

        // WHEN the secret is rotated again before the sweep removes anything
        let service = Integrations::new(
            Arc::new(store.clone()) as Arc<dyn IntegrationStore>,
            Policy {
                allow_http_webhooks: false,
                allow_plain_stomp: false,
            },
            10,
        );
        let rotated = service
            .rotate_secret(
                &i.store_id,
                i.id,
                &json!({"data": {"type": "secret-rotation", "secret_key": "THE_NEWEST_SECRET_KEY", "overlap_minutes": 60}}),
            )
            .await
            .expect("rotated");
        let removed = store
            .remove_retired_secret(&found[0])
            .await
            .expect("remove");

        // THEN the sweep removed nothing: the new rotation's previous secret (the one
        // it replaced) signs until the new rotation's end
        assert!(!removed);
        let read = current(&store, &i).await;
        let Target::Webhook(c) = &read.target else {
            panic!("a webhook")
        };
        assert_eq!(c.secret_key, Some(Secret::new("THE_NEWEST_SECRET_KEY")));
        let until = retiring(&rotated.integration).expect("a rotation").until;
        assert_eq!(
            c.retiring,
            Some(RetiringSecret {
                secret: Secret::new("SOME_SECRET_KEY"),
                until: ms(until),
            })
        );
        assert_eq!(read.version, 2);
    }

    #[tokio::test]
    async fn an_integration_written_before_the_rotation_index_is_not_found_by_the_sweep() {
        // GIVEN a webhook in a rotation whose item has no index attributes (as one
        // written before them)
        let (store, table, _vault) = fresh().await;
        let now = ms(Utc::now());
        let i = rotating("store-old", "THE_OLD_SECRET_KEY", now + Duration::hours(1));
        store.insert(&i, 10).await.expect("insert");
        client()
            .update_item()
            .table_name(&table)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("STORE#store-old".into()),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("INTEGRATION#{}", i.id)),
            )
            .update_expression("REMOVE gsi4pk, gsi4sk")
            .send()
            .await
            .expect("update item");

        // WHEN the sweep runs after its end
        let swept = sweep(&store, now + Duration::hours(2))
            .await
            .expect("sweep");

        // THEN it finds nothing, and the integration reads as before
        assert_eq!(swept, Swept::default());
        let read = current(&store, &i).await;
        assert_eq!(
            retiring(&read).map(|r| r.secret),
            Some(Secret::new("THE_OLD_SECRET_KEY"))
        );
    }
}
