//! The company's limits and outages as the gateway keeps them: its rate,
//! its `Retry-After`, slow operations, and a token endpoint that dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::gateway_flow::{expect_problem, gateway_on};
use crate::support::{Proxy, TestGateway, client, metrics_text, spawn_company};

/// A company whose `/busy` answers 429 (`Retry-After: 2`) and `/down` 503
/// (an HTTP date 3 s ahead of `clock`) on their first call, then 200;
/// `/slow` takes 300 ms; `/ok` answers at once. Counts every call.
async fn moody_company(clock: Arc<backend::ManualClock>) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (busy, down) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counted = calls.clone();
    let app = axum::Router::new()
        .route(
            "/busy",
            axum::routing::post(move || {
                let n = busy.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "2".to_string())],
                            axum::Json(json!({"error": "slow_down"})),
                        ),
                        _ => (
                            axum::http::StatusCode::OK,
                            [("x-ok", "1".to_string())],
                            axum::Json(json!({"ok": true})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/down",
            axum::routing::post(move || {
                let n = down.fetch_add(1, Ordering::SeqCst);
                let at = httpdate::fmt_http_date(backend::Clock::now(&*clock) + Duration::from_secs(3));
                async move {
                    match n {
                        0 => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", at)],
                            axum::Json(json!({"error": "maintenance"})),
                        ),
                        _ => (
                            axum::http::StatusCode::OK,
                            [("x-ok", "1".to_string())],
                            axum::Json(json!({"ok": true})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                axum::Json(json!({"ok": true}))
            }),
        )
        .route("/ok", axum::routing::post(|| async { axum::Json(json!({"ok": true})) }))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                counted.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ));
    (spawn_company(app).await, calls)
}

const ACTIONS: &str = r#"
[connections.limits]
rate_per_second = 1
burst = 2
[[connections.actions]]
name = "busy"
path = "/busy"
[[connections.actions]]
name = "down"
path = "/down"
[[connections.actions]]
name = "ok"
path = "/ok"
[[connections.actions]]
name = "slow"
path = "/slow"
timeout_ms = 150
[[connections.actions]]
name = "slow_but_allowed"
path = "/slow"
timeout_ms = 2000
"#;

#[tokio::test]
async fn the_companys_rate_and_retry_after_are_kept_without_calling_it() {
    let clock = Arc::new(backend::ManualClock::new(backend::Clock::now(&backend::SystemClock)));
    let (url, calls) = moody_company(clock.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (gateway, agent, conversation) = gateway_on(dir.path(), "moody", &url, ACTIONS, clock.clone()).await;
    let run = |action: &str| {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/{action}")))
            .bearer_auth(&agent)
            .send()
    };

    // The bucket: a burst of two, then one a second; the third waits, uncalled.
    assert_eq!(run("ok").await.unwrap().status(), 200);
    assert_eq!(run("ok").await.unwrap().status(), 200);
    let third = run("ok").await.unwrap();
    assert_eq!(third.headers()["retry-after"], "1");
    expect_problem(third, 429, "company_rate_limited").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A 429 with `Retry-After: 2`: that long, nobody calls the company.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = run("busy").await.unwrap();
    assert_eq!(first.headers()["retry-after"], "2");
    expect_problem(first, 429, "company_rate_limited").await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let paused = run("ok").await.unwrap();
    expect_problem(paused, 429, "company_rate_limited").await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "called during the pause");
    clock.advance(Duration::from_secs(3));
    assert_eq!(run("busy").await.unwrap().status(), 200);

    // A 503 with an HTTP date: the same, as 503.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = run("down").await.unwrap();
    let wait: u64 = first.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((2..=3).contains(&wait), "{wait}");
    expect_problem(first, 503, "backend_unavailable").await;
    let calls_then = calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect_problem(run("down").await.unwrap(), 503, "backend_unavailable").await;
    assert_eq!(calls.load(Ordering::SeqCst), calls_then);
    clock.advance(Duration::from_secs(4));
    assert_eq!(run("down").await.unwrap().status(), 200);

    // Each refusal is counted, by reason.
    let metrics = metrics_text(gateway.url("/metrics")).await;
    for reason in ["rate", "paused"] {
        let line = format!("deskbridge_gateway_company_limited_total{{connection=\"moody\",outcome=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn a_slow_operation_gets_its_own_timeout() {
    let clock = Arc::new(backend::ManualClock::new(backend::Clock::now(&backend::SystemClock)));
    let (url, _) = moody_company(clock.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let actions = ACTIONS.replace("rate_per_second = 1\nburst = 2", "rate_per_second = 100");
    let (gateway, agent, conversation) = gateway_on(dir.path(), "moody", &url, &actions, clock).await;
    let run = |action: &str| {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/{action}")))
            .bearer_auth(&agent)
            .send()
    };
    expect_problem(run("slow").await.unwrap(), 504, "backend_timeout").await;
    assert_eq!(run("slow_but_allowed").await.unwrap().status(), 200);
}

/// A gateway on `toml` (one opaque connection named `connection`, channel
/// `web`) and `clock`, an agent's token, and a customer's conversation.
async fn open_gateway(toml: &str, connection: &str, clock: Arc<backend::ManualClock>) -> (TestGateway, String, String) {
    let gateway = TestGateway::start_with_clock(toml, clock).await;
    let agent = gateway.gateway.add_agent("ana", "agent").await.unwrap();
    let opened: serde_json::Value = client()
        .post(gateway.url("/v1/sessions"))
        .header("x-deskbridge-app-key", crate::support::APP_KEY)
        .json(&json!({"channel": "web", "connection": connection, "customer_id": "cus_7f3e9c1a5b2d4e8f9a6c1d0b3e7f2a95", "auth": {"token": "t", "expires_in": 100000}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = opened["conversation_id"].as_str().unwrap().to_string();
    (gateway, agent, conversation)
}

/// A token endpoint behind a proxy that can be cut, issuing `tok-N` for
/// 100 s, and an API that records the bearer of each call.
#[tokio::test]
async fn a_stale_system_token_is_never_sent() {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let token_server =
        spawn_company(axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    axum::Json(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 100}))
                }
            }),
        ))
        .await;
    let proxy = Proxy::start(token_server.trim_start_matches("http://").parse().unwrap()).await;
    let bearers = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = bearers.clone();
    let api = spawn_company(axum::Router::new().route(
        "/ok",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            seen.lock()
                .unwrap()
                .push(headers["authorization"].to_str().unwrap().to_string());
            async { axum::Json(json!({"ok": true})) }
        }),
    ))
    .await;
    let clock = Arc::new(backend::ManualClock::new(backend::Clock::now(&backend::SystemClock)));
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[server]
data_dir = "{data}"
[[connections]]
name = "bank"
base_url = "{api}"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "http://{proxy}/token"
client_id = "deskbridge"
client_secret = "s3cret-for-tests"
[connections.identity]
mode = "opaque"
[[connections.actions]]
name = "ok"
path = "/ok"
[[channels]]
name = "web"
app_key = "{key}"
"#,
        data = dir.path().display(),
        proxy = proxy.addr,
        key = crate::support::APP_KEY,
    );
    let (gateway, agent, conversation) = open_gateway(&toml, "bank", clock.clone()).await;
    let run = || {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/ok")))
            .bearer_auth(&agent)
            .send()
    };
    assert_eq!(run().await.unwrap().status(), 200);
    assert_eq!(issued.load(Ordering::SeqCst), 1);

    // The token endpoint dies while the token still holds: it keeps being
    // used, and its renewal is tried again only after a backoff.
    proxy.cut();
    clock.advance(Duration::from_secs(85));
    for _ in 0..5 {
        assert_eq!(run().await.unwrap().status(), 200);
    }
    assert_eq!(
        bearers.lock().unwrap().iter().filter(|b| *b == "Bearer tok-0").count(),
        6
    );

    // Expired: nothing is sent with it; callers are told when to retry.
    clock.advance(Duration::from_secs(15));
    let refused = run().await.unwrap();
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    expect_problem(refused, 503, "system_token_unavailable").await;
    assert_eq!(bearers.lock().unwrap().len(), 6, "a call went out with a stale token");

    // Back up: the next call after the backoff fetches a fresh token.
    proxy.restore();
    clock.advance(Duration::from_secs(31));
    assert_eq!(run().await.unwrap().status(), 200);
    assert_eq!(bearers.lock().unwrap().last().map(String::as_str), Some("Bearer tok-1"));
}

/// A company that says "expired" its own way: a `200` whose body says the
/// system token expired, and a `403` whose body says the customer's did.
#[tokio::test]
async fn expiry_said_in_the_companys_own_words_renews_the_right_token() {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let token_server = spawn_company(axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                axum::Json(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600}))
            }
        }),
    ))
    .await;
    let api = spawn_company(
        axum::Router::new()
            .route(
                "/data",
                axum::routing::post(|headers: axum::http::HeaderMap| async move {
                    match headers["authorization"].to_str().unwrap() {
                        "Bearer tok-0" => (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({"error": {"code": "TOKEN_EXPIRED"}})),
                        ),
                        _ => (axum::http::StatusCode::OK, axum::Json(json!({"balance": 10}))),
                    }
                }),
            )
            .route(
                "/profile",
                axum::routing::post(|| async {
                    (
                        axum::http::StatusCode::FORBIDDEN,
                        axum::Json(json!({"error": {"code": "SESSION_EXPIRED"}})),
                    )
                }),
            ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[server]
data_dir = "{data}"
[[connections]]
name = "telco"
base_url = "{api}"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "{token_server}/token"
client_id = "deskbridge"
client_secret = "s3cret-for-tests"
expired_when = {{ pointer = "/error/code", equals = ["TOKEN_EXPIRED"] }}
[connections.customer_auth]
expired_when = {{ status = [401, 403], pointer = "/error/code", equals = ["SESSION_EXPIRED"] }}
[connections.identity]
mode = "opaque"
[[connections.actions]]
name = "data"
path = "/data"
[[connections.actions]]
name = "profile"
path = "/profile"
[[channels]]
name = "web"
app_key = "{key}"
"#,
        data = dir.path().display(),
        key = crate::support::APP_KEY,
    );
    let clock = Arc::new(backend::ManualClock::new(backend::Clock::now(&backend::SystemClock)));
    let (gateway, agent, conversation) = open_gateway(&toml, "telco", clock).await;
    let run = |action: &str| {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/{action}")))
            .bearer_auth(&agent)
            .send()
    };
    // The 200 that says the system token expired: renewed, and sent once more.
    let answer: serde_json::Value = run("data").await.unwrap().json().await.unwrap();
    assert_eq!(answer["data"], json!({"balance": 10}), "{answer}");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    // The 403 that says the customer's login expired: the channel is asked for a fresh one.
    expect_problem(run("profile").await.unwrap(), 409, "customer_auth_required").await;
    let state: serde_json::Value = client()
        .get(gateway.url(&format!("/v1/conversations/{conversation}")))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["auth_state"], "expired");
    assert_eq!(issued.load(Ordering::SeqCst), 2, "the system token was not at fault");
}
