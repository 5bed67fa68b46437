//! RFC 8693 token exchange, gateway and reference backend both real: the
//! company is sent one token that says "agent X acting for customer Y",
//! with only the action's scope.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::gateway_flow::{World, expect_problem, world_configured};
use crate::support::{backend_counter, client, json as body_json, spawn_company};

/// The test world with `kind = "token_exchange"`, the profile read narrowed
/// to `profile:read` and a card block to `cards:write`; `one_clock` as for
/// `world_configured`.
async fn exchange_world(one_clock: bool) -> World {
    exchange_world_then(one_clock, |toml| toml).await
}

/// `exchange_world`, its gateway configuration then changed by `then`.
async fn exchange_world_then(one_clock: bool, then: impl FnOnce(String) -> String) -> World {
    world_configured(
        |_| {},
        one_clock,
        |toml| {
            then(toml.replace("kind = \"oauth2_client_credentials\"", "kind = \"token_exchange\"")
                .replace(
                    "scope = \"profile:read\"",
                    "scope = \"profile:read transactions:read cards:write\"",
                )
                .replace(
                    "name = \"getprofile\"\npath = \"/getprofile\"",
                    "name = \"getprofile\"\npath = \"/getprofile\"\nscope = \"profile:read\"\ncallers = [\"agent\", \"bot\"]",
                )
                .replacen(
                    "[[channels]]",
                    r#"[[connections.actions]]
name = "blockcard"
kind = "write"
path = "/cards/{card_id}/block"
scope = "cards:write"
input.card_id = { type = "string", required = true }
input.reason = { type = "string", enum = ["lost", "stolen"], default = "lost" }
body = { "/reason" = "reason" }
[[channels]]"#,
                    1,
                ))
        },
    )
    .await
}

async fn run(
    w: &World,
    agent: &str,
    conversation: &str,
    action: &str,
    input: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(
            w.gateway
                .url(&format!("/v1/conversations/{conversation}/actions/{action}")),
        )
        .bearer_auth(agent)
        .json(&json!({ "input": input }));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_company_sees_one_token_naming_the_agent_for_the_customer() {
    let w = exchange_world(true).await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();

    // No client-credentials token and no customer token reach the company:
    // the exchanged token alone carries the customer.
    let r = run(&w, &w.agent, conversation, "getprofile", json!({}), None).await;
    assert_eq!(r.status(), 200);
    let profile = body_json(r).await;
    assert_eq!(profile["data"]["customer_id"], json!(w.seed.users[0].customer_id));
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_exchanged_total").await,
        1
    );
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_issued_total").await,
        0
    );

    // Cached per customer token, actor and scope: the same run exchanges
    // nothing; another scope or another agent is another token.
    let r = run(&w, &w.agent, conversation, "getprofile", json!({}), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_exchanged_total").await,
        1
    );

    // The company knows who acted: the card block says so.
    let r = run(
        &w,
        &w.agent,
        conversation,
        "blockcard",
        json!({"card_id": "card-1101"}),
        Some("k-1"),
    )
    .await;
    let body = body_json(r).await;
    assert_eq!(body["data"]["acted_by"], json!("agent:ana"), "{body}");
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_exchanged_total").await,
        2
    );
    let bot = w.gateway.gateway.add_agent("triage", "bot").await.unwrap();
    let r = run(&w, &bot, conversation, "getprofile", json!({}), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_exchanged_total").await,
        3
    );

    // The audit names the actor the company's token named.
    w.gateway.gateway.flush_audit().await;
    let audit = w.gateway.gateway.store().audit(None, None, 100).await.unwrap();
    let acts: Vec<(&str, Option<&str>)> = audit.iter().map(|r| (r.action.as_str(), r.act.as_deref())).collect();
    assert!(acts.contains(&("blockcard", Some("agent:ana"))), "{acts:?}");
    assert!(acts.contains(&("getprofile", Some("bot:triage"))), "{acts:?}");
}

#[tokio::test]
async fn an_expired_customer_token_is_refused_at_the_exchange_and_asked_for_again() {
    // The gateway on the wall clock, the company past the customer's
    // token: the gateway still holds both tokens as valid, the company
    // refuses the exchanged one (401 invalid_token: dropped, exchanged
    // again) and then the subject (400 invalid_grant).
    let w = exchange_world(false).await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let r = run(&w, &w.agent, conversation, "getprofile", json!({}), None).await;
    assert_eq!(r.status(), 200);
    w.backend.clock.advance(std::time::Duration::from_secs(9 * 3600));
    let r = run(&w, &w.agent, conversation, "getprofile", json!({}), None).await;
    expect_problem(r, 409, "customer_auth_required").await;
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_exchanged_total").await,
        1
    );
    // The conversation waits for a fresh login from the channel.
    let state = crate::support::json(
        client()
            .get(w.gateway.url(&format!("/v1/conversations/{conversation}")))
            .bearer_auth(&w.agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(state["auth_state"], "expired", "{state}");
}

/// The backend's side, spoken to directly: what it accepts as a subject and
/// an actor, and that an exchanged token holds only its scope.
#[tokio::test]
async fn the_backend_exchanges_only_a_valid_customer_token_for_its_scope() {
    let w = exchange_world(true).await;
    let client_id = &w.seed.clients[0].client_id;
    let secret = &w.seed.clients[0].client_secret;
    let jwt = crate::support::login(&w.backend, &w.seed.users[0].username, &w.seed.users[0].password).await;
    let exchange = |form: Vec<(&'static str, String)>| {
        let url = w.backend.url("/access_token");
        async move {
            client()
                .post(url)
                .basic_auth(client_id, Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    let grant = ("grant_type", contract::token_exchange::GRANT_TYPE.to_string());
    let subject_type = ("subject_token_type", contract::token_exchange::JWT.to_string());
    let r = exchange(vec![
        grant.clone(),
        ("subject_token", jwt.clone()),
        subject_type.clone(),
        ("actor_token", "agent:ana".into()),
        ("actor_token_type", contract::token_exchange::ACTOR.into()),
        ("scope", "profile:read".into()),
    ])
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let issued = body_json(r).await;
    assert_eq!(
        issued["issued_token_type"],
        json!(contract::token_exchange::ACCESS_TOKEN)
    );
    assert_eq!(issued["scope"], json!("profile:read"));
    assert!(issued["expires_in"].as_u64().unwrap() <= 300, "{issued}");
    let token = issued["access_token"].as_str().unwrap().to_string();

    // The profile needs no customer token beside it; a card block is outside its scope.
    let api_key = &w.seed.api_keys[0].key;
    let r = client()
        .post(w.backend.url("/getprofile"))
        .bearer_auth(&token)
        .header("api-key", api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(w.backend.url("/cards/card-1101/block"))
        .bearer_auth(&token)
        .header("api-key", api_key)
        .header("idempotency-key", "k-2")
        .json(&json!({"reason": "lost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(body_json(r).await["error"], json!("insufficient_scope"));

    // A forged subject, an unknown actor type, a malformed actor, a missing subject.
    let mut forged = jwt.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refusals = [
        (
            vec![grant.clone(), ("subject_token", forged), subject_type.clone()],
            400,
            "invalid_grant",
        ),
        (
            vec![
                grant.clone(),
                ("subject_token", jwt.clone()),
                subject_type.clone(),
                ("actor_token", "agent:ana".into()),
                ("actor_token_type", contract::token_exchange::JWT.into()),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                grant.clone(),
                ("subject_token", jwt.clone()),
                subject_type.clone(),
                ("actor_token", "root".into()),
                ("actor_token_type", contract::token_exchange::ACTOR.into()),
            ],
            400,
            "invalid_request",
        ),
        (vec![grant.clone(), subject_type.clone()], 400, "invalid_request"),
        (
            vec![
                grant.clone(),
                ("subject_token", jwt.clone()),
                subject_type.clone(),
                ("scope", "admin".into()),
            ],
            400,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in refusals {
        let shown = format!("{:?}", form.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        let r = exchange(form).await;
        assert_eq!(r.status(), status, "{shown}");
        let body = body_json(r).await;
        assert_eq!(body["error"], json!(error), "{shown}: {body}");
        assert!(
            !body.to_string().contains(&jwt[jwt.len() - 20..]),
            "the token is not echoed"
        );
    }
}

#[tokio::test]
async fn an_exchange_endpoint_that_is_down_backs_off_and_callers_hear_unavailable() {
    // The company's token endpoint answers 503 to everything, counting.
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let down = spawn_company(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
    }))
    .await;
    let w = exchange_world_then(false, |toml| {
        toml.lines()
            .map(|line| {
                if line.starts_with("token_url = ") {
                    format!("token_url = \"{down}/token\"")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    let (session, _) = w.customer_session(0, "web").await;
    let conversation = session["conversation_id"].as_str().unwrap();

    let r = run(&w, &w.agent, conversation, "getprofile", json!({}), None).await;
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = expect_problem(r, 503, "system_token_unavailable").await;
    assert!(!body.to_string().contains("eyJ"), "no token in the answer: {body}");
    let tried = asked.load(Ordering::SeqCst);
    assert!(tried >= 1);
    // Within the back-off, callers are answered without asking again.
    for _ in 0..3 {
        let r = run(&w, &w.agent, conversation, "getprofile", json!({}), None).await;
        expect_problem(r, 503, "system_token_unavailable").await;
    }
    assert_eq!(asked.load(Ordering::SeqCst), tried, "the endpoint is not hammered");
    // Nothing reached the company's API without a token.
    assert_eq!(
        backend_counter(&w.backend, "deskbridge_access_tokens_exchanged_total").await,
        0
    );
}
