//! Discovery and operations: JWKS, RFC 8414 metadata, health, metrics, and
//! the OpenAPI document of every endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as Extract;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use contract::{AuthorizationServerMetadata, paths};

use super::oauth::GRANT_CLIENT_CREDENTIALS;
use crate::State;

pub(crate) async fn jwks(Extract(state): Extract<Arc<State>>) -> Response {
    let mut response = state.keyring().jwks().to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Short, so a rotation reaches verifiers quickly.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

pub(crate) async fn metadata(Extract(state): Extract<Arc<State>>) -> Json<AuthorizationServerMetadata> {
    let url = |path: &str| format!("{}{path}", state.public_url);
    Json(AuthorizationServerMetadata {
        issuer: state.issuer.clone(),
        token_endpoint: url(paths::ACCESS_TOKEN),
        jwks_uri: url(paths::JWKS),
        response_types_supported: Vec::new(),
        grant_types_supported: vec![
            GRANT_CLIENT_CREDENTIALS.into(),
            contract::token_exchange::GRANT_TYPE.into(),
        ],
        token_endpoint_auth_methods_supported: {
            let mut methods = vec![
                "client_secret_basic".to_string(),
                "client_secret_post".to_string(),
                "private_key_jwt".to_string(),
            ];
            if !state.config.tls_clients.is_empty() {
                methods.push("tls_client_auth".into());
            }
            methods
        },
        token_endpoint_auth_signing_alg_values_supported: vec!["ES256".into(), "RS256".into()],
        revocation_endpoint: Some(url(paths::REVOKE)),
        scopes_supported: crate::SCOPES.iter().map(|s| s.to_string()).collect(),
    })
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The endpoints as OpenAPI 3.1, written by hand from the contract and
/// checked against the running server by schemathesis
/// (`interop/schemathesis/run.sh`).
const OPENAPI: &str = include_str!("../../assets/openapi.json");

/// The document, naming the configured session cookie (letters, digits,
/// '_' and '-' only, so it needs no escaping).
pub(crate) async fn openapi(Extract(state): Extract<Arc<State>>) -> Response {
    let document = OPENAPI.replace("\"deskbridge_session\"", &format!("\"{}\"", state.config.cookie_name));
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

pub(crate) async fn metrics(Extract(state): Extract<Arc<State>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every endpoint of the contract is in the document, and only those.
    #[test]
    fn the_openapi_document_names_every_endpoint() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
        let mut documented: Vec<&str> = document["paths"]
            .as_object()
            .map(|paths| paths.keys().map(String::as_str).collect())
            .unwrap_or_default();
        documented.sort_unstable();
        let mut served = vec![
            paths::CUSTOMER_AUTHENTICATE,
            paths::CUSTOMER_LOGOUT,
            paths::ACCESS_TOKEN,
            paths::REVOKE,
            paths::GET_PROFILE,
            paths::ACCOUNT_TRANSACTIONS,
            paths::CARD_BLOCK,
            paths::JWKS,
            paths::AUTHORIZATION_SERVER_METADATA,
            "/healthz",
            "/metrics",
            "/openapi.json",
        ];
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
