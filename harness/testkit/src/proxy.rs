//! A recording HTTP proxy on 127.0.0.1 in front of an AWS endpoint on loopback (moto):
//! it forwards every request unchanged, answers with upstream's answer, and hands each
//! exchange to a recorder. The bench's meter counts billing units from what it
//! records (in a process of its own); tests count what DynamoDB read with it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// The largest request body forwarded (a `BatchWriteItem` of 25 items of 400 KB is
/// under 10 MB).
const MAX_BODY: usize = 16 << 20;

/// Headers that belong to one hop, not to the request or the answer.
const HOP: [&str; 5] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "accept-encoding",
];

/// One request and its answer, as they went through the proxy.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// `X-Amz-Target`, e.g. `DynamoDB_20120810.Query`, if the request had one.
    pub target: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The request's body.
    pub request: Bytes,
    /// The answer's body.
    pub response: Bytes,
}

impl Exchange {
    /// The operation: the last part of `X-Amz-Target` (`Query`), or `""`.
    pub fn operation(&self) -> &str {
        self.target
            .as_deref()
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default()
    }
}

/// What is done with each exchange, once its answer is read and before it is given
/// back.
pub type Recorder = Arc<dyn Fn(Exchange) + Send + Sync>;

struct Forward {
    upstream: String,
    client: reqwest::Client,
    record: Recorder,
}

/// The running proxy; it stops when dropped.
pub struct RecordingProxy {
    /// Where it listens: the endpoint to give the AWS clients.
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RecordingProxy {
    /// Starts a proxy on 127.0.0.1 (a port of its own) in front of `upstream`, which
    /// must be `http://` on loopback: the proxy only ever stands in front of a local
    /// peer.
    pub async fn start(upstream: &str, record: Recorder) -> Result<Self, String> {
        if !["http://127.0.0.1:", "http://localhost:"]
            .iter()
            .any(|p| upstream.starts_with(p))
        {
            return Err(format!(
                "the proxy's upstream must be http://127.0.0.1:<port>, not {upstream}"
            ));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| format!("the proxy's client: {e}"))?;
        let state = Arc::new(Forward {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            record,
        });
        let app = Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the proxy: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the proxy's address: {e}"))?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{addr}"),
            server,
        })
    }
}

async fn forward(
    State(s): State<Arc<Forward>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
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
            back.append(k.clone(), v.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    (s.record)(Exchange {
        target,
        status: status.as_u16(),
        request: body,
        response: bytes.clone(),
    });
    (status, back, bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use axum::routing::post;

    /// An upstream on 127.0.0.1 that answers each POST with `seen:` and its body,
    /// with a header of its own.
    async fn upstream() -> (String, tokio::task::JoinHandle<()>) {
        let app = Router::new().route(
            "/q",
            post(|body: Bytes| async move {
                let mut answer = b"seen:".to_vec();
                answer.extend_from_slice(&body);
                (StatusCode::ACCEPTED, [("x-upstream", "moto")], answer)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, server)
    }

    #[tokio::test]
    async fn each_exchange_is_forwarded_unchanged_and_recorded_with_its_operation() {
        // GIVEN a proxy in front of an upstream, recording into a list
        let (upstream, _server) = upstream().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let proxy = RecordingProxy::start(
            &upstream,
            Arc::new(move |e: Exchange| into.lock().expect("seen").push(e)),
        )
        .await
        .expect("proxy");
        // WHEN a request goes through it
        let answer = reqwest::Client::new()
            .post(format!("{}/q", proxy.url))
            .header("x-amz-target", "DynamoDB_20120810.Query")
            .body("{\"a\":1}")
            .send()
            .await
            .expect("answer");
        // THEN the client has upstream's answer, and the exchange was recorded
        assert_eq!(answer.status(), 202);
        assert_eq!(
            answer.headers().get("x-upstream").map(|v| v.as_bytes()),
            Some(b"moto".as_slice())
        );
        assert_eq!(answer.bytes().await.expect("body"), "seen:{\"a\":1}");
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(seen.len(), 1);
        let e = &seen[0];
        assert_eq!(
            (e.target.as_deref(), e.operation(), e.status),
            (Some("DynamoDB_20120810.Query"), "Query", 202)
        );
        assert_eq!(
            (e.request.as_ref(), e.response.as_ref()),
            (b"{\"a\":1}".as_slice(), b"seen:{\"a\":1}".as_slice())
        );
    }

    #[tokio::test]
    async fn an_upstream_off_loopback_is_refused() {
        let refused = RecordingProxy::start("http://192.0.2.1:5000", Arc::new(|_| {})).await;
        assert_eq!(
            refused.err().as_deref(),
            Some("the proxy's upstream must be http://127.0.0.1:<port>, not http://192.0.2.1:5000")
        );
    }
}
