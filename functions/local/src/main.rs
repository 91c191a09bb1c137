//! `herald-local`: Herald's dev server. Serves the same router as the `api` Lambda
//! function on loopback, with the embedded backend by default (`HERALD_BACKEND=aws`
//! uses DynamoDB through the standard AWS environment, e.g. moto).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use herald_api::settings::{Defaults, Settings};
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::config;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    herald_core::telemetry::init_local();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let settings = Settings::from_env(Defaults::LOCAL).map_err(|e| e.to_string())?;
    if !matches!(settings.tenancy, Tenancy::Header { .. }) {
        return Err(
            "the dev server names stores with the X-Store-Id header; unset HERALD_AUTH".into(),
        );
    }
    let port = config::number("PORT", 3000, 0..=65_535).map_err(|e| e.to_string())?;
    let state = AppState::from_settings(&settings, true)
        .await
        .map_err(|e| {
            format!(
                "cannot reach the {} backend: {e}",
                settings.backend.as_str()
            )
        })?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port as u16));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (set PORT to use another port)"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    announce(bound, settings.backend.as_str());
    axum::serve(listener, herald_api::router(state))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| e.to_string())
}

/// The one line people (and the end-to-end tests) read to find the server.
#[allow(clippy::print_stdout)]
fn announce(addr: SocketAddr, backend: &str) {
    println!("herald-local listening on http://{addr} (backend: {backend})");
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}
