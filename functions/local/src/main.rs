//! `herald-local`: Herald's whole pipeline in one process on loopback. The same
//! router as the `api` and `ingest` functions (integrations, logs, `POST /v2/events`),
//! and pollers that feed the internal queue to the same fan-out handler the `fanout`
//! function runs, more of them while every one is busy (up to `HERALD_POLLERS`), and the
//! sweeper's sweep of ended rotations every 30 s. The embedded backend by default; `HERALD_BACKEND=aws` uses
//! DynamoDB and SQS through the standard AWS environment (e.g. moto).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use herald_api::settings::{Defaults, Settings};
use herald_api::tenancy::Tenancy;
use herald_api::AppState;
use herald_core::config;
use herald_core::fanout;
use herald_core::wiring::Components;
use tokio::net::TcpListener;

/// mimalloc, as every Herald binary (see [`herald_core::Allocator`]).
#[global_allocator]
static ALLOCATOR: herald_core::Allocator = herald_core::Allocator;

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
    let mut settings = Settings::from_env(Defaults::LOCAL).map_err(|e| e.to_string())?;
    let authorizer = match &settings.tenancy {
        Tenancy::Header { .. } => None,
        Tenancy::JwtClaim { .. } => Some(Arc::new(jwt_authorizer(&settings)?)),
        Tenancy::IamHeader { .. } => {
            return Err(
                "the dev server names stores with the X-Store-Id header (HERALD_AUTH unset) \
                 or takes JWTs (HERALD_AUTH=jwt); it cannot check IAM signatures"
                    .into(),
            )
        }
    };
    let port = config::number("PORT", 3000, 0..=65_535).map_err(|e| e.to_string())?;
    let lines = config::number("HERALD_LOG_LINES_PER_SECOND", 20, 0..=1_000_000)
        .map_err(|e| e.to_string())?;
    herald_core::telemetry::set_lines_per_second(lines as u32);
    let backend = settings.pipeline.backend.as_str();
    if config::flag("HERALD_CREATE_LOCAL_RESOURCES", false).map_err(|e| e.to_string())? {
        create_local_resources(&settings.pipeline).await?;
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port as u16));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (set PORT to use another port)"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // The fan-out's dataref URLs lead here, unless HERALD_PUBLIC_URL says otherwise.
    settings
        .pipeline
        .public_url
        .get_or_insert_with(|| format!("http://{bound}"));
    let components = Components::build(&settings.pipeline, true)
        .await
        .map_err(|e| format!("cannot reach the {backend} backend: {e}"))?;
    let ingest = Arc::new(components.ingest().map_err(|e| e.to_string())?);
    let fanout = Arc::new(components.fanout().map_err(|e| e.to_string())?);
    let source = components
        .source
        .clone()
        .ok_or("the internal queue is not configured (HERALD_QUEUE_URL)")?;
    let state = AppState::from_components(&components, &settings, Some(ingest))
        .map_err(|e| e.to_string())?;

    // Lambda runs more fan-out invocations as messages wait; so does the dev server.
    let pollers = config::number("HERALD_POLLERS", 64, 1..=64).map_err(|e| e.to_string())?;
    let batch_deadline = settings.pipeline.webhook_timeout + Duration::from_secs(15);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let polling = tokio::spawn(fanout::poll_scaled(
        source,
        fanout,
        batch_deadline,
        pollers,
        stopped,
    ));
    // The previous secrets of ended rotations leave storage within 30 s, as the
    // sweeper function's schedule takes them out of the table in AWS.
    let sweeping = tokio::spawn(herald_core::sweep::every(
        components.retired_secrets.clone(),
        herald_core::sweep::LOCAL_INTERVAL,
        stop.subscribe(),
    ));
    // The signal handlers exist before the address is announced: a SIGTERM sent as
    // soon as someone reads the line must stop the server gracefully, not kill it.
    let shutdown = shutdown()?;
    announce(bound, backend);
    let router = match authorizer {
        Some(authorizer) => herald_api::authorizer::router(state, authorizer),
        None => herald_api::router(state),
    };
    let app = herald_api::hosts::loopback_only(router);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string());
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), polling).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sweeping).await;
    served
}

/// `HERALD_AUTH=jwt`: API Gateway's JWT authorizer on loopback, for the issuer
/// `HERALD_JWT_ISSUER` and the audiences `HERALD_JWT_AUDIENCE` (comma-separated client
/// ids, as the template's `JwtAudience`).
fn jwt_authorizer(settings: &Settings) -> Result<herald_api::authorizer::JwtAuthorizer, String> {
    let issuer = settings
        .portal
        .issuer
        .as_deref()
        .ok_or("HERALD_AUTH=jwt needs HERALD_JWT_ISSUER (the issuer's URL)")?;
    let audiences = config::required("HERALD_JWT_AUDIENCE").map_err(|e| e.to_string())?;
    herald_api::authorizer::JwtAuthorizer::new(
        issuer,
        audiences.split(',').map(str::to_owned).collect(),
        settings.portal.loopback_http,
    )
    .map_err(|e| format!("HERALD_JWT_ISSUER: {e}"))
}

/// `make run-aws`: creates the table, the queues, the bucket of large event bodies
/// (`HERALD_EVENT_BUCKET`) and the KMS keys (when `HERALD_KMS_KEY_ID` and
/// `HERALD_DATAREF_KEY_ID` are aliases) on
/// the moto server named by `AWS_ENDPOINT_URL`
/// (which must be on loopback), unless they exist already.
async fn create_local_resources(
    pipeline: &herald_core::config::PipelineSettings,
) -> Result<(), String> {
    let endpoint = config::required("AWS_ENDPOINT_URL").map_err(|e| e.to_string())?;
    let sdk = herald_core::aws::local::moto_config(&endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let table = pipeline.table.clone().ok_or("HERALD_TABLE must be set")?;
    let queue_url = pipeline
        .queue_url
        .clone()
        .ok_or("HERALD_QUEUE_URL must be set")?;
    let queue_name = queue_url
        .rsplit('/')
        .next()
        .unwrap_or("herald-jobs")
        .to_owned();
    match herald_core::aws::local::bootstrap(
        &sdk,
        &table,
        &queue_name,
        herald_core::retry::MAX_RECEIVES,
    )
    .await
    {
        Ok(_) => {
            tracing::info!(%table, queue = %queue_name, "created the table and queues on moto")
        }
        Err(e)
            if e.to_string().contains("ResourceInUse")
                || e.to_string().contains("AlreadyExists") =>
        {
            tracing::info!("the table and queues exist already")
        }
        Err(e) => return Err(format!("creating the local resources: {e}")),
    }
    if let Some(bucket) = &pipeline.event_bucket {
        match herald_core::aws::s3::S3Bodies::from_sdk(&sdk, bucket.clone())
            .create_bucket()
            .await
        {
            Ok(()) => tracing::info!(%bucket, "created the bucket of large event bodies on moto"),
            Err(e) if e.to_string().contains("BucketAlready") => {
                tracing::info!(%bucket, "the bucket of large event bodies exists already")
            }
            Err(e) => return Err(format!("creating the bucket {bucket}: {e}")),
        }
    }
    if let Some(alias) = pipeline
        .kms_key_id
        .as_deref()
        .filter(|k| k.starts_with("alias/"))
    {
        herald_core::aws::kms::ensure_local_key(&sdk, alias)
            .await
            .map_err(|e| format!("creating the KMS key {alias}: {e}"))?;
        tracing::info!(%alias, "the KMS key for integration secrets is ready on moto");
    }
    if let Some(alias) = pipeline
        .dataref_key_id
        .as_deref()
        .filter(|k| k.starts_with("alias/"))
    {
        herald_core::aws::kms::ensure_local_mac_key(&sdk, alias)
            .await
            .map_err(|e| format!("creating the KMS key {alias}: {e}"))?;
        tracing::info!(%alias, "the KMS key of dataref tokens is ready on moto");
    }
    Ok(())
}

/// The one line people (and the end-to-end tests) read to find the server, with the
/// store owner's portal (`/portal`) on it: one line, as readers take only the first.
#[allow(clippy::print_stdout)]
fn announce(addr: SocketAddr, backend: &str) {
    println!("herald-local listening on http://{addr} (backend: {backend}); portal: http://{addr}/portal");
}

/// Registers the handlers for Ctrl-C and SIGTERM now, and returns the future that
/// completes when either arrives.
fn shutdown() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}
