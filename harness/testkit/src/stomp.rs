//! A STOMP 1.2 broker stand-in on 127.0.0.1 that keeps what it is sent: it answers
//! `CONNECT` with `CONNECTED`, keeps each `SEND` (its headers, unescaped, and its
//! body) and answers it with the `RECEIPT` it asked for. For tests that check the
//! bytes a STOMP target receives without a real broker.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One `SEND` frame as the sink read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its headers, in order, unescaped.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Sent {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The sink: where it listens, and what it has been sent. Stops when dropped.
pub struct StompSink {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<Sent>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StompSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The most bytes one connection may send before the sink drops it (bounded).
const MOST_BYTES: usize = 4 * 1024 * 1024;

impl StompSink {
    /// Starts a sink on 127.0.0.1 (a port of its own).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let kept = sent.clone();
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, kept.clone()));
            }
        });
        Self { addr, sent, server }
    }

    /// Its address as an integration names it (`stomp://127.0.0.1:<port>`).
    pub fn address(&self) -> String {
        format!("stomp://{}", self.addr)
    }

    /// Every `SEND` so far, in the order they came.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Serves one connection until it closes, sends something that is not a frame, or
/// passes [`MOST_BYTES`].
async fn serve(mut stream: TcpStream, sent: Arc<Mutex<Vec<Sent>>>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        while let Some((command, frame, used)) = frame(&buf) {
            buf.drain(..used);
            let answer = match command.as_str() {
                "CONNECT" | "STOMP" => Some("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0".into()),
                "SEND" | "DISCONNECT" => {
                    let receipt = frame.header("receipt").map(str::to_owned);
                    if command == "SEND" {
                        sent.lock().unwrap_or_else(|p| p.into_inner()).push(frame);
                    }
                    receipt.map(|r| format!("RECEIPT\nreceipt-id:{}\n\n\0", escape(&r)))
                }
                _ => None,
            };
            if let Some(answer) = answer {
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                total += n;
                if total > MOST_BYTES {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The first whole frame of `buf` (heart-beat newlines before it skipped): its
/// command, its headers and body, and how many bytes it took.
fn frame(buf: &[u8]) -> Option<(String, Sent, usize)> {
    let start = buf.iter().position(|b| *b != b'\n' && *b != b'\r')?;
    let rest = &buf[start..];
    let head_end = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2));
    let head_end = head_end.or_else(|| {
        rest.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| (p, p + 4))
    })?;
    let head = String::from_utf8_lossy(&rest[..head_end.0]).into_owned();
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let command = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body_start = head_end.1;
    let (body, end) = match length {
        Some(n) => {
            if rest.len() < body_start + n + 1 {
                return None;
            }
            (
                rest[body_start..body_start + n].to_vec(),
                body_start + n + 1,
            )
        }
        None => {
            let nul = rest[body_start..].iter().position(|b| *b == 0)?;
            (
                rest[body_start..body_start + nul].to_vec(),
                body_start + nul + 1,
            )
        }
    };
    Some((command, Sent { headers, body }, start + end))
}

/// STOMP 1.2 header escaping.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(':', "\\c")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// STOMP 1.2 header unescaping (an unknown escape is kept as it is).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('c') => out.push(':'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}
