//! Discovery and operations: JWKS, RFC 8414 metadata, health, metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as Extract;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use contract::{AuthorizationServerMetadata, paths};

use super::oauth::GRANT_CLIENT_CREDENTIALS;
use super::profile::SCOPE;
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
        grant_types_supported: vec![GRANT_CLIENT_CREDENTIALS.into()],
        token_endpoint_auth_methods_supported: vec!["client_secret_basic".into(), "client_secret_post".into()],
        revocation_endpoint: Some(url(paths::REVOKE)),
        scopes_supported: vec![SCOPE.into()],
    })
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub(crate) async fn metrics(Extract(state): Extract<Arc<State>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
