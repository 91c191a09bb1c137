//! The product tour behind `make demo` (and the end-to-end test of every target):
//! against a running dev server, with a webhook receiver started here, an SQS queue,
//! an EventBridge bus and an SNS topic on moto and a queue on ActiveMQ, it creates one
//! integration of each type, sends one `order.paid` event, reads back what each
//! target received (the bus's and the topic's through a queue: a rule's target and a
//! raw subscription), and runs the test route for each integration. Then one of
//! Herald's operational events: an integration whose endpoint answers `410 Gone` is
//! disabled, and a watcher observing `herald.integration.disabled` hears of it.
//! Loopback only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::aws::local::{
    create_bus_into_queue, create_queues, create_topic_into_queue, moto_config,
};
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::delivery::stomp;
use herald_core::ports::JobSource;
use serde_json::{json, Value};

/// Where the tour's peers are.
pub struct Peers {
    /// The dev server (`http://127.0.0.1:3000`).
    pub server: String,
    /// moto (`http://127.0.0.1:5055`).
    pub moto: String,
    /// ActiveMQ's password for user `herald` (`.run/activemq/password`).
    pub broker_password: String,
    /// The store the tour acts for.
    pub store: String,
}

/// What each target received, and what each test delivery answered.
#[derive(Debug)]
pub struct Report {
    /// The webhook request: headers of interest and the body.
    pub webhook: (Value, Value),
    /// The SQS message body.
    pub sqs: Value,
    /// The event on the EventBridge bus, as its rule delivered it to a queue.
    pub eventbridge: Value,
    /// The SNS message, as a raw subscription delivered it to a queue.
    pub sns: Value,
    /// The STOMP message: headers and body.
    pub stomp: (Value, Value),
    /// `(integration_type, log object)` of each test delivery.
    pub tests: Vec<(String, Value)>,
    /// The ids of the created integrations, in [`KINDS`]' order.
    pub integrations: Vec<String>,
    /// The `herald.integration.disabled` event the watcher received (its body), and
    /// the id of the integration it is about.
    pub operational: (Value, String),
}

/// The integration types the tour creates, in its order.
pub const KINDS: [&str; 5] = ["webhook", "aws_sqs", "stomp", "aws_eventbridge", "aws_sns"];

type Seen = Arc<Mutex<Vec<(Value, Value)>>>;

/// The first message on the moto queue at `url`, deleted once read (at most 30 s).
async fn read_queue(queue: &SqsJobQueue, what: &str) -> Result<Value, String> {
    for _ in 0..15 {
        let messages = queue
            .receive(1, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(m) = messages.first() {
            queue.delete(&m.receipt).await.map_err(|e| e.to_string())?;
            return Ok(serde_json::from_str::<Value>(&m.body).unwrap_or(Value::Null));
        }
    }
    Err(format!("{what} received nothing within 30 s"))
}

async fn webhook_receiver() -> Result<(String, Seen), String> {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let s = s.clone();
                async move {
                    let picked: serde_json::Map<String, Value> = headers
                        .iter()
                        .filter(|(k, _)| {
                            k.as_str().starts_with("webhook-")
                                || k.as_str().starts_with("x-moltin-")
                        })
                        .map(|(k, v)| {
                            let v = v.to_str().unwrap_or_default();
                            // The receiver got the secret; the tour shows it masked.
                            let shown = if k.as_str() == "x-moltin-secret-key" {
                                herald_core::mask::mask(v)
                            } else {
                                v.to_owned()
                            };
                            (k.to_string(), json!(shown))
                        })
                        .collect();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    s.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((Value::Object(picked), body));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    // An endpoint that is gone for good: Herald disables what delivers to it.
    let app = app.route(
        "/gone",
        axum::routing::post(|| async { axum::http::StatusCode::GONE }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook"), seen))
}

async fn call(
    http: &reqwest::Client,
    peers: &Peers,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut req = http
        .request(method, format!("{}{path}", peers.server))
        .header("X-Store-Id", &peers.store);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.map_err(|e| format!("{path}: {e}"))?;
    let status = res.status().as_u16();
    let text = res.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Creates the integration `body` describes (201 expected); its id.
async fn create_integration(
    http: &reqwest::Client,
    peers: &Peers,
    body: Value,
) -> Result<String, String> {
    let name = body["data"]["name"].as_str().unwrap_or_default().to_owned();
    let (status, doc) = call(
        http,
        peers,
        reqwest::Method::POST,
        "/v2/integrations",
        Some(body),
    )
    .await?;
    if status != 201 {
        return Err(format!("creating {name} answered {status}: {doc}"));
    }
    Ok(doc["data"]["id"].as_str().unwrap_or_default().to_owned())
}

/// Posts `event` (`{"data": {...}}`) to `POST /v2/events` (202 expected).
async fn post_event(http: &reqwest::Client, peers: &Peers, event: Value) -> Result<(), String> {
    let (status, accepted) = call(
        http,
        peers,
        reqwest::Method::POST,
        "/v2/events",
        Some(event),
    )
    .await?;
    if status != 202 {
        return Err(format!("POST /v2/events answered {status}: {accepted}"));
    }
    Ok(())
}

/// Runs the tour. Every wait is bounded (at most 30 s in all per target).
pub async fn run(peers: &Peers) -> Result<Report, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();

    let (hook_url, hook_seen) = webhook_receiver().await?;
    let sdk = moto_config(&peers.moto).await.map_err(|e| e.to_string())?;
    let queue_name = format!("herald-demo-{suffix}");
    let (moto_queue_url, _) = create_queues(&sdk, &queue_name, 6, 30)
        .await
        .map_err(|e| e.to_string())?;
    let destination = format!("/queue/herald.demo.{suffix}");
    let (bus_arn, bus_queue) = create_bus_into_queue(&sdk, &format!("herald-demo-{suffix}"))
        .await
        .map_err(|e| e.to_string())?;
    let (topic_arn, topic_queue) =
        create_topic_into_queue(&sdk, &format!("herald-demo-{suffix}"), true)
            .await
            .map_err(|e| e.to_string())?;

    let create = |kind: &str, name: &str, configuration: Value| {
        json!({"data": {"type": "integration", "integration_type": kind, "name": name, "enabled": true,
                        "observes": ["order.paid"], "configuration": configuration}})
    };
    let bodies = [
        create(
            "webhook",
            "Demo webhook",
            json!({"url": hook_url, "secret_key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        ),
        create(
            "aws_sqs",
            "Demo SQS queue",
            json!({"url": format!("https://sqs.us-east-1.amazonaws.com/123456789012/{queue_name}"),
                   "region": "us-east-1", "aws_access_key_id": "AKIAIOSFODNN7DEMOKEY", "aws_secret_access_key": "demo-secret-for-moto"}),
        ),
        create(
            "stomp",
            "Demo ActiveMQ queue",
            json!({"addresses": ["stomp+ssl://localhost:61614", "stomp://127.0.0.1:61613"], "destination": destination,
                   "username": "herald", "password": peers.broker_password}),
        ),
        create(
            "aws_eventbridge",
            "Demo EventBridge bus",
            json!({"event_bus_arn": bus_arn, "region": "us-east-1", "detail_type_prefix": "demo.",
                   "aws_access_key_id": "AKIAIOSFODNN7DEMOKEY", "aws_secret_access_key": "demo-secret-for-moto"}),
        ),
        create(
            "aws_sns",
            "Demo SNS topic",
            json!({"topic_arn": topic_arn, "region": "us-east-1",
                   "aws_access_key_id": "AKIAIOSFODNN7DEMOKEY", "aws_secret_access_key": "demo-secret-for-moto"}),
        ),
    ];
    let mut ids = Vec::new();
    for body in bodies {
        ids.push(create_integration(&http, peers, body).await?);
    }

    let event = json!({"data": {"id": format!("evt-demo-{suffix}"), "type": "order.paid",
        "payload": {"data": {"id": "order-1001", "type": "order", "status": "paid", "total": 4200}}}});
    post_event(&http, peers, event).await?;

    let mut webhook = None;
    for _ in 0..150 {
        if let Some(first) = hook_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
        {
            webhook = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let webhook = webhook.ok_or("the webhook received nothing within 30 s")?;

    let sqs = read_queue(
        &SqsJobQueue::from_sdk(&sdk, moto_queue_url.clone()),
        "the SQS queue",
    )
    .await?;
    let eventbridge = read_queue(
        &SqsJobQueue::from_sdk(&sdk, bus_queue),
        "the EventBridge bus's rule",
    )
    .await?;
    let sns = read_queue(
        &SqsJobQueue::from_sdk(&sdk, topic_queue),
        "the SNS topic's subscription",
    )
    .await?;

    let frames = stomp::receive(
        "127.0.0.1:61613",
        "herald",
        &peers.broker_password,
        &destination,
        1,
        Duration::from_secs(30),
    )
    .await?;
    let frame = &frames[0];
    let stomp_headers: serde_json::Map<String, Value> = frame
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("herald-") || k == "content-type" || k == "persistent")
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let stomp_body: Value = serde_json::from_slice(&frame.body).unwrap_or(Value::Null);

    let mut tests = Vec::new();
    for (id, kind) in ids.iter().zip(KINDS) {
        let (status, doc) = call(
            &http,
            peers,
            reqwest::Method::POST,
            &format!("/v2/integrations/{id}/test"),
            Some(json!({"data": {"type": "test", "triggered_by": "order.paid"}})),
        )
        .await?;
        if status != 200 {
            return Err(format!(
                "the test route for {kind} answered {status}: {doc}"
            ));
        }
        tests.push((kind.to_owned(), doc["data"].clone()));
    }
    let operational = operational_event(&http, peers, &hook_url, &hook_seen).await?;
    Ok(Report {
        operational,
        webhook,
        sqs,
        eventbridge,
        sns,
        stomp: (Value::Object(stomp_headers), stomp_body),
        tests,
        integrations: ids,
    })
}

/// Creates a watcher (the webhook receiver, observing `herald.integration.disabled`)
/// and an integration whose endpoint is gone (`order.fulfilled` to `/gone`), sends an
/// `order.fulfilled`, and waits (at most 30 s) for the watcher's event about it.
async fn operational_event(
    http: &reqwest::Client,
    peers: &Peers,
    hook_url: &str,
    hook_seen: &Seen,
) -> Result<(Value, String), String> {
    let gone_url = hook_url.replace("/hook", "/gone");
    let mut ids = Vec::new();
    for (name, url, observes) in [
        ("Demo watcher", hook_url, "herald.integration.disabled"),
        ("Demo gone endpoint", gone_url.as_str(), "order.fulfilled"),
    ] {
        let body = json!({"data": {"type": "integration", "integration_type": "webhook", "name": name,
            "enabled": true, "observes": [observes], "configuration": {"url": url}}});
        ids.push(create_integration(http, peers, body).await?);
    }
    let event = json!({"data": {"type": "order.fulfilled",
        "payload": {"data": {"id": "order-1001", "type": "order", "status": "fulfilled"}}}});
    post_event(http, peers, event).await?;
    for _ in 0..150 {
        let found = hook_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, body)| body["triggered_by"] == "herald.integration.disabled")
            .map(|(_, body)| body.clone());
        if let Some(body) = found {
            return Ok((body, ids[1].clone()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("the watcher heard of no disabled integration within 30 s".into())
}
