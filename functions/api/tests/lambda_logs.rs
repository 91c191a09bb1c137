//! The `api` bootstrap itself, as Lambda runs it, at the most verbose log level: what
//! it prints must hold no request body and no `Authorization` header. It runs against
//! a small mock of the Lambda Runtime API on 127.0.0.1 (one invocation), with the
//! embedded backend. See <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use uuid::Uuid;

const REQUEST_ID: &str = "log-check-request-1";

/// The mock Runtime API's state: the one event to hand out, and the answer.
#[derive(Default)]
struct Runtime {
    event: Mutex<Option<Vec<u8>>>,
    answer: Mutex<Option<String>>,
    answered: Notify,
}

/// `next`: the event once; after that it holds the request open, as Lambda does
/// between invocations.
async fn next(State(rt): State<Arc<Runtime>>) -> Response {
    let event = rt.event.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(event) = event else {
        std::future::pending::<()>().await;
        return StatusCode::NO_CONTENT.into_response();
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("lambda-runtime-aws-request-id", REQUEST_ID.to_owned()),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:api".to_owned(),
        ),
        ("content-type", "application/json".to_owned()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).expect("header"));
    }
    (StatusCode::OK, headers, event).into_response()
}

/// `response` and `error`: the function's answer.
async fn answer(State(rt): State<Arc<Runtime>>, body: Bytes) -> StatusCode {
    *rt.answer.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(String::from_utf8_lossy(&body).into_owned());
    rt.answered.notify_one();
    StatusCode::ACCEPTED
}

/// The bootstrap, killed when dropped.
struct Bootstrap(Child);

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary file, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spawn(runtime_api: &str, log: &Path) -> Bootstrap {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    // Lambda's environment, not this shell's: what the runtime sets and the
    // function's configuration (as `infra/lambda-smoke.sh` runs it), at TRACE.
    let child = Command::new(env!("CARGO_BIN_EXE_api"))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "api")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/api")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "log-check")
        .env("AWS_LAMBDA_LOG_LEVEL", "TRACE")
        .env("HERALD_BACKEND", "memory")
        .env("HERALD_AUTH", "jwt")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the api bootstrap");
    Bootstrap(child)
}

#[tokio::test]
async fn at_trace_the_lambda_path_logs_no_request_body_and_no_authorization_header() {
    // GIVEN an API Gateway event with a bearer token and a body that carry canaries
    let token = format!("canary-token-{}", Uuid::new_v4().simple());
    let marker = format!("canary-body-{}", Uuid::new_v4().simple());
    let secret = format!("canary-secret-{}", Uuid::new_v4().simple());
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/api-create-webhook.json");
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("event")).expect("JSON");
    event["headers"]["authorization"] = Value::String(format!("Bearer {token}"));
    let mut body: Value =
        serde_json::from_str(event["body"].as_str().expect("body")).expect("JSON");
    body["data"]["description"] = Value::String(marker.clone());
    body["data"]["configuration"]["secret_key"] = Value::String(secret.clone());
    event["body"] = Value::String(body.to_string());

    let runtime = Arc::new(Runtime::default());
    *runtime.event.lock().expect("lock") = Some(serde_json::to_vec(&event).expect("event"));
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(answer))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(answer))
        .route("/2018-06-01/runtime/init/error", post(answer))
        .with_state(runtime.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // WHEN the bootstrap takes the invocation with AWS_LAMBDA_LOG_LEVEL=TRACE
    let log =
        TempFile(std::env::temp_dir().join(format!("herald-api-trace-{}.log", Uuid::new_v4())));
    let bootstrap = spawn(&address, &log.0);
    let answered = tokio::time::timeout(Duration::from_secs(60), runtime.answered.notified()).await;
    // Let whatever it logs after answering reach the file, then stop it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(bootstrap);
    server.abort();
    let logged = std::fs::read_to_string(&log.0).expect("log");

    // THEN it answered the request, logged verbosely, and printed none of the canaries
    assert!(
        answered.is_ok(),
        "no answer within 60 s; it logged:\n{logged}"
    );
    let reply: Value = serde_json::from_str(
        runtime
            .answer
            .lock()
            .expect("lock")
            .as_deref()
            .expect("an answer"),
    )
    .expect("JSON answer");
    assert_eq!(reply["statusCode"], 201, "{reply}");
    assert!(
        logged.lines().any(|l| l.contains("DEBUG")),
        "nothing below INFO was logged, so the check proves nothing:\n{logged}"
    );
    for (what, canary) in [
        ("the bearer token", &token),
        ("the request body", &marker),
        ("a secret in the body", &secret),
    ] {
        assert!(
            !logged.contains(canary.as_str()),
            "{what} was logged:\n{logged}"
        );
    }
}
