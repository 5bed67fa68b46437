//! The gateway against the reference backend running as a separate server:
//! the whole flow on real sockets, and a misbehaving company server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    APP_KEY, TestBackend, TestGateway, backend_counter, client, config, gateway_toml, json as body_json, login,
    metrics_text, spawn_company, tokens_issued,
};

/// The reference backend, a gateway in process on it, and an agent.
pub(crate) struct World {
    pub(crate) _dirs: (tempfile::TempDir, tempfile::TempDir),
    pub(crate) backend: TestBackend,
    pub(crate) gateway: TestGateway,
    pub(crate) seed: backend::admin::DemoSeed,
    pub(crate) agent: String,
}

/// `one_clock`: the gateway runs on the backend's manual clock, so a test
/// moves time for both (else the gateway is on the wall clock).
async fn world_with(edit: impl FnOnce(&mut backend::BackendConfig), one_clock: bool) -> World {
    world_configured(edit, one_clock, |toml| toml).await
}

/// A world whose gateway configuration is `gateway_toml`'s, edited by `edit_gateway`.
pub(crate) async fn world_configured(
    edit: impl FnOnce(&mut backend::BackendConfig),
    one_clock: bool,
    edit_gateway: impl FnOnce(String) -> String,
) -> World {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = config(bdir.path());
    edit(&mut cfg);
    let backend = TestBackend::start(cfg).await;
    let seed = backend.seed().await;
    let toml = edit_gateway(gateway_toml(gdir.path(), &backend, &seed));
    let gateway = if one_clock {
        TestGateway::start_with_clock(&toml, backend.clock.clone()).await
    } else {
        TestGateway::start(&toml).await
    };
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    World {
        _dirs: (bdir, gdir),
        backend,
        gateway,
        seed,
        agent,
    }
}

async fn world() -> World {
    world_with(|_| {}, false).await
}

impl World {
    pub(crate) async fn open_session(&self, body: Value) -> reqwest::Response {
        client()
            .post(self.gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn authenticate(&self, session: &str, jwt: &str) -> reqwest::Response {
        client()
            .post(self.gateway.url(&format!("/v1/sessions/{session}/authenticate")))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"auth": {"token": jwt}}))
            .send()
            .await
            .unwrap()
    }

    /// `GET path` as the agent, as JSON.
    async fn get(&self, path: &str) -> Value {
        body_json(
            client()
                .get(self.gateway.url(path))
                .bearer_auth(&self.agent)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn action(&self, conversation: &str, action: &str) -> reqwest::Response {
        client()
            .post(
                self.gateway
                    .url(&format!("/v1/conversations/{conversation}/actions/{action}")),
            )
            .bearer_auth(&self.agent)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn customer_session(&self, user: usize, channel: &str) -> (Value, String) {
        let u = &self.seed.users[user];
        let jwt = login(&self.backend, &u.username, &u.password).await;
        let r = self
            .open_session(json!({"channel": channel, "connection": "acme", "auth": {"token": jwt}}))
            .await;
        assert_eq!(r.status(), 201);
        (body_json(r).await, jwt)
    }
}

/// A `POST /v1/sessions` answer's session and conversation ids.
fn ids(session: &Value) -> (&str, &str) {
    (
        session["session_id"].as_str().unwrap(),
        session["conversation_id"].as_str().unwrap(),
    )
}

pub(crate) async fn expect_problem(r: reqwest::Response, status: u16, slug: &str) -> Value {
    let got = r.status().as_u16();
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    let body = body_json(r).await;
    assert_eq!(
        (got, body["type"].as_str()),
        (status, Some(format!("urn:deskbridge:problem:{slug}").as_str())),
        "{body}"
    );
    assert_eq!(content_type, "application/problem+json");
    body
}

/// The test gateway's configuration with identity `opaque`: the channel's customer id.
fn opaque_toml(dir: &std::path::Path, backend: &TestBackend, seed: &backend::admin::DemoSeed) -> String {
    gateway_toml(dir, backend, seed)
        .replace("mode = \"jwt\"", "mode = \"opaque\"")
        .replace(&format!("jwks_url = \"{}/.well-known/jwks.json\"\n", backend.url), "")
}

/// Reads a session's SSE stream until an event of `kind` arrives.
async fn next_event(
    gateway: &TestGateway,
    session: &str,
    kind: &str,
    trigger: impl std::future::Future<Output = ()>,
) -> Value {
    let request = client().get(gateway.url(&format!("/v1/sessions/{session}/events")));
    read_event(request, kind, trigger).await
}

/// Opens an SSE stream, runs `trigger`, and reads until an event of `kind` arrives.
pub(crate) async fn read_event(
    request: reqwest::RequestBuilder,
    kind: &str,
    trigger: impl std::future::Future<Output = ()>,
) -> Value {
    let mut stream = request.send().await.unwrap();
    assert_eq!(stream.status(), 200);
    trigger.await;
    let wanted = format!("event: {kind}\n");
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = stream.chunk().await.unwrap().expect("the stream ended");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(at) = seen.find(&wanted) {
                let data = seen[at..].lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                return serde_json::from_str(data).unwrap();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event; saw {seen:?}"))
}

#[tokio::test]
async fn an_agent_fetches_the_profile_of_a_logged_in_customer() {
    let w = world().await;
    let (session, _) = w.customer_session(0, "web").await;
    assert_eq!(session["authenticated"], true);
    let conversation = session["conversation_id"].as_str().unwrap();

    let r = w.action(conversation, "getprofile").await;
    assert_eq!(r.status(), 200);
    let body = body_json(r).await;
    assert_eq!(body["data"]["name"], "Alice Martin");
    assert_eq!(body["data"]["customer_id"], w.seed.users[0].customer_id.as_str());
    assert_eq!(body["meta"]["status"], 200);
    assert!(body["meta"]["latency_ms"].is_u64());

    // A mapped action returns only the configured fields.
    let body = body_json(w.action(conversation, "summary").await).await;
    assert_eq!(
        body["data"],
        json!({"name": "Alice Martin", "tier": "gold", "first_account": "acc-1001"})
    );

    // The conversation shows the customer, never the token.
    let r = client()
        .get(w.gateway.url(&format!("/v1/conversations/{conversation}")))
        .bearer_auth(&w.agent)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let detail: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(detail["customer_id"], w.seed.users[0].customer_id.as_str());
    assert_eq!(detail["auth_state"], "valid");
    assert!(!text.contains("eyJ"), "no token in a conversation view");

    // Every action is audited with who asked (flushed at shutdown).
    let admin = w.gateway.gateway.add_agent("root", "admin").await.unwrap();
    w.gateway.gateway.flush_audit().await;
    let audit = body_json(
        client()
            .get(w.gateway.url(&format!("/v1/audit?conversation={conversation}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{audit}");
    assert!(
        records
            .iter()
            .all(|r| r["agent"] == "ana" && r["outcome"] == "ok" && r["status"] == 200)
    );
}

#[tokio::test]
async fn an_anonymous_web_chat_and_a_later_mobile_login_join_one_conversation() {
    let w = world().await;
    let r = w.open_session(json!({"channel": "web", "connection": "acme"})).await;
    assert_eq!(r.status(), 201);
    let anonymous = body_json(r).await;
    assert_eq!(anonymous["authenticated"], false);
    let web_session = anonymous["session_id"].as_str().unwrap();

    // Later, the customer logs in on the mobile app.
    let (mobile, jwt) = w.customer_session(1, "ios").await;
    let conversation = mobile["conversation_id"].as_str().unwrap();
    assert_ne!(anonymous["conversation_id"], mobile["conversation_id"]);

    // The web chat logs in too: it moves into the customer's one conversation.
    let r = w.authenticate(web_session, &jwt).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["conversation_id"], conversation);

    let detail = w.get(&format!("/v1/conversations/{conversation}")).await;
    assert_eq!(detail["channels"], json!(["ios", "web"]));
    assert_eq!(detail["sessions"].as_array().unwrap().len(), 2);
    // The anonymous conversation is gone, folded into the customer's.
    let list = w.get("/v1/conversations").await;
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![conversation]);

    // Another login of the same customer, any time later, lands in it too.
    let (again, _) = w.customer_session(1, "web").await;
    assert_eq!(again["conversation_id"], conversation);
    let (other, _) = w.customer_session(2, "web").await;
    assert_ne!(other["conversation_id"], conversation);
}

#[tokio::test]
async fn an_expired_customer_token_asks_the_channel_for_a_fresh_one() {
    let w = world_with(|c| c.customer_token_ttl_secs = 60, false).await;
    let (session, _) = w.customer_session(0, "web").await;
    let (session_id, conversation) = ids(&session);
    assert_eq!(w.action(conversation, "getprofile").await.status(), 200);

    // The company's clock moves past the token's expiry: it refuses the
    // customer's token, the agent is told, and the channel gets an event.
    let event = next_event(&w.gateway, session_id, "authentication_required", async {
        w.backend.clock.advance(Duration::from_secs(61));
        let r = w.action(conversation, "getprofile").await;
        expect_problem(r, 409, "customer_auth_required").await;
    })
    .await;
    assert_eq!(event["conversation_id"], conversation);
    let state = w.get(&format!("/v1/conversations/{conversation}")).await;
    assert_eq!(state["auth_state"], "expired");

    // The page logs the customer in again and hands over the fresh token.
    let alice = &w.seed.users[0];
    let fresh = login(&w.backend, &alice.username, &alice.password).await;
    assert_eq!(w.authenticate(session_id, &fresh).await.status(), 200);
    let r = w.action(conversation, "getprofile").await;
    assert_eq!(r.status(), 200);

    // The list shows each conversation's state: valid again here, none for
    // an anonymous chat, expired where the company refused the token.
    let anonymous = body_json(w.open_session(json!({"channel": "web", "connection": "acme"})).await).await;
    let (other, _) = w.customer_session(1, "ios").await;
    let other = other["conversation_id"].as_str().unwrap();
    w.gateway.gateway.store().mark_token_rejected(other).await.unwrap();
    let list = w.get("/v1/conversations").await;
    let state_of = |id: &str| {
        list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["auth_state"].clone())
    };
    assert_eq!(state_of(conversation), Some(json!("valid")), "{list}");
    assert_eq!(
        state_of(anonymous["conversation_id"].as_str().unwrap()),
        Some(json!("none"))
    );
    assert_eq!(state_of(other), Some(json!("expired")));
}

#[tokio::test]
async fn a_stored_token_that_expires_emits_an_event_without_any_action() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let gateway =
        TestGateway::start_with_clock(&opaque_toml(gdir.path(), &backend, &seed), backend.clock.clone()).await;
    let customer = &seed.users[0].customer_id;
    let r = client()
        .post(gateway.url("/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&json!({"channel": "ios", "connection": "acme", "customer_id": customer, "auth": {"token": "opaque-token", "expires_in": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let session = body_json(r).await;
    // The sweeper sees the token expire as soon as the clock passes it.
    let event = next_event(
        &gateway,
        session["session_id"].as_str().unwrap(),
        "authentication_required",
        async { backend.clock.advance(Duration::from_secs(2)) },
    )
    .await;
    assert_eq!(event["conversation_id"], session["conversation_id"]);
}

#[tokio::test]
async fn concurrent_actions_on_a_cold_cache_fetch_one_token() {
    let w = world().await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap().to_string();
    assert_eq!(tokens_issued(&w.backend).await, 0);
    let calls = (0..200).map(|_| w.action(&conversation, "getprofile"));
    let responses = futures_util::future::join_all(calls).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(
        tokens_issued(&w.backend).await,
        1,
        "exactly one token for 200 concurrent calls"
    );
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_so_agents_never_see_a_401() {
    // The backend and the gateway share one manual clock: ten seconds pass
    // in steps of 50 ms, in no time.
    let w = world_with(|c| c.access_token_ttl_secs = 3, true).await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap().to_string();
    let mut calls = 0;
    for _ in 0..200 {
        let r = w.action(&conversation, "getprofile").await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        calls += 1;
        w.backend.clock.advance(Duration::from_millis(50));
    }
    let issued = tokens_issued(&w.backend).await;
    assert!(calls > 100, "{calls}");
    assert!(
        (4..=8).contains(&issued),
        "renewed about every 2.4 s, not per call: {issued}"
    );
    let metrics = metrics_text(w.backend.url("/metrics")).await;
    assert!(
        !metrics.contains("outcome=\"invalid_token\""),
        "no call ever reached the backend with a stale token"
    );
}

#[tokio::test]
async fn a_revoked_system_token_is_purged_and_the_call_retried_once() {
    let w = world().await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();
    assert_eq!(w.action(conversation, "getprofile").await.status(), 200);
    // Revocation cuts off tokens issued before now; the test clock must move.
    w.backend.clock.advance(Duration::from_secs(1));
    w.backend
        .backend
        .admin()
        .revoke_client_tokens(&w.seed.clients[0].client_id)
        .await
        .unwrap();
    let r = w.action(conversation, "getprofile").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(tokens_issued(&w.backend).await, 2);
    let metrics = metrics_text(w.backend.url("/metrics")).await;
    assert!(
        metrics.contains("deskbridge_profile_requests_total{outcome=\"invalid_token\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn channel_intake_checks_app_key_origin_identity_and_opacity() {
    let w = world().await;
    let alice = &w.seed.users[0];
    let jwt = login(&w.backend, &alice.username, &alice.password).await;
    let post = |key: &'static str, origin: Option<&'static str>, body: Value| {
        let mut r = client()
            .post(w.gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", key)
            .json(&body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let body = json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}});
    expect_problem(
        post("wrong-key", None, body.clone()).await.unwrap(),
        401,
        "invalid_app_key",
    )
    .await;
    expect_problem(
        post(APP_KEY, Some("https://evil.example"), body.clone()).await.unwrap(),
        403,
        "origin_not_allowed",
    )
    .await;
    // A second Origin, or one that is not text, does not slip past.
    for origins in [
        vec![b"https://shop.example.com".to_vec(), b"https://evil.example".to_vec()],
        vec![b"https://\xffevil.example".to_vec()],
    ] {
        let mut r = client()
            .post(w.gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&body);
        for origin in origins {
            r = r.header("origin", reqwest::header::HeaderValue::from_bytes(&origin).unwrap());
        }
        expect_problem(r.send().await.unwrap(), 403, "origin_not_allowed").await;
    }
    let allowed = post(APP_KEY, Some("https://shop.example.com"), body.clone())
        .await
        .unwrap();
    assert_eq!(allowed.status(), 201);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    // Authenticating: the session, then the app key, and only then the body.
    let session = body_json(allowed).await["session_id"].as_str().unwrap().to_string();
    for (id, key, status, slug) in [
        ("ses_nope", APP_KEY, 404, "unknown_session"),
        (session.as_str(), "wrong-key", 401, "invalid_app_key"),
        (session.as_str(), APP_KEY, 400, "invalid_request"),
    ] {
        let r = client()
            .post(w.gateway.url(&format!("/v1/sessions/{id}/authenticate")))
            .header("x-deskbridge-app-key", key)
            .json(&json!({"unexpected": 1}))
            .send()
            .await
            .unwrap();
        expect_problem(r, status, slug).await;
    }
    // A browser's preflight from an allowed origin may send the app key; others get no CORS grant.
    for (origin, granted) in [("https://shop.example.com", true), ("https://evil.example", false)] {
        let r = client()
            .request(reqwest::Method::OPTIONS, w.gateway.url("/v1/sessions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-deskbridge-app-key")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("access-control-allow-origin").is_some(),
            granted,
            "{origin}"
        );
        if granted {
            let headers = r.headers()["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(headers.contains("x-deskbridge-app-key"), "{headers}");
        }
    }
    let mismatch = json!({"channel": "web", "connection": "acme", "customer_id": w.seed.users[1].customer_id, "auth": {"token": jwt}});
    expect_problem(post(APP_KEY, None, mismatch).await.unwrap(), 401, "identity_mismatch").await;
    let forged = json!({"channel": "web", "connection": "acme", "auth": {"token": format!("{jwt}x")}});
    expect_problem(
        post(APP_KEY, None, forged).await.unwrap(),
        401,
        "invalid_customer_token",
    )
    .await;
    let unknown = json!({"channel": "web", "connection": "nope"});
    expect_problem(post(APP_KEY, None, unknown).await.unwrap(), 404, "unknown_connection").await;
    let r = client()
        .post(w.gateway.url("/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(r, 400, "invalid_request").await;

    // An opaque connection refuses identifiers that carry PII.
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let toml = gateway_toml(gdir.path(), &backend, &seed).replace("mode = \"jwt\"", "mode = \"opaque\"");
    let opaque = TestGateway::start(&toml).await;
    for (id, status) in [
        ("jane.doe@example.com", 422),
        ("4111111111111111", 422),
        ("short", 422),
        (seed.users[0].customer_id.as_str(), 201),
    ] {
        let r = client()
            .post(opaque.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"channel": "web", "connection": "acme", "customer_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{id}");
    }
    // An absurd expires_in means "far off", not an instant in the past.
    let agent = opaque.gateway.add_agent("ana", "agent").await.unwrap();
    let r = client()
        .post(opaque.url("/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(
            &json!({"channel": "web", "connection": "acme", "customer_id": seed.users[0].customer_id,
                      "auth": {"token": "t", "expires_in": u64::MAX}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let conversation = body_json(r).await["conversation_id"].as_str().unwrap().to_string();
    let view = body_json(
        client()
            .get(opaque.url(&format!("/v1/conversations/{conversation}")))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(view["auth_state"], "valid", "{view}");
}

#[tokio::test]
async fn the_agent_api_requires_agents_and_admin_endpoints_require_admins() {
    let w = world().await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = client().get(w.gateway.url("/v1/conversations")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"deskbridge\"");
    expect_problem(r, 401, "unauthorized").await;
    let r = client()
        .get(w.gateway.url("/v1/conversations"))
        .bearer_auth("dbg_wrong")
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "unauthorized").await;
    for path in ["/v1/connections", "/v1/audit"] {
        let r = client()
            .get(w.gateway.url(path))
            .bearer_auth(&w.agent)
            .send()
            .await
            .unwrap();
        expect_problem(r, 403, "forbidden").await;
    }
    expect_problem(w.action(conversation, "deleteaccount").await, 404, "unknown_action").await;
    expect_problem(w.action("cnv_nope", "getprofile").await, 404, "not_found").await;
    let r = client()
        .get(w.gateway.url("/v1/conversations?limit=many"))
        .bearer_auth(&w.agent)
        .send()
        .await
        .unwrap();
    expect_problem(r, 400, "invalid_request").await;

    let admin = w.gateway.gateway.add_agent("root", "admin").await.unwrap();
    let r = client()
        .get(w.gateway.url("/v1/connections"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"acme\""));
    for secret in [&w.seed.clients[0].client_secret, &w.seed.api_keys[0].key] {
        assert!(!text.contains(secret.as_str()), "no secret in the connection list");
    }
    let probe = body_json(
        client()
            .post(w.gateway.url("/v1/connections/acme/probe"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(probe["ok"], true, "{probe}");
    assert_eq!(probe["steps"][0]["step"], "system_token");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            client().get(w.gateway.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let ready = crate::support::json(client().get(w.gateway.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(ready, serde_json::json!({"status": "ready", "cluster": "off"}));

    // Every problem the gateway answers with is one it lists, with words
    // for people: a user interface needs no copy of its own.
    let listed = crate::support::json(client().get(w.gateway.url("/v1/problem-types")).send().await.unwrap()).await;
    let types: Vec<&str> = listed["problem_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    let answered = client().get(w.gateway.url("/v1/no-such-thing")).send().await.unwrap();
    let problem = crate::support::json(answered).await;
    assert!(
        types.contains(&problem["type"].as_str().unwrap()),
        "{problem} in {types:?}"
    );
    let auth_required = listed["problem_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "customer_auth_required")
        .unwrap();
    assert_eq!(auth_required["hint"], "The customer needs to sign in again.");
}

/// A company server with one fault per path, and a port that resets every connection.
async fn broken_company() -> (String, String, Arc<AtomicUsize>) {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        )
        .route(
            "/fails",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"boom\"}") }),
        )
        .route(
            "/huge",
            // Valid JSON, one byte over the 4 MiB an action reads.
            post(|| async { format!("\"{}\"", "x".repeat(4 * 1024 * 1024 - 1)) }),
        )
        .route(
            "/garbage",
            post(|| async { ([("content-type", "application/json")], "{not json") }),
        )
        .route(
            "/chatty",
            // An error "code" that is free text: a forged log line.
            post(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    "{\"error\":\"bad\\nINFO gateway: forged line\"}",
                )
            }),
        )
        .route(
            "/echo_token",
            // A token endpoint that echoes the Basic credential it was sent
            // as its error "code".
            post(|headers: axum::http::HeaderMap| async move {
                let sent = headers["authorization"].to_str().unwrap().trim_start_matches("Basic ");
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({ "error": sent })),
                )
            }),
        )
        .route(
            "/customer401",
            post(|| async {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "JWT realm=\"customer\"")],
                    "{\"error\":\"customer_token_expired\"}",
                )
            }),
        );
    let url = spawn_company(app).await;
    let reset = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_url = format!("http://{}", reset.local_addr().unwrap());
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    tokio::spawn(async move {
        loop {
            if let Ok((socket, _)) = reset.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                // Linger 0 makes the close an RST: a reset, not a clean close.
                #[allow(deprecated)]
                let _ = socket.set_linger(Some(Duration::ZERO));
                drop(socket);
            }
        }
    });
    (url, reset_url, resets)
}

#[tokio::test]
async fn a_misbehaving_company_server_gets_documented_problems_and_no_panic() {
    let (url, reset_url, resets) = broken_company().await;
    let gdir = tempfile::tempdir().unwrap();
    let actions: String = ["slow", "fails", "huge", "garbage", "chatty", "customer401"]
        .iter()
        .map(|a| format!("[[connections.actions]]\nname = \"{a}\"\npath = \"/{a}\"\n"))
        .collect();
    let toml = format!(
        r#"
[server]
data_dir = "{data}"
[[connections]]
name = "broken"
base_url = "{url}"
timeout_ms = 300
[connections.system_auth]
kind = "static_bearer"
token = "static-token-for-tests"
[connections.identity]
mode = "opaque"
[connections.breaker]
failure_threshold = 4
open_secs = 60
{actions}
[[connections]]
name = "reset"
base_url = "{reset_url}"
[connections.system_auth]
kind = "none"
[connections.identity]
mode = "opaque"
[[connections.actions]]
name = "any"
path = "/any"
[[connections.actions]]
name = "anyget"
method = "GET"
path = "/any"
[[connections]]
name = "tokenless"
base_url = "{url}"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "{reset_url}/access_token"
client_id = "deskbridge"
client_secret = "client-secret-for-tests"
[connections.identity]
mode = "opaque"
[[connections.actions]]
name = "fails"
path = "/fails"
[[connections]]
name = "echoing"
base_url = "{url}"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "{url}/echo_token"
client_id = "deskbridge"
client_secret = "client-secret-for-tests"
[connections.identity]
mode = "opaque"
[[connections.actions]]
name = "fails"
path = "/fails"
[[channels]]
name = "web"
app_key = "{APP_KEY}"
"#,
        data = gdir.path().display()
    );
    let gateway = TestGateway::start(&toml).await;
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    let open = |connection: &'static str| {
        client()
            .post(gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"channel": "web", "connection": connection, "customer_id": "cus_7f3e9c1a5b2d4e8f9a6c1d0b3e7f2a95", "auth": {"token": "t", "expires_in": 600}}))
            .send()
    };
    let conversation = body_json(open("broken").await.unwrap()).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let act = |action: &'static str, conversation: String| {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/{action}")))
            .bearer_auth(&agent)
            .send()
    };
    let body = expect_problem(act("huge", conversation.clone()).await.unwrap(), 502, "backend_error").await;
    assert_eq!(body["backend_status"], 200);
    assert!(
        body["detail"].as_str().unwrap().contains("more than 4194304 bytes"),
        "{body}"
    );
    // A refusal's error code is repeated only when it is a plain word.
    let body = expect_problem(act("chatty", conversation.clone()).await.unwrap(), 502, "backend_error").await;
    assert_eq!(body["backend_status"], 400);
    assert!(body.get("backend_error").is_none(), "{body}");
    // (The company's answer below resets the breaker's count.)
    expect_problem(
        act("customer401", conversation.clone()).await.unwrap(),
        409,
        "customer_auth_required",
    )
    .await;
    // The customer's token is now marked rejected; hand over a fresh one.
    let conversation = body_json(open("broken").await.unwrap()).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    expect_problem(act("slow", conversation.clone()).await.unwrap(), 504, "backend_timeout").await;
    let body = expect_problem(act("fails", conversation.clone()).await.unwrap(), 502, "backend_error").await;
    assert_eq!(
        (&body["backend_status"], &body["backend_error"]),
        (&json!(500), &json!("boom"))
    );
    let body = expect_problem(
        act("garbage", conversation.clone()).await.unwrap(),
        502,
        "backend_error",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"), "{body}");
    // Four failures in a row: the breaker opens and calls fail fast.
    expect_problem(act("fails", conversation.clone()).await.unwrap(), 502, "backend_error").await;
    expect_problem(act("fails", conversation.clone()).await.unwrap(), 503, "circuit_open").await;

    let reset_conversation = body_json(open("reset").await.unwrap()).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    expect_problem(
        act("any", reset_conversation.clone()).await.unwrap(),
        502,
        "backend_unreachable",
    )
    .await;
    // A GET is retried once (safe), a POST never: the reset server saw 3 connections.
    expect_problem(
        act("anyget", reset_conversation).await.unwrap(),
        502,
        "backend_unreachable",
    )
    .await;
    assert_eq!(resets.load(Ordering::SeqCst), 3);

    // A token endpoint that is down: 503 with the time to retry, and the
    // backoff keeps the next call from trying it again at once (one more
    // connection, not two).
    let tokenless = body_json(open("tokenless").await.unwrap()).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let body = expect_problem(
            act("fails", tokenless.clone()).await.unwrap(),
            503,
            "system_token_unavailable",
        )
        .await;
        assert!(
            !body.to_string().contains("client-secret-for-tests"),
            "no secret in a problem: {body}"
        );
    }
    assert_eq!(resets.load(Ordering::SeqCst), 4);

    // A token endpoint that echoes the credentials it was sent as its error
    // code: the problem names no code, and holds neither the credential
    // nor the secret.
    let echoing = body_json(open("echoing").await.unwrap()).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = expect_problem(act("fails", echoing).await.unwrap(), 502, "token_endpoint_error").await;
    let basic = gateway::system_token::basic_credentials("deskbridge", "client-secret-for-tests");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("401: an unregistered error code"),
        "{body}"
    );
    assert!(!body.to_string().contains(&basic), "{body}");
    let metrics = metrics_text(gateway.url("/metrics")).await;
    assert!(
        metrics.contains("deskbridge_gateway_breaker_open{connection=\"broken\"} 1"),
        "{metrics}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_gateway_serves_its_openapi_document() {
    let w = world().await;
    let r = client().get(w.gateway.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc = body_json(r).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);

    // Every route the router serves under /v1, with its method.
    let routes = [
        ("post", "/v1/sessions"),
        ("post", "/v1/sessions/{id}/authenticate"),
        ("get", "/v1/sessions/{id}/events"),
        ("get", "/v1/conversations"),
        ("get", "/v1/conversations/{id}"),
        ("post", "/v1/conversations/{id}/actions/{action}"),
        ("get", "/v1/connections"),
        ("post", "/v1/connections/{name}/probe"),
        ("get", "/v1/audit"),
        ("get", "/v1/events"),
        ("get", "/v1/me"),
        ("post", "/v1/conversations/{id}/external-refs"),
        ("post", "/v1/sessions/{id}/external-refs"),
        ("get", "/v1/problem-types"),
        ("post", "/v1/conversations/{id}/actions/{action}/reveal"),
        ("get", "/v1/connections/{name}/actions"),
        ("post", "/v1/sessions/{id}/actions/{action}"),
        ("get", "/v1/channels/{channel}/origin"),
        ("get", "/v1/agent-tokens"),
        // Each configured action has an operation of its own, with its input.
        ("post", "/v1/conversations/{id}/actions/getprofile"),
        ("post", "/v1/conversations/{id}/actions/summary"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let documented: Vec<&String> = paths.keys().filter(|p| p.starts_with("/v1")).collect();
    assert_eq!(documented.len(), routes.len(), "{documented:?}");
    // And the router serves what the document says (no 404 fallback, no 405).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = w.gateway.url(&path.replace(['{', '}'], ""));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = client().request(method.clone(), url).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!(
                status != 405 && !text.contains("no such endpoint"),
                "{method} {path}: {status} {text}"
            );
        }
    }

    let action = &paths["/v1/conversations/{id}/actions/{action}"]["post"];
    for status in ["409", "502"] {
        let response = &action["responses"][status];
        assert!(
            response["content"]["application/problem+json"].is_object(),
            "{status}: {response}"
        );
    }
    assert_eq!(
        action["security"],
        json!([{"agent_token": []}, {"console_session": []}])
    );
    for (method, path) in [
        ("post", "/console/api/login"),
        ("get", "/console/api/me"),
        ("post", "/console/api/logout"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} is not documented");
    }
    assert_eq!(paths["/v1/sessions"]["post"]["security"], json!([{"app_key": []}]));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["agent_token"]["scheme"], "bearer");
    assert_eq!(schemes["app_key"]["name"], "x-deskbridge-app-key");
    assert_eq!(
        (&schemes["console_session"]["in"], &schemes["console_session"]["name"]),
        (&json!("cookie"), &json!("deskbridge_console"))
    );
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail"] {
        assert!(problem[field].is_object(), "Problem.{field}: {problem}");
    }
}

#[tokio::test]
async fn shutdown_ends_open_event_streams_instead_of_hanging() {
    let w = world().await;
    let (session, _) = w.customer_session(0, "web").await;
    let mut stream = client()
        .get(w.gateway.url(&format!(
            "/v1/sessions/{}/events",
            session["session_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let World { gateway, .. } = w;
    tokio::time::timeout(Duration::from_secs(5), gateway.stop())
        .await
        .expect("the gateway stopped although an event stream was open");
    // The stream ended cleanly from the server's side.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok());
}

// The gateway keeps recent conversations' action context (connection and
// sealed customer token) in memory. Every change must reach what actions
// see, at once.

/// Calls the company's profile API has answered, whatever the outcome.
async fn profile_calls(b: &TestBackend) -> u64 {
    backend_counter(b, "deskbridge_profile_requests_total").await
}

#[tokio::test]
async fn a_refused_customer_token_is_not_sent_again_and_a_fresh_one_works_at_once() {
    let w = world_with(|c| c.customer_token_ttl_secs = 60, false).await;
    let (session, _) = w.customer_session(0, "web").await;
    let (session_id, conversation) = ids(&session);
    for _ in 0..2 {
        assert_eq!(w.action(conversation, "getprofile").await.status(), 200);
    }
    w.backend.clock.advance(Duration::from_secs(61));
    let before = profile_calls(&w.backend).await;
    expect_problem(
        w.action(conversation, "getprofile").await,
        409,
        "customer_auth_required",
    )
    .await;
    assert_eq!(profile_calls(&w.backend).await, before + 1);
    // The refused token is not sent again: answered without calling the company.
    expect_problem(
        w.action(conversation, "getprofile").await,
        409,
        "customer_auth_required",
    )
    .await;
    assert_eq!(profile_calls(&w.backend).await, before + 1);

    let alice = &w.seed.users[0];
    let fresh = login(&w.backend, &alice.username, &alice.password).await;
    assert_eq!(w.authenticate(session_id, &fresh).await.status(), 200);
    let r = w.action(conversation, "getprofile").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(profile_calls(&w.backend).await, before + 2);
}

#[tokio::test]
async fn a_customer_token_is_not_sent_after_it_expires_and_a_fresh_one_works_at_once() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let gateway =
        TestGateway::start_with_clock(&opaque_toml(gdir.path(), &backend, &seed), backend.clock.clone()).await;
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    let alice = &seed.users[0];
    let jwt = login(&backend, &alice.username, &alice.password).await;
    let handover =
        |expires_in: u64| json!({"customer_id": alice.customer_id, "auth": {"token": jwt, "expires_in": expires_in}});
    let mut open = handover(3);
    open["channel"] = json!("ios");
    open["connection"] = json!("acme");
    let session = body_json(
        client()
            .post(gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&open)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (session_id, conversation) = ids(&session);
    let action = || {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/getprofile")))
            .bearer_auth(&agent)
            .send()
    };
    assert_eq!(action().await.unwrap().status(), 200);
    // The gateway's sweeper wipes the token when it expires and tells the channel.
    next_event(&gateway, session_id, "authentication_required", async {
        backend.clock.advance(Duration::from_secs(4))
    })
    .await;
    let before = profile_calls(&backend).await;
    expect_problem(action().await.unwrap(), 409, "customer_auth_required").await;
    assert_eq!(profile_calls(&backend).await, before, "an expired token is not sent");

    let r = client()
        .post(gateway.url(&format!("/v1/sessions/{session_id}/authenticate")))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&handover(600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = action().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn an_anonymous_conversation_joined_into_a_customer_one_is_gone_and_the_customer_one_acts() {
    let w = world().await;
    async fn anonymous(w: &World) -> (String, String) {
        let r = w.open_session(json!({"channel": "web", "connection": "acme"})).await;
        assert_eq!(r.status(), 201);
        let body = body_json(r).await;
        let ids = (
            body["session_id"].as_str().unwrap().to_string(),
            body["conversation_id"].as_str().unwrap().to_string(),
        );
        // An agent looks before the customer logs in: no token yet.
        expect_problem(w.action(&ids.1, "getprofile").await, 409, "customer_auth_required").await;
        ids
    }

    // Into a conversation that exists, whose context the gateway has seen.
    let (mobile, jwt) = w.customer_session(1, "ios").await;
    let customer = mobile["conversation_id"].as_str().unwrap();
    assert_eq!(w.action(customer, "getprofile").await.status(), 200);
    let (web_session, web_conversation) = anonymous(&w).await;
    let r = w.authenticate(&web_session, &jwt).await;
    assert_eq!(body_json(r).await["conversation_id"], customer);
    expect_problem(w.action(&web_conversation, "getprofile").await, 404, "not_found").await;
    assert_eq!(w.action(customer, "getprofile").await.status(), 200);

    // Into a conversation the login creates.
    let (web_session, web_conversation) = anonymous(&w).await;
    let carol = &w.seed.users[2];
    let jwt = login(&w.backend, &carol.username, &carol.password).await;
    let r = w.authenticate(&web_session, &jwt).await;
    assert_eq!(r.status(), 200);
    let created = body_json(r).await["conversation_id"].as_str().unwrap().to_string();
    assert_ne!(created, web_conversation);
    expect_problem(w.action(&web_conversation, "getprofile").await, 404, "not_found").await;
    let r = w.action(&created, "getprofile").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["data"]["customer_id"], carol.customer_id.as_str());
}

/// A gateway with one connection, `name`, to a company server of the test's
/// own at `url` (no system credential, identity `opaque`; `extra` is TOML for
/// the connection: breaker, actions), an agent, and a conversation whose
/// customer token is valid for 10 minutes.
pub(crate) async fn gateway_for(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    extra: &str,
) -> (TestGateway, String, String) {
    gateway_on(dir, name, url, extra, Arc::new(backend::SystemClock)).await
}

/// As [`gateway_for`], with the gateway's expiry decisions on `clock`.
pub(crate) async fn gateway_on(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    extra: &str,
    clock: Arc<dyn backend::Clock>,
) -> (TestGateway, String, String) {
    let gateway = TestGateway::start_with_clock(
        &format!(
            r#"
[server]
data_dir = "{data}"
[[connections]]
name = "{name}"
base_url = "{url}"
[connections.system_auth]
kind = "none"
[connections.identity]
mode = "opaque"
{extra}
[[channels]]
name = "web"
app_key = "{APP_KEY}"
"#,
            data = dir.display()
        ),
        clock,
    )
    .await;
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    let r = client()
        .post(gateway.url("/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&json!({"channel": "web", "connection": name, "customer_id": "cus_7f3e9c1a5b2d4e8f9a6c1d0b3e7f2a95", "auth": {"token": "t", "expires_in": 600}}))
        .send()
        .await
        .unwrap();
    let conversation = body_json(r).await["conversation_id"].as_str().unwrap().to_string();
    (gateway, agent, conversation)
}

/// After the breaker's open time (1 s at first), one trial call reaches the
/// company while the others still fail fast; a failed trial re-opens it for
/// twice as long, a good one closes it.
#[tokio::test]
async fn a_half_open_breaker_lets_one_trial_call_through() {
    use std::sync::atomic::AtomicBool;
    let (calls, healthy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let app = {
        let (calls, healthy) = (calls.clone(), healthy.clone());
        axum::Router::new().route(
            "/flaky",
            axum::routing::post(move || {
                let (calls, healthy) = (calls.clone(), healthy.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that the concurrent calls overlap the trial.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if healthy.load(Ordering::SeqCst) {
                        (axum::http::StatusCode::OK, "{\"ok\":true}")
                    } else {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"boom\"}")
                    }
                }
            }),
        )
    };
    let url = spawn_company(app).await;
    let gdir = tempfile::tempdir().unwrap();
    let breaker = "[connections.breaker]\nfailure_threshold = 2\nopen_secs = 30\n[[connections.actions]]\nname = \"flaky\"\npath = \"/flaky\"\n";
    let clock = Arc::new(backend::ManualClock::new(backend::Clock::now(&backend::SystemClock)));
    let (gateway, agent, conversation) = gateway_on(gdir.path(), "flaky", &url, breaker, clock.clone()).await;
    let act = || {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/flaky")))
            .bearer_auth(&agent)
            .send()
    };
    let statuses = |responses: Vec<reqwest::Response>| {
        let mut s: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
        s.sort();
        s
    };
    for _ in 0..2 {
        assert_eq!(act().await.unwrap().status(), 502);
    }
    expect_problem(act().await.unwrap(), 503, "circuit_open").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Half open: of ten calls at once, one is the trial; it fails and re-opens.
    clock.advance(Duration::from_millis(1100));
    let burst = futures_util::future::join_all((0..10).map(|_| act())).await;
    let burst: Vec<reqwest::Response> = burst.into_iter().map(Result::unwrap).collect();
    assert_eq!(statuses(burst), [[502].as_slice(), &[503; 9]].concat());
    assert_eq!(calls.load(Ordering::SeqCst), 3, "exactly one trial reached the company");
    expect_problem(act().await.unwrap(), 503, "circuit_open").await;

    // The company recovers; the breaker, re-opened for 2 s, still refuses
    // a second on, and its next trial succeeds and closes it.
    healthy.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_millis(1100));
    expect_problem(act().await.unwrap(), 503, "circuit_open").await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    clock.advance(Duration::from_millis(1000));
    let burst = futures_util::future::join_all((0..10).map(|_| act())).await;
    let burst: Vec<reqwest::Response> = burst.into_iter().map(Result::unwrap).collect();
    assert_eq!(statuses(burst), [[200].as_slice(), &[503; 9]].concat());
    let after = futures_util::future::join_all((0..3).map(|_| act())).await;
    let after: Vec<reqwest::Response> = after.into_iter().map(Result::unwrap).collect();
    assert_eq!(statuses(after), [200, 200, 200], "closed again");
    assert_eq!(calls.load(Ordering::SeqCst), 7);
    gateway.stop().await;
}

/// An action with `cache_ttl_secs` answers again from memory for the same
/// conversation and customer token (`meta.cached`, audited and counted as
/// `cached`), and calls the company anew once the customer's token changes.
#[tokio::test]
async fn a_cached_action_reuses_its_answer_until_the_customer_token_changes() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let toml = gateway_toml(gdir.path(), &backend, &seed)
        .replace("name = \"summary\"\n", "name = \"summary\"\ncache_ttl_secs = 60\n");
    let gateway = TestGateway::start(&toml).await;
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    let w = World {
        _dirs: (bdir, gdir),
        backend,
        gateway,
        seed,
        agent,
    };
    let (session, _) = w.customer_session(0, "web").await;
    let (session_id, conversation) = ids(&session);
    let before = profile_calls(&w.backend).await;

    let first = body_json(w.action(conversation, "summary").await).await;
    assert_eq!(first["meta"]["cached"], false);
    let again = body_json(w.action(conversation, "summary").await).await;
    assert_eq!(
        (again["meta"]["cached"].as_bool(), again["meta"]["status"].as_u64()),
        (Some(true), Some(200))
    );
    assert_eq!(again["data"], first["data"]);
    assert_eq!(
        profile_calls(&w.backend).await,
        before + 1,
        "the second run did not call"
    );
    // An action without a ttl always calls.
    let plain = body_json(w.action(conversation, "getprofile").await).await;
    assert_eq!(plain["meta"]["cached"], false);
    assert_eq!(profile_calls(&w.backend).await, before + 2);

    // A fresh token from the customer's app ends the reuse.
    let u = &w.seed.users[0];
    let fresh = login(&w.backend, &u.username, &u.password).await;
    assert_eq!(w.authenticate(session_id, &fresh).await.status(), 200);
    let after = body_json(w.action(conversation, "summary").await).await;
    assert_eq!(after["meta"]["cached"], false);
    assert_eq!(profile_calls(&w.backend).await, before + 3);

    let metrics = metrics_text(w.gateway.url("/metrics")).await;
    assert!(
        metrics.contains(r#"deskbridge_gateway_actions_total{connection="acme",action="summary",outcome="cached"} 1"#),
        "{metrics}"
    );
    w.gateway.gateway.flush_audit().await;
    let audit = w
        .gateway
        .gateway
        .store()
        .audit(Some("ana"), Some(conversation), 10)
        .await
        .unwrap();
    let outcomes: Vec<_> = audit.iter().rev().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "cached", "ok", "ok"]);
}

/// A company that closes every connection after its answer, without saying
/// so (no `Connection: close`): the gateway notices the idle connection is
/// gone and sends each call on a new one, so every call succeeds.
#[tokio::test]
async fn a_company_that_closes_idle_connections_still_gets_every_call() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The gateway writes a small request whole.
                let mut request = vec![0; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let answer =
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let gdir = tempfile::tempdir().unwrap();
    let ping = "[[connections.actions]]\nname = \"ping\"\npath = \"/ping\"\n";
    let (gateway, agent, conversation) = gateway_for(gdir.path(), "closing", &url, ping).await;
    for _ in 0..5 {
        let r = client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/ping")))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = body_json(r).await;
        assert_eq!((status.as_u16(), &body["data"]), (200, &json!({"ok": true})), "{body}");
        // Let the company's close arrive, as it would between an agent's clicks.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

/// A company that is down (nothing listens on its port): a clear
/// `502 backend_unreachable`, and nothing of the customer's token in it.
#[tokio::test]
async fn a_company_that_is_down_gets_backend_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let gdir = tempfile::tempdir().unwrap();
    let ping = "[[connections.actions]]\nname = \"ping\"\npath = \"/ping\"\n";
    let (gateway, agent, conversation) = gateway_for(gdir.path(), "down", &url, ping).await;
    let r = client()
        .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/ping")))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 502, "backend_unreachable").await;
    assert_eq!(
        body["detail"],
        "the company's API could not be reached: connection failed"
    );
}

/// One trace id follows an agent's request: its answer's `x-trace-id`, the
/// `traceparent` the company receives (a new span per call), and the audit
/// record. An agent tool's own `traceparent` is continued.
#[tokio::test]
async fn an_action_carries_one_trace_from_the_agent_to_the_company_and_the_audit_log() {
    let received = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/ping",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let traceparent = headers.get("traceparent").map(|v| v.to_str().unwrap().to_string());
                seen.lock().unwrap().push(traceparent.unwrap_or_default());
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let url = spawn_company(app).await;
    let gdir = tempfile::tempdir().unwrap();
    let ping = "[[connections.actions]]\nname = \"ping\"\npath = \"/ping\"\n";
    let (gateway, agent, conversation) = gateway_for(gdir.path(), "traced", &url, ping).await;
    let act = |action: &str, traceparent: Option<&'static str>| {
        let mut request = client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/{action}")))
            .bearer_auth(&agent);
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        request.send()
    };
    let trace_of = |r: &reqwest::Response| r.headers()["x-trace-id"].to_str().unwrap().to_string();

    let (first, second) = (act("ping", None).await.unwrap(), act("ping", None).await.unwrap());
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let traces = [trace_of(&first), trace_of(&second)];
    assert_ne!(traces[0], traces[1], "each request starts its own trace");
    let continued = act("ping", Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        .await
        .unwrap();
    assert_eq!(trace_of(&continued), "4bf92f3577b34da6a3ce929d0e0e4736");
    // Errors carry it too, so an agent can quote it.
    let unknown = act("nope", None).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(trace_of(&unknown).len(), 32);

    let expected = [
        traces[0].as_str(),
        traces[1].as_str(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
    ];
    {
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 3);
        for (traceparent, trace) in received.iter().zip(expected) {
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(parts.len(), 4, "{traceparent}");
            assert_eq!(parts[1], trace, "{traceparent}");
            assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's call is a span of its own");
        }
    }
    gateway.gateway.flush_audit().await;
    let audit = gateway.gateway.store().audit(Some("ana"), None, 10).await.unwrap();
    // Oldest first: the three calls, then the refused action.
    let logged: Vec<Option<&str>> = audit.iter().rev().map(|a| a.trace_id.as_deref()).collect();
    let unknown = trace_of(&unknown);
    let want: Vec<Option<&str>> = expected.into_iter().chain([unknown.as_str()]).map(Some).collect();
    assert_eq!(logged, want);
}
