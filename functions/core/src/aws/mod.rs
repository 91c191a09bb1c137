//! AWS adapters. The only place where SDK types appear; everything here converts to
//! and from the core model at the boundary.

pub mod attempt_log;
pub mod batch_write;
pub mod claims;
pub mod dynamo;
pub mod kms;
pub mod local;
mod log_page;
pub mod rate;
pub mod s3;
pub mod sqs;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::error::Error;

/// Loads the shared AWS configuration once per process (region, credentials, and
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` overrides, which is how tests and
/// the dev server reach moto), with the SDK's own HTTPS client behind [`LazyTls`].
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(lazy_https_client())
        .load()
        .await
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxies from the environment),
/// wrapped in [`LazyTls`].
pub fn lazy_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    let inner = Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    });
    SharedHttpClient::new(LazyTls(inner))
}

/// An HTTP client whose connector (and so its TLS configuration, which reads every
/// certificate of the system's trust store) is built on the first request instead of
/// when each SDK client is built. The SDK validates its HTTP client eagerly, once per
/// client and once more for the STS client of the default credentials chain, which
/// put the trust store's parsing in every function's init whether or not it calls AWS
/// before its first event. What is built is the same; only when changes.
#[derive(Debug)]
pub struct LazyTls(SharedHttpClient);

impl HttpClient for LazyTls {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// Error codes that mean "try again later".
pub(crate) const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
];

/// Converts an SDK failure into the core error, classifying it as retryable or not.
pub(crate) fn backend_error<E, R>(service: &'static str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => e.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c)),
        _ => false,
    };
    let message = match err.code() {
        Some(code) => format!("{code}: {}", err.message().unwrap_or("no message")),
        None => aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string(),
    };
    Error::Backend {
        service,
        message,
        retryable,
    }
}
