//! Typed configuration from the environment. Each binary reads its settings once at
//! start and fails fast with the name of the variable that is wrong.

use crate::error::{Error, Result};
use crate::net::guard::AddressGuard;

/// Which adapters back the ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In-process adapters: nothing to run, nothing kept across restarts.
    Memory,
    /// DynamoDB (and SQS) through the standard AWS environment; `AWS_ENDPOINT_URL`
    /// points it at moto locally.
    Aws,
}

impl Backend {
    /// `memory` or `aws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Aws => "aws",
        }
    }
}

/// A non-empty environment variable, trimmed.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A variable that must be set.
pub fn required(name: &str) -> Result<String> {
    var(name).ok_or_else(|| Error::Config(format!("{name} must be set")))
}

/// `HERALD_BACKEND`: `memory` or `aws`, with a per-binary default.
pub fn backend(default: Backend) -> Result<Backend> {
    match var("HERALD_BACKEND").as_deref() {
        None => Ok(default),
        Some("memory") => Ok(Backend::Memory),
        Some("aws") => Ok(Backend::Aws),
        Some(other) => Err(Error::Config(format!(
            "HERALD_BACKEND must be \"memory\" or \"aws\", not {other:?}"
        ))),
    }
}

/// `HERALD_ALLOW_PRIVATE_CIDRS` (`raw`, else `default`): the address guard it
/// describes, parsed once when the settings are read; a bad list is an error naming
/// the variable.
fn address_guard(raw: Option<String>, default: &str) -> Result<AddressGuard> {
    AddressGuard::from_list(raw.as_deref().unwrap_or(default))
        .map_err(|e| Error::Config(format!("HERALD_ALLOW_PRIVATE_CIDRS: {e}")))
}

/// A boolean variable (`true`/`false`/`1`/`0`), or `default` when unset.
pub fn flag(name: &str, default: bool) -> Result<bool> {
    match var(name).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(Error::Config(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

/// A whole-number variable within `range`, or `default` when unset.
pub fn number(name: &str, default: usize, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
    match var(name) {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Error::Config(format!(
                "{name} must be a whole number from {} to {}, not {raw:?}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// The `HERALD_*` variables one Lambda function reads: those its stack sets
/// (template.yaml gives each, from a parameter or a resource of the stack) and those
/// it reads with a default right for AWS (tuning, tests, private networks). Any other
/// `HERALD_*` variable in its environment is a mistake, which [`warn_unread`] names.
#[derive(Clone, Copy, Debug)]
pub struct FunctionEnv {
    /// Set by the stack.
    pub stack: &'static [&'static str],
    /// Read with a default when unset.
    pub optional: &'static [&'static str],
}

impl FunctionEnv {
    /// Whether the function reads `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.stack.contains(&name) || self.optional.contains(&name)
    }
}

/// The ingest function's variables.
pub const INGEST_ENV: FunctionEnv = FunctionEnv {
    stack: &[
        "HERALD_BACKEND",
        "HERALD_TABLE",
        "HERALD_QUEUE_URL",
        "HERALD_EVENT_BUCKET",
        "HERALD_IAM_STORE_ACCESS",
        "HERALD_LOG_LEVEL",
    ],
    optional: &["HERALD_INTEGRATION_CACHE_MS"],
};

/// The fan-out function's variables.
pub const FANOUT_ENV: FunctionEnv = FunctionEnv {
    stack: &[
        "HERALD_BACKEND",
        "HERALD_TABLE",
        "HERALD_QUEUE_URL",
        "HERALD_DLQ_URL",
        "HERALD_EVENT_BUCKET",
        "HERALD_WEBHOOK_TIMEOUT_SECONDS",
        "HERALD_LOG_RETENTION_DAYS",
        "HERALD_AUTO_DISABLE_AFTER",
        "HERALD_KMS_KEY_ID",
        "HERALD_DATAREF_KEY_ID",
        "HERALD_PUBLIC_URL",
        "HERALD_ALLOW_PLAIN_STOMP",
        "HERALD_STACK_NAME",
        "HERALD_LOG_LEVEL",
    ],
    optional: &[
        "HERALD_INTEGRATION_CACHE_MS",
        "HERALD_ALLOW_PRIVATE_CIDRS",
        "HERALD_RETRY_SCALE",
        "HERALD_STOMP_EXTRA_CA",
        "HERALD_WEBHOOK_EXTRA_CA",
        "HERALD_EMF_METRICS",
    ],
};

/// The sweeper function's variables (it removes ended rotations' previous secrets,
/// sealing the rest again: it needs the table and the key).
pub const SWEEPER_ENV: FunctionEnv = FunctionEnv {
    stack: &[
        "HERALD_BACKEND",
        "HERALD_TABLE",
        "HERALD_KMS_KEY_ID",
        "HERALD_LOG_LEVEL",
    ],
    optional: &[],
};

/// The `HERALD_*` names among `names` that `env` does not read.
pub fn unread(env: &FunctionEnv, names: impl IntoIterator<Item = String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| n.starts_with("HERALD_") && !env.reads(n))
        .collect()
}

/// Warns, at start, of each `HERALD_*` variable set that this function does not read:
/// a misspelt name, or a setting meant for another function, would otherwise be
/// ignored without a word.
pub fn warn_unread(env: &FunctionEnv) {
    for name in unread(
        env,
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
    ) {
        tracing::warn!(variable = %name, "this function does not read {name}: ignored");
    }
}

/// Settings of the delivery pipeline shared by every binary (`HERALD_*`).
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// `HERALD_BACKEND`.
    pub backend: Backend,
    /// `HERALD_TABLE` (aws).
    pub table: Option<String>,
    /// `HERALD_QUEUE_URL`: the internal queue (aws; ingest, fan-out, dev server).
    pub queue_url: Option<String>,
    /// `HERALD_DLQ_URL`: its dead-letter queue (aws; the fan-out moves jobs there
    /// after their last attempt, the api replays from it).
    pub dlq_url: Option<String>,
    /// `HERALD_EVENT_BUCKET`: the bucket of event payloads too large for a queue
    /// message (aws; ingest stores them, the fan-out reads them). Unset: such events
    /// are refused.
    pub event_bucket: Option<String>,
    /// `HERALD_LOG_RETENTION_DAYS` (default 30).
    pub log_retention: std::time::Duration,
    /// `HERALD_INTEGRATION_CACHE_MS`: how long a store's integrations are cached.
    pub integration_cache: std::time::Duration,
    /// `HERALD_WEBHOOK_TIMEOUT_SECONDS` (1 to 30, default 30).
    pub webhook_timeout: std::time::Duration,
    /// `HERALD_ALLOW_PRIVATE_CIDRS`, parsed: the SSRF guard of every delivery and of
    /// registration, which admits these internal networks anyway.
    pub address_guard: AddressGuard,
    /// `HERALD_ALLOW_PLAIN_STOMP`: whether plain `stomp://` and `tcp://` brokers may be
    /// registered and delivered to (their login and messages travel in clear text).
    pub allow_plain_stomp: bool,
    /// `HERALD_RETRY_SCALE`: multiplies every retry delay (1 in production; tests and
    /// drills compress time with it).
    pub retry_scale: f64,
    /// `HERALD_STOMP_EXTRA_CA`: a PEM file of CA certificates trusted, besides the
    /// public roots, for `stomp+ssl://` brokers (private brokers, tests).
    pub stomp_extra_ca: Option<String>,
    /// `HERALD_WEBHOOK_EXTRA_CA`: a PEM file of CA certificates trusted, besides the
    /// platform's roots, for `https://` webhooks (receivers behind a private CA).
    pub webhook_extra_ca: Option<String>,
    /// `HERALD_EMF_METRICS`: print CloudWatch EMF records (default: on in Lambda).
    pub emf_metrics: bool,
    /// `HERALD_STACK_NAME`: the stack this function belongs to, the `Stack` dimension
    /// of its EMF records.
    pub stack_name: Option<String>,
    /// `HERALD_KMS_KEY_ID`: the KMS key (id, ARN or alias) that seals integration
    /// secrets (aws). Processes without it (ingest) read secrets only as masks.
    pub kms_key_id: Option<String>,
    /// `HERALD_AUTO_DISABLE_AFTER`: consecutive failed jobs after which the fan-out
    /// disables an integration (default 20; 0: never).
    pub auto_disable_after: u32,
    /// `HERALD_DATAREF_KEY_ID`: the KMS HMAC key of `dataref` tokens (aws; the
    /// fan-out makes codes with it, the API checks them). See [`crate::event_data`].
    pub dataref_key_id: Option<String>,
    /// `HERALD_PUBLIC_URL`: the API's public base URL (`https://<api>`), which the
    /// fan-out's `dataref` URLs start with and the API's links too (else the API
    /// derives its links from the request's host).
    pub public_url: Option<String>,
}

/// Per-binary defaults of [`PipelineSettings`].
#[derive(Clone, Copy, Debug)]
pub struct PipelineDefaults {
    /// Backend when `HERALD_BACKEND` is unset.
    pub backend: Backend,
    /// Integration cache lifetime in milliseconds.
    pub integration_cache_ms: usize,
    /// Allow-list when `HERALD_ALLOW_PRIVATE_CIDRS` is unset.
    pub allow_private_cidrs: &'static str,
    /// Whether plain STOMP is allowed when `HERALD_ALLOW_PLAIN_STOMP` is unset.
    pub allow_plain_stomp: bool,
}

impl PipelineDefaults {
    /// Lambda functions: AWS, 5 s cache, no internal network reachable, STOMP over
    /// TLS only.
    pub const LAMBDA: Self = Self {
        backend: Backend::Aws,
        integration_cache_ms: 5_000,
        allow_private_cidrs: "",
        allow_plain_stomp: false,
    };
    /// The dev server: embedded, no cache (one process, changes visible at once),
    /// loopback reachable (local receivers) through the allow-list, plain STOMP
    /// allowed (a local broker).
    pub const LOCAL: Self = Self {
        backend: Backend::Memory,
        integration_cache_ms: 0,
        allow_private_cidrs: "127.0.0.0/8,::1/128",
        allow_plain_stomp: true,
    };
}

impl PipelineSettings {
    /// Reads the settings, failing with the name of the first bad variable.
    pub fn from_env(defaults: PipelineDefaults) -> Result<Self> {
        let backend = backend(defaults.backend)?;
        let table = var("HERALD_TABLE");
        if backend == Backend::Aws && table.is_none() {
            return Err(Error::Config(
                "HERALD_TABLE must be set when HERALD_BACKEND=aws".into(),
            ));
        }
        let retry_scale = match var("HERALD_RETRY_SCALE") {
            None => 1.0,
            Some(raw) => match raw.parse::<f64>() {
                Ok(f) if (0.0..=1.0).contains(&f) => f,
                _ => {
                    return Err(Error::Config(format!(
                        "HERALD_RETRY_SCALE must be a number from 0 to 1, not {raw:?}"
                    )))
                }
            },
        };
        let address_guard = address_guard(
            var("HERALD_ALLOW_PRIVATE_CIDRS"),
            defaults.allow_private_cidrs,
        )?;
        Ok(Self {
            backend,
            table,
            queue_url: var("HERALD_QUEUE_URL"),
            dlq_url: var("HERALD_DLQ_URL"),
            event_bucket: var("HERALD_EVENT_BUCKET"),
            log_retention: std::time::Duration::from_secs(
                86_400 * number("HERALD_LOG_RETENTION_DAYS", 30, 1..=3650)? as u64,
            ),
            integration_cache: std::time::Duration::from_millis(number(
                "HERALD_INTEGRATION_CACHE_MS",
                defaults.integration_cache_ms,
                0..=600_000,
            )? as u64),
            webhook_timeout: std::time::Duration::from_secs(number(
                "HERALD_WEBHOOK_TIMEOUT_SECONDS",
                30,
                1..=30,
            )? as u64),
            address_guard,
            allow_plain_stomp: flag("HERALD_ALLOW_PLAIN_STOMP", defaults.allow_plain_stomp)?,
            retry_scale,
            stomp_extra_ca: var("HERALD_STOMP_EXTRA_CA"),
            webhook_extra_ca: var("HERALD_WEBHOOK_EXTRA_CA"),
            emf_metrics: flag(
                "HERALD_EMF_METRICS",
                std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
            )?,
            stack_name: var("HERALD_STACK_NAME"),
            kms_key_id: var("HERALD_KMS_KEY_ID"),
            auto_disable_after: number(
                "HERALD_AUTO_DISABLE_AFTER",
                crate::fanout::AUTO_DISABLE_AFTER as usize,
                0..=100_000,
            )? as u32,
            dataref_key_id: var("HERALD_DATAREF_KEY_ID"),
            public_url: var("HERALD_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_owned()),
        })
    }

    /// Embedded backend with the dev server's defaults, for tests.
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory,
            table: None,
            queue_url: None,
            dlq_url: None,
            event_bucket: None,
            log_retention: std::time::Duration::from_secs(30 * 86_400),
            integration_cache: std::time::Duration::ZERO,
            webhook_timeout: std::time::Duration::from_secs(30),
            address_guard: AddressGuard::from_list(PipelineDefaults::LOCAL.allow_private_cidrs)
                .expect("the dev server's allow-list is a list of CIDRs"),
            allow_plain_stomp: PipelineDefaults::LOCAL.allow_plain_stomp,
            retry_scale: 1.0,
            stomp_extra_ca: None,
            webhook_extra_ca: None,
            emf_metrics: false,
            stack_name: None,
            kms_key_id: None,
            auto_disable_after: crate::fanout::AUTO_DISABLE_AFTER,
            dataref_key_id: None,
            public_url: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::net::guard::{AddressGuard, Cidr};

    #[test]
    fn the_allow_list_is_parsed_into_the_guard_the_settings_hold_and_a_bad_one_names_the_setting() {
        let cidr = |s: &str| Cidr::parse(s).expect("cidr");
        assert_eq!(
            address_guard(None, PipelineDefaults::LOCAL.allow_private_cidrs).expect("default"),
            AddressGuard::allowing(vec![cidr("127.0.0.0/8"), cidr("::1/128")])
        );
        assert_eq!(
            address_guard(Some(" 10.1.0.0/16 ,".into()), "127.0.0.0/8").expect("set"),
            AddressGuard::allowing(vec![cidr("10.1.0.0/16")])
        );
        assert_eq!(
            address_guard(Some("10.0.0.0/33".into()), "")
                .expect_err("bad")
                .to_string(),
            "configuration: HERALD_ALLOW_PRIVATE_CIDRS: \"10.0.0.0/33\" is not a CIDR"
        );
    }

    #[test]
    fn the_ingest_function_lists_the_variable_its_store_access_is_read_from() {
        assert!(INGEST_ENV.stack.contains(&crate::access::ENV));
    }

    #[test]
    fn a_herald_variable_a_function_does_not_read_is_named_and_others_are_not() {
        let set = [
            "HERALD_TABLE",
            "HERALD_LOG_RETENTION_DAY",
            "HERALD_STORE_CLAIM",
            "HERALD_EMF_METRICS",
            "AWS_REGION",
            "PATH",
        ]
        .map(String::from);
        assert_eq!(
            unread(&FANOUT_ENV, set),
            ["HERALD_LOG_RETENTION_DAY", "HERALD_STORE_CLAIM"]
        );
    }
}
