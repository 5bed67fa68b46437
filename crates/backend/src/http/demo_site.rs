//! The demo company site (demo mode only): a sign-in page that calls
//! `/customer_authenticate` and loads the gateway's web SDK. It adds the one
//! thing a real site has that the contract leaves out: a site session
//! (HttpOnly cookie), which the page exchanges for a fresh short-lived JWT
//! when the chat asks for one, and which lists the customer's accounts as
//! any bank's own pages would (the page then asks deskbridge for their
//! transactions, as the customer).

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use contract::ApiErrorCode;
use serde_json::json;

use super::{cookie, refuse_cross_site};
use crate::State;
use crate::config::DemoSiteConfig;
use crate::crypto::{Purpose, random_token};
use crate::error::HttpError;

const INDEX: &str = include_str!("../../assets/site/index.html");
const SITE_JS: &str = include_str!("../../assets/site/site.js");
const SITE_CSS: &str = include_str!("../../assets/site/site.css");

const SITE_COOKIE: &str = "deskbridge_demo_site";
/// How long the site remembers a sign-in; the JWTs it mints live far shorter.
const SITE_SESSION_SECS: u64 = 3600;

pub(crate) fn routes(site: &DemoSiteConfig) -> Router<Arc<State>> {
    let csp = format!(
        "default-src 'self'; script-src 'self' {gw}; connect-src 'self' {gw}; style-src 'self'; \
         img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        gw = site.gateway_url.trim_end_matches('/')
    );
    let page = move |body: &'static str, content_type: &'static str| {
        let csp = csp.clone();
        move || async move { asset(body, content_type, &csp) }
    };
    Router::new()
        .route("/", get(page(INDEX, "text/html; charset=utf-8")))
        .route("/demo/site.js", get(page(SITE_JS, "text/javascript; charset=utf-8")))
        .route("/demo/site.css", get(page(SITE_CSS, "text/css; charset=utf-8")))
        .route("/demo/config.json", get(config))
        .route("/demo/token", post(token))
        .route("/demo/accounts", post(accounts))
        .route("/demo/logout", post(logout))
}

fn asset(body: &'static str, content_type: &'static str, csp: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The URL in it was checked at start-up to hold plain URL characters only.
    if let Ok(csp) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

async fn config(Extract(state): Extract<Arc<State>>) -> Result<Response, HttpError> {
    let site = state.config.demo_site.as_ref().ok_or_else(not_found)?;
    Ok(Json(json!({
        "gateway_url": site.gateway_url.trim_end_matches('/'),
        "app_key": site.app_key,
        "channel": site.channel,
        "connection": site.connection,
    }))
    .into_response())
}

fn not_found() -> HttpError {
    HttpError::api(StatusCode::NOT_FOUND, ApiErrorCode::NotFound, "no such endpoint")
}

fn site_cookie(state: &State, value: &str, max_age: u64) -> HeaderValue {
    login::session_set_cookie(
        SITE_COOKIE,
        value,
        "/demo",
        "Strict",
        max_age,
        !state.config.insecure_cookies,
    )
}

/// Starts the site's session for a customer who just signed in; returns its cookie.
pub(crate) async fn start_site_session(state: &State, user_id: i64, now: u64) -> Result<HeaderValue, HttpError> {
    let session = random_token("")?;
    let digest = state.secrets.digest(Purpose::SiteSession, session.as_bytes());
    state
        .store
        .insert_session(&digest, user_id, now as i64, (now + SITE_SESSION_SECS) as i64)
        .await?;
    Ok(site_cookie(state, &session, SITE_SESSION_SECS))
}

/// The customer signed in to the site (by its session cookie), for a
/// same-site request.
async fn site_customer(state: &State, headers: &HeaderMap) -> Result<String, HttpError> {
    refuse_cross_site(state, headers)?;
    let invalid = || {
        HttpError::api(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::InvalidCustomerToken,
            "not signed in to the site; sign in again",
        )
    };
    let session = cookie(headers, SITE_COOKIE)
        .filter(|s| s.len() <= 256)
        .ok_or_else(invalid)?;
    let digest = state.secrets.digest(Purpose::SiteSession, session.as_bytes());
    match state.store.session(&digest).await? {
        Some((customer_id, expires_at)) if expires_at > state.now() as i64 => Ok(customer_id),
        _ => Err(invalid()),
    }
}

/// A fresh customer JWT for the signed-in visitor of the site.
async fn token(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Result<Response, HttpError> {
    let customer_id = site_customer(&state, &headers).await?;
    let mut response = Json(super::customer::issue_jwt(&state, customer_id, state.now())?).into_response();
    super::no_store(&mut response);
    Ok(response)
}

/// The signed-in visitor's accounts (id and type): what the page needs to
/// ask for their transactions. Balances and transactions come through
/// deskbridge, as the customer sees them there.
async fn accounts(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Result<Response, HttpError> {
    let customer_id = site_customer(&state, &headers).await?;
    let profile = state.store.profile(&customer_id).await?;
    let accounts: Vec<_> = profile
        .map(|p| p.accounts)
        .unwrap_or_default()
        .into_iter()
        .map(|a| json!({ "id": a.id, "type": a.kind }))
        .collect();
    let mut response = Json(json!({ "accounts": accounts })).into_response();
    super::no_store(&mut response);
    Ok(response)
}

async fn logout(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Result<Response, HttpError> {
    refuse_cross_site(&state, &headers)?;
    if let Some(session) = cookie(&headers, SITE_COOKIE) {
        let digest = state.secrets.digest(Purpose::SiteSession, session.as_bytes());
        state.store.delete_session(&digest).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, site_cookie(&state, "", 0));
    Ok(response)
}
