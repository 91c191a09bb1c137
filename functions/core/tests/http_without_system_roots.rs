//! A machine without any CA certificate (a minimal container without
//! `ca-certificates`): the client is still built, on the bundled roots, and delivers.
//! Its own test binary: it points the system trust store at nothing through the
//! process's environment, which no other test may see.

use herald_testkit::http::RequestReader;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

mod common;

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
            if let Ok(Some(_)) = RequestReader::new().read(&mut stream).await {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    });
    // WHEN the client is built (it reads the empty trust store) and posts
    let client = common::client();
    let body = common::post(&client, &format!("http://{addr}/hook"), 1024)
        .await
        .expect("answer");
    // THEN it delivers
    assert_eq!(&body[..], b"ok");
    let _ = std::fs::remove_dir_all(&empty);
}
