//! `POST /customer_authenticate` and `POST /customer_logout`: the end
//! customer's login, answering with a JWT (token mode) or a session cookie.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::{ApiErrorCode, CustomerClaims, CustomerSession, CustomerToken};

use super::{Body, ClientAddress, FORM, Params, cookie, has_content_type, refuse_cross_site};
use crate::config::SessionMode;
use crate::crypto::{Purpose, random_bytes, random_token};
use crate::error::HttpError;
use crate::metrics::Outcome;
use crate::{BackendError, State};

/// Longest username or password looked at; longer ones are refused before
/// any hashing, so a huge password cannot buy extra CPU.
const MAX_CREDENTIAL_LEN: usize = 256;

/// Every 401 names how to authenticate (RFC 9110 §11.6.1): here, by posting
/// the login form. `Form` is not a registered HTTP scheme; browsers ignore
/// it, so no password dialog appears.
const LOGIN_CHALLENGE: &str = "Form realm=\"customer\"";

/// `Retry-After` of a login refused for a full hash queue: a place frees
/// within a hash or two.
const HASH_QUEUE_RETRY_SECS: u64 = 1;

pub(crate) async fn authenticate(
    Extract(state): Extract<Arc<State>>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, HttpError> {
    if state.config.login_sets_cookie() {
        refuse_cross_site(&state, &headers)?;
    }
    if !has_content_type(&headers, FORM) {
        return Err(HttpError::api(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiErrorCode::UnsupportedMediaType,
            "send username and password as application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(&body).map_err(HttpError::bad_request)?;
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        return Err(HttpError::bad_request("username and password are required"));
    };
    if username.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
        return Err(HttpError::bad_request("username or password is too long"));
    }
    let count = |outcome| state.metrics.customer_logins.get_or_create(&Outcome { outcome }).inc();

    let now = state.now();
    // Reserved before the hash, so concurrent guesses count at once.
    let attempt = state.throttle.reserve(Some(username), address, now).map_err(|wait| {
        count("throttled");
        HttpError::api(
            StatusCode::TOO_MANY_REQUESTS,
            ApiErrorCode::TooManyAttempts,
            "too many failed logins; try again later",
        )
        .retry_after(wait)
    })?;
    let _place = state.hash_queue.enter(address).ok_or_else(|| {
        count("busy");
        HttpError::api(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::ServerBusy,
            "too many logins are being checked; try again shortly",
        )
        .retry_after(HASH_QUEUE_RETRY_SECS)
    })?;
    let user = state.store.user_credentials(username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let valid = state
        .passwords
        .verify(password.to_string(), hash)
        .await
        .map_err(BackendError::from)?;
    let Some(user) = user.filter(|_| valid) else {
        attempt.failed(now);
        count("invalid_credentials");
        return Err(HttpError::api(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::InvalidCredentials,
            "the username or password is not correct",
        )
        .www_authenticate(LOGIN_CHALLENGE.into()));
    };
    attempt.succeeded();
    count("ok");

    let ttl = state.config.customer_token_ttl_secs;
    let issued_at = state.clock.unix_millis().to_string();
    let mut response = match state.config.session_mode {
        SessionMode::Token => {
            let mut response = Json(issue_jwt(&state, user.customer_id, now)?).into_response();
            if state.config.demo_site.is_some() {
                let cookie = super::demo_site::start_site_session(&state, user.user_id, now).await?;
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        SessionMode::Cookie => {
            let session = random_token("")?;
            let digest = state.secrets.digest(Purpose::Session, session.as_bytes());
            state
                .store
                .insert_session(&digest, user.user_id, now as i64, (now + ttl) as i64)
                .await?;
            let mut response = Json(CustomerSession {
                issued_at,
                expires_in: ttl.to_string(),
                cookie: state.config.cookie_name.clone(),
            })
            .into_response();
            let cookie = session_cookie(&state, &session, ttl);
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
    };
    super::no_store(&mut response);
    Ok(response)
}

/// A signed customer JWT for `sub`, valid for the configured lifetime.
pub(crate) fn issue_jwt(state: &State, sub: String, now: u64) -> Result<CustomerToken, HttpError> {
    let ttl = state.config.customer_token_ttl_secs;
    let claims = CustomerClaims {
        iss: state.issuer.clone(),
        aud: state.config.audience.clone(),
        sub,
        iat: now,
        exp: now + ttl,
        jti: base64_id()?,
    };
    Ok(CustomerToken {
        issued_at: state.clock.unix_millis().to_string(),
        jwt: state.keyring().sign(&claims)?,
        expires_in: ttl.to_string(),
    })
}

fn base64_id() -> Result<String, HttpError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>()?))
}

fn session_cookie(state: &State, value: &str, max_age: u64) -> HeaderValue {
    let secure = !state.config.insecure_cookies;
    login::session_set_cookie(&state.config.cookie_name, value, "/", "Lax", max_age, secure)
}

/// Revokes the session named by the cookie and clears the cookie.
pub(crate) async fn logout(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Result<Response, HttpError> {
    refuse_cross_site(&state, &headers)?;
    let Some(session) = cookie(&headers, &state.config.cookie_name) else {
        return Err(HttpError::api(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::InvalidCustomerToken,
            "no session cookie to log out",
        )
        .www_authenticate(LOGIN_CHALLENGE.into()));
    };
    let digest = state.secrets.digest(Purpose::Session, session.as_bytes());
    state.store.delete_session(&digest).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}
