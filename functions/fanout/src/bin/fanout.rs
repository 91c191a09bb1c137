//! The `fanout` Lambda function: wiring only. The webhook client, AWS clients and
//! integration cache are built once per container and reused across invocations.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use herald_core::config::{PipelineDefaults, PipelineSettings};
use herald_core::wiring::Components;
use lambda_runtime::{service_fn, Error, LambdaEvent};

/// mimalloc, as every Herald binary (see [`herald_core::Allocator`]).
#[global_allocator]
static ALLOCATOR: herald_core::Allocator = herald_core::Allocator;

/// One thread: a function has one vCPU below 1,769 MB, and a batch's deliveries are
/// I/O; a multi-thread runtime would only add wakeups across threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    herald_core::telemetry::init_lambda();
    herald_core::config::warn_unread(&herald_core::config::FANOUT_ENV);
    let settings = PipelineSettings::from_env(PipelineDefaults::LAMBDA)?;
    let components = Components::build(&settings, false).await?;
    let fanout = Arc::new(components.fanout()?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        herald_fanout::handle(&fanout, event)
    }))
    .await
}
