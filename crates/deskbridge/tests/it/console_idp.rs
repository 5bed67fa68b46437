//! Console sign-in at the company's identity provider: the authorization
//! code flow with PKCE, `state`, `nonce` and the RFC 9207 `iss` check, the
//! agent's role from its groups (in the ID token or from userinfo), local
//! passwords turned off, and RP-initiated logout. The provider is a small
//! one served here on a real socket, so each test can make it misbehave the
//! way an attacker or a broken provider would; the browser flow against a
//! real provider (oidc-provider) is e2e/test/console-oidc.test.js.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use backend::Clock;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::gateway_flow::expect_problem;
use crate::support::{TestGateway, client, json as body_json};

const CLIENT_ID: &str = "deskbridge-console";
const CLIENT_SECRET: &str = "console-secret-4711";
/// Never served: the test takes the browser's way back from the redirect.
const REDIRECT_URL: &str = "http://127.0.0.1:9/console/oidc/callback";

/// A code the provider issued: what the token endpoint checks and answers.
struct Issued {
    challenge: String,
    id_token_claims: Value,
    userinfo: Value,
}

#[derive(Default)]
struct ProviderState {
    /// Set: the console proves itself with `private_key_jwt` signed by
    /// this key's pair, not with the secret.
    client_key: Option<jsonwebtoken::DecodingKey>,
    /// Set: the token endpoint answers 503 to everything.
    token_endpoint_down: bool,
    codes: HashMap<String, Issued>,
    userinfo: HashMap<String, Value>,
    /// The token endpoint's refusals, for the tests to see.
    refusals: Vec<String>,
}

/// An OpenID provider: discovery, JWKS, a token endpoint that checks the
/// client's secret and the PKCE verifier, userinfo, and an end-session
/// endpoint; codes are issued by the test, standing in for a user who
/// signed in at its login page.
struct SignInProvider {
    issuer: String,
    key: EncodingKey,
    state: Arc<Mutex<ProviderState>>,
}

type Shared = (Arc<Mutex<ProviderState>>, String);

/// Whether the token request authenticates the console: its secret
/// (`client_secret_basic`), or an assertion signed by its key, addressed to
/// this token endpoint (RFC 7523).
fn client_authenticated(
    state: &ProviderState,
    issuer: &str,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> bool {
    let Some(key) = &state.client_key else {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        return headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    };
    if headers.contains_key("authorization")
        || form.get("client_assertion_type").map(String::as_str) != Some(gateway::assertion::JWT_BEARER)
    {
        return false;
    }
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&[format!("{issuer}/token")]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.into());
    let assertion = form.get("client_assertion").map(String::as_str).unwrap_or_default();
    jsonwebtoken::decode::<Value>(assertion, key, &validation).is_ok()
}

async fn token_endpoint(
    State((state, issuer)): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, axum::Json<Value>) {
    let mut state = state.lock().unwrap();
    let refuse = |state: &mut ProviderState, status: StatusCode, error: &str| {
        state.refusals.push(error.to_string());
        (status, axum::Json(json!({ "error": error })))
    };
    if state.token_endpoint_down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "temporarily_unavailable" })),
        );
    }
    if !client_authenticated(&state, &issuer, &headers, &form) {
        return refuse(&mut state, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code")
        || form.get("redirect_uri").map(String::as_str) != Some(REDIRECT_URL)
    {
        return refuse(&mut state, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let Some(issued) = form.get("code").and_then(|c| state.codes.remove(c)) else {
        return refuse(&mut state, StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    if challenge != issued.challenge {
        return refuse(&mut state, StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let access_token = format!("at-{}", state.userinfo.len());
    state.userinfo.insert(access_token.clone(), issued.userinfo);
    (
        StatusCode::OK,
        axum::Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": issued.id_token_claims["__signed"],
        })),
    )
}

async fn userinfo_endpoint(State((state, _)): State<Shared>, headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match state.lock().unwrap().userinfo.get(token) {
        Some(info) => (StatusCode::OK, axum::Json(info.clone())),
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_token" })),
        ),
    }
}

impl SignInProvider {
    async fn start() -> Self {
        let (_, key, jwk) = crate::agent_idp::es256_key("idp-1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "userinfo_endpoint": format!("{issuer}/me"),
            "end_session_endpoint": format!("{issuer}/session/end"),
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_response_iss_parameter_supported": true,
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        });
        let state = Arc::new(Mutex::new(ProviderState::default()));
        let app = crate::agent_idp::discovery_routes(metadata, jwk)
            .route("/token", axum::routing::post(token_endpoint))
            .route("/me", axum::routing::get(userinfo_endpoint))
            .with_state((state.clone(), issuer.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { issuer, key, state }
    }

    /// An ID token issued at `now` for `nonce`, with these claims over the usual ones.
    fn id_token(&self, now: u64, nonce: &str, claims: &Value) -> String {
        let mut all = json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": "u-4711", "iat": now, "exp": now + 300,
            "nonce": nonce, "preferred_username": "ana@example.com", "groups": ["staff", "cx-agents"],
        });
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("idp-1".into());
        jsonwebtoken::encode(&header, &all, &self.key).unwrap()
    }

    /// A code for the sign-in the gateway began (as if its user signed in
    /// at the login page), whose ID token has `claims` over the usual ones.
    fn issue(&self, begun: &Begun, now: u64, claims: Value, userinfo: Value) -> String {
        let id_token = self.id_token(now, &begun.param("nonce"), &claims);
        let code = gateway::vault::random_id("code-").unwrap();
        self.state.lock().unwrap().codes.insert(
            code.clone(),
            Issued {
                challenge: begun.param("code_challenge"),
                id_token_claims: json!({ "__signed": id_token }),
                userinfo,
            },
        );
        code
    }

    /// A back-channel logout token (typ `logout+jwt`) with these claims
    /// over the usual ones (`null` takes one out).
    fn logout_token(&self, now: u64, claims: &Value) -> String {
        let mut all = json!({
            "iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
            "jti": gateway::vault::random_id("jti-").unwrap(),
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let all: serde_json::Map<String, Value> = all
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("idp-1".into());
        header.typ = Some("logout+jwt".into());
        jsonwebtoken::encode(&header, &all, &self.key).unwrap()
    }

    fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }
}

fn oidc_toml(data_dir: &std::path::Path, issuer: &str, extra: &str) -> String {
    format!(
        r#"
[server]
data_dir = "{}"

[console]
secure_cookies = false

[console.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_url = "{REDIRECT_URL}"
display_name = "Acme SSO"
role_claim = "groups"
role_map = {{ "cx-agents" = "agent", "cx-admins" = "admin", "robots" = "bot" }}
name_claim = "preferred_username"
{extra}
"#,
        data_dir.display()
    )
}

/// A provider, and a gateway whose console signs agents in there (with
/// the default `[console.oidc]` of `oidc_toml`) on a clock of the test's.
async fn world() -> (SignInProvider, Arc<clock::ManualClock>, TestGateway, tempfile::TempDir) {
    let provider = SignInProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(clock::ManualClock::new(clock::SystemClock.now()));
    let g = TestGateway::start_with_clock(&oidc_toml(dir.path(), &provider.issuer, ""), clock.clone()).await;
    (provider, clock, g, dir)
}

/// A sign-in the gateway began: where it sent the browser, and the cookie
/// that carries it.
struct Begun {
    authorize: reqwest::Url,
    cookie: String,
}

impl Begun {
    fn param(&self, name: &str) -> String {
        self.authorize
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of a cookie the response sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

async fn begin(g: &TestGateway) -> Begun {
    let r = no_redirects().get(g.url("/console/oidc/login")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = set_cookie(&r, "deskbridge_oidc").expect("the pending sign-in's cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(cookie.contains("Path=/console/oidc"), "{cookie}");
    let location = r.headers()["location"].to_str().unwrap();
    Begun {
        authorize: reqwest::Url::parse(location).unwrap(),
        cookie: cookie.split(';').next().unwrap().to_string(),
    }
}

/// The browser comes back to the callback with `query` and `cookie`.
async fn back(g: &TestGateway, query: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&g.url("/console/oidc/callback")).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    let mut request = no_redirects().get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// The user signs in at the provider for `begun` (its ID token with
/// `claims` over the usual ones), and the browser comes back to `g` with
/// the code, the state and the provider's `iss`.
async fn come_back(
    g: &TestGateway,
    provider: &SignInProvider,
    begun: &Begun,
    now: u64,
    claims: Value,
    userinfo: Value,
) -> reqwest::Response {
    let code = provider.issue(begun, now, claims, userinfo);
    let state = begun.param("state");
    back(
        g,
        &[("code", &code), ("state", &state), ("iss", &provider.issuer)],
        Some(&begun.cookie),
    )
    .await
}

/// A page that says why, and sets no console session.
async fn refused_page(r: reqwest::Response, status: u16, says: &str) -> String {
    assert_eq!(r.status(), status);
    assert!(
        set_cookie(&r, "deskbridge_console").is_none(),
        "no session on a refusal"
    );
    let pending = set_cookie(&r, "deskbridge_oidc").expect("the pending sign-in is cleared");
    assert!(pending.contains("Max-Age=0"), "{pending}");
    assert!(
        r.headers()["content-type"].to_str().unwrap().starts_with("text/html"),
        "a page for a person"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains(says), "{says}: {page}");
    page
}

#[tokio::test]
async fn an_agent_signs_in_at_the_provider_gets_the_mapped_role_and_signs_out_there_too() {
    let (provider, clock, g, _dir) = world().await;
    let now = clock.unix_secs();

    // The console offers the provider beside passwords.
    let options = body_json(client().get(g.url("/console/api/sign-in")).send().await.unwrap()).await;
    assert_eq!(
        options,
        json!({"passwords": true, "provider": {"name": "Acme SSO", "url": "/console/oidc/login"}})
    );

    // To the provider: a code, S256 PKCE, state and nonce, openid scopes.
    let begun = begin(&g).await;
    assert!(
        begun
            .authorize
            .as_str()
            .starts_with(&format!("{}/authorize?", provider.issuer))
    );
    assert_eq!(begun.param("response_type"), "code");
    assert_eq!(begun.param("client_id"), CLIENT_ID);
    assert_eq!(begun.param("redirect_uri"), REDIRECT_URL);
    assert_eq!(begun.param("scope"), "openid profile email");
    assert_eq!(begun.param("code_challenge_method"), "S256");
    for name in ["state", "nonce", "code_challenge"] {
        assert!(begun.param(name).len() >= 43, "{name} carries 32 random bytes");
    }
    // Nothing of the pending sign-in is readable in its cookie.
    assert!(!begun.cookie.contains(&begun.param("state")));
    assert_ne!(
        begin(&g).await.param("state"),
        begun.param("state"),
        "a new state each time"
    );

    // Back with a code: signed in, on to the console.
    let code = provider.issue(&begun, now, json!({}), json!({}));
    let state = begun.param("state");
    let r = back(
        &g,
        &[("code", &code), ("state", &state), ("iss", &provider.issuer)],
        Some(&begun.cookie),
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/console/?signed_in=1");
    let session = set_cookie(&r, "deskbridge_console").expect("a console session");
    assert!(
        session.contains("SameSite=Strict") && session.contains("HttpOnly"),
        "{session}"
    );
    assert!(set_cookie(&r, "deskbridge_oidc").unwrap().contains("Max-Age=0"));
    let session = session.split(';').next().unwrap().to_string();
    let me = body_json(
        client()
            .get(g.url("/console/api/me"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["agent"], json!({"name": "ana@example.com", "role": "agent"}));
    // The session works on the agent API, with the mapped role's rights only.
    let get = |path: &str| client().get(g.url(path)).header("cookie", session.clone()).send();
    assert_eq!(get("/v1/conversations").await.unwrap().status(), 200);
    expect_problem(get("/v1/audit").await.unwrap(), 403, "forbidden").await;
    // The code is used once: the same way back again is refused.
    let again = back(
        &g,
        &[("code", &code), ("state", &state), ("iss", &provider.issuer)],
        Some(&begun.cookie),
    )
    .await;
    refused_page(again, 502, "did not sign you in").await;
    assert_eq!(provider.refusals(), ["invalid_grant"]);

    // Signing out ends the console session and sends the browser on to the
    // provider's end-session endpoint, with the ID token as the hint.
    let csrf = me["csrf_token"].as_str().unwrap();
    let r = client()
        .post(g.url("/console/api/logout"))
        .header("cookie", &session)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = body_json(r).await;
    let url = reqwest::Url::parse(out["provider_logout_url"].as_str().unwrap()).unwrap();
    assert!(url.as_str().starts_with(&format!("{}/session/end?", provider.issuer)));
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    assert_eq!(param("client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(
        param("post_logout_redirect_uri").as_deref(),
        Some("http://127.0.0.1:9/console/")
    );
    let hint = param("id_token_hint").unwrap();
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&hint).unwrap();
    assert_eq!(claims["nonce"], begun.param("nonce"));
    expect_problem(get("/console/api/me").await.unwrap(), 401, "unauthorized").await;
    expect_problem(get("/v1/conversations").await.unwrap(), 401, "unauthorized").await;

    // Roles from userinfo, where the ID token leaves the groups out; an
    // admin group maps to admin.
    let begun = begin(&g).await;
    let r = come_back(
        &g,
        &provider,
        &begun,
        now,
        json!({"groups": null, "preferred_username": null}),
        json!({"sub": "u-4711", "preferred_username": "olga", "groups": ["cx-admins"]}),
    )
    .await;
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r, "deskbridge_console").unwrap();
    let session = session.split(';').next().unwrap();
    let r = client()
        .get(g.url("/v1/audit"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An administrator ends a provider agent's sessions at once (`agent remove`).
    let removed = g.gateway.remove_agent("olga").await.unwrap();
    assert_eq!(
        removed,
        gateway::agents::Removed {
            agent: false,
            sessions: 1
        }
    );
    let r = client()
        .get(g.url("/v1/audit"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "unauthorized").await;
    g.stop().await;
}

#[tokio::test]
async fn a_way_back_that_is_not_this_browsers_sign_in_is_refused_with_a_clear_page() {
    let (provider, clock, g, _dir) = world().await;
    let now = clock.unix_secs();
    let iss = provider.issuer.clone();

    // Login CSRF: an attacker's own code and state, sent to a victim's
    // browser, which began no sign-in (no cookie) or another one.
    let attacker = begin(&g).await;
    let attackers_code = provider.issue(&attacker, now, json!({}), json!({}));
    let attackers_state = attacker.param("state");
    let link = [
        ("code", attackers_code.as_str()),
        ("state", &attackers_state),
        ("iss", &iss),
    ];
    refused_page(back(&g, &link, None).await, 400, "did not begin it").await;
    let victim = begin(&g).await;
    refused_page(back(&g, &link, Some(&victim.cookie)).await, 400, "(state)").await;
    // A pending sign-in made up or altered is not opened.
    let forged = format!("deskbridge_oidc={}", URL_SAFE_NO_PAD.encode(b"{\"state\":\"x\"}"));
    refused_page(back(&g, &link, Some(&forged)).await, 400, "did not begin it").await;

    // Mix-up (RFC 9207): another issuer's answer, or one that names none
    // from a provider that always names itself.
    let begun = begin(&g).await;
    let code = provider.issue(&begun, now, json!({}), json!({}));
    let state = begun.param("state");
    let other = [
        ("code", code.as_str()),
        ("state", &state),
        ("iss", "https://evil.example"),
    ];
    refused_page(back(&g, &other, Some(&begun.cookie)).await, 400, "another issuer").await;
    let begun = begin(&g).await;
    let code = provider.issue(&begun, now, json!({}), json!({}));
    let state = begun.param("state");
    let none = [("code", code.as_str()), ("state", &state)];
    refused_page(
        back(&g, &none, Some(&begun.cookie)).await,
        400,
        "does not name its issuer",
    )
    .await;

    // An ID token replayed from another sign-in (its nonce), for another
    // client, or of another issuer.
    for (claims, says) in [
        (json!({"nonce": "from-another-sign-in"}), "(nonce)"),
        (json!({"aud": "another-client"}), "not valid"),
        (json!({"aud": [CLIENT_ID, "another-client"]}), "no azp"),
        (json!({"azp": "another-client"}), "(azp)"),
        (json!({"iss": "https://evil.example"}), "not valid"),
        (json!({"exp": now - 120}), "expired"),
    ] {
        let begun = begin(&g).await;
        let r = come_back(&g, &provider, &begun, now, claims, json!({})).await;
        refused_page(r, 400, says).await;
    }

    // The provider's refusal, with markup in its error code: shown as text.
    let begun = begin(&g).await;
    let state = begun.param("state");
    let q = [("error", "<script>alert(1)</script>"), ("state", &state), ("iss", &iss)];
    let page = refused_page(
        back(&g, &q, Some(&begun.cookie)).await,
        502,
        "Acme SSO did not sign you in",
    )
    .await;
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");

    // A user whose groups map to no role: signed in there, refused here.
    let begun = begin(&g).await;
    let r = come_back(
        &g,
        &provider,
        &begun,
        now,
        json!({"groups": ["staff", "sales"]}),
        json!({}),
    )
    .await;
    let page = refused_page(r, 403, "role_map").await;
    // With a way to sign out there, and in as someone else.
    let switch = format!(
        "href=\"{}/session/end?client_id={CLIENT_ID}&amp;post_logout_redirect_uri=",
        provider.issuer
    );
    assert!(page.contains(&switch), "{page}");
    // Nor may a bot's group sign in to the console.
    let begun = begin(&g).await;
    let r = come_back(&g, &provider, &begun, now, json!({"groups": ["robots"]}), json!({})).await;
    refused_page(r, 400, "bot role").await;

    // Ten minutes to sign in at the provider, no more.
    let begun = begin(&g).await;
    clock.advance(Duration::from_secs(601));
    let r = come_back(&g, &provider, &begun, now, json!({}), json!({})).await;
    refused_page(r, 400, "longer than 10 minutes").await;
    // Every code above was redeemed with the console's secret and the
    // right PKCE verifier: the refusals were the gateway's own.
    assert!(provider.refusals().is_empty(), "{:?}", provider.refusals());
    g.stop().await;
}

#[tokio::test]
async fn passwords_turned_off_leave_the_provider_and_agent_tokens() {
    let provider = SignInProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = TestGateway::start(&oidc_toml(dir.path(), &provider.issuer, "passwords = false")).await;
    g.gateway.add_agent("ana", "agent").await.unwrap();
    g.gateway.set_agent_password("ana", "a long password 1").await.unwrap();
    let options = body_json(client().get(g.url("/console/api/sign-in")).send().await.unwrap()).await;
    assert_eq!(options["passwords"], false);
    assert_eq!(options["provider"]["name"], "Acme SSO");
    let r = client()
        .post(g.url("/console/api/login"))
        .json(&json!({"username": "ana", "password": "a long password 1"}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("identity provider"), "{body}");
    g.stop().await;

    // Without redirect_url, no sign-in at the provider is offered.
    let dir = tempfile::tempdir().unwrap();
    let toml = oidc_toml(dir.path(), &provider.issuer, "")
        .replace(&format!("redirect_url = \"{REDIRECT_URL}\""), "")
        .replace(&format!("client_secret = \"{CLIENT_SECRET}\""), "");
    let g = TestGateway::start(&toml).await;
    let options = body_json(client().get(g.url("/console/api/sign-in")).send().await.unwrap()).await;
    assert_eq!(options, json!({"passwords": true, "provider": null}));
    expect_problem(
        client().get(g.url("/console/oidc/login")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    g.stop().await;
}

#[tokio::test]
async fn a_sign_in_begun_on_one_instance_finishes_on_another_with_a_private_key() {
    let provider = SignInProvider::start().await;
    // The console's key pair: the provider knows its public half.
    let (der, _, public) = crate::agent_idp::es256_key("console-1");
    provider.state.lock().unwrap().client_key = Some(jsonwebtoken::DecodingKey::from_jwk(&public).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("console.pem");
    std::fs::write(&key_file, crate::customer_algorithms::pem(&der)).unwrap();
    let credential = format!(
        "private_key = {{ file = \"{}\" }}\nkey_id = \"console-1\"",
        key_file.display()
    );
    // Two instances on one store and one token key.
    let toml = oidc_toml(dir.path(), &provider.issuer, &credential)
        .replace(&format!("client_secret = \"{CLIENT_SECRET}\""), "");
    let (one, two) = (TestGateway::start(&toml).await, TestGateway::start(&toml).await);
    let now = backend::SystemClock.unix_secs();

    let begun = begin(&one).await;
    let r = come_back(&two, &provider, &begun, now, json!({}), json!({})).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert!(provider.refusals().is_empty(), "{:?}", provider.refusals());
    let session = set_cookie(&r, "deskbridge_console").unwrap();
    let session = session.split(';').next().unwrap();
    // The session is the store's: the first instance knows it too.
    let me = body_json(
        client()
            .get(one.url("/console/api/me"))
            .header("cookie", session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["agent"]["name"], "ana@example.com");

    // An assertion is what proves the console: without the key, refused.
    let (_, _, other) = crate::agent_idp::es256_key("console-1");
    provider.state.lock().unwrap().client_key = Some(jsonwebtoken::DecodingKey::from_jwk(&other).unwrap());
    let begun = begin(&two).await;
    let r = come_back(&one, &provider, &begun, now, json!({}), json!({})).await;
    refused_page(r, 502, "did not sign you in").await;
    assert_eq!(provider.refusals(), ["invalid_client"]);
    one.stop().await;
    two.stop().await;
}

/// Signed in at the provider with an ID token of `claims`: the console
/// session's `name=value`.
async fn signed_in(g: &TestGateway, provider: &SignInProvider, now: u64, claims: Value) -> String {
    let begun = begin(g).await;
    let r = come_back(g, provider, &begun, now, claims, json!({})).await;
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r, "deskbridge_console").unwrap();
    session.split(';').next().unwrap().to_string()
}

/// The console session's status at `/console/api/me`: 200 or 401.
async fn me_status(g: &TestGateway, session: &str) -> u16 {
    let r = client()
        .get(g.url("/console/api/me"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// The provider posts `logout_token` to the gateway's back-channel logout.
async fn post_logout(g: &TestGateway, logout_token: &str) -> reqwest::Response {
    client()
        .post(g.url("/console/oidc/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={logout_token}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_providers_back_channel_logout_ends_the_sessions_it_names_and_no_forged_token_does() {
    let provider = SignInProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = TestGateway::start(&oidc_toml(dir.path(), &provider.issuer, "")).await;
    let now = backend::SystemClock.unix_secs();
    // Ana signed in twice (two sessions at the provider), Olga once.
    let ana_a = signed_in(&g, &provider, now, json!({"sid": "sid-a"})).await;
    let ana_b = signed_in(&g, &provider, now, json!({"sid": "sid-b"})).await;
    let olga = signed_in(
        &g,
        &provider,
        now,
        json!({"sub": "u-olga", "preferred_username": "olga", "sid": "sid-o"}),
    )
    .await;

    // Refused, and nothing ends: an ID token posted as a logout token (it
    // has a nonce), no logout event, another audience, another issuer's
    // key, neither sid nor sub, an expired one.
    let other_key = SignInProvider::start().await;
    let id_token = provider.id_token(now, "a-nonce", &json!({"sid": "sid-a"}));
    for (token, says) in [
        (id_token, "no back-channel logout event"),
        (
            provider.logout_token(now, &json!({"sid": "sid-a", "nonce": "n"})),
            "nonce",
        ),
        (
            provider.logout_token(now, &json!({"sid": "sid-a", "events": {}})),
            "no back-channel logout event",
        ),
        (
            provider.logout_token(now, &json!({"sid": "sid-a", "aud": "another-client"})),
            "not valid",
        ),
        (
            provider.logout_token(now, &json!({"sid": "sid-a", "jti": null})),
            "no jti",
        ),
        (provider.logout_token(now, &json!({})), "neither sid nor sub"),
        (
            provider.logout_token(now - 600, &json!({"sid": "sid-a"})),
            "it has expired",
        ),
        (
            other_key.logout_token(now, &json!({"sid": "sid-a", "iss": provider.issuer})),
            "not valid",
        ),
    ] {
        let body = expect_problem(post_logout(&g, &token).await, 400, "invalid_request").await;
        assert!(body["detail"].as_str().unwrap().contains(says), "{says}: {body}");
        assert!(!body.to_string().contains(&token), "no token in the answer");
    }
    let r = client()
        .post(g.url("/console/oidc/backchannel-logout"))
        .json(&json!({"logout_token": provider.logout_token(now, &json!({"sid": "sid-a"}))}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 415, "unsupported_media_type").await;
    expect_problem(post_logout(&g, "").await, 400, "invalid_request").await;
    for session in [&ana_a, &ana_b, &olga] {
        assert_eq!(me_status(&g, session).await, 200);
    }

    // One provider session ends: that console session alone.
    let r = post_logout(
        &g,
        &provider.logout_token(now, &json!({"sid": "sid-a", "sub": "u-4711"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(me_status(&g, &ana_a).await, 401);
    assert_eq!(me_status(&g, &ana_b).await, 200);
    // The subject alone: every session of it.
    let r = post_logout(&g, &provider.logout_token(now, &json!({"sub": "u-4711"}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(me_status(&g, &ana_b).await, 401);
    assert_eq!(me_status(&g, &olga).await, 200);
    // A session that is no more, or never was: 200 all the same.
    let r = post_logout(&g, &provider.logout_token(now, &json!({"sid": "sid-a"}))).await;
    assert_eq!(r.status(), 200);
    g.stop().await;
}

#[tokio::test]
async fn a_provider_that_is_down_gets_a_page_and_a_503_not_a_sign_in() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let dir = tempfile::tempdir().unwrap();
    let g = TestGateway::start(&oidc_toml(dir.path(), &issuer, "")).await;
    // The button leads to a page that says so, and no pending sign-in.
    let r = no_redirects().get(g.url("/console/oidc/login")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(set_cookie(&r, "deskbridge_oidc").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("Acme SSO could not be reached"), "{page}");
    assert!(!page.contains(CLIENT_SECRET));
    // Its logout tokens cannot be checked: 503, so the provider tries again.
    let token = SignInProvider::start()
        .await
        .logout_token(backend::SystemClock.unix_secs(), &json!({"sid": "s"}));
    expect_problem(post_logout(&g, &token).await, 503, "identity_provider_unavailable").await;
    g.stop().await;

    // The provider is up but its token endpoint is not: the way back gets
    // a page that says so, and no session.
    let (provider, clock, g, _dir) = world().await;
    let begun = begin(&g).await;
    provider.state.lock().unwrap().token_endpoint_down = true;
    let r = come_back(&g, &provider, &begun, clock.unix_secs(), json!({}), json!({})).await;
    refused_page(r, 503, "Acme SSO could not be reached").await;
    g.stop().await;
}

#[test]
fn config_check_names_what_console_sign_in_needs() {
    let text = r#"
[console.oidc]
issuer = "https://idp.example.com"
client_id = "deskbridge-console"
client_secret = { env = "CONSOLE_OIDC_SECRET" }
private_key = { file = "/etc/deskbridge/console.pem" }
scopes = ["profile", "two words"]
role_map = { "cx" = "agent" }
passwords = false
"#;
    crate::agent_idp::assert_config_problems(
        text,
        &[
            "console.oidc.client_secret: is for console sign-in at the provider: set redirect_url",
            "console.oidc.passwords: is for console sign-in at the provider",
            "console.oidc.private_key: set client_secret or private_key, not both",
            "console.oidc.scopes: must include \"openid\"",
            "console.oidc.scopes: \"two words\" is not one scope",
        ],
    );
    // A callback the gateway does not serve.
    crate::agent_idp::assert_config_problems(
        &text.replace(
            "passwords = false",
            "redirect_url = \"https://desk.example.com/oidc/back\"",
        ),
        &["console.oidc.redirect_url: must end with /console/oidc/callback"],
    );
}
