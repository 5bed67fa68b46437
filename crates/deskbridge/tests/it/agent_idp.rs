//! The agent API takes the company's identity provider's JWT access tokens
//! (RFC 9068), its keys from a JWKS this test serves on a real socket, with
//! roles from the `groups` claim through `role_map`; the audit names the
//! agent the token names.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backend::Clock;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::gateway_cli::{act, open_conversation};
use crate::gateway_flow::expect_problem;
use crate::support::{TestBackend, TestGateway, client, config, gateway_toml, json as body_json, login, spawn_company};

const AUDIENCE: &str = "https://deskbridge.test/api";

/// A new EC P-256 key: its PKCS#8 DER, its signing key, and its public
/// JWK under `kid`.
pub(crate) fn es256_key(kid: &str) -> (Vec<u8>, EncodingKey, Jwk) {
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.into());
    (pkcs8.as_ref().to_vec(), key, jwk)
}

/// A provider's OpenID discovery document and its JWKS of one key, to
/// which a test adds the endpoints it needs.
pub(crate) fn discovery_routes<S: Clone + Send + Sync + 'static>(metadata: Value, jwk: Jwk) -> axum::Router<S> {
    axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(json!({ "keys": [jwk] })) }),
        )
}

/// An identity provider: its discovery document and JWKS on a real socket,
/// and a key to sign its tokens with.
pub(crate) struct Provider {
    pub issuer: String,
    key: EncodingKey,
}

impl Provider {
    pub(crate) async fn start() -> Self {
        let (_, key, jwk) = es256_key("idp-1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let metadata = json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
        });
        let app = discovery_routes(metadata, jwk);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { issuer, key }
    }

    /// An access token issued at `now` with these claims over the usual ones.
    pub(crate) fn token(&self, now: u64, typ: &str, claims: Value) -> String {
        let mut all = json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": "u-4711", "iat": now, "exp": now + 600,
            "preferred_username": "ana@example.com", "groups": ["staff", "cx-agents"],
        });
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("idp-1".into());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, &all, &self.key).unwrap()
    }
}

/// `[console.oidc]` for the provider at `issuer`, to append to a gateway's file.
pub(crate) fn oidc_toml(issuer: &str) -> String {
    format!(
        r#"
[console.oidc]
issuer = "{issuer}"
client_id = "deskbridge-console"
role_claim = "groups"
role_map = {{ "cx-agents" = "agent", "cx-admins" = "admin" }}
name_claim = "preferred_username"
api_audience = "{AUDIENCE}"
"#
    )
}

#[tokio::test]
async fn the_agent_api_takes_the_providers_access_tokens_and_refuses_the_wrong_ones() {
    let provider = Provider::start().await;
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let toml = gateway_toml(gdir.path(), &backend, &seed) + &oidc_toml(&provider.issuer);
    // One clock for the company, the provider's tokens and the gateway.
    let clock = backend.clock.clone();
    let g = TestGateway::start_with_clock(&toml, clock.clone()).await;
    let now = clock.unix_secs();
    let get = |path: &str, token: &str| client().get(g.url(path)).bearer_auth(token).send();

    // A valid access token: in, as the agent its claim names.
    let token = provider.token(now, "at+jwt", json!({}));
    assert_eq!(get("/v1/conversations", &token).await.unwrap().status(), 200);
    // Its role is the one its groups map to: an agent, not an admin.
    expect_problem(get("/v1/audit", &token).await.unwrap(), 403, "forbidden").await;
    let admin = provider.token(
        now,
        "at+jwt",
        json!({"preferred_username": "olga", "groups": "cx-admins"}),
    );
    assert_eq!(get("/v1/audit", &admin).await.unwrap().status(), 200);

    // The audit names the agent.
    let alice = &seed.users[0];
    let jwt = login(&backend, &alice.username, &alice.password).await;
    let conversation = open_conversation(
        &g.url,
        json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}),
    )
    .await;
    let r = act(&g.url, &conversation, "getprofile", &token).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    g.gateway.flush_audit().await;
    let audit = body_json(get("/v1/audit", &admin).await.unwrap()).await;
    assert_eq!(audit["records"][0]["agent"], "ana@example.com", "{audit}");

    // Refusals, each with a body that says why.
    let wrong_issuer = provider.token(now, "at+jwt", json!({"iss": "https://other.test"}));
    let body = expect_problem(
        get("/v1/conversations", &wrong_issuer).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("not valid"), "{body}");
    let wrong_audience = provider.token(now, "at+jwt", json!({"aud": "deskbridge-console"}));
    expect_problem(
        get("/v1/conversations", &wrong_audience).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let id_token_typ = provider.token(now, "id+jwt", json!({}));
    expect_problem(
        get("/v1/conversations", &id_token_typ).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let odd_name = provider.token(now, "at+jwt", json!({"preferred_username": "ana\nadmin ok"}));
    expect_problem(get("/v1/conversations", &odd_name).await.unwrap(), 401, "unauthorized").await;
    let unmapped = provider.token(now, "at+jwt", json!({"groups": ["staff", "sales"]}));
    let body = expect_problem(get("/v1/conversations", &unmapped).await.unwrap(), 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("role_map"), "{body}");
    let no_groups = provider.token(now, "at+jwt", json!({"groups": null}));
    expect_problem(get("/v1/conversations", &no_groups).await.unwrap(), 403, "forbidden").await;
    // Signed by another key under the same kid: refused.
    let forged = Provider::start()
        .await
        .token(now, "at+jwt", json!({"iss": provider.issuer}));
    expect_problem(get("/v1/conversations", &forged).await.unwrap(), 401, "unauthorized").await;
    // No token value in any answer.
    assert!(!body.to_string().contains(&unmapped));

    // Expired, by the gateway's clock (past the 30 s leeway).
    clock.advance(Duration::from_secs(600 + 31));
    let body = expect_problem(
        get("/v1/conversations", &token).await.unwrap(),
        401,
        "agent_token_expired",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
    // Gateway-issued tokens still work beside the provider's.
    let own = g.gateway.add_agent("bot-1", "bot").await.unwrap();
    assert_eq!(get("/v1/conversations", &own).await.unwrap().status(), 200);
    g.stop().await;
}

#[tokio::test]
async fn a_provider_that_is_down_is_unavailable_not_unauthorized_and_not_hammered() {
    let dir = tempfile::tempdir().unwrap();
    // A provider whose metadata is down, counting what it is asked.
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
    });
    let issuer = spawn_company(app).await;
    let toml = format!("[server]\ndata_dir = \"{}\"\n", dir.path().display()) + &oidc_toml(&issuer);
    let g = TestGateway::start(&toml).await;
    for _ in 0..3 {
        let r = client()
            .get(g.url("/v1/conversations"))
            .bearer_auth("eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIn0.e30.c2ln")
            .send()
            .await
            .unwrap();
        expect_problem(r, 503, "identity_provider_unavailable").await;
    }
    // One discovery (its two well-known URLs), not one per request.
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    g.stop().await;
}

#[test]
fn config_check_names_what_is_wrong_with_console_oidc() {
    let text = r#"
[agents]
roles = ["agent"]
[console.oidc]
issuer = "http://idp.example.com"
client_id = "deskbridge-console"
role_map = { "cx" = "wizard" }
api_audience = "deskbridge-console"
"#;
    assert_config_problems(
        text,
        &[
            "console.oidc.issuer: must be https",
            "console.oidc.role_map.cx: \"wizard\" is not a role",
            "console.oidc.api_audience: must be the agent API's own audience",
        ],
    );
}

/// `config check` of `text` names each problem of `expected` (`key: start
/// of the message`).
pub(crate) fn assert_config_problems(text: &str, expected: &[&str]) {
    let config = gateway::GatewayConfig::parse(text).unwrap_or_else(|p| panic!("{p:?}"));
    let problems: Vec<String> = config
        .check()
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    for expected in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected}: {problems:?}"
        );
    }
}
