//! `deskbridge check` as an operator runs it: against the reference backend
//! (every rule passes), and against small company servers that each break
//! exactly one rule of the contract.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::support::{TestBackend, config, gateway_toml};

/// `deskbridge check ARGS`, with no test users or config from the
/// environment unless given.
async fn run_check(args: &[&str], envs: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_deskbridge"))
        .arg("check")
        .args(args)
        .env_remove("DESKBRIDGE_TEST_USERS")
        .env_remove("DESKBRIDGE_CONFIG")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rule id -> (status, evidence), from `--format json`, in order.
fn outcomes(out: &Output) -> Vec<(String, String, String)> {
    let (stdout, stderr) = text(out);
    let rules: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap().to_string();
            let group = id.rsplit_once('.').unwrap().0;
            assert_eq!(r["group"], group, "{r}");
            let status = r["status"].as_str().unwrap().to_string();
            assert!(r["evidence"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
            // A fix is given exactly for what needs fixing.
            let fix = r["fix"].as_str().unwrap();
            assert_eq!(fix.is_empty(), matches!(status.as_str(), "pass" | "skip"), "{r}");
            (id, status, r["evidence"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Every rule id, in the order they run, for a connection with these actions.
fn rule_ids(actions: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = [
        "login.test_users",
        "login.credential",
        "login.lifetime",
        "login.jwt_verifies",
        "login.wrong_password_refused",
        "login.no_user_enumeration",
        "identifier.consistent",
        "identifier.unique",
        "identifier.opaque",
        "system.token_issued",
        "system.wrong_secret_refused",
        "system.unknown_grant_refused",
        "system.no_store",
        "system.auth_methods",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for action in actions {
        for probe in [
            "succeeds",
            "missing_bearer",
            "wrong_bearer",
            "missing_api_key",
            "wrong_api_key",
            "missing_customer_token",
            "tampered_customer_token",
            "distinguishable",
        ] {
            ids.push(format!("action.{action}.{probe}"));
        }
    }
    ids.push("transport.plain_http".into());
    ids.push("transport.retry_after_well_formed".into());
    ids
}

#[tokio::test]
async fn the_reference_backend_passes_every_rule_and_no_secret_is_printed() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let file = gdir.path().join("gateway.toml");
    std::fs::write(&file, gateway_toml(gdir.path(), &backend, &seed)).unwrap();
    let file = file.to_str().unwrap();
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let alice_arg = format!("{}:{}", alice.username, alice.password);
    let bruno_arg = format!("{}:{}", bruno.username, bruno.password);

    let out = run_check(
        &[
            "--config",
            file,
            "--connection",
            "acme",
            "--test-user",
            &alice_arg,
            "--test-user",
            &bruno_arg,
            "--format",
            "json",
            "--provoke-limits",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let results = outcomes(&out);
    let ids: Vec<&str> = results.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, rule_ids(&["getprofile", "summary"]));
    for (id, status, evidence) in &results {
        assert_eq!(status, "pass", "{id}: {evidence}");
    }
    let evidence: HashMap<&str, &str> = results.iter().map(|(id, _, e)| (id.as_str(), e.as_str())).collect();
    assert_eq!(evidence["system.auth_methods"], "basic: ok, post: ok");
    assert!(
        evidence["login.lifetime"].contains("8 h"),
        "{}",
        evidence["login.lifetime"]
    );
    assert!(
        evidence["action.getprofile.distinguishable"].contains("invalid_customer_token"),
        "{}",
        evidence["action.getprofile.distinguishable"]
    );
    assert!(stderr.contains("checking 1/32: login.test_users"), "{stderr}");
    assert!(stderr.contains("32 rules: 32 pass, 0 warn, 0 fail, 0 skip"), "{stderr}");
    // The backend's login throttle answered the made-up user with a Retry-After in seconds.
    assert!(
        evidence["transport.retry_after_well_formed"].contains("failed logins of a made-up user"),
        "{}",
        evidence["transport.retry_after_well_formed"]
    );

    // The table, piped: plain and aligned; the test users from the environment.
    let users = format!("{alice_arg},{bruno_arg}");
    let table = run_check(
        &["--config", file, "--connection", "acme"],
        &[("DESKBRIDGE_TEST_USERS", &users)],
    )
    .await;
    let (table_out, table_err) = text(&table);
    assert_eq!(table.status.code(), Some(0), "{table_out}\n{table_err}");
    assert!(!table_out.contains('\x1b'), "no colour when piped");
    assert!(table_out.contains("pass  identifier.opaque  "), "{table_out}");
    assert!(
        table_out.ends_with("32 rules: 31 pass, 0 warn, 0 fail, 1 skip\n"),
        "{table_out}"
    );

    let mut secrets: Vec<&str> = seed.users.iter().map(|u| u.password.as_str()).collect();
    secrets.push(&seed.clients[0].client_secret);
    secrets.push(&seed.api_keys[0].key);
    for output in [&stdout, &stderr, &table_out, &table_err] {
        for secret in &secrets {
            assert!(!output.contains(secret), "a secret was printed");
        }
        // No token either: JWTs start with eyJ, access tokens with dbat_.
        assert!(
            !output.contains("eyJ") && !output.contains("dbat_"),
            "a token was printed"
        );
    }
}

// ---- A small company server with planted faults ----

#[derive(Clone, Copy, Default, Debug)]
struct Faults {
    /// The JWT's `sub` is the username.
    sub_is_username: bool,
    /// No `expires_in`, no `exp`.
    no_expiry: bool,
    /// The token endpoint issues tokens whatever the secret.
    ignores_secret: bool,
    /// `/getprofile` does not need the API key.
    accepts_missing_api_key: bool,
    /// The same plain `401 {"error":"unauthorized"}` for a bad system token
    /// and a bad customer token.
    same_errors: bool,
    /// Login and token endpoint answer 200 with an HTML page.
    html_answers: bool,
    /// The token endpoint refuses every request, with the Basic credential
    /// it was sent as its error code.
    echoes_credentials: bool,
    /// A wrong API key gets a plain `401 {"error":"unauthorized"}`, as a
    /// customer's failure would.
    api_key_refused_like_a_customer: bool,
    /// Token exchange: any subject token is exchanged, verified or not.
    exchanges_forged_subjects: bool,
    /// Token exchange: an exchanged token works for every scope.
    ignores_exchanged_scope: bool,
}

const USERS: [(&str, &str); 2] = [("alice", "alice-fake-password-1"), ("bruno", "bruno-fake-password-2")];
const CLIENT_ID: &str = "platform";
const CLIENT_SECRET: &str = "fake-client-secret-0123456789";
const API_KEY: &str = "fake-api-key-0123456789";
const KID: &str = "fake-key-1";

struct Company {
    faults: Faults,
    issuer: String,
    signing: EncodingKey,
    verifying: DecodingKey,
    jwk: Jwk,
    tokens: Mutex<HashSet<String>>,
    /// Exchanged tokens: their customer and scope.
    exchanged: Mutex<HashMap<String, (String, String)>>,
}

impl Company {
    fn customer(&self, jwt: &str) -> Option<String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&["deskbridge"]);
        validation.set_required_spec_claims::<&str>(&[]);
        let data = jsonwebtoken::decode::<Value>(jwt, &self.verifying, &validation).ok()?;
        data.claims["sub"].as_str().map(str::to_string)
    }
}

fn now() -> u64 {
    backend::Clock::unix_secs(&backend::SystemClock)
}

fn random() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({ "error": code }))).into_response()
}

async fn customer_authenticate(State(c): State<Arc<Company>>, Form(form): Form<HashMap<String, String>>) -> Response {
    let (Some(username), Some(password)) = (form.get("username"), form.get("password")) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if !USERS.contains(&(username.as_str(), password.as_str())) {
        return error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    if c.faults.html_answers {
        return axum::response::Html("<html>welcome</html>").into_response();
    }
    let sub = if c.faults.sub_is_username {
        username.clone()
    } else {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("salt:{username}").as_bytes());
        format!("cus_{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
    };
    let mut claims = json!({"iss": c.issuer, "aud": "deskbridge", "sub": sub, "iat": now(), "jti": random()});
    let mut body = json!({"issued_at": (now() * 1000).to_string()});
    if !c.faults.no_expiry {
        claims["exp"] = json!(now() + 3600);
        body["expires_in"] = json!("3600");
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.into());
    body["JWT"] = json!(jsonwebtoken::encode(&header, &claims, &c.signing).unwrap());
    axum::Json(body).into_response()
}

async fn access_token(
    State(c): State<Arc<Company>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let (id, secret) = match &basic {
        Some(pair) => pair.split_once(':').unwrap_or((pair, "")),
        None => (
            form.get("client_id").map_or("", String::as_str),
            form.get("client_secret").map_or("", String::as_str),
        ),
    };
    if c.faults.html_answers {
        return axum::response::Html("<html>welcome</html>").into_response();
    }
    if c.faults.echoes_credentials {
        let sent = match headers.get(header::AUTHORIZATION) {
            // Without its padding, as a careless server might log it.
            Some(basic) => basic
                .to_str()
                .unwrap()
                .trim_start_matches("Basic ")
                .trim_end_matches('='),
            None => form.get("client_secret").map_or("", String::as_str),
        };
        return error(StatusCode::UNAUTHORIZED, sent);
    }
    if id != CLIENT_ID || (secret != CLIENT_SECRET && !c.faults.ignores_secret) {
        let mut r = error(StatusCode::UNAUTHORIZED, "invalid_client");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Basic realm=\"fake\"".parse().unwrap());
        return r;
    }
    if form.get("grant_type").map(String::as_str) == Some(contract::token_exchange::GRANT_TYPE) {
        let subject = form.get("subject_token").map_or("", String::as_str);
        let customer = match c.faults.exchanges_forged_subjects {
            true => Some("cus_anyone".to_string()),
            false => c.customer(subject),
        };
        let Some(customer) = customer else {
            return error(StatusCode::BAD_REQUEST, "invalid_grant");
        };
        let scope = form.get("scope").cloned().unwrap_or_default();
        let token = format!("fake-xt-{}", random());
        c.exchanged.lock().unwrap().insert(token.clone(), (customer, scope));
        return (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({"token_type": "Bearer", "access_token": token, "expires_in": 300,
                              "issued_token_type": contract::token_exchange::ACCESS_TOKEN})),
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let token = format!("fake-at-{}", random());
    c.tokens.lock().unwrap().insert(token.clone());
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"token_type": "Bearer", "access_token": token, "expires_in": 3600})),
    )
        .into_response()
}

/// `/getprofile` (scope `profile:read` for an exchanged token).
async fn getprofile(State(c): State<Arc<Company>>, headers: HeaderMap) -> Response {
    data_api(&c, &headers, "profile:read")
}

/// `/getbalance`, the same with scope `balance:read`.
async fn getbalance(State(c): State<Arc<Company>>, headers: HeaderMap) -> Response {
    data_api(&c, &headers, "balance:read")
}

fn data_api(c: &Company, headers: &HeaderMap, scope: &str) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refuse = |code: &str, challenge: &str| {
        if c.faults.same_errors {
            return error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let mut r = error(StatusCode::UNAUTHORIZED, code);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        r
    };
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    let exchanged = bearer.and_then(|t| c.exchanged.lock().unwrap().get(t).cloned());
    if let Some((customer, granted)) = exchanged {
        if !c.faults.ignores_exchanged_scope && !granted.split(' ').any(|s| s == scope) {
            return error(StatusCode::FORBIDDEN, "insufficient_scope");
        }
        if header("api-key") != Some(API_KEY) {
            return error(StatusCode::FORBIDDEN, "invalid_api_key");
        }
        return axum::Json(json!({"customer_id": customer, "name": "A. Customer"})).into_response();
    }
    if !bearer.is_some_and(|t| c.tokens.lock().unwrap().contains(t)) {
        return refuse("invalid_token", "Bearer realm=\"fake\", error=\"invalid_token\"");
    }
    match header("api-key") {
        None if c.faults.accepts_missing_api_key => {}
        Some(API_KEY) => {}
        _ if c.faults.api_key_refused_like_a_customer => return error(StatusCode::UNAUTHORIZED, "unauthorized"),
        _ => return error(StatusCode::FORBIDDEN, "invalid_api_key"),
    }
    let customer = header("customer-auth")
        .and_then(|v| v.strip_prefix("JWT "))
        .and_then(|jwt| c.customer(jwt));
    match customer {
        Some(customer) => axum::Json(json!({"customer_id": customer, "name": "A. Customer"})).into_response(),
        None => refuse(
            "invalid_customer_token",
            "JWT realm=\"customer\", error=\"invalid_customer_token\"",
        ),
    }
}

/// Starts the company; returns its base URL.
async fn fake_company(faults: Faults) -> String {
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let signing = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk = Jwk::from_encoding_key(&signing, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(KID.into());
    let verifying = DecodingKey::from_jwk(&jwk).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let company = Arc::new(Company {
        faults,
        issuer: url.clone(),
        signing,
        verifying,
        jwk,
        tokens: Mutex::new(HashSet::new()),
        exchanged: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new()
        .route("/customer_authenticate", post(customer_authenticate))
        .route(
            "/.well-known/jwks.json",
            get(|State(c): State<Arc<Company>>| async move { axum::Json(json!({ "keys": [c.jwk] })) }),
        )
        .route("/access_token", post(access_token))
        .route("/getprofile", post(getprofile))
        .route("/getbalance", post(getbalance))
        .with_state(company);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A gateway configuration for the fake company, with the client secret in
/// the environment (`FAKE_CLIENT_SECRET`) and the API key in a file.
fn fake_toml(dir: &Path, url: &str) -> String {
    let key_file = dir.join("api.key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    format!(
        r#"
[[connections]]
name = "fake"
base_url = "{url}"
customer_login_url = "{url}/customer_authenticate"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "{url}/access_token"
client_id = "{CLIENT_ID}"
client_secret = {{ env = "FAKE_CLIENT_SECRET" }}
[connections.api_key]
value = {{ file = "{key}" }}
[connections.identity]
mode = "jwt"
jwks_url = "{url}/.well-known/jwks.json"
issuer = "{url}"
audience = "deskbridge"
[[connections.actions]]
name = "getprofile"
path = "/getprofile"
"#,
        key = key_file.display()
    )
}

fn fake_users() -> String {
    USERS.map(|(u, p)| format!("{u}:{p}")).join(",")
}

/// A company whose API-key refusal reads like a customer's failure: the
/// gateway would ask the customer to log in again for the platform's own
/// mistake, so `check` warns, and says why.
#[tokio::test]
async fn an_api_key_refusal_that_reads_as_the_customers_is_warned_about() {
    let faults = Faults {
        api_key_refused_like_a_customer: true,
        ..Faults::default()
    };
    let out = check_fake_company(faults, &[]).await;
    for (id, status, evidence) in outcomes(&out) {
        let expected = match id.as_str() {
            "action.getprofile.distinguishable" => "warn",
            "transport.retry_after_well_formed" => "skip",
            _ => "pass",
        };
        assert_eq!(status, expected, "{id}: {evidence}");
        if status == "warn" {
            assert!(
                evidence.contains("API key refused: HTTP 401 unauthorized"),
                "{evidence}"
            );
            assert!(evidence.contains("log in again"), "{evidence}");
        }
    }
}

#[tokio::test]
async fn each_planted_fault_fails_exactly_its_rule() {
    let cases: [(Faults, Option<&str>); 6] = [
        (Faults::default(), None),
        (
            Faults {
                sub_is_username: true,
                ..Faults::default()
            },
            Some("identifier.opaque"),
        ),
        (
            Faults {
                no_expiry: true,
                ..Faults::default()
            },
            Some("login.lifetime"),
        ),
        (
            Faults {
                ignores_secret: true,
                ..Faults::default()
            },
            Some("system.wrong_secret_refused"),
        ),
        (
            Faults {
                accepts_missing_api_key: true,
                ..Faults::default()
            },
            Some("action.getprofile.missing_api_key"),
        ),
        (
            Faults {
                same_errors: true,
                ..Faults::default()
            },
            Some("action.getprofile.distinguishable"),
        ),
    ];
    for (faults, broken) in cases {
        let out = check_fake_company(faults, &[]).await;
        let results = outcomes(&out);
        let ids: Vec<&str> = results.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, rule_ids(&["getprofile"]), "{faults:?}");
        for (id, status, evidence) in &results {
            let expected = match id.as_str() {
                id if Some(id) == broken => "fail",
                // The fake company limits nothing, and nothing provokes it here.
                "transport.retry_after_well_formed" => "skip",
                _ => "pass",
            };
            assert_eq!(status, expected, "{faults:?}: {id}: {evidence}");
        }
        assert_eq!(
            out.status.code(),
            Some(if broken.is_some() { 1 } else { 0 }),
            "{faults:?}"
        );
        let (stdout, stderr) = text(&out);
        for secret in [CLIENT_SECRET, API_KEY, USERS[0].1, USERS[1].1] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "a secret was printed"
            );
        }
        let evidence: HashMap<&str, &str> = results.iter().map(|(id, _, e)| (id.as_str(), e.as_str())).collect();
        match broken {
            Some("identifier.opaque") => {
                assert!(
                    evidence["identifier.opaque"].contains("is the username"),
                    "{evidence:?}"
                )
            }
            Some("login.lifetime") => assert!(evidence["login.lifetime"].contains("no exp"), "{evidence:?}"),
            Some("system.wrong_secret_refused") => {
                assert!(
                    evidence["system.wrong_secret_refused"].contains("HTTP 200"),
                    "{evidence:?}"
                )
            }
            _ => {}
        }
    }
}

/// `deskbridge check --format json ARGS` against a fake company with
/// `faults`, with both test users and the client secret.
async fn check_fake_company(faults: Faults, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let url = fake_company(faults).await;
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, fake_toml(dir.path(), &url)).unwrap();
    let mut all = vec!["--config", file.to_str().unwrap(), "--format", "json"];
    all.extend_from_slice(args);
    run_check(
        &all,
        &[
            ("DESKBRIDGE_TEST_USERS", &fake_users()),
            ("FAKE_CLIENT_SECRET", CLIENT_SECRET),
        ],
    )
    .await
}

#[tokio::test]
async fn html_answers_fail_their_rules_and_what_depends_on_them_is_skipped() {
    let faults = Faults {
        html_answers: true,
        ..Faults::default()
    };
    let out = check_fake_company(faults, &[]).await;
    let results = outcomes(&out);
    let status: HashMap<&str, &str> = results.iter().map(|(id, s, _)| (id.as_str(), s.as_str())).collect();
    for id in ["login.credential", "system.token_issued", "system.auth_methods"] {
        assert_eq!(status[id], "fail", "{id}: {results:?}");
    }
    for id in ["identifier.consistent", "identifier.unique", "identifier.opaque"] {
        assert_eq!(status[id], "skip", "{id}: {results:?}");
    }
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn credentials_a_token_endpoint_echoes_back_are_not_printed() {
    let faults = Faults {
        echoes_credentials: true,
        ..Faults::default()
    };
    let out = check_fake_company(faults, &["--only", "system"]).await;
    let (stdout, stderr) = text(&out);
    let basic = gateway::system_token::basic_credentials(CLIENT_ID, CLIENT_SECRET);
    let echoed = basic.trim_end_matches('=');
    assert!(
        !stdout.contains(echoed) && !stderr.contains(echoed),
        "{stdout}\n{stderr}"
    );
    let results = outcomes(&out);
    let issued = results.iter().find(|(id, _, _)| id == "system.token_issued").unwrap();
    assert_eq!(issued.1, "fail", "{issued:?}");
    assert!(issued.2.contains("HTTP 401 [redacted]"), "{issued:?}");
}

#[tokio::test]
async fn junit_output_and_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let url = fake_company(Faults {
        no_expiry: true,
        ..Faults::default()
    })
    .await;
    let file = dir.path().join("gateway.toml");
    let toml = fake_toml(dir.path(), &url);
    std::fs::write(&file, &toml).unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(
        &users,
        format!(
            "# test accounts\n{}:{}\n\n{}:{}\n",
            USERS[0].0, USERS[0].1, USERS[1].0, USERS[1].1
        ),
    )
    .unwrap();
    let (file, users) = (file.to_str().unwrap(), users.to_str().unwrap());
    let env = [("FAKE_CLIENT_SECRET", CLIENT_SECRET)];

    let out = run_check(
        &[
            "--config",
            file,
            "--connection",
            "fake",
            "--test-users-file",
            users,
            "--format",
            "junit",
        ],
        &env,
    )
    .await;
    let (xml, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{xml}\n{stderr}");
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"),
        "{xml}"
    );
    assert_eq!(xml.matches("<testsuite ").count(), 1, "{xml}");
    let rules = rule_ids(&["getprofile"]).len();
    assert_eq!(xml.matches("<testcase ").count(), rules, "{xml}");
    assert_eq!(xml.matches("</testcase>").count(), rules, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(xml.contains("name=\"login.lifetime\""), "{xml}");
    assert!(xml.contains(&format!("tests=\"{rules}\" failures=\"1\"")), "{xml}");
    assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
    // Every element opened is closed, and no raw '<' or '&' leaks from evidence.
    for tag in ["testsuites", "testsuite", "failure", "system-out"] {
        assert_eq!(
            xml.matches(&format!("<{tag}>")).count() + xml.matches(&format!("<{tag} ")).count(),
            xml.matches(&format!("</{tag}>")).count(),
            "{tag}: {xml}"
        );
    }

    // The check cannot run: exit 2, with the reason on stderr.
    let cannot = [
        (
            vec!["--config", file, "--connection", "nope", "--test-users-file", users],
            "no connection named \"nope\"",
        ),
        (vec!["--config", file, "--connection", "fake"], "no test users"),
        (vec!["--config", file, "--test-user", "no-colon-here"], "NAME:PASSWORD"),
        (
            vec!["--config", "/nonexistent/gateway.toml", "--test-users-file", users],
            "/nonexistent/gateway.toml",
        ),
    ];
    for (args, message) in cannot {
        let out = run_check(&args, &env).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}\n{stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    // No login URL, or the client secret missing from the environment.
    let no_login = toml
        .lines()
        .filter(|l| !l.starts_with("customer_login_url"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(file, no_login).unwrap();
    let out = run_check(&["--config", file, "--test-users-file", users], &env).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("customer_login_url"), "{}", text(&out).1);
    std::fs::write(file, &toml).unwrap();
    let out = run_check(&["--config", file, "--test-users-file", users], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("FAKE_CLIENT_SECRET"), "{}", text(&out).1);
}

#[tokio::test]
async fn only_system_needs_no_test_users() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let file = gdir.path().join("gateway.toml");
    // Without customer_login_url too: `system` does not log anyone in.
    let toml = gateway_toml(gdir.path(), &backend, &seed)
        .lines()
        .filter(|l| !l.starts_with("customer_login_url"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap();

    let out = run_check(
        &[
            "--config",
            file,
            "--connection",
            "acme",
            "--only",
            "system",
            "--format",
            "json",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let results = outcomes(&out);
    let ids: Vec<&str> = results.iter().map(|(id, _, _)| id.as_str()).collect();
    let system: Vec<String> = rule_ids(&[])
        .into_iter()
        .filter(|id| id.starts_with("system."))
        .collect();
    assert_eq!(ids, system);
    for (id, status, evidence) in &results {
        assert_eq!(status, "pass", "{id}: {evidence}");
    }
    assert!(stderr.contains("5 rules: 5 pass, 0 warn, 0 fail, 0 skip"), "{stderr}");

    // Test users that would not parse do not matter to groups that do not log in.
    let out = run_check(
        &["--config", file, "--only", "system", "--test-user", "no-colon"],
        &[("DESKBRIDGE_TEST_USERS", "no-colon")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    // Two groups, in the usual order whatever order they are named in.
    let out = run_check(
        &["--config", file, "--only", "transport,system", "--format", "json"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let ids: Vec<String> = outcomes(&out).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert_eq!(
        ids.last().map(String::as_str),
        Some("transport.retry_after_well_formed")
    );

    // A group that logs in still needs test users and customer_login_url.
    let out = run_check(&["--config", file, "--only", "system,login"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("customer_login_url"), "{}", text(&out).1);
    let out = run_check(&["--config", file, "--only", "nonsense"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// The test gateway's configuration with the backend's actions that take
/// inputs: a read with path and query inputs, and a write.
fn toml_with_inputs(dir: &Path, backend: &TestBackend, seed: &backend::admin::DemoSeed) -> String {
    gateway_toml(dir, backend, seed)
        .replace(
            "scope = \"profile:read\"",
            "scope = \"profile:read transactions:read cards:write\"",
        )
        .replacen(
            "[[channels]]",
            r#"[[connections.actions]]
name = "gettransactions"
path = "/accounts/{account_id}/transactions"
input.account_id = { type = "string", required = true, pattern = "^acc-[0-9]{4}$" }
input.limit = { type = "integer", minimum = 1, maximum = 100, default = 20 }
query = { limit = "limit" }
[[connections.actions]]
name = "blockcard"
kind = "write"
path = "/cards/{card_id}/block"
input.card_id = { type = "string", required = true }
input.reason = { type = "string", required = true, enum = ["lost", "stolen", "damaged"] }
body = { "/reason" = "reason" }
[[channels]]"#,
            1,
        )
}

#[tokio::test]
async fn actions_take_their_inputs_and_writes_run_only_when_allowed() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let file = gdir.path().join("gateway.toml");
    std::fs::write(&file, toml_with_inputs(gdir.path(), &backend, &seed)).unwrap();
    let file = file.to_str().unwrap();
    let alice = &seed.users[0];
    let alice_arg = format!("{}:{}", alice.username, alice.password);
    let check = async |extra: &[&str]| {
        let mut args = vec![
            "--config",
            file,
            "--test-user",
            &alice_arg,
            "--only",
            "action",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        run_check(&args, &[]).await
    };
    let statuses = |out: &Output, action: &str| -> Vec<(String, String)> {
        outcomes(out)
            .into_iter()
            .filter(|(id, _, _)| id.starts_with(&format!("action.{action}.")))
            .map(|(_, status, evidence)| (status, evidence))
            .collect()
    };
    let card_status = || async {
        let token = crate::support::access_token(&backend, &seed).await;
        let jwt = crate::support::login(&backend, &alice.username, &alice.password).await;
        let r = crate::support::get_profile(&backend, Some(&token), Some(&seed.api_keys[0].key), Some(&jwt)).await;
        crate::support::json(r).await["cards"][0]["status"].clone()
    };

    // No input for an action that needs one, and a write without --allow-writes: skipped, saying why.
    let out = check(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let skipped = statuses(&out, "gettransactions");
    assert_eq!(skipped.len(), 8);
    for (status, evidence) in &skipped {
        assert_eq!(status, "skip");
        assert!(evidence.contains("needs input (account_id)"), "{evidence}");
    }
    for (status, evidence) in statuses(&out, "blockcard") {
        assert_eq!(
            (status.as_str(), evidence.as_str()),
            ("skip", "a write: run with --allow-writes")
        );
    }

    // With its input, the read passes every rule; the write is still not called.
    let out = check(&[
        "--action-input",
        r#"gettransactions={"account_id": "acc-1001", "limit": 5}"#,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    for (status, evidence) in statuses(&out, "gettransactions") {
        assert_eq!(status, "pass", "{evidence}");
    }
    assert_eq!(statuses(&out, "blockcard")[0].0, "skip");
    assert_eq!(card_status().await, "active", "no write without --allow-writes");

    // With --allow-writes the write runs (each call with a fresh key) and passes.
    let out = check(&[
        "--allow-writes",
        "--action-input",
        r#"gettransactions={"account_id": "acc-1001"}"#,
        "--action-input",
        r#"blockcard={"card_id": "card-1101", "reason": "lost"}"#,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    for (status, evidence) in statuses(&out, "blockcard") {
        assert_eq!(status, "pass", "{evidence}");
    }
    assert_eq!(card_status().await, "blocked");

    // An input its action refuses, or for no action, stops the check (status 2).
    for bad in [
        r#"gettransactions={"account_id": "acc-1"}"#,
        r#"gettransactions={"account_id": "acc-1001", "page": 2}"#,
        r#"gettransactions=[]"#,
        r#"nosuchaction={}"#,
        "gettransactions",
    ] {
        let out = run_check(
            &["--config", file, "--test-user", &alice_arg, "--action-input", bad],
            &[],
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stdout}{stderr}");
        assert!(stderr.starts_with("error: --action-input "), "{bad}: {stderr}");
        assert!(stdout.is_empty());
    }
}

/// The fake company's configuration with token exchange: `getprofile` for
/// `profile:read`, `getbalance` for `balance:read`.
fn fake_exchange_toml(dir: &Path, url: &str) -> String {
    fake_toml(dir, url)
        .replace("kind = \"oauth2_client_credentials\"", "kind = \"token_exchange\"")
        .replace(
            "name = \"getprofile\"\npath = \"/getprofile\"\n",
            "name = \"getprofile\"\npath = \"/getprofile\"\nscope = \"profile:read\"\n\
             [[connections.actions]]\nname = \"getbalance\"\npath = \"/getbalance\"\nscope = \"balance:read\"\n",
        )
}

/// Token exchange: the reference backend passes the exchange rules, and a
/// company that exchanges forged subjects or ignores the scope fails
/// exactly the rule for it.
#[tokio::test]
async fn token_exchange_rules_pass_on_the_backend_and_fail_on_their_faults() {
    let (bdir, gdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = TestBackend::start(config(bdir.path())).await;
    let seed = backend.seed().await;
    let file = gdir.path().join("gateway.toml");
    let toml = toml_with_inputs(gdir.path(), &backend, &seed)
        .replace("kind = \"oauth2_client_credentials\"", "kind = \"token_exchange\"")
        .replace(
            "name = \"getprofile\"\npath = \"/getprofile\"\n",
            "name = \"getprofile\"\npath = \"/getprofile\"\nscope = \"profile:read\"\n",
        )
        .replace(
            "name = \"gettransactions\"\n",
            "name = \"gettransactions\"\nscope = \"transactions:read\"\n",
        );
    std::fs::write(&file, toml).unwrap();
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let users = format!(
        "{}:{},{}:{}",
        alice.username, alice.password, bruno.username, bruno.password
    );
    let out = run_check(
        &[
            "--config",
            file.to_str().unwrap(),
            "--format",
            "json",
            "--action-input",
            r#"gettransactions={"account_id": "acc-1001"}"#,
        ],
        &[("DESKBRIDGE_TEST_USERS", &users)],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let results: HashMap<String, (String, String)> =
        outcomes(&out).into_iter().map(|(id, s, e)| (id, (s, e))).collect();
    for rule in [
        "system.token_issued",
        "system.exchange_forged_subject_refused",
        "system.exchanged_token_out_of_scope_refused",
        "action.getprofile.succeeds",
        "action.gettransactions.wrong_bearer",
    ] {
        assert_eq!(results[rule].0, "pass", "{rule}: {}", results[rule].1);
    }
    assert_eq!(results["action.getprofile.missing_customer_token"].0, "skip");
    assert!(
        !stdout.contains("eyJ") && !stdout.contains("dbat_"),
        "a token was printed"
    );

    for (faults, broken) in [
        (
            Faults {
                exchanges_forged_subjects: true,
                ..Faults::default()
            },
            "system.exchange_forged_subject_refused",
        ),
        (
            Faults {
                ignores_exchanged_scope: true,
                ..Faults::default()
            },
            "system.exchanged_token_out_of_scope_refused",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = fake_company(faults).await;
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, fake_exchange_toml(dir.path(), &url)).unwrap();
        let out = run_check(
            &["--config", file.to_str().unwrap(), "--format", "json"],
            &[
                ("DESKBRIDGE_TEST_USERS", &fake_users()),
                ("FAKE_CLIENT_SECRET", CLIENT_SECRET),
            ],
        )
        .await;
        let failed: Vec<String> = outcomes(&out)
            .into_iter()
            .filter(|(_, status, _)| status == "fail")
            .map(|(id, _, _)| id)
            .collect();
        assert_eq!(failed, vec![broken.to_string()], "{faults:?}");
    }
}
