//! The API's settings, read once from the environment at start.

use herald_core::config::{self, Backend};
use herald_core::integrations::Integrations;
use herald_core::model::StoreId;
use herald_core::validate::Policy;
use herald_core::{Error, Result};

use crate::tenancy::Tenancy;

/// Everything the router needs to know about its deployment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `HERALD_BACKEND`: memory or aws.
    pub backend: Backend,
    /// `HERALD_TABLE`: the DynamoDB table (aws backend).
    pub table: Option<String>,
    /// `HERALD_AUTH` (+ `HERALD_STORE_CLAIM`, `HERALD_DEFAULT_STORE`).
    pub tenancy: Tenancy,
    /// `HERALD_MAX_INTEGRATIONS_PER_STORE` (default 100).
    pub max_per_store: usize,
    /// `HERALD_ALLOW_HTTP_WEBHOOKS`.
    pub policy: Policy,
    /// `HERALD_PUBLIC_URL`: base of `links` (else derived from the request's host).
    pub public_url: Option<String>,
}

/// Per-binary defaults.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// Backend when `HERALD_BACKEND` is unset.
    pub backend: Backend,
    /// Tenancy mode name when `HERALD_AUTH` is unset.
    pub auth: &'static str,
    /// Whether plain-http webhooks are allowed when unset.
    pub allow_http_webhooks: bool,
}

impl Defaults {
    /// The Lambda function: DynamoDB, JWT claims, https only.
    pub const LAMBDA: Defaults = Defaults {
        backend: Backend::Aws,
        auth: "jwt",
        allow_http_webhooks: false,
    };
    /// The dev server: embedded store, `X-Store-Id` header, plain http allowed.
    pub const LOCAL: Defaults = Defaults {
        backend: Backend::Memory,
        auth: "header",
        allow_http_webhooks: true,
    };
}

impl Settings {
    /// Reads the settings, failing with the name of the first bad variable.
    pub fn from_env(defaults: Defaults) -> Result<Self> {
        let backend = config::backend(defaults.backend)?;
        let table = config::var("HERALD_TABLE");
        if backend == Backend::Aws && table.is_none() {
            return Err(Error::Config(
                "HERALD_TABLE must be set when HERALD_BACKEND=aws".into(),
            ));
        }
        let auth = config::var("HERALD_AUTH").unwrap_or_else(|| defaults.auth.to_owned());
        let tenancy = match auth.as_str() {
            "jwt" => Tenancy::JwtClaim {
                claim: config::var("HERALD_STORE_CLAIM").unwrap_or_else(|| "store_id".into()),
            },
            "iam" => Tenancy::IamHeader,
            "header" => {
                let raw = config::var("HERALD_DEFAULT_STORE").unwrap_or_else(|| "default".into());
                Tenancy::Header {
                    default: StoreId::parse(&raw).ok_or_else(|| {
                        Error::Config(format!(
                            "HERALD_DEFAULT_STORE {raw:?} is not a valid store id"
                        ))
                    })?,
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "HERALD_AUTH must be jwt, iam or header, not {other:?}"
                )))
            }
        };
        let public_url =
            config::var("HERALD_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_owned());
        Ok(Self {
            backend,
            table,
            tenancy,
            max_per_store: config::number(
                "HERALD_MAX_INTEGRATIONS_PER_STORE",
                Integrations::DEFAULT_MAX_PER_STORE,
                1..=10_000,
            )?,
            policy: Policy {
                allow_http_webhooks: config::flag(
                    "HERALD_ALLOW_HTTP_WEBHOOKS",
                    defaults.allow_http_webhooks,
                )?,
            },
            public_url,
        })
    }
}
