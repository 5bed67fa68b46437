//! The platform's own credential at a company, in its other forms: a token
//! endpoint found from the issuer's metadata.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::gateway_flow::{World, expect_problem, world_configured};
use crate::support::deskbridge;

/// Serves an authorization server's metadata (RFC 8414) on `listener`,
/// naming `issuer` and `token_endpoint`.
fn serve_metadata(listener: std::net::TcpListener, issuer: String, token_endpoint: String) {
    let document = json!({
        "issuer": issuer,
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"],
        "grant_types_supported": ["client_credentials"],
    });
    let app = axum::Router::new().route(
        "/.well-known/oauth-authorization-server",
        axum::routing::get(move || async move { axum::Json(document) }),
    );
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

/// The test world, its connection configured with `issuer` where
/// `token_url` was; returns the token URL it had.
async fn world_with_issuer(issuer: &str) -> (World, String) {
    let token_url = Arc::new(Mutex::new(String::new()));
    let kept = token_url.clone();
    let issuer = issuer.to_string();
    let w = world_configured(
        |_| {},
        false,
        move |toml| {
            let start = toml.find("token_url = \"").unwrap();
            let end = start + toml[start..].find('\n').unwrap();
            let line = &toml[start..end];
            *kept.lock().unwrap() = line
                .trim_start_matches("token_url = \"")
                .trim_end_matches('"')
                .to_string();
            toml.replace(line, &format!("issuer = \"{issuer}\""))
        },
    )
    .await;
    let url = token_url.lock().unwrap().clone();
    (w, url)
}

// Two threads: the metadata server answers while `config check` runs as a child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_is_found_from_the_issuer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let (w, token_url) = world_with_issuer(&issuer).await;
    serve_metadata(listener, issuer.clone(), token_url.clone());
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = w.action(conversation, "getprofile").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // `config check --connect` says where the endpoint is, and whether the
    // issuer takes the configured method (the world's is client_secret_basic).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let config = |method: &str| {
        format!(
            r#"
[server]
data_dir = "{data}"
[[connections]]
name = "acme"
base_url = "{issuer}"
[connections.system_auth]
kind = "oauth2_client_credentials"
issuer = "{issuer}"
client_id = "deskbridge"
client_secret = "s3cret-for-tests"
auth_method = "{method}"
[connections.identity]
mode = "opaque"
"#,
            data = dir.path().display()
        )
    };
    std::fs::write(&file, config("client_secret_post")).unwrap();
    let out = deskbridge()
        .args(["config", "check", "--connect"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains(&format!(
            "connection acme: token endpoint {token_url} (from {issuer}); takes client_secret_post"
        )),
        "{said}"
    );
    std::fs::write(&file, config("client_secret_basic")).unwrap();
    let out = deskbridge()
        .args(["config", "check", "--connect"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("not the configured \"client_secret_basic\""), "{said}");
}

#[tokio::test]
async fn metadata_that_names_another_issuer_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let (w, token_url) = world_with_issuer(&issuer).await;
    // A document that claims to be another server's (RFC 8414 §3.3): an
    // attacker's metadata could point the platform's secret elsewhere.
    serve_metadata(listener, "https://idp.attacker.example".into(), token_url);
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = w.action(conversation, "getprofile").await;
    expect_problem(r, 503, "system_token_unavailable").await;
    assert_eq!(crate::support::tokens_issued(&w.backend).await, 0);
}
