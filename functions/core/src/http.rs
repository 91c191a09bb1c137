//! The HTTP client of the hot path: hyper's pooled HTTP/1.1 client over rustls.
//!
//! The fan-out posts every webhook and every write of its log through this client.
//! It is hyper's own client (`hyper-util`'s pooled one) with a TLS connector and
//! nothing above it: no redirect policy, no proxy, no retry layer, no cookie store,
//! no URL parsed again per request. Those layers were over a third of a request's
//! CPU in reqwest (`make bench`, section `tput`), and Herald uses none of them: it
//! never follows redirects, never goes through a proxy, and retries by itself.
//!
//! What it keeps: connections kept alive and reused, a connect timeout, a timeout
//! for the whole exchange (answer and body), the platform's trust store (as reqwest
//! used it), and a resolver of the caller's choosing — the webhook target passes
//! every address through its SSRF guard there, so the connection only ever goes to
//! an address that was checked.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

/// An error from a resolver or the connection.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What a resolver answers: the addresses to connect to, in order.
pub type Resolving = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send>>;

/// Turns a host name into addresses. Asked for every new connection to a name (IP
/// literals are connected to as they are), and the connection goes only to what it
/// answered.
pub trait Resolve: Send + Sync {
    /// The addresses of `host` (the port is the URL's, set by the connector).
    fn resolve(&self, host: &str) -> Resolving;
}

/// The system resolver (`getaddrinfo`, through tokio's blocking pool).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> Resolving {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.collect())
        })
    }
}

/// A [`Resolve`] as the connector's DNS service.
#[derive(Clone)]
struct Dns(Arc<dyn Resolve>);

impl tower_service::Service<Name> for Dns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.0.resolve(name.as_str());
        Box::pin(async move { Ok(lookup.await?.into_iter()) })
    }
}

/// How a client is made.
pub struct Options {
    /// The longest to wait for a TCP connection (TLS is then within the exchange's
    /// timeout).
    pub connect_timeout: Duration,
    /// How long an idle kept-alive connection is kept.
    pub idle_timeout: Duration,
    /// Who turns names into addresses.
    pub resolver: Arc<dyn Resolve>,
    /// Certificates trusted as roots besides the platform's.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// An HTTP/1.1 client with a pool of kept-alive connections. Build it once per
/// process; it is cheap to share.
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector<Dns>>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, or the first `max_body` bytes of it.
    pub body: Bytes,
    /// Whether the body was read to its end or to `max_body` (false: the connection
    /// failed while it was read, and `body` is what came before).
    pub complete: bool,
}

/// Why there is no answer.
#[derive(Debug)]
pub enum Failure {
    /// No whole answer within the timeout.
    Timeout,
    /// No connection: the name did not resolve (or its resolver refused it), or TCP
    /// or TLS failed.
    Connect(BoxError),
    /// Connected, but the exchange failed before a whole answer.
    Exchange(BoxError),
}

impl Failure {
    /// The first error of type `E` in the failure's chain of causes, looking inside
    /// I/O errors too (TLS errors travel in them).
    pub fn find<E: StdError + 'static>(&self) -> Option<&E> {
        let top: &(dyn StdError + 'static) = match self {
            Failure::Timeout => return None,
            Failure::Connect(e) | Failure::Exchange(e) => e.as_ref(),
        };
        let mut current = Some(top);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            // An I/O error's source skips the error it wraps: step into that instead.
            current = match e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => e.source(),
            };
        }
        None
    }
}

/// The TLS settings: TLS 1.2 and 1.3 with aws-lc-rs, the platform's verifier (on
/// Linux: the system's roots, checked by webpki) plus `extra_roots`, ALPN
/// `http/1.1`.
fn tls_config(extra_roots: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|e| format!("the trust store: {e}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

impl HttpClient {
    /// A client with `options`. Reads the platform's trust store: build it when it
    /// is first needed, not at init.
    pub fn new(options: Options) -> Result<Self, String> {
        let Options {
            connect_timeout,
            idle_timeout,
            resolver,
            extra_roots,
        } = options;
        let mut http = HttpConnector::new_with_resolver(Dns(resolver));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_roots)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .build(connector);
        Ok(Self { client })
    }

    /// `POST`s `body` to `uri` with `headers` (`host` is written from `uri`) and reads
    /// the answer, keeping at most `max_body` bytes of its body, all within `timeout`.
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, Failure> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Connect(e.into())
                } else {
                    Failure::Exchange(e.into())
                }
            })?;
            let (parts, mut incoming) = response.into_parts();
            let mut body = Vec::new();
            let mut complete = true;
            while body.len() < max_body {
                match incoming.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            body.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) => {
                        complete = false;
                        break;
                    }
                    None => break,
                }
            }
            body.truncate(max_body);
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: Bytes::from(body),
                complete,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}
