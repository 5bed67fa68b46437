//! The desk's own ids for conversations (`external_ref`), from the channel
//! and from agents, and the embeddable customer card's page, on real sockets.

use serde_json::{Value, json};

use crate::gateway_flow::{World, expect_problem, world_configured};
use crate::support::{APP_KEY, client, json as body_json, login};

const DESK: &str = "https://desk.example.com";

async fn world() -> World {
    world_configured(
        |_| {},
        false,
        |toml| toml + &format!("[console]\nsecure_cookies = false\ncard_origins = [\"{DESK}\"]\n"),
    )
    .await
}

impl World {
    async fn lookup(&self, query: &str) -> reqwest::Response {
        client()
            .get(self.gateway.url(&format!("/v1/conversations?{query}")))
            .bearer_auth(&self.agent)
            .send()
            .await
            .unwrap()
    }

    /// The ids of the conversations `query` finds.
    async fn found(&self, query: &str) -> Vec<String> {
        let r = self.lookup(query).await;
        assert_eq!(r.status(), 200);
        body_json(r).await["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }

    async fn jwt(&self, user: usize) -> String {
        let u = &self.seed.users[user];
        login(&self.backend, &u.username, &u.password).await
    }

    async fn agent_binds(&self, conversation: &str, external_ref: &str) -> reqwest::Response {
        client()
            .post(
                self.gateway
                    .url(&format!("/v1/conversations/{conversation}/external-refs")),
            )
            .bearer_auth(&self.agent)
            .json(&json!({ "external_ref": external_ref }))
            .send()
            .await
            .unwrap()
    }

    async fn channel_binds(&self, session: &str, external_ref: &str) -> reqwest::Response {
        client()
            .post(self.gateway.url(&format!("/v1/sessions/{session}/external-refs")))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({ "external_ref": external_ref }))
            .send()
            .await
            .unwrap()
    }
}

fn id(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_desk_finds_the_conversation_by_its_own_ticket_id_and_runs_an_action_in_it() {
    let w = world().await;
    let jwt = w.jwt(0).await;
    let r = w
        .open_session(
            json!({"channel": "web", "connection": "acme", "auth": {"token": jwt}, "external_ref": "zd-48213"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let conversation = id(&body_json(r).await, "conversation_id");

    assert_eq!(
        w.found("external_ref=zd-48213").await,
        std::slice::from_ref(&conversation)
    );
    assert_eq!(
        w.found("external_ref=zd-48213&connection=acme").await,
        std::slice::from_ref(&conversation)
    );
    // Refs are per connection: the same id on another is another ticket.
    assert!(w.found("external_ref=zd-48213&connection=other").await.is_empty());
    assert!(w.found("external_ref=zd-00000").await.is_empty());
    let listed = body_json(w.lookup("external_ref=zd-48213").await).await;
    assert_eq!(listed["conversations"][0]["auth_state"], "valid");
    assert_eq!(listed["next_cursor"], Value::Null);

    let detail = body_json(
        client()
            .get(w.gateway.url(&format!("/v1/conversations/{conversation}")))
            .bearer_auth(&w.agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(detail["external_refs"][0]["external_ref"], "zd-48213");
    assert_eq!(detail["external_refs"][0]["bound_by"], "channel:web");

    // Found by ref, the conversation is the customer's, actions and all.
    let r = w.action(&conversation, "getprofile").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["data"]["name"], "Alice Martin");

    // The agent adds the desk's ticket of a later contact: both find it.
    let r = w.agent_binds(&conversation, "ticket:991").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["conversation_id"], conversation.as_str());
    assert_eq!(
        w.found("external_ref=ticket:991").await,
        std::slice::from_ref(&conversation)
    );
    assert_eq!(w.found("external_ref=zd-48213").await, [conversation]);
}

/// A customer's page could name a ticket that is someone else's, and so
/// put itself on the agent's screen in place of that customer: a channel
/// never moves a bound ref. The agent (the desk's own word) can.
#[tokio::test]
async fn a_channel_cannot_take_another_customers_ref_but_an_agent_can_move_it() {
    let w = world().await;
    let (alice, bruno) = (w.jwt(0).await, w.jwt(1).await);
    let r = w
        .open_session(json!({"channel": "web", "connection": "acme", "auth": {"token": alice}, "external_ref": "zd-7"}))
        .await;
    let alices = id(&body_json(r).await, "conversation_id");

    let r = w
        .open_session(json!({"channel": "web", "connection": "acme", "auth": {"token": bruno}, "external_ref": "zd-7"}))
        .await;
    let body = expect_problem(r, 409, "external_ref_taken").await;
    assert!(!body["detail"].as_str().unwrap().contains(&alices), "{body}");
    let r = w
        .open_session(json!({"channel": "web", "connection": "acme", "external_ref": "zd-7"}))
        .await;
    expect_problem(r, 409, "external_ref_taken").await;
    // No empty conversation was left behind by the refusals.
    let all = body_json(w.lookup("limit=50").await).await;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 1, "{all}");

    let r = w
        .open_session(json!({"channel": "ios", "connection": "acme", "auth": {"token": bruno}}))
        .await;
    let opened = body_json(r).await;
    let (session, brunos) = (id(&opened, "session_id"), id(&opened, "conversation_id"));
    expect_problem(w.channel_binds(&session, "zd-7").await, 409, "external_ref_taken").await;
    assert_eq!(w.found("external_ref=zd-7").await, std::slice::from_ref(&alices));
    // Its own, new ref: fine, and idempotent.
    for _ in 0..2 {
        let r = w.channel_binds(&session, "chat-55").await;
        assert_eq!(r.status(), 200);
        assert_eq!(body_json(r).await["conversation_id"], brunos.as_str());
    }

    assert_eq!(w.agent_binds(&brunos, "zd-7").await.status(), 200);
    assert_eq!(w.found("external_ref=zd-7").await, std::slice::from_ref(&brunos));
    let detail = body_json(
        client()
            .get(w.gateway.url(&format!("/v1/conversations/{brunos}")))
            .bearer_auth(&w.agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let refs: Vec<(&str, &str)> = detail["external_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["external_ref"].as_str().unwrap(), r["bound_by"].as_str().unwrap()))
        .collect();
    assert!(refs.contains(&("zd-7", "agent:ana")), "{refs:?}");
    assert!(refs.contains(&("chat-55", "channel:ios")), "{refs:?}");
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "external_ref_bound")
    );
}

#[tokio::test]
async fn an_anonymous_chats_ref_follows_it_into_the_customers_conversation() {
    let w = world().await;
    let r = w
        .open_session(json!({"channel": "web", "connection": "acme", "external_ref": "chat/abc-1"}))
        .await;
    let opened = body_json(r).await;
    let (session, anonymous) = (id(&opened, "session_id"), id(&opened, "conversation_id"));
    assert_eq!(
        w.found("external_ref=chat/abc-1").await,
        std::slice::from_ref(&anonymous)
    );

    let jwt = w.jwt(0).await;
    let r = client()
        .post(w.gateway.url(&format!("/v1/sessions/{session}/authenticate")))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&json!({"auth": {"token": jwt}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let customers = id(&body_json(r).await, "conversation_id");
    assert_ne!(customers, anonymous);
    assert_eq!(w.found("external_ref=chat%2Fabc-1").await, [customers]);
}

#[tokio::test]
async fn refs_are_checked_and_refusals_say_what_is_wrong() {
    let w = world().await;
    let long = "x".repeat(129);
    for bad in ["", "has space", "quote\"", "<script>", "ünï", "tab\t", long.as_str()] {
        let r = w
            .open_session(json!({"channel": "web", "connection": "acme", "external_ref": bad}))
            .await;
        let body = expect_problem(r, 400, "invalid_external_ref").await;
        assert!(body["detail"].as_str().unwrap().starts_with("external_ref "), "{body}");
        let query = format!("external_ref={}", urlencode(bad));
        expect_problem(w.lookup(&query).await, 400, "invalid_external_ref").await;
    }
    // The longest and every allowed sign are fine.
    let fine = format!("{}z-_.:/#@+=", "A1".repeat(59));
    assert_eq!(fine.len(), 128);
    let r = w
        .open_session(json!({"channel": "web", "connection": "acme", "external_ref": fine}))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(w.found(&format!("external_ref={}", urlencode(&fine))).await.len(), 1);

    expect_problem(w.lookup("connection=acme").await, 400, "invalid_request").await;
    expect_problem(w.agent_binds("cnv_nope", "zd-1").await, 404, "not_found").await;
    let unknown = format!("cnv_{}", "A".repeat(43));
    expect_problem(w.agent_binds(&unknown, "zd-1").await, 404, "not_found").await;
    let r = client()
        .post(w.gateway.url("/v1/sessions/ses_nope/external-refs"))
        .header("x-deskbridge-app-key", APP_KEY)
        .json(&json!({"external_ref": "zd-1"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 404, "unknown_session").await;
    // Without a credential, nothing is found or bound.
    let r = client()
        .get(w.gateway.url("/v1/conversations?external_ref=zd-1"))
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "unauthorized").await;
    let (opened, _) = w.customer_session(0, "web").await;
    let r = client()
        .post(
            w.gateway
                .url(&format!("/v1/sessions/{}/external-refs", id(&opened, "session_id"))),
        )
        .header("x-deskbridge-app-key", "not-the-key")
        .json(&json!({"external_ref": "zd-1"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "invalid_app_key").await;
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The card is framed by the configured desk origin it names, and by no
/// other page: a made-up or unlisted `host` gets no card, and cannot smuggle
/// anything into the policy.
#[tokio::test]
async fn the_card_page_is_framed_only_by_a_configured_desk() {
    let w = world().await;
    let r = client()
        .get(w.gateway.url(&format!("/card?host={}", urlencode(DESK))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains(&format!("frame-ancestors {DESK};")), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(r.headers().get("x-frame-options").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("data-mode=\"card\"") && page.contains("/console/console.js"));

    for host in [
        "",
        "?host=https%3A%2F%2Fevil.example.com",
        "?host=https%3A%2F%2Fdesk.example.com.evil.com",
        "?host=https%3A%2F%2Fdesk.example.com%3B%20frame-ancestors%20*",
        "?host=*",
    ] {
        let r = client()
            .get(w.gateway.url(&format!("/card{host}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{host}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("frame-ancestors 'none'"), "{host}: {csp}");
        expect_problem(r, 403, "origin_not_allowed").await;
    }

    // Who the desk's token is: what the card shows and decides by.
    let r = client()
        .get(w.gateway.url("/v1/me"))
        .bearer_auth(&w.agent)
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(r).await, json!({"name": "ana", "role": "agent"}));
    let r = client()
        .get(w.gateway.url("/v1/me"))
        .bearer_auth("dbg_not-a-token")
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "unauthorized").await;
}
