//! Cold start, idle memory and the memory of a large batch, measured on the release
//! bootstraps themselves against a small mock of the Lambda Runtime API on loopback.
//!
//! Init is the time from spawning the process to its first
//! `GET /2018-06-01/runtime/invocation/next`: everything `main` does before it can
//! take an event (the official emulator starts its clock later and under-reports).
//! See <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::stats::{median, ratios, spread, status_kb};

#[derive(Default)]
struct Inner {
    first_next: Option<Instant>,
    pending: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
    error: Option<String>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let out = f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_waiters();
        out
    }
}

/// The mock Runtime API: hands out at most one event, then holds every further
/// `next` open (as Lambda does between invocations).
pub struct RuntimeApi {
    /// `host:port`, the function's `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    loop {
        let notified = s.changed.notified();
        let (event, first) = {
            let mut i = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            let first = i.first_next.is_none();
            i.first_next.get_or_insert_with(Instant::now);
            (i.pending.take(), first)
        };
        if first || event.is_some() {
            // Only a change wakes the waiters (and this loop, once).
            s.changed.notify_waiters();
        }
        if let Some(body) = event {
            let deadline = chrono::Utc::now().timestamp_millis() + 300_000;
            let mut headers = HeaderMap::new();
            for (k, v) in [
                (
                    "lambda-runtime-aws-request-id",
                    "bench-request-1".to_owned(),
                ),
                ("lambda-runtime-deadline-ms", deadline.to_string()),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:bench".to_owned(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000".to_owned(),
                ),
                ("content-type", "application/json".to_owned()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(k, v);
                }
            }
            return (StatusCode::OK, headers, body).into_response();
        }
        notified.await;
    }
}

async fn response(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    s.with(|i| i.response = Some(body.to_vec()));
    StatusCode::ACCEPTED
}

async fn error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    s.with(|i| i.error = Some(String::from_utf8_lossy(&body).into_owned()));
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    /// Starts on 127.0.0.1 with `event` to hand out on the first `next`, if any.
    pub async fn start(event: Option<Vec<u8>>) -> Result<Self, String> {
        let shared = Arc::new(Shared::default());
        shared.with(|i| i.pending = event);
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(error))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let address = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            shared,
            server,
        })
    }

    /// Waits, at most `limit`, until `done` holds of the state (or an error came).
    async fn wait<T>(
        &self,
        limit: Duration,
        mut done: impl FnMut(&mut Inner) -> Option<T>,
    ) -> Result<T, String> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.changed.notified();
            let (value, err) = {
                let mut i = self.shared.inner.lock().unwrap_or_else(|p| p.into_inner());
                (done(&mut i), i.error.clone())
            };
            if let Some(v) = value {
                return Ok(v);
            }
            if let Some(e) = err {
                return Err(format!("the function reported an error: {e}"));
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return Err(format!("nothing within {limit:?}"));
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A bootstrap and the environment it runs with.
#[derive(Clone)]
pub struct Function {
    /// `api`, `ingest`, `fanout`, or `bench-hello`.
    pub name: &'static str,
    /// The bootstrap.
    pub path: PathBuf,
    /// Its environment (besides the Lambda variables).
    pub env: Vec<(String, String)>,
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Function {
    /// The bootstrap `name` under `dir` (`dir/name/bootstrap`, cargo lambda's layout).
    pub fn at(dir: &Path, name: &'static str, env: Vec<(String, String)>) -> Self {
        Self {
            name,
            path: dir.join(name).join("bootstrap"),
            env,
        }
    }

    fn spawn(&self, api: &RuntimeApi, log: &Path) -> Result<Running, String> {
        let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // Lambda's environment, not this shell's: only what the runtime sets, the
        // function's configuration and a PATH (this machine's SSL_CERT_* and the like
        // would change what TLS set-up reads).
        Command::new(&self.path)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", self.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", self.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map(Running)
            .map_err(|e| format!("starting {}: {e}", self.path.display()))
    }

    /// One cold start: (init, resident set once idle on `next`, in kB).
    pub async fn cold_start(&self, logs: &Path) -> Result<(Duration, u64), String> {
        let api = RuntimeApi::start(None).await?;
        let spawned = Instant::now();
        let child = self.spawn(&api, &logs.join(format!("{}.log", self.name)))?;
        let first = api
            .wait(Duration::from_secs(30), |i| i.first_next)
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        // Idle: it is parked on `next`; let anything it started settle first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = status_kb(child.0.id(), "VmRSS").ok_or("no VmRSS")?;
        Ok((first.saturating_duration_since(spawned), rss))
    }

    /// One invocation with `event`: (the function's response, its peak resident set
    /// in kB, read once it has answered and is parked on `next` again).
    pub async fn invoke(
        &self,
        event: Vec<u8>,
        logs: &Path,
        limit: Duration,
    ) -> Result<(Vec<u8>, u64), String> {
        let api = RuntimeApi::start(Some(event)).await?;
        let child = self.spawn(&api, &logs.join(format!("{}-invoke.log", self.name)))?;
        let body = api
            .wait(limit, |i| i.response.take())
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        let peak = status_kb(child.0.id(), "VmHWM").ok_or("no VmHWM")?;
        Ok((body, peak))
    }
}

/// R_init and idle RSS of each function against `hello` (a hello-world
/// `lambda_runtime` function built with the same profile), interleaved run by run.
pub async fn init_table(
    hello: &Function,
    functions: &[Function],
    runs: usize,
    logs: &Path,
) -> Result<String, String> {
    let all: Vec<&Function> = std::iter::once(hello).chain(functions).collect();
    let mut init: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    // Run 0 warms the page cache and is not counted.
    for run in 0..=runs {
        for (k, f) in all.iter().enumerate() {
            let (t, kb) = f.cold_start(logs).await?;
            if run > 0 {
                init[k].push(t.as_secs_f64() * 1e3);
                rss[k].push(kb as f64 / 1024.0);
            }
        }
    }
    let mut table = String::from(
        "| function | init (ms) | R_init (÷ hello-world) | idle RSS (MB) |\n|---|---|---|---|\n",
    );
    for (k, f) in all.iter().enumerate() {
        let r = if k == 0 {
            "1".to_owned()
        } else {
            format!("**{}**", spread(&ratios(&init[k], &init[0]), 2))
        };
        table.push_str(&format!(
            "| {} | {} | {r} | {:.1} |\n",
            f.name,
            spread(&init[k], 2),
            median(rss[k].clone())
        ));
    }
    table.push_str(&format!(
        "\nmedian (min–max) of {runs} cold starts after a warm-up, interleaved; init = process spawn to its first `GET /runtime/invocation/next` on a mock Runtime API on 127.0.0.1; R_init per run against the hello-world of the same run; idle RSS = VmRSS 200 ms after that\n"
    ));
    Ok(table)
}
