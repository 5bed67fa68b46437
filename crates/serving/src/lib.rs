//! The HTTP/1.1 serve loop of the backend and the gateway. `axum::serve`
//! sets no read deadline at all, so a client that sends half a request line
//! (or half a body) and goes quiet holds a connection for ever; this loop
//! closes it. It owns these limits ([`Limits`]):
//!
//! - the request head must arrive within `header_read_timeout_secs` (hyper
//!   starts that clock when it waits for a head, so it also ends idle
//!   keep-alive connections);
//! - the whole request body must arrive within `body_read_timeout_secs` of
//!   the head: a deadline for the body, not a timeout per read, so a client
//!   trickling a byte at a time does not keep it open;
//! - an answer must be read: a write that makes no progress for
//!   `write_timeout_secs` ends its connection (a client that never reads,
//!   or an event stream whose reader stopped draining it);
//! - at most `max_connections` connections are served at once; the next one
//!   waits in the kernel's accept queue;
//! - at most `max_connections_per_address` of them from one client address;
//!   one more from that address is closed at once, so one client cannot
//!   take every connection.
//!
//! With TLS ([`serve_with`], [`tls`]) the handshake must also end within
//! `header_read_timeout_secs`, and the certificate is reloaded on `SIGHUP`.
//!
//! Every request also gets its trace ([`TraceId`], from the caller's
//! `traceparent` or new), as a request extension and as `x-trace-id` on the
//! answer; [`log_request`] logs it with the route and status.

mod deadline;
pub mod tls;
mod write_timeout;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

use deadline::BodyDeadline;
pub use deadline::is_body_timeout;
use tracecontext::X_TRACE_ID;
pub use tracecontext::{TRACEPARENT, TraceId};
use write_timeout::WriteTimeout;

/// How long a client may take to send a request, and how many may connect.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Seconds to receive a request's head, and the most a keep-alive
    /// connection may sit idle.
    pub header_read_timeout_secs: u64,
    /// Seconds to receive a request's whole body once its head is in.
    pub body_read_timeout_secs: u64,
    /// Seconds a write of an answer may make no progress (the client reads
    /// nothing) before its connection is closed.
    pub write_timeout_secs: u64,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one client address.
    pub max_connections_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 30,
            write_timeout_secs: 30,
            max_connections: 10_000,
            max_connections_per_address: 256,
        }
    }
}

impl Limits {
    /// What is wrong with these limits, as (key, problem) pairs.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        for (key, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                problems.push((key, "must be between 1 and 3600"));
            }
        }
        if self.max_connections == 0 {
            problems.push(("max_connections", "must be at least 1"));
        }
        if self.max_connections_per_address == 0 {
            problems.push(("max_connections_per_address", "must be at least 1"));
        }
        problems
    }
}

/// Connections the kernel queues for `accept` (clamped by
/// `net.core.somaxconn`). tokio's default of 1,024 overflowed under a burst
/// of connections, and a dropped SYN costs its client a second before it
/// tries again: an agent's request made during a flood waited that long.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `address` with a deep accept queue ([`LISTEN_BACKLOG`]).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the connections being served to finish their
/// requests. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(listener, router, limits, None, shutdown).await;
}

/// [`serve`], with TLS on every connection when `tls` is given: the
/// handshake must end within `header_read_timeout_secs`, and a client
/// certificate reaches handlers as [`tls::PeerCertificate`].
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let handshake_timeout = Duration::from_secs(limits.header_read_timeout_secs);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs));
    let body_deadline = Duration::from_secs(limits.body_read_timeout_secs);
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::new(limits.max_connections_per_address));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, peer, slot)) = accepted else { continue };
        let Some(address_slot) = PerAddress::enter(&per_address, peer.ip()) else {
            // Closed unserved, and its slot is free again at once.
            tracing::debug!(peer = %peer.ip(), "connection refused: too many from this address");
            continue;
        };
        let router = router.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = WriteTimeout::new(stream, write_timeout);
            let served = match tls {
                None => {
                    let service = service(router, peer, None, body_deadline);
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await else {
                        tracing::debug!(peer = %peer.ip(), "TLS handshake failed or timed out");
                        drop((slot, address_slot));
                        return;
                    };
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| tls::PeerCertificate(Arc::new(leaf.clone().into_owned())));
                    let service = service(router, peer, client, body_deadline);
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            // A client that goes away or sends garbage ends its own
            // connection; hyper has answered what could be answered.
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended");
            }
            drop((slot, address_slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The router as one connection's service: each request gets the peer's
/// address, its client certificate if any, its trace and a body deadline.
fn service(
    router: Router,
    peer: SocketAddr,
    client: Option<tls::PeerCertificate>,
    body_deadline: Duration,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (mut parts, body) = request.into_parts();
        let trace = TraceId::of(&parts.headers);
        parts.extensions.insert(ConnectInfo(peer));
        parts.extensions.insert(trace);
        if let Some(client) = &client {
            parts.extensions.insert(client.clone());
        }
        let request = hyper::Request::from_parts(parts, BodyDeadline::new(body, body_deadline));
        // A Router is always ready, so `call` needs no `poll_ready` first.
        let mut router = router.clone();
        async move {
            let mut response = router.call(request).await.unwrap_or_else(|e| match e {});
            response.headers_mut().insert(X_TRACE_ID, trace.header_value());
            Ok::<_, Infallible>(response)
        }
    })
}

/// The next connection, once a slot is free. `None` for an accept error,
/// after a pause when the error is the server's (out of file descriptors)
/// rather than the client's.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            // Answers go out in one write each; Nagle would only delay them.
            let _ = stream.set_nodelay(true);
            Some((stream, peer, slot))
        }
        Err(e) if is_client_error(&e) => None,
        Err(e) => {
            tracing::error!(error = %e, "could not accept a connection; pausing for a second");
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

/// Connections being served, per client address.
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address until it is dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more connection from `address`, unless it has the most.
    fn enter(table: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let mut open = table.open();
        let count = open.entry(address).or_default();
        if *count >= table.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: table.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open();
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

fn is_client_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

/// Middleware: one line per request, with the log target `requests`, at
/// debug level (warn for a 5xx): method, route pattern, status, latency and
/// trace id. Paths, query strings and headers are never logged, since a
/// client may put a secret in any.
pub async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let trace = request.extensions().get::<TraceId>().copied();
    let route = request.extensions().get::<axum::extract::MatchedPath>().cloned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    let trace = trace.map(tracing::field::display);
    if status >= 500 {
        tracing::warn!(target: "requests", %method, route, status, latency_us, trace_id = trace, "request");
    } else {
        tracing::debug!(target: "requests", %method, route, status, latency_us, trace_id = trace, "request");
    }
    response
}
