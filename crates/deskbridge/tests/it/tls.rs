//! TLS in the process, through real sockets: the backend's own HTTPS
//! listener with client certificates, the gateway reaching it by mutual TLS
//! with `tls_client_auth`, the gateway's own HTTPS with reload on SIGHUP,
//! and an egress proxy (CONNECT and absolute form). Certificates are made
//! here, by a CA of each test's own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{APP_KEY, TestBackend, TestGateway, client, config, deskbridge, gateway_toml};

/// A CA of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A leaf for `names` (DNS names or IP addresses), written as
    /// `<file>.pem` and `<file>.key` in `dir`.
    fn issue(&self, dir: &Path, file: &str, common_name: &str, names: &[&str]) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }
}

/// A rustls client trusting `ca` only, showing `identity` if given.
fn tls_config(ca: &Ca, identity: Option<&Issued>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.der.clone()],
                rustls::pki_types::PrivateKeyDer::from_pem_file(&id.key).unwrap(),
            )
            .unwrap(),
    }
}

fn https_client(ca: &Ca, identity: Option<&Issued>) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls_config(ca, identity))
        .build()
        .unwrap()
}

/// The backend over HTTPS requiring client certificates from `client_ca`,
/// with `gateway` registered as a `tls_client_auth` client.
struct MtlsWorld {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    server_ca: Ca,
    gateway_cert: Issued,
    backend: TestBackend,
    seed: backend::admin::DemoSeed,
}

async fn mtls_world() -> MtlsWorld {
    mtls_world_with(|_| {}).await
}

/// The mutual-TLS world with the backend's configuration edited by `edit`.
async fn mtls_world_with(edit: impl FnOnce(&mut backend::BackendConfig)) -> MtlsWorld {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (server_ca, client_ca) = (Ca::new("Company server CA"), Ca::new("Company client CA"));
    let server = server_ca.issue(&dir, "backend", "backend", &["127.0.0.1", "localhost"]);
    let gateway_cert = client_ca.issue(&dir, "gateway", "deskbridge-gateway", &[]);
    let client_ca_file = client_ca.write(&dir, "client-ca");
    let mut cfg = config(&dir.join("backend-data"));
    cfg.tls = Some(serving::tls::TlsFiles {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: Some(client_ca_file),
        client_auth: serving::tls::ClientAuth::Require,
    });
    cfg.tls_clients = vec![backend::tls_clients::TlsClient {
        client_id: "deskbridge-gateway".into(),
        thumbprint: backend::tls_clients::thumbprint(&gateway_cert.der),
        scopes: "profile:read".into(),
    }];
    edit(&mut cfg);
    let backend = TestBackend::start(cfg).await;
    assert!(backend.url.starts_with("https://127.0.0.1:"), "{}", backend.url);
    let seed = backend.seed().await;
    MtlsWorld {
        _dir: tmp,
        dir,
        server_ca,
        gateway_cert,
        backend,
        seed,
    }
}

impl MtlsWorld {
    /// The gateway's configuration: the backend by mutual TLS, the system
    /// token by `tls_client_auth`, `extra` added to the connection.
    fn gateway_toml(&self, extra: &str) -> String {
        let server_ca = self.server_ca.write(&self.dir, "server-ca");
        let toml = gateway_toml(&self.dir.join("gateway-data"), &self.backend, &self.seed);
        let secret_line = format!("client_secret = \"{}\"\n", self.seed.clients[0].client_secret);
        assert!(toml.contains(&secret_line));
        let client_line = format!("client_id = \"{}\"\n", self.seed.clients[0].client_id);
        toml.replace(&secret_line, "auth_method = \"tls_client_auth\"\n")
            .replace(&client_line, "client_id = \"deskbridge-gateway\"\n")
            .replace(
                "[connections.system_auth]",
                &format!(
                    "{extra}\n[connections.tls]\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[connections.system_auth]",
                    server_ca.display(),
                    self.gateway_cert.cert.display(),
                    self.gateway_cert.key.display()
                ),
            )
    }

    /// A customer's JWT, logged in over the backend's mutual TLS.
    async fn customer_jwt(&self) -> String {
        let user = &self.seed.users[0];
        let response = https_client(&self.server_ca, Some(&self.gateway_cert))
            .post(self.backend.url("/customer_authenticate"))
            .form(&[("username", &user.username), ("password", &user.password)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["JWT"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// An agent's `getprofile` for a logged-in customer, through `gateway`.
async fn agent_fetches_profile(gateway: &TestGateway, jwt: &str) -> Value {
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    let session = client()
        .post(gateway.url("/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 201);
    let session: Value = session.json().await.unwrap();
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = client()
        .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/getprofile")))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_agent_fetches_a_profile_through_mutual_tls_with_tls_client_auth() {
    let w = mtls_world().await;
    let gateway = TestGateway::start(&w.gateway_toml("")).await;
    let jwt = w.customer_jwt().await;
    let body = agent_fetches_profile(&gateway, &jwt).await;
    assert_eq!(body["data"]["name"], "Alice Martin");

    // The metadata names the method.
    let meta: Value = https_client(&w.server_ca, Some(&w.gateway_cert))
        .get(w.backend.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tls_client_auth")),
        "{meta}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_backend_refuses_certificates_it_did_not_issue_and_tls_clients_need_theirs() {
    let w = mtls_world().await;
    let token_request = |client: reqwest::Client| {
        let url = w.backend.url("/access_token");
        async move {
            client
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "deskbridge-gateway"),
                ])
                .send()
                .await
        }
    };
    // The registered certificate gets a token, with no secret.
    let r = token_request(https_client(&w.server_ca, Some(&w.gateway_cert)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["client_id"], "deskbridge-gateway");

    // A certificate with the same name from another CA: no handshake.
    let stranger_ca = Ca::new("Company client CA");
    let stranger = stranger_ca.issue(&w.dir, "stranger", "deskbridge-gateway", &[]);
    let refused = token_request(https_client(&w.server_ca, Some(&stranger))).await;
    assert!(refused.is_err(), "a foreign client certificate was accepted");
    // No certificate at all: no handshake either (`client_auth = "require"`).
    assert!(token_request(https_client(&w.server_ca, None)).await.is_err());

    // A secret client still authenticates by its secret over the same listener.
    let c = &w.seed.clients[0];
    let r = https_client(&w.server_ca, Some(&w.gateway_cert))
        .post(w.backend.url("/access_token"))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_tls_client_with_an_unregistered_certificate_gets_invalid_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let server = server_ca.issue(dir, "backend", "backend", &["127.0.0.1"]);
    let registered = client_ca.issue(dir, "registered", "deskbridge-gateway", &[]);
    let other = client_ca.issue(dir, "other", "deskbridge-gateway", &[]);
    let mut cfg = config(&dir.join("data"));
    cfg.tls = Some(serving::tls::TlsFiles {
        cert: server.cert,
        key: server.key,
        client_ca: Some(client_ca.write(dir, "client-ca")),
        // Customers' browsers show no certificate; tls clients must.
        client_auth: serving::tls::ClientAuth::Request,
    });
    cfg.tls_clients = vec![backend::tls_clients::TlsClient {
        client_id: "deskbridge-gateway".into(),
        thumbprint: backend::tls_clients::thumbprint(&registered.der),
        scopes: "profile:read".into(),
    }];
    let b = TestBackend::start(cfg).await;
    for (who, shown) in [("another certificate", Some(&other)), ("no certificate", None)] {
        let r = https_client(&server_ca, shown)
            .post(b.url("/access_token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "deskbridge-gateway"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{who}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{who}");
    }
    let r = https_client(&server_ca, Some(&registered))
        .post(b.url("/access_token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "deskbridge-gateway"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.stop().await;
}

/// The leaf certificate a new TLS connection to `addr` is shown, and the
/// connection (kept open, for keep-alive requests).
async fn connect(addr: &str, ca: &Ca) -> (CertificateDer<'static>, tokio_rustls::client::TlsStream<TcpStream>) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca, None)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    (leaf, tls)
}

/// `GET /healthz` on an open keep-alive connection; its status.
async fn healthz_on(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    // Read the head, then the body by its Content-Length.
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    status_line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_gateway_serves_https_and_reloads_its_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new("Platform CA");
    let first = ca.issue(dir, "first", "gateway-1", &["127.0.0.1"]);
    let (cert, key) = (dir.join("gateway.pem"), dir.join("gateway.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\ndata_dir = \"{}\"\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("data").display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = deskbridge()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("DESKBRIDGE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let child = crate::gateway_cli::Reaped(child);
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let addr = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();

    // HTTPS, with the first certificate; a plain HTTP request gets nothing.
    let r = https_client(&ca, None)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(client().get(format!("http://{addr}/healthz")).send().await.is_err());
    let (shown, mut kept) = connect(&addr, &ca).await;
    assert_eq!(shown, first.der);
    assert_eq!(healthz_on(&mut kept).await, 200);

    // New files, then SIGHUP: new connections get the new certificate; the
    // open one goes on.
    let second = ca.issue(dir, "second", "gateway-2", &["127.0.0.1"]);
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let hangup = |pid: u32| {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    hangup(child.0.id());
    let mut reloaded = false;
    for _ in 0..50 {
        if connect(&addr, &ca).await.0 == second.der {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "a new connection still sees the first certificate");
    assert_eq!(healthz_on(&mut kept).await, 200, "the open connection was dropped");

    // A broken file is refused: the second certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    hangup(child.0.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connect(&addr, &ca).await.0, second.der);
    assert_eq!(healthz_on(&mut kept).await, 200);
    drop(child);
}

/// What an in-test egress proxy saw: `CONNECT host:port`, or the request
/// line of a request in absolute form.
type Seen = Arc<Mutex<Vec<String>>>;

/// A tiny forward proxy: CONNECT opens a tunnel; any other request (absolute
/// form) is forwarded once, as origin form, with `Connection: close`.
async fn egress_proxy() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if client.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let end = line == "\r\n";
                    head.push(line);
                    if end {
                        break;
                    }
                }
                let request_line = head[0].trim_end().to_string();
                log.lock().unwrap().push(request_line.clone());
                let mut parts = request_line.split(' ');
                let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
                if method == "CONNECT" {
                    let mut upstream = TcpStream::connect(target).await.unwrap();
                    client
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
                let rest = target.strip_prefix("http://").unwrap();
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let mut upstream = TcpStream::connect(authority).await.unwrap();
                let mut out = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
                for line in &head[1..] {
                    if !line.to_ascii_lowercase().starts_with("connection:") {
                        out.push_str(line);
                    }
                }
                upstream.write_all(out.as_bytes()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn token_requests_and_actions_go_through_the_egress_proxy_by_connect() {
    let w = mtls_world().await;
    let (proxy, seen) = egress_proxy().await;
    let gateway = TestGateway::start(&w.gateway_toml(&format!("proxy = \"{proxy}\""))).await;
    let jwt = w.customer_jwt().await;
    let body = agent_fetches_profile(&gateway, &jwt).await;
    assert_eq!(body["data"]["name"], "Alice Martin");
    let authority = w.backend.url.strip_prefix("https://").unwrap();
    let seen = seen.lock().unwrap().clone();
    // The JWKS and the token (reqwest) and the action (upstream) each
    // opened a tunnel; nothing went in the clear.
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|l| l == &format!("CONNECT {authority} HTTP/1.1")),
        "{seen:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn plain_http_calls_go_through_the_proxy_in_absolute_form_unless_no_proxy() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = TestBackend::start(config(bdir.path())).await;
    let seed = b.seed().await;
    let (proxy, seen) = egress_proxy().await;
    let with_proxy = |extra: &str| {
        gateway_toml(gdir.path(), &b, &seed).replace(
            "[connections.system_auth]",
            &format!("proxy = \"{proxy}\"\n{extra}\n[connections.system_auth]"),
        )
    };
    let gateway = TestGateway::start(&with_proxy("")).await;
    let jwt = crate::support::login(&b, &seed.users[0].username, &seed.users[0].password).await;
    let body = agent_fetches_profile(&gateway, &jwt).await;
    assert_eq!(body["data"]["name"], "Alice Martin");
    let lines = seen.lock().unwrap().clone();
    let base = &b.url;
    for path in ["/.well-known/jwks.json", "/access_token", "/getprofile"] {
        assert!(
            lines.iter().any(|l| l.ends_with(&format!(" {base}{path} HTTP/1.1"))),
            "{path} not proxied: {lines:?}"
        );
    }
    gateway.stop().await;

    // `no_proxy` names the host: the proxy sees nothing more.
    seen.lock().unwrap().clear();
    let toml = with_proxy("no_proxy = [\"127.0.0.1\"]").replace(
        &format!("data_dir = \"{}\"", gdir.path().display()),
        &format!("data_dir = \"{}\"", gdir.path().join("second").display()),
    );
    let gateway = TestGateway::start(&toml).await;
    let body = agent_fetches_profile(&gateway, &jwt).await;
    assert_eq!(body["data"]["name"], "Alice Martin");
    assert!(seen.lock().unwrap().is_empty(), "{:?}", seen.lock().unwrap());
    gateway.stop().await;
}

#[test]
fn config_check_refuses_unreadable_or_invalid_pem_without_printing_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key_text = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.join("bad.key"), key_text).unwrap();
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    let toml = format!(
        r#"
[server]
data_dir = "{data}"
[server.tls]
cert = "{dir}/missing.pem"
key = "{dir}/bad.key"
[[connections]]
name = "bank"
base_url = "https://bank.example"
proxy = "https://proxy:3128"
[connections.tls]
ca_file = "{dir}/bad.pem"
client_cert = "{dir}/bad.pem"
client_key = "{dir}/bad.key"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "https://bank.example/token"
client_id = "deskbridge"
auth_method = "tls_client_auth"
[connections.identity]
mode = "opaque"
[[connections]]
name = "nocert"
base_url = "https://bank.example"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "https://bank.example/token"
client_id = "deskbridge"
auth_method = "tls_client_auth"
[connections.identity]
mode = "opaque"
"#,
        data = dir.join("data").display(),
        dir = dir.display()
    );
    let file = dir.join("gateway.toml");
    std::fs::write(&file, toml).unwrap();
    let out = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("server.tls") && text.contains("missing.pem"), "{text}");
    assert!(
        text.contains("connections[0].tls") && text.contains("bad.pem"),
        "{text}"
    );
    assert!(text.contains("connections[0].proxy"), "{text}");
    assert!(
        text.contains("connections[1].system_auth.auth_method") && text.contains("client_cert"),
        "{text}"
    );
    assert!(!text.contains("TOPSECRET"), "key material printed: {text}");
}

/// `deskbridge check` shows a certificate the company never issued: the
/// backend refuses it at the handshake; a company that asks for a client
/// certificate but takes any fails the rule.
#[tokio::test]
async fn check_refuses_a_company_that_takes_any_client_certificate() {
    let check = |toml: String, dir: PathBuf, users: String| async move {
        let file = dir.join("check.toml");
        std::fs::write(&file, toml).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deskbridge"))
            .args(["check", "--format", "json", "--config"])
            .arg(&file)
            .env("DESKBRIDGE_TEST_USERS", users)
            .output()
            .await
            .unwrap();
        let rules: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        let rule = rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "system.foreign_certificate_refused")
            .cloned()
            .unwrap_or_else(|| panic!("{rules}"));
        (
            rule["status"].as_str().unwrap().to_string(),
            rule["evidence"].to_string(),
        )
    };
    let users = |seed: &backend::admin::DemoSeed| {
        seed.users
            .iter()
            .take(2)
            .map(|u| format!("{}:{}", u.username, u.password))
            .collect::<Vec<_>>()
            .join(",")
    };

    // The backend takes only certificates of its client CA: refused at the handshake.
    let w = mtls_world().await;
    let (status, evidence) = check(w.gateway_toml(""), w.dir.clone(), users(&w.seed)).await;
    assert_eq!(status, "pass", "{evidence}");
    assert!(evidence.contains("TLS handshake"), "{evidence}");

    // A backend that requests a certificate, trusts no CA for it and
    // checks no thumbprint: the forged certificate gets the profile.
    let w = mtls_world_with(|c| {
        let tls = c.tls.as_mut().unwrap();
        tls.client_ca = None;
        tls.client_auth = serving::tls::ClientAuth::Request;
        c.tls_clients.clear();
    })
    .await;
    let toml = gateway_toml(&w.dir.join("gateway-data"), &w.backend, &w.seed).replace(
        "[connections.system_auth]",
        &format!(
            "[connections.tls]\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[connections.system_auth]",
            w.server_ca.write(&w.dir, "server-ca").display(),
            w.gateway_cert.cert.display(),
            w.gateway_cert.key.display()
        ),
    );
    let (status, evidence) = check(toml, w.dir.clone(), users(&w.seed)).await;
    assert_eq!(status, "fail", "{evidence}");
    assert!(evidence.contains("accepted"), "{evidence}");
}
