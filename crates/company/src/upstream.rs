//! Action calls to one company origin: HTTP/1.1 keep-alive connections made
//! with hyper's connection API and pooled here.
//!
//! Why not reqwest, which the gateway uses for its token endpoint and JWKS
//! calls: an action is the gateway's hot path, and measured under load
//! (`bench/gateway.sh`) reqwest's layers around hyper (URL re-parsing, the
//! redirect and retry services, its pool and per-request boxing) cost a
//! large share of the gateway's CPU per call. Connections here carry the
//! same protocol code (hyper's), without those layers.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::egress::Proxy;

/// The largest company answer an action reads; more is refused, not buffered.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed")]
    Connect,
    #[error("the TLS handshake failed")]
    Tls,
    #[error("the egress proxy did not open a tunnel")]
    Proxy,
    #[error("the request failed")]
    Request,
    #[error("the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { status: u16 },
    #[error("the response body could not be read")]
    Body,
}

/// A response read in full.
pub struct Answer {
    pub head: http::response::Parts,
    pub body: Bytes,
}

pub struct Upstream {
    host: String,
    port: u16,
    /// The `Host` header: the authority as the base URL gives it.
    authority: http::HeaderValue,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The egress proxy calls go through, if any.
    proxy: Option<Proxy>,
    /// Through a proxy over plain HTTP, requests name the whole URL
    /// (absolute form, RFC 9112 §3.2.2): `http://authority`.
    absolute_prefix: Option<String>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    max_idle: usize,
}

impl Upstream {
    /// `base_url` was checked at load: http or https, with a host. `tls` is
    /// the connection's TLS client configuration (see `egress`).
    pub fn new(
        base_url: &Url,
        max_idle: usize,
        tls: Arc<rustls::ClientConfig>,
        proxy: Option<Proxy>,
    ) -> Result<Self, String> {
        let host = base_url.host_str().ok_or("the base URL has no host")?;
        let port = base_url.port_or_known_default().ok_or("the base URL has no port")?;
        let authority = match base_url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        // An IPv6 literal is bracketed in a URL, bare in a socket address and a TLS name.
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match base_url.scheme() {
            "https" => {
                let name = ServerName::try_from(bare_host.clone())
                    .map_err(|e| format!("the base URL's host is not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(tls), name))
            }
            _ => None,
        };
        let absolute_prefix = (proxy.is_some() && tls.is_none()).then(|| format!("http://{authority}"));
        Ok(Self {
            host: bare_host,
            port,
            authority: http::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
            tls,
            proxy,
            absolute_prefix,
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    pub fn authority(&self) -> &http::HeaderValue {
        &self.authority
    }

    /// Sends `request` (origin-form URI, `Host` set) and reads the answer.
    /// A request that a pooled connection could not even send (the company
    /// closed it while idle) goes once more on a new connection: it never
    /// reached the company, so this is safe for any method.
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Answer, UpstreamError> {
        if let Some(prefix) = &self.absolute_prefix {
            let origin_form = request.uri().path_and_query().map_or("/", |p| p.as_str());
            *request.uri_mut() = format!("{prefix}{origin_form}")
                .parse()
                .map_err(|_| UpstreamError::Request)?;
        }
        loop {
            let (mut sender, pooled) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, TLS, HTTP handshake) is the rare
                // path, and its state, inline, would make every call's
                // future that large (an action's went from 5.4 to 2.3 KB).
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let answer = read(response).await?;
                    self.checkin(sender);
                    return Ok(answer);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if pooled => request = unsent,
                    _ => return Err(UpstreamError::Request),
                },
            }
        }
    }

    async fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            // Ready at once unless the connection is still finishing the last
            // exchange; an error means the company closed it.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
        let (host, port) = match &self.proxy {
            Some(proxy) => (proxy.host.as_str(), proxy.port),
            None => (self.host.as_str(), self.port),
        };
        let mut tcp = TcpStream::connect((host, port))
            .await
            .map_err(|_| UpstreamError::Connect)?;
        // Requests are small and written whole: send them at once.
        tcp.set_nodelay(true).map_err(|_| UpstreamError::Connect)?;
        if self.proxy.is_some() && self.tls.is_some() {
            tunnel(&mut tcp, &self.authority_for_connect()).await?;
        }
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| UpstreamError::Tls)?;
                handshake(tls).await
            }
        }
    }
}

impl Upstream {
    /// `host:port` as CONNECT names it (RFC 9110 §9.3.6), IPv6 bracketed.
    fn authority_for_connect(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

/// The longest answer a proxy may give to CONNECT before the tunnel opens.
const MAX_CONNECT_ANSWER: usize = 8 * 1024;

/// Asks the proxy on `tcp` for a tunnel to `authority`; on a 2xx answer the
/// stream is the company's (TLS goes on inside it).
async fn tunnel(tcp: &mut TcpStream, authority: &str) -> Result<(), UpstreamError> {
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|_| UpstreamError::Proxy)?;
    // Read byte by byte up to the blank line: nothing of the tunnel's own
    // bytes (the TLS handshake) may be consumed here.
    let mut answer = Vec::with_capacity(256);
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_CONNECT_ANSWER {
            return Err(UpstreamError::Proxy);
        }
        let byte = tcp.read_u8().await.map_err(|_| UpstreamError::Proxy)?;
        answer.push(byte);
    }
    // "HTTP/1.1 200 Connection established"
    let status = answer.split(|b| *b == b' ').nth(1).unwrap_or_default();
    if status.len() == 3 && status[0] == b'2' {
        Ok(())
    } else {
        tracing::warn!(status = %String::from_utf8_lossy(status), "the egress proxy refused the tunnel");
        Err(UpstreamError::Proxy)
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| UpstreamError::Connect)?;
    // The connection runs until the company closes it or the sender (pooled
    // or in use) is dropped.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "company connection ended");
        }
    });
    Ok(sender)
}

async fn read(response: Response<hyper::body::Incoming>) -> Result<Answer, UpstreamError> {
    let (head, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            UpstreamError::TooLarge {
                status: head.status.as_u16(),
            }
        } else {
            UpstreamError::Body
        }
    })?;
    Ok(Answer {
        head,
        body: body.to_bytes(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A proxy that answers every CONNECT with `answer`, and what it was asked.
    async fn proxy(answer: &'static str) -> (Proxy, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.unwrap());
            }
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let proxy = Proxy {
            host: "127.0.0.1".into(),
            port,
        };
        (proxy, asked)
    }

    #[tokio::test]
    async fn a_proxy_that_refuses_the_tunnel_is_a_proxy_error() {
        let (proxy, asked) = proxy("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        let tls = Arc::new(crate::egress::client_tls(None).unwrap());
        let base = Url::parse("https://bank.example:8443/api").unwrap();
        let upstream = Upstream::new(&base, 1, tls, Some(proxy)).unwrap();
        let request = Request::post("/api/x")
            .header(http::header::HOST, upstream.authority().clone())
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert!(matches!(upstream.send(request).await, Err(UpstreamError::Proxy)));
        assert_eq!(
            asked.await.unwrap(),
            "CONNECT bank.example:8443 HTTP/1.1\r\nHost: bank.example:8443\r\n\r\n"
        );
    }
}
