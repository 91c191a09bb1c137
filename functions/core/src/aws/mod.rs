//! AWS adapters. The only place where SDK types appear; everything here converts to
//! and from the core model at the boundary.

pub mod dynamo;
pub mod kms;
pub mod local;
pub mod records;
pub mod sqs;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// Loads the shared AWS configuration once per process (region, credentials, and
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` overrides, which is how tests and
/// the dev server reach moto).
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Error codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
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
