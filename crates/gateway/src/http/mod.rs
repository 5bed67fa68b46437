//! The gateway's HTTP API: channel intake (app key), the agent API (agent
//! token), admin endpoints, and operations. Failures are RFC 9457
//! `application/problem+json` with a stable `type` per failure. `GET
//! /openapi.json` serves the OpenAPI 3.1 document generated from the
//! handlers' annotations below ([`ApiDoc`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::agents::AgentToken;
use crate::connector::ActionError;
use crate::limits::{RetryAfter, StreamHolder};
use crate::problem::ProblemType;
use crate::store::{AgentTokenRow, AuditRecord, ConversationSummary, EventRow, ExternalRefRow, SessionRow};
use crate::{CustomerHandoff, Gateway, IntakeError};

mod agent;
mod channel;
mod operations;
mod problem;

use self::agent::*;
use self::channel::*;
use self::operations::*;
use self::problem::action_problem;
pub(crate) use self::problem::{Problem, ProblemBody};

type Shared = Arc<Gateway>;

pub const APP_KEY_HEADER: &str = "x-deskbridge-app-key";

const PROBLEM: &str = "application/problem+json";

/// The OpenAPI document of this API, generated from the `#[utoipa::path]`
/// annotations on the handlers and the `ToSchema` types they use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "deskbridge gateway",
        description = "Channel intake (app key), the agent API (agent token), admin endpoints and operations. \
                       Failures are RFC 9457 `application/problem+json` with a stable `type` per failure."
    ),
    paths(
        open_session,
        authenticate_session,
        check_origin,
        bind_session_ref,
        session_events,
        agent_events,
        me,
        list_conversations,
        get_conversation,
        bind_conversation_ref,
        run_action,
        reveal_value,
        list_actions,
        run_customer_action,
        list_connections,
        probe_connection,
        list_audit,
        list_agent_tokens,
        problem_types,
        healthz,
        ready,
        metrics,
        openapi,
        crate::console::login,
        crate::console::me,
        crate::console::logout,
        crate::console::idp::options,
        crate::console::idp::begin,
        crate::console::idp::finish,
        crate::console::idp::backchannel_logout,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "channel", description = "Customer sessions, opened by a channel with its app key"),
        (name = "agent", description = "Conversations and actions, for agents"),
        (name = "admin", description = "Connections and the audit log, for agents with the admin role"),
        (name = "console", description = "Sign-in for the agent console at /console: a session cookie, and a CSRF token \
                                          to send as `x-csrf-token` on every state-changing request the cookie authenticates"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "agent_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "console_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::console::SESSION_COOKIE,
                "Set by POST /console/api/login; state-changing requests also need its CSRF token in x-csrf-token",
            ))),
        );
        components.add_security_scheme(
            "app_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(APP_KEY_HEADER))),
        );
    }
}

/// Browsers may call the channel endpoints from the origins the channels
/// list; the handlers still check each channel's own list.
fn channel_cors(gateway: &Gateway) -> tower_http::cors::CorsLayer {
    let origins: Vec<HeaderValue> = gateway
        .channels
        .values()
        .flat_map(|(c, _)| c.allowed_origins.iter())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static(APP_KEY_HEADER),
            HeaderName::from_static("idempotency-key"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

pub(crate) fn router(gateway: Shared) -> Router {
    // The channel routes carry their own 405 answer inside the CORS layer,
    // so a browser's preflight meets CORS before any method check.
    let channel = Router::new()
        .route("/v1/sessions", post(open_session))
        .route("/v1/sessions/{id}/authenticate", post(authenticate_session))
        .route("/v1/sessions/{id}/external-refs", post(bind_session_ref))
        .route("/v1/sessions/{id}/events", get(session_events))
        .route("/v1/sessions/{id}/actions/{action}", post(run_customer_action))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(channel_cors(&gateway));
    // Any page may ask whether its own origin is allowed.
    let origin_check = Router::new()
        .route("/v1/channels/{channel}/origin", get(check_origin))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([axum::http::Method::GET])
                .allow_headers([HeaderName::from_static(APP_KEY_HEADER)])
                .max_age(std::time::Duration::from_secs(600)),
        );
    Router::new()
        .route("/v1/events", get(agent_events))
        .route("/v1/me", get(me))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation))
        .route("/v1/conversations/{id}/external-refs", post(bind_conversation_ref))
        .route("/v1/conversations/{id}/actions/{action}", post(run_action))
        .route("/v1/conversations/{id}/actions/{action}/reveal", post(reveal_value))
        .route("/v1/connections/{name}/actions", get(list_actions))
        .route("/v1/connections", get(list_connections))
        .route("/v1/connections/{name}/probe", post(probe_connection))
        .route("/v1/audit", get(list_audit))
        .route("/v1/agent-tokens", get(list_agent_tokens))
        .route_layer(axum::middleware::from_fn(crate::console::require_csrf))
        .route("/v1/problem-types", get(problem_types))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(method_not_allowed)
        .merge(channel)
        .merge(origin_check)
        .merge(crate::console::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .layer(axum::middleware::from_fn(serving::log_request))
        .with_state(gateway)
}

/// The largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Refuses a request whose declared `Content-Length` is over the limit
/// before its body is read: at once, instead of after the body deadline,
/// and without a `100 Continue` (hyper sends that only when the body is read).
async fn refuse_declared_oversize(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut response = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::PayloadTooLarge,
            "the body is too large",
        )
        .into_response();
        // The unread body would otherwise be the next request's head.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(request).await
}

pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ProblemType::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}

/// Path parameters, with a rejection (a segment that is not UTF-8, say)
/// turned into a problem that does not repeat the path.
struct Path<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    ProblemType::InvalidRequest,
                    "a path segment is not valid UTF-8 text",
                )
            })
    }
}

/// Query parameters, with a rejection turned into a problem.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    ProblemType::InvalidRequest,
                    without_values(&e.body_text()),
                )
            })
    }
}

/// A JSON body, with a rejection turned into a problem.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ProblemType::UnsupportedMediaType,
                "send application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemType::PayloadTooLarge,
                "the body is too large",
            )),
            Err(JsonRejection::BytesRejection(e)) if serving::is_body_timeout(&e) => Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                ProblemType::RequestTimeout,
                "the body did not arrive in time",
            )),
            Err(e) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                ProblemType::InvalidRequest,
                without_values(&e.body_text()),
            )),
        }
    }
}

/// A JSON error message without the value it quotes: serde's "invalid
/// type: integer `123`, expected a string" would echo a password or token
/// sent with the wrong type. The field's path and what was expected stay.
pub(crate) fn without_values(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some(start) = message.find(marker)
            && let Some(len) = message[start..].rfind(", expected")
        {
            let kept = &marker[..marker.len() - 2];
            return format!("{}{kept}{}", &message[..start], &message[start + len..]);
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[test]
    fn json_errors_keep_the_field_but_not_the_value() {
        let m = "Failed to deserialize the JSON body into the target type: password: invalid type: integer `123456789`, expected a string at line 1 column 40";
        let cleaned = without_values(m);
        assert!(!cleaned.contains("123456789"), "{cleaned}");
        assert!(
            cleaned.contains("password: invalid type, expected a string at line 1"),
            "{cleaned}"
        );
        let m = "token: invalid value: string \"s3cret\", expected something else";
        assert_eq!(without_values(m), "token: invalid value, expected something else");
        let m = "missing field `channel` at line 1 column 2";
        assert_eq!(without_values(m), m);
    }

    /// The value itself may say ", expected": what was expected is the last one.
    #[test]
    fn a_value_that_says_expected_is_left_out_whole() {
        let m = "expires_in: invalid type: string \"s3cret, expected s3cret\", expected u64 at line 1 column 39";
        assert_eq!(
            without_values(m),
            "expires_in: invalid type, expected u64 at line 1 column 39"
        );
    }
}
