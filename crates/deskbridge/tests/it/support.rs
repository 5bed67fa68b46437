//! Test harness: the real backend on a free loopback port, in process, with
//! a clock the test controls.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::admin::DemoSeed;
use backend::{Backend, BackendConfig, ManualClock};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

pub struct TestBackend {
    pub url: String,
    pub clock: Arc<ManualClock>,
    pub backend: Backend,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The `deskbridge` binary under test: this build's, or `DESKBRIDGE_BIN`
/// (a release build, when a test's numbers are wanted for bench/README.md).
pub fn deskbridge() -> Command {
    Command::new(std::env::var_os("DESKBRIDGE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_deskbridge").into()))
}

/// The URL a started server prints as the last word of its first line
/// (`… listening on http://127.0.0.1:PORT`); its stdout must be piped.
pub fn announced_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{line}");
    url
}

/// The issuer every test backend uses, so tokens survive a restart on a new port.
pub const ISSUER: &str = "https://backend.test";

pub fn config(data_dir: &Path) -> BackendConfig {
    BackendConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        issuer: Some(ISSUER.into()),
        password_hash_concurrency: Some(2),
        ..BackendConfig::default()
    }
}

/// A started backend with `change` made to the test configuration.
pub async fn backend_with(change: impl FnOnce(&mut BackendConfig)) -> (tempfile::TempDir, TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    change(&mut cfg);
    let backend = TestBackend::start(cfg).await;
    (dir, backend)
}

impl TestBackend {
    pub async fn start(config: BackendConfig) -> Self {
        let now = backend::Clock::now(&backend::SystemClock);
        Self::start_at(config, Arc::new(ManualClock::new(now))).await
    }

    pub async fn start_at(config: BackendConfig, clock: Arc<ManualClock>) -> Self {
        Self::start_with(config, clock.clone(), clock).await
    }

    async fn start_with(
        mut config: BackendConfig,
        clock: Arc<ManualClock>,
        running_on: Arc<dyn backend::Clock>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        config.listen = listener.local_addr().unwrap();
        let data_dir = config.data_dir.clone();
        let backend = Backend::open(config.clone(), running_on).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = backend.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            url: config.public_url(),
            clock,
            backend,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the server and its store are closed.
    pub async fn stop(mut self) -> (PathBuf, Arc<ManualClock>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        (self.data_dir.clone(), self.clock.clone())
    }

    pub async fn seed(&self) -> DemoSeed {
        self.backend.admin().seed_demo().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

/// Serves `app` (a stand-in company server of a test's own) on a free
/// loopback port; returns its base URL.
pub async fn spawn_company(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A customer JWT for `user`.
pub async fn login(b: &TestBackend, username: &str, password: &str) -> String {
    let response = client()
        .post(b.url("/customer_authenticate"))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response).await["JWT"].as_str().unwrap().to_string()
}

/// A system access token for the seeded demo client.
pub async fn access_token(b: &TestBackend, seed: &DemoSeed) -> String {
    let c = &seed.clients[0];
    let response = client()
        .post(b.url("/access_token"))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response).await["access_token"].as_str().unwrap().to_string()
}

/// `/getprofile` with the given credentials (None leaves one out).
pub async fn get_profile(
    b: &TestBackend,
    bearer: Option<&str>,
    api_key: Option<&str>,
    customer_jwt: Option<&str>,
) -> reqwest::Response {
    let mut request = client().post(b.url("/getprofile"));
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    if let Some(k) = api_key {
        request = request.header("api-key", k);
    }
    if let Some(j) = customer_jwt {
        request = request.header("customer-auth", format!("JWT {j}"));
    }
    request.send().await.unwrap()
}

/// Asserts status and JSON `error` code, and returns the response headers.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> reqwest::header::HeaderMap {
    let headers = response.headers().clone();
    let got = response.status().as_u16();
    let body = json(response).await;
    assert_eq!((got, body["error"].as_str()), (status, Some(code)), "body: {body}");
    assert!(
        body["error_description"].as_str().is_some_and(|d| !d.is_empty()),
        "no description: {body}"
    );
    headers
}

/// The backend's Prometheus counter of issued access tokens.
pub async fn tokens_issued(b: &TestBackend) -> u64 {
    backend_counter(b, "deskbridge_access_tokens_issued_total").await
}

/// A `/metrics` page (the backend's or the gateway's), as text.
pub async fn metrics_text(url: String) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// A backend Prometheus counter, summed over all its labels.
pub async fn backend_counter(b: &TestBackend, name: &str) -> u64 {
    let text = metrics_text(b.url("/metrics")).await;
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .map(|l| l.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap())
        .sum()
}

/// The real gateway on a free port, in process.
pub struct TestGateway {
    pub url: String,
    pub gateway: Arc<gateway::Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(config_toml: &str) -> Self {
        Self::start_with_clock(config_toml, Arc::new(backend::SystemClock)).await
    }

    /// A gateway whose every expiry decision reads `clock` (a test's
    /// `ManualClock`, often the backend's, so both move together).
    pub async fn start_with_clock(config_toml: &str, clock: Arc<dyn backend::Clock>) -> Self {
        let config = gateway::GatewayConfig::parse(config_toml).unwrap_or_else(|p| panic!("{p:?}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gateway = gateway::Gateway::open_with_clock(config, clock).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            url,
            gateway,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

pub const APP_KEY: &str = "web-app-key-for-tests-0123456789";

/// A gateway configuration for one backend as connection "acme", with a
/// web and an ios channel.
pub fn gateway_toml(data_dir: &Path, b: &TestBackend, seed: &DemoSeed) -> String {
    format!(
        r#"
[server]
data_dir = "{data}"
# Tests of other things make bursts of requests; the limits have tests of their own.
[limits]
agent_per_second = 1000
agent_burst = 1000
session_per_second = 1000
session_burst = 1000
[[connections]]
name = "acme"
base_url = "{url}"
timeout_ms = 2000
customer_login_url = "{url}/customer_authenticate"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "{url}/access_token"
client_id = "{client_id}"
client_secret = "{client_secret}"
scope = "profile:read"
[connections.api_key]
value = "{api_key}"
[connections.identity]
mode = "jwt"
jwks_url = "{url}/.well-known/jwks.json"
issuer = "{issuer}"
audience = "deskbridge"
[[connections.actions]]
name = "getprofile"
path = "/getprofile"
[[connections.actions]]
name = "summary"
path = "/getprofile"
response = {{ name = "/name", tier = "/tier", first_account = "/accounts/0/id" }}
[[channels]]
name = "web"
app_key = "{app_key}"
allowed_origins = ["https://shop.example.com"]
[[channels]]
name = "ios"
app_key = "{app_key}"
"#,
        data = data_dir.display(),
        url = b.url,
        client_id = seed.clients[0].client_id,
        client_secret = seed.clients[0].client_secret,
        api_key = seed.api_keys[0].key,
        issuer = ISSUER,
        app_key = APP_KEY,
    )
}

/// A TCP proxy (to Postgres, to Redis) that can be cut (every connection closed, new
/// ones refused) and restored.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<Mutex<bool>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accepting: AbortHandle,
}

impl Proxy {
    pub async fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(Mutex::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*up2.lock().unwrap() {
                    continue; // dropped: closed at once
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            up,
            links,
            accepting,
        }
    }

    pub fn cut(&self) {
        *self.up.lock().unwrap() = false;
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        *self.up.lock().unwrap() = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}
