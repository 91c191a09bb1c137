//! What the HTTP tests share: reading one request as a server on 127.0.0.1 sees it,
//! and the client with its defaults.
#![allow(dead_code)] // each test binary uses its own part of it

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::net::client::{Failure, HttpClient, Options, SystemResolver};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt};
use url::Url;

/// Reads one request from `stream`: its head, then as much body as its
/// content-length says (at most 1,024 reads). `None` at EOF or an error before that.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..1024 {
        let text = String::from_utf8_lossy(&read).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if read.len() >= end + 4 + length {
                return Some(read);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => read.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

/// The client with the system resolver and roots, a 2 s connect timeout.
pub fn client() -> HttpClient {
    HttpClient::new(Options {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        resolver: Arc::new(SystemResolver),
        extra_roots: Vec::new(),
    })
    .expect("client")
}

/// POSTs a small JSON body to `url` within 2 s, keeping at most `max_body` bytes of
/// the answer's body; checks the answer is `200` and returns its body.
pub async fn post(client: &HttpClient, url: &str, max_body: usize) -> Result<Bytes, Failure> {
    let url = Url::parse(url).expect("url");
    let to = client.destination(&url).expect("destination");
    let answer = client
        .post(
            &to,
            HeaderMap::new(),
            Bytes::from_static(b"{\"n\":1}"),
            Duration::from_secs(2),
            max_body,
        )
        .await?;
    assert_eq!(answer.status, 200);
    Ok(answer.body)
}
