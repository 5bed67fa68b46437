//! Attacks on the running gateway, replayed through real sockets: each
//! failed before the gateway was hardened against it (docs/security.md,
//! "Attacks on the gateway").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway_cli::{Reaped, act, open_conversation, serve};
use crate::gateway_flow::{World, expect_problem, gateway_for, world_configured};
use crate::serving::{json_body, read_until_closed, sent};
use crate::support::{
    APP_KEY, TestBackend, TestGateway, client, config, deskbridge, gateway_toml, json as body_json, login,
    metrics_text, spawn_company,
};

/// A world whose gateway has `limits` as its `[limits]` section in place
/// of the tests' generous one (empty: the generous one), with one logged-in
/// customer's session and conversation.
struct Desk {
    world: World,
    session: String,
    conversation: String,
}

async fn desk(limits: &str) -> Desk {
    let world = world_configured(
        |_| {},
        false,
        |mut toml| {
            if !limits.is_empty() {
                let generous = toml.find("[limits]").unwrap();
                let end = toml.find("[[connections]]").unwrap();
                toml.replace_range(generous..end, &format!("[limits]\n{limits}\n"));
            }
            toml
        },
    )
    .await;
    let (opened, _) = world.customer_session(0, "web").await;
    Desk {
        session: opened["session_id"].as_str().unwrap().into(),
        conversation: opened["conversation_id"].as_str().unwrap().into(),
        world,
    }
}

impl std::ops::Deref for Desk {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl Desk {
    async fn audit(&self) -> Vec<Value> {
        self.gateway.gateway.flush_audit().await;
        let records = self.gateway.gateway.store().audit(None, None, 10_000).await.unwrap();
        records.iter().map(|r| serde_json::to_value(r).unwrap()).collect()
    }
}

/// The sum of a gateway counter's lines that carry `label`.
async fn gateway_counter(gateway: &TestGateway, name: &str, label: &str) -> u64 {
    metrics_text(gateway.url("/metrics"))
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Attack 1: an agent token fed made-up action names as fast as it could,
/// each up to 64 KB, filled the disk: every one was audited as written and
/// echoed back. Now a name that no action could have is refused without
/// being written or echoed, and a repeated unknown name is one audit row
/// with its count.
#[tokio::test]
async fn unknown_action_names_are_refused_unechoed_and_counted_not_written_each() {
    let d = desk("").await;
    let huge = "x".repeat(60_000);
    let r = d.action(&d.conversation, &huge).await;
    let body = expect_problem(r, 404, "unknown_action").await;
    assert!(
        !body.to_string().contains("xxxxxxxx"),
        "echoed: {}",
        &body.to_string()[..200]
    );
    let r = d.action(&format!("cnv_{}", "A".repeat(500)), "getprofile").await;
    expect_problem(r, 404, "not_found").await;

    let refusals = futures_util::future::join_all((0..300).map(|_| d.action(&d.conversation, "nosuchaction"))).await;
    assert!(refusals.iter().all(|r| r.status() == 404));
    let audit = d.audit().await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (&audit[0]["action"], &audit[0]["outcome"], &audit[0]["count"]),
        (&json!("nosuchaction"), &json!("unknown_action"), &json!(300))
    );
    assert_eq!(
        gateway_counter(&d.gateway, "deskbridge_gateway_refusals_total", "unknown_action").await,
        300
    );
}

/// Attack 1, the rate: nothing limited an agent or a channel session. Now
/// each has a token bucket; past it, `429 rate_limited` with `Retry-After`,
/// and the connection is closed.
#[tokio::test]
async fn agents_and_channel_sessions_are_rate_limited() {
    let d = desk("agent_per_second = 1\nagent_burst = 5\nsession_per_second = 1\nsession_burst = 3").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(d.action(&d.conversation, "getprofile").await);
    }
    assert!(statuses[..5].iter().all(|r| r.status() == 200));
    let refused = statuses.pop().unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["connection"], "close");
    expect_problem(refused, 429, "rate_limited").await;
    // The agent's other requests share its bucket.
    let r = client()
        .get(d.gateway.url("/v1/conversations"))
        .bearer_auth(&d.agent)
        .send()
        .await
        .unwrap();
    expect_problem(r, 429, "rate_limited").await;
    // Rate-limited actions are one audit row with their count.
    let limited: Vec<Value> = d
        .audit()
        .await
        .into_iter()
        .filter(|r| r["outcome"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["count"], 3);

    // A channel session: authenticate and its event stream share a bucket.
    let jwt = login(&d.backend, &d.seed.users[1].username, &d.seed.users[1].password).await;
    let authenticate = || {
        client()
            .post(d.gateway.url(&format!("/v1/sessions/{}/authenticate", d.session)))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"auth": {"token": jwt}}))
            .send()
    };
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(authenticate().await.unwrap().status().as_u16());
    }
    // (401: the session belongs to another customer; the point is the 4th.)
    assert_eq!(codes[3], 429, "{codes:?}");
    // Opening sessions: limited per channel and client address (the
    // desk's own session took one of the burst of 3).
    let mut opened = Vec::new();
    for _ in 0..4 {
        opened.push(
            d.open_session(json!({"channel": "web", "connection": "acme"}))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(opened, [201, 201, 429, 429]);
}

/// Attack 2: 10,000 event streams on one anonymous session took every
/// connection. Now streams are limited per session, per channel and in
/// all, and a refused one gets its connection closed.
#[tokio::test]
async fn event_streams_are_limited_per_session_per_channel_and_in_all() {
    let d = desk("streams_per_session = 2\nstreams_per_channel = 3\nstreams_per_agent = 1\nevent_streams = 4").await;
    let stream = |session: String| {
        client()
            .get(d.gateway.url(&format!("/v1/sessions/{session}/events")))
            .send()
    };
    let a1 = stream(d.session.clone()).await.unwrap();
    let a2 = stream(d.session.clone()).await.unwrap();
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let refused = stream(d.session.clone()).await.unwrap();
    assert_eq!(refused.headers()["connection"], "close");
    let body = expect_problem(refused, 429, "too_many_streams").await;
    assert!(body["detail"].as_str().unwrap().contains("session"), "{body}");

    let other = d.open_session(json!({"channel": "web", "connection": "acme"})).await;
    let other = body_json(other).await["session_id"].as_str().unwrap().to_string();
    let b1 = stream(other.clone()).await.unwrap();
    assert_eq!(b1.status(), 200);
    let body = expect_problem(stream(other.clone()).await.unwrap(), 429, "too_many_streams").await;
    assert!(body["detail"].as_str().unwrap().contains("channel"), "{body}");

    // A stream that ends gives its place back.
    drop(a1);
    let started = Instant::now();
    let _b2 = loop {
        let r = stream(other.clone()).await.unwrap();
        if r.status() == 200 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the ended stream kept its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let agent_stream = || client().get(d.gateway.url("/v1/events")).bearer_auth(&d.agent).send();
    let _first = agent_stream().await.unwrap();
    assert_eq!(_first.status(), 200);
    expect_problem(agent_stream().await.unwrap(), 429, "too_many_streams").await;
    // Four open (a2, b1, b2, the agent's): the gateway's budget.
    let third = d.open_session(json!({"channel": "web", "connection": "acme"})).await;
    let third = body_json(third).await["session_id"].as_str().unwrap().to_string();
    let body = expect_problem(stream(third).await.unwrap(), 429, "too_many_streams").await;
    assert!(body["detail"].as_str().unwrap().contains("gateway"), "{body}");
    assert!(gateway_counter(&d.gateway, "deskbridge_gateway_refusals_total", "stream_limit").await >= 4);
    assert!(
        metrics_text(d.gateway.url("/metrics"))
            .await
            .contains("deskbridge_gateway_event_streams 4")
    );
}

/// Attack 4: with the token in a cookie, a channel's token
/// `abc; admin=true` made the company receive cookies of its choosing;
/// CR, LF or NUL failed only later, on every action, as 502. Now a token is
/// checked against where it travels, at intake.
#[tokio::test]
async fn tokens_that_cannot_travel_where_the_connection_puts_them_are_refused_at_intake() {
    let cookies = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = cookies.clone();
    let app = axum::Router::new().route(
        "/profile",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let cookie = headers.get("cookie").map(|v| v.to_str().unwrap().to_string());
                seen.lock().unwrap().extend(cookie);
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let url = spawn_company(app).await;
    let gdir = tempfile::tempdir().unwrap();
    let placement = "[connections.customer_auth]\nin = \"cookie\"\nname = \"SESSION\"\n[[connections.actions]]\nname = \"profile\"\npath = \"/profile\"\n";
    let (gateway, agent, conversation) = gateway_for(gdir.path(), "acme", &url, placement).await;
    let open = |token: &str| {
        open_session_at(
            &gateway.url,
            json!({"channel": "web", "connection": "acme", "customer_id": "cus_91c3f0a7e2b84d6fa5c9e1d3b7f20a48",
                   "auth": {"token": token, "expires_in": 600}}),
        )
    };
    for hostile in [
        "abc; admin=true; role=superuser",
        "abc\r\nX-Admin: 1",
        "abc\u{0}",
        "a b",
        "a,b",
        "\"quoted\"",
    ] {
        let body = expect_problem(open(hostile).await, 400, "invalid_customer_token").await;
        assert!(body["detail"].as_str().unwrap().contains("cookie"), "{body}");
        assert!(!body.to_string().contains("admin"), "the token was echoed: {body}");
    }
    // The conversation's stored token is the clean one from `gateway_for`.
    let r = client()
        .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/profile")))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(*cookies.lock().unwrap(), ["SESSION=t"]);
    gateway.stop().await;

    // In a header, a space or a line break is refused; in a JSON body, any text goes.
    async fn open_in(gateway: &TestGateway, token: &str) -> reqwest::Response {
        open_session_at(
            &gateway.url,
            json!({"channel": "web", "connection": "acme", "customer_id": "cus_91c3f0a7e2b84d6fa5c9e1d3b7f20a48",
                   "auth": {"token": token}}),
        )
        .await
    }
    let gdir = tempfile::tempdir().unwrap();
    let (gateway, _, _) = gateway_for(gdir.path(), "acme", &url, "").await;
    expect_problem(
        open_in(&gateway, "abc\r\nX-Admin: 1").await,
        400,
        "invalid_customer_token",
    )
    .await;
    assert_eq!(open_in(&gateway, "abc;def=1").await.status(), 201);
    gateway.stop().await;
    let gdir = tempfile::tempdir().unwrap();
    let (gateway, _, _) = gateway_for(
        gdir.path(),
        "acme",
        &url,
        "[connections.customer_auth]\nin = \"body\"\n",
    )
    .await;
    assert_eq!(open_in(&gateway, "any text; even \"this\"\n").await.status(), 201);
    gateway.stop().await;
}

/// Attack 5: a company that refused a wrong API key with `401
/// invalid_api_key` got the customer blamed (409, token marked expired,
/// the customer asked to log in again, forever). Now the evidence decides:
/// the error code first, then the challenge, then the status.
#[tokio::test]
async fn an_api_key_refusal_blames_the_platform_not_the_customer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/profile",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "ApiKey realm=\"acme\"")],
                    axum::Json(json!({"error": "invalid_api_key"})),
                )
            }
        }),
    );
    let url = spawn_company(app).await;
    let gdir = tempfile::tempdir().unwrap();
    let action = "[[connections.actions]]\nname = \"profile\"\npath = \"/profile\"\n";
    let (gateway, agent, conversation) = gateway_for(gdir.path(), "acme", &url, action).await;
    let act = || {
        client()
            .post(gateway.url(&format!("/v1/conversations/{conversation}/actions/profile")))
            .bearer_auth(&agent)
            .send()
    };
    for _ in 0..2 {
        let body = expect_problem(act().await.unwrap(), 502, "api_key_rejected").await;
        assert_eq!(
            (body["backend_status"].as_u64(), body["backend_error"].as_str()),
            (Some(401), Some("invalid_api_key"))
        );
        assert!(body["detail"].as_str().unwrap().contains("acme"), "{body}");
    }
    // The customer's token is untouched: still valid, and sent each time.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let state = body_json(
        client()
            .get(gateway.url(&format!("/v1/conversations/{conversation}")))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(state["auth_state"], "valid");
    gateway.stop().await;
}

/// The reference backend's own refusal of a wrong key (403 invalid_api_key).
#[tokio::test]
async fn the_reference_backend_refusing_a_wrong_api_key_is_an_api_key_problem() {
    let w = world_configured(
        |_| {},
        false,
        |mut toml| {
            let key = "[connections.api_key]\nvalue = \"";
            let at = toml.find(key).unwrap() + key.len();
            let end = at + toml[at..].find('"').unwrap();
            toml.replace_range(at..end, "not-the-key");
            toml
        },
    )
    .await;
    let (opened, _) = w.customer_session(0, "web").await;
    let r = w
        .action(opened["conversation_id"].as_str().unwrap(), "getprofile")
        .await;
    let body = expect_problem(r, 502, "api_key_rejected").await;
    assert_eq!(body["backend_error"], "invalid_api_key");
    assert!(!body.to_string().contains("not-the-key"));
}

/// Smaller items: a path id that is not UTF-8 gets a problem, not text; a
/// declared body over the limit is refused at once, not after the body
/// deadline; a sealed token copied into another conversation's row asks
/// for a fresh login instead of failing with 500.
#[tokio::test]
async fn malformed_paths_oversized_bodies_and_moved_tokens_get_documented_answers() {
    let d = desk("").await;
    let mut stream = sent(
        &d.gateway.url,
        format!(
            "POST /v1/conversations/%FF%FE/actions/getprofile HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            d.agent
        )
        .as_bytes(),
    )
    .await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert_eq!(json_body(&answer)["type"], "urn:deskbridge:problem:invalid_request");

    let started = Instant::now();
    let mut stream = sent(
        &d.gateway.url,
        b"POST /v1/sessions HTTP/1.1\r\nHost: g\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // Another customer's conversation gets alice's sealed token copied in.
    let other = body_json(
        open_session_at(
            &d.gateway.url,
            json!({"channel": "web", "connection": "acme", "auth": {"token":
                login(&d.backend, &d.seed.users[1].username, &d.seed.users[1].password).await
            }}),
        )
        .await,
    )
    .await;
    let victim = other["conversation_id"].as_str().unwrap();
    let store = d.gateway.gateway.store();
    let sealed = store.token(&d.conversation).await.unwrap().unwrap();
    store
        .put_token(victim, &sealed.ciphertext, sealed.expires_at, 0)
        .await
        .unwrap();
    expect_problem(d.action(victim, "getprofile").await, 409, "customer_auth_required").await;
    // Wiped, not kept: the state reads expired, and the owner's token still works.
    assert!(store.token(victim).await.unwrap().unwrap().rejected);
    assert_eq!(d.action(&d.conversation, "getprofile").await.status(), 200);
}

/// The gateway binary (`deskbridge serve`) on the reference backend, with
/// `gateway_toml`'s configuration edited by `edit`; an agent added through
/// the CLI, and one customer's conversation.
struct Served {
    dirs: (tempfile::TempDir, tempfile::TempDir),
    _backend: TestBackend,
    file: std::path::PathBuf,
    process: Reaped,
    url: String,
    agent: String,
    conversation: String,
}

async fn served(edit: impl FnOnce(String) -> String) -> Served {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let file = gdir.path().join("gateway.toml");
    std::fs::write(&file, edit(gateway_toml(gdir.path(), &backend, &seed))).unwrap();
    let out = deskbridge()
        .args(["agent", "add", "ana", "--role", "agent", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (process, url) = serve(&file, &[]);
    let user = &seed.users[0];
    let jwt = login(&backend, &user.username, &user.password).await;
    let conversation = open_conversation(
        &url,
        json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}),
    )
    .await;
    Served {
        dirs: (bdir, gdir),
        _backend: backend,
        file,
        process,
        url,
        agent,
        conversation,
    }
}

/// Attack 3: `kill -9` under load lost the audit records of actions that
/// had already been answered 200. Now an answer goes out only once its
/// record is in the store: after a kill under load, every trace id answered
/// 200 is in the audit log.
#[tokio::test]
async fn every_action_answered_before_a_kill_dash_9_is_in_the_audit_log() {
    let mut g = served(|toml| {
        toml.replace(
            "agent_per_second = 1000\nagent_burst = 1000",
            "agent_per_second = 100000\nagent_burst = 100000",
        )
    })
    .await;
    let (url, conversation, agent) = (g.url.clone(), g.conversation.clone(), g.agent.clone());
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (url, conversation, agent, answered) =
                (url.clone(), conversation.clone(), agent.clone(), answered.clone());
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until {
                    // An action the kill cuts short is no answer; the worker stops.
                    let Ok(r) = client()
                        .post(format!("{url}/v1/conversations/{conversation}/actions/getprofile"))
                        .bearer_auth(&agent)
                        .send()
                        .await
                    else {
                        break;
                    };
                    if r.status() == 200 {
                        answered
                            .lock()
                            .unwrap()
                            .push(r.headers()["x-trace-id"].to_str().unwrap().to_string());
                    }
                }
            })
        })
        .collect();
    // Long enough for 100 answers on a busy 2-CPU CI machine (a debug build).
    let started = Instant::now();
    while answered.lock().unwrap().len() < 100 && started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.process.0.kill().unwrap();
    g.process.0.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 100, "only {} answers under load", answered.len());

    let store = gateway::store::Store::open(&format!("sqlite://{}", g.dirs.1.path().join("gateway.db").display()))
        .await
        .unwrap();
    let audited: std::collections::HashSet<String> = store
        .audit(None, None, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.trace_id)
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|t| !audited.contains(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered actions have no audit record",
        missing.len(),
        answered.len()
    );
    // The store is whole after the kill, and a restarted gateway serves on.
    let (_gateway, url) = serve(&g.file, &[]);
    assert_eq!(act(&url, &conversation, "getprofile", &agent).await.status(), 200);
}

/// A connection from `127.0.0.<host>` (the attackers' own addresses) that
/// has sent `bytes`. Its receive buffer is small, as a client's that reads
/// nothing would soon be full: the server's writes then stall after a few
/// answers instead of filling megabytes of loopback buffers first.
async fn from_host(host: u8, url: &str, bytes: &[u8]) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket
        .connect(url.trim_start_matches("http://").parse().unwrap())
        .await?;
    stream.write_all(bytes).await?;
    Ok(stream)
}

/// A client at `127.0.0.<host>` that asks and asks but reads none of its
/// answers (large ones: the gateway's OpenAPI document). Its task ends when
/// a write fails, that is once the server has closed the connection; the
/// connection stays open as long as the returned half lives (reading it
/// would let the server go on).
async fn never_reads(host: u8, url: &str) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: g\r\n\r\n".repeat(20);
    let (reader, mut writer) = from_host(host, url, requests.as_bytes()).await.unwrap().into_split();
    let asking = tokio::spawn(async move { while writer.write_all(requests.as_bytes()).await.is_ok() {} });
    (reader, asking)
}

/// Attack 2: 10,000 event streams on the public app key took every
/// connection, and 100 sockets that send requests and never read their
/// answers held a gateway capped at 100 connections for good. Now streams
/// have a budget below the cap, a refused one is closed, and a client that
/// does not read is closed after `write_timeout_secs`: an agent's action on
/// a new connection keeps answering throughout. It is heavy (10,000
/// connections), so it runs alone (`.ci/run`, after the other tests), not
/// beside the rest of the suite on the same two cores.
#[tokio::test]
#[ignore = "10,000 connections: run alone, with --ignored, as .ci/run does"]
async fn a_flood_of_streams_and_non_reading_sockets_does_not_starve_agents() {
    use tokio::io::AsyncReadExt;
    let g = served(|toml| {
        toml.replace(
            "[limits]\n",
            // The defaults, but a short write timeout, no cap per address
            // (so the stream limits alone are seen to hold) and a lax limit
            // per session (so the channel's and the gateway's limits bind).
            "[server.http]\nwrite_timeout_secs = 2\nmax_connections_per_address = 10000\n\
             [limits]\nstreams_per_session = 100\n",
        )
    })
    .await;
    let (url, conversation, agent) = (g.url.clone(), g.conversation.clone(), g.agent.clone());
    // The attackers' anonymous sessions: one, as in the attack, and 200 more.
    let mut sessions = Vec::new();
    for _ in 0..201 {
        let r = open_session_at(&url, json!({"channel": "web", "connection": "acme"})).await;
        sessions.push(body_json(r).await["session_id"].as_str().unwrap().to_string());
    }

    // 500 sockets that pipeline requests and never read an answer.
    let mut stalled = Vec::new();
    for i in 0..500u16 {
        stalled.push(never_reads(100 + (i % 50) as u8, &url).await);
    }
    // 10,000 stream attempts, 500 at a time; the ones let in are held
    // (by default, 4,000 per channel within a budget of 5,000 streams).
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flood = {
        let (url, held, ok, refused) = (url.clone(), held.clone(), ok.clone(), refused.clone());
        tokio::spawn(async move {
            let attempt = |i: usize| {
                let (url, held, ok, refused) = (url.clone(), held.clone(), ok.clone(), refused.clone());
                let session = if i.is_multiple_of(2) {
                    sessions[0].clone()
                } else {
                    sessions[1 + i % 200].clone()
                };
                async move {
                    let request = format!("GET /v1/sessions/{session}/events HTTP/1.1\r\nHost: g\r\n\r\n");
                    let Ok(mut stream) = from_host(2 + (i % 40) as u8, &url, request.as_bytes()).await else {
                        return;
                    };
                    let mut head = [0u8; 12];
                    if stream.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    if head.starts_with(b"HTTP/1.1 200") {
                        ok.fetch_add(1, Ordering::SeqCst);
                        held.lock().unwrap().push(stream);
                    } else {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            };
            let attempts = futures_util::stream::iter((0..10_000).map(attempt));
            futures_util::StreamExt::for_each_concurrent(attempts, 500, |a| a).await;
        })
    };

    // Meanwhile an agent runs actions, each on a new connection.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    while latencies.len() < 100 {
        let started = Instant::now();
        let r = fresh
            .post(format!("{url}/v1/conversations/{conversation}/actions/getprofile"))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.await.unwrap();
    latencies.sort();
    let p99 = latencies[98];
    let (ok, refused) = (ok.load(Ordering::SeqCst), refused.load(Ordering::SeqCst));
    eprintln!(
        "flood: {ok} streams held, {refused} refused; agent p50 {:?}, p99 {p99:?}",
        latencies[49]
    );
    assert!(
        ok <= 4_000,
        "{ok} streams were let in past the channel's limit of 4,000"
    );
    assert!(refused >= 6_000, "only {refused} stream attempts were refused");
    // Availability, not speed: before, the agent's requests waited for a
    // free connection until they timed out. (Speed under this flood is
    // measured on the release binary: bench/README.md, "Flood".)
    assert!(p99 < Duration::from_secs(1), "agent p99 {p99:?} during the flood");

    // The clients that never read were closed by the write timeout: their
    // writes fail (unread, the server's buffers would hold them open for good).
    for (_reader, asking) in stalled {
        tokio::time::timeout(Duration::from_secs(20), asking)
            .await
            .expect("a client that never read is still connected")
            .unwrap();
    }
}

async fn open_session_at(url: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/sessions"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}
