//! A webhook receiver on 127.0.0.1 that answers every `POST /hook` with 204 and
//! counts them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

/// The receiver: stops when dropped.
pub struct Receiver {
    addr: std::net::SocketAddr,
    count: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 (a port of its own).
    pub async fn start() -> Self {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            count,
            server,
        }
    }

    /// Its `POST` URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// How many posts it answered.
    pub fn received(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}
