//! Peers that misbehave on purpose, on 127.0.0.1: they accept connections and then
//! never finish the exchange. Each counts the connections it holds open, so a test
//! can check that Herald let go of every one once its attempt was over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a hostile peer treats each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Reads whatever comes (a TLS ClientHello, a request) and never answers.
    Tarpit,
    /// Reads an HTTP request, answers a head promising a megabyte, then drips one
    /// byte of it every 100 ms.
    SlowDrip,
    /// Reads a STOMP `CONNECT`, answers `CONNECTED`, then sends a `RECEIPT` for some
    /// other receipt id every 100 ms, whatever it is sent.
    StompReceiptFlood,
}

/// A hostile peer: its address, and how many connections it holds open now and
/// has accepted in all.
pub struct Hostile {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// Connections it holds open now.
    pub open: Arc<AtomicUsize>,
    /// Connections it has accepted in all.
    pub accepted: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The most bytes a dripping or flooding peer sends on one connection (bounded).
const MOST_WRITES: usize = 3_000;

impl Hostile {
    /// Connections it holds open now.
    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Starts a peer on 127.0.0.1 (a port of its own) behaving as `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, a) = (open.clone(), accepted.clone());
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                connections.spawn(async move {
                    serve(stream, behaviour).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            open,
            accepted,
            server,
        }
    }

    /// Waits (at most `limit`, in 50 ms steps) until the peer holds no connection
    /// open; `false` when some are still open then.
    pub async fn all_closed_within(&self, limit: Duration) -> bool {
        let steps = (limit.as_millis() / 50).max(1);
        for _ in 0..steps {
            if self.open.load(Ordering::SeqCst) == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.open.load(Ordering::SeqCst) == 0
    }
}

/// Serves one connection until the other side closes it (a read of 0 bytes or an
/// error), or the bounded writes run out.
async fn serve(stream: tokio::net::TcpStream, behaviour: Behaviour) {
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    // The opening the behaviour waits for before it starts writing.
    let opened = |seen: &[u8]| match behaviour {
        Behaviour::Tarpit => false,
        Behaviour::SlowDrip => seen.windows(4).any(|w| w == b"\r\n\r\n"),
        Behaviour::StompReceiptFlood => seen.contains(&0),
    };
    let mut writes = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let writing = opened(&seen) && writes < MOST_WRITES;
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if seen.len() < 64 * 1024 {
                        seen.extend_from_slice(&buf[..n]);
                    }
                }
            },
            _ = tick.tick(), if writing => {
                let bytes: Vec<u8> = match (behaviour, writes) {
                    (Behaviour::SlowDrip, 0) => {
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1048576\r\n\r\nx".to_vec()
                    }
                    (Behaviour::SlowDrip, _) => b"x".to_vec(),
                    (Behaviour::StompReceiptFlood, 0) => {
                        b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0".to_vec()
                    }
                    (Behaviour::StompReceiptFlood, n) => {
                        format!("RECEIPT\nreceipt-id:not-yours-{n}\n\n\0").into_bytes()
                    }
                    (Behaviour::Tarpit, _) => Vec::new(),
                };
                writes += 1;
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}
