//! A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's SQS: the customer
//! queue that throttles some sends.
//!
//! Herald's customer-SQS client is pointed at the proxy (its endpoint, like
//! `AWS_ENDPOINT_URL_SQS` would); the proxy forwards every request to moto unchanged
//! (one request per connection: it asks moto to close after answering and tells the
//! client the same), except the `SendMessage` calls a scenario picks, which it answers
//! itself with SQS's throttling error — HTTP 400, `x-amzn-query-error:
//! RequestThrottled;Sender` and the JSON-protocol body — without moto ever seeing
//! them. A rejected send therefore cannot reach the queue: a second copy in the queue
//! would be a real duplicate. Every `SendMessage` is recorded with the event id of its
//! CloudEvents body, so a scenario counts exactly which sends were retried.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::http::RequestReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Decides, per `SendMessage` (by the event id in its body), whether to reject it.
pub type Rejecter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the proxy saw and did.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    /// Requests of any kind.
    pub requests: AtomicU64,
    /// `SendMessage` requests.
    pub sends: AtomicU64,
    /// `SendMessage` requests answered with `RequestThrottled` (never forwarded).
    pub rejected: AtomicU64,
    /// Requests moto could not be reached for (answered 502).
    pub upstream_errors: AtomicU64,
}

/// The running proxy.
pub struct SqsProxy {
    /// Where it listens (always 127.0.0.1).
    pub addr: SocketAddr,
    /// Counters.
    pub counts: Arc<ProxyCounts>,
    sends: Arc<Mutex<Vec<SendCall>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One `SendMessage` as the proxy saw it.
#[derive(Clone, Debug)]
pub struct SendCall {
    /// The event id (`id` of the CloudEvents message body).
    pub event_id: String,
    /// Whether the proxy rejected it.
    pub rejected: bool,
    /// Whether moto answered 200 (it holds the message).
    pub stored: bool,
    /// When the proxy answered.
    pub answered: Instant,
}

impl Drop for SqsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The moto endpoint of `infra/with-peers.sh` (`MOTO_ENDPOINT`, else
/// `http://127.0.0.1:$MOTO_PORT`, port 5055 by default) and its address, once it is
/// known to accept connections. Fails with "moto is not running" otherwise.
pub async fn moto() -> Result<(String, SocketAddr), String> {
    let endpoint = std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| {
        format!(
            "http://127.0.0.1:{}",
            std::env::var("MOTO_PORT").unwrap_or_else(|_| "5055".into())
        )
    });
    moto_at(&endpoint).await
}

/// `endpoint` (`http://<loopback ip>:<port>`) and its address, if something accepts
/// connections there.
pub async fn moto_at(endpoint: &str) -> Result<(String, SocketAddr), String> {
    let addr: SocketAddr = endpoint
        .strip_prefix("http://")
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .filter(|a: &SocketAddr| a.ip().is_loopback())
        .ok_or_else(|| format!("moto endpoint {endpoint} is not http://<loopback ip>:<port>"))?;
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok((endpoint.to_owned(), addr)),
        _ => Err(format!(
            "moto is not running on {endpoint}: run through infra/with-peers.sh (make reliability and make test start it)"
        )),
    }
}

impl SqsProxy {
    /// Starts a proxy to moto at `upstream` on an ephemeral loopback port.
    pub async fn start(upstream: SocketAddr, reject: Rejecter) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(ProxyCounts::default());
        let sends = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (counts.clone(), sends.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_UPSTREAM));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    upstream,
                    reject.clone(),
                    c.clone(),
                    s.clone(),
                    slots.clone(),
                ));
            }
        });
        Ok(Self {
            addr,
            counts,
            sends,
            task,
        })
    }

    /// The endpoint URL to give an SQS client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every `SendMessage` so far.
    pub fn sends(&self) -> Vec<SendCall> {
        self.sends.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `SendMessage` requests per event id.
    pub fn sends_per_event(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for s in self.sends() {
            *out.entry(s.event_id).or_insert(0) += 1;
        }
        out
    }
}

/// At most this many requests at moto at once (the rest wait at the proxy): moto
/// serves each connection on a thread of one Python process, and hundreds at once
/// make it time out — a fault of the test's peer, not one the scenario injects.
const MAX_UPSTREAM: usize = 16;

/// SQS's throttling error in the JSON protocol (the SDK reads the code from the
/// `x-amzn-query-error` header, else from `__type`).
const THROTTLED_BODY: &str =
    r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#;

/// The whole throttling answer.
fn throttled() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-query-error: RequestThrottled;Sender\r\nx-amzn-requestid: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{THROTTLED_BODY}",
        uuid::Uuid::new_v4(),
        THROTTLED_BODY.len()
    )
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    reject: Rejecter,
    counts: Arc<ProxyCounts>,
    sends: Arc<Mutex<Vec<SendCall>>>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut reader = RequestReader::new();
    let Ok(Some(request)) = reader.read(&mut client).await else {
        return;
    };
    let (head, body) = (request.head, request.body);
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let target = request.header("x-amz-target").unwrap_or_default();
    let send_of = (target == "AmazonSQS.SendMessage").then(|| event_id(body));
    let record = |event_id: &str, rejected: bool, stored: bool| {
        sends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SendCall {
                event_id: event_id.to_owned(),
                rejected,
                stored,
                answered: Instant::now(),
            });
    };
    if let Some(event) = &send_of {
        counts.sends.fetch_add(1, Ordering::Relaxed);
        if reject(event) {
            counts.rejected.fetch_add(1, Ordering::Relaxed);
            record(event, true, false);
            let _ = client.write_all(throttled().as_bytes()).await;
            return;
        }
    }
    let slot = slots.acquire().await.ok();
    let response = match forward(upstream, head, body).await {
        Some(r) => r,
        None => {
            counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
            b"HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec()
        }
    };
    drop(slot);
    if let Some(event) = &send_of {
        record(event, false, response.starts_with(b"HTTP/1.1 200"));
    }
    let _ = client.write_all(&response).await;
}

/// Sends the request to moto asking it to close afterwards, and returns its whole
/// answer with `connection: close` in place of whatever it said about the connection.
async fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut moto = TcpStream::connect(upstream).await.ok()?;
    let mut out = close_connection(head).into_bytes();
    out.extend_from_slice(body);
    moto.write_all(&out).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), moto.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let end = find(&response, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut answer = close_connection(&head).into_bytes();
    answer.extend_from_slice(&response[end..]);
    Some(answer)
}

/// The head with its `Connection` header replaced by `connection: close`.
fn close_connection(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("connection"))
        })
        .collect();
    lines.push("connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// The event id of a JSON-protocol `SendMessage` body (`MessageBody` is the
/// CloudEvents message, as a string).
fn event_id(body: &[u8]) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message: serde_json::Value =
        serde_json::from_str(request["MessageBody"].as_str().unwrap_or_default())
            .unwrap_or_default();
    message["id"].as_str().unwrap_or_default().to_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first header of `head` named `name` (any case).
    fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
        head.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn the_throttling_answer_is_a_400_with_the_query_error_code_and_its_own_length() {
        let answer = throttled();
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 400 "));
        assert_eq!(
            header(head, "x-amzn-query-error"),
            Some("RequestThrottled;Sender")
        );
        assert_eq!(
            header(head, "content-length"),
            Some(body.len().to_string().as_str())
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["__type"], "com.amazonaws.sqs#RequestThrottled");
    }

    #[tokio::test]
    async fn a_moto_endpoint_nothing_listens_on_is_reported_as_moto_not_running() {
        // A port that was free a moment ago: bound, then released.
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let err = moto_at(&format!("http://127.0.0.1:{port}"))
            .await
            .expect_err("nothing listens");
        assert!(err.starts_with("moto is not running on "), "{err}");
    }

    #[tokio::test]
    async fn a_moto_endpoint_off_loopback_is_refused_without_connecting() {
        let err = moto_at("http://192.0.2.1:5055")
            .await
            .expect_err("not loopback");
        assert!(err.contains("is not http://<loopback ip>:<port>"), "{err}");
    }

    #[test]
    fn the_connection_header_is_replaced_by_close() {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(
            close_connection(head),
            "POST / HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn the_event_id_comes_from_the_cloud_event_in_the_message_body() {
        let body = serde_json::json!({
            "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
            "MessageBody": serde_json::json!({"id": "evt-1", "type": "order.paid"}).to_string(),
        });
        assert_eq!(event_id(body.to_string().as_bytes()), "evt-1");
    }
}
