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
    // `config check --connect` of `text`, as the file.
    let connect = |text: String| {
        std::fs::write(&file, text).unwrap();
        deskbridge()
            .args(["config", "check", "--connect"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = connect(config("client_secret_post"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains(&format!(
            "connection acme: token endpoint {token_url} (from {issuer}); takes client_secret_post"
        )),
        "{said}"
    );
    let out = connect(config("client_secret_basic"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("not the configured \"client_secret_basic\""), "{said}");
    // Token exchange, from an issuer that lists grants without it.
    let out = connect(
        config("client_secret_post").replace("kind = \"oauth2_client_credentials\"", "kind = \"token_exchange\""),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("does not list the token exchange grant"), "{said}");
    // An issuer that serves no metadata: both well-known places are named.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let out = connect(config("client_secret_post").replace(&issuer, &nowhere));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("no metadata found") && said.contains("/.well-known/openid-configuration"),
        "{said}"
    );
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

/// A new EC P-256 key pair: the private key as PKCS#8 PEM, the public as SPKI PEM.
fn ec_key_pair() -> (String, String) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    };
    // SubjectPublicKeyInfo of an uncompressed P-256 point: a fixed header, then the point.
    let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.extend_from_slice(pair.public_key().as_ref());
    (
        pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref()),
        pem("PUBLIC KEY", &spki),
    )
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn private_key_jwt_end_to_end_and_a_replayed_assertion_is_refused() {
    let (private_pem, public_pem) = ec_key_pair();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("client.pem");
    std::fs::write(&key_file, &private_pem).unwrap();
    let w = world_configured(|_| {}, false, |toml| {
        // The seed's client is swapped for one that signs: no secret at all.
        let start = toml.find("client_id = \"").unwrap();
        let end = toml[start..].find("scope = ").unwrap() + start;
        toml.replace(
            &toml[start..end],
            &format!(
                "client_id = \"signing-gateway\"\nauth_method = \"private_key_jwt\"\nprivate_key = {{ file = \"{}\" }}\nkey_id = \"gw-1\"\n",
                key_file.display()
            ),
        )
    })
    .await;
    w.backend
        .backend
        .admin()
        .add_key_client("signing-gateway", "profile:read", &public_pem)
        .await
        .unwrap();
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = w.action(conversation, "getprofile").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // An assertion as the gateway signs it, sent twice: one token, then a refusal.
    let signer =
        gateway::assertion::AssertionSigner::new(&private_pem, Some("gw-1".into()), "signing-gateway").unwrap();
    let token_url = w.backend.url("/access_token");
    let assertion = signer
        .sign(backend::Clock::unix_secs(&*w.backend.clock), &token_url)
        .unwrap();
    let send = |assertion: String| {
        crate::support::client()
            .post(&token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
    };
    assert_eq!(send(assertion.clone()).await.unwrap().status(), 200);
    let replay = send(assertion.clone()).await.unwrap();
    assert_eq!(replay.status(), 401);
    let body: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{body}");
    // Another key's signature, and another audience: refused too.
    let (other_private, _) = ec_key_pair();
    let stranger = gateway::assertion::AssertionSigner::new(&other_private, None, "signing-gateway").unwrap();
    let now = backend::Clock::unix_secs(&*w.backend.clock);
    assert_eq!(
        send(stranger.sign(now, &token_url).unwrap()).await.unwrap().status(),
        401
    );
    assert_eq!(
        send(signer.sign(now, "https://elsewhere.example/token").unwrap())
            .await
            .unwrap()
            .status(),
        401
    );
    // An assertion that expired twenty minutes ago (beyond the leeway), never used.
    let stale = signer.sign(now - 1200, &token_url).unwrap();
    let refused: serde_json::Value = send(stale).await.unwrap().json().await.unwrap();
    assert_eq!(refused["error"], "invalid_client", "{refused}");
    // An assertion and a secret together: one method only.
    let both = crate::support::client()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "signing-gateway"),
            ("client_secret", "guess"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", signer.sign(now, &token_url).unwrap().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    // A client secret for a key client gets nothing: it has none.
    let basic = crate::support::client()
        .post(&token_url)
        .basic_auth("signing-gateway", Some("guess"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}
