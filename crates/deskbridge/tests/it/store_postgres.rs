//! The gateway on PostgreSQL: the main flow, a store that goes away and
//! comes back (through a TCP proxy the test stops), one instance per store,
//! and `deskbridge store copy` / `config check --connect` as an operator
//! runs them. Each test has a database of its own, dropped afterwards.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gateway::store::Store;
use gateway::store::test_support::TestDatabase;
use serde_json::{Value, json};

use crate::gateway_cli::Reaped;
use crate::gateway_flow::{World, expect_problem, world_configured};
use crate::support::{Proxy, announced_url, client, deskbridge, gateway_toml};

/// `url` reaching its server at `addr` instead.
fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{addr}/{path}")
}

/// The Postgres server's address in a store URL.
fn server_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    host.replace("localhost", "127.0.0.1").parse().unwrap()
}

/// A world whose gateway keeps its store at `url`.
async fn world_on(url: &str) -> World {
    let store = format!("\n[store]\nurl = \"{url}\"\nmax_connections = 4\ntimeout_ms = 1000\n");
    world_configured(|_| {}, false, move |toml| toml + &store).await
}

#[tokio::test]
async fn the_main_flow_runs_on_postgres() {
    let db = TestDatabase::postgres().await.unwrap();
    let w = world_on(&db.url).await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap().to_string();
    // The token went into Postgres, sealed.
    let store = Store::open(&db.url).await.unwrap();
    let token = store.token(&conversation).await.unwrap().unwrap();
    assert!(!token.ciphertext.is_empty() && !token.rejected);

    let r = w.action(&conversation, "getprofile").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["name"], "Alice Martin");

    // The console's listing and detail come from Postgres too.
    let admin = w.gateway.gateway.add_agent("root", "admin").await.unwrap();
    let listing: Value = client()
        .get(w.gateway.url("/v1/conversations"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listing["conversations"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c["id"] == conversation.as_str() && c["channels"] == json!(["web"])),
        "{listing}"
    );
    let detail: Value = client()
        .get(w.gateway.url(&format!("/v1/conversations/{conversation}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["auth_state"], "valid");

    // The action's audit record.
    w.gateway.gateway.flush_audit().await;
    let audit = store.audit(None, Some(&conversation), 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].agent.as_str(), audit[0].outcome.as_str()), ("ana", "ok"));
}

#[tokio::test]
async fn an_unreachable_store_answers_503_store_unavailable_and_serving_resumes_when_it_returns() {
    let db = TestDatabase::postgres().await.unwrap();
    let proxy = Proxy::start(server_of(&db.url)).await;
    let w = world_on(&via(&db.url, proxy.addr)).await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap().to_string();
    assert_eq!(w.action(&conversation, "getprofile").await.status(), 200);

    proxy.cut();
    // Sessions, actions and the console's reads: each a 503 within about
    // the store's timeout (1 s here), never a hang or a 500.
    let started = Instant::now();
    let r = w.open_session(json!({"channel": "ios", "connection": "acme"})).await;
    expect_problem(r, 503, "store_unavailable").await;
    expect_problem(w.action(&conversation, "getprofile").await, 503, "store_unavailable").await;
    let r = client()
        .get(w.gateway.url("/v1/conversations"))
        .bearer_auth(&w.agent)
        .send()
        .await
        .unwrap();
    expect_problem(r, 503, "store_unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = w.action(&conversation, "getprofile").await.status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} after the store returned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = w.open_session(json!({"channel": "ios", "connection": "acme"})).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn a_second_instance_on_the_same_database_refuses_to_start() {
    let db = TestDatabase::postgres().await.unwrap();
    let w = world_on(&db.url).await;
    // Registered before the other process looks (`serve` does this in its
    // task, which may not have run yet).
    w.gateway.gateway.claim_instance().await.unwrap();
    // The world's gateway serves from this database; a `deskbridge serve`
    // of another process on it refuses, and says what to do.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let toml = gateway_toml(dir.path(), &w.backend, &w.seed) + &format!("\n[store]\nurl = \"{}\"\n", db.url);
    std::fs::write(&file, toml).unwrap();
    let mut refused = Reaped(
        deskbridge()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Bounded: a `serve` that started after all would otherwise run on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = refused.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second instance did not refuse to start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("[cluster]") && stderr.contains("another gateway instance"),
        "{stderr}"
    );

    // Once the first one has stopped cleanly, the other starts.
    w.gateway.stop().await;
    let mut second = Reaped(
        deskbridge()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let url = announced_url(&mut second.0);
    assert_eq!(
        client().get(format!("{url}/readyz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn store_copy_moves_an_embedded_install_to_postgres() {
    let sqlite = TestDatabase::sqlite().unwrap();
    let postgres = TestDatabase::postgres().await.unwrap();
    // An embedded install with a conversation, a sealed token and an audit record.
    let conversation = {
        let data_dir = sqlite.dir().unwrap().to_path_buf();
        let w = world_configured(
            |_| {},
            false,
            move |toml| {
                toml.replace(
                    &format!("data_dir = \"{}\"", toml_dir(&toml)),
                    &format!("data_dir = \"{}\"", data_dir.display()),
                )
            },
        )
        .await;
        let (session, _) = w.customer_session(0, "web").await;
        let conversation = session["conversation_id"].as_str().unwrap().to_string();
        assert_eq!(w.action(&conversation, "getprofile").await.status(), 200);
        w.gateway.stop().await;
        conversation
    };
    let out = deskbridge()
        .args(["store", "copy", "--from", &sqlite.url, "--to", &postgres.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &report["conversations"],
            &report["customer_tokens"],
            &report["agents"],
            &report["audit"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "{report}"
    );
    let copied = Store::open(&postgres.url).await.unwrap();
    let original = Store::open(&sqlite.url).await.unwrap();
    assert_eq!(
        copied.token(&conversation).await.unwrap().unwrap().ciphertext,
        original.token(&conversation).await.unwrap().unwrap().ciphertext
    );
    assert_eq!(copied.audit(None, None, 10).await.unwrap().len(), 1);
    // A second copy would double everything: refused.
    let again = deskbridge()
        .args(["store", "copy", "--from", &sqlite.url, "--to", &postgres.url])
        .output()
        .unwrap();
    assert!(!again.status.success());
    // A mistyped source is no empty store to copy.
    let missing = format!("sqlite://{}/nothing-here.db", sqlite.dir().unwrap().display());
    let out = deskbridge()
        .args(["store", "copy", "--from", &missing, "--to", &postgres.url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such database file"));
}

/// The `data_dir` a gateway configuration names.
fn toml_dir(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("data_dir = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string()
}

#[test]
fn config_check_connect_says_which_store_failed_and_why_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    // Nothing listens on port 1.
    std::fs::write(
        &file,
        "[store]\nurl = \"postgres://deskbridge:hunter2secret@127.0.0.1:1/deskbridge\"\ntimeout_ms = 500\n",
    )
    .unwrap();
    let plain = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let out = deskbridge()
        .args(["config", "check", "--connect"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("store: cannot connect to postgres://deskbridge:****@127.0.0.1:1/deskbridge"),
        "{said}"
    );
    assert!(!said.contains("hunter2secret"), "{said}");

    std::fs::write(&file, "[store]\nurl = \"mysql://x\"\n").unwrap();
    let out = deskbridge().args(["config", "check"]).arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("store.url"));
}

/// With `[cluster]`, `--connect` reaches Redis too, and says which server
/// failed without its password.
#[tokio::test]
async fn config_check_connect_reaches_the_cluster_redis() {
    let db = TestDatabase::postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let key = "[crypto]\ntoken_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n";
    let write = |redis: &str| {
        std::fs::write(
            &file,
            format!(
                "[store]\nurl = \"{}\"\n{key}[cluster]\nredis_url = \"{redis}\"\nkey_prefix = \"cfg-check:\"\n",
                db.url
            ),
        )
        .unwrap()
    };
    let check = || {
        let out = deskbridge()
            .args(["config", "check", "--connect"])
            .arg(&file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    write("redis://127.0.0.1:6379/0");
    let (ok, said) = check();
    assert!(ok, "{said}");
    assert!(said.contains("cluster: reached Redis at 127.0.0.1:6379/0"), "{said}");

    // Nothing listens on port 1.
    write("redis://:hunter2secret@127.0.0.1:1/0");
    let (ok, said) = check();
    assert!(!ok, "{said}");
    assert!(
        said.contains("cluster: Redis at 127.0.0.1:1/0 did not answer"),
        "{said}"
    );
    assert!(!said.contains("hunter2secret"), "{said}");
}

#[tokio::test]
async fn store_migrate_runs_the_migrations_alone() {
    let db = TestDatabase::postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, format!("[store]\nurl = \"{}\"\n", db.url)).unwrap();
    for _ in 0..2 {
        let out = deskbridge()
            .args(["store", "migrate", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        gateway::store::postgres_migrations()
    );
}
