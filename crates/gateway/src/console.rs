//! The agent console: sign-in (password, agent token, or at the company's
//! identity provider: `idp`) into an HttpOnly,
//! SameSite=Strict session cookie, CSRF protection for requests the cookie
//! authenticates, and the static files of the console and of the web SDK,
//! embedded in the binary so nothing loads from anywhere but the gateway.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::agents::AgentToken;
use crate::http::{Body, Problem};
use crate::problem::ProblemType;
use crate::vault::random_id;
use crate::{Gateway, GatewayError, agent_token_digest};

pub(crate) mod idp;

pub const SESSION_COOKIE: &str = "deskbridge_console";
pub const CSRF_HEADER: &str = "x-csrf-token";

const INDEX_HTML: &str = include_str!("../assets/console/index.html");
const CARD_HTML: &str = include_str!("../assets/console/card.html");
const CONSOLE_JS: &str = include_str!("../assets/console/console.js");
const CONSOLE_CSS: &str = include_str!("../assets/console/console.css");
const SDK_JS: &str = include_str!("../assets/sdk/deskbridge.js");
const CARD_ELEMENT_JS: &str = include_str!("../assets/sdk/deskbridge-card.js");

/// Nothing but the gateway itself: no CDN, no inline script or style.
pub(crate) const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                           connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Longest name, password or token looked at; longer ones are refused
/// before any hashing, so a huge password cannot buy extra CPU.
pub(crate) const MAX_CREDENTIAL_LEN: usize = 256;

type Shared = Arc<Gateway>;

pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/console",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/console.js",
            get(|| async { page(CONSOLE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/console.css",
            get(|| async { page(CONSOLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/card", get(card))
        .route("/sdk/deskbridge.js", get(sdk))
        .route(SDK_PATH, get(versioned_sdk))
        .route(CARD_ELEMENT_PATH, get(card_element))
        .route("/console/api/login", post(login))
        .route("/console/api/sign-in", get(idp::options))
        .route("/console/oidc/login", get(idp::begin))
        .route(crate::oidc::CALLBACK_PATH, get(idp::finish))
        .route("/console/oidc/backchannel-logout", post(idp::backchannel_logout))
        .route("/console/api/me", get(me))
        .route(
            "/console/api/logout",
            post(logout).layer(axum::middleware::from_fn(require_csrf)),
        )
        .method_not_allowed_fallback(crate::http::method_not_allowed)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
    response
}

/// The SDK under its major version, cached for long: pages pin it with
/// [`sdk_integrity`], and its API changes only with a new major version.
pub const SDK_PATH: &str = "/sdk/v1/deskbridge.js";

/// The SDK's Subresource Integrity value (`sha384-…`), for the `integrity`
/// attribute of a page's `<script>`: the gateway prints it at start.
pub fn sdk_integrity() -> &'static str {
    static INTEGRITY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| integrity_of(SDK_JS));
    &INTEGRITY
}

/// The `<deskbridge-card>` script's Subresource Integrity value, as
/// [`sdk_integrity`] is the SDK's.
pub fn card_element_integrity() -> &'static str {
    static INTEGRITY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| integrity_of(CARD_ELEMENT_JS));
    &INTEGRITY
}

fn integrity_of(script: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, script.as_bytes());
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The customer card, for a desk's sidebar to frame: the console's own
/// conversation view (same script), started in card mode. Only a desk
/// origin in `[console] card_origins` may frame it, and only the one it
/// names as `host`: `frame-ancestors` makes the browser hold the frame to
/// it, and the card talks (postMessage) to that origin alone.
async fn card(State(g): State<Shared>, axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    // `?host=`: the origin of the desk page that frames the card.
    let host = reqwest::Url::parse(&format!("http://card/?{}", query.unwrap_or_default()))
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "host").map(|(_, v)| v.into_owned()))
        .filter(|h| g.config.console.card_origins.iter().any(|o| o == h));
    let Some(host) = host else {
        let mut refused = Problem::new(
            StatusCode::FORBIDDEN,
            ProblemType::OriginNotAllowed,
            "the card opens only inside a desk whose origin is in [console] card_origins, named as ?host=<origin>",
        )
        .into_response();
        let headers = refused.headers_mut();
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
        return refused;
    };
    let mut response = page(CARD_HTML, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    // frame-ancestors, not X-Frame-Options, decides who frames the card.
    headers.remove(header::X_FRAME_OPTIONS);
    // `host` is one of the configured origins, checked as such at start:
    // it cannot carry a `;` into the policy.
    let csp = CONSOLE_CSP.replace("frame-ancestors 'none'", &format!("frame-ancestors {host}"));
    match HeaderValue::from_str(&csp) {
        Ok(value) => {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
        Err(_) => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::Internal,
                "a card origin is not valid",
            )
            .into_response();
        }
    }
    response
}

/// `<deskbridge-card>`, the customer card as a custom element for a desk's
/// page: it frames `/card` and speaks its postMessage contract (version 1).
pub const CARD_ELEMENT_PATH: &str = "/sdk/v1/deskbridge-card.js";

/// The SDK is loaded by companies' pages on other origins.
async fn sdk() -> Response {
    script_response(SDK_JS, "public, max-age=300")
}

/// Loaded by desks' pages on other origins, and pinned by them, like the
/// versioned SDK.
async fn card_element(headers: HeaderMap) -> Response {
    versioned(CARD_ELEMENT_JS, card_element_integrity(), &headers)
}

/// A week, then a cheap revalidation by ETag: a gateway upgrade reaches
/// pages within days even where the integrity attribute is left out.
const SDK_LONG_CACHE: &str = "public, max-age=604800, stale-while-revalidate=86400";

async fn versioned_sdk(headers: HeaderMap) -> Response {
    versioned(SDK_JS, sdk_integrity(), &headers)
}

/// A script under its major version: cached for long, revalidated by its
/// integrity value as the ETag.
fn versioned(script: &'static str, integrity: &str, headers: &HeaderMap) -> Response {
    let etag = format!("\"{integrity}\"");
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(SDK_LONG_CACHE));
        response
    } else {
        script_response(script, SDK_LONG_CACHE)
    };
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A script for pages of other origins.
fn script_response(body: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    // A page on another origin checks the integrity attribute only on a
    // response it may read: CORS, for `<script crossorigin>`.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// The console session's secret from the request's cookie, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    login::cookie(headers, SESSION_COOKIE).filter(|v| !v.is_empty() && v.len() <= MAX_CREDENTIAL_LEN)
}

/// The CSRF token of a session: derived from the session's secret, so
/// nothing more is stored, and one-way, so the page (which may read it)
/// learns nothing of the cookie (which it may not).
pub fn csrf_token(session: &str) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(b"deskbridge console csrf v1\0");
    context.update(session.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(context.finish().as_ref())
}

/// Refuses a state-changing request that the console cookie authenticates
/// unless it carries the session's CSRF token. A request with an
/// `Authorization` header is authenticated by it, not by the cookie, and
/// a browser never adds that header by itself.
pub(crate) async fn require_csrf(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let headers = request.headers();
    if !safe
        && !headers.contains_key(header::AUTHORIZATION)
        && let Some(session) = session_cookie(headers)
    {
        let presented = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !bool::from(presented.ct_eq(csrf_token(session).as_bytes())) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                ProblemType::CsrfTokenInvalid,
                "this request needs the x-csrf-token header the console was given at sign-in",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn session_set_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    login::session_set_cookie(SESSION_COOKIE, value, "/", "Strict", max_age, secure)
}

/// Sign in with a name and password, or with an agent token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    username: Option<String>,
    password: Option<String>,
    /// An agent token (`dbg_…`), instead of a name and password.
    token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AgentIdentity {
    name: String,
    /// `agent` or `admin`.
    role: String,
}

/// The signed-in agent and the CSRF token to send as `x-csrf-token` on
/// every state-changing request.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConsoleSession {
    agent: AgentIdentity,
    csrf_token: String,
}

/// Signs an agent in to the console; sets the session cookie.
#[utoipa::path(
    post,
    path = "/console/api/login",
    tag = "console",
    request_body = Login,
    responses(
        (status = 200, description = "Signed in; the `deskbridge_console` cookie is set", body = ConsoleSession),
        (status = 400, description = "`invalid_request`: neither a name and password nor a token", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials`: the same answer for an unknown agent and a wrong password", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a bot's token, or a password while password sign-in is turned off (`[console.oidc] passwords = false`)", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: see `Retry-After`", body = crate::http::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn login(
    State(g): State<Shared>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    Body(body): Body<Login>,
) -> Result<Response, Problem> {
    // Proxies are not trusted: behind one, every sign-in shares its address.
    let address = connect.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(c)| c.0.ip());
    let agent = match (&body.username, &body.password, &body.token) {
        (Some(_), Some(_), None) if !g.passwords_allowed() => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                ProblemType::Forbidden,
                "password sign-in is turned off: sign in at the company's identity provider",
            ));
        }
        (Some(name), Some(password), None) => {
            if name.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    ProblemType::InvalidRequest,
                    "the name or password is too long",
                ));
            }
            g.sign_in_with_password(name, password, address).await?
        }
        (None, None, Some(token)) => g.sign_in_with_token(token, address).await?,
        _ => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                ProblemType::InvalidRequest,
                "send either username and password, or token",
            ));
        }
    };
    let (name, role) = agent;
    if role == crate::agents::BOT_ROLE {
        // Checked after the credential, so the answer tells nothing to
        // whoever does not hold it.
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            ProblemType::Forbidden,
            "a bot uses the agent API with its token; it may not sign in to the console",
        ));
    }
    let session = random_id("dbc_")?;
    let ttl = g.config.console.session_ttl_secs;
    let t = g.now();
    g.store
        .insert_console_session(&agent_token_digest(&session), &name, t, t + ttl as i64)
        .await?;
    tracing::info!(agent = %name, "console sign-in");
    let mut response = Json(ConsoleSession {
        agent: AgentIdentity { name, role },
        csrf_token: csrf_token(&session),
    })
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        session_set_cookie(&session, ttl, g.config.console.secure_cookies),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The signed-in agent, so a reloaded console page picks up its session.
#[utoipa::path(
    get,
    path = "/console/api/me",
    tag = "console",
    security(("console_session" = [])),
    responses(
        (status = 200, description = "The session's agent and CSRF token", body = ConsoleSession),
        (status = 401, description = "`unauthorized`: not signed in", body = crate::http::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn me(State(g): State<Shared>, headers: HeaderMap) -> Result<Response, Problem> {
    let session = session_cookie(&headers).ok_or_else(signed_out)?;
    let (name, role) = g.console_agent(session).await?.ok_or_else(signed_out)?;
    let mut response = Json(ConsoleSession {
        agent: AgentIdentity { name, role },
        csrf_token: csrf_token(session),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn signed_out() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        ProblemType::Unauthorized,
        "not signed in to the console",
    )
}

/// Ends the console session and clears its cookie.
#[utoipa::path(
    post,
    path = "/console/api/logout",
    tag = "console",
    // Without a session there is nothing to end: 204 all the same.
    security(("console_session" = []), ()),
    params(("x-csrf-token" = Option<String>, Header, description = "The session's CSRF token, with the session's cookie")),
    responses(
        (status = 200, description = "Signed out of a sign-in at the identity provider: the browser goes on to `provider_logout_url` to end the provider's session too", body = ProviderLogout),
        (status = 204, description = "Signed out"),
        (status = 403, description = "`csrf_token_invalid`", body = crate::http::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn logout(State(g): State<Shared>, headers: HeaderMap) -> Result<Response, Problem> {
    let mut id_token = None;
    if let Some(session) = session_cookie(&headers) {
        id_token = g.store.delete_console_session(&agent_token_digest(session)).await?;
    }
    let provider_logout = match (id_token, &g.agent_idp) {
        (Some(sealed), Some(idp)) => {
            // A hint that no longer opens (a new token key) is left out:
            // the provider then asks its user to confirm.
            let hint = g.vault.open_sealed(&sealed, idp::ID_TOKEN_CONTEXT).ok();
            idp.logout_url(hint.as_ref()).await
        }
        _ => None,
    };
    let mut response = match provider_logout {
        Some(url) => Json(ProviderLogout {
            provider_logout_url: url,
        })
        .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_set_cookie("", 0, g.config.console.secure_cookies),
    );
    Ok(response)
}

/// Where the browser ends the agent's session at the identity provider.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProviderLogout {
    /// The provider's end-session endpoint (RP-Initiated Logout), which
    /// sends the browser back to the console.
    provider_logout_url: String,
}

/// What is wrong with a new console password, if anything.
pub fn password_problem(password: &str) -> Option<String> {
    if password.chars().count() < 12 {
        return Some("a console password needs at least 12 characters".into());
    }
    (password.len() > MAX_CREDENTIAL_LEN).then(|| format!("a console password has at most {MAX_CREDENTIAL_LEN} bytes"))
}

/// Why a console sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the name or password is not correct")]
    InvalidCredentials,
    #[error("this agent token has expired; ask an administrator for a new one")]
    TokenExpired,
    #[error("too many failed sign-ins; try again in {0} s")]
    Throttled(u64),
    #[error(transparent)]
    Internal(#[from] GatewayError),
}

impl From<SignInError> for Problem {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::InvalidCredentials => {
                Problem::new(StatusCode::UNAUTHORIZED, ProblemType::InvalidCredentials, e.to_string())
            }
            SignInError::TokenExpired => {
                Problem::new(StatusCode::UNAUTHORIZED, ProblemType::AgentTokenExpired, e.to_string())
            }
            SignInError::Throttled(wait) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                ProblemType::TooManyAttempts,
                e.to_string(),
            )
            .retry_after(wait),
            SignInError::Internal(inner) => Problem::from(inner),
        }
    }
}

impl Gateway {
    /// Whether agents may sign in to the console with a local password:
    /// yes, unless `[console.oidc] passwords = false`.
    pub fn passwords_allowed(&self) -> bool {
        self.config.console.oidc.as_ref().is_none_or(|oidc| oidc.passwords)
    }

    /// Checks an agent's password, throttling failures per name and address.
    pub async fn sign_in_with_password(
        &self,
        name: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<(String, String), SignInError> {
        let t = self.now() as u64;
        let throttle = &self.config.console.throttle;
        if let Some(wait) = self.coordination.sign_in_wait(throttle, Some(name), address).await {
            return Err(SignInError::Throttled(wait));
        }
        let attempt = self
            .console_throttle
            .reserve(Some(name), address, t)
            .map_err(SignInError::Throttled)?;
        let found = self.store.agent_password(name).await?;
        let hash = found.as_ref().and_then(|(_, hash)| hash.clone());
        let valid = self
            .passwords
            .verify(password.to_string(), hash)
            .await
            .map_err(|e| GatewayError::Crypto(e.to_string()))?;
        match found.filter(|_| valid) {
            Some((role, _)) => {
                attempt.succeeded();
                self.coordination.sign_in_succeeded(name).await;
                Ok((name.to_string(), role))
            }
            None => {
                attempt.failed(t);
                self.coordination.sign_in_failed(throttle, Some(name), address).await;
                Err(SignInError::InvalidCredentials)
            }
        }
    }

    /// Checks an agent token; failures count against the address.
    pub async fn sign_in_with_token(&self, token: &str, address: IpAddr) -> Result<(String, String), SignInError> {
        let t = self.now() as u64;
        let throttle = &self.config.console.throttle;
        // A token names no agent: failures count against the address only.
        if let Some(wait) = self.coordination.sign_in_wait(throttle, None, address).await {
            return Err(SignInError::Throttled(wait));
        }
        let attempt = self
            .console_throttle
            .reserve(None, address, t)
            .map_err(SignInError::Throttled)?;
        match self.agent(token.trim()).await? {
            AgentToken::Valid(name, role) => Ok((name, role)),
            // It was a real token: no guessing to throttle.
            AgentToken::Expired => Err(SignInError::TokenExpired),
            AgentToken::Unknown => {
                attempt.failed(t);
                self.coordination.sign_in_failed(throttle, None, address).await;
                Err(SignInError::InvalidCredentials)
            }
        }
    }

    /// The agent of a live console session: (name, role).
    pub async fn console_agent(&self, session: &str) -> Result<Option<(String, String)>, GatewayError> {
        self.store
            .console_session_agent(&agent_token_digest(session), self.now())
            .await
    }

    /// Sets an agent's console password (Argon2id) and ends its console
    /// sessions, since its credentials changed.
    pub async fn set_agent_password(&self, name: &str, password: &str) -> Result<(), GatewayError> {
        if let Some(problem) = password_problem(password) {
            return Err(GatewayError::Invalid(problem));
        }
        let hash = self
            .passwords
            .hash(password.to_string())
            .await
            .map_err(|e| GatewayError::Crypto(e.to_string()))?;
        self.store.set_agent_password(name, &hash).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_token_is_stable_per_session_and_differs_between_sessions() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert!(!csrf_token("secret-session").contains("secret"));
    }

    #[test]
    fn session_cookie_is_found_among_others_and_bounded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; deskbridge_console=dbc_x; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("dbc_x"));
        let mut long = HeaderMap::new();
        let value = format!("deskbridge_console={}", "x".repeat(300));
        long.insert(
            header::COOKIE,
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(session_cookie(&long), None);
    }
}
