//! The issuer's OpenID Connect discovery document
//! (`{issuer}/.well-known/openid-configuration`), read once per process: the portal
//! learns from it where the browser signs in and exchanges its code (Amazon Cognito's
//! token endpoint is on the user pool's domain, not on the issuer's origin), and the
//! dev server's JWT authorizer learns where the issuer's keys are.
//!
//! The issuer is the operator's setting, never a caller's, so the address guard of
//! deliveries does not apply; what does: `https` only (`http` to a loopback host where
//! the deployment allows it: the dev server), a timeout, a bounded body, and the
//! document's `issuer` equal to the configured one (OpenID Connect Discovery 1.0, §4.3).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::{Host, Url};

/// How long one request to the issuer may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document read from the issuer.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a failed discovery is remembered before the next request tries again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The origin (`scheme://host[:port]`) of `url` when it may be reached: `https`, or
/// `http` to a loopback host (`127.0.0.0/8`, `[::1]`, `localhost`) when
/// `loopback_http`. The origin holds only characters a header value may hold (the host
/// is in its ASCII form), so it can go into a Content-Security-Policy as it is.
pub fn origin(url: &str, loopback_http: bool) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let allowed = match parsed.scheme() {
        "https" => true,
        "http" => loopback_http && is_loopback(parsed.host()?),
        _ => false,
    };
    let origin = parsed.origin();
    (allowed && origin.is_tuple()).then(|| origin.ascii_serialization())
}

fn is_loopback(host: Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    }
}

/// What Herald uses of the issuer's discovery document.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Metadata {
    /// Equal to the configured issuer.
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the portal exchanges the code (and its PKCE verifier) for tokens.
    pub token_endpoint: String,
    /// The issuer's signing keys (JWKS).
    pub jwks_uri: String,
}

/// An issuer and its discovery document, fetched on first use and kept for the life
/// of the process; a failure is kept `RETRY_AFTER`, then tried again.
#[derive(Debug)]
pub struct Discovery {
    issuer: String,
    loopback_http: bool,
    client: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
enum Cached {
    Found(Arc<Metadata>),
    Failed { at: Instant, why: String },
}

impl Discovery {
    /// The discovery of `issuer` (without a trailing `/`); `loopback_http` allows
    /// `http` to a loopback issuer and endpoints (the dev server only).
    pub fn new(issuer: &str, loopback_http: bool) -> Result<Self, String> {
        if origin(issuer, loopback_http).is_none() {
            return Err(format!(
                "the issuer {issuer:?} is not an https URL{}",
                if loopback_http {
                    " (or http on a loopback host)"
                } else {
                    ""
                }
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            loopback_http,
            client,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The issuer, as configured.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether `http` to loopback is allowed.
    pub fn loopback_http(&self) -> bool {
        self.loopback_http
    }

    /// The issuer's metadata, read once; or why it could not be.
    pub async fn metadata(&self) -> Result<Arc<Metadata>, String> {
        let mut cached = self.cached.lock().await;
        match &*cached {
            Some(Cached::Found(found)) => return Ok(found.clone()),
            Some(Cached::Failed { at, why }) if at.elapsed() < RETRY_AFTER => {
                return Err(why.clone())
            }
            _ => {}
        }
        match self.fetch().await {
            Ok(found) => {
                let found = Arc::new(found);
                *cached = Some(Cached::Found(found.clone()));
                Ok(found)
            }
            Err(why) => {
                tracing::warn!(issuer = %self.issuer, why, "the issuer's OpenID configuration could not be read");
                *cached = Some(Cached::Failed {
                    at: Instant::now(),
                    why: why.clone(),
                });
                Err(why)
            }
        }
    }

    async fn fetch(&self) -> Result<Metadata, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let found: Metadata = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| format!("{url} is not an OpenID Provider configuration: {e}"))?;
        if found.issuer.trim_end_matches('/') != self.issuer {
            return Err(format!(
                "{url} names the issuer {:?}, not {:?}",
                found.issuer, self.issuer
            ));
        }
        for (name, endpoint) in [
            ("authorization_endpoint", &found.authorization_endpoint),
            ("token_endpoint", &found.token_endpoint),
            ("jwks_uri", &found.jwks_uri),
        ] {
            if origin(endpoint, self.loopback_http).is_none() {
                return Err(format!(
                    "{url}: its {name} {endpoint:?} is not an https URL"
                ));
            }
        }
        Ok(found)
    }

    /// The body of a `200` answer to `GET url`, at most [`MAX_BODY_BYTES`].
    pub(crate) async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("{url} could not be reached: {}", chain(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "{url} answered HTTP {}",
                response.status().as_u16()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{url} could not be read: {}", chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("{url} answered more than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error and its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn an_origin_is_https_or_http_on_loopback_where_allowed() {
        let cases = [
            (
                "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC",
                false,
                Some("https://cognito-idp.eu-west-1.amazonaws.com"),
            ),
            (
                "https://shop.auth.eu-west-1.amazoncognito.com/oauth2/token",
                false,
                Some("https://shop.auth.eu-west-1.amazoncognito.com"),
            ),
            (
                "https://id.example:8443/x",
                false,
                Some("https://id.example:8443"),
            ),
            (
                "https://id.example:443/x",
                false,
                Some("https://id.example"),
            ),
            (
                "http://127.0.0.1:9000/token",
                true,
                Some("http://127.0.0.1:9000"),
            ),
            ("http://localhost:9000", true, Some("http://localhost:9000")),
            ("http://[::1]:9000", true, Some("http://[::1]:9000")),
            ("http://127.0.0.1:9000/token", false, None),
            ("http://id.example/token", true, None),
            ("http://10.0.0.1/token", true, None),
            ("ftp://id.example/", true, None),
            ("not a url", true, None),
            ("https://id.example'; script-src *", false, None),
        ];
        for (url, loopback_http, expected) in cases {
            assert_eq!(
                origin(url, loopback_http).as_deref(),
                expected,
                "{url} (loopback http: {loopback_http})"
            );
        }
    }
}
