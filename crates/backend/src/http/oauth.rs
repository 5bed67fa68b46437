//! `POST /access_token` (RFC 6749 §4.4, client credentials; RFC 8693 token
//! exchange, in `token_exchange.rs`) and `POST /revoke` (RFC 7009). Clients authenticate with HTTP Basic or form fields, or with
//! a signed client assertion (`client_assertion.rs`); secrets
//! are checked as keyed digests in constant time, with no password hash on
//! the path (they are 256-bit random values: see docs/security.md).

use std::sync::Arc;

use axum::extract::{RawQuery, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use contract::{AccessTokenResponse, OAuthErrorCode, token_exchange};

use super::{Body, FORM, Params, has_content_type};
use crate::crypto::{Purpose, digests_equal};
use crate::error::HttpError;
use crate::{State, tls_clients};
use serving::tls::PeerCertificate;

pub(crate) const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub(crate) const REALM: &str = "deskbridge";

struct AuthenticatedClient {
    client_id: String,
    scopes: String,
}

/// `invalid_client` is a 401, and every 401 carries a challenge (RFC 9110
/// §15.5.2); Basic is the scheme a client can retry with.
fn invalid_client(description: &str) -> HttpError {
    HttpError::oauth(OAuthErrorCode::InvalidClient, description).www_authenticate(format!("Basic realm=\"{REALM}\""))
}

/// Decodes one `client_id` or `client_secret` of a Basic header, which RFC
/// 6749 §2.3.1 says is form-urlencoded before base64.
fn form_decode(component: &str) -> Option<String> {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

pub(crate) fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, HttpError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || invalid_client("the Basic credentials are malformed");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(HttpError::oauth(
            OAuthErrorCode::InvalidRequest,
            "the token endpoint accepts only Basic client authentication in the Authorization header",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((
        form_decode(id).ok_or_else(malformed)?,
        form_decode(secret).ok_or_else(malformed)?,
    )))
}

/// Authenticates the client by exactly one method: a secret (Basic or
/// posted), a signed assertion, or, for a `[[tls_clients]]` entry, its TLS
/// certificate.
async fn authenticate_client(
    state: &State,
    headers: &HeaderMap,
    form: &Params,
    certificate: Option<&PeerCertificate>,
) -> Result<AuthenticatedClient, HttpError> {
    let basic = basic_credentials(headers)?;
    let posted = form.get("client_secret");
    if let (Some(kind), Some(assertion)) = (form.get("client_assertion_type"), form.get("client_assertion")) {
        if basic.is_some() || posted.is_some() {
            return Err(HttpError::oauth(
                OAuthErrorCode::InvalidRequest,
                "use one client authentication method, not a client assertion and a secret",
            ));
        }
        let (client_id, scopes) =
            super::client_assertion::authenticate(state, kind, assertion, form.get("client_id")).await?;
        return Ok(AuthenticatedClient { client_id, scopes });
    }
    if form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some() {
        return Err(HttpError::oauth(
            OAuthErrorCode::InvalidRequest,
            "client_assertion and client_assertion_type go together",
        ));
    }
    if let (None, None, Some(id)) = (&basic, posted, form.get("client_id"))
        && tls_clients::is_registered(&state.config.tls_clients, id)
    {
        return match tls_clients::authenticate(&state.config.tls_clients, id, certificate) {
            Some(client) => Ok(AuthenticatedClient {
                client_id: client.client_id.clone(),
                scopes: client.scopes.clone(),
            }),
            None => Err(invalid_client("client certificate authentication failed")),
        };
    }
    let (client_id, secret) = match (basic, posted) {
        (Some(_), Some(_)) => {
            return Err(HttpError::oauth(
                OAuthErrorCode::InvalidRequest,
                "use one client authentication method, not both Basic and client_secret",
            ));
        }
        (Some((id, secret)), None) => {
            if form.get("client_id").is_some_and(|posted_id| posted_id != id) {
                return Err(HttpError::oauth(
                    OAuthErrorCode::InvalidRequest,
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => {
            let Some(id) = form.get("client_id") else {
                return Err(HttpError::oauth(
                    OAuthErrorCode::InvalidRequest,
                    "client_id is required",
                ));
            };
            (id.to_string(), secret.to_string())
        }
        (None, None) => return Err(invalid_client("client authentication is required")),
    };
    let presented = state.secrets.digest(Purpose::ClientSecret, secret.as_bytes());
    let client = state.store.client(&client_id).await?;
    // Compare against a digest even for an unknown client, so both failures
    // take the same time.
    let stored = client.as_ref().map_or(&[0u8; 32][..], |c| c.secret_digest.as_slice());
    match client {
        Some(c) if digests_equal(&presented, stored) => Ok(AuthenticatedClient {
            client_id,
            scopes: c.scopes,
        }),
        _ => Err(invalid_client("client authentication failed")),
    }
}

/// The granted scope: the requested one if it is a subset of the client's,
/// otherwise all of the client's.
fn granted_scope(requested: Option<&str>, allowed: &str) -> Result<String, HttpError> {
    let allowed: Vec<&str> = allowed.split_whitespace().collect();
    let Some(requested) = requested else {
        return Ok(allowed.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split_whitespace() {
        if !allowed.contains(&scope) {
            return Err(HttpError::oauth(
                OAuthErrorCode::InvalidScope,
                format!("the client may not request the scope {scope:?}"),
            ));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

pub(crate) async fn access_token(
    Extract(state): Extract<Arc<State>>,
    RawQuery(query): RawQuery,
    certificate: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, HttpError> {
    let invalid_request = |d: String| HttpError::oauth(OAuthErrorCode::InvalidRequest, d);
    if !has_content_type(&headers, FORM) {
        return Err(invalid_request(format!("the token request must be {FORM}")));
    }
    let form = Params::parse(&body).map_err(invalid_request)?;
    let query = Params::parse(query.as_deref().unwrap_or("").as_bytes()).map_err(invalid_request)?;
    if query.get("client_secret").is_some() {
        return Err(invalid_request(
            "client credentials must not be sent in the query string".into(),
        ));
    }
    // The vendor's example sends grant_type in the query string; RFC 6749 in the body.
    let grant_type = match (form.get("grant_type"), query.get("grant_type")) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid_request("grant_type differs between query and body".into()));
        }
        (Some(g), _) | (None, Some(g)) => g.to_string(),
        (None, None) => return Err(invalid_request("grant_type is required".into())),
    };
    let client = authenticate_client(&state, &headers, &form, certificate.as_ref().map(|c| &c.0)).await?;
    let exchange = match grant_type.as_str() {
        GRANT_CLIENT_CREDENTIALS => None,
        token_exchange::GRANT_TYPE => Some(super::token_exchange::delegation(&state, &form)?),
        _ => {
            return Err(HttpError::oauth(
                OAuthErrorCode::UnsupportedGrantType,
                format!(
                    "the grants supported are {GRANT_CLIENT_CREDENTIALS} and {}",
                    token_exchange::GRANT_TYPE
                ),
            ));
        }
    };
    // RFC 6749 §3.1: a parameter is sent once; in both places, neither wins.
    let requested = match (form.get("scope"), query.get("scope")) {
        (Some(_), Some(_)) => {
            return Err(invalid_request(
                "scope is given in both the query and the body; send it once".into(),
            ));
        }
        (body, query) => body.or(query),
    };
    let scope = granted_scope(requested, &client.scopes)?;
    let now_ms = state.clock.unix_millis() as u64;
    let (ttl, delegation) = match exchange {
        None => (state.config.access_token_ttl_secs, None),
        // Never past the customer's own token, nor past a few minutes.
        Some((delegation, subject_exp)) => (
            state
                .config
                .access_token_ttl_secs
                .min(super::token_exchange::MAX_EXCHANGED_TTL_SECS)
                .min(subject_exp.saturating_sub(now_ms / 1000))
                .max(1),
            Some(delegation),
        ),
    };
    let exchanged = delegation.is_some();
    let (token, _) = state
        .access_tokens
        .issue(&state.secrets, &client.client_id, &scope, now_ms, ttl, delegation)?;
    match exchanged {
        true => state.metrics.access_tokens_exchanged.inc(),
        false => state.metrics.access_tokens_issued.inc(),
    };
    let body = AccessTokenResponse {
        token_type: "Bearer".into(),
        access_token: token,
        expires_in: Some(ttl),
        issued_at: Some(state.clock.unix_millis().to_string()),
        client_id: Some(client.client_id),
        scope: Some(scope),
        issued_token_type: exchanged.then(|| token_exchange::ACCESS_TOKEN.to_string()),
    };
    let mut response = Json(body).into_response();
    super::no_store(&mut response);
    Ok(response)
}

/// RFC 7009: a client revokes one of its own access tokens. The answer is
/// 200 whether or not the token was valid, so it reveals nothing.
pub(crate) async fn revoke(
    Extract(state): Extract<Arc<State>>,
    certificate: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, HttpError> {
    if !has_content_type(&headers, FORM) {
        return Err(HttpError::oauth(
            OAuthErrorCode::InvalidRequest,
            format!("the revocation request must be {FORM}"),
        ));
    }
    let form = Params::parse(&body).map_err(|d| HttpError::oauth(OAuthErrorCode::InvalidRequest, d))?;
    let client = authenticate_client(&state, &headers, &form, certificate.as_ref().map(|c| &c.0)).await?;
    let Some(token) = form.get("token") else {
        return Err(HttpError::oauth(OAuthErrorCode::InvalidRequest, "token is required"));
    };
    let now = state.now();
    if let Ok(grant) = state.access_tokens.verify(&state.secrets, token, now)
        && grant.client_id == client.client_id
    {
        state
            .store
            .revoke_access_token(&grant.jti, grant.expires_at as i64)
            .await?;
        state.access_tokens.revoke(&grant, now);
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_must_be_a_subset_and_defaults_to_all() {
        assert_eq!(
            granted_scope(None, "profile:read accounts:read").ok(),
            Some("profile:read accounts:read".into())
        );
        assert_eq!(
            granted_scope(Some("profile:read profile:read"), "profile:read").ok(),
            Some("profile:read".into())
        );
        assert!(granted_scope(Some("admin"), "profile:read").is_err());
    }

    #[test]
    fn basic_components_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("%ff"), None);
    }
}
