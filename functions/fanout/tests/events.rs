//! `events/fanout-*.json` through the fan-out handler: an SQS batch with one good,
//! one retryable (on its second attempt) and one malformed record. None is reported:
//! the retryable one is sent on, delayed, for its third attempt.

use std::path::PathBuf;
use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use herald_core::config::PipelineSettings;
use herald_core::filter::{Filter, Listed};
use herald_core::model::{Integration, StoreId};
use herald_core::page::Page;
use herald_core::ports::JobSource;
use herald_core::testkit::webhook_to;
use herald_core::wiring::Components;
use tokio::net::TcpListener;
use uuid::Uuid;

const GOOD: &str = "0192f6e4-0000-7000-8000-000000000001";
const RETRY: &str = "0192f6e4-0000-7000-8000-000000000002";

async fn receiver(status: StatusCode) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(move || async move { status }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

fn integration(id: &str, url: String) -> Integration {
    Integration {
        id: Uuid::parse_str(id).expect("uuid"),
        ..webhook_to(id, "default", &url)
    }
}

#[tokio::test]
async fn the_fanout_batch_file_sends_its_retryable_record_on_for_its_next_attempt() {
    let components = Components::build(&PipelineSettings::memory(), false)
        .await
        .expect("components");
    components
        .integrations
        .insert(&integration(GOOD, receiver(StatusCode::OK).await), 100)
        .await
        .expect("seed");
    components
        .integrations
        .insert(
            &integration(RETRY, receiver(StatusCode::INTERNAL_SERVER_ERROR).await),
            100,
        )
        .await
        .expect("seed");
    let fanout = Arc::new(components.fanout().expect("fanout"));

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/fanout-batch.json");
    let batch: SqsEvent =
        serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("SQS event");
    assert_eq!(batch.records.len(), 3);

    let response = herald_fanout::process(&fanout, batch, None).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    let queue = components.memory_queue.clone().expect("the embedded queue");
    let next = queue
        .receive(10, std::time::Duration::from_secs(2))
        .await
        .expect("receive");
    let next: Vec<_> = next
        .iter()
        .map(|m| herald_core::job::DeliveryJob::parse(&m.body).expect("job"))
        .map(|j| (j.integration_id.to_string(), j.attempt))
        .collect();
    assert_eq!(next, [(RETRY.to_owned(), 3)]);

    let store = StoreId::parse("default").expect("store");
    let Listed {
        items: logs,
        counted: total,
        ..
    } = components
        .log
        .store_logs(&store, &Filter::default(), Page::default())
        .await
        .expect("logs");
    assert_eq!(
        total, 2,
        "the good and the retryable record were attempted and recorded"
    );
    let retry_log = logs
        .iter()
        .find(|l| l.integration_id.to_string() == RETRY)
        .expect("retry log");
    assert_eq!(
        (
            retry_log.attempt,
            retry_log.status_code,
            retry_log.succeeded
        ),
        (2, Some(500), false)
    );
    let good_log = logs
        .iter()
        .find(|l| l.integration_id.to_string() == GOOD)
        .expect("good log");
    assert!(good_log.succeeded);
}

#[tokio::test]
async fn a_full_success_reports_no_failures() {
    let components = Components::build(&PipelineSettings::memory(), false)
        .await
        .expect("components");
    components
        .integrations
        .insert(&integration(GOOD, receiver(StatusCode::OK).await), 100)
        .await
        .expect("seed");
    let fanout = Arc::new(components.fanout().expect("fanout"));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/fanout-batch.json");
    let mut batch: SqsEvent =
        serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("SQS event");
    batch.records.truncate(1);
    let response = herald_fanout::process(&fanout, batch, None).await;
    assert!(response.batch_item_failures.is_empty());
    let json = serde_json::to_value(&response).expect("json");
    assert_eq!(json, serde_json::json!({"batchItemFailures": []}));
}
