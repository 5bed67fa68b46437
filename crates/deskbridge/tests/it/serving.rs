//! Slow and stalled clients, on a raw socket: a head or body that does not
//! arrive in time ends its connection, so does an answer nobody reads, and
//! the connection caps (in all and per address) hold.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestGateway, backend_with};

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
        ..serving::Limits::default()
    }
}

#[tokio::test]
async fn a_stalled_head_or_body_ends_its_connection_at_the_backend() {
    let (_dir, b) = backend_with(|c| c.http = limits(1, 1, 100)).await;

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
    let (_dir, b) = backend_with(|c| c.http = limits(30, 30, 2)).await;
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

/// A connection from `source` (another loopback address) that has sent `bytes`.
async fn sent_from(source: [u8; 4], url: &str, bytes: &[u8]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
    let mut stream = socket.connect(address(url).parse().unwrap()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// A client that asks and asks but reads none of its answers: pipelined
/// requests on a connection with a tiny receive buffer, so the server's
/// writes soon make no progress (once the kernel has stopped growing the
/// server's send buffer). The connection stays open as long as the
/// returned half lives.
async fn never_reads(url: &str) -> tokio::net::tcp::OwnedReadHalf {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address(url).parse().unwrap()).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let requests = b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n".repeat(100);
        // Ends when the server closes; blocks while it, stalled, reads nothing.
        while writer.write_all(&requests).await.is_ok() {}
    });
    reader
}

#[tokio::test]
async fn clients_that_read_no_answers_are_closed_and_free_their_connections() {
    let (_dir, b) = backend_with(|c| {
        c.http = serving::Limits {
            write_timeout_secs: 1,
            ..limits(30, 30, 4)
        }
    })
    .await;
    // Every connection the backend serves, taken by clients that never read.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(never_reads(&b.url).await);
    }
    // Without a write timeout they would hold them for ever; with it, a
    // legitimate request is answered once a stalled write has waited a second.
    let started = std::time::Instant::now();
    let mut legitimate = sent(&b.url, b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    let answer = read_until_closed(&mut legitimate).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    // The slot came from a stalled client, closed: its reader sees the end.
    let closed = futures_util::future::select_all(stalled.iter_mut().map(|reader| {
        Box::pin(async move {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink).await;
        })
    }));
    assert!(
        tokio::time::timeout(PATIENCE, closed).await.is_ok(),
        "no stalled connection was closed"
    );
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_closed_at_once() {
    let (_dir, b) = backend_with(|c| {
        c.http = serving::Limits {
            max_connections_per_address: 2,
            ..limits(30, 30, 100)
        }
    })
    .await;
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = sent_from([127, 0, 0, 41], &b.url, healthz).await;
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        held.push(stream);
    }
    // A third from the same address is closed unanswered, at once.
    let mut third = sent_from([127, 0, 0, 41], &b.url, healthz).await;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the third connection was kept open");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // Another address is served; and the first, once it closed one.
    let close = b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    let answer = read_until_closed(&mut sent_from([127, 0, 0, 42], &b.url, close).await).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Once one of its connections closes, the address is served again (as
    // soon as the server has seen the close: tried until then).
    held.pop();
    let mut served = false;
    for _ in 0..50 {
        let answer = read_until_closed(&mut sent_from([127, 0, 0, 41], &b.url, close).await).await;
        served = answer.starts_with("HTTP/1.1 200");
        if served {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the address was not served again");
}
