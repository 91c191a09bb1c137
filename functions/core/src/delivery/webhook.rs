//! The webhook target: an HTTP `POST` of Elastic Path's body, signed.
//!
//! One hardened client per process: rustls, a total timeout, no redirects, no proxy
//! from the environment, and a DNS resolver that passes every resolved address through
//! the [`AddressGuard`], so the connection only ever goes to a checked address. IP
//! literals in URLs never reach a resolver, so they are checked before the request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::StatusCode;
use rustls::pki_types::CertificateDer;
use url::{Host, Url};
use uuid::Uuid;

use super::{envelope, DeliverTo};
use crate::attempt::{DeliveryResult, Outcome, MAX_LOGGED_BODY};
use crate::job::DeliveryJob;
use crate::model::{Integration, WebhookConfig};
use crate::net::client::{
    Destination, Failure, HttpClient, Options, Resolve, Resolving, SystemResolver,
};
use crate::net::guard::{AddressGuard, Refused};
use crate::retry::parse_retry_after;
use crate::signing;

/// The longest a webhook may take to answer (Elastic Path's 30 s).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

// The delivery's own headers, named once (a name given as a string is parsed and
// copied on every request).
const TRIGGER: HeaderName = HeaderName::from_static("x-moltin-integration-trigger");
const SECRET_KEY: HeaderName = HeaderName::from_static("x-moltin-secret-key");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The error a refused address surfaces as, found again in the failure's chain.
#[derive(Debug)]
struct GuardRefusal(Refused);

impl std::fmt::Display for GuardRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for GuardRefusal {}

/// Resolves with `inner` (the system resolver), then keeps only what the guard
/// allows. It runs for every new connection, and the connection goes only to the
/// addresses it returned: what was checked is what is connected to, so a name whose
/// answer changes between lookups (DNS rebinding) is checked again each time.
struct GuardedResolver {
    guard: AddressGuard,
    inner: Arc<dyn Resolve>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, host: &str) -> Resolving {
        let guard = self.guard.clone();
        let host = host.to_owned();
        let lookup = self.inner.resolve(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await?;
            let allowed = guard.filter(&host, &addrs).map_err(GuardRefusal)?;
            if allowed.is_empty() {
                return Err(format!("{host} resolved to no address").into());
            }
            Ok(allowed)
        })
    }
}

/// Delivers to webhooks.
pub struct WebhookDeliverer {
    /// Built on the first delivery: building reads the system's trust store, which
    /// the functions that rarely deliver (api, ingest: test deliveries only) should
    /// not pay for at every cold start. Shared by every delivery after that.
    client: std::sync::OnceLock<Result<HttpClient, String>>,
    settings: ClientSettings,
    guard: AddressGuard,
    /// Each integration's webhook URL, parsed and its literal host checked once (per
    /// process, and again when the integration's URL changes) instead of on every
    /// delivery.
    urls: std::sync::Mutex<HashMap<Uuid, Arc<Endpoint>>>,
}

/// A webhook URL, ready to post to.
struct Endpoint {
    /// The URL as the integration has it.
    text: String,
    /// It prepared for requests, or why it cannot be posted to.
    destination: Result<Destination, String>,
}

/// Most parsed URLs kept; past it the cache starts over.
const URLS_KEPT: usize = 10_000;

/// What the client is built from.
struct ClientSettings {
    timeout: Duration,
    resolver: Arc<dyn Resolve>,
    extra_roots: Vec<CertificateDer<'static>>,
}

impl WebhookDeliverer {
    /// A deliverer whose client uses `guard` and gives up after `timeout` (at most
    /// [`MAX_TIMEOUT`]). Build it once per process.
    pub fn new(guard: AddressGuard, timeout: Duration) -> Result<Self, String> {
        Self::with_resolver(guard, timeout, Arc::new(SystemResolver))
    }

    /// A deliverer that asks `resolver` instead of the system resolver; every answer
    /// still goes through `guard` before any connection. The seam for tests that
    /// script DNS (a name whose answer changes between lookups) without a DNS server.
    pub fn with_resolver(
        guard: AddressGuard,
        timeout: Duration,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, String> {
        Ok(Self {
            client: std::sync::OnceLock::new(),
            settings: ClientSettings {
                timeout,
                resolver,
                extra_roots: Vec::new(),
            },
            guard,
            urls: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Trusts `roots` (DER certificates) as well as the platform's roots for HTTPS
    /// webhooks: for receivers behind a private CA, and for tests.
    pub fn trusting(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.settings.extra_roots = roots;
        self
    }

    /// `integration`'s webhook URL, ready to post to.
    fn endpoint(&self, client: &HttpClient, integration: Uuid, url: &str) -> Arc<Endpoint> {
        let mut urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(endpoint) = urls.get(&integration) {
            if endpoint.text == url {
                return endpoint.clone();
            }
        }
        let endpoint = Arc::new(Endpoint {
            text: url.to_owned(),
            destination: self.prepare(client, url),
        });
        if urls.len() >= URLS_KEPT {
            urls.clear();
        }
        urls.insert(integration, endpoint.clone());
        endpoint
    }

    /// Parses `url`, checks its host if it is an IP literal, and prepares it for
    /// requests (the client refuses other schemes and credentials, which the API
    /// refuses too). `Err` is the permanent failure.
    fn prepare(&self, client: &HttpClient, url: &str) -> Result<Destination, String> {
        let parsed = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        self.check_literal_host(&parsed)?;
        client.destination(&parsed)
    }

    /// The hardened client, built once, on first use.
    fn client(&self) -> Result<&HttpClient, String> {
        let ClientSettings {
            timeout,
            resolver,
            extra_roots,
        } = &self.settings;
        self.client
            .get_or_init(|| {
                HttpClient::new(Options {
                    connect_timeout: Duration::from_secs(10).min(*timeout),
                    idle_timeout: Duration::from_secs(60),
                    resolver: Arc::new(GuardedResolver {
                        guard: self.guard.clone(),
                        inner: resolver.clone(),
                    }),
                    extra_roots: extra_roots.clone(),
                })
                .map_err(|e| format!("building the webhook client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Checks a URL's host before any connection: IP literals here, names at resolve
    /// time. `Err` is the refusal to record.
    pub fn check_literal_host(&self, url: &Url) -> Result<(), String> {
        let ip: Option<IpAddr> = match url.host() {
            Some(Host::Ipv4(v4)) => Some(v4.into()),
            Some(Host::Ipv6(v6)) => Some(v6.into()),
            Some(Host::Domain(_)) => None,
            None => return Err("the URL has no host".into()),
        };
        match ip {
            Some(ip) => self.guard.check(ip).map_err(|r| r.to_string()),
            None => Ok(()),
        }
    }
}

/// What a failure without an answer is recorded as: a refusal of the guard is
/// permanent; the rest are retried.
fn without_answer(failure: &Failure, timeout: Duration, elapsed: Duration) -> DeliveryResult {
    if let Some(refusal) = failure.find::<GuardRefusal>() {
        return DeliveryResult::failed(Outcome::Permanent, refusal.to_string(), elapsed);
    }
    let detail = match failure {
        Failure::Timeout => format!("no answer within {} ms", timeout.as_millis()),
        Failure::Connect(_) => match failure.find::<rustls::Error>() {
            Some(tls) => format!("the TLS handshake with the webhook failed: {tls}"),
            None => "could not connect to the webhook".to_owned(),
        },
        Failure::Exchange(_) => "the request to the webhook failed before an answer".to_owned(),
    };
    DeliveryResult::failed(Outcome::Retryable { retry_after: None }, detail, elapsed)
}

#[async_trait]
impl DeliverTo<WebhookConfig> for WebhookDeliverer {
    async fn deliver(
        &self,
        integration: &Integration,
        config: &WebhookConfig,
        job: &DeliveryJob,
        attempt: u32,
    ) -> DeliveryResult {
        let started = Instant::now();
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the webhook client could not be built");
                return DeliveryResult::failed(
                    Outcome::Retryable { retry_after: None },
                    "the webhook client could not be built",
                    started.elapsed(),
                );
            }
        };
        let endpoint = self.endpoint(client, integration.id, &config.url);
        let destination = match &endpoint.destination {
            Ok(d) => d,
            Err(why) => {
                return DeliveryResult::failed(Outcome::Permanent, why.clone(), started.elapsed())
            }
        };

        let body = envelope::webhook_body(job, integration, attempt);
        let msg_id = job.job_id.to_string();
        let timestamp = Utc::now().timestamp();
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("Herald-Webhooks/0.1"));
        if let Ok(v) = HeaderValue::from_str(&job.event.kind) {
            headers.insert(TRIGGER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&msg_id) {
            headers.insert(WEBHOOK_ID, v);
        }
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        // The raw secret travels only where the integration wants it (Elastic Path
        // always sends it; `delivery.secret_header: false` keeps it off the wire).
        if let Some(secret) = config
            .secret_key
            .as_ref()
            .filter(|_| integration.delivery.sends_secret_header())
        {
            if let Ok(mut v) = HeaderValue::from_str(secret.expose()) {
                v.set_sensitive(true);
                headers.insert(SECRET_KEY, v);
            }
        }
        // One `v1,` signature per live secret (during a rotation's overlap, the new
        // one and the one it replaces), space-separated as Standard Webhooks allows.
        let signatures: Vec<String> = config
            .signing_secrets(Utc::now())
            .into_iter()
            .map(|secret| signing::sign(secret.expose(), &msg_id, timestamp, &body))
            .collect();
        if !signatures.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&signatures.join(" ")) {
                headers.insert(WEBHOOK_SIGNATURE, v);
            }
        }

        let timeout = self.settings.timeout.min(MAX_TIMEOUT);
        let answer = client
            .post(
                destination,
                headers,
                Bytes::from(body),
                timeout,
                MAX_LOGGED_BODY,
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(failure) => return without_answer(&failure, timeout, started.elapsed()),
        };
        let status = answer.status;
        let retry_after = answer
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        let duration = started.elapsed();
        if status.is_success() {
            return DeliveryResult {
                outcome: Outcome::Delivered,
                status_code: Some(status.as_u16()),
                body,
                error_detail: None,
                duration,
            };
        }
        let detail = if status.is_redirection() {
            format!("the webhook answered {status}; redirects are not followed")
        } else {
            format!("the webhook answered {status}")
        };
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then_some(retry_after)
            .flatten();
        // Every other answer is retried, as Elastic Path does, except 410 Gone: the
        // endpoint says it is gone for good (the fan-out then disables the integration).
        let outcome = if status == StatusCode::GONE {
            Outcome::Permanent
        } else {
            Outcome::Retryable { retry_after }
        };
        DeliveryResult {
            outcome,
            status_code: Some(status.as_u16()),
            body,
            error_detail: Some(detail),
            duration,
        }
    }
}
