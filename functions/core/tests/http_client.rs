//! The hot path's HTTP client against plain TCP servers on 127.0.0.1 that count
//! connections and requests: kept-alive connections are reused, one the server
//! closed is replaced without losing or repeating the request, and a body read only
//! in part does not put its connection back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, post};
use herald_core::net::client::{Failure, HttpClient, Options, Resolve, Resolving};
use herald_testkit::http::RequestReader;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use url::Url;

mod common;

/// How the server treats a connection after answering on it.
#[derive(Clone, Copy)]
enum After {
    /// Keeps it open for the next request.
    KeepAlive,
    /// Closes it without saying so (no `connection: close`): to the client it looks
    /// reusable until it notices.
    Close,
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A server on 127.0.0.1 answering every request `200` with `body`.
async fn server(after: After, body: &'static [u8]) -> (SocketAddr, Arc<Counts>) {
    server_answering_after(after, body, Duration::ZERO).await
}

/// [`server`], answering each request `delay` after reading it.
async fn server_answering_after(
    after: After,
    body: &'static [u8],
    delay: Duration,
) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.connections.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut requests = RequestReader::new();
                while let Ok(Some(_)) = requests.read(&mut stream).await {
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                    if matches!(after, After::Close) {
                        let _ = stream.shutdown().await;
                        break;
                    }
                }
            });
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn requests_to_one_destination_reuse_the_kept_alive_connection() {
    let (addr, counts) = server(After::KeepAlive, b"ok").await;
    let client = client();
    for _ in 0..3 {
        let body = post(&client, &format!("http://{addr}/hook"), 1024)
            .await
            .expect("answer");
        assert_eq!(&body[..], b"ok");
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_and_each_request_is_sent_once() {
    let (addr, counts) = server(After::Close, b"ok").await;
    let client = client();
    for _ in 0..3 {
        post(&client, &format!("http://{addr}/hook"), 1024)
            .await
            .expect("answer");
        // Let the client's connection see the close (or not: either way the next
        // request must get through, once).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_body_read_only_in_part_keeps_the_first_bytes_and_its_connection_is_not_reused() {
    let (addr, counts) = server(After::KeepAlive, b"0123456789").await;
    let client = client();
    let body = post(&client, &format!("http://{addr}/hook"), 4)
        .await
        .expect("answer");
    assert_eq!(&body[..], b"0123");
    post(&client, &format!("http://{addr}/hook"), 1024)
        .await
        .expect("answer");
    // The first connection still had body to read: it was not put back for the
    // second request.
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_port_nobody_listens_on_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let failure = post(&client(), &format!("http://{addr}/hook"), 1024)
        .await
        .expect_err("nobody listens");
    assert!(matches!(failure, Failure::Connect(_)), "{failure:?}");
}

#[test]
fn urls_that_cannot_be_posted_to_are_refused_when_prepared() {
    let client = client();
    for url in [
        "ftp://127.0.0.1/file",
        "http://user:secret@127.0.0.1/hook",
        "https://:secret@127.0.0.1/hook",
    ] {
        let refused = client.destination(&Url::parse(url).expect("url"));
        assert!(refused.is_err(), "{url}");
        let why = refused.err().unwrap_or_default();
        assert!(!why.contains("secret"), "{why}");
    }
}

/// Answers the first lookup with 127.0.0.1 and never answers another: a connection
/// that cannot be made (as when a SYN is lost and retried a second later, longer
/// here than any timeout).
struct FirstLookupOnly(AtomicUsize);

impl Resolve for FirstLookupOnly {
    fn resolve(&self, _host: &str) -> Resolving {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            Box::pin(async { Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))]) })
        } else {
            Box::pin(std::future::pending())
        }
    }
}

#[tokio::test]
async fn a_request_waiting_for_a_connection_takes_the_first_one_freed() {
    // GIVEN a receiver that answers after a moment, reachable by one connection only
    // (every later connection hangs in its lookup)
    let (addr, counts) =
        server_answering_after(After::KeepAlive, b"ok", Duration::from_millis(100)).await;
    let client = Arc::new(
        HttpClient::new(Options {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            resolver: Arc::new(FirstLookupOnly(AtomicUsize::new(0))),
            extra_roots: Vec::new(),
        })
        .expect("client"),
    );
    let url = format!("http://pool.test:{}/hook", addr.port());
    // WHEN two requests go at once: one gets the connection, the other finds none
    // idle and starts one that will never be made
    let first = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { post(&client, &url, 1024).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = post(&client, &url, 1024).await;
    // THEN the second is sent on the connection the first frees, and both answer
    assert!(second.is_ok(), "{second:?}");
    assert!(first.await.expect("task").is_ok());
    assert_eq!(counts.requests.load(Ordering::SeqCst), 2);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}
