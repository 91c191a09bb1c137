//! The HTTP client of the hot path: HTTP/1.1 on hyper's connections, over rustls,
//! with a pool of kept-alive connections per destination.
//!
//! The fan-out posts every webhook and every write of its log through this client.
//! It is hyper's connection (`hyper::client::conn::http1`) and a small pool, and
//! nothing above them: no redirect policy, no proxy, no retry layer, no cookie store,
//! no URL parsed, hashed or formatted per request. A destination (scheme, host, port:
//! its request URI, `Host` header and pool) is prepared once, when a URL is first
//! seen; a request then takes an idle connection from that pool, or else whichever
//! comes first of a new one and one that another request frees. The
//! layers above hyper were over a third of a request's CPU in reqwest (`make bench`,
//! section `tput`), and Herald uses none of them: it never follows redirects, never
//! goes through a proxy, and retries by itself.
//!
//! What it keeps: connections kept alive and reused (an idle one that turns out
//! closed when used gets the request again on a new connection, as it was never
//! sent), a connect timeout, a timeout for the whole exchange (connection, answer and
//! body), the platform's trust store (as reqwest used it), and a resolver of the
//! caller's choosing — the webhook target passes every address through its SSRF
//! guard there, so a connection only ever goes to an address that was checked. IP
//! literals are connected to as they are: the caller checks them.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use url::Url;

/// An error from a resolver or the connection.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What a resolver answers: the addresses to connect to, in order.
pub type Resolving = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send>>;

/// Turns a host name into addresses. Asked for every new connection to a name (IP
/// literals are connected to as they are), and the connection goes only to what it
/// answered.
pub trait Resolve: Send + Sync {
    /// The addresses of `host` (their ports are replaced by the URL's).
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

/// How a client is made.
pub struct Options {
    /// The longest to wait for a TCP connection to one address.
    pub connect_timeout: Duration,
    /// How long an idle kept-alive connection is reused.
    pub idle_timeout: Duration,
    /// Who turns names into addresses.
    pub resolver: Arc<dyn Resolve>,
    /// Certificates trusted as roots besides the platform's.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Most idle connections kept per destination; one more is closed instead.
const IDLE_KEPT: usize = 256;

/// Most destinations with a pool; past it the pools start over (their connections
/// close as the destinations in use are prepared again).
const POOLS_KEPT: usize = 10_000;

/// An HTTP/1.1 client. Build it once per process; it is cheap to share.
pub struct HttpClient {
    connector: Connector,
    idle_timeout: Duration,
    /// By scheme (`true`: https) and authority (`host[:port]`, the default port left
    /// out, as the URL writes it).
    pools: Mutex<HashMap<(bool, String), Arc<Pool>>>,
}

/// What makes connections: shared with the tasks that make them.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    resolver: Arc<dyn Resolve>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// A task that is aborted when this handle is dropped: what ties a connection's
/// socket to whoever holds the connection, so that no socket outlives its use.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn new<T>(task: &tokio::task::JoinHandle<T>) -> Self {
        Self(Some(task.abort_handle()))
    }

    /// Lets the task run on by itself.
    fn detach(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A connection: hyper's request sender, and the task that drives the connection
/// (and owns its socket). Dropping it closes the socket at once, whatever the peer
/// does: a connection leaves this client only back to its pool or closed.
struct Sender {
    requests: SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop,
}

impl Sender {
    fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}

/// The idle connections to one scheme, host and port, and the requests waiting for
/// one.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<(Sender, Instant)>,
    waiting: std::collections::VecDeque<oneshot::Sender<Sender>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still open and not idle for
    /// longer than `idle_timeout`.
    fn checkout(&self, idle_timeout: Duration) -> Option<Sender> {
        let mut state = self.lock();
        while let Some((sender, since)) = state.idle.pop() {
            if since.elapsed() < idle_timeout && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// A connection free for the next request: to the longest-waiting request that
    /// still waits, else among the idle ones.
    fn checkin(&self, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.lock();
        while let Some(waiter) = state.waiting.pop_front() {
            match waiter.send(sender) {
                Ok(()) => return,
                Err(back) => sender = back,
            }
        }
        if state.idle.len() < IDLE_KEPT {
            state.idle.push((sender, Instant::now()));
        }
    }

    /// Waits for the next connection checked in.
    fn wait(&self) -> oneshot::Receiver<Sender> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        // Requests that stopped waiting (answered by a new connection, or timed out)
        // leave closed senders behind: drop them before they pile up.
        if state.waiting.len() >= IDLE_KEPT {
            state.waiting.retain(|w| !w.is_closed());
        }
        state.waiting.push_back(tx);
        rx
    }
}

/// Where requests go: one URL, prepared by [`HttpClient::destination`].
#[derive(Clone)]
pub struct Destination {
    /// The request target: path and query.
    path: Uri,
    host_header: HeaderValue,
    host: Host,
    port: u16,
    /// For `https`: the name the certificate must be for.
    tls: Option<ServerName<'static>>,
    pool: Arc<Pool>,
}

impl Destination {
    /// `host[:port]` as the `Host` header carries it (the default port left out).
    pub fn authority(&self) -> &str {
        // Built from a URL's authority, which is ASCII (hosts in punycode).
        self.host_header.to_str().unwrap_or_default()
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("host", &self.host_header)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Host {
    Name(String),
    Ip(IpAddr),
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

/// The certificates of a PEM file (`HERALD_WEBHOOK_EXTRA_CA`, `HERALD_STOMP_EXTRA_CA`):
/// an error naming the file when it cannot be read or holds none.
pub fn read_pem(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no certificate"));
    }
    Ok(certs)
}

/// Mozilla's roots as bundled by `webpki-roots`, plus `extra`: the STOMP target's
/// trust store, and the webhook client's on a system without CA certificates.
pub(crate) fn bundled_roots(
    extra: &[CertificateDer<'static>],
) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra {
        roots
            .add(root.clone())
            .map_err(|e| format!("an extra CA is not usable: {e}"))?;
    }
    Ok(roots)
}

/// The TLS settings: TLS 1.2 and 1.3 with aws-lc-rs, the platform's verifier (on
/// Linux: the system's roots, checked by webpki) plus `extra_roots`, ALPN
/// `http/1.1`. A system with no CA certificates at all (a minimal container without
/// `ca-certificates`) gets Mozilla's roots as bundled by `webpki-roots` instead,
/// as the STOMP target has them, rather than no client: plain-http deliveries need
/// no roots, and HTTPS ones then still verify.
fn tls_config(extra_roots: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        match rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots.clone(),
            provider.clone(),
        ) {
            Ok(platform) => Arc::new(platform),
            Err(e) => {
                tracing::warn!(error = %e, "no usable system trust store; using the bundled Mozilla roots");
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(bundled_roots(&extra_roots)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("the trust store: {e}"))?
            }
        };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
        Ok(Self {
            connector: Connector {
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config(extra_roots)?)),
                resolver,
                connect_timeout,
            },
            idle_timeout,
            pools: Mutex::new(HashMap::new()),
        })
    }

    /// `url` prepared for requests: an `http` or `https` URL with a host and without
    /// credentials (its fragment is never sent). Prepare each URL once and keep it.
    pub fn destination(&self, url: &Url) -> Result<Destination, String> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("not an http(s) URL: {other}:")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL carries credentials; they are never sent".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => Host::Name(d.to_owned()),
            Some(url::Host::Ipv4(v4)) => Host::Ip(v4.into()),
            Some(url::Host::Ipv6(v6)) => Host::Ip(v6.into()),
            _ => return Err("the URL has no host".into()),
        };
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        let host_header =
            HeaderValue::from_str(authority).map_err(|_| "the URL's host is not a valid Host")?;
        let path = match &url[url::Position::BeforePath..url::Position::AfterQuery] {
            "" => Uri::from_static("/"),
            p => p.parse::<Uri>().map_err(|e| format!("invalid URL: {e}"))?,
        };
        let tls = if tls {
            let server = match &host {
                Host::Name(n) => ServerName::try_from(n.clone())
                    .map_err(|e| format!("not a name TLS can check: {e}"))?,
                Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            };
            Some(server)
        } else {
            None
        };
        let pool = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            if pools.len() >= POOLS_KEPT {
                pools.clear();
            }
            pools
                .entry((tls.is_some(), authority.to_owned()))
                .or_default()
                .clone()
        };
        Ok(Destination {
            path,
            host_header,
            host,
            port,
            tls,
            pool,
        })
    }

    /// `POST`s `body` to `to` with `headers` (`host` is the destination's) and reads
    /// the answer, keeping at most `max_body` bytes of its body, all within
    /// `timeout`.
    pub async fn post(
        &self,
        to: &Destination,
        mut headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, Failure> {
        headers.insert(HOST, to.host_header.clone());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = to.path.clone();
        *request.headers_mut() = headers;
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::time::timeout_at(deadline, self.exchange(to, request, max_body, deadline))
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    /// One exchange; everything it starts ends by `deadline`: dropped with it, the
    /// connection it was using closes, and a connection still being made for it is
    /// abandoned with its socket.
    async fn exchange(
        &self,
        to: &Destination,
        mut request: Request<Full<Bytes>>,
        max_body: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, Failure> {
        loop {
            let (mut sender, fresh) = match to.pool.checkout(self.idle_timeout) {
                Some(idle) => (idle, false),
                None => self.connect_or_reuse(to, deadline).await?,
            };
            if let Err(e) = sender.requests.ready().await {
                if fresh {
                    return Err(Failure::Connect(e.into()));
                }
                continue;
            }
            match sender.requests.try_send_request(request).await {
                Ok(response) => return read(response, sender, &to.pool, max_body).await,
                Err(mut e) => match e.take_message() {
                    // Never sent on an idle connection that had closed: again, on
                    // another one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(Failure::Exchange(e.into_error().into())),
                },
            }
        }
    }

    /// A connection for a request that found none idle: a new one, or one that
    /// another request frees first, whichever comes first. A slow connect (a SYN
    /// retried after a second by a receiver whose accept queue overflowed) then
    /// holds back no request while connections are freed; the connection it makes
    /// goes to the pool, if it is made by `deadline` (the request's): a peer that
    /// never completes a handshake holds no socket past it. Should the request itself
    /// be dropped first (its caller's own deadline), the connecting stops with it.
    /// `true`: the connection is new.
    async fn connect_or_reuse(
        &self,
        to: &Destination,
        deadline: tokio::time::Instant,
    ) -> Result<(Sender, bool), Failure> {
        let (made_tx, made) = oneshot::channel();
        let connector = self.connector.clone();
        let destination = to.clone();
        let connecting = tokio::spawn(async move {
            let result = tokio::time::timeout_at(deadline, connector.connect(&destination))
                .await
                .unwrap_or(Err(Failure::Timeout));
            // Not wanted any more: the request took a freed connection, or gave up.
            if let Err(Ok(sender)) = made_tx.send(result) {
                destination.pool.checkin(sender);
            }
        });
        let connecting = AbortOnDrop::new(&connecting);
        let freed = to.pool.wait();
        tokio::select! {
            made = made => match made {
                Ok(result) => result.map(|sender| (sender, true)),
                Err(_) => Err(Failure::Connect("the connecting task ended".into())),
            },
            Ok(sender) = freed => {
                // The connection being made goes to the pool when it is ready (by the
                // deadline): let it run.
                connecting.detach();
                Ok((sender, false))
            }
        }
    }
}

impl Connector {
    /// A new connection to `to`: its addresses (resolved, or its IP literal) tried
    /// in order, then TLS for `https`, then HTTP/1.1, served by a task of its own.
    async fn connect(&self, to: &Destination) -> Result<Sender, Failure> {
        let addrs = match &to.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, to.port)],
            Host::Name(name) => {
                let mut addrs = self
                    .resolver
                    .resolve(name)
                    .await
                    .map_err(Failure::Connect)?;
                for a in &mut addrs {
                    a.set_port(to.port);
                }
                addrs
            }
        };
        let tcp = connect_first(&addrs, self.connect_timeout)
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        match &to.tls {
            None => serve(TokioIo::new(tcp)).await,
            Some(name) => {
                let tls = self
                    .tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::Connect(e.into()))?;
                serve(TokioIo::new(tls)).await
            }
        }
    }
}

/// A TCP connection to the first of `addrs` that accepts one within `timeout` each,
/// without Nagle's delay; else the last address's error (`TimedOut` for a timeout).
/// The webhook and STOMP targets' way to connect to what their guard let through.
pub(crate) async fn connect_first(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use std::io::{Error, ErrorKind};
    let mut last = Error::new(ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = Error::new(
                    ErrorKind::TimedOut,
                    format!("no connection to {addr} within {timeout:?}"),
                )
            }
        }
    }
    Err(last)
}

/// Reads the answer; the connection goes back to the pool when its body was
/// read to the end.
async fn read(
    response: http::Response<hyper::body::Incoming>,
    sender: Sender,
    pool: &Pool,
    max_body: usize,
) -> Result<Answer, Failure> {
    let (parts, mut incoming) = response.into_parts();
    let mut body = Vec::new();
    let mut complete = true;
    let mut ended = false;
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
            None => {
                ended = true;
                break;
            }
        }
    }
    body.truncate(max_body);
    if ended {
        pool.checkin(sender);
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(body),
        complete,
    })
}

/// HTTP/1.1 on `io`, its connection driven by a task of its own until it closes.
async fn serve<T>(io: T) -> Result<Sender, Failure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (requests, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::Connect(e.into()))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Sender {
        requests,
        _driver: AbortOnDrop::new(&driver),
    })
}
