//! The `ingest` Lambda function: wiring only. It builds the ingest use case and
//! nothing else: no API router, no deliverer.

use std::sync::Arc;

use herald_core::access::StoreAccess;
use herald_core::config::{PipelineDefaults, PipelineSettings};
use herald_core::wiring::Components;
use herald_ingest::{handle, Deps};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

/// mimalloc, as every Herald binary (see [`herald_core::Allocator`]).
#[global_allocator]
static ALLOCATOR: herald_core::Allocator = herald_core::Allocator;

/// One thread: a function has one vCPU below 1,769 MB, and its requests wait on I/O;
/// a multi-thread runtime would only add wakeups across threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    herald_core::telemetry::init_lambda();
    herald_core::config::warn_unread(&herald_core::config::INGEST_ENV);
    let pipeline = PipelineSettings::from_env(PipelineDefaults::LAMBDA)?;
    // POST /v2/events is IAM-authorized: the mapping says which stores a caller may name.
    let access = StoreAccess::from_env()?;
    let components = Components::build(&pipeline, false).await?;
    let deps = Deps {
        ingest: Arc::new(components.ingest()?),
        access,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handle(&deps, event))).await
}
