//! The `api` Lambda function: wiring only. Settings and clients are built once per
//! container; the router does the rest.

use herald_api::settings::{Defaults, Settings};
use herald_api::AppState;
use herald_core::wiring::Components;

/// mimalloc, as every Herald binary (see [`herald_core::Allocator`]).
#[global_allocator]
static ALLOCATOR: herald_core::Allocator = herald_core::Allocator;

/// One thread: a function has one vCPU below 1,769 MB, and its requests wait on I/O;
/// a multi-thread runtime would only add wakeups across threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    herald_core::telemetry::init_lambda();
    herald_core::config::warn_unread(&herald_api::settings::ENV);
    let settings = Settings::from_env(Defaults::LAMBDA)?;
    let components = Components::build(&settings.pipeline, false).await?;
    components.require_secrets()?;
    let state = AppState::from_components(&components, &settings, None)?;
    lambda_http::run(herald_api::lambda::router(state)).await
}
