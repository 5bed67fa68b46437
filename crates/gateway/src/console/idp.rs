//! Console sign-in at the company's identity provider (`[console.oidc]`
//! with `redirect_url`): the browser is sent to the provider with a new
//! `state`, `nonce` and PKCE challenge, kept sealed (by the token key) in a
//! cookie of its own, so whichever instance of the gateway the browser comes
//! back to can finish the sign-in. The provider's protocol is in
//! `crate::oidc`; here are the browser's pages and cookies.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use crate::Gateway;
use crate::http::Problem;
use crate::oidc::{AgentIdp, AgentIdpError, Callback, PendingSignIn, SIGN_IN_LIFETIME};
use crate::problem::ProblemType;
use crate::vault::random_id;

/// The cookie that carries a pending sign-in to the callback. `Lax`: the
/// browser comes back from the provider's site by a top-level GET.
const PENDING_COOKIE: &str = "deskbridge_oidc";
const PENDING_PATH: &str = "/console/oidc";
/// The associated data of a sealed pending sign-in: it opens as nothing else.
const PENDING_CONTEXT: &str = "console oidc sign-in";
/// The associated data of a session's sealed ID token.
pub(super) const ID_TOKEN_CONTEXT: &str = "console oidc id_token";

type Shared = Arc<Gateway>;

/// How an agent may sign in to the console.
#[derive(Serialize, ToSchema)]
pub(crate) struct SignInOptions {
    /// Whether a name and password are taken (`POST /console/api/login`).
    passwords: bool,
    /// The company's identity provider, when agents sign in there.
    provider: Option<ProviderOption>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ProviderOption {
    /// Its name, for the button: "Sign in with …".
    name: String,
    /// Where the browser goes to sign in there.
    url: String,
}

/// How an agent may sign in, for the console's sign-in page.
#[utoipa::path(
    get,
    path = "/console/api/sign-in",
    tag = "console",
    responses((status = 200, description = "The ways to sign in", body = SignInOptions))
)]
pub(crate) async fn options(State(g): State<Shared>) -> Response {
    let idp = g.agent_idp.as_ref().filter(|idp| idp.signs_in());
    let mut response = axum::Json(SignInOptions {
        passwords: g.passwords_allowed(),
        provider: idp.map(|idp| ProviderOption {
            name: idp.display_name(),
            url: format!("{PENDING_PATH}/login"),
        }),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Sends the browser to the provider to sign in.
#[utoipa::path(
    get,
    path = "/console/oidc/login",
    tag = "console",
    responses(
        (status = 303, description = "To the provider's authorization endpoint; the pending sign-in is set in the `deskbridge_oidc` cookie"),
        (status = 404, description = "`not_found`: agents do not sign in at an identity provider here", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The provider's metadata could not be read (an HTML page)", content_type = "text/html"),
    )
)]
pub(crate) async fn begin(State(g): State<Shared>) -> Result<Response, Problem> {
    let idp = provider(&g)?;
    let pending = PendingSignIn::begin(g.now() as u64)?;
    let to = match idp.authorization_url(&pending).await {
        Ok(url) => url,
        Err(e) => return Ok(outcome_page(idp, &e, None)),
    };
    let sealed = serde_json::to_string(&pending)
        .map_err(|e| crate::GatewayError::Io(e.to_string()))
        .and_then(|text| g.vault.seal(&text, PENDING_CONTEXT))?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        pending_cookie(&URL_SAFE_NO_PAD.encode(sealed), SIGN_IN_LIFETIME.as_secs(), &g),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&to)
            .map_err(|_| crate::GatewayError::Io("the authorization URL is not a header".into()))?,
    );
    Ok(response)
}

/// The provider sends the browser back here: the sign-in is finished, the
/// console session set, and the browser sent on to the console; or a page
/// says what went wrong.
#[utoipa::path(
    get,
    path = "/console/oidc/callback",
    tag = "console",
    params(
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The state this browser was given"),
        ("iss" = Option<String>, Query, description = "The provider that answers (RFC 9207)"),
        ("error" = Option<String>, Query, description = "The provider's refusal"),
    ),
    responses(
        (status = 303, description = "Signed in: the `deskbridge_console` cookie is set; on to the console"),
        (status = 400, description = "The answer is not for the sign-in this browser began, or the provider's tokens are not valid (an HTML page)", content_type = "text/html"),
        (status = 403, description = "Signed in at the provider, but no group maps to a role (an HTML page)", content_type = "text/html"),
        (status = 404, description = "`not_found`: agents do not sign in at an identity provider here", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 502, description = "The provider refused the sign-in (an HTML page)", content_type = "text/html"),
        (status = 503, description = "The provider could not be reached (an HTML page)", content_type = "text/html"),
    )
)]
pub(crate) async fn finish(
    State(g): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let idp = provider(&g)?;
    let back = Callback::from_query(query.as_deref().unwrap_or_default());
    let pending = login::cookie(&headers, PENDING_COOKIE)
        .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
        .and_then(|sealed| g.vault.open_sealed(&sealed, PENDING_CONTEXT).ok())
        .and_then(|text| serde_json::from_str::<PendingSignIn>(text.expose_secret()).ok());
    let outcome = match &pending {
        None => Err(AgentIdpError::SignIn(
            "this browser did not begin it, or its cookies were cleared: start again".into(),
        )),
        Some(pending) => idp.sign_in(&back, pending).await,
    };
    let mut response = match outcome {
        Ok(signed_in) => {
            if signed_in.agent.role == crate::agents::BOT_ROLE {
                outcome_page(
                    idp,
                    &AgentIdpError::Invalid(
                        "its groups map to the bot role, which may not sign in to the console".into(),
                    ),
                    None,
                )
            } else {
                let session = random_id("dbc_")?;
                let ttl = g.config.console.session_ttl_secs;
                let t = g.now();
                let sealed = g.vault.seal(signed_in.id_token.expose_secret(), ID_TOKEN_CONTEXT)?;
                g.store
                    .insert_idp_console_session(
                        &crate::agent_token_digest(&session),
                        &signed_in,
                        &sealed,
                        t,
                        t + ttl as i64,
                    )
                    .await?;
                tracing::info!(agent = %signed_in.agent.name, role = %signed_in.agent.role, "console sign-in at the identity provider");
                let mut response = StatusCode::SEE_OTHER.into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::SET_COOKIE,
                    super::session_set_cookie(&session, ttl, g.config.console.secure_cookies),
                );
                // The console asks who is signed in when it sees this.
                headers.insert(header::LOCATION, HeaderValue::from_static("/console/?signed_in=1"));
                response
            }
        }
        Err(e) => {
            tracing::warn!(reason = %e, "console sign-in at the identity provider failed");
            // Signed in there as someone without a role: a way to sign out
            // there, and in as someone else.
            let switch = match e {
                AgentIdpError::NoRole(_) => idp.logout_url(None).await,
                _ => None,
            };
            outcome_page(idp, &e, switch.as_deref())
        }
    };
    // A pending sign-in is used once, whatever came of it.
    response
        .headers_mut()
        .append(header::SET_COOKIE, pending_cookie("", 0, &g));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The provider ends sessions here, server to server (OpenID Connect
/// Back-Channel Logout 1.0): the agent signed out at the provider, or was
/// disabled there.
#[utoipa::path(
    post,
    path = "/console/oidc/backchannel-logout",
    tag = "console",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`logout_token=<JWT>`, signed by the provider"),
    responses(
        (status = 200, description = "The console sessions it names have ended (also when there were none)"),
        (status = 400, description = "`invalid_request`: no logout token, or one that is not valid (the detail says why)", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: agents do not sign in at an identity provider here", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: send application/x-www-form-urlencoded", body = crate::http::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`identity_provider_unavailable`: its keys could not be fetched", body = crate::http::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn backchannel_logout(
    State(g): State<Shared>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Problem> {
    let idp = provider(&g)?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::UnsupportedMediaType,
            "send application/x-www-form-urlencoded",
        ));
    }
    let body = body.map_err(|e| {
        let (status, kind, detail) = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemType::PayloadTooLarge,
                "the body is too large",
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                ProblemType::InvalidRequest,
                "the body could not be read",
            )
        };
        Problem::new(status, kind, detail)
    })?;
    let token = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, ProblemType::InvalidRequest, "no logout_token"))?;
    let who = idp.logout_token(&token).await.map_err(|e| match e {
        AgentIdpError::Unavailable(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::IdentityProviderUnavailable,
            e.to_string(),
        ),
        _ => Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemType::InvalidRequest,
            format!("the logout token is not valid: {e}"),
        ),
    })?;
    let ended = g.store.delete_logged_out_sessions(&who).await?;
    tracing::info!(sessions = ended, "back-channel logout from the identity provider");
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn provider(g: &Gateway) -> Result<&AgentIdp, Problem> {
    g.agent_idp.as_ref().filter(|idp| idp.signs_in()).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            ProblemType::NotFound,
            "agents do not sign in at an identity provider here: [console.oidc] has no redirect_url",
        )
    })
}

fn pending_cookie(value: &str, max_age: u64, g: &Gateway) -> HeaderValue {
    login::session_set_cookie(
        PENDING_COOKIE,
        value,
        PENDING_PATH,
        "Lax",
        max_age,
        g.config.console.secure_cookies,
    )
}

const OUTCOME_HTML: &str = include_str!("../../assets/console/sign-in.html");

/// A page that says why the sign-in did not complete, and what to do; with
/// `switch`, a link that ends the provider's session (to sign in there as
/// someone else).
fn outcome_page(idp: &AgentIdp, e: &AgentIdpError, switch: Option<&str>) -> Response {
    let provider = idp.display_name();
    let (status, title, advice) = match e {
        AgentIdpError::NoRole(claim) => (
            StatusCode::FORBIDDEN,
            "You have no role in deskbridge".to_string(),
            format!(
                "You signed in at {provider}, but none of your groups (its {claim:?} claim) gives you a role in the deskbridge console. Ask an administrator to add one of your groups to [console.oidc] role_map."
            ),
        ),
        AgentIdpError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{provider} could not be reached"),
            "Try again in a minute. If it keeps failing, tell an administrator: the gateway's log says why.".into(),
        ),
        AgentIdpError::Refused(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{provider} did not sign you in"),
            "Try again. If it keeps failing, tell an administrator: the gateway's log says why.".into(),
        ),
        AgentIdpError::Invalid(_) | AgentIdpError::Expired | AgentIdpError::SignIn(_) => (
            StatusCode::BAD_REQUEST,
            "The sign-in did not complete".to_string(),
            "Start again from the console's sign-in page.".into(),
        ),
    };
    let page = OUTCOME_HTML
        .replace("{title}", &escape(&title))
        .replace("{detail}", &escape(&e.to_string()))
        .replace("{advice}", &escape(&advice))
        .replace(
            "<!-- {switch} -->",
            &switch.map_or_else(String::new, |url| {
                format!(
                    r#"<a class="button wide" href="{}" data-testid="sign-in-switch">Sign in as someone else</a>"#,
                    escape(url)
                )
            }),
        );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::CONSOLE_CSP),
    );
    response
}

/// Text into HTML: nothing in it can open a tag or leave an attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            super::escape(r#"<script>"x"&'y'</script>"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
