//! The `api` Lambda function: wiring only. Settings and clients are built once per
//! container; the router does the rest.

use herald_api::settings::{Defaults, Settings};
use herald_api::AppState;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    herald_core::telemetry::init_lambda();
    let settings = Settings::from_env(Defaults::LAMBDA)?;
    let state = AppState::from_settings(&settings, false).await?;
    lambda_http::run(herald_api::lambda::router(state)).await
}
