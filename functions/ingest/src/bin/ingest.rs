//! The `ingest` Lambda function: wiring only.

use std::sync::Arc;

use herald_api::settings::{Defaults, Settings};
use herald_api::AppState;
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
    let mut settings = Settings::from_env(Defaults::LAMBDA)?;
    // POST /v2/events is IAM-authorized: the trusted caller names the store.
    settings.tenancy = herald_api::tenancy::Tenancy::IamHeader;
    let components = Components::build(&settings.pipeline, false).await?;
    let ingest = Arc::new(components.ingest()?);
    let router = herald_api::lambda::router(AppState::from_components(
        &components,
        &settings,
        Some(ingest.clone()),
    )?);
    let deps = Deps { ingest, router };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handle(&deps, event))).await
}
