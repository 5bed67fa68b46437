//! Three `deskbridge serve` processes behind no load balancer but the test
//! itself, on one Postgres database and one Redis (a key prefix of their
//! own), behave as one gateway: one conversation per customer, one system
//! token, events, invalidations and sign-in failures seen by all, and no
//! harm when Redis or one of them goes away.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use backend::BackendConfig;
use backend::admin::DemoSeed;
use futures_util::future::join_all;
use gateway::store::test_support::TestDatabase;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::gateway_cli::{Reaped, act};
use crate::gateway_flow::expect_problem;
use crate::support::{
    APP_KEY, Proxy, TestBackend, announced_url, backend_counter, client, config, deskbridge, gateway_toml,
    json as body_json, login, metrics_text, tokens_issued,
};

/// The Redis every test shares, each under a key prefix of its own.
const REDIS: &str = "127.0.0.1:6379";
/// The `crypto.token_key` of every instance: each opens what another sealed.
const TOKEN_KEY: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM";
const IDS: [&str; 3] = ["a", "b", "c"];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// One `deskbridge serve` process.
struct Instance {
    url: String,
    process: Reaped,
}

/// The reference backend (in process), a fresh database and three gateway
/// instances on it, and an agent of theirs.
struct Cluster {
    backend: TestBackend,
    seed: DemoSeed,
    dir: tempfile::TempDir,
    _backend_dir: tempfile::TempDir,
    _db: TestDatabase,
    instances: Vec<Instance>,
    agent: String,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with(|_| {}, REDIS.parse().unwrap()).await
    }

    /// A cluster whose backend has `edit` made to its configuration and whose
    /// instances reach Redis at `redis` (a [`Proxy`] to cut, or Redis itself).
    async fn start_with(edit: impl FnOnce(&mut BackendConfig), redis: SocketAddr) -> Self {
        Self::start_configured(edit, redis, "").await
    }

    /// As [`Cluster::start_with`], with `extra` (`[connections.…]` tables)
    /// in connection "acme" of every instance's configuration.
    async fn start_configured(edit: impl FnOnce(&mut BackendConfig), redis: SocketAddr, extra: &str) -> Self {
        let (backend_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut cfg = config(backend_dir.path());
        edit(&mut cfg);
        let backend = TestBackend::start(cfg).await;
        let seed = backend.seed().await;
        let db = TestDatabase::postgres().await.unwrap();
        // The database's name is unique to the test: so is the key prefix.
        let prefix = db.url.rsplit('/').next().unwrap().to_string();
        let toml = gateway_toml(dir.path(), &backend, &seed);
        let acme_ends = toml.find("[[channels]]").unwrap();
        let toml = format!("{}{extra}{}", &toml[..acme_ends], &toml[acme_ends..]);
        let base = with_opaque_connection(&toml, &backend)
            + "[console]\n[console.throttle]\nmax_failures_per_user = 3\nmax_failures_per_address = 50\nwindow_secs = 60\n"
            // Several clusters run at once on a Postgres of 100 connections.
            + &format!("[store]\nurl = \"{}\"\nmax_connections = 3\n", db.url)
            + &format!("[crypto]\ntoken_key = \"{TOKEN_KEY}\"\n")
            + &format!("[cluster]\nredis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}:\"\n");
        for id in IDS {
            std::fs::write(
                dir.path().join(format!("gateway-{id}.toml")),
                format!("{base}instance_id = \"{id}\"\n"),
            )
            .unwrap();
        }
        let mut cluster = Self {
            backend,
            seed,
            dir,
            _backend_dir: backend_dir,
            _db: db,
            instances: Vec::new(),
            agent: String::new(),
        };
        cluster.agent = cluster.cli(&["agent", "add", "ana", "--role", "admin"]).await;
        for i in 0..IDS.len() {
            let instance = cluster.spawn(i).await;
            cluster.instances.push(instance);
        }
        cluster
    }

    /// Starts instance `i` and waits until it reaches Redis.
    async fn spawn(&self, i: usize) -> Instance {
        let log = std::fs::File::create(self.dir.path().join(format!("gateway-{}.log", IDS[i]))).unwrap();
        let mut child = deskbridge()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(self.config(i))
            .env("DESKBRIDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = tokio::task::spawn_blocking(move || {
            let url = announced_url(&mut child);
            (child, url)
        })
        .await
        .unwrap();
        let instance = Instance {
            url: url.1,
            process: Reaped(url.0),
        };
        wait_for_cluster_up(&instance.url, IDS[i], 1, Duration::from_secs(10)).await;
        instance
    }

    fn config(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("gateway-{}.toml", IDS[i]))
    }

    /// Runs `deskbridge ARGS --config <instance a's file>`; its stdout, trimmed.
    async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::from(deskbridge())
            .args(args)
            .arg("--config")
            .arg(self.config(A))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.instances[i].url)
    }

    async fn open(&self, i: usize, body: Value) -> reqwest::Response {
        client()
            .post(self.url(i, "/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A logged-in session of seeded user `user` opened on instance `i`:
    /// (session id, conversation id).
    async fn customer_session(&self, i: usize, user: usize) -> (String, String) {
        let u = &self.seed.users[user];
        let jwt = login(&self.backend, &u.username, &u.password).await;
        let r = self
            .open(
                i,
                json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}),
            )
            .await;
        assert_eq!(r.status(), 201);
        ids(&body_json(r).await)
    }

    async fn authenticate(&self, i: usize, session: &str, jwt: &str) -> reqwest::Response {
        client()
            .post(self.url(i, &format!("/v1/sessions/{session}/authenticate")))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"auth": {"token": jwt}}))
            .send()
            .await
            .unwrap()
    }

    async fn action(&self, i: usize, conversation: &str) -> reqwest::Response {
        act(&self.instances[i].url, conversation, "getprofile", &self.agent).await
    }

    /// The ids of every conversation, as instance `i` lists them.
    async fn conversations(&self, i: usize) -> HashSet<String> {
        let r = client()
            .get(self.url(i, "/v1/conversations?limit=100"))
            .bearer_auth(&self.agent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let listing = body_json(r).await;
        assert!(listing["next_cursor"].is_null(), "{listing}");
        listing["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The agent's event stream on instance `i`.
    async fn events(&self, i: usize) -> Events {
        Events::open(&self.url(i, "/v1/events"), &self.agent).await
    }
}

/// `toml` with a second connection, "opaque", to the same backend: its
/// customer tokens are the channel's word, with the lifetime it gives.
fn with_opaque_connection(toml: &str, backend: &TestBackend) -> String {
    let start = toml.find("[[connections]]").unwrap();
    let end = toml.find("[[channels]]").unwrap();
    let opaque = toml[start..end]
        .replace("name = \"acme\"", "name = \"opaque\"")
        .replace("mode = \"jwt\"", "mode = \"opaque\"")
        .replace(&format!("jwks_url = \"{}/.well-known/jwks.json\"\n", backend.url), "");
    format!("{}{opaque}{}", &toml[..end], &toml[end..])
}

/// A `POST /v1/sessions` answer's (session id, conversation id).
fn ids(session: &Value) -> (String, String) {
    (
        session["session_id"].as_str().unwrap().to_string(),
        session["conversation_id"].as_str().unwrap().to_string(),
    )
}

/// `deskbridge_gateway_cluster_up{instance="ID"}` on the instance at `url`.
async fn cluster_up(url: &str, id: &str) -> Option<i64> {
    let text = metrics_text(format!("{url}/metrics")).await;
    let wanted = format!("deskbridge_gateway_cluster_up{{instance=\"{id}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .map(|v| v.trim().parse().unwrap())
}

async fn wait_for_cluster_up(url: &str, id: &str, value: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = cluster_up(url, id).await;
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster_up of {id} still {now:?}, not {value}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An agent's event stream, read as (event name, data) while the test runs.
struct Events {
    received: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Events {
    async fn open(url: &str, agent: &str) -> Self {
        // No overall timeout: a stream may outlive `client()`'s.
        let mut stream = reqwest::Client::new().get(url).bearer_auth(agent).send().await.unwrap();
        assert_eq!(stream.status(), 200);
        let (sender, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut seen = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = seen.find("\n\n") {
                    let block: String = seen.drain(..end + 2).collect();
                    let name = block.lines().find_map(|l| l.strip_prefix("event: "));
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                    if let (Some(name), Some(data)) = (name, data) {
                        let event = (name.to_string(), serde_json::from_str(data).unwrap());
                        if sender.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Self { received }
    }

    /// The next `n` events, which must all arrive within `within`.
    async fn take(&mut self, n: usize, within: Duration) -> Vec<(String, Value)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(event)) => got.push(event),
                _ => panic!("{} of {n} events within {within:?}: {got:?}", got.len()),
            }
        }
        got
    }

    /// Every event that arrives within `during`.
    async fn all(&mut self, during: Duration) -> Vec<(String, Value)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + during;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.received.recv()).await {
            got.push(event);
        }
        got
    }
}

/// The names of `events` of each conversation, in order.
fn by_conversation(events: &[(String, Value)]) -> HashMap<String, Vec<String>> {
    let mut of: HashMap<String, Vec<String>> = HashMap::new();
    for (name, data) in events {
        assert_eq!(data["kind"], name.as_str(), "{data}");
        of.entry(data["conversation_id"].as_str().unwrap().to_string())
            .or_default()
            .push(name.clone());
    }
    of
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_session_opens_for_one_customer_on_three_instances_make_one_conversation() {
    let c = Cluster::start().await;
    let alice = &c.seed.users[0];
    let jwt = login(&c.backend, &alice.username, &alice.password).await;
    let opens = (0..60).map(|n| {
        c.open(
            n % 3,
            json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}}),
        )
    });
    let mut conversations = HashSet::new();
    for r in join_all(opens).await {
        assert_eq!(r.status(), 201);
        conversations.insert(ids(&body_json(r).await).1);
    }
    assert_eq!(conversations.len(), 1, "{conversations:?}");
    for i in [A, B, C] {
        assert_eq!(c.conversations(i).await, conversations);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stream_on_b_sees_what_happens_on_a_and_c_in_order_within_a_second() {
    let c = Cluster::start_with(|b| b.customer_token_ttl_secs = 60, REDIS.parse().unwrap()).await;
    let mut on_b = c.events(B).await;
    let second = Duration::from_secs(1);
    let mut seen = Vec::new();

    // On A: an anonymous chat whose customer then logs in.
    let r = c.open(A, json!({"channel": "web", "connection": "acme"})).await;
    assert_eq!(r.status(), 201);
    let (session, first) = ids(&body_json(r).await);
    seen.extend(on_b.take(1, second).await);
    let alice = &c.seed.users[0];
    let jwt = login(&c.backend, &alice.username, &alice.password).await;
    let r = c.authenticate(A, &session, &jwt).await;
    assert_eq!(r.status(), 200);
    // The chat moves into the customer's conversation.
    let joined = body_json(r).await["conversation_id"].as_str().unwrap().to_string();
    seen.extend(on_b.take(1, second).await);

    // On C: a logged-in session whose token the company then refuses.
    let (_, other) = c.customer_session(C, 1).await;
    seen.extend(on_b.take(1, second).await);
    c.backend.clock.advance(Duration::from_secs(61));
    expect_problem(c.action(C, &other).await, 409, "customer_auth_required").await;
    seen.extend(on_b.take(1, second).await);

    // Then nothing more: each event came once.
    seen.extend(on_b.all(Duration::from_millis(500)).await);
    let of = by_conversation(&seen);
    assert_eq!(of.len(), 3, "{seen:?}");
    assert_eq!(of[&first], ["session_opened"], "{seen:?}");
    assert_eq!(of[&joined], ["authenticated"], "{seen:?}");
    assert_eq!(of[&other], ["session_opened", "authentication_required"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_on_three_instances_with_a_cold_cache_fetch_one_system_token() {
    let c = Cluster::start().await;
    let (_, conversation) = c.customer_session(A, 0).await;
    assert_eq!(tokens_issued(&c.backend).await, 0);
    let calls = (0..300).map(|n| c.action(n % 3, &conversation));
    let statuses: Vec<u16> = join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(tokens_issued(&c.backend).await, 1, "one token for the three instances");
}

/// `[connections.limits]` is one budget for the three instances: a burst
/// of three, then one a second, however the calls are spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companys_rate_is_one_budget_for_all_instances() {
    let limits = "[connections.limits]\nrate_per_second = 1\nburst = 3\n";
    let c = Cluster::start_configured(|_| {}, REDIS.parse().unwrap(), limits).await;
    let (_, conversation) = c.customer_session(A, 0).await;
    let before = backend_counter(&c.backend, "deskbridge_profile_requests_total").await;
    let mut statuses = Vec::new();
    for n in 0..9 {
        statuses.push(c.action(n % 3, &conversation).await.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 6, "{statuses:?}");
    let called = backend_counter(&c.backend, "deskbridge_profile_requests_total").await - before;
    assert_eq!(called, 3, "the company was called beyond its rate");
}

/// The company stops taking the shared system token (here: its clock moves
/// past the token's life, while the gateways' does not): each instance sees
/// a 401 and purges it, but only the token it saw, so the three fetch one
/// new token between them, and every action is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_token_the_company_refuses_is_fetched_again_once_for_all_instances() {
    let c = Cluster::start().await;
    let (_, conversation) = c.customer_session(A, 0).await;
    for i in [A, B, C] {
        assert_eq!(c.action(i, &conversation).await.status(), 200);
    }
    assert_eq!(tokens_issued(&c.backend).await, 1);
    c.backend.clock.advance(Duration::from_secs(3601));
    let calls = (0..60).map(|n| c.action(n % 3, &conversation));
    let statuses: Vec<u16> = join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        tokens_issued(&c.backend).await,
        2,
        "one refetch for the three instances"
    );
}

/// A system token renewed ahead of its expiry is renewed by one instance:
/// the others find the new one in the share. A 10 s token is renewed at
/// 7-8 s; actions on all three instances for 9.5 s need two tokens in all
/// (three or four if each renewed its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_token_is_renewed_ahead_by_one_instance_for_all() {
    let c = Cluster::start_with(|b| b.access_token_ttl_secs = 10, REDIS.parse().unwrap()).await;
    let (_, conversation) = c.customer_session(A, 0).await;
    assert_eq!(c.action(A, &conversation).await.status(), 200);
    let first = Instant::now();
    let mut n = 0;
    while first.elapsed() < Duration::from_millis(9500) {
        let r = c.action(n % 3, &conversation).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tokens_issued(&c.backend).await,
        2,
        "one renewal for the three instances"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_token_replaced_through_b_is_the_one_c_sends_next() {
    let c = Cluster::start_with(|b| b.customer_token_ttl_secs = 60, REDIS.parse().unwrap()).await;
    let (session, conversation) = c.customer_session(A, 0).await;
    // C remembers the conversation's context, with the first token.
    assert_eq!(c.action(C, &conversation).await.status(), 200);
    // The first token expires at the company; a fresh one goes in through B.
    c.backend.clock.advance(Duration::from_secs(61));
    let alice = &c.seed.users[0];
    let fresh = login(&c.backend, &alice.username, &alice.password).await;
    assert_eq!(c.authenticate(B, &session, &fresh).await.status(), 200);
    // C sends the fresh one (the first would be refused: 409).
    let deadline = Instant::now() + Duration::from_secs(1);
    let r = c.action(C, &conversation).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(Instant::now() < deadline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_removed_or_rekeyed_through_the_cli_is_refused_on_b_within_a_second() {
    let c = Cluster::start().await;
    let (_, conversation) = c.customer_session(A, 0).await;
    let bob = c.cli(&["agent", "add", "bob"]).await;
    let carol = c.cli(&["agent", "add", "carol"]).await;
    // B knows both (and remembers them).
    for agent in [&bob, &carol] {
        assert_eq!(
            act(&c.instances[B].url, &conversation, "getprofile", agent)
                .await
                .status(),
            200
        );
    }
    let refused_within_a_second = |agent: String| {
        let url = c.instances[B].url.clone();
        let conversation = conversation.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let status = act(&url, &conversation, "getprofile", &agent).await.status();
                if status == 401 {
                    return;
                }
                assert!(Instant::now() < deadline, "still {status} on B after a second");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    c.cli(&["agent", "remove", "bob"]).await;
    refused_within_a_second(bob).await;
    let rekeyed = c.cli(&["agent", "add", "carol"]).await;
    refused_within_a_second(carol).await;
    assert_eq!(
        act(&c.instances[B].url, &conversation, "getprofile", &rekeyed)
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_failures_on_a_and_b_add_up_and_c_throttles() {
    let c = Cluster::start().await;
    let sign_in = |i: usize| {
        client()
            .post(c.url(i, "/console/api/login"))
            .json(&json!({"username": "ana", "password": "not the password"}))
            .send()
    };
    // Three failures allowed per user: two on A, one on B.
    for i in [A, A, B] {
        expect_problem(sign_in(i).await.unwrap(), 401, "invalid_credentials").await;
    }
    let throttled = sign_in(C).await.unwrap();
    assert!(throttled.headers().contains_key("retry-after"));
    expect_problem(throttled, 429, "too_many_attempts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_expired_customer_token_makes_one_authentication_required_with_three_instances() {
    let c = Cluster::start_with(|b| b.customer_token_ttl_secs = 60, REDIS.parse().unwrap()).await;
    let mut on_b = c.events(B).await;
    // Tokens that expire by the clock: each instance sweeps every second.
    let mut expiring = HashSet::new();
    for (n, user) in c.seed.users.iter().take(3).enumerate() {
        let r = c
            .open(
                n,
                json!({"channel": "ios", "connection": "opaque", "customer_id": user.customer_id,
                       "auth": {"token": format!("opaque-token-{n}"), "expires_in": 1}}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        expiring.insert(ids(&body_json(r).await).1);
    }
    // A token the company refuses, to concurrent actions on all three.
    let (_, refused) = c.customer_session(A, 0).await;
    assert_eq!(c.action(B, &refused).await.status(), 200);
    c.backend.clock.advance(Duration::from_secs(61));
    let calls = (0..30).map(|n| c.action(n % 3, &refused));
    let statuses: Vec<u16> = join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 409), "{statuses:?}");

    let seen = on_b.all(Duration::from_secs(4)).await;
    let required: Vec<&Value> = seen
        .iter()
        .filter(|(name, _)| name == "authentication_required")
        .map(|(_, data)| &data["conversation_id"])
        .collect();
    let mut wanted: Vec<&str> = expiring.iter().map(String::as_str).collect();
    wanted.push(&refused);
    wanted.sort_unstable();
    let mut got: Vec<&str> = required.iter().map(|id| id.as_str().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, wanted, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_cut_actions_go_on_cluster_up_reads_0_and_after_restore_1_and_events_flow() {
    let redis = Proxy::start(REDIS.parse().unwrap()).await;
    let c = Cluster::start_with(|_| {}, redis.addr).await;
    let (_, conversation) = c.customer_session(A, 0).await;

    redis.cut();
    for i in [A, B, C] {
        wait_for_cluster_up(&c.instances[i].url, IDS[i], 0, Duration::from_secs(10)).await;
    }
    let calls = (0..30).map(|n| c.action(n % 3, &conversation));
    let statuses: Vec<u16> = join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    redis.restore();
    for i in [A, B, C] {
        wait_for_cluster_up(&c.instances[i].url, IDS[i], 1, Duration::from_secs(5)).await;
    }
    let mut on_b = c.events(B).await;
    let r = c.open(A, json!({"channel": "web", "connection": "acme"})).await;
    assert_eq!(r.status(), 201);
    let (_, opened) = ids(&body_json(r).await);
    let seen = on_b.take(1, Duration::from_secs(1)).await;
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1["conversation_id"].as_str()),
        ("session_opened", Some(opened.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_under_load_loses_nothing_and_the_others_keep_serving() {
    let mut c = Cluster::start().await;
    let (_, conversation) = c.customer_session(A, 0).await;
    let mut opened = HashSet::from([conversation.clone()]);
    for i in [A, A, B, C] {
        let r = c.open(i, json!({"channel": "web", "connection": "acme"})).await;
        assert_eq!(r.status(), 201);
        opened.insert(ids(&body_json(r).await).1);
    }

    // B and C under load while A is killed: every answer a success.
    let load = (0..40).map(|n| {
        let c = &c;
        let conversation = &conversation;
        async move {
            tokio::time::sleep(Duration::from_millis(25 * n)).await;
            let i = [B, C][n as usize % 2];
            let action = c.action(i, conversation).await.status().as_u16();
            let r = c.open(i, json!({"channel": "web", "connection": "acme"})).await;
            let status = r.status().as_u16();
            (action, status, ids(&body_json(r).await).1)
        }
    });
    // And A itself under load until it is killed: every action it answered
    // 200 must have its audit record (it was written before the answer).
    let on_a = (0..200).map(|n| {
        let c = &c;
        let conversation = &conversation;
        async move {
            tokio::time::sleep(Duration::from_millis(2 * n)).await;
            // Refused once A is gone: not an answer.
            let url = c.url(A, &format!("/v1/conversations/{conversation}/actions/getprofile"));
            match client().post(url).bearer_auth(&c.agent).send().await {
                Ok(r) => {
                    let trace = r.headers().get("x-trace-id").map(|v| v.to_str().unwrap().to_string());
                    (r.status().as_u16(), trace)
                }
                Err(_) => (0, None),
            }
        }
    });
    let victim = c.instances[A].process.0.id().to_string();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = tokio::process::Command::new("kill").args(["-9", &victim]).status();
        assert!(killed.await.unwrap().success());
    };
    let (answers, on_a, ()) = tokio::join!(join_all(load), join_all(on_a), kill);
    for (action, open, conversation) in answers {
        assert_eq!((action, open), (200, 201));
        opened.insert(conversation);
    }
    let acknowledged: Vec<String> = on_a
        .into_iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, trace)| trace.unwrap())
        .collect();
    assert!(!acknowledged.is_empty(), "A answered nothing before it was killed");
    let store = gateway::store::Store::open(&c._db.url).await.unwrap();
    let audited: HashSet<String> = store
        .audit(None, None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.trace_id)
        .collect();
    let missing = acknowledged
        .iter()
        .filter(|t| !audited.iter().any(|a| a.starts_with(t.as_str())))
        .count();
    eprintln!(
        "kill -9 of one instance under load: {} actions answered 200 by it, {missing} without an audit record",
        acknowledged.len()
    );
    assert_eq!(missing, 0);

    let restarted = c.spawn(A).await;
    c.instances[A] = restarted;
    assert_eq!(c.conversations(A).await, opened);
    assert_eq!(c.action(A, &conversation).await.status(), 200);
}
