//! The forwarder: the least a server in the `e2e` section's place has to do, in a
//! process of its own (`herald-bench forwarder`), as the section's baseline. It
//! answers `POST /v2/events` with 202 once the body is read, and posts that body to
//! the webhook URL it was given, from a task of its own, over a pooled keep-alive
//! client (reqwest), as the dev server answers and then delivers. It keeps nothing,
//! checks nothing and logs nothing. `POST /v2/integrations` takes the URL from
//! `data.configuration.url` and answers 201, so the run sets it up as it sets up the
//! dev server.
//!
//! On the same machine, with the same client and receiver, its delivered/s is the
//! ceiling that loopback TCP and the other two processes leave to any server.

use std::io::Write;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

#[derive(Clone)]
struct Forward {
    client: reqwest::Client,
    /// Where events go: the last integration's URL.
    to: Arc<RwLock<Option<String>>>,
}

/// The forwarder process: prints where it listens (as herald-local does), then serves
/// until killed.
pub async fn serve() {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
    else {
        return;
    };
    let state = Forward {
        client,
        to: Arc::new(RwLock::new(None)),
    };
    let app = Router::new()
        .route("/v2/integrations", post(integration))
        .route("/v2/events", post(event))
        .with_state(state);
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "forwarder listening on http://{addr}");
        let _ = stdout.flush();
    }
    let _ = axum::serve(listener, app.into_make_service()).await;
}

async fn integration(State(forward): State<Forward>, body: Bytes) -> StatusCode {
    let url = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["data"]["configuration"]["url"]
                .as_str()
                .map(str::to_owned)
        });
    match url {
        Some(url) => {
            *forward.to.write().unwrap_or_else(|p| p.into_inner()) = Some(url);
            StatusCode::CREATED
        }
        None => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn event(State(forward): State<Forward>, body: Bytes) -> StatusCode {
    let to = forward.to.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(to) = to else {
        return StatusCode::CONFLICT;
    };
    tokio::spawn(async move {
        let sent = forward
            .client
            .post(to)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        if let Ok(answer) = sent {
            // Read to the end, so the connection goes back to the pool.
            let _ = answer.bytes().await;
        }
    });
    StatusCode::ACCEPTED
}
