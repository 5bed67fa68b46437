//! The gateway's HTTP API: channel intake (app key), the agent API (agent
//! token), admin endpoints, and operations. Failures are RFC 9457
//! `application/problem+json` with a stable `type` per failure.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::connector::ActionError;
use crate::{CustomerHandoff, Gateway, IntakeError, agent_token_digest};

type Shared = Arc<Gateway>;

pub const APP_KEY_HEADER: &str = "x-deskbridge-app-key";

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
        .allow_headers([header::CONTENT_TYPE, HeaderName::from_static(APP_KEY_HEADER)])
        .max_age(std::time::Duration::from_secs(600))
}

pub(crate) fn router(gateway: Shared) -> Router {
    // The channel routes carry their own 405 answer inside the CORS layer,
    // so a browser's preflight meets CORS before any method check.
    let channel = Router::new()
        .route("/v1/sessions", post(open_session))
        .route("/v1/sessions/{id}/authenticate", post(authenticate_session))
        .route("/v1/sessions/{id}/events", get(session_events))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(channel_cors(&gateway));
    Router::new()
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation))
        .route("/v1/conversations/{id}/actions/{action}", post(run_action))
        .route("/v1/connections", get(list_connections))
        .route("/v1/connections/{name}/probe", post(probe_connection))
        .route("/v1/audit", get(list_audit))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(method_not_allowed)
        .merge(channel)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(gateway)
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

/// An RFC 9457 problem. `detail` never carries a token or secret.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    extra: Option<Value>,
}

impl Problem {
    fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            extra: None,
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway could not complete the request",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:deskbridge:problem:{}", self.slug),
            "title": self.slug.replace('_', " "),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<crate::GatewayError> for Problem {
    fn from(e: crate::GatewayError) -> Self {
        Self::internal(e)
    }
}

impl From<IntakeError> for Problem {
    fn from(e: IntakeError) -> Self {
        use crate::identity::IdentityError as I;
        let (status, slug) = match &e {
            IntakeError::UnknownConnection(_) => (StatusCode::NOT_FOUND, "unknown_connection"),
            IntakeError::NotOpaque(_) => (StatusCode::UNPROCESSABLE_ENTITY, "identifier_not_opaque"),
            IntakeError::IdentityMismatch => (StatusCode::UNAUTHORIZED, "identity_mismatch"),
            IntakeError::Identity(I::Expired) => (StatusCode::UNAUTHORIZED, "customer_token_expired"),
            IntakeError::Identity(I::Invalid(_)) => (StatusCode::UNAUTHORIZED, "invalid_customer_token"),
            IntakeError::Identity(I::KeysUnavailable(_)) => (StatusCode::BAD_GATEWAY, "identity_provider_unavailable"),
            IntakeError::MissingToken | IntakeError::MissingCustomerId => (StatusCode::BAD_REQUEST, "invalid_request"),
            IntakeError::UnknownSession => (StatusCode::NOT_FOUND, "unknown_session"),
            IntakeError::Internal(inner) => return Self::internal(inner),
        };
        Self::new(status, slug, e.to_string())
    }
}

/// A JSON body, with a rejection turned into a problem.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            )),
            Err(e) => Err(Problem::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthHandoff {
    token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenSession {
    channel: String,
    connection: String,
    customer_id: Option<String>,
    auth: Option<AuthHandoff>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authenticate {
    customer_id: Option<String>,
    auth: Option<AuthHandoff>,
}

fn handoff(customer_id: Option<String>, auth: Option<AuthHandoff>) -> CustomerHandoff {
    let auth = auth.unwrap_or(AuthHandoff {
        token: None,
        expires_in: None,
    });
    CustomerHandoff {
        customer_id: customer_id.filter(|s| !s.is_empty()),
        token: auth.token.filter(|t| !t.is_empty()).map(SecretString::from),
        expires_in: auth.expires_in,
    }
}

/// Checks the channel's app key (constant time) and, for browsers, its origin.
fn authorize_channel(gateway: &Gateway, channel: &str, headers: &HeaderMap) -> Result<(), Problem> {
    let forbidden = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_app_key",
            "a valid app key for this channel is required",
        )
    };
    let (config, key) = gateway.channels.get(channel).ok_or_else(forbidden)?;
    let presented = headers.get(APP_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !bool::from(presented.ct_eq(key.expose_secret().as_bytes())) {
        return Err(forbidden());
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !config.allowed_origins.iter().any(|o| o == origin)
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not use the channel",
        ));
    }
    Ok(())
}

async fn open_session(
    State(g): State<Shared>,
    headers: HeaderMap,
    Body(body): Body<OpenSession>,
) -> Result<Response, Problem> {
    authorize_channel(&g, &body.channel, &headers)?;
    let (session_id, conversation_id, authenticated) = g
        .open_session(&body.channel, &body.connection, handoff(body.customer_id, body.auth))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"session_id": session_id, "conversation_id": conversation_id, "authenticated": authenticated})),
    )
        .into_response())
}

async fn authenticate_session(
    State(g): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Authenticate>,
) -> Result<Json<Value>, Problem> {
    let (_, channel, _, _) = g.store.session(&id).await?.ok_or(IntakeError::UnknownSession)?;
    authorize_channel(&g, &channel, &headers)?;
    let conversation_id = g
        .authenticate_session(&id, handoff(body.customer_id, body.auth))
        .await?;
    Ok(Json(
        json!({"session_id": id, "conversation_id": conversation_id, "authenticated": true}),
    ))
}

/// Server-Sent Events for one session. The session id (256 random bits) is
/// the capability: browsers' EventSource cannot send headers.
async fn session_events(
    State(g): State<Shared>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let (conversation, _, _, _) = g.store.session(&id).await?.ok_or(IntakeError::UnknownSession)?;
    let initial = if g.auth_state(&conversation).await? == "expired" {
        Some(crate::Event {
            kind: "authentication_required",
            conversation_id: conversation.clone(),
            session_id: None,
        })
    } else {
        None
    };
    let mut current = conversation;
    let session = id.clone();
    let live = BroadcastStream::new(g.events.subscribe()).filter_map(move |event| {
        let event = event.ok()?;
        // Authenticating may move this session into the customer's conversation.
        if event.kind == "authenticated" && event.session_id.as_deref() == Some(session.as_str()) {
            current = event.conversation_id.clone();
        }
        (event.conversation_id == current).then_some(event)
    });
    let stream = tokio_stream::iter(initial).chain(live).map(|event| {
        Ok(SseEvent::default()
            .event(event.kind)
            .data(serde_json::to_string(&event).unwrap_or_default()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The calling agent: (name, role).
async fn agent(g: &Gateway, headers: &HeaderMap) -> Result<(String, String), Problem> {
    let unauthorized = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an agent token is required: Authorization: Bearer <token>",
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    g.store
        .agent_by_digest(&agent_token_digest(token.trim()))
        .await?
        .ok_or_else(unauthorized)
}

async fn admin(g: &Gateway, headers: &HeaderMap) -> Result<String, Problem> {
    let (name, role) = agent(g, headers).await?;
    if role != "admin" {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs the admin role",
        ));
    }
    Ok(name)
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_conversations(
    State(g): State<Shared>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Result<Json<Value>, Problem> {
    agent(&g, &headers).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let before = match page.cursor {
        Some(c) => {
            let (at, id) = c
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, "invalid_request", "the cursor is not valid"))?;
            Some((at, id))
        }
        None => None,
    };
    let rows = g.store.conversations(limit, before).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| format!("{}:{}", r.last_activity_at, r.id)))
        .flatten();
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let auth_state = g.auth_state(&row.id).await?;
        let mut item = serde_json::to_value(&row).map_err(Problem::internal)?;
        item["auth_state"] = json!(auth_state);
        items.push(item);
    }
    Ok(Json(json!({"conversations": items, "next_cursor": next})))
}

async fn get_conversation(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    agent(&g, &headers).await?;
    let (summary, sessions, events) = g
        .store
        .conversation(&id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "not_found", "no such conversation"))?;
    let auth_state = g.auth_state(&id).await?;
    let mut body = serde_json::to_value(&summary).map_err(Problem::internal)?;
    body["auth_state"] = json!(auth_state);
    body["sessions"] = serde_json::to_value(&sessions).map_err(Problem::internal)?;
    body["events"] = serde_json::to_value(&events).map_err(Problem::internal)?;
    Ok(Json(body))
}

fn action_problem(e: &ActionError) -> Problem {
    let (status, slug) = match e {
        ActionError::UnknownAction(_) => (StatusCode::NOT_FOUND, "unknown_action"),
        ActionError::CustomerAuthRequired => (StatusCode::CONFLICT, "customer_auth_required"),
        ActionError::Backend { .. } | ActionError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "backend_error"),
        ActionError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "backend_timeout"),
        ActionError::TokenEndpoint(crate::system_token::TokenError::Refused { .. }) => {
            (StatusCode::BAD_GATEWAY, "token_endpoint_error")
        }
        ActionError::TokenEndpoint(_) => (StatusCode::SERVICE_UNAVAILABLE, "token_endpoint_error"),
        ActionError::CircuitOpen => (StatusCode::SERVICE_UNAVAILABLE, "circuit_open"),
    };
    let mut problem = Problem::new(status, slug, e.to_string());
    if let ActionError::Backend { status, detail } = e {
        problem.extra = Some(json!({"backend_status": status, "backend_error": detail}));
    }
    problem
}

async fn run_action(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let (agent_name, _) = agent(&g, &headers).await?;
    let (summary, _, _) = g
        .store
        .conversation(&id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "not_found", "no such conversation"))?;
    let result = g
        .run_action(&agent_name, &id, &summary.connection, &action)
        .await
        .map_err(|e| action_problem(&e))?;
    Ok(Json(json!({
        "data": result.data,
        "meta": {"status": result.status, "latency_ms": result.latency_ms, "cached": false},
    })))
}

async fn list_connections(State(g): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, Problem> {
    admin(&g, &headers).await?;
    let mut list: Vec<Value> = g
        .connections
        .values()
        .map(|c| {
            let cfg = &c.config;
            json!({
                "name": cfg.name,
                "base_url": cfg.base_url,
                "timeout_ms": cfg.timeout_ms,
                "system_auth": match &cfg.system_auth {
                    crate::config::SystemAuthConfig::Oauth2ClientCredentials { token_url, client_id, .. } =>
                        json!({"kind": "oauth2_client_credentials", "token_url": token_url, "client_id": client_id}),
                    crate::config::SystemAuthConfig::StaticBearer { .. } => json!({"kind": "static_bearer"}),
                    crate::config::SystemAuthConfig::None => json!({"kind": "none"}),
                },
                "api_key_header": cfg.api_key.as_ref().map(|k| k.header.clone()),
                "customer_auth": {"in": format!("{:?}", cfg.customer_auth.placement).to_lowercase(), "name": cfg.customer_auth.name},
                "actions": cfg.actions.iter().map(|a| json!({"name": a.name, "method": a.method, "path": a.path})).collect::<Vec<_>>(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({"connections": list})))
}

async fn probe_connection(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    admin(&g, &headers).await?;
    let connection = g
        .connections
        .get(&name)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "unknown_connection", "no such connection"))?;
    let steps = connection.probe().await;
    let ok = steps.iter().all(|s| s["ok"] == json!(true));
    Ok(Json(json!({"connection": name, "ok": ok, "steps": steps})))
}

#[derive(Deserialize)]
struct AuditQuery {
    agent: Option<String>,
    conversation: Option<String>,
    limit: Option<i64>,
}

async fn list_audit(
    State(g): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, Problem> {
    admin(&g, &headers).await?;
    let records = g
        .store
        .audit(
            q.agent.as_deref(),
            q.conversation.as_deref(),
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await?;
    Ok(Json(json!({"records": records})))
}

async fn ready(State(g): State<Shared>) -> Response {
    if g.store.ping().await {
        Json(json!({"status": "ready"})).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the store is not reachable",
        )
        .into_response()
    }
}

async fn metrics(State(g): State<Shared>) -> Response {
    let mut response = g.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
