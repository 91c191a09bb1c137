//! A machine without any CA certificate (a minimal container without
//! `ca-certificates`): the client is still built, on the bundled roots, and delivers.
//! Its own test binary: it points the system trust store at nothing through the
//! process's environment, which no other test may see.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::http::{HttpClient, Options, SystemResolver};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

#[tokio::test]
async fn without_system_roots_the_client_is_built_on_the_bundled_ones_and_delivers() {
    // GIVEN a system trust store with nothing in it
    let empty = std::env::temp_dir().join(format!("herald-no-roots-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("dir");
    let none = empty.join("none.pem");
    std::fs::write(&none, b"").expect("file");
    std::env::set_var("SSL_CERT_FILE", &none);
    std::env::set_var("SSL_CERT_DIR", &empty);
    // AND a plain-http receiver on 127.0.0.1
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    });
    // WHEN the client is built and posts
    let client = HttpClient::new(Options {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        resolver: Arc::new(SystemResolver),
        extra_roots: Vec::new(),
    })
    .expect("a client without system roots");
    let to = client
        .destination(&Url::parse(&format!("http://{addr}/hook")).expect("url"))
        .expect("destination");
    let answer = client
        .post(
            &to,
            HeaderMap::new(),
            Bytes::from_static(b"{}"),
            Duration::from_secs(2),
            1024,
        )
        .await
        .expect("answer");
    // THEN it delivers
    assert_eq!(answer.status, 200);
    assert_eq!(&answer.body[..], b"ok");
    let _ = std::fs::remove_dir_all(&empty);
}
