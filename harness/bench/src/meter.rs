//! The meter: the recording proxy of `herald_testkit::proxy` in a process of its own
//! (`herald-bench meter UPSTREAM FILE`) between the functions' AWS clients and moto,
//! so that the cost section counts the requests a deployed stack would be billed for
//! from what went on the wire. It forwards every request to UPSTREAM unchanged and
//! appends one JSON line per call to FILE: the operation (`X-Amz-Target`), the sizes of the request and the answer, and,
//! for DynamoDB, both bodies (the items written and read are sized from them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

use herald_testkit::proxy::{Exchange, RecordingProxy};
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

/// The meter process: prints its port, then forwards until killed.
pub async fn serve(upstream: String, record: PathBuf) {
    let Ok(out) = std::fs::File::create(&record) else {
        return;
    };
    let out = Mutex::new(out);
    let write = move |e: Exchange| {
        let op = e.target.as_deref().unwrap_or("unknown");
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
            "status": e.status,
            "request_bytes": e.request.len(),
            "response_bytes": e.response.len(),
            "request": parsed(&e.request),
            "response": parsed(&e.response),
        });
        if let Ok(mut out) = out.lock() {
            let _ = writeln!(out, "{line}");
        }
    };
    let Ok(proxy) = RecordingProxy::start(&upstream, Arc::new(write)).await else {
        return;
    };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "{}",
            proxy.url.rsplit(':').next().unwrap_or_default()
        );
        let _ = stdout.flush();
    }
    std::future::pending::<()>().await;
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
