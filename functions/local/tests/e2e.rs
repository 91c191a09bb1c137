//! End to end over HTTP: the `herald-local` binary on loopback, driven with the
//! seed's own request bodies, once with the embedded store and once with DynamoDB
//! on moto (`HERALD_BACKEND=aws`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use herald_core::aws::dynamo::DynamoIntegrationStore;
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
        "configuration": {"secret_key": "***********_KEY", "url": "https://ilovelamp.now.sh/v2"}}});
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
    let endpoint = std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)");
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "moto must be on loopback"
    );
    let table = format!("herald-e2e-{}", uuid_like());
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .build(),
    );
    DynamoIntegrationStore::create_table(&client, &table)
        .await
        .expect("table");
    let server = start(&[
        ("HERALD_BACKEND", "aws"),
        ("HERALD_TABLE", &table),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ]);
    curl_session(&server).await;
    assert_no_secret_was_logged(server.stop_and_read_log());
}

#[tokio::test]
async fn the_dev_server_refuses_to_start_without_its_table() {
    let endpoint =
        std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT is not set: run `make test`");
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
