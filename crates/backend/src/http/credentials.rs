//! The three credentials every customer-data API checks, in this order:
//! system bearer token (401 `invalid_token`), API key (403), customer token
//! (401 with a customer-specific code), so a caller always knows *whose*
//! credential failed. A token from a token exchange names its customer
//! itself: then no separate customer token is read.

use axum::http::{HeaderMap, StatusCode, header};
use contract::{ApiErrorCode, CustomerAuthBody, headers as h};

use super::oauth::REALM;
use super::{cookie, has_content_type};
use crate::State;
use crate::access_tokens::Grant;
use crate::config::SessionMode;
use crate::customer_auth::CustomerAuthError;
use crate::error::HttpError;

/// What one API asks of its caller: the scope of the system token and the
/// API name the API key must grant.
#[derive(Clone, Copy)]
pub(crate) struct Need {
    pub scope: &'static str,
    pub api: &'static str,
}

/// Who a request with all three credentials comes from.
pub(crate) struct Caller {
    /// The OAuth client of the system token: idempotency keys are its own.
    pub client_id: String,
    pub customer_id: String,
    /// With an exchanged token: who acts for the customer (`agent:NAME`).
    pub actor: Option<String>,
}

/// A refusal, with the outcome label the metrics count it by.
pub(crate) type Failure = (&'static str, HttpError);

/// Checks all three credentials for `need`; the customer's token may also
/// come in the JSON `body` (field `customer_auth`).
pub(crate) async fn authorize(state: &State, headers: &HeaderMap, body: &[u8], need: Need) -> Result<Caller, Failure> {
    let grant = check_system_token(state, headers, need.scope)?;
    check_api_key(state, headers, need.api).await?;
    let (customer_id, actor) = match grant.delegation {
        Some(delegation) => (delegation.customer_id, delegation.actor),
        None => (customer_identity(state, headers, body).await?, None),
    };
    Ok(Caller {
        client_id: grant.client_id,
        customer_id,
        actor,
    })
}

fn bearer_error(error: Option<&str>, description: &str) -> Failure {
    let challenge = match error {
        Some(code) => format!("Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{description}\""),
        None => format!("Bearer realm=\"{REALM}\""),
    };
    (
        "invalid_token",
        HttpError::api(StatusCode::UNAUTHORIZED, ApiErrorCode::InvalidToken, description).www_authenticate(challenge),
    )
}

fn check_system_token(state: &State, headers: &HeaderMap, scope: &str) -> Result<Grant, Failure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        // RFC 6750 §3.1: no error code when the request has no credentials.
        return Err(bearer_error(
            None,
            "a system access token is required: Authorization: Bearer <token>",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        // RFC 6750 §3.1: another scheme (Basic, say) is a request without
        // a bearer credential, so the challenge names no error either.
        .ok_or_else(|| bearer_error(None, "the Authorization header is not a Bearer token"))?;
    let grant = state
        .access_tokens
        .verify(&state.secrets, token, state.now())
        .map_err(|r| bearer_error(Some("invalid_token"), r.describe()))?;
    if !grant.has_scope(scope) {
        return Err((
            "insufficient_scope",
            HttpError::api(
                StatusCode::FORBIDDEN,
                ApiErrorCode::InsufficientScope,
                format!("the access token lacks the scope {scope}"),
            )
            .www_authenticate(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
        ));
    }
    Ok(grant)
}

async fn check_api_key(state: &State, headers: &HeaderMap, api: &str) -> Result<(), Failure> {
    let invalid = || {
        (
            "invalid_api_key",
            HttpError::api(
                StatusCode::FORBIDDEN,
                ApiErrorCode::InvalidApiKey,
                format!("a valid API key is required in the {} header", h::API_KEY),
            ),
        )
    };
    let key = headers
        .get(h::API_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(invalid)?;
    let apis = state.api_keys.apis(state, key).await.map_err(|e| ("internal", e))?;
    let apis = apis.ok_or_else(invalid)?;
    if !apis.split(',').any(|a| a.trim() == api) {
        return Err((
            "api_not_allowed",
            HttpError::api(
                StatusCode::FORBIDDEN,
                ApiErrorCode::ApiNotAllowed,
                format!("this API key does not grant the {api} API"),
            ),
        ));
    }
    Ok(())
}

fn customer_failure(error: CustomerAuthError) -> Failure {
    let (code, outcome, description) = match error {
        CustomerAuthError::Invalid(why) => (ApiErrorCode::InvalidCustomerToken, "invalid_customer_token", why),
        CustomerAuthError::Expired => (
            ApiErrorCode::CustomerTokenExpired,
            "customer_token_expired",
            "the customer's token has expired; ask the channel for a fresh one",
        ),
    };
    // A challenge of its own scheme, so it is never mistaken for a bad system token.
    let challenge = format!(
        "{} realm=\"customer\", error=\"{outcome}\"",
        h::CUSTOMER_AUTH_JWT_SCHEME
    );
    (
        outcome,
        HttpError::api(StatusCode::UNAUTHORIZED, code, description).www_authenticate(challenge),
    )
}

/// The customer id, from the `customer-auth` header, the session cookie, or
/// the `customer_auth` body field, in that order.
async fn customer_identity(state: &State, headers: &HeaderMap, body: &[u8]) -> Result<String, Failure> {
    if let Some(value) = headers.get(h::CUSTOMER_AUTH) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(h::CUSTOMER_AUTH_JWT_SCHEME))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                customer_failure(CustomerAuthError::Invalid(
                    "the customer-auth header must be JWT <token>",
                ))
            })?;
        return verify_jwt(state, token);
    }
    if let Some(session) = cookie(headers, &state.config.cookie_name) {
        return state
            .verify_session(session)
            .await
            .map_err(|e| ("internal", e.into()))?
            .map_err(customer_failure);
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        if !has_content_type(headers, "application/json") {
            return Err((
                "unsupported_media_type",
                HttpError::api(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ApiErrorCode::UnsupportedMediaType,
                    "a request body must be application/json",
                ),
            ));
        }
        let parsed: CustomerAuthBody = serde_json::from_slice(body).map_err(|_| {
            (
                "invalid_request",
                HttpError::bad_request("the body is not the expected JSON object"),
            )
        })?;
        if let Some(token) = parsed.customer_auth {
            return verify_jwt(state, &token);
        }
    }
    Err(customer_failure(CustomerAuthError::Invalid(
        "no customer token: send customer-auth: JWT <token>, the session cookie, or customer_auth in the body",
    )))
}

/// A customer JWT's customer id. A backend in cookie mode takes JWTs only
/// when `cookie_mode_accepts_jwts` says so: it knows its customers by
/// session, which a logout or a password change ends, and a JWT outlives both.
fn verify_jwt(state: &State, token: &str) -> Result<String, Failure> {
    if state.config.session_mode == SessionMode::Cookie && !state.config.cookie_mode_accepts_jwts {
        return Err(customer_failure(CustomerAuthError::Invalid(
            "this backend identifies customers by session cookie; customer JWTs are not accepted",
        )));
    }
    state.verify_customer_jwt(token).map_err(customer_failure)
}
