//! The meter: a recording HTTP proxy in its own process (`herald-bench meter UPSTREAM
//! FILE`) between the functions' AWS clients and moto, so that the cost section counts
//! the requests a deployed stack would be billed for from what went on the wire. It
//! forwards every request to UPSTREAM unchanged and appends one JSON line per call to
//! FILE: the operation (`X-Amz-Target`), the sizes of the request and the answer, and,
//! for DynamoDB, both bodies (the items written and read are sized from them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// One call the functions made, as the meter saw it.
#[derive(Clone, Debug)]
pub struct Call {
    /// `X-Amz-Target`, e.g. `DynamoDB_20120810.PutItem`, `AmazonSQS.ReceiveMessage`.
    pub op: String,
    /// Bytes of the request's body.
    pub request_bytes: u64,
    /// Bytes of the answer's body.
    pub response_bytes: u64,
    /// The request's body, parsed (DynamoDB only).
    pub request: Value,
    /// The answer's body, parsed (DynamoDB only).
    pub response: Value,
}

impl Call {
    fn from_line(line: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(line).ok()?;
        Some(Self {
            op: v["op"].as_str()?.to_owned(),
            request_bytes: v["request_bytes"].as_u64()?,
            response_bytes: v["response_bytes"].as_u64()?,
            request: v["request"].clone(),
            response: v["response"].clone(),
        })
    }

    /// The service's part of the operation (`DynamoDB_20120810`, `AmazonSQS`, ...).
    pub fn service(&self) -> &str {
        self.op.split('.').next().unwrap_or_default()
    }

    /// The operation's name (`PutItem`, `SendMessageBatch`, ...).
    pub fn name(&self) -> &str {
        self.op.rsplit('.').next().unwrap_or_default()
    }
}

struct Forward {
    upstream: String,
    client: reqwest::Client,
    out: Mutex<std::fs::File>,
}

/// The meter process: prints its port, then forwards until killed.
pub async fn serve(upstream: String, record: PathBuf) {
    let Ok(out) = std::fs::File::create(&record) else {
        return;
    };
    let Ok(client) = reqwest::Client::builder().no_proxy().build() else {
        return;
    };
    // Refuses anything but loopback: the meter only ever stands in front of moto.
    if !upstream.starts_with("http://127.0.0.1:") {
        return;
    }
    let state = Arc::new(Forward {
        upstream: upstream.trim_end_matches('/').to_owned(),
        client,
        out: Mutex::new(out),
    });
    let app = Router::new()
        .fallback(forward)
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(state);
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
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
    let _ = axum::serve(listener, app).await;
}

/// Headers that belong to one hop, not to the request.
const HOP: [&str; 5] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "accept-encoding",
];

async fn forward(
    State(s): State<Arc<Forward>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = s
        .client
        .request(method, format!("{}{path}", s.upstream))
        .body(body.clone());
    for (k, v) in &headers {
        if !HOP.contains(&k.as_str()) {
            request = request.header(k, v);
        }
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut back = HeaderMap::new();
    for (k, v) in answer.headers() {
        if !HOP.contains(&k.as_str()) {
            back.insert(k.clone(), v.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let dynamo = op.starts_with("DynamoDB");
    let parsed = |b: &[u8]| {
        if dynamo {
            serde_json::from_slice(b).unwrap_or(Value::Null)
        } else {
            Value::Null
        }
    };
    let line = json!({
        "op": op,
        "status": status.as_u16(),
        "request_bytes": body.len(),
        "response_bytes": bytes.len(),
        "request": parsed(&body),
        "response": parsed(&bytes),
    });
    if let Ok(mut out) = s.out.lock() {
        let _ = writeln!(out, "{line}");
    }
    (status, back, bytes).into_response()
}

/// A running meter process in front of an upstream; killed when dropped.
pub struct Meter {
    child: Child,
    /// Where it listens: the endpoint to give the functions' AWS clients.
    pub url: String,
    record: PathBuf,
}

impl Meter {
    /// Starts `herald-bench meter` in front of `upstream`, recording into `record`.
    pub fn start(upstream: &str, record: &Path) -> Result<Self, String> {
        let (child, port) = crate::receiver::child(
            "the meter",
            &["meter".as_ref(), upstream.as_ref(), record.as_os_str()],
        )?;
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            record: record.to_owned(),
        })
    }

    /// The calls recorded so far, in the order they were answered.
    pub fn calls(&self) -> Result<Vec<Call>, String> {
        let text = std::fs::read_to_string(&self.record)
            .map_err(|e| format!("reading {}: {e}", self.record.display()))?;
        Ok(text.lines().filter_map(Call::from_line).collect())
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
