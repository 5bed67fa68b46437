//! The server side of the web: console sign-in, its cookie and CSRF rules,
//! the agents' event stream, the embedded assets, and the demo company
//! site's session on the backend. The browser flows are in `e2e/`.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::gateway_flow::{expect_problem, read_event};
use crate::support::{
    APP_KEY, TestBackend, TestGateway, access_token, client, config, expect_error, gateway_toml, json as body_json,
    login,
};

const PASSWORD: &str = "correct horse battery";

struct Desk {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    backend: TestBackend,
    gateway: TestGateway,
    seed: backend::admin::DemoSeed,
}

async fn desk() -> Desk {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let toml = gateway_toml(gdir.path(), &backend, &seed)
        + "[console]\n[console.throttle]\nmax_failures_per_user = 3\nmax_failures_per_address = 50\nwindow_secs = 60\n";
    let gateway = TestGateway::start(&toml).await;
    for (name, role) in [("olga", "admin"), ("ana", "agent")] {
        gateway.gateway.add_agent(name, role).await.unwrap();
        gateway.gateway.set_agent_password(name, PASSWORD).await.unwrap();
    }
    Desk {
        _dirs: (bdir, gdir),
        backend,
        gateway,
        seed,
    }
}

/// A signed-in console: its cookie (as a `Cookie` header) and CSRF token.
struct Console {
    cookie: String,
    csrf: String,
}

impl Desk {
    async fn sign_in(&self, body: Value) -> reqwest::Response {
        client()
            .post(self.gateway.url("/console/api/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn console(&self, name: &str) -> Console {
        let r = self.sign_in(json!({"username": name, "password": PASSWORD})).await;
        assert_eq!(r.status(), 200);
        let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let body = body_json(r).await;
        Console {
            cookie: set_cookie.split(';').next().unwrap().to_string(),
            csrf: body["csrf_token"].as_str().unwrap().to_string(),
        }
    }

    fn get(&self, console: &Console, path: &str) -> reqwest::RequestBuilder {
        client().get(self.gateway.url(path)).header("cookie", &console.cookie)
    }

    fn post(&self, console: &Console, path: &str) -> reqwest::RequestBuilder {
        client().post(self.gateway.url(path)).header("cookie", &console.cookie)
    }

    async fn customer_conversation(&self) -> String {
        let u = &self.seed.users[0];
        let jwt = login(&self.backend, &u.username, &u.password).await;
        let r = client()
            .post(self.gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        body_json(r).await["conversation_id"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn an_agent_signs_in_with_a_password_and_the_cookie_is_locked_down() {
    let d = desk().await;
    let r = d.sign_in(json!({"username": "olga", "password": PASSWORD})).await;
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=28800"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = body_json(r).await;
    assert_eq!(body["agent"], json!({"name": "olga", "role": "admin"}));
    let session = set_cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    // The CSRF token is readable by the page; the cookie is not, and the
    // one does not reveal the other.
    assert_ne!(body["csrf_token"].as_str().unwrap(), session);
    assert!(!set_cookie.contains(body["csrf_token"].as_str().unwrap()));

    let c = d.console("olga").await;
    let me = body_json(d.get(&c, "/console/api/me").send().await.unwrap()).await;
    assert_eq!(me["agent"]["name"], "olga");
    assert_eq!(me["csrf_token"].as_str(), Some(c.csrf.as_str()));
    let list = d.get(&c, "/v1/conversations").send().await.unwrap();
    assert_eq!(list.status(), 200, "the cookie authenticates the agent API");
}

#[tokio::test]
async fn wrong_passwords_are_refused_alike_and_throttled() {
    let d = desk().await;
    let wrong = expect_problem(
        d.sign_in(json!({"username": "olga", "password": "not the password"}))
            .await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = expect_problem(
        d.sign_in(json!({"username": "nobody", "password": PASSWORD})).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        wrong["detail"], unknown["detail"],
        "an unknown agent looks like a wrong password"
    );
    // An agent with no password (token only) cannot sign in with one.
    d.gateway.gateway.add_agent("tokenonly", "agent").await.unwrap();
    expect_problem(
        d.sign_in(json!({"username": "tokenonly", "password": ""})).await,
        401,
        "invalid_credentials",
    )
    .await;
    let get = client().get(d.gateway.url("/console/api/login")).send().await.unwrap();
    expect_problem(get, 405, "method_not_allowed").await;
    for body in [
        json!({"username": "olga"}),
        json!({"username": "olga", "password": PASSWORD, "token": "x"}),
        json!({"username": "olga", "password": "x".repeat(300)}),
        json!({"user": "olga", "password": PASSWORD}),
    ] {
        expect_problem(d.sign_in(body).await, 400, "invalid_request").await;
    }
    // A password of the wrong type is refused without being echoed.
    let body = expect_problem(
        d.sign_in(json!({"username": "olga", "password": 918273645546372u64}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("password"), "{body}");
    assert!(!body.to_string().contains("918273645546372"), "{body}");
    for _ in 0..2 {
        expect_problem(
            d.sign_in(json!({"username": "olga", "password": "guess"})).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let throttled = d.sign_in(json!({"username": "olga", "password": PASSWORD})).await;
    let retry_after: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = expect_problem(throttled, 429, "too_many_attempts").await;
    assert!(!body.to_string().contains(PASSWORD));
    // Another agent is not locked out by olga's failures.
    d.console("ana").await;
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token_and_bearer_requests_do_not() {
    let d = desk().await;
    let conversation = d.customer_conversation().await;
    let c = d.console("olga").await;
    let action = format!("/v1/conversations/{conversation}/actions/getprofile");
    // None, a made-up one, and another agent's session's token.
    let other = d.console("ana").await;
    for token in [None, Some("not-the-token"), Some(other.csrf.as_str())] {
        let mut request = d.post(&c, &action);
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        expect_problem(request.send().await.unwrap(), 403, "csrf_token_invalid").await;
    }
    let r = d
        .post(&c, &action)
        .header("x-csrf-token", &c.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["data"]["name"], "Alice Martin");
    // An API client authenticates with its bearer token; a stray cookie
    // does not make it need a CSRF token.
    let token = d.gateway.gateway.add_agent("api", "agent").await.unwrap();
    let r = d.post(&c, &action).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let probe = d.post(&c, "/v1/connections/acme/probe").send().await.unwrap();
    expect_problem(probe, 403, "csrf_token_invalid").await;
    expect_problem(
        d.post(&c, "/console/api/logout").send().await.unwrap(),
        403,
        "csrf_token_invalid",
    )
    .await;
}

#[tokio::test]
async fn roles_hold_in_the_console_and_signing_out_ends_the_session() {
    let d = desk().await;
    let agent = d.console("ana").await;
    expect_problem(d.get(&agent, "/v1/connections").send().await.unwrap(), 403, "forbidden").await;
    expect_problem(d.get(&agent, "/v1/audit").send().await.unwrap(), 403, "forbidden").await;
    let admin = d.console("olga").await;
    assert_eq!(d.get(&admin, "/v1/audit").send().await.unwrap().status(), 200);

    let r = d
        .post(&admin, "/console/api/logout")
        .header("x-csrf-token", &admin.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    expect_problem(
        d.get(&admin, "/console/api/me").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_problem(
        d.get(&admin, "/v1/conversations").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // New credentials end the agent's other sessions.
    assert_eq!(d.get(&agent, "/console/api/me").send().await.unwrap().status(), 200);
    d.gateway
        .gateway
        .set_agent_password("ana", "a brand new passphrase")
        .await
        .unwrap();
    expect_problem(
        d.get(&agent, "/console/api/me").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert!(d.gateway.gateway.set_agent_password("ana", "short").await.is_err());
}

#[tokio::test]
async fn an_agent_token_signs_in_too() {
    let d = desk().await;
    let token = d.gateway.gateway.add_agent("tess", "admin").await.unwrap();
    let r = d.sign_in(json!({"token": token})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["agent"], json!({"name": "tess", "role": "admin"}));
    let body = expect_problem(
        d.sign_in(json!({"token": "dbg_not-a-token"})).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert!(!body.to_string().contains("dbg_not-a-token"));
}

#[tokio::test]
async fn agents_get_every_conversation_event_live() {
    let d = desk().await;
    let c = d.console("ana").await;
    let event = read_event(d.get(&c, "/v1/events"), "session_opened", async {
        d.customer_conversation().await;
    })
    .await;
    assert!(event["conversation_id"].as_str().unwrap().starts_with("cnv_"));
    let stream = client().get(d.gateway.url("/v1/events")).send().await.unwrap();
    expect_problem(stream, 401, "unauthorized").await;
}

#[tokio::test]
async fn signing_out_ends_an_open_event_stream() {
    let d = desk().await;
    let c = d.console("ana").await;
    let mut stream = d.get(&c, "/v1/events").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let r = d
        .post(&c, "/console/api/logout")
        .header("x-csrf-token", &c.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The stream re-checks its credential every 10 s; keep-alives may come first.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(25), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived the sign-out");
}

#[tokio::test]
async fn the_console_and_the_sdk_are_served_from_the_binary() {
    let d = desk().await;
    let page = client().get(d.gateway.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("console.js") && !html.contains("http://") && !html.contains("https://"));
    for (path, kind) in [
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/sdk/deskbridge.js", "text/javascript"),
    ] {
        let r = client().get(d.gateway.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(!r.text().await.unwrap().is_empty(), "{path}");
    }
    let sdk = client().get(d.gateway.url("/sdk/deskbridge.js")).send().await.unwrap();
    assert_eq!(sdk.headers()["cross-origin-resource-policy"], "cross-origin");
    assert!(sdk.text().await.unwrap().contains("Deskbridge"));
}

fn demo_site_config(dir: &std::path::Path) -> backend::BackendConfig {
    backend::BackendConfig {
        insecure_cookies: true,
        demo_site: Some(backend::config::DemoSiteConfig {
            gateway_url: "http://127.0.0.1:9".into(),
            app_key: "dbw_public".into(),
            channel: "web".into(),
            connection: "acme".into(),
        }),
        ..config(dir)
    }
}

#[tokio::test]
async fn the_demo_site_mints_fresh_tokens_from_its_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(demo_site_config(dir.path())).await;
    let seed = b.seed().await;
    let page = client().get(b.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self' http://127.0.0.1:9;"), "{csp}");
    let site = body_json(client().get(b.url("/demo/config.json")).send().await.unwrap()).await;
    assert_eq!(
        site,
        json!({"gateway_url": "http://127.0.0.1:9", "app_key": "dbw_public", "channel": "web", "connection": "acme"})
    );

    let u = &seed.users[1];
    let r = client()
        .post(b.url("/customer_authenticate"))
        .form(&[("username", &u.username), ("password", &u.password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict") && set_cookie.contains("Path=/demo")
    );
    let site_cookie = set_cookie.split(';').next().unwrap().to_string();
    let first = body_json(r).await;

    b.clock.advance(std::time::Duration::from_secs(2));
    let r = client()
        .post(b.url("/demo/token"))
        .header("cookie", &site_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let fresh = body_json(r).await;
    assert_ne!(fresh["JWT"], first["JWT"]);
    let sub = |t: &Value| {
        use base64::Engine;
        let payload = t["JWT"].as_str().unwrap().split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["sub"].clone()
    };
    assert_eq!(sub(&fresh), json!(u.customer_id));
    assert_eq!(sub(&first), sub(&fresh));

    // The site's session is not a customer session: the company API refuses it.
    let system = access_token(&b, &seed).await;
    let profile = client()
        .post(b.url("/getprofile"))
        .bearer_auth(&system)
        .header("api-key", &seed.api_keys[0].key)
        .header(
            "cookie",
            site_cookie.replace("deskbridge_demo_site", "deskbridge_session"),
        )
        .send()
        .await
        .unwrap();
    expect_error(profile, 401, "invalid_customer_token").await;

    // The site lists its own customer's accounts (ids and types, no balances).
    let r = client()
        .post(b.url("/demo/accounts"))
        .header("cookie", &site_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        body_json(r).await,
        json!({"accounts": [{"id": "acc-2001", "type": "checking"}]}),
        "{}'s accounts",
        u.username
    );
    let cross_site = client()
        .post(b.url("/demo/accounts"))
        .header("cookie", &site_cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403, "another site's page may not read them");

    let r = client()
        .post(b.url("/demo/logout"))
        .header("cookie", &site_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for path in ["/demo/token", "/demo/accounts"] {
        for cookie in [Some(site_cookie.as_str()), Some("deskbridge_demo_site=forged"), None] {
            let mut request = client().post(b.url(path));
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} {cookie:?}");
            let body = body_json(r).await;
            assert_eq!(body["error"], "invalid_customer_token");
        }
    }
}

#[tokio::test]
async fn without_demo_mode_the_backend_has_no_site() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(config(dir.path())).await;
    for (method, path) in [("GET", "/"), ("GET", "/demo/config.json"), ("POST", "/demo/token")] {
        let r = client()
            .request(method.parse().unwrap(), b.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn agent_add_sets_a_console_password_from_stdin() {
    let d = desk().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    // The running test gateway and the command share the data dir.
    std::fs::write(
        &file,
        gateway_toml(&d.gateway.gateway.config().server.data_dir, &d.backend, &d.seed),
    )
    .unwrap();
    let add = |password: &str| {
        let mut child = crate::support::deskbridge()
            .args(["agent", "add", "vera", "--role", "agent", "--password", "--config"])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    // A name that could forge a log line, or an empty one, is refused.
    for name in ["evil\nINFO gateway: console sign-in agent=root", "", "two words"] {
        let out = crate::support::deskbridge()
            .args(["agent", "add", name, "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("an agent name is"),
            "{name:?}"
        );
    }
    let short = add("short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
    let out = add("vera's long passphrase");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = d
        .sign_in(json!({"username": "vera", "password": "vera's long passphrase"}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["agent"]["role"], "agent");
}
