//! The `sweeper` Lambda function: wiring only. The table client and the key are
//! built once per container; the schedule (template.yaml) invokes it every 5 minutes.

use herald_core::config::{PipelineDefaults, PipelineSettings};
use herald_core::wiring::Components;
use lambda_runtime::{service_fn, Error, LambdaEvent};

/// mimalloc, as every Herald binary (see [`herald_core::Allocator`]).
#[global_allocator]
static ALLOCATOR: herald_core::Allocator = herald_core::Allocator;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    herald_core::telemetry::init_lambda();
    herald_core::config::warn_unread(&herald_core::config::SWEEPER_ENV);
    let settings = PipelineSettings::from_env(PipelineDefaults::LAMBDA)?;
    let components = Components::build(&settings, false).await?;
    components.require_secrets()?;
    let store = components.retired_secrets.clone();
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        herald_sweeper::handle(store.as_ref(), event)
    }))
    .await
}
