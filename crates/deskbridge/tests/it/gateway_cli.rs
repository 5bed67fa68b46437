//! `deskbridge serve`, `config check` and `agent add` as an operator runs
//! them, against the reference backend running as a separate server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{APP_KEY, TestBackend, announced_url, client, config, deskbridge, gateway_toml, login};

#[test]
fn config_check_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        r#"
[server.http]
header_read_timeout_secs = 0
write_timeout_secs = 0
max_connections = 0
max_connections_per_address = 0
[[connections]]
name = "acme"
base_url = "not a url"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "http://127.0.0.1:1/access_token"
client_id = "x"
client_secret = { env = "DESKBRIDGE_TEST_SECRET_THAT_IS_NOT_SET" }
[connections.identity]
mode = "jwt"
issuer = ""
claim = ""
[[connections.actions]]
name = "getprofile"
path = "/../admin"
[[connections.actions]]
name = "spaced"
path = "/a b"
"#,
    )
    .unwrap();
    let out = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for path in [
        "server.http.header_read_timeout_secs",
        "server.http.write_timeout_secs",
        "server.http.max_connections",
        "server.http.max_connections_per_address",
        "connections[0].base_url",
        "connections[0].system_auth.client_secret",
        "connections[0].identity.jwks_url",
        "connections[0].identity.issuer",
        "connections[0].identity.audience",
        "connections[0].identity.claim",
        "connections[0].actions[0].path",
        "connections[0].actions[1].path",
    ] {
        assert!(
            stdout.contains(&format!("error: {path}:")),
            "{path} missing in:\n{stdout}"
        );
    }
    std::fs::write(&file, "[server]\nlisten = 5\n").unwrap();
    let out = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("line 2"), "{stderr}");
}

/// The gateway binary serves the whole flow, and at the most verbose log
/// level no credential of any of the three kinds reaches its log.
#[tokio::test]
async fn serve_runs_the_flow_and_keeps_every_credential_out_of_its_logs() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let file = gdir.path().join("gateway.toml");
    std::fs::write(&file, gateway_toml(gdir.path(), &backend, &seed)).unwrap();

    let out = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: connections[0].system_auth.client_secret"),
        "inline secrets are flagged: {stdout}"
    );

    let out = deskbridge()
        .args(["agent", "add", "ana", "--role", "admin", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(agent.starts_with("dbg_"));

    let mut child = deskbridge()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("DESKBRIDGE_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = announced_url(&mut child);

    let alice = &seed.users[0];
    let jwt = login(&backend, &alice.username, &alice.password).await;
    let conversation = open_conversation(
        &url,
        json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}),
    )
    .await;
    let r = act(&url, &conversation, "getprofile", &agent).await;
    assert_eq!(r.status(), 200);
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_string();
    // A failure path too: a wrong app key.
    let r = client()
        .post(format!("{url}/v1/sessions"))
        .header("x-deskbridge-app-key", "wrong")
        .json(&json!({"channel": "web", "connection": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "clean exit on SIGTERM");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("system token fetched"), "trace logging is on: {logs}");
    assert!(!logs.contains('\x1b'), "no colour codes in a log that goes to a pipe");
    let secrets = [
        seed.clients[0].client_secret.as_str(),
        seed.api_keys[0].key.as_str(),
        jwt.as_str(),
        agent.as_str(),
        APP_KEY,
        alice.password.as_str(),
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "a credential reached the log");
    }
    // The request's line: its route pattern and trace, never its path.
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("trace_id={trace}")) && l.contains(" requests: "))
        .unwrap_or_else(|| panic!("no request line with trace {trace}: {logs}"));
    assert!(
        line.contains("route=\"/v1/conversations/{id}/actions/{action}\"") && line.contains("status=200"),
        "{line}"
    );
    assert!(!line.contains(&conversation), "{line}");
    // The audit record was flushed before the process exited.
    let url = format!("sqlite://{}", gdir.path().join("gateway.db").display());
    let store = gateway::store::Store::open(&url).await.unwrap();
    let audit = store.audit(Some("ana"), None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].action.as_str(), audit[0].outcome.as_str()),
        ("getprofile", "ok")
    );
    assert_eq!(audit[0].trace_id.as_deref(), Some(trace.as_str()));
}

/// Opens a session on the gateway at `url` (the test app key) and returns its conversation id.
pub(crate) async fn open_conversation(url: &str, session: Value) -> String {
    let r = client()
        .post(format!("{url}/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&session)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body["conversation_id"].as_str().unwrap().to_string()
}

/// Runs `action` on `conversation` as the agent with token `agent`.
pub(crate) async fn act(url: &str, conversation: &str, action: &str, agent: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/conversations/{conversation}/actions/{action}"))
        .bearer_auth(agent)
        .send()
        .await
        .unwrap()
}

/// Kills a child process when the test ends, however it ends.
pub(crate) struct Reaped(pub(crate) std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `deskbridge serve` with `envs` and returns it with its URL.
pub(crate) fn serve(config: &std::path::Path, envs: &[(&str, &std::path::Path)]) -> (Reaped, String) {
    let mut child = deskbridge()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .envs(envs.iter().copied())
        .env("DESKBRIDGE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = announced_url(&mut child);
    (Reaped(child), url)
}

/// A company API over HTTPS, served by `openssl s_server` (a TLS server
/// nobody here wrote; HTTP/1.0, the body ends when it closes) with a
/// certificate from a CA of the test's own. The gateway trusts it only when
/// the platform's roots include that CA (here through `SSL_CERT_FILE`), and
/// refuses the same server otherwise.
#[tokio::test]
async fn actions_reach_a_company_over_https_and_verify_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path();
    // A CA of the test's own, and the server's certificate from it (a
    // self-signed certificate is a CA, which TLS verification refuses as a
    // server's).
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .args(args)
            .current_dir(www)
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    };
    openssl(&[
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=deskbridge-test-ca",
    ]);
    openssl(&[
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    std::fs::write(www.join("profile.json"), r#"{"name":"Ada","tier":"gold"}"#).unwrap();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            "cert.pem",
            "-key",
            "key.pem",
            "-WWW",
        ])
        .current_dir(www)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.strip_prefix("ACCEPT 127.0.0.1:").map(str::to_string))
        .unwrap();
    let _server = Reaped(server);

    let config = www.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
data_dir = "{data}"
[[connections]]
name = "acme"
base_url = "https://127.0.0.1:{port}"
[connections.system_auth]
kind = "none"
[connections.identity]
mode = "opaque"
[[connections.actions]]
name = "profile"
method = "GET"
path = "/profile.json"
[[channels]]
name = "web"
app_key = "{APP_KEY}"
"#,
            data = www.join("data").display()
        ),
    )
    .unwrap();
    let out = deskbridge()
        .args(["agent", "add", "ana", "--role", "agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let ca = www.join("ca.pem");
    for (trusted, envs) in [(true, vec![("SSL_CERT_FILE", ca.as_path())]), (false, vec![])] {
        let (_gateway, url) = serve(&config, &envs);
        let conversation = open_conversation(
            &url,
            json!({"channel": "web", "connection": "acme",
                "customer_id": "cus_7f3e9c1a5b2d4e8f9a6c1d0b3e7f2a95", "auth": {"token": "t", "expires_in": 600}}),
        )
        .await;
        let r = act(&url, &conversation, "profile", &agent).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if trusted {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"], json!({"name": "Ada", "tier": "gold"}));
        } else {
            assert_eq!(status, 502, "{body}");
            assert_eq!(body["type"], "urn:deskbridge:problem:backend_unreachable");
            assert!(body["detail"].as_str().unwrap().contains("TLS"), "{body}");
        }
    }
}
