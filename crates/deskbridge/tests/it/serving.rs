//! Slow and stalled clients, on a raw socket: a head or body that does not
//! arrive in time ends its connection, and a connection cap holds.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestBackend, TestGateway, config};

/// Longest any test here waits for the server to act; the limits under
/// test are one second.
const PATIENCE: Duration = Duration::from_secs(10);

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A new connection to the server at `url` that has sent `bytes`.
pub(crate) async fn sent(url: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address(url)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Everything the server sends until it closes the connection.
pub(crate) async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server kept a stalled connection open")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

pub(crate) fn json_body(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn limits(header: u64, body: u64, connections: usize) -> serving::Limits {
    serving::Limits {
        header_read_timeout_secs: header,
        body_read_timeout_secs: body,
        max_connections: connections,
    }
}

async fn backend_with(http: serving::Limits) -> (tempfile::TempDir, TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http = http;
    let backend = TestBackend::start(cfg).await;
    (dir, backend)
}

#[tokio::test]
async fn a_stalled_head_or_body_ends_its_connection_at_the_backend() {
    let (_dir, b) = backend_with(limits(1, 1, 100)).await;

    // Half a head, then silence: closed without an answer.
    let mut stream = sent(&b.url, b"POST /customer_authenticate HTTP/1.1\r\nHost: backend\r\n").await;
    let started = std::time::Instant::now();
    read_until_closed(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early");

    // An idle keep-alive connection is closed the same way.
    let mut stream = sent(&b.url, b"GET /healthz HTTP/1.1\r\nHost: backend\r\n\r\n").await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body trickled a byte at a time, each well within a second: the
    // deadline is for the whole body, so the 408 comes about a second after
    // the head, long before the trickle (4.8 s) ends. A timeout per read
    // would answer only a second after the last byte.
    let stream = sent(
        &b.url,
        b"POST /customer_authenticate HTTP/1.1\r\nHost: backend\r\n\
          content-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\n",
    )
    .await;
    let started = std::time::Instant::now();
    let (mut from_server, mut to_server) = stream.into_split();
    let trickle = async {
        for byte in b"username=alice&password=" {
            if to_server.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let answer = async {
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, from_server.read_to_end(&mut answer))
            .await
            .expect("the server kept a trickling connection open")
            .unwrap();
        (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
    };
    // Meanwhile the server answers others.
    let other = async {
        let mut other = sent(&b.url, b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await;
        read_until_closed(&mut other).await
    };
    let ((answer, took), (), other) = tokio::join!(answer, trickle, other);
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(json_body(&answer)["error"], "request_timeout", "{answer}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn the_backend_serves_no_more_connections_than_its_cap() {
    let (_dir, b) = backend_with(limits(30, 30, 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = sent(&b.url, b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n").await;
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        held.push(stream);
    }
    // The kernel accepts the third connection, but the server does not
    // serve it while two are open…
    let mut third = sent(&b.url, b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte))
            .await
            .is_err(),
        "a third connection was served"
    );
    // …and does as soon as one closes.
    held.pop();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_stalled_body_at_the_gateway_is_a_408_problem() {
    let dir = tempfile::tempdir().unwrap();
    let g = TestGateway::start(&format!(
        "[server]\ndata_dir = \"{}\"\n[server.http]\nbody_read_timeout_secs = 1\n",
        dir.path().display()
    ))
    .await;
    let mut stream = sent(
        &g.url,
        b"POST /v1/sessions HTTP/1.1\r\nHost: gateway\r\n\
          content-type: application/json\r\ncontent-length: 64\r\n\r\n{\"channel\":",
    )
    .await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(
        json_body(&answer)["type"],
        "urn:deskbridge:problem:request_timeout",
        "{answer}"
    );
    g.stop().await;
}
