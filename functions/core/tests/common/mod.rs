//! What the HTTP tests share: the client with its defaults. (A server on 127.0.0.1
//! reads requests with `herald_testkit::http`.)
#![allow(dead_code)] // each test binary uses its own part of it

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::net::client::{Failure, HttpClient, Options, SystemResolver};
use http::HeaderMap;
use url::Url;

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
