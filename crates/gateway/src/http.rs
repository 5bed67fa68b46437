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

use crate::connector::ActionError;
use crate::limits::{RetryAfter, StreamHolder};
use crate::problem::ProblemType;
use crate::store::{AuditRecord, ConversationSummary, EventRow, SessionRow};
use crate::{CustomerHandoff, Gateway, IntakeError};

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
        session_events,
        agent_events,
        list_conversations,
        get_conversation,
        run_action,
        list_connections,
        probe_connection,
        list_audit,
        problem_types,
        healthz,
        ready,
        metrics,
        openapi,
        crate::console::login,
        crate::console::me,
        crate::console::logout,
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
        .route("/v1/events", get(agent_events))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation))
        .route("/v1/conversations/{id}/actions/{action}", post(run_action))
        .route("/v1/connections", get(list_connections))
        .route("/v1/connections/{name}/probe", post(probe_connection))
        .route("/v1/audit", get(list_audit))
        .route_layer(axum::middleware::from_fn(crate::console::require_csrf))
        .route("/v1/problem-types", get(problem_types))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(method_not_allowed)
        .merge(channel)
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

/// An RFC 9457 problem. `detail` never carries a token or secret.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: ProblemType,
    detail: String,
    /// The company API's status and error code, on `backend_error`.
    backend: Option<(u16, Option<String>)>,
    /// Seconds to wait, sent as `Retry-After`.
    retry_after: Option<u64>,
}

/// An RFC 9457 problem, as sent: `application/problem+json`.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemBody {
    /// `urn:deskbridge:problem:<slug>`, stable per failure.
    #[serde(rename = "type")]
    #[schema(example = "urn:deskbridge:problem:customer_auth_required")]
    kind: String,
    /// The slug in words.
    #[schema(example = "customer auth required")]
    title: String,
    /// The HTTP status.
    #[schema(example = 409)]
    status: u16,
    /// What went wrong, for people; never a token or secret.
    detail: String,
    /// On `backend_error`: the status the company's API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_status: Option<u16>,
    /// On `backend_error`: the error code the company's API gave, when it
    /// gave a well-formed one (`[A-Za-z0-9_.:-]`, at most 64 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_error: Option<String>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            backend: None,
            retry_after: None,
        }
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn rate_limited(wait: RetryAfter, detail: &str) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, ProblemType::RateLimited, detail).retry_after(wait.0)
    }

    /// The store did not answer within `[store] timeout_ms`: worth a retry.
    fn store_unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "the store is unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::StoreUnavailable,
            "the gateway's store is unavailable; retry shortly",
        )
        .retry_after(1)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::Internal,
            "the gateway could not complete the request",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (backend_status, backend_error) = self.backend.unzip();
        let backend_error = backend_error.flatten();
        let body = ProblemBody {
            kind: self.kind.urn(),
            title: self.kind.slug().replace('_', " "),
            status: self.status.as_u16(),
            detail: self.detail,
            backend_status,
            backend_error,
        };
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // A refused flood gives its connection back, rather than keep it
        // idle until the keep-alive limit.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // RFC 9110 §15.5.2: a 401 says how to authenticate; the agent API
        // takes a bearer token (RFC 6750 §3).
        if self.kind == ProblemType::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"deskbridge\""),
            );
        }
        response
    }
}

impl From<crate::GatewayError> for Problem {
    fn from(e: crate::GatewayError) -> Self {
        match e {
            crate::GatewayError::StoreUnavailable(cause) => Self::store_unavailable(cause),
            e => Self::internal(e),
        }
    }
}

impl From<IntakeError> for Problem {
    fn from(e: IntakeError) -> Self {
        use crate::identity::IdentityError as I;
        let (status, slug) = match &e {
            IntakeError::UnknownConnection(_) => (StatusCode::NOT_FOUND, ProblemType::UnknownConnection),
            IntakeError::NotOpaque(_) => (StatusCode::UNPROCESSABLE_ENTITY, ProblemType::IdentifierNotOpaque),
            IntakeError::IdentityMismatch(_) => (StatusCode::UNAUTHORIZED, ProblemType::IdentityMismatch),
            IntakeError::Identity(I::Expired) => (StatusCode::UNAUTHORIZED, ProblemType::CustomerTokenExpired),
            IntakeError::Identity(I::Invalid(_)) => (StatusCode::UNAUTHORIZED, ProblemType::InvalidCustomerToken),
            IntakeError::UnfitToken(_) => (StatusCode::BAD_REQUEST, ProblemType::InvalidCustomerToken),
            IntakeError::Identity(I::KeysUnavailable(_)) => {
                (StatusCode::BAD_GATEWAY, ProblemType::IdentityProviderUnavailable)
            }
            IntakeError::MissingToken | IntakeError::MissingCustomerId => {
                (StatusCode::BAD_REQUEST, ProblemType::InvalidRequest)
            }
            IntakeError::UnknownSession => (StatusCode::NOT_FOUND, ProblemType::UnknownSession),
            IntakeError::Internal(crate::GatewayError::StoreUnavailable(cause)) => {
                return Self::store_unavailable(cause);
            }
            IntakeError::Internal(inner) => return Self::internal(inner),
        };
        Self::new(status, slug, e.to_string())
    }
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

/// What the channel knows of the customer's login at the company.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AuthHandoff {
    /// The customer's token from the company (e.g. its JWT).
    token: Option<String>,
    /// Seconds the token stays valid, for an opaque token.
    expires_in: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OpenSession {
    /// The channel, whose app key is in `x-deskbridge-app-key`.
    channel: String,
    /// The company connection the conversation is about.
    connection: String,
    /// The customer's identifier, for an opaque connection.
    customer_id: Option<String>,
    auth: Option<AuthHandoff>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Authenticate {
    /// The customer's identifier, for an opaque connection.
    customer_id: Option<String>,
    auth: Option<AuthHandoff>,
}

/// A session and the conversation it belongs to.
#[derive(Serialize, ToSchema)]
struct SessionOpened {
    session_id: String,
    conversation_id: String,
    /// Whether the customer's identity is established.
    authenticated: bool,
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
            ProblemType::InvalidAppKey,
            "a valid app key for this channel is required",
        )
    };
    let (config, key) = gateway.channels.get(channel).ok_or_else(forbidden)?;
    let presented = headers.get(APP_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !bool::from(presented.ct_eq(key.expose_secret().as_bytes())) {
        return Err(forbidden());
    }
    // Every Origin header counts, and one that is not text is allowed by
    // no list: neither may slip past as if there were no Origin at all.
    let allowed = |origin: &HeaderValue| {
        origin
            .to_str()
            .is_ok_and(|origin| config.allowed_origins.iter().any(|o| o == origin))
    };
    if !headers.get_all(header::ORIGIN).iter().all(allowed) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            ProblemType::OriginNotAllowed,
            "this origin may not use the channel",
        ));
    }
    Ok(())
}

/// Opens a customer session for a channel.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "channel",
    request_body = OpenSession,
    security(("app_key" = [])),
    responses(
        (status = 201, description = "The session is open", body = SessionOpened),
        (status = 400, description = "`invalid_request`: a malformed body, or a missing token or customer id; `invalid_customer_token`: a token that cannot travel where the connection sends it", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`invalid_app_key`, `identity_mismatch`, `invalid_customer_token` or `customer_token_expired`", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`origin_not_allowed`: the browser's origin may not use this channel", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_connection`", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 422, description = "`identifier_not_opaque`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: too many sessions opened from this address on this channel (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`identity_provider_unavailable`: the company's keys could not be fetched", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn open_session(
    State(g): State<Shared>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Body(body): Body<OpenSession>,
) -> Result<Response, Problem> {
    authorize_channel(&g, &body.channel, &headers)?;
    if let Some(axum::Extension(ConnectInfo(peer))) = peer {
        g.admit_session(&format!("{}|{}", body.channel, peer.ip()))
            .map_err(|wait| Problem::rate_limited(wait, "too many sessions opened from this address"))?;
    }
    let (session_id, conversation_id, authenticated) = g
        .open_session(&body.channel, &body.connection, handoff(body.customer_id, body.auth))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionOpened {
            session_id,
            conversation_id,
            authenticated,
        }),
    )
        .into_response())
}

/// Authenticates the customer of an open session.
///
/// An anonymous session's history moves into the customer's conversation.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/authenticate",
    tag = "channel",
    params(("id", description = "The session id")),
    request_body = Authenticate,
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The session is authenticated", body = SessionOpened),
        (status = 400, description = "`invalid_request`: a malformed body, or a missing token or customer id; `invalid_customer_token`: a token that cannot travel where the connection sends it", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`invalid_app_key`, `identity_mismatch`, `invalid_customer_token` or `customer_token_expired`", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`origin_not_allowed`: the browser's origin may not use this channel", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_session` or `unknown_connection`", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 422, description = "`identifier_not_opaque`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the session's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`identity_provider_unavailable`: the company's keys could not be fetched", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn authenticate_session(
    State(g): State<Shared>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<SessionOpened>, Problem> {
    // The session, then its channel's app key, then the body: a caller
    // without the key learns nothing about what the body should hold.
    let (_, channel) = session_within_rate(&g, &id).await?;
    authorize_channel(&g, &channel, request.headers())?;
    let Body(body) = <Body<Authenticate> as axum::extract::FromRequest<Shared>>::from_request(request, &g).await?;
    let conversation_id = g
        .authenticate_session(&id, handoff(body.customer_id, body.auth))
        .await?;
    Ok(Json(SessionOpened {
        session_id: id,
        conversation_id,
        authenticated: true,
    }))
}

/// Server-Sent Events for one session. The session id (256 random bits) is
/// the capability: browsers' EventSource cannot send headers.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/events",
    tag = "channel",
    params(("id", description = "The session id; it is the credential")),
    responses(
        (status = 200, description = "An event stream: each event is named by its `kind` \
            (e.g. `authenticated`, `authentication_required`) and its data is \
            `{kind, conversation_id, session_id?}`", body = String, content_type = "text/event-stream"),
        (status = 400, description = "`invalid_request`: a path segment that is not UTF-8 text", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_session`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the session's request rate; or `too_many_streams`: over a `[limits]` stream limit (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn session_events(
    State(g): State<Shared>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let (conversation, channel) = session_within_rate(&g, &id).await?;
    let slot = open_stream(
        &g,
        &StreamHolder::Session {
            channel,
            session: id.clone(),
        },
    )?;
    let initial = if g.auth_state(&conversation).await? == "expired" {
        Some(crate::Event {
            kind: crate::EventKind::AuthenticationRequired,
            conversation_id: conversation.clone(),
            session_id: None,
        })
    } else {
        None
    };
    let mut current = conversation;
    let session = id.clone();
    let live = BroadcastStream::new(g.events.subscribe()).filter_map(move |event| {
        let _open = &slot;
        let event = event.ok()?;
        // Authenticating may move this session into the customer's conversation.
        if event.kind == crate::EventKind::Authenticated && event.session_id.as_deref() == Some(session.as_str()) {
            current = event.conversation_id.clone();
        }
        (event.conversation_id == current).then_some(event)
    });
    let stream = tokio_stream::iter(initial).chain(live).map(|event| {
        Ok(SseEvent::default()
            .event(event.kind.as_str())
            .data(serde_json::to_string(&event).unwrap_or_default()))
    });
    let stream = futures_util::StreamExt::take_until(stream, g.closed());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A channel session's conversation and channel, once the session's
/// request rate allows another request. Ids that could not be a session's
/// are not looked up.
async fn session_within_rate(g: &Gateway, id: &str) -> Result<(String, String), Problem> {
    if !crate::vault::is_random_id(id, "ses_") {
        return Err(IntakeError::UnknownSession.into());
    }
    let (conversation, channel, _, _) = g.store.session(id).await?.ok_or(IntakeError::UnknownSession)?;
    g.admit_session(id)
        .map_err(|wait| Problem::rate_limited(wait, "too many requests for this session"))?;
    Ok((conversation, channel))
}

/// A place for one more event stream of `holder`, or a 429 that says which limit is reached.
fn open_stream(g: &Gateway, holder: &StreamHolder) -> Result<crate::limits::StreamSlot, Problem> {
    g.streams.open(holder).map_err(|refused| {
        g.metrics.refusal("stream_limit");
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            ProblemType::TooManyStreams,
            refused.detail(),
        )
        .retry_after(5)
    })
}

/// How often an agent's event stream checks that its credential still holds.
const EVENT_STREAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Server-Sent Events for agents: every conversation's events, so a console
/// stays current without polling.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "agent",
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "An event stream: each event is named by its `kind` \
            (`session_opened`, `authenticated`, `authentication_required`) and its data is \
            `{kind, conversation_id, session_id?}`", body = String, content_type = "text/event-stream"),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate; or `too_many_streams`: over `[limits]` streams_per_agent or event_streams (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn agent_events(
    State(g): State<Shared>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let (name, _) = agent(&g, &headers).await?;
    let slot = open_stream(&g, &StreamHolder::Agent(name))?;
    let stream = BroadcastStream::new(g.events.subscribe()).filter_map(move |event| {
        // The slot is the stream's place in the count: given back when it ends.
        let _open = &slot;
        let event = event.ok()?;
        Some(Ok(SseEvent::default()
            .event(event.kind.as_str())
            .data(serde_json::to_string(&event).unwrap_or_default())))
    });
    // A stream outlives neither a sign-out nor a replaced token for long:
    // its credential is checked again every so often.
    let (gateway, credential) = (g.clone(), headers);
    let revoked = async move {
        loop {
            tokio::time::sleep(EVENT_STREAM_RECHECK).await;
            if authenticate_agent(&gateway, &credential).await.is_err() {
                break;
            }
        }
    };
    let stream = futures_util::StreamExt::take_until(stream, revoked);
    let stream = futures_util::StreamExt::take_until(stream, g.closed());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The calling agent: (name, role), within its rate limit.
async fn agent(g: &Gateway, headers: &HeaderMap) -> Result<(String, String), Problem> {
    let (name, role) = authenticate_agent(g, headers).await?;
    g.admit_agent(&name)
        .map_err(|wait| Problem::rate_limited(wait, "too many requests from this agent"))?;
    Ok((name, role))
}

/// The calling agent: (name, role).
async fn authenticate_agent(g: &Gateway, headers: &HeaderMap) -> Result<(String, String), Problem> {
    let unauthorized = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            ProblemType::Unauthorized,
            "an agent token (Authorization: Bearer <token>) or a console sign-in is required",
        )
    };
    // The header wins over the cookie; `console::require_csrf` has checked
    // the CSRF token of a state-changing request the cookie authenticates.
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        return g.agent(token.trim()).await?.ok_or_else(unauthorized);
    }
    let session = crate::console::session_cookie(headers).ok_or_else(unauthorized)?;
    g.console_agent(session).await?.ok_or_else(unauthorized)
}

async fn admin(g: &Gateway, headers: &HeaderMap) -> Result<String, Problem> {
    let (name, role) = agent(g, headers).await?;
    if role != "admin" {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            ProblemType::Forbidden,
            "this needs the admin role",
        ));
    }
    Ok(name)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// At most this many (1 to 200, default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A conversation with the state of its customer's token.
#[derive(Serialize, ToSchema)]
struct ConversationItem {
    #[serde(flatten)]
    summary: ConversationSummary,
    /// `none`, `valid` or `expired`.
    #[schema(value_type = String, example = "valid")]
    auth_state: &'static str,
}

#[derive(Serialize, ToSchema)]
struct ConversationList {
    conversations: Vec<ConversationItem>,
    /// The cursor of the next page; null on the last.
    next_cursor: Option<String>,
}

/// A conversation with its sessions and events.
#[derive(Serialize, ToSchema)]
struct ConversationDetail {
    #[serde(flatten)]
    summary: ConversationSummary,
    /// `none`, `valid` or `expired`.
    #[schema(value_type = String, example = "valid")]
    auth_state: &'static str,
    sessions: Vec<SessionRow>,
    events: Vec<EventRow>,
}

/// Conversations, most recently active first.
#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "agent",
    params(Page),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "A page of conversations", body = ConversationList),
        (status = 400, description = "`invalid_request`: the cursor is not valid", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn list_conversations(
    State(g): State<Shared>,
    headers: HeaderMap,
    Params(page): Params<Page>,
) -> Result<Json<ConversationList>, Problem> {
    agent(&g, &headers).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let before = match page.cursor {
        Some(c) => {
            let (at, id) = c
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        ProblemType::InvalidRequest,
                        "the cursor is not valid",
                    )
                })?;
            Some((at, id))
        }
        None => None,
    };
    let rows = g.store.conversations(limit, before).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(r, _)| format!("{}:{}", r.last_activity_at, r.id)))
        .flatten();
    let now = g.now();
    let conversations = rows
        .into_iter()
        .map(|(summary, token)| ConversationItem {
            summary,
            auth_state: crate::auth_state_of(token, now),
        })
        .collect();
    Ok(Json(ConversationList {
        conversations,
        next_cursor: next,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "agent",
    params(("id", description = "The conversation id")),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetail),
        (status = 400, description = "`invalid_request`: a path segment that is not UTF-8 text", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`not_found`: no such conversation", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn get_conversation(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>, Problem> {
    agent(&g, &headers).await?;
    let (summary, sessions, events) = g
        .store
        .conversation(&id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "no such conversation"))?;
    let auth_state = g.auth_state(&id).await?;
    Ok(Json(ConversationDetail {
        summary,
        auth_state,
        sessions,
        events,
    }))
}

fn action_problem(e: &ActionError) -> Problem {
    let status = match e {
        ActionError::UnknownAction | ActionError::UnknownConversation => StatusCode::NOT_FOUND,
        ActionError::CustomerAuthRequired => StatusCode::CONFLICT,
        ActionError::Backend { .. }
        | ActionError::TooLarge { .. }
        | ActionError::NotJson { .. }
        | ActionError::Unreachable(_)
        | ActionError::ApiKeyRejected { .. }
        | ActionError::TokenEndpoint(crate::system_token::TokenError::Refused { .. }) => StatusCode::BAD_GATEWAY,
        ActionError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ActionError::TokenEndpoint(_) | ActionError::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        ActionError::RateLimited(wait) => return Problem::rate_limited(*wait, &e.to_string()),
        ActionError::Internal(cause) => return Problem::internal(cause),
        ActionError::StoreUnavailable(cause) => return Problem::store_unavailable(cause),
    };
    let mut problem = Problem::new(status, ProblemType::of(e), e.to_string());
    match e {
        ActionError::Backend { status, error } | ActionError::ApiKeyRejected { status, error, .. } => {
            problem.backend = Some((*status, error.clone()))
        }
        ActionError::TooLarge { status } | ActionError::NotJson { status } => problem.backend = Some((*status, None)),
        _ => {}
    }
    problem
}

/// What an action returned.
#[derive(Serialize, ToSchema)]
struct ActionOutcome {
    /// The company's answer as it came, or the fields the action maps out of it.
    #[schema(value_type = Value)]
    data: Box<serde_json::value::RawValue>,
    meta: ActionMeta,
}

#[derive(Serialize, ToSchema)]
struct ActionMeta {
    /// The status the company's API answered.
    status: u16,
    latency_ms: u64,
    /// The answer was reused from a run less than the action's
    /// `cache_ttl_secs` ago (same conversation, same customer token).
    cached: bool,
}

/// Runs an action of the conversation's connection.
///
/// Calls the company's API with the conversation's customer token; audited.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/actions/{action}",
    tag = "agent",
    params(
        ("id", description = "The conversation id"),
        ("action", description = "The action's name in the connection's config"),
    ),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The company's answer", body = ActionOutcome),
        (status = 400, description = "`invalid_request`: a path segment that is not UTF-8 text", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`csrf_token_invalid`: signed in with the console cookie, without its `x-csrf-token`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`not_found` (no such conversation) or `unknown_action`", body = ProblemBody, content_type = PROBLEM),
        (status = 409, description = "`customer_auth_required`: the customer must authenticate again", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`backend_error` (with `backend_status` and `backend_error`), `api_key_rejected` when the company refused the connection's API key, or `token_endpoint_error` when the token endpoint refused", body = ProblemBody, content_type = PROBLEM),
        (status = 503, description = "`token_endpoint_error` (unreachable), `circuit_open`, or `store_unavailable` (the store did not answer within `[store] timeout_ms`)", body = ProblemBody, content_type = PROBLEM),
        (status = 504, description = "`backend_timeout`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn run_action(
    State(g): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    // The whole request, not `HeaderMap`: that extractor copies the headers.
    request: axum::extract::Request,
) -> Result<Json<ActionOutcome>, Problem> {
    // The agent's rate is checked by `run_action`, which counts a refusal into the audit.
    let (agent_name, _) = authenticate_agent(&g, request.headers()).await?;
    // Set by the serve loop; a test router without it starts a trace.
    let trace = request.extensions().get().copied().unwrap_or_default();
    let result = g
        .run_action(&agent_name, &id, &action, trace)
        .await
        .map_err(|e| action_problem(&e))?;
    Ok(Json(ActionOutcome {
        data: result.data,
        meta: ActionMeta {
            status: result.status,
            latency_ms: result.latency_ms,
            cached: result.cached,
        },
    }))
}

#[derive(Serialize, ToSchema)]
struct ConnectionList {
    /// By name: `{name, base_url, timeout_ms, system_auth: {kind, ...},
    /// api_key_header, customer_auth: {in, name}, actions: [{name, method, path}]}`;
    /// never a secret.
    connections: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
struct ProbeReport {
    connection: String,
    /// Whether every step succeeded.
    ok: bool,
    /// Each step: `{step, ok, ...}`.
    steps: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
struct AuditList {
    records: Vec<AuditRecord>,
}

/// The configured connections.
#[utoipa::path(
    get,
    path = "/v1/connections",
    tag = "admin",
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The connections", body = ConnectionList),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: this needs the admin role", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn list_connections(State(g): State<Shared>, headers: HeaderMap) -> Result<Json<ConnectionList>, Problem> {
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
    Ok(Json(ConnectionList { connections: list }))
}

/// Probes a connection step by step: system token, then the company's API.
#[utoipa::path(
    post,
    path = "/v1/connections/{name}/probe",
    tag = "admin",
    params(("name", description = "The connection's name")),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The probe ran; `ok` says whether it passed", body = ProbeReport),
        (status = 400, description = "`invalid_request`: a path segment that is not UTF-8 text", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: this needs the admin role; or `csrf_token_invalid`: signed in with the console cookie, without its `x-csrf-token`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_connection`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn probe_connection(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ProbeReport>, Problem> {
    admin(&g, &headers).await?;
    let connection = g.connections.get(&name).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            ProblemType::UnknownConnection,
            "no such connection",
        )
    })?;
    let steps = connection.probe().await;
    let ok = steps.iter().all(|s| s["ok"] == json!(true));
    Ok(Json(ProbeReport {
        connection: name,
        ok,
        steps,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only this agent's actions.
    agent: Option<String>,
    /// Only actions in this conversation.
    conversation: Option<String>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<i64>,
}

/// The audit log of actions, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "admin",
    params(AuditQuery),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Audit records", body = AuditList),
        (status = 400, description = "`invalid_request`: a query parameter that cannot be read", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: this needs the admin role", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn list_audit(
    State(g): State<Shared>,
    headers: HeaderMap,
    Params(q): Params<AuditQuery>,
) -> Result<Json<AuditList>, Problem> {
    admin(&g, &headers).await?;
    let records = g
        .store
        .audit(
            q.agent.as_deref(),
            q.conversation.as_deref(),
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await?;
    Ok(Json(AuditList { records }))
}

/// One kind of problem the gateway answers with.
#[derive(Serialize, ToSchema)]
struct ProblemTypeInfo {
    /// As in a problem's `type`.
    #[serde(rename = "type")]
    kind: String,
    slug: ProblemType,
    /// What it means, in a sentence an agent can act on.
    hint: &'static str,
}

#[derive(Serialize, ToSchema)]
struct ProblemTypes {
    problem_types: Vec<ProblemTypeInfo>,
}

/// Every kind of problem the gateway answers with, and what each means:
/// user interfaces read them here instead of keeping a copy.
#[utoipa::path(
    get,
    path = "/v1/problem-types",
    tag = "operations",
    responses((status = 200, description = "The problem types", body = ProblemTypes))
)]
async fn problem_types() -> Json<ProblemTypes> {
    Json(ProblemTypes {
        problem_types: ProblemType::ALL
            .iter()
            .map(|&kind| ProblemTypeInfo {
                kind: kind.urn(),
                slug: kind,
                hint: kind.hint(),
            })
            .collect(),
    })
}

#[derive(Serialize, ToSchema)]
struct Status {
    #[schema(value_type = String)]
    status: &'static str,
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Status))
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the store is reachable.
#[derive(Serialize, ToSchema)]
struct Readiness {
    #[schema(value_type = String)]
    status: &'static str,
    /// `up` or `down`: whether the Redis shared with the other instances
    /// answers; `off` without `[cluster]`. Down, the instance stays ready:
    /// it serves alone (its own system token, its own events) until Redis
    /// returns, which beats taking every instance out of the balancer.
    #[schema(value_type = String)]
    cluster: &'static str,
}

/// Readiness: the store is reachable (and whether the instances reach
/// each other, which does not decide readiness).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\", \"cluster\": \"up\" | \"down\" | \"off\"}`", body = Readiness),
        (status = 503, description = "`not_ready`: the store is not reachable", body = ProblemBody, content_type = PROBLEM),
    )
)]
async fn ready(State(g): State<Shared>) -> Response {
    if g.store.ping().await {
        let cluster = match (g.config.cluster.is_some(), g.cluster_up()) {
            (false, _) => "off",
            (true, true) => "up",
            (true, false) => "down",
        };
        Json(Readiness {
            status: "ready",
            cluster,
        })
        .into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::NotReady,
            "the store is not reachable",
        )
        .into_response()
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
async fn metrics(State(g): State<Shared>) -> Response {
    let mut response = g.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
async fn openapi() -> Response {
    // Built and encoded once: the document never changes while the process
    // runs, and building it per request let anyone spend the gateway's CPU.
    static DOCUMENT: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| serde_json::to_vec(&ApiDoc::openapi()).unwrap_or_default().into());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document.clone(),
    )
        .into_response()
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
