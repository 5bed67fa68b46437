//! Gateway-issued agent tokens expire, rotate with an overlap, and are
//! listed with their expiry (never their value): through real sockets, with
//! the gateway's clock moved by the test.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backend::ManualClock;
use serde_json::json;

use crate::gateway_flow::expect_problem;
use crate::support::{TestGateway, client, deskbridge, json as body_json};

fn minimal_toml(dir: &std::path::Path) -> String {
    format!("[server]\ndata_dir = \"{}\"\n", dir.display())
}

async fn get(g: &TestGateway, path: &str, token: &str) -> reqwest::Response {
    client().get(g.url(path)).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn an_agent_token_expires_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let g = TestGateway::start_with_clock(&minimal_toml(dir.path()), clock.clone()).await;
    let token = g
        .gateway
        .add_agent_for("ana", "agent", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(get(&g, "/v1/conversations", &token).await.status(), 200);

    clock.advance(Duration::from_secs(3600));
    let body = expect_problem(get(&g, "/v1/conversations", &token).await, 401, "agent_token_expired").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
    assert!(!body.to_string().contains(&token));
    // Not in the console either, and the answer is the same "expired".
    let r = client()
        .post(g.url("/console/api/login"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "agent_token_expired").await;
    // A token that never was an agent's is merely unauthorized.
    expect_problem(
        get(&g, "/v1/conversations", "dbg_not-a-token").await,
        401,
        "unauthorized",
    )
    .await;
    // Issuing the agent a new token (`agent add` again) lets it back in.
    let renewed = g.gateway.add_agent("ana", "agent").await.unwrap();
    assert_eq!(get(&g, "/v1/conversations", &renewed).await.status(), 200);
    g.stop().await;
}

#[tokio::test]
async fn a_rotated_token_works_for_its_overlap_then_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let g = TestGateway::start_with_clock(&minimal_toml(dir.path()), clock.clone()).await;
    let old = g.gateway.add_agent("olga", "admin").await.unwrap();
    let agent = g.gateway.add_agent("ana", "agent").await.unwrap();
    let new = g
        .gateway
        .rotate_agent_token("olga", Duration::from_secs(30 * 86_400), Duration::from_secs(600))
        .await
        .unwrap();
    assert_ne!(old, new);
    for token in [&old, &new] {
        assert_eq!(get(&g, "/v1/audit", token).await.status(), 200);
    }

    // Administrators see every token with its expiry, never its value.
    let r = get(&g, "/v1/agent-tokens", &new).await;
    assert_eq!(r.status(), 200);
    let listed = body_json(r).await;
    for token in [&old, &new, &agent] {
        assert!(!listed.to_string().contains(token.as_str()));
    }
    let start = 1_800_000_000;
    let olga: Vec<_> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["agent"] == "olga")
        .map(|t| (t["expires_at"].as_i64().unwrap(), t["previous"].as_bool().unwrap()))
        .collect();
    assert_eq!(olga, vec![(start + 30 * 86_400, false), (start + 600, true)]);
    // Agents do not.
    expect_problem(get(&g, "/v1/agent-tokens", &agent).await, 403, "forbidden").await;

    clock.advance(Duration::from_secs(600));
    expect_problem(get(&g, "/v1/audit", &old).await, 401, "agent_token_expired").await;
    assert_eq!(get(&g, "/v1/audit", &new).await.status(), 200);
    let listed = body_json(get(&g, "/v1/agent-tokens", &new).await).await;
    assert_eq!(
        listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["agent"] == "olga")
            .count(),
        1
    );

    // A second rotation ends the first token's successor only after its
    // own overlap, and an overlap of 0 ends it at once.
    let newest = g
        .gateway
        .rotate_agent_token("olga", Duration::from_secs(86_400), Duration::ZERO)
        .await
        .unwrap();
    expect_problem(get(&g, "/v1/audit", &new).await, 401, "agent_token_expired").await;
    assert_eq!(get(&g, "/v1/audit", &newest).await.status(), 200);
    // No overlap outlives the old token's own expiry.
    clock.advance(Duration::from_secs(86_000));
    let last = g
        .gateway
        .rotate_agent_token("olga", Duration::from_secs(86_400), Duration::from_secs(7 * 86_400))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(400));
    expect_problem(get(&g, "/v1/audit", &newest).await, 401, "agent_token_expired").await;
    assert_eq!(get(&g, "/v1/audit", &last).await.status(), 200);
    // There is no agent to rotate.
    assert!(
        g.gateway
            .rotate_agent_token("nobody", Duration::from_secs(60), Duration::ZERO)
            .await
            .is_err()
    );
    g.stop().await;
}

#[test]
fn the_cli_adds_with_a_ttl_rotates_and_lists_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, minimal_toml(dir.path())).unwrap();
    let run = |args: &[&str]| deskbridge().args(args).arg("--config").arg(&file).output().unwrap();

    let out = run(&["agent", "add", "ana", "--ttl", "12h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = run(&["agent", "token", "rotate", "ana", "--overlap", "1d", "--ttl", "30d"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(second.starts_with("dbg_") && second != first);

    let out = run(&["agent", "token", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(!listed.contains(&first) && !listed.contains(&second));
    let rows: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    // The old token keeps its own 12 hours (shorter than the overlap).
    let (current, previous) = (
        rows[0]["expires_at"].as_i64().unwrap(),
        rows[1]["expires_at"].as_i64().unwrap(),
    );
    assert!((current - previous - (30 * 86_400 - 12 * 3600)).abs() < 60, "{listed}");

    for (args, says) in [
        (vec!["agent", "add", "bo", "--ttl", "12x"], "not a duration"),
        (vec!["agent", "add", "bo", "--ttl", "9999d"], "longest"),
        (
            vec!["agent", "token", "rotate", "nobody", "--overlap", "1h"],
            "no agent named",
        ),
    ] {
        let out = run(&args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
