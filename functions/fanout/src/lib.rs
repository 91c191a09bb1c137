//! The fan-out function's handler: an SQS batch in, `SqsBatchResponse` out, listing
//! only the records that must be retried (`ReportBatchItemFailures`).
//! See <https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html#services-sqs-batchfailurereporting>.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use herald_core::fanout::Fanout;
use herald_core::ports::QueuedJob;
use lambda_runtime::{Error, LambdaEvent};

/// Converts an SQS record; `None` when it has no message id (nothing to report on).
pub fn queued_job(m: SqsMessage) -> Option<QueuedJob> {
    let count = m
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let sent_at = m
        .attributes
        .get("SentTimestamp")
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    Some(QueuedJob {
        message_id: m.message_id?,
        receipt: m.receipt_handle.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
        receive_count: count,
        sent_at,
    })
}

/// Handles one batch. The invocation deadline comes from the Lambda context.
pub async fn handle(
    fanout: &Arc<Fanout>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let (batch, ctx) = event.into_parts();
    let left_ms = (ctx.deadline as i64 - Utc::now().timestamp_millis()).max(0) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(left_ms);
    Ok(process(fanout, batch, Some(deadline)).await)
}

/// The batch logic without the Lambda context (tests and the events/ fixture runner).
pub async fn process(
    fanout: &Arc<Fanout>,
    batch: SqsEvent,
    deadline: Option<tokio::time::Instant>,
) -> SqsBatchResponse {
    let records: Vec<QueuedJob> = batch.records.into_iter().filter_map(queued_job).collect();
    let failed = fanout.process(records, deadline).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
