//! `deskbridge check` logging test customers in the way the company does
//! (`[connections.customer_login]`): a form post to the reference backend,
//! a JSON login API in front of it with its own field names and the token
//! deeper in the answer, and a pointer that finds no token.

use std::sync::{Arc, Mutex};

use axum::http::header;
use axum::routing::post;
use serde_json::{Value, json};

use crate::check::{outcomes, run_check};
use crate::support::{TestBackend, client, config, gateway_toml, spawn_company};

const LOGIN_RULES: [&str; 9] = [
    "login.test_users",
    "login.credential",
    "login.lifetime",
    "login.jwt_verifies",
    "login.wrong_password_refused",
    "login.no_user_enumeration",
    "identifier.consistent",
    "identifier.unique",
    "identifier.opaque",
];

/// Runs `check --only login,identifier` for the backend's gateway config
/// with `table` as `[connections.customer_login]`; the exit code and the
/// outcomes.
async fn check_with(backend: &TestBackend, table: &str) -> (Option<i32>, Vec<(String, String, String)>, String) {
    let seed = backend.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = gateway_toml(dir.path(), backend, &seed).replace(
        "[[connections.actions]]\nname = \"getprofile\"",
        &format!("[connections.customer_login]\n{table}\n[[connections.actions]]\nname = \"getprofile\""),
    );
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, toml).unwrap();
    let users = seed
        .users
        .iter()
        .take(2)
        .map(|u| format!("{}:{}", u.username, u.password))
        .collect::<Vec<_>>()
        .join(",");
    let out = run_check(
        &[
            "--config",
            file.to_str().unwrap(),
            "--only",
            "login,identifier",
            "--format",
            "json",
        ],
        &[("DESKBRIDGE_TEST_USERS", &users)],
    )
    .await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for user in seed.users.iter().take(2) {
        assert!(!printed.contains(&user.password), "a password was printed");
    }
    assert!(!printed.contains("eyJ"), "a token was printed");
    (out.status.code(), outcomes(&out), printed)
}

fn all_pass(outcomes: &[(String, String, String)], printed: &str) {
    let ids: Vec<&str> = outcomes.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, LOGIN_RULES, "{printed}");
    for (id, status, evidence) in outcomes {
        assert_eq!(status, "pass", "{id}: {evidence}");
    }
}

#[tokio::test]
async fn a_form_login_at_the_table_s_url_with_its_pointer_passes_every_login_and_identifier_rule() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::start(config(dir.path())).await;
    let table = format!(
        "url = \"{}/customer_authenticate\"\nformat = \"form\"\ntoken_pointer = \"/JWT\"",
        backend.url
    );
    let (code, outcomes, printed) = check_with(&backend, &table).await;
    all_pass(&outcomes, &printed);
    assert_eq!(code, Some(0), "{printed}");
}

/// A company whose login API takes JSON with its own field names and
/// answers the token inside `data`: a login service of the company's,
/// in front of the reference backend, which checks the password and
/// issues the JWT.
async fn json_login_api(backend: &TestBackend) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (log, login_url) = (seen.clone(), backend.url("/customer_authenticate"));
    let app = axum::Router::new().route(
        "/api/v2/login",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let (log, login_url) = (log.clone(), login_url.clone());
            async move {
                let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                let Ok(body) = serde_json::from_str::<Value>(&body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": "not JSON"})));
                };
                log.lock()
                    .unwrap()
                    .push(json!({"content_type": content_type, "fields": body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())}));
                let answer = client()
                    .post(&login_url)
                    .form(&[
                        ("username", body["email"].as_str().unwrap_or("")),
                        ("password", body["secret"].as_str().unwrap_or("")),
                    ])
                    .send()
                    .await
                    .unwrap();
                let status = answer.status();
                let login: Value = answer.json().await.unwrap();
                if !status.is_success() {
                    return (status, axum::Json(json!({"error": login["error"]})));
                }
                (
                    status,
                    axum::Json(json!({"data": {"token": login["JWT"], "expires_in": 28_800}, "JWT": "not-this-one"})),
                )
            }
        }),
    );
    (spawn_company(app).await, seen)
}

#[tokio::test]
async fn a_json_login_with_its_own_field_names_and_a_nested_token_passes_every_login_and_identifier_rule() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::start(config(dir.path())).await;
    let (api, seen) = json_login_api(&backend).await;
    let table = format!(
        "url = \"{api}/api/v2/login\"\nformat = \"json\"\nusername_field = \"email\"\npassword_field = \"secret\"\ntoken_pointer = \"/data/token\""
    );
    let (code, outcomes, printed) = check_with(&backend, &table).await;
    all_pass(&outcomes, &printed);
    assert_eq!(code, Some(0), "{printed}");
    // Every login went to the JSON API as JSON, with its field names: two
    // users, a second login, a wrong password and an unknown user.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    for login in seen.iter() {
        assert_eq!(login["content_type"], "application/json", "{login}");
        assert_eq!(login["fields"], json!(["email", "secret"]), "{login}");
    }
}

#[tokio::test]
async fn a_token_pointer_that_finds_no_token_fails_login_credential_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::start(config(dir.path())).await;
    let table = format!(
        "url = \"{}/customer_authenticate\"\ntoken_pointer = \"/access_token\"",
        backend.url
    );
    let (code, outcomes, printed) = check_with(&backend, &table).await;
    assert_eq!(code, Some(1), "{printed}");
    let credential = outcomes.iter().find(|(id, _, _)| id == "login.credential").unwrap();
    assert_eq!(credential.1, "fail", "{printed}");
    assert!(
        credential.2.contains("neither a JWT (at /access_token)"),
        "{}",
        credential.2
    );
}
