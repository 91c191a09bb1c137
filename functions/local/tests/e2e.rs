//! End to end over HTTP: the `herald-local` binary on loopback, driven with the
//! seed's own request bodies, once with the embedded store and once with DynamoDB
//! on moto (`HERALD_BACKEND=aws`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::aws::local::{
    bootstrap, create_bus_into_queue, create_topic_into_queue, moto_config,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A running dev server, killed when dropped. Its log goes to `log`.
struct DevServer {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl DevServer {
    /// Stops the server and returns everything it logged.
    fn stop_and_read_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).expect("log file")
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn start(env: &[(&str, &str)]) -> DevServer {
    let log = std::env::temp_dir().join(format!("herald-local-{}.log", uuid_like()));
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald-local"));
    // The most verbose logging there is, so the secret check below sees everything.
    cmd.env("PORT", "0")
        .env("RUST_LOG", "trace,hyper=debug,h2=debug")
        .env("NO_COLOR", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("HERALD_BACKEND")
        .env_remove("HERALD_AUTH")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn herald-local");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("herald-local printed where it listens within 30 s");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    DevServer { child, base, log }
}

fn seed(name: &str) -> Value {
    let path = format!("{}/tests/seed/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("seed body")).expect("JSON")
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &DevServer) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .expect("client"),
            base: server.base.clone(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        store: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Store-Id", store);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, json)
    }
}

fn is_ms_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.len() == 24 && s.ends_with('Z')
}

/// The whole contract in one session: create (three seed bodies) → list → get →
/// update → delete, with masking, links and timestamps checked at each step.
async fn curl_session(server: &DevServer) {
    use reqwest::Method;
    let api = Api::new(server);
    let store = "e2e-store";

    let expected_configs = [
        (
            "webhook",
            json!({"url": "https://ilovelamp.now.sh/send-shipped-email", "secret_key": "***********_KEY"}),
        ),
        (
            "aws_sqs",
            json!({
                "url": "https://sqs.eu-west-1.amazonaws.com/123456789/epcc-external-queue",
                "aws_access_key_id": "****************PSYQ",
                "aws_secret_access_key": "************************************pUSJ",
                "region": "eu-west-1"
            }),
        ),
        (
            "stomp",
            json!({
                "addresses": ["stomp://useast.api.elasticpath.com"],
                "destination": "/queue/queue1",
                "username": "user1",
                "password": "*******d123"
            }),
        ),
    ];
    let mut ids = Vec::new();
    for (kind, config) in &expected_configs {
        let body = seed(kind);
        let (status, doc) = api
            .send(Method::POST, "/v2/integrations", store, Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {doc}");
        let data = &doc["data"];
        let id = data["id"].as_str().expect("id").to_owned();
        assert_ne!(
            id, "328b4e0b-4032-48d0-8c85-04cc4c0a331d",
            "the server assigns ids"
        );
        assert_eq!(data["integration_type"], *kind);
        assert_eq!(data["name"], body["data"]["name"]);
        assert_eq!(data["observes"], body["data"]["observes"]);
        assert_eq!(
            data["enabled"],
            body["data"].get("enabled").cloned().unwrap_or(json!(false))
        );
        assert_eq!(&data["configuration"], config, "{kind}");
        assert_eq!(
            data["links"]["self"],
            format!("{}/v2/integrations/{id}", server.base)
        );
        assert!(
            is_ms_timestamp(&data["meta"]["timestamps"]["created_at"]),
            "{data}"
        );
        assert!(
            is_ms_timestamp(&data["meta"]["timestamps"]["updated_at"]),
            "{data}"
        );
        assert_ne!(
            data["meta"]["timestamps"]["created_at"],
            "2021-11-11T10:45:04.688Z"
        );
        ids.push(id);
    }

    let (status, list) = api
        .send(Method::GET, "/v2/integrations?page[limit]=2", store, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().expect("data").len(), 2);
    assert_eq!(list["meta"]["results"]["total"], 3);
    assert_eq!(list["meta"]["page"]["total"], 2);
    assert_eq!(list["data"][0]["id"], ids[0].as_str());
    assert!(!list.to_string().contains("SOME_SECRET_KEY"));
    assert!(!list
        .to_string()
        .contains("mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ"));
    let (_, other) = api
        .send(Method::GET, "/v2/integrations", "someone-else", None)
        .await;
    assert_eq!(other["data"], json!([]));

    let path = format!("/v2/integrations/{}", ids[0]);
    let (status, got) = api.send(Method::GET, &path, store, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got["data"]["configuration"]["secret_key"],
        "***********_KEY"
    );

    let update = json!({"data": {"type": "integration", "name": "Renamed", "enabled": false,
        "configuration": {"secret_key": "SOME_SECRET_KEY", "url": "https://ilovelamp.now.sh/v2"}}});
    let (status, updated) = api.send(Method::PUT, &path, store, Some(&update)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["name"], "Renamed");
    assert_eq!(updated["data"]["enabled"], false);
    assert_eq!(updated["data"]["description"], got["data"]["description"]);
    assert_eq!(
        updated["data"]["configuration"]["url"],
        "https://ilovelamp.now.sh/v2"
    );
    assert_eq!(
        updated["data"]["configuration"]["secret_key"],
        "***********_KEY"
    );
    assert_eq!(
        updated["data"]["meta"]["timestamps"]["created_at"],
        got["data"]["meta"]["timestamps"]["created_at"]
    );

    let (status, invalid) = api
        .send(
            Method::PUT,
            &path,
            store,
            Some(&json!({"data": {"type": "integration", "observes": ["order.nope"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        invalid["errors"][0]["source"]["pointer"],
        "/data/observes/0"
    );

    let (status, _) = api.send(Method::DELETE, &path, store, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.send(Method::DELETE, &path, store, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.send(Method::GET, &path, store, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, events) = api
        .send(Method::GET, "/v2/observable-events", store, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(events["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|e| e["id"] == "order.paid"));

    // Raw bytes that are not JSON: a clear 400, not a 5xx.
    let res = api
        .http
        .post(format!("{}/v2/integrations", api.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_curl_session_against_the_dev_server_with_the_embedded_store_behaves_as_the_contract_says(
) {
    let server = start(&[]);
    curl_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

/// The secrets of the seed bodies, in clear.
const SECRETS: &[&str] = &[
    "SOME_SECRET_KEY",
    "ASIAJLVYNHUWCPKOPSYQ",
    "mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ",
];

fn assert_no_secret_was_logged(log: String) {
    assert!(
        log.contains("integration created"),
        "the log has the session in it:\n{log}"
    );
    for secret in SECRETS {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!(
                "{secret} appears in the log: {}",
                &line[..line.len().min(400)]
            );
        }
    }
}

#[tokio::test]
async fn the_same_session_works_with_dynamodb_on_moto() {
    let server = start_on_moto(&[]).await;
    curl_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

#[tokio::test]
async fn the_dev_server_refuses_to_start_without_its_table() {
    let endpoint = moto_endpoint();
    let out = Command::new(env!("CARGO_BIN_EXE_herald-local"))
        .env("PORT", "0")
        .env("HERALD_BACKEND", "aws")
        .env("HERALD_TABLE", "no-such-table")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the aws backend"), "{stderr}");
}

/// moto's endpoint, from `make test`.
fn moto_endpoint() -> String {
    let endpoint = std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)");
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "moto must be on loopback"
    );
    endpoint
}

/// The dev server on DynamoDB, SQS and KMS in moto, with a fresh table, queues and key.
async fn start_on_moto(extra: &[(&str, &str)]) -> DevServer {
    let endpoint = moto_endpoint();
    let sdk = moto_config(&endpoint).await.expect("loopback endpoint");
    let suffix = uuid_like();
    let table = format!("herald-e2e-{suffix}");
    let (queue_url, dlq_url) = bootstrap(
        &sdk,
        &table,
        &format!("herald-jobs-{suffix}"),
        herald_core::retry::MAX_RECEIVES,
    )
    .await
    .expect("table and queues");
    let key = herald_core::aws::kms::ensure_local_key(&sdk, &format!("alias/herald-e2e-{suffix}"))
        .await
        .expect("KMS key");
    let mut env = vec![
        ("HERALD_BACKEND", "aws"),
        ("HERALD_TABLE", table.as_str()),
        ("HERALD_KMS_KEY_ID", key.as_str()),
        ("HERALD_QUEUE_URL", queue_url.as_str()),
        ("HERALD_DLQ_URL", dlq_url.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    env.extend_from_slice(extra);
    start(&env)
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", std::process::id())
}

#[test]
fn the_dev_server_stops_on_sigterm() {
    let mut server = start(&[]);
    let started = Instant::now();
    let pid = server.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A webhook receiver on 127.0.0.1 that answers 500 to the first `failures` requests
/// and 200 after, and keeps every request.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>,
}

async fn receiver(failures: usize) -> Receiver {
    let requests: Arc<Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>> = Arc::default();
    let seen = requests.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut s = seen.lock().expect("lock");
                        s.push((headers, body));
                        s.len()
                    };
                    if n <= failures {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "not now")
                    } else {
                        (axum::http::StatusCode::OK, "thanks")
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        requests,
    }
}

/// Waits (100 polls of 100 ms at most) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The pipeline as a user drives it with curl: create a webhook integration, post an
/// observed and an unobserved event, see one signed delivery after one retry, and both
/// attempts in the logs and jobs routes.
async fn pipeline_session(server: &DevServer) {
    use reqwest::Method;
    let api = Api::new(server);
    let store = "pipeline-store";
    let hook = receiver(1).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, created) = api
        .send(
            Method::POST,
            "/v2/integrations",
            store,
            Some(&json!({"data": {"type": "integration", "integration_type": "webhook", "name": "Paid orders",
                "enabled": true, "observes": ["order.paid"],
                "configuration": {"url": hook.url, "secret_key": secret}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("id").to_owned();

    let events = json!({"data": [
        {"id": "evt-paid-1", "type": "order.paid", "payload": {"data": {"id": "o-1", "type": "order", "status": "paid"}}},
        {"id": "evt-cart-1", "type": "cart.updated", "payload": {"data": {"id": "c-1", "type": "cart"}}}
    ]});
    let (status, accepted) = api
        .send(Method::POST, "/v2/events", store, Some(&events))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        accepted["data"][0],
        json!({"id": "evt-paid-1", "status": "accepted", "jobs": 1})
    );
    assert_eq!(
        accepted["data"][1],
        json!({"id": "evt-cart-1", "status": "accepted", "jobs": 0})
    );

    let requests = hook.requests.clone();
    eventually("a failed and a successful attempt", || {
        requests.lock().expect("lock").len() >= 2
    })
    .await;
    // Give a wrongly duplicated delivery the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.requests.lock().expect("lock").clone();
    assert_eq!(
        got.len(),
        2,
        "one failed attempt, one delivery, nothing for the unobserved event"
    );
    let (headers, body) = &got[1];
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let ts: i64 = h("webhook-timestamp").parse().expect("timestamp");
    assert!(herald_core::signing::verify(
        secret,
        &h("webhook-id"),
        ts,
        body,
        &h("webhook-signature")
    ));
    assert_eq!(h("x-moltin-integration-trigger"), "order.paid");
    let delivered: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(delivered["id"], "evt-paid-1");
    assert_eq!(delivered["attempt"], 2);

    // The logs are written after each batch; wait for the second attempt's.
    let logs_path = format!("/v2/integrations/{id}/logs");
    let mut logs = Value::Null;
    for _ in 0..50 {
        let (_, l) = api.send(Method::GET, &logs_path, store, None).await;
        logs = l;
        if logs["meta"]["results"]["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs["meta"]["results"]["total"], 2, "{logs}");
    assert_eq!(logs["data"][0]["attempt"], 2);
    assert_eq!(logs["data"][0]["succeeded"], true);
    assert_eq!(logs["data"][0]["status_code"], 200);
    assert_eq!(logs["data"][1]["attempt"], 1);
    assert_eq!(logs["data"][1]["succeeded"], false);
    assert_eq!(logs["data"][1]["status_code"], 500);
    assert_eq!(logs["data"][1]["body"], "not now");
    assert_eq!(logs["data"][0]["type"], "integration-log");

    let (status, jobs) = api
        .send(
            Method::GET,
            &format!("/v2/integrations/{id}/jobs"),
            store,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jobs["meta"]["results"]["total"], 1);
    assert_eq!(jobs["data"][0]["status"], "delivered");
    assert_eq!(jobs["data"][0]["attempts"], 2);
    let job_id = jobs["data"][0]["id"].as_str().expect("job id").to_owned();
    assert_eq!(
        job_id,
        h("webhook-id"),
        "the job id is the webhook-id receivers see"
    );

    let (status, job_logs) = api
        .send(
            Method::GET,
            &format!("/v2/integrations/{id}/jobs/{job_id}/logs"),
            store,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job_logs["meta"]["results"]["total"], 2);

    let (_, all) = api
        .send(Method::GET, "/v2/integrations/logs", store, None)
        .await;
    assert_eq!(all["meta"]["results"]["total"], 2);
    let (_, other) = api
        .send(Method::GET, "/v2/integrations/logs", "another-store", None)
        .await;
    assert_eq!(
        other["meta"]["results"]["total"], 0,
        "logs are store-isolated"
    );
    let (status, _) = api
        .send(Method::GET, &logs_path, "another-store", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The same event again is a duplicate: nothing more is delivered.
    let (status, dup) = api
        .send(
            Method::POST,
            "/v2/events",
            store,
            Some(&json!({"data": events["data"][0]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(dup["data"]["status"], "duplicate");
    let (status, bad) = api
        .send(
            Method::POST,
            "/v2/events",
            store,
            Some(&json!({"data": {"type": "order.nope", "payload": {"data": {}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["errors"][0]["source"]["pointer"], "/data/type");

    // Nothing was dead-lettered, so a replay scans the DLQ and moves nothing.
    let (status, replay) = api
        .send(
            Method::POST,
            &format!("/v2/integrations/{id}/replay"),
            store,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["data"]["replayed"], 0);
    assert_eq!(replay["data"]["complete"], true);
    // The integration is healthy, and its last success is recorded.
    let (_, now) = api
        .send(Method::GET, &format!("/v2/integrations/{id}"), store, None)
        .await;
    assert_eq!(now["data"]["meta"]["health"]["status"], "healthy", "{now}");
    assert!(
        now["data"]["meta"]["health"]["last_success_at"].is_string(),
        "{now}"
    );
}

#[tokio::test]
async fn the_dev_server_delivers_an_observed_event_with_one_retry_and_shows_both_attempts() {
    let server = start(&[("HERALD_RETRY_SCALE", "0.001")]);
    pipeline_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

#[tokio::test]
async fn the_same_pipeline_runs_on_dynamodb_and_sqs_in_moto() {
    let server = start_on_moto(&[("HERALD_RETRY_SCALE", "0")]).await;
    pipeline_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

/// Changes made through the API fire `integration.*` events: a webhook observing them
/// receives the created integration as the API showed it (secret masked), the update,
/// and the deletion as `{type, id}`.
async fn integration_events_session(server: &DevServer) {
    use reqwest::Method;
    let api = Api::new(server);
    let store = "events-store";
    let hook = receiver(0).await;
    let (status, _) = api
        .send(
            Method::POST,
            "/v2/integrations",
            store,
            Some(
                &json!({"data": {"type": "integration", "integration_type": "webhook",
                "name": "Audit", "enabled": true,
                "observes": ["integration.created", "integration.updated", "integration.deleted"],
                "configuration": {"url": hook.url}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, created) = api
        .send(
            Method::POST,
            "/v2/integrations",
            store,
            Some(&seed("webhook")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    let path = format!("/v2/integrations/{id}");
    let (status, updated) = api
        .send(
            Method::PUT,
            &path,
            store,
            Some(&json!({"data": {"type": "integration", "name": "Renamed"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let (status, _) = api.send(Method::DELETE, &path, store, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The audit integration's own creation, then the three changes (any order).
    let requests = hook.requests.clone();
    eventually("four integration events", || {
        requests.lock().expect("lock").len() >= 4
    })
    .await;
    let mut bodies: Vec<Value> = hook
        .requests
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).expect("json"))
        .filter(|b: &Value| {
            b["payload"]["data"]["id"] == id.as_str() || b["payload"]["id"] == id.as_str()
        })
        .collect();
    bodies.sort_by_key(|b| b["triggered_by"].as_str().map(str::to_owned));
    let seen: Vec<(&str, &Value)> = bodies
        .iter()
        .map(|b| (b["triggered_by"].as_str().expect("kind"), &b["payload"]))
        .collect();
    assert_eq!(
        seen,
        [
            ("integration.created", &json!({"data": created["data"]})),
            (
                "integration.deleted",
                &json!({"type": "integration", "id": id})
            ),
            ("integration.updated", &json!({"data": updated["data"]})),
        ]
    );
    assert_eq!(
        created["data"]["configuration"]["secret_key"],
        "***********_KEY"
    );
}

#[tokio::test]
async fn changing_an_integration_fires_integration_events_through_the_dev_server() {
    let server = start(&[]);
    integration_events_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

#[tokio::test]
async fn integration_events_go_through_sqs_in_moto_too() {
    let server = start_on_moto(&[]).await;
    integration_events_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

/// The "done when" of the queue targets: with the dev server and the local peers up,
/// one order.paid event reaches a webhook, a customer SQS queue, EventBridge bus and
/// SNS topic (moto) and an ActiveMQ queue, each in its documented format, and the test
/// route works for each.
#[tokio::test]
async fn one_event_reaches_a_webhook_an_sqs_queue_a_bus_a_topic_and_a_stomp_queue_and_each_can_be_tested(
) {
    let endpoint = moto_endpoint();
    let root = herald_testkit::checkout();
    let ca = format!("{root}/.run/activemq/broker-ca.pem");
    let password = std::fs::read_to_string(format!("{root}/.run/activemq/password"))
        .expect("ActiveMQ is not set up: run `make test`");
    let server = start(&[
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("HERALD_STOMP_EXTRA_CA", ca.as_str()),
    ]);
    let peers = herald_local::tour::Peers {
        server: server.base.clone(),
        moto: endpoint,
        broker_password: password.trim().to_owned(),
        store: "tour".into(),
    };
    let report = herald_local::tour::run(&peers).await.expect("the tour");

    let (headers, body) = &report.webhook;
    assert_eq!(body["triggered_by"], "order.paid");
    assert_eq!(body["payload"]["data"]["id"], "order-1001");
    assert_eq!(headers["x-moltin-integration-trigger"], "order.paid");
    assert!(headers["webhook-signature"]
        .as_str()
        .is_some_and(|s| s.starts_with("v1,")));

    assert_eq!(report.eventbridge["source"], "herald");
    assert_eq!(report.eventbridge["detail-type"], "demo.order.paid");
    for (target, ce) in [
        ("sqs", &report.sqs),
        ("stomp", &report.stomp.1),
        ("eventbridge", &report.eventbridge["detail"]),
        ("sns", &report.sns),
    ] {
        assert_eq!(ce["specversion"], "1.0", "{target}");
        assert_eq!(ce["type"], "order.paid", "{target}");
        assert_eq!(ce["storeid"], "tour", "{target}");
        assert_eq!(ce["datacontenttype"], "application/json", "{target}");
        assert_eq!(ce["data"]["id"], "order-1001", "{target}");
        assert_eq!(ce["data"]["type"], "order", "{target}");
        assert!(ce["jobid"].is_string(), "{target}");
    }
    assert_eq!(report.stomp.0["content-type"], "application/json");
    assert_eq!(report.stomp.0["herald-job-id"], report.stomp.1["jobid"]);

    assert_eq!(report.tests.len(), 5);
    for (kind, log) in &report.tests {
        assert_eq!(log["type"], "integration-log", "{kind}");
        assert_eq!(log["succeeded"], true, "{kind}: {log}");
        assert_eq!(log["event"]["type"], "order.paid", "{kind}");
    }
    let (event, gone) = &report.operational;
    assert_eq!(event["triggered_by"], "herald.integration.disabled");
    assert_eq!(event["payload"]["data"]["id"], gone.as_str());
    assert_eq!(event["payload"]["data"]["enabled"], false);
    assert_eq!(event["payload"]["data"]["meta"]["alert"]["reason"], "gone");
    let api = Api::new(&server);
    for id in &report.integrations {
        let (status, logs) = api
            .send(
                reqwest::Method::GET,
                &format!("/v2/integrations/{id}/logs"),
                "tour",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            logs["meta"]["results"]["total"], 2,
            "the event and the test delivery: {logs}"
        );
    }
    assert_no_secret_was_logged(server.stop_and_read_log());
}

#[tokio::test]
async fn the_test_route_works_for_a_disabled_integration_and_names_bad_input() {
    let server = start(&[]);
    let api = Api::new(&server);
    let hook = receiver(0).await;
    let (_, created) = api
        .send(
            reqwest::Method::POST,
            "/v2/integrations",
            "t",
            Some(&json!({"data": {"type": "integration", "integration_type": "webhook", "name": "off",
                "observes": ["cart.updated"], "configuration": {"url": hook.url}}})),
        )
        .await;
    assert_eq!(created["data"]["enabled"], false);
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    let path = format!("/v2/integrations/{id}/test");
    let res = api
        .http
        .post(format!("{}{path}", api.base))
        .header("X-Store-Id", "t")
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK);
    let log: Value = res.json().await.expect("json");
    assert_eq!(log["data"]["succeeded"], true);
    assert_eq!(
        log["data"]["event"]["type"], "cart.updated",
        "defaults to the first observed event"
    );
    assert_eq!(hook.requests.lock().expect("lock").len(), 1);

    let (status, bad) = api
        .send(
            reqwest::Method::POST,
            &path,
            "t",
            Some(&json!({"data": {"type": "nope", "triggered_by": "x.y"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<_> = bad["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["source"]["pointer"].clone())
        .collect();
    assert_eq!(
        pointers,
        vec![json!("/data/type"), json!("/data/triggered_by")]
    );
    let (status, _) = api
        .send(reqwest::Method::POST, &path, "another-store", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_request_naming_a_host_other_than_loopback_is_refused_so_dns_rebinding_cannot_reach_the_api(
) {
    // GIVEN the dev server on 127.0.0.1
    let server = start(&[]);
    let port = server.base.rsplit(':').next().expect("port").to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client");
    let get = |host: String| {
        let request = http
            .get(format!("{}/v2/integrations", server.base))
            .header("Host", host.clone())
            .header("X-Store-Id", "rebinding");
        async move {
            let res = request.send().await.expect("request");
            let status = res.status();
            let body: Value = serde_json::from_str(&res.text().await.expect("body")).expect("JSON");
            (host, status, body)
        }
    };

    // WHEN a page served from another name reaches it (DNS rebinding sends that name)
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("10.0.0.1:{port}"),
        format!("[::2]:{port}"),
    ] {
        let (host, status, body) = get(host).await;
        // THEN it gets a JSON:API 403 that points at the Host header
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {body}");
        assert_eq!(
            body,
            json!({"errors": [{
                "status": 403,
                "title": "Forbidden",
                "detail": "the dev server answers only requests addressed to a loopback name (localhost, *.localhost, 127.0.0.0/8, [::1])",
                "source": {"header": "Host"}
            }]}),
            "{host}"
        );
    }

    // AND every loopback spelling, with or without the port, is served
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("LocalHost.:{port}"),
        format!("app.localhost:{port}"),
        format!("127.1.2.3:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (host, status, body) = get(host).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
}

/// A webhook receiver on 127.0.0.1 that answers no request until `hold` are in at
/// once, or until each has waited `limit`; it counts the requests answered and the
/// most it held at once.
/// Posts `requests` requests of 100 `order.paid` events for `store` (ids
/// `<prefix>-<request>-<i>`), each answered 202.
async fn post_orders_paid(api: &Api, store: &str, prefix: &str, requests: usize) {
    for part in 0..requests {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                json!({"id": format!("{prefix}-{part}-{i}"), "type": "order.paid",
                "payload": {"data": {"id": format!("o-{part}-{i}"), "type": "order"}}})
            })
            .collect();
        let (status, body) = api
            .send(
                reqwest::Method::POST,
                "/v2/events",
                store,
                Some(&json!({ "data": events })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}

struct HoldingReceiver {
    url: String,
    answered: Arc<std::sync::atomic::AtomicUsize>,
    most_at_once: Arc<std::sync::atomic::AtomicUsize>,
}

async fn holding_receiver(hold: usize, limit: Duration) -> HoldingReceiver {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let answered: Arc<AtomicUsize> = Arc::default();
    let most_at_once: Arc<AtomicUsize> = Arc::default();
    let held: Arc<AtomicUsize> = Arc::default();
    let (release, released) = tokio::sync::watch::channel(false);
    let release = Arc::new(release);
    let (a, m) = (answered.clone(), most_at_once.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (answered, most, held, release, mut released) = (
                a.clone(),
                m.clone(),
                held.clone(),
                release.clone(),
                released.clone(),
            );
            async move {
                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if now >= hold {
                    let _ = release.send(true);
                }
                let _ = tokio::time::timeout(limit, released.wait_for(|r| *r)).await;
                held.fetch_sub(1, Ordering::SeqCst);
                answered.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    HoldingReceiver {
        url: format!("http://{addr}/hook"),
        answered,
        most_at_once,
    }
}

#[tokio::test]
async fn a_backlog_is_delivered_all_at_once_when_the_receiver_takes_its_time() {
    use std::sync::atomic::Ordering;
    // GIVEN a receiver that answers nothing until 200 requests are in at once (or
    // each has waited 10 s), and a webhook integration delivering to it
    let hook = holding_receiver(200, Duration::from_secs(10)).await;
    let server = start(&[]);
    let api = Api::new(&server);
    let store = "backlog-store";
    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/v2/integrations",
            store,
            Some(
                &json!({"data": {"type": "integration", "integration_type": "webhook",
                "name": "Backlog", "enabled": true, "observes": ["order.paid"],
                "configuration": {"url": hook.url}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // WHEN 200 events are posted, in two requests of 100
    post_orders_paid(&api, store, "backlog", 2).await;

    // THEN the fan-out does not wait for the first deliveries to end before it starts
    // the others: the receiver holds all 200 at once, then answers each once
    // (bounded: 15 s, past the receiver's own limit)
    for _ in 0..150 {
        if hook.answered.load(Ordering::SeqCst) >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hook.most_at_once.load(Ordering::SeqCst), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.answered.load(Ordering::SeqCst), 200);
}

/// A webhook receiver on 127.0.0.1 that answers 204 and keeps, per request, its
/// `webhook-id` and when it came in (the receiver's clock).
struct TimingReceiver {
    url: String,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
}

async fn timing_receiver() -> TimingReceiver {
    let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                s.lock().expect("seen").push((id, Instant::now()));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    TimingReceiver {
        url: format!("http://{addr}/hook"),
        seen,
    }
}

/// The most of `times` in any one-second window `[t, t + 1 s)`.
fn most_in_a_second(times: &[Instant]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test]
async fn a_burst_to_an_integration_limited_to_50_a_second_never_passes_55_in_a_second_and_loses_nothing(
) {
    // GIVEN a webhook integration limited to 50 deliveries a second, on the dev
    // server (the embedded queue, its pollers running concurrent fan-out batches)
    let hook = timing_receiver().await;
    let server = start(&[]);
    let api = Api::new(&server);
    let store = "rate-store";
    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/v2/integrations",
            store,
            Some(
                &json!({"data": {"type": "integration", "integration_type": "webhook",
                "name": "Limited", "enabled": true, "observes": ["order.paid"],
                "configuration": {"url": hook.url}, "delivery": {"max_per_second": 50}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // WHEN a burst of 2,000 events comes in, in twenty requests of 100
    post_orders_paid(&api, store, "burst", 20).await;

    // THEN every event is delivered (bounded: 2 minutes, three times what 50 a
    // second takes), each once, and no one-second window of the receiver's clock
    // holds more than 55 of them
    for _ in 0..1200 {
        if hook.seen.lock().expect("seen").len() >= 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = hook.seen.lock().expect("seen").clone();
    let ids: std::collections::HashSet<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!((seen.len(), ids.len()), (2000, 2000));
    let times: Vec<Instant> = seen.iter().map(|(_, t)| *t).collect();
    let most = most_in_a_second(&times);
    assert!(most <= 55, "{most} deliveries in one second");
}

/// Reads the queue at `url` until it holds a message (at most 10 s): its body.
async fn first_message(sqs: &aws_sdk_sqs::Client, url: &str) -> Value {
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if let Some(m) = out.messages().first() {
            return serde_json::from_str(m.body().unwrap_or_default()).expect("JSON");
        }
    }
    panic!("nothing reached {url} within 10 s");
}

/// The dev server (embedded backend) whose calls to customers' AWS accounts go to moto.
fn start_with_customer_aws_on_moto(extra: &[(&str, &str)]) -> DevServer {
    let endpoint = moto_endpoint();
    let mut env = vec![
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    env.extend_from_slice(extra);
    start(&env)
}

fn aws_target(kind: &str, configuration: Value) -> Value {
    json!({"data": {"type": "integration", "integration_type": kind, "name": kind, "enabled": true,
                    "observes": ["order.paid"], "configuration": configuration}})
}

#[tokio::test]
async fn one_event_reaches_an_eventbridge_bus_and_an_sns_topic_and_each_can_be_tested() {
    use reqwest::Method;
    // GIVEN a bus whose rule feeds a queue and a topic with a queue subscribed, on moto
    let sdk = moto_config(&moto_endpoint()).await.expect("moto");
    let suffix = uuid_like();
    let (bus_arn, bus_queue) = create_bus_into_queue(&sdk, &format!("e2e-bus-{suffix}"))
        .await
        .expect("bus");
    let (topic_arn, topic_queue) =
        create_topic_into_queue(&sdk, &format!("e2e-topic-{suffix}"), true)
            .await
            .expect("topic");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let server = start_with_customer_aws_on_moto(&[]);
    let api = Api::new(&server);
    let store = "aws-targets";

    // WHEN an integration is created for each, the bus with keys and the topic with a role
    let (status, bus) = api
        .send(
            Method::POST,
            "/v2/integrations",
            store,
            Some(&aws_target(
                "aws_eventbridge",
                json!({"event_bus_arn": bus_arn, "region": "us-east-1", "detail_type_prefix": "shop.",
                       "aws_access_key_id": SECRETS[1], "aws_secret_access_key": SECRETS[2]}),
            )),
        )
        .await;
    // THEN each is created, the keys masked, the topic bound to the store's external id
    assert_eq!(status, StatusCode::CREATED, "{bus}");
    assert_eq!(
        bus["data"]["configuration"],
        json!({"event_bus_arn": bus_arn, "region": "us-east-1", "detail_type_prefix": "shop.",
               "aws_access_key_id": "****************PSYQ",
               "aws_secret_access_key": "************************************pUSJ"})
    );
    let (status, topic) = api
        .send(
            Method::POST,
            "/v2/integrations",
            store,
            Some(&aws_target(
                "aws_sns",
                json!({"topic_arn": topic_arn, "region": "us-east-1",
                       "role_arn": "arn:aws:iam::123456789012:role/herald-delivery"}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{topic}");
    let (_, external) = api
        .send(Method::GET, "/v2/integrations/external-id", store, None)
        .await;
    let issued = external["data"]["external_id"].as_str().expect("issued id");
    assert!(issued.starts_with("herald-"), "{external}");
    assert_eq!(topic["data"]["configuration"]["external_id"], issued);

    // WHEN an order.paid event is posted
    let (status, accepted) = api
        .send(
            Method::POST,
            "/v2/events",
            store,
            Some(
                &json!({"data": {"id": format!("evt-{suffix}"), "type": "order.paid",
                "payload": {"data": {"id": "order-7", "type": "order", "status": "paid"}}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    // THEN the bus's rule got it from `herald`, typed by the prefixed event key, with
    // the CloudEvent as its detail; the topic's queue got the CloudEvent itself
    let event = first_message(&sqs, &bus_queue).await;
    assert_eq!(event["source"], "herald");
    assert_eq!(event["detail-type"], "shop.order.paid");
    let message = first_message(&sqs, &topic_queue).await;
    for (target, ce) in [("eventbridge", &event["detail"]), ("sns", &message)] {
        assert_eq!(ce["specversion"], "1.0", "{target}");
        assert_eq!(ce["id"], format!("evt-{suffix}"), "{target}");
        assert_eq!(ce["type"], "order.paid", "{target}");
        assert_eq!(ce["storeid"], store, "{target}");
        assert_eq!(
            ce["data"],
            json!({"id": "order-7", "type": "order", "status": "paid"}),
            "{target}"
        );
    }

    // AND the test route delivers to each, and each has both attempts in its logs
    for created in [&bus, &topic] {
        let id = created["data"]["id"].as_str().expect("id");
        let (status, tested) = api
            .send(
                Method::POST,
                &format!("/v2/integrations/{id}/test"),
                store,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tested}");
        assert_eq!(tested["data"]["succeeded"], true, "{tested}");
        let (_, logs) = api
            .send(
                Method::GET,
                &format!("/v2/integrations/{id}/logs"),
                store,
                None,
            )
            .await;
        assert_eq!(
            logs["meta"]["results"]["total"], 2,
            "the event and the test delivery: {logs}"
        );
    }
    assert_eq!(
        first_message(&sqs, &bus_queue).await["detail-type"],
        "shop.order.paid"
    );
    assert_no_secret_was_logged(server.stop_and_read_log());
}

#[tokio::test]
async fn a_bus_or_topic_that_does_not_exist_fails_the_job_for_good_and_disables_the_integration() {
    use reqwest::Method;
    // GIVEN integrations for a bus and a topic that do not exist, on a dev server that
    // retries at once and disables after one failed job
    let server = start_with_customer_aws_on_moto(&[
        ("HERALD_RETRY_SCALE", "0"),
        ("HERALD_AUTO_DISABLE_AFTER", "1"),
    ]);
    let api = Api::new(&server);
    let store = "aws-missing";
    let keys = |mut c: Value| {
        c["aws_access_key_id"] = json!("AKIAIOSFODNN7TESTKEY");
        c["aws_secret_access_key"] = json!("test-secret-for-moto");
        c
    };
    let mut ids = Vec::new();
    for (kind, configuration) in [
        (
            "aws_eventbridge",
            keys(
                json!({"event_bus_arn": "arn:aws:events:us-east-1:123456789012:event-bus/no-such-bus",
                        "region": "us-east-1"}),
            ),
        ),
        (
            "aws_sns",
            keys(
                json!({"topic_arn": "arn:aws:sns:us-east-1:123456789012:no-such-topic",
                        "region": "us-east-1"}),
            ),
        ),
    ] {
        let (status, created) = api
            .send(
                Method::POST,
                "/v2/integrations",
                store,
                Some(&aws_target(kind, configuration)),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["data"]["id"].as_str().expect("id").to_owned());
    }

    // WHEN an event they observe is posted
    let (status, _) = api
        .send(
            Method::POST,
            "/v2/events",
            store,
            Some(&json!({"data": {"type": "order.paid",
                "payload": {"data": {"id": "order-8", "type": "order"}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // THEN each job fails for good after its retries, and Herald disables each
    // integration, saying why
    for (id, why) in ids
        .iter()
        .zip(["the event bus does not exist", "the topic does not exist"])
    {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (_, now) = api
                .send(Method::GET, &format!("/v2/integrations/{id}"), store, None)
                .await;
            last = now;
            if last["data"]["enabled"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let health = &last["data"]["meta"]["health"];
        assert_eq!(last["data"]["enabled"], false, "{last}");
        assert_eq!(health["status"], "disabled", "{last}");
        assert_eq!(health["consecutive_failures"], 1, "{last}");
        assert_eq!(
            health["disabled_reason"],
            format!("disabled by Herald after 1 consecutive failed jobs; last: {why}"),
            "{last}"
        );
        let (_, logs) = api
            .send(
                Method::GET,
                &format!("/v2/integrations/{id}/logs"),
                store,
                None,
            )
            .await;
        let attempts = logs["data"].as_array().expect("logs");
        assert!(!attempts.is_empty(), "{logs}");
        for attempt in attempts {
            assert_eq!(attempt["succeeded"], false, "{attempt}");
            assert_eq!(attempt["error_detail"], why, "{attempt}");
        }
    }
}

#[tokio::test]
async fn a_4_mib_order_reaches_a_customer_queue_by_a_dataref_that_the_api_redirects_to_its_data() {
    use reqwest::Method;
    use sha2::{Digest, Sha256};
    // GIVEN the dev server on moto with the bucket of large bodies and an HMAC key
    // for datarefs, and a customer queue there observing order.paid
    let sdk = moto_config(&moto_endpoint()).await.expect("moto");
    let suffix = uuid_like();
    let bucket = format!("herald-events-{suffix}");
    herald_core::aws::s3::S3Bodies::from_sdk(&sdk, bucket.clone())
        .create_bucket()
        .await
        .expect("bucket");
    let key = herald_core::aws::kms::ensure_local_mac_key(&sdk, &format!("alias/dataref-{suffix}"))
        .await
        .expect("HMAC key");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = format!("customer-{suffix}");
    sqs.create_queue()
        .queue_name(&queue)
        .send()
        .await
        .expect("queue");
    let queue_url = format!("https://sqs.us-east-1.amazonaws.com/123456789012/{queue}");
    let server = start_on_moto(&[
        ("HERALD_EVENT_BUCKET", bucket.as_str()),
        ("HERALD_DATAREF_KEY_ID", key.as_str()),
    ])
    .await;
    let api = Api::new(&server);
    let (status, created) = api
        .send(
            Method::POST,
            "/v2/integrations",
            "s1",
            Some(&aws_target(
                "aws_sqs",
                json!({"url": queue_url, "region": "us-east-1",
                       "aws_access_key_id": SECRETS[1], "aws_secret_access_key": SECRETS[2]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // WHEN an order whose data alone is 4 MiB is posted
    let lines: Vec<Value> = (0..4 * 1024)
        .map(|n| json!({"id": format!("line-{n}"), "sku": "x".repeat(1000)}))
        .collect();
    let data = json!({"id": "order-4mib", "type": "order", "status": "paid", "lines": lines});
    let (status, accepted) = api
        .send(
            Method::POST,
            "/v2/events",
            "s1",
            Some(
                &json!({"data": {"id": format!("evt-{suffix}"), "type": "order.paid",
                                  "payload": {"data": data}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    // THEN the queue's message carries a dataref at the dev server's API instead of
    // the data, and its SHA-256
    let message = first_message(&sqs, &queue_url).await;
    assert_eq!(message.get("data"), None);
    let dataref = message["dataref"].as_str().expect("dataref");
    assert!(
        dataref.starts_with(&format!("{}/v2/event-data/", server.base)),
        "{dataref}"
    );
    // AND following it, with no credentials, redirects to the data in the bucket
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    let first = plain.get(dataref).send().await.expect("GET");
    assert_eq!(first.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = first.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with(&moto_endpoint()) && location.contains(&bucket),
        "{location}"
    );
    let fetched = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(dataref)
        .send()
        .await
        .expect("GET, following the redirect");
    assert_eq!(fetched.status(), StatusCode::OK);
    let bytes = fetched.bytes().await.expect("body");
    assert!(bytes.len() > 4 * 1024 * 1024);
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(message["datasha256"], json!(sha256));
    assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("JSON"), data);
    // AND the same token changed in one character is 404
    let mut edited = dataref.to_owned().into_bytes();
    let last = edited.len() - 1;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).expect("ascii");
    assert_eq!(
        plain.get(&edited).send().await.expect("GET").status(),
        StatusCode::NOT_FOUND
    );
}
