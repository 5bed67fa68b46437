//! Actions with inputs, writes, roles, masks and callers other than agents,
//! through a real gateway and a company server that records what it gets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use crate::gateway_flow::{expect_problem, gateway_for};
use crate::support::{APP_KEY, TestGateway, client, json as body_json, spawn_company};

/// What the company got: method, path and query, idempotency key,
/// customer token header, body.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    uri: String,
    idempotency_key: Option<String>,
    customer_auth: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A company that answers every path: accounts with ids and an email (to
/// mask), a 500 for card `card-fail`, and a slow write for card `card-slow`.
async fn recording_company() -> (String, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                let path = uri.path().to_string();
                seen.lock().unwrap().push(Received {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    idempotency_key: header("idempotency-key"),
                    customer_auth: header("x-customer-auth"),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                if path.ends_with("/card-fail/block") {
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": "down"})),
                    );
                }
                if path.ends_with("/card-slow/block") {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({
                        "path": path,
                        "email": "ana@example.com",
                        "accounts": [{"id": "acc-12345678", "iban": "DE89370400440532013000"}, {"id": "acc-87654321"}],
                    })),
                )
            }
        },
    );
    (spawn_company(app).await, log)
}

const ACTIONS: &str = r#"
[[connections.actions]]
name = "gettransactions"
path = "/accounts/{account_id}/transactions"
input.account_id = { type = "string", required = true, pattern = "acc-[0-9]{4}|a b/c" }
input.limit = { type = "integer", minimum = 1, maximum = 100, default = 20 }
input.kind = { type = "string", enum = ["debit", "credit"] }
input.min_amount = { type = "number", minimum = 0.5 }
input.pending = { type = "boolean" }
input.note = { type = "string", max_length = 5 }
query = { limit = "limit", kind = "kind" }
body = { "/page/size" = "limit", "/filter/pending" = "pending", "/filter/min" = "min_amount" }
callers = ["agent", "customer", "bot"]
redact = { "/accounts/*/id" = "last4", "/email" = "hide" }
redact_for.bot = {}
redact_for.customer = { "/accounts/*/iban" = "last4" }
[[connections.actions]]
name = "blockcard"
kind = "write"
path = "/cards/{card_id}/block"
input.card_id = { type = "string", required = true }
input.reason = { type = "string", enum = ["lost", "stolen"], default = "lost" }
body = { "/reason" = "reason" }
[[connections.actions]]
name = "supervisors_only"
path = "/audit-trail"
roles = ["supervisor"]
[connections.customer_auth]
in = "header"
name = "x-customer-auth"
format = "{token}"
"#;

struct Desk {
    _dir: tempfile::TempDir,
    gateway: TestGateway,
    agent: String,
    conversation: String,
    log: Log,
}

async fn desk() -> Desk {
    let (url, log) = recording_company().await;
    let dir = tempfile::tempdir().unwrap();
    let (gateway, agent, conversation) = gateway_for(dir.path(), "bank", &url, ACTIONS).await;
    Desk {
        _dir: dir,
        gateway,
        agent,
        conversation,
        log,
    }
}

impl Desk {
    async fn run_as(&self, token: &str, action: &str, body: Option<Value>, key: Option<&str>) -> reqwest::Response {
        let mut request = client()
            .post(
                self.gateway
                    .url(&format!("/v1/conversations/{}/actions/{action}", self.conversation)),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    async fn run(&self, action: &str, input: Value, key: Option<&str>) -> reqwest::Response {
        self.run_as(&self.agent, action, Some(json!({ "input": input })), key)
            .await
    }

    fn calls(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    async fn add(&self, name: &str, role: &str) -> String {
        self.gateway.gateway.add_agent(name, role).await.unwrap()
    }
}

fn field_errors(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_inputs_get_one_error_per_field_and_the_company_is_never_called() {
    let d = desk().await;
    let bad = [
        (json!({}), vec![("account_id", "is required")]),
        (json!({"account_id": 1234}), vec![("account_id", "must be a string")]),
        (
            json!({"account_id": "acc-12"}),
            vec![("account_id", "does not match the pattern")],
        ),
        (
            json!({"account_id": "acc-1234", "limit": 0}),
            vec![("limit", "must be at least 1")],
        ),
        (
            json!({"account_id": "acc-1234", "limit": 101}),
            vec![("limit", "must be at most 100")],
        ),
        (
            json!({"account_id": "acc-1234", "limit": 2.5}),
            vec![("limit", "must be an integer")],
        ),
        (
            json!({"account_id": "acc-1234", "limit": "20"}),
            vec![("limit", "must be an integer")],
        ),
        (
            json!({"account_id": "acc-1234", "kind": "both"}),
            vec![("kind", "must be one of: debit, credit")],
        ),
        (
            json!({"account_id": "acc-1234", "min_amount": 0.1}),
            vec![("min_amount", "must be at least 0.5")],
        ),
        (
            json!({"account_id": "acc-1234", "min_amount": "1"}),
            vec![("min_amount", "must be a number")],
        ),
        (
            json!({"account_id": "acc-1234", "pending": "yes"}),
            vec![("pending", "must be true or false")],
        ),
        (
            json!({"account_id": "acc-1234", "note": "too long"}),
            vec![("note", "must be at most 5 characters")],
        ),
        (
            json!({"account_id": "acc-1234", "owner": "x"}),
            vec![("owner", "no such input field")],
        ),
        (
            json!({"limit": -1, "kind": 3, "secret-ish": true}),
            vec![
                ("secret-ish", "no such input field"),
                ("account_id", "is required"),
                ("kind", "must be a string"),
                ("limit", "must be at least 1"),
            ],
        ),
    ];
    for (input, expected) in bad {
        let problem = expect_problem(
            d.run("gettransactions", input.clone(), None).await,
            422,
            "invalid_action_input",
        )
        .await;
        let got = field_errors(&problem);
        assert_eq!(got.len(), expected.len(), "{input}: {problem}");
        for ((field, reason), (want_field, want_reason)) in got.iter().zip(&expected) {
            assert_eq!(field, want_field, "{input}: {problem}");
            assert!(
                reason.starts_with(want_reason),
                "{input}: {reason:?} is not {want_reason:?}"
            );
        }
    }
    // A body that is not `{"input": {…}}`, or no body where one is needed.
    let r = d
        .run_as(
            &d.agent,
            "gettransactions",
            Some(json!({"account_id": "acc-1234"})),
            None,
        )
        .await;
    expect_problem(r, 400, "invalid_request").await;
    let r = d.run_as(&d.agent, "gettransactions", None, None).await;
    expect_problem(r, 422, "invalid_action_input").await;
    let r = client()
        .post(
            d.gateway
                .url(&format!("/v1/conversations/{}/actions/gettransactions", d.conversation)),
        )
        .bearer_auth(&d.agent)
        .header("content-type", "text/plain")
        .body("input")
        .send()
        .await
        .unwrap();
    expect_problem(r, 415, "unsupported_media_type").await;
    assert!(d.calls().is_empty(), "the company was called: {:?}", d.calls());
}

#[tokio::test]
async fn inputs_land_in_the_path_query_and_body_as_configured() {
    let d = desk().await;
    let input = json!({"account_id": "a b/c", "kind": "debit", "pending": true, "min_amount": 2.75});
    let r = d.run("gettransactions", input, None).await;
    assert_eq!(r.status(), 200);
    let calls = d.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    // The value fills one segment, encoded: it cannot add a segment or a query.
    assert_eq!(call.uri, "/accounts/a%20b%2Fc/transactions?kind=debit&limit=20");
    assert_eq!(
        call.body,
        json!({"page": {"size": 20}, "filter": {"pending": true, "min": 2.75}})
    );
    assert_eq!(call.customer_auth.as_deref(), Some("t"));
    assert_eq!(call.idempotency_key, None, "a read carries no idempotency key");
    // Dot segments could climb out of the path: refused, never sent.
    for dots in [".", ".."] {
        let problem = expect_problem(
            d.run("blockcard", json!({"card_id": dots}), Some("k")).await,
            422,
            "invalid_action_input",
        )
        .await;
        assert_eq!(field_errors(&problem)[0].0, "card_id");
    }
    assert_eq!(d.calls().len(), 1);
}

#[tokio::test]
async fn a_write_runs_once_per_idempotency_key() {
    let d = desk().await;
    // No key, or one that cannot be a header value of ours: refused before the company.
    expect_problem(
        d.run("blockcard", json!({"card_id": "card-1"}), None).await,
        400,
        "idempotency_key_required",
    )
    .await;
    let long = "k".repeat(256);
    expect_problem(
        d.run("blockcard", json!({"card_id": "card-1"}), Some(&long)).await,
        400,
        "idempotency_key_required",
    )
    .await;
    assert!(d.calls().is_empty());

    let first = body_json(d.run("blockcard", json!({"card_id": "card-1"}), Some("click-1")).await).await;
    assert_eq!(first["meta"]["replayed"], false, "{first}");
    let again = body_json(
        d.run(
            "blockcard",
            json!({"card_id": "card-1", "reason": "lost"}),
            Some("click-1"),
        )
        .await,
    )
    .await;
    assert_eq!(
        again["meta"]["replayed"], true,
        "the same input (its default spelled out) is the same request"
    );
    assert_eq!(again["data"], first["data"]);
    let calls = d.calls();
    assert_eq!(calls.len(), 1, "the company was called again: {calls:?}");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("click-1"));
    assert_eq!(calls[0].uri, "/cards/card-1/block");
    assert_eq!(calls[0].body, json!({"reason": "lost"}));

    // The same key with another input is a mistake, not a retry.
    let other = d.run("blockcard", json!({"card_id": "card-2"}), Some("click-1")).await;
    expect_problem(other, 409, "idempotency_key_reused").await;
    // Another key is another change.
    let second = d.run("blockcard", json!({"card_id": "card-1"}), Some("click-2")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(d.calls().len(), 2);

    // A company that failed keeps no outcome: the same key may try again.
    let failed = d
        .run("blockcard", json!({"card_id": "card-fail"}), Some("click-3"))
        .await;
    expect_problem(failed, 502, "backend_error").await;
    let retried = d
        .run("blockcard", json!({"card_id": "card-fail"}), Some("click-3"))
        .await;
    expect_problem(retried, 502, "backend_error").await;
    assert_eq!(
        d.calls().len(),
        4,
        "a failed write is not retried by the gateway, but may be by its caller"
    );

    // Two clicks at once: one reaches the company, the other is told it runs.
    let (a, b) = tokio::join!(
        d.run("blockcard", json!({"card_id": "card-slow"}), Some("click-4")),
        d.run("blockcard", json!({"card_id": "card-slow"}), Some("click-4")),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let slow_calls = d.calls().iter().filter(|c| c.uri.contains("card-slow")).count();
    assert_eq!(slow_calls, 1);

    // The audit log has each run with its outcome, field names and a digest, never a value.
    d.gateway.gateway.flush_audit().await;
    let audit = d.gateway.gateway.store().audit(None, None, 100).await.unwrap();
    let outcomes: Vec<&str> = audit.iter().rev().map(|a| a.outcome.as_str()).collect();
    // (A key that cannot be one is refused with the malformed request, unaudited.)
    let expected = [
        "idempotency_key_required",
        "ok",
        "replayed",
        "idempotency_key_reused",
        "ok",
        "backend_error",
        "backend_error",
    ];
    assert_eq!(outcomes[..expected.len()], expected, "{outcomes:?}");
    let replayed = audit.iter().find(|a| a.outcome == "replayed").unwrap();
    assert_eq!(replayed.input_fields, ["card_id", "reason"]);
    let digest = replayed.input_digest.as_deref().unwrap();
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains("card-1") && !text.contains("card-slow"),
        "a value reached the audit log: {text}"
    );
}

#[tokio::test]
async fn roles_masks_and_reveals() {
    let d = desk().await;
    let supervisor = d.add("sam", "supervisor").await;
    let bot = d.add("helper-bot", "bot").await;

    // Roles: only supervisors run this one.
    expect_problem(d.run("supervisors_only", json!({}), None).await, 403, "forbidden").await;
    let r = d.run_as(&supervisor, "supervisors_only", None, None).await;
    assert_eq!(r.status(), 200);
    // A role no one configured is refused when the agent is added.
    assert!(d.gateway.gateway.add_agent("x", "wizard").await.is_err());

    // Masks for agents: the last four characters of each account id, no email.
    let input = json!({"input": {"account_id": "acc-1234"}});
    let agent_view = body_json(d.run_as(&d.agent, "gettransactions", Some(input.clone()), None).await).await;
    assert_eq!(agent_view["data"]["email"], "••••");
    assert_eq!(agent_view["data"]["accounts"][0]["id"], "••••5678");
    assert_eq!(agent_view["data"]["accounts"][0]["iban"], "DE89370400440532013000");
    assert_eq!(
        agent_view["meta"]["masked"],
        json!([
            {"pointer": "/accounts/0/id", "mask": "last4"},
            {"pointer": "/accounts/1/id", "mask": "last4"},
            {"pointer": "/email", "mask": "hide"},
        ])
    );
    // A bot's own masks (none here); and a bot may not sign in to the console.
    let bot_view = body_json(d.run_as(&bot, "gettransactions", Some(input.clone()), None).await).await;
    assert_eq!(bot_view["data"]["email"], "ana@example.com");
    assert_eq!(bot_view["meta"]["masked"], json!([]));
    let signin = client()
        .post(d.gateway.url("/console/api/login"))
        .json(&json!({"token": bot}))
        .send()
        .await
        .unwrap();
    expect_problem(signin, 403, "forbidden").await;

    // Reveal: a reason, a role that may, and a value that is masked.
    let reveal = |token: String, body: Value| {
        let url = d.gateway.url(&format!(
            "/v1/conversations/{}/actions/gettransactions/reveal",
            d.conversation
        ));
        async move { client().post(url).bearer_auth(token).json(&body).send().await.unwrap() }
    };
    let asked = json!({"pointer": "/accounts/1/id", "reason": "customer asked which account was charged", "input": {"account_id": "acc-1234"}});
    expect_problem(reveal(d.agent.clone(), asked.clone()).await, 403, "forbidden").await;
    let shown = body_json(reveal(supervisor.clone(), asked.clone()).await).await;
    assert_eq!(shown, json!({"pointer": "/accounts/1/id", "value": "acc-87654321"}));
    let unmasked = json!({"pointer": "/accounts/0/iban", "reason": "why not", "input": {"account_id": "acc-1234"}});
    expect_problem(reveal(supervisor.clone(), unmasked).await, 403, "forbidden").await;
    let no_reason = json!({"pointer": "/email", "reason": " ", "input": {"account_id": "acc-1234"}});
    expect_problem(reveal(supervisor.clone(), no_reason).await, 400, "invalid_request").await;
    let write = d.gateway.url(&format!(
        "/v1/conversations/{}/actions/blockcard/reveal",
        d.conversation
    ));
    let r = client()
        .post(write)
        .bearer_auth(&supervisor)
        .json(&json!({"pointer": "/card", "reason": "r", "input": {"card_id": "c"}}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "forbidden").await;

    d.gateway.gateway.flush_audit().await;
    let audit = d.gateway.gateway.store().audit(Some("sam"), None, 100).await.unwrap();
    let revealed: Vec<_> = audit
        .iter()
        .filter(|a| a.revealed.is_some() && a.outcome == "ok")
        .collect();
    assert_eq!(revealed.len(), 1, "{audit:?}");
    assert_eq!(revealed[0].revealed.as_deref(), Some("/accounts/1/id"));
    assert_eq!(
        revealed[0].reason.as_deref(),
        Some("customer asked which account was charged")
    );
    let bots = d
        .gateway
        .gateway
        .store()
        .audit(Some("helper-bot"), None, 10)
        .await
        .unwrap();
    assert_eq!(bots[0].caller, "bot");

    // The actions listing says what this agent may do with each.
    let list = body_json(
        client()
            .get(d.gateway.url("/v1/connections/bank/actions"))
            .bearer_auth(&d.agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let by_name = |name: &str| {
        list["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    let tx = by_name("gettransactions");
    assert_eq!(
        (tx["kind"].as_str(), tx["may_run"].as_bool(), tx["may_reveal"].as_bool()),
        (Some("read"), Some(true), Some(false))
    );
    assert_eq!(tx["input"]["required"], json!(["account_id"]));
    assert_eq!(tx["input"]["properties"]["limit"]["maximum"], json!(100.0));
    assert_eq!(tx["masks"], json!({"/accounts/*/id": "last4", "/email": "hide"}));
    assert_eq!(by_name("blockcard")["kind"], "write");
    assert_eq!(by_name("supervisors_only")["may_run"], false);
}

#[tokio::test]
async fn customers_run_allowed_actions_on_their_own_conversation_only() {
    let d = desk().await;
    let customer_run = |session: String, action: &'static str, key: &'static str, input: Value| {
        let url = d.gateway.url(&format!("/v1/sessions/{session}/actions/{action}"));
        async move {
            client()
                .post(url)
                .header("x-deskbridge-app-key", key)
                .json(&json!({ "input": input }))
                .send()
                .await
                .unwrap()
        }
    };
    let open = |body: Value| {
        let url = d.gateway.url("/v1/sessions");
        async move {
            body_json(
                client()
                    .post(url)
                    .header("x-deskbridge-app-key", APP_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // Anonymous: nobody to act for.
    let anonymous = open(json!({"channel": "web", "connection": "bank"})).await;
    let anonymous = anonymous["session_id"].as_str().unwrap().to_string();
    let r = customer_run(anonymous, "gettransactions", APP_KEY, json!({"account_id": "acc-1234"})).await;
    expect_problem(r, 401, "customer_auth_required").await;

    let mine = open(json!({"channel": "web", "connection": "bank", "customer_id": "cus_0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e", "auth": {"token": "token-of-bruno", "expires_in": 600}})).await;
    let session = mine["session_id"].as_str().unwrap().to_string();
    assert_ne!(mine["conversation_id"].as_str(), Some(d.conversation.as_str()));
    // The wrong app key; an action not open to customers; a write without "customer".
    expect_problem(
        customer_run(
            session.clone(),
            "gettransactions",
            "wrong-key",
            json!({"account_id": "acc-1234"}),
        )
        .await,
        401,
        "invalid_app_key",
    )
    .await;
    expect_problem(
        customer_run(session.clone(), "supervisors_only", APP_KEY, json!({})).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        customer_run(session.clone(), "blockcard", APP_KEY, json!({"card_id": "c"})).await,
        403,
        "forbidden",
    )
    .await;
    assert!(d.calls().is_empty());

    let r = customer_run(
        session.clone(),
        "gettransactions",
        APP_KEY,
        json!({"account_id": "acc-1234"}),
    )
    .await;
    let answer = body_json(r).await;
    // The customer's own masks: their account ids in full, the IBAN's last four.
    assert_eq!(answer["data"]["accounts"][0]["id"], "acc-12345678", "{answer}");
    assert_eq!(answer["data"]["accounts"][0]["iban"], "••••3000");
    assert_eq!(answer["data"]["email"], "ana@example.com");
    // It ran with this customer's token, so the company answers for them alone.
    let calls = d.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].customer_auth.as_deref(), Some("token-of-bruno"));
    d.gateway.gateway.flush_audit().await;
    let audit = d.gateway.gateway.store().audit(Some(&session), None, 10).await.unwrap();
    assert_eq!(
        (audit[0].caller.as_str(), audit[0].outcome.as_str()),
        ("customer", "ok")
    );
}

#[tokio::test]
async fn the_openapi_document_has_each_action_with_its_input() {
    let d = desk().await;
    let doc = body_json(client().get(d.gateway.url("/openapi.json")).send().await.unwrap()).await;
    let input = &doc["components"]["schemas"]["bank.gettransactions.input"];
    assert_eq!(input["properties"]["account_id"]["pattern"], "^(?:acc-[0-9]{4}|a b/c)$");
    assert_eq!(input["additionalProperties"], false);
    let op = &doc["paths"]["/v1/conversations/{id}/actions/blockcard"]["post"];
    assert_eq!(op["operationId"], "run_blockcard");
    assert!(op["description"].as_str().unwrap().contains("Idempotency-Key"));
    assert!(doc["paths"]["/v1/sessions/{id}/actions/gettransactions"]["post"].is_object());
    assert!(
        doc["paths"]["/v1/sessions/{id}/actions/blockcard"].is_null(),
        "not open to customers"
    );
}
