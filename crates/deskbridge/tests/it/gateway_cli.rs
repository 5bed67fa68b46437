//! `deskbridge serve`, `config check` and `agent add` as an operator runs
//! them, against the reference backend running as a separate server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{APP_KEY, TestBackend, client, config, gateway_toml, login};

fn deskbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deskbridge"))
}

#[test]
fn config_check_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        r#"
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
[[connections.actions]]
name = "getprofile"
path = "/../admin"
"#,
    )
    .unwrap();
    let out = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for path in [
        "connections[0].base_url",
        "connections[0].system_auth.client_secret",
        "connections[0].identity.jwks_url",
        "connections[0].actions[0].path",
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
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    let alice = &seed.users[0];
    let jwt = login(&backend, &alice.username, &alice.password).await;
    let session: Value = client()
        .post(format!("{url}/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = client()
        .post(format!("{url}/v1/conversations/{conversation}/actions/getprofile"))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
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
    // The audit record was flushed before the process exited.
    let url = format!("sqlite://{}", gdir.path().join("gateway.db").display());
    let store = gateway::store::Store::open(&url).await.unwrap();
    let audit = store.audit(Some("ana"), None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].action.as_str(), audit[0].outcome.as_str()),
        ("getprofile", "ok")
    );
}
