//! The STOMP target: a small STOMP 1.2 SEND-only client over tokio, plain or TLS
//! (rustls: public roots plus an optional extra CA for private brokers).
//!
//! Why our own client: of the STOMP crates on crates.io only async-stomp has TLS, its
//! built-in TLS trusts public roots only (no private CA), and its licence (EUPL-1.2)
//! differs from ours; the others have no TLS. SEND with receipts is a small protocol.
//!
//! - `CONNECT` with `accept-version:1.2`, `host` (the broker host, or the
//!   integration's `host`: RabbitMQ's virtual host), `login`/`passcode`, heart-beats off.
//! - `SEND` with `destination`, `content-type`, `content-length`, `persistent:true`,
//!   the job id and a `receipt`: success only when the matching `RECEIPT` arrives in
//!   time; an `ERROR` frame fails the attempt with the broker's message.
//! - Header values are escaped as STOMP 1.2 requires (`\\`, `\n`, `\r`, `\c`).
//! - Addresses are tried in order until one accepts (failover); every resolved address
//!   passes the [`AddressGuard`] before a connection is made.
//! - One connection per integration, reused across invocations, dropped after any
//!   I/O or protocol error; a send that fails on a reused connection is tried once more
//!   on a fresh one (no receipt came, so the broker did not take it).
//! - One deadline covers the whole attempt: resolving, connecting, TLS, `CONNECT`,
//!   `SEND` and waiting for its `RECEIPT`, however many other frames the broker
//!   sends meanwhile. A connection in use is out of its slot, so an attempt dropped
//!   half-way (by its deadline or the invocation's end) closes it rather than leaving
//!   a half-read exchange for the next one.
//!
//! Spec: <https://stomp.github.io/stomp-specification-1.2.html>.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use url::{Host, Url};
use uuid::Uuid;

mod frame;

pub use frame::{decode, encode, escape, unescape, Frame};

use super::envelope::queue_message;
use super::DeliverTo;
use crate::attempt::{DeliveryResult, Outcome};
use crate::job::DeliveryJob;
use crate::model::{Integration, StompConfig};
use crate::net::guard::{AddressGuard, Refused};
use crate::validate::STOMP_SCHEMES;

/// Why a plain (`stomp://`, `tcp://`) address is not delivered to.
pub const PLAIN_REFUSED: &str =
    "plain STOMP is not allowed by this deployment (AllowPlainStomp): use stomp+ssl:// or ssl://";

/// Largest message sent to a broker.
pub const MAX_STOMP_MESSAGE: usize = 1024 * 1024;

/// A byte stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open, logged-in connection.
struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    address: String,
    /// The broker closed the connection (a read came back empty).
    closed: bool,
}

impl Connection {
    fn new(stream: Box<dyn Stream>, address: &str) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            address: address.to_owned(),
            closed: false,
        }
    }

    async fn read_frame(&mut self, timeout: Duration) -> Result<Frame, String> {
        self.read_frame_by(tokio::time::Instant::now() + timeout)
            .await
    }

    /// The next frame, if it comes by `deadline`.
    async fn read_frame_by(&mut self, deadline: tokio::time::Instant) -> Result<Frame, String> {
        loop {
            if let Some((frame, used)) = decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| format!("no answer from {} by the attempt's deadline", self.address))?
                .map_err(|e| format!("reading from {}: {e}", self.address))?;
            if n == 0 {
                self.closed = true;
                return Err(format!("{} closed the connection", self.address));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("writing to {}: {e}", self.address))?;
        self.stream
            .flush()
            .await
            .map_err(|e| format!("writing to {}: {e}", self.address))
    }
}

/// One integration's connection, used by one send at a time.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// How a failed attempt failed: whether the connection must go.
struct SendError {
    detail: String,
    /// The broker answered `ERROR` to the SEND (the connection is closed by it).
    refused: bool,
}

/// Why connecting to a broker failed.
struct ConnectError {
    detail: String,
    /// No retry can help: the address guard refused the address, the deployment does
    /// not allow its scheme, or it cannot be used at all.
    permanent: bool,
}

impl ConnectError {
    fn transient(detail: String) -> Self {
        Self {
            detail,
            permanent: false,
        }
    }

    fn permanent(detail: String) -> Self {
        Self {
            detail,
            permanent: true,
        }
    }
}

/// Delivers to STOMP brokers.
pub struct StompDeliverer {
    guard: AddressGuard,
    allow_plain: bool,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    connections: Mutex<HashMap<(Uuid, u64), Slot>>,
}

impl StompDeliverer {
    /// A deliverer that checks addresses with `guard`, trusts the public roots plus
    /// `extra_ca` (PEM certificates) for TLS, and waits `timeout` for each answer. It
    /// delivers over TLS only (see [`StompDeliverer::dangerous_allow_plain`]).
    pub fn new(
        guard: AddressGuard,
        extra_ca: &[CertificateDer<'static>],
        timeout: Duration,
    ) -> Result<Self, String> {
        let roots = crate::net::client::bundled_roots(extra_ca)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            guard,
            allow_plain: false,
            tls: Arc::new(tls),
            timeout,
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// Delivers to plain `stomp://` and `tcp://` addresses too when `allow` is set:
    /// the broker login and every message then travel in clear text. Without it such
    /// an address fails for good before any connection ([`PLAIN_REFUSED`]), also when
    /// it was stored before the deployment stopped allowing plain STOMP.
    pub fn dangerous_allow_plain(mut self, allow: bool) -> Self {
        self.allow_plain = allow;
        self
    }

    fn slot(
        &self,
        integration: Uuid,
        config: &StompConfig,
    ) -> Arc<tokio::sync::Mutex<Option<Connection>>> {
        let mut h = DefaultHasher::new();
        config.addresses.hash(&mut h);
        config.username.hash(&mut h);
        config.password.expose().hash(&mut h);
        config.virtual_host.hash(&mut h);
        let key = (integration, h.finish());
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = conns.get(&key) {
            return slot.clone();
        }
        conns.retain(|(id, _), _| *id != integration);
        let slot = Arc::new(tokio::sync::Mutex::new(None));
        conns.insert(key, slot.clone());
        slot
    }

    /// Resolves and checks one broker address, connects (TLS when the scheme says
    /// so), and logs in. A refusal of the address guard is permanent: the address (or
    /// the name) is refused at every attempt. It names the address only when `raw`
    /// spells it: what a name resolved to stays untold.
    async fn connect_one(
        &self,
        raw: &str,
        config: &StompConfig,
        deadline: tokio::time::Instant,
    ) -> Result<Connection, ConnectError> {
        tokio::time::timeout_at(deadline, self.connect_one_now(raw, config, deadline))
            .await
            .map_err(|_| {
                ConnectError::transient(format!("{raw}: no connection by the attempt's deadline"))
            })?
    }

    async fn connect_one_now(
        &self,
        raw: &str,
        config: &StompConfig,
        deadline: tokio::time::Instant,
    ) -> Result<Connection, ConnectError> {
        let url = Url::parse(raw).map_err(|e| ConnectError::permanent(format!("{raw}: {e}")))?;
        let tls = STOMP_SCHEMES
            .iter()
            .find(|(s, _)| *s == url.scheme())
            .map(|(_, t)| *t)
            .unwrap_or(false);
        if !tls && !self.allow_plain {
            return Err(ConnectError::permanent(format!("{raw}: {PLAIN_REFUSED}")));
        }
        let port = url.port().unwrap_or(if tls { 61614 } else { 61613 });
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_owned(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(ConnectError::permanent(format!("{raw} has no host"))),
        };
        let refused = |r: Refused| ConnectError::permanent(r.to_string());
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => {
                self.guard.check(ip).map_err(refused)?;
                vec![SocketAddr::new(ip, port)]
            }
            Err(_) => {
                let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|e| ConnectError::transient(format!("resolving {host}: {e}")))?
                    .collect();
                self.guard.filter(&host, &resolved).map_err(refused)?
            }
        };
        self.log_in(raw, &host, tls, &addrs, config, deadline)
            .await
            .map_err(ConnectError::transient)
    }

    /// Connects to the first of `addrs` that answers (checked already), over TLS for
    /// `host` when `tls`, and logs in.
    async fn log_in(
        &self,
        raw: &str,
        host: &str,
        tls: bool,
        addrs: &[SocketAddr],
        config: &StompConfig,
        deadline: tokio::time::Instant,
    ) -> Result<Connection, String> {
        let tcp = crate::net::client::connect_first(addrs, self.timeout)
            .await
            .map_err(|e| format!("connecting to {raw}: {e}"))?;
        let stream: Box<dyn Stream> = if tls {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| format!("{host} is not a TLS server name"))?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let s = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {raw}: {e}"))?;
            Box::new(s)
        } else {
            Box::new(tcp)
        };
        let mut conn = Connection::new(stream, raw);
        let vhost = config
            .virtual_host
            .clone()
            .unwrap_or_else(|| host.to_owned());
        let connect = encode(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", &vhost),
                ("login", &config.username),
                ("passcode", config.password.expose()),
                ("heart-beat", "0,0"),
            ],
            b"",
            false,
        );
        conn.write(&connect).await?;
        let answer = match conn.read_frame_by(deadline).await {
            Ok(answer) => answer,
            // ActiveMQ answers a refused login with ERROR and closes, but at times
            // closes before the ERROR frame is out.
            Err(_) if conn.closed => {
                return Err(format!(
                    "{raw} closed the connection in answer to CONNECT, without a reason: the login may have been refused"
                ))
            }
            Err(e) => return Err(e),
        };
        match answer.command.as_str() {
            "CONNECTED" => Ok(conn),
            "ERROR" => Err(format!("{raw} refused the login: {}", answer.error_text())),
            other => Err(format!("{raw} answered {other} to CONNECT")),
        }
    }

    /// Tries the addresses in order until one accepts. The failure is permanent when
    /// every address failed for good; while one is only down, a retry may reach it.
    async fn connect(
        &self,
        config: &StompConfig,
        deadline: tokio::time::Instant,
    ) -> Result<Connection, ConnectError> {
        let mut failures = Vec::new();
        let mut permanent = true;
        for raw in &config.addresses {
            match self.connect_one(raw, config, deadline).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    permanent &= e.permanent;
                    failures.push(e.detail);
                }
            }
        }
        Err(ConnectError {
            detail: failures.join("; "),
            permanent,
        })
    }

    async fn send(
        &self,
        conn: &mut Connection,
        config: &StompConfig,
        job: &DeliveryJob,
        body: &str,
        deadline: tokio::time::Instant,
    ) -> Result<String, SendError> {
        let receipt = format!("{}-{}", job.job_id, Uuid::new_v4().simple());
        let length = body.len().to_string();
        let job_id = job.job_id.to_string();
        let frame = encode(
            "SEND",
            &[
                ("destination", &config.destination),
                ("content-type", "application/json"),
                ("content-length", &length),
                ("persistent", "true"),
                ("herald-job-id", &job_id),
                ("herald-event-type", &job.event.kind),
                ("receipt", &receipt),
            ],
            body.as_bytes(),
            true,
        );
        let io = |detail: String| SendError {
            detail,
            refused: false,
        };
        tokio::time::timeout_at(deadline, conn.write(&frame))
            .await
            .map_err(|_| {
                io(format!(
                    "writing to {}: not done by the attempt's deadline",
                    conn.address
                ))
            })?
            .map_err(io)?;
        loop {
            // Frames that are not this SEND's receipt do not extend the wait.
            let frame = conn.read_frame_by(deadline).await.map_err(io)?;
            match frame.command.as_str() {
                "RECEIPT" if frame.header("receipt-id") == Some(receipt.as_str()) => {
                    return Ok(conn.address.clone())
                }
                "RECEIPT" => continue,
                "ERROR" => {
                    return Err(SendError {
                        detail: format!("the broker refused the message: {}", frame.error_text()),
                        refused: true,
                    })
                }
                _ => continue,
            }
        }
    }
}

#[async_trait]
impl DeliverTo<StompConfig> for StompDeliverer {
    async fn deliver(
        &self,
        integration: &Integration,
        config: &StompConfig,
        job: &DeliveryJob,
        _attempt: u32,
    ) -> DeliveryResult {
        let started = Instant::now();
        let body = match queue_message(job, integration, MAX_STOMP_MESSAGE) {
            Ok(b) => b,
            Err(detail) => {
                return DeliveryResult::failed(Outcome::Permanent, detail, started.elapsed())
            }
        };
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        let slot = self.slot(integration.id, config);
        let Ok(mut guard) = tokio::time::timeout_at(deadline, slot.lock()).await else {
            return DeliveryResult::failed(
                Outcome::Retryable { retry_after: None },
                "the integration's broker connection stayed busy with earlier deliveries past the attempt's deadline",
                started.elapsed(),
            );
        };
        // A reused connection may have died since (broker restart): one retry on a
        // fresh connection, since no receipt means the broker did not take the message.
        for fresh_try in [false, true] {
            // Out of the slot while in use: dropped half-way, it closes.
            let (mut conn, reused) = match guard.take() {
                Some(conn) => (conn, true),
                None => match self.connect(config, deadline).await {
                    Ok(c) => (c, false),
                    Err(e) => {
                        let outcome = if e.permanent {
                            Outcome::Permanent
                        } else {
                            Outcome::Retryable { retry_after: None }
                        };
                        return DeliveryResult::failed(outcome, e.detail, started.elapsed());
                    }
                },
            };
            match self.send(&mut conn, config, job, &body, deadline).await {
                Ok(address) => {
                    *guard = Some(conn);
                    return DeliveryResult {
                        outcome: Outcome::Delivered,
                        status_code: None,
                        body: format!("RECEIPT from {address}"),
                        error_detail: None,
                        duration: started.elapsed(),
                    };
                }
                Err(e) => {
                    drop(conn);
                    if e.refused || !reused || fresh_try {
                        return DeliveryResult::failed(
                            Outcome::Retryable { retry_after: None },
                            e.detail,
                            started.elapsed(),
                        );
                    }
                }
            }
        }
        DeliveryResult::failed(
            Outcome::Retryable { retry_after: None },
            "the broker did not take the message",
            started.elapsed(),
        )
    }
}

/// A plain-TCP connection to the broker at `address`, logged in and subscribed to
/// `destination` with auto-acknowledgement: what [`receive`] and [`drain`] read from.
async fn subscribe(
    address: &str,
    login: &str,
    passcode: &str,
    destination: &str,
) -> Result<Connection, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let mut conn = Connection::new(Box::new(stream), address);
    let connect = encode(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", "localhost"),
            ("login", login),
            ("passcode", passcode),
        ],
        b"",
        false,
    );
    conn.write(&connect).await?;
    let subscribe = encode(
        "SUBSCRIBE",
        &[("id", "0"), ("destination", destination), ("ack", "auto")],
        b"",
        true,
    );
    conn.write(&subscribe).await?;
    Ok(conn)
}

/// Reads `n` messages from `destination` on a plain-TCP broker (`host:port`), for
/// tests and the demo: subscribes with auto-acknowledgement and gives up after
/// `timeout`.
pub async fn receive(
    address: &str,
    login: &str,
    passcode: &str,
    destination: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Frame>, String> {
    let work = async {
        let mut conn = subscribe(address, login, passcode, destination).await?;
        let mut messages = Vec::new();
        while messages.len() < n {
            let frame = conn.read_frame(timeout).await?;
            match frame.command.as_str() {
                "MESSAGE" => messages.push(frame),
                "ERROR" => return Err(frame.error_text()),
                _ => {}
            }
        }
        Ok(messages)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        format!(
            "fewer than {n} messages on {destination} within {} s",
            timeout.as_secs()
        )
    })?
}

/// Reads every message from `destination` on a plain-TCP broker until none has come
/// for `quiet` (for drills that count what arrived, duplicates included). Stops at
/// `max` messages.
pub async fn drain(
    address: &str,
    login: &str,
    passcode: &str,
    destination: &str,
    quiet: Duration,
    max: usize,
) -> Result<Vec<Frame>, String> {
    let mut conn = subscribe(address, login, passcode, destination).await?;
    let mut messages = Vec::new();
    while messages.len() < max {
        match tokio::time::timeout(quiet, conn.read_frame(quiet)).await {
            Ok(Ok(frame)) => match frame.command.as_str() {
                "MESSAGE" => messages.push(frame),
                "ERROR" => return Err(frame.error_text()),
                _ => {}
            },
            // Quiet for `quiet`: everything there was has been read.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::model::Target;
    use crate::net::guard::Cidr;
    use crate::testkit::{job_for, stomp};

    /// A loopback listener that counts the connections it accepts.
    async fn canary(ip: &str) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
        (port, hits)
    }

    /// A deliverer that also delivers to plain STOMP addresses, as the tests' canaries
    /// are.
    fn deliverer(guard: AddressGuard) -> StompDeliverer {
        StompDeliverer::new(guard, &[], Duration::from_secs(2))
            .expect("deliverer")
            .dangerous_allow_plain(true)
    }

    /// `i`'s broker configuration (every integration of these tests is a STOMP one).
    fn stomp_config(i: &Integration) -> &StompConfig {
        match &i.target {
            Target::Stomp(config) => config,
            other => panic!("not a STOMP target: {other:?}"),
        }
    }

    #[tokio::test]
    async fn broker_addresses_the_guard_refuses_fail_for_good_without_naming_what_a_name_resolved_to(
    ) {
        // GIVEN a loopback canary, off the allow-list, named by a literal and by a name
        let (port, hits) = canary("127.0.0.1").await;
        let i = stomp(&[
            &format!("stomp://127.0.0.1:{port}"),
            &format!("stomp://localhost:{port}"),
        ]);
        // WHEN it is delivered to
        let result = deliverer(AddressGuard::strict())
            .deliver(&i, stomp_config(&i), &job_for(&i), 1)
            .await;
        // THEN it fails for good, the literal is named, what the name resolved to is not,
        // and nothing connected
        assert_eq!(result.outcome, Outcome::Permanent, "{result:?}");
        assert_eq!(
            result.error_detail.as_deref(),
            Some(
                "127.0.0.1 is a loopback address, which deliveries may not reach; \
                 localhost resolves to an address Herald does not deliver to (loopback range)"
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "a refused address was connected to"
        );
    }

    #[tokio::test]
    async fn a_plain_broker_address_is_refused_for_good_before_any_connection_by_default() {
        // GIVEN a loopback listener on the allow-list, named by plain STOMP addresses
        let (port, hits) = canary("127.0.0.1").await;
        let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")]);
        let i = stomp(&[
            &format!("stomp://127.0.0.1:{port}"),
            &format!("tcp://127.0.0.1:{port}"),
        ]);
        // WHEN a deliverer that was not told to allow plain STOMP delivers to it
        let tls_only =
            StompDeliverer::new(guard.clone(), &[], Duration::from_secs(2)).expect("deliverer");
        let result = tls_only
            .deliver(&i, stomp_config(&i), &job_for(&i), 1)
            .await;
        // THEN it fails for good, says why, and never connects (the login would go
        // out in clear text)
        assert_eq!(result.outcome, Outcome::Permanent, "{result:?}");
        assert_eq!(
            result.error_detail.as_deref(),
            Some(
                &*format!(
                    "stomp://127.0.0.1:{port}: {PLAIN_REFUSED}; tcp://127.0.0.1:{port}: {PLAIN_REFUSED}"
                )
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        // AND one told to allow it connects (the refusal was the policy's doing)
        let _ = deliverer(guard)
            .deliver(&i, stomp_config(&i), &job_for(&i), 1)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(hits.load(Ordering::SeqCst) > 0);
    }

    #[tokio::test]
    async fn a_refused_address_beside_one_that_is_only_down_is_retried() {
        // GIVEN a refused address and an allowed one (127.0.0.2) where nothing listens
        let (port, hits) = canary("127.0.0.1").await;
        let closed = std::net::TcpListener::bind("127.0.0.2:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let i = stomp(&[
            &format!("stomp://127.0.0.1:{port}"),
            &format!("stomp://127.0.0.2:{closed}"),
        ]);
        let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.2/32").expect("cidr")]);
        // WHEN it is delivered to
        let result = deliverer(guard)
            .deliver(&i, stomp_config(&i), &job_for(&i), 1)
            .await;
        // THEN the attempt is retried: the broker that is down may come back
        assert_eq!(
            result.outcome,
            Outcome::Retryable { retry_after: None },
            "{result:?}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn header_values_are_escaped_and_unescaped_per_stomp_1_2() {
        let raw = "a:b\\c\nd\re";
        let escaped = escape(raw);
        assert_eq!(escaped, "a\\cb\\\\c\\nd\\re");
        assert_eq!(unescape(&escaped).expect("valid"), raw);
        assert!(unescape("bad\\t").is_err());
    }
}
