//! The API's settings, read once from the environment at start.

use herald_core::access::StoreAccess;
use herald_core::config::{self, FunctionEnv, PipelineDefaults, PipelineSettings};
use herald_core::integrations::Integrations;
use herald_core::model::StoreId;
use herald_core::validate::Policy;
use herald_core::{Error, Result};

use crate::tenancy::Tenancy;

/// The api function's `HERALD_*` variables (see [`FunctionEnv`]).
pub const ENV: FunctionEnv = FunctionEnv {
    stack: &[
        "HERALD_BACKEND",
        "HERALD_TABLE",
        "HERALD_AUTH",
        "HERALD_STORE_CLAIM",
        herald_core::access::ENV,
        "HERALD_MAX_INTEGRATIONS_PER_STORE",
        "HERALD_PUBLIC_URL",
        "HERALD_WEBHOOK_TIMEOUT_SECONDS",
        // Test deliveries record their attempts, kept as long as the fan-out's.
        "HERALD_LOG_RETENTION_DAYS",
        "HERALD_KMS_KEY_ID",
        // GET /v2/event-data/{token}: the dataref key (VerifyMac) and the bucket.
        "HERALD_DATAREF_KEY_ID",
        "HERALD_EVENT_BUCKET",
        "HERALD_QUEUE_URL",
        "HERALD_DLQ_URL",
        "HERALD_ALLOW_PLAIN_STOMP",
        "HERALD_LOG_LEVEL",
        // The portal's sign-in (OpenID Connect against the JWT authorizer's issuer).
        "HERALD_JWT_ISSUER",
        "HERALD_PORTAL_CLIENT_ID",
    ],
    optional: &[
        "HERALD_INTEGRATION_CACHE_MS",
        "HERALD_ALLOW_PRIVATE_CIDRS",
        "HERALD_STOMP_EXTRA_CA",
        "HERALD_WEBHOOK_EXTRA_CA",
        "HERALD_ALLOW_HTTP_WEBHOOKS",
        "HERALD_DEFAULT_STORE",
    ],
};

/// Everything the router needs to know about its deployment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Backend, table, queue and delivery settings.
    pub pipeline: PipelineSettings,
    /// `HERALD_AUTH` (+ `HERALD_STORE_CLAIM`, `HERALD_DEFAULT_STORE`,
    /// `HERALD_IAM_STORE_ACCESS`).
    pub tenancy: Tenancy,
    /// `HERALD_MAX_INTEGRATIONS_PER_STORE` (default 100).
    pub max_per_store: usize,
    /// `HERALD_ALLOW_HTTP_WEBHOOKS`, and `HERALD_ALLOW_PLAIN_STOMP` (read with the
    /// pipeline's settings: deliveries obey it too).
    pub policy: Policy,
    /// `HERALD_PUBLIC_URL`: base of `links` (else derived from the request's host).
    pub public_url: Option<String>,
    /// How the portal (`/portal`) signs its users in under JWT.
    pub portal: PortalSignIn,
}

/// The portal's OpenID Connect sign-in, used when the API takes JWTs: the stack's
/// issuer (the JWT authorizer's) and the portal's client id there. Without a client id
/// the portal says that sign-in is not configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortalSignIn {
    /// `HERALD_JWT_ISSUER`, without a trailing `/`.
    pub issuer: Option<String>,
    /// `HERALD_PORTAL_CLIENT_ID`: a public client (no secret) allowed the
    /// authorization-code flow with PKCE, redirecting to `<API>/portal`.
    pub client_id: Option<String>,
    /// Whether an `http` issuer on a loopback host is allowed (the dev server, which
    /// tests its JWT mode against an OpenID Provider on loopback); never in Lambda.
    pub loopback_http: bool,
}

impl PortalSignIn {
    /// The issuer's origin (`https://host[:port]`, or `http://` on loopback where
    /// allowed), as it goes into the page's Content-Security-Policy.
    pub fn issuer_origin(&self) -> Option<String> {
        crate::oidc::origin(self.issuer.as_deref()?, self.loopback_http)
    }
}

/// Per-binary defaults.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// Pipeline defaults (backend, cache, allow-list).
    pub pipeline: PipelineDefaults,
    /// Tenancy mode name when `HERALD_AUTH` is unset.
    pub auth: &'static str,
    /// Whether plain-http webhooks are allowed when unset.
    pub allow_http_webhooks: bool,
    /// Whether `HERALD_JWT_ISSUER` may be `http` on a loopback host.
    pub loopback_http_issuer: bool,
}

impl Defaults {
    /// The Lambda function: DynamoDB, JWT claims, https only.
    pub const LAMBDA: Defaults = Defaults {
        pipeline: PipelineDefaults::LAMBDA,
        auth: "jwt",
        allow_http_webhooks: false,
        loopback_http_issuer: false,
    };
    /// The dev server: embedded store, `X-Store-Id` header, plain http allowed.
    pub const LOCAL: Defaults = Defaults {
        pipeline: PipelineDefaults::LOCAL,
        auth: "header",
        allow_http_webhooks: true,
        loopback_http_issuer: true,
    };
}

impl Settings {
    /// The dev server's settings with the embedded backend, for tests.
    pub fn memory(tenancy: Tenancy) -> Self {
        Self {
            pipeline: PipelineSettings::memory(),
            tenancy,
            max_per_store: Integrations::DEFAULT_MAX_PER_STORE,
            policy: Policy {
                allow_http_webhooks: false,
                allow_plain_stomp: false,
            },
            public_url: None,
            portal: PortalSignIn::default(),
        }
    }

    /// Reads the settings, failing with the name of the first bad variable.
    pub fn from_env(defaults: Defaults) -> Result<Self> {
        let pipeline = PipelineSettings::from_env(defaults.pipeline)?;
        let auth = config::var("HERALD_AUTH").unwrap_or_else(|| defaults.auth.to_owned());
        // Read in every mode, so a malformed mapping fails start-up wherever it is set.
        let access = StoreAccess::from_env()?;
        if access.is_restricted() && auth != "iam" {
            tracing::warn!(
                auth,
                "{} is set but applies only with HERALD_AUTH=iam",
                herald_core::access::ENV
            );
        }
        let tenancy = match auth.as_str() {
            "jwt" => Tenancy::JwtClaim {
                claim: config::var("HERALD_STORE_CLAIM").unwrap_or_else(|| "store_id".into()),
            },
            "iam" => Tenancy::IamHeader { access },
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
        let allow_plain_stomp = pipeline.allow_plain_stomp;
        let portal = PortalSignIn {
            issuer: config::var("HERALD_JWT_ISSUER").map(|i| i.trim_end_matches('/').to_owned()),
            client_id: config::var("HERALD_PORTAL_CLIENT_ID"),
            loopback_http: defaults.loopback_http_issuer,
        };
        if portal.issuer.is_some() && portal.issuer_origin().is_none() {
            return Err(Error::Config(format!(
                "HERALD_JWT_ISSUER must be an https URL (https://host[:port]/path){}",
                if portal.loopback_http {
                    ", or http on a loopback host (http://127.0.0.1:port/path)"
                } else {
                    ""
                }
            )));
        }
        Ok(Self {
            pipeline,
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
                allow_plain_stomp,
            },
            public_url,
            portal,
        })
    }
}
