//! A webhook receiver on 127.0.0.1 that misbehaves on purpose.
//!
//! It speaks just enough HTTP/1.1 (keep-alive, `Content-Length` bodies) to be a real
//! peer for Herald's client, and lets a scenario decide per request whether to
//! accept, fail with a 503, hang past Herald's timeout after accepting (a post-accept
//! fault: the receiver has the event, Herald does not know it), or close the
//! connection without answering. Every acceptance is recorded with its event id,
//! integration id and time, so scenarios count losses and duplicates exactly.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::http::RequestReader;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// What the receiver does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Records the event and answers 200 at once.
    Accept,
    /// Records the event, then answers 200 after this long.
    AcceptAfter(Duration),
    /// Records the event, then stays silent this long (past Herald's timeout) before
    /// answering: a post-accept fault, which can only cause a duplicate.
    HangAfterAccept(Duration),
    /// Answers 503 without recording.
    Unavailable,
    /// Reads the request and closes the connection without an answer.
    Reset,
    /// Answers `410 Gone` without recording: the endpoint is gone for good.
    Gone,
}

/// One request as the scenario sees it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request path (one per integration in some scenarios).
    pub path: String,
    /// The event id from the body (`id`).
    pub event_id: String,
    /// The integration id from the body (`integration.id`).
    pub integration_id: String,
}

/// One recorded acceptance.
#[derive(Clone, Debug)]
pub struct Acceptance {
    /// Event id.
    pub event_id: String,
    /// Integration id.
    pub integration_id: String,
    /// When the request arrived.
    pub arrived: Instant,
    /// When the receiver answered (or would have, for a hang).
    pub answered: Instant,
}

/// Decides the fault for each request.
pub type Behaviour = Arc<dyn Fn(&Request) -> Fault + Send + Sync>;

/// Counters of what was injected.
#[derive(Debug, Default)]
pub struct Injected {
    /// Requests seen.
    pub requests: AtomicU64,
    /// 503s.
    pub unavailable: AtomicU64,
    /// Hangs after accepting.
    pub hangs: AtomicU64,
    /// Connections closed without an answer.
    pub resets: AtomicU64,
}

/// The running receiver.
pub struct Receiver {
    /// Where it listens (always 127.0.0.1).
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Acceptance>>>,
    /// What was injected.
    pub injected: Arc<Injected>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let injected = Arc::new(Injected::default());
        let (a, i) = (accepted.clone(), injected.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, behaviour.clone(), a.clone(), i.clone()));
            }
        });
        Ok(Self {
            addr,
            accepted,
            injected,
            task,
        })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every acceptance so far.
    pub fn accepted(&self) -> Vec<Acceptance> {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times each (event, integration) was accepted.
    pub fn counts(&self) -> HashMap<(String, String), usize> {
        let mut out = HashMap::new();
        for a in self.accepted() {
            *out.entry((a.event_id, a.integration_id)).or_insert(0) += 1;
        }
        out
    }
}

async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    accepted: Arc<Mutex<Vec<Acceptance>>>,
    injected: Arc<Injected>,
) {
    let mut requests = RequestReader::new();
    loop {
        let Ok(Some(request)) = requests.read(&mut stream).await else {
            return;
        };
        let (path, body) = (request.path().to_owned(), request.body);
        let arrived = Instant::now();
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let request = Request {
            path,
            event_id: json["id"].as_str().unwrap_or_default().to_owned(),
            integration_id: json["integration"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        injected.requests.fetch_add(1, Ordering::Relaxed);
        let fault = behaviour(&request);
        let record = |answered: Instant| {
            accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Acceptance {
                    event_id: request.event_id.clone(),
                    integration_id: request.integration_id.clone(),
                    arrived,
                    answered,
                });
        };
        let status = match fault {
            Fault::Accept => {
                record(Instant::now());
                "200 OK"
            }
            Fault::AcceptAfter(d) => {
                tokio::time::sleep(d).await;
                record(Instant::now());
                "200 OK"
            }
            Fault::HangAfterAccept(d) => {
                injected.hangs.fetch_add(1, Ordering::Relaxed);
                record(Instant::now());
                tokio::time::sleep(d).await;
                "200 OK"
            }
            Fault::Unavailable => {
                injected.unavailable.fetch_add(1, Ordering::Relaxed);
                "503 Service Unavailable"
            }
            Fault::Gone => "410 Gone",
            Fault::Reset => {
                injected.resets.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
