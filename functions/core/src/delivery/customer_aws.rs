//! What the targets in the store owner's own AWS account (SQS queue, EventBridge bus,
//! SNS topic) share: a client per integration and credential set, built with the
//! integration's credentials (static keys, or a role assumed with the store's
//! external id and session tag), and the reading of an AWS error code into an
//! outcome and a detail for the store owner.
//!
//! Clients are reused across invocations and never shared between integrations.
//! Assumed-role credentials are cached by the client's identity cache until shortly
//! before they expire. The standard endpoint environment (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL_STS`) is honoured, which is how
//! tests and the dev server reach moto while integrations keep real ARNs and URLs.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use uuid::Uuid;

use crate::attempt::Outcome;
use crate::model::{SqsAuth, StoreId, STORE_SESSION_TAG};

/// How long one send to a customer's queue, bus or topic may take, credentials
/// included: the SDK's own retries of it happen within this too.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// The clients of one AWS service (`C`), one per integration and credential set.
pub(super) struct CustomerClients<C> {
    base: SdkConfig,
    timeout: Duration,
    clients: Mutex<HashMap<(Uuid, u64), C>>,
}

impl<C: Clone> CustomerClients<C> {
    /// Clients derived from `base` (the process's AWS configuration: endpoints,
    /// retries), each send given up after [`SEND_TIMEOUT`].
    pub(super) fn new(base: SdkConfig) -> Self {
        Self {
            base,
            timeout: SEND_TIMEOUT,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Gives each send up after `timeout` instead: the whole operation (assuming the
    /// role, connecting, every SDK retry) ends by then, and with it its connections.
    pub(super) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn fingerprint(region: &str, auth: &SqsAuth) -> u64 {
        let mut h = DefaultHasher::new();
        region.hash(&mut h);
        match auth {
            SqsAuth::Keys {
                access_key_id,
                secret_access_key,
            } => {
                access_key_id.expose().hash(&mut h);
                secret_access_key.expose().hash(&mut h);
            }
            SqsAuth::AssumeRole {
                role_arn,
                external_id,
            } => {
                role_arn.hash(&mut h);
                external_id.hash(&mut h);
            }
        }
        h.finish()
    }

    /// The client of `integration` (acting for `store`) in `region` with `auth`,
    /// built by `make` from the derived configuration the first time.
    pub(super) async fn client(
        &self,
        integration: Uuid,
        store: &StoreId,
        region: &str,
        auth: &SqsAuth,
        make: fn(&SdkConfig) -> C,
    ) -> C {
        let key = (integration, Self::fingerprint(region, auth));
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let region = Region::new(region.to_owned());
        let credentials = match auth {
            SqsAuth::Keys {
                access_key_id,
                secret_access_key,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id.expose(),
                secret_access_key.expose(),
                None,
                None,
                "herald-integration",
            )),
            SqsAuth::AssumeRole {
                role_arn,
                external_id,
            } => SharedCredentialsProvider::new(
                // The store rides along as a session tag, which the customer's trust
                // policy requires: a role trusts Herald only while it acts for the
                // role's own store, whatever external id an integration carries.
                AssumeRoleProvider::builder(role_arn)
                    .external_id(external_id)
                    .tags([(STORE_SESSION_TAG, store.as_str())])
                    .session_name(format!("herald-{}", integration.simple()))
                    .region(region.clone())
                    .configure(&self.base)
                    .build()
                    .await,
            ),
        };
        let config = self
            .base
            .to_builder()
            .region(region)
            .credentials_provider(credentials)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(self.timeout)
                    .connect_timeout(self.timeout)
                    .build(),
            )
            .build();
        let client = make(&config);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        // Credentials of an integration changed: drop its old clients.
        clients.retain(|(id, _), _| *id != integration);
        clients.insert(key, client.clone());
        client
    }
}

/// How one AWS service's target is named in a detail, and the codes it answers
/// besides the ones every service shares.
pub(super) struct Service {
    /// `queue`, `event bus`, `topic`.
    pub noun: &'static str,
    /// Codes that say the target does not exist.
    pub missing: &'static [&'static str],
    /// Codes of throttling or trouble at the service's end.
    pub busy: &'static [&'static str],
    /// Codes that refuse this message whatever the target's configuration: the
    /// attempt fails for good.
    pub refused_for_good: &'static [&'static str],
}

/// The error code: from the parsed error, else from an XML `<Code>` in the raw body
/// (some compatible endpoints answer JSON-protocol requests with XML errors).
fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    if let Some(code) = err.code() {
        return Some(code.to_owned());
    }
    let raw = err.raw_response()?;
    let from_xml = raw
        .body()
        .bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|body| {
            let start = body.find("<Code>")? + "<Code>".len();
            let end = body[start..].find("</Code>")? + start;
            Some(body[start..end].to_owned())
        });
    from_xml.or_else(|| (raw.status().as_u16() == 403).then(|| "AccessDenied".to_owned()))
}

/// What a failed call to `service` comes to.
pub(super) fn classify<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    service: &Service,
) -> (Outcome, String) {
    let retry = Outcome::Retryable { retry_after: None };
    let noun = service.noun;
    match err {
        SdkError::TimeoutError(_) => (
            retry,
            format!("no answer from the {noun} by the attempt's deadline"),
        ),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (retry, format!("the {noun} could not be reached"))
        }
        _ => classify_code(
            &error_code(err).unwrap_or_else(|| "unknown".to_owned()),
            service,
        ),
    }
}

/// What an error `code` from `service` comes to (a failed call's, or a failed entry's
/// in an answer that succeeded as a whole).
pub(super) fn classify_code(code: &str, service: &Service) -> (Outcome, String) {
    let noun = service.noun;
    let detail = match code {
        "AccessDenied" | "AccessDeniedException" | "AuthorizationError" => {
            format!("access denied: the credentials may not send to this {noun}")
        }
        c if service.missing.contains(&c) => format!("the {noun} does not exist"),
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidAccessKeyId"
        | "ExpiredToken"
        | "InvalidSecurity" => format!("invalid credentials ({code})"),
        c if crate::aws::sqs::RETRYABLE_CODES.contains(&c) || service.busy.contains(&c) => {
            format!("the {noun} is throttling or unavailable ({code})")
        }
        c if c.starts_with("KMS") => {
            format!("the {noun}'s KMS key refused the message ({code})")
        }
        c if service.refused_for_good.contains(&c) => {
            return (
                Outcome::Permanent,
                format!("the {noun} refused the message for good ({code})"),
            )
        }
        _ => format!("the {noun} refused the message ({code})"),
    };
    // Configuration problems (access, credentials, a missing target) can be fixed by
    // the store owner within the retry budget, so they are retried too; the detail
    // says which it is.
    (Outcome::Retryable { retry_after: None }, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUS: Service = Service {
        noun: "event bus",
        missing: &["ResourceNotFoundException"],
        busy: &["InternalException"],
        refused_for_good: &["MalformedDetail"],
    };

    #[test]
    fn codes_read_as_configuration_problems_are_retried_and_a_message_refused_for_good_is_not() {
        let retry = Outcome::Retryable { retry_after: None };
        let cases = [
            (
                "AccessDeniedException",
                retry.clone(),
                "access denied: the credentials may not send to this event bus",
            ),
            (
                "ResourceNotFoundException",
                retry.clone(),
                "the event bus does not exist",
            ),
            (
                "UnrecognizedClientException",
                retry.clone(),
                "invalid credentials (UnrecognizedClientException)",
            ),
            (
                "ThrottlingException",
                retry.clone(),
                "the event bus is throttling or unavailable (ThrottlingException)",
            ),
            (
                "InternalException",
                retry.clone(),
                "the event bus is throttling or unavailable (InternalException)",
            ),
            (
                "KMSAccessDenied",
                retry.clone(),
                "the event bus's KMS key refused the message (KMSAccessDenied)",
            ),
            (
                "MalformedDetail",
                Outcome::Permanent,
                "the event bus refused the message for good (MalformedDetail)",
            ),
            (
                "SomethingNew",
                retry.clone(),
                "the event bus refused the message (SomethingNew)",
            ),
        ];
        for (code, outcome, detail) in cases {
            assert_eq!(
                classify_code(code, &BUS),
                (outcome, detail.to_owned()),
                "{code}"
            );
        }
    }
}
