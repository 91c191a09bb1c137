//! The receiver: a minimal keep-alive HTTP/1.1 server on 127.0.0.1 in its own
//! process (`herald-bench receiver`), so the CPU the bench process spends is the
//! client side only. It answers every `POST` with 200 at once and counts them;
//! `GET /count` answers that count (how the pipeline runs know they are done).
//! A body that carries `"sent_us":N` (when its event was sent, in microseconds of
//! the system clock, which every process of the machine shares) is also noted with
//! when it arrived; `GET /receipts` answers those notes and forgets them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::http::RequestReader;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The receiver process: prints its port, then serves until killed.
pub async fn serve() {
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", addr.port());
        let _ = stdout.flush();
    }
    let posts = Arc::new(AtomicUsize::new(0));
    let receipts = Arc::new(Mutex::new(Vec::new()));
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, posts.clone(), receipts.clone()));
    }
}

/// Microseconds since the Unix epoch by the system clock: comparable across the
/// processes of one machine, as `Instant` is not.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The `N` of the first `"sent_us":N` in `body`, if any.
fn sent_us(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// BatchWriteItem's answer when every item was written.
const ALL_WRITTEN: &str = r#"{"UnprocessedItems":{}}"#;

/// `(sent_us, received_us)` of each timed body since the last `GET /receipts`.
type Receipts = Arc<Mutex<Vec<(u64, u64)>>>;

async fn answer(mut stream: TcpStream, posts: Arc<AtomicUsize>, receipts: Receipts) {
    let _ = stream.set_nodelay(true);
    let mut requests = RequestReader::new();
    loop {
        let Ok(Some(request)) = requests.read(&mut stream).await else {
            return;
        };
        let get = |path: &str| request.method() == "GET" && request.path().starts_with(path);
        let reply = if get("/count") {
            let n = posts.load(Ordering::SeqCst).to_string();
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{n}", n.len())
        } else if get("/receipts") {
            let taken = std::mem::take(&mut *receipts.lock().unwrap_or_else(|p| p.into_inner()));
            let text: String = taken.iter().map(|(s, r)| format!("{s} {r}\n")).collect();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            )
        } else if request
            .header("x-amz-target")
            .is_some_and(|t| t.eq_ignore_ascii_case("DynamoDB_20120810.BatchWriteItem"))
        {
            // The fan-out's attempt log (DynamoDB's BatchWriteItem): all written.
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{ALL_WRITTEN}",
                ALL_WRITTEN.len()
            )
        } else {
            if let Some(sent) = sent_us(request.body) {
                let received = unix_us();
                receipts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((sent, received));
            }
            posts.fetch_add(1, Ordering::SeqCst);
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_owned()
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Starts `herald-bench <args>` (a process of the bench's own: receiver, meter) and
/// reads the port it prints first; the child is killed if it names none.
pub fn child(what: &str, args: &[&std::ffi::OsStr]) -> Result<(Child, u16), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let port = child
        .stdout
        .take()
        .and_then(|out| BufReader::new(out).lines().next())
        .and_then(|l| l.ok())
        .and_then(|l| l.trim().parse::<u16>().ok());
    match port {
        Some(port) => Ok((child, port)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{what} did not name its port"))
        }
    }
}

/// A running receiver process; killed when dropped.
pub struct Receiver {
    child: Child,
    /// Where it listens.
    pub port: u16,
    client: reqwest::Client,
}

impl Receiver {
    /// Starts `herald-bench receiver` and reads its port.
    pub fn start() -> Result<Self, String> {
        let (child, port) = child("the receiver", &["receiver".as_ref()])?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            child,
            port,
            client,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The webhook URL to deliver to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// How many POSTs it has answered.
    pub async fn count(&self) -> Result<usize, String> {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{}/count", self.port))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        text.trim().parse().map_err(|_| format!("count: {text:?}"))
    }

    /// `(sent_us, received_us)` of each timed body received since the last call.
    pub async fn receipts(&self) -> Result<Vec<(u64, u64)>, String> {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{}/receipts", self.port))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        text.lines()
            .map(|l| {
                let (s, r) = l.split_once(' ')?;
                Some((s.parse().ok()?, r.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "the receiver's receipts are not pairs of numbers".to_owned())
    }

    /// Waits (polling, bounded by `limit`) until it has answered at least `n` POSTs;
    /// returns when that happened, or `Err` naming how many came.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Result<Instant, String> {
        let until = Instant::now() + limit;
        loop {
            let seen = self.count().await?;
            if seen >= n {
                return Ok(Instant::now());
            }
            if Instant::now() >= until {
                return Err(format!("{seen} of {n} deliveries within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
