//! Logging setup shared by every binary: structured `tracing` output, JSON in Lambda.
//!
//! Whatever level is asked for, the AWS SDK's HTTP layer is held at DEBUG: at TRACE it
//! logs whole request and response bodies, which carry integration secrets (a DynamoDB
//! read returns the stored configuration).

use tracing_subscriber::EnvFilter;

/// Directives appended last, so they win over any level the operator sets.
const CAPS: &str = "aws_smithy_runtime=debug,aws_smithy_runtime_api=debug,aws_smithy_http_client=debug,hyper=info,hyper_util=info,h2=info,rustls=info";

/// The filter for a requested level spec (`info`, `debug,herald_core=trace`, ...).
pub fn filter(spec: &str) -> EnvFilter {
    let spec = if spec.trim().is_empty() {
        "info"
    } else {
        spec.trim()
    };
    EnvFilter::try_new(format!("{spec},{CAPS}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{CAPS}")))
}

/// Lambda: level from `AWS_LAMBDA_LOG_LEVEL` (set by the function's logging config),
/// else `RUST_LOG`, else INFO; JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`.
pub fn init_lambda() {
    let spec = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .map(|l| l.to_ascii_lowercase())
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&spec))
        .with_target(false)
        .without_time();
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Local binaries: level from `RUST_LOG`, human-readable, to stderr.
pub fn init_local() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    tracing_subscriber::fmt()
        .with_env_filter(filter(&spec))
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
}
