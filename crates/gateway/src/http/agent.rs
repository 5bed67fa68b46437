//! What agents (and admins) call with their token or console sign-in:
//! conversations, actions, connections, the audit log, their event stream.

use super::*;

/// How often an agent's event stream checks that its credential still holds.
pub(super) const EVENT_STREAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

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
pub(super) async fn agent_events(
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

/// Who a credential is.
#[derive(Serialize, ToSchema)]
pub(super) struct Me {
    name: String,
    /// `agent`, `supervisor`, `admin`, `bot`, or another role of `[agents]`.
    role: String,
}

/// The calling agent: what an embedded card, or a desk holding an agent
/// token, shows and decides by (the console reads `/console/api/me`).
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "agent",
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The agent", body = Me),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn me(State(g): State<Shared>, headers: HeaderMap) -> Result<Json<Me>, Problem> {
    let (name, role) = agent(&g, &headers).await?;
    Ok(Json(Me { name, role }))
}

/// The calling agent: (name, role), within its rate limit.
pub(super) async fn agent(g: &Gateway, headers: &HeaderMap) -> Result<(String, String), Problem> {
    let (name, role) = authenticate_agent(g, headers).await?;
    g.admit_agent(&name)
        .map_err(|wait| Problem::rate_limited(wait, "too many requests from this agent"))?;
    Ok((name, role))
}

/// The calling agent: (name, role).
pub(super) async fn authenticate_agent(g: &Gateway, headers: &HeaderMap) -> Result<(String, String), Problem> {
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
        let token = token.trim();
        if let Some(idp) = g.agent_idp.as_ref().filter(|idp| idp.takes_api_tokens())
            && !token.starts_with("dbg_")
        {
            return idp_agent(idp, token).await;
        }
        return match g.agent(token).await? {
            AgentToken::Valid(name, role) => Ok((name, role)),
            AgentToken::Expired => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                ProblemType::AgentTokenExpired,
                "this agent token has expired; an administrator issues a new one (deskbridge agent token rotate)",
            )),
            AgentToken::Unknown => Err(unauthorized()),
        };
    }
    let session = crate::console::session_cookie(headers).ok_or_else(unauthorized)?;
    g.console_agent(session).await?.ok_or_else(unauthorized)
}

/// The agent an identity provider's access token names, with its role.
async fn idp_agent(idp: &crate::oidc::AgentIdp, token: &str) -> Result<(String, String), Problem> {
    use crate::oidc::AgentIdpError;
    match idp.api_agent(token).await {
        Ok(agent) => Ok((agent.name, agent.role)),
        Err(e) => Err(match e {
            // (Sign-in failures do not happen on the API; they are refusals all the same.)
            AgentIdpError::Invalid(_) | AgentIdpError::SignIn(_) | AgentIdpError::Refused(_) => {
                Problem::new(StatusCode::UNAUTHORIZED, ProblemType::Unauthorized, e.to_string())
            }
            AgentIdpError::Expired => {
                Problem::new(StatusCode::UNAUTHORIZED, ProblemType::AgentTokenExpired, e.to_string())
            }
            AgentIdpError::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemType::IdentityProviderUnavailable,
                e.to_string(),
            ),
            AgentIdpError::NoRole(_) => Problem::new(StatusCode::FORBIDDEN, ProblemType::Forbidden, e.to_string()),
        }),
    }
}

pub(super) async fn admin(g: &Gateway, headers: &HeaderMap) -> Result<String, Problem> {
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
pub(super) struct Page {
    /// At most this many (1 to 200, default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only the conversations this desk ref (a chat or ticket id) names:
    /// at most one per connection, and no paging.
    external_ref: Option<String>,
    /// With `external_ref`: only on this connection.
    connection: Option<String>,
}

/// A conversation with the state of its customer's token.
#[derive(Serialize, ToSchema)]
pub(super) struct ConversationItem {
    #[serde(flatten)]
    summary: ConversationSummary,
    /// `none`, `valid` or `expired`.
    #[schema(value_type = String, example = "valid")]
    auth_state: &'static str,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ConversationList {
    conversations: Vec<ConversationItem>,
    /// The cursor of the next page; null on the last.
    next_cursor: Option<String>,
}

/// A conversation with its sessions and events.
#[derive(Serialize, ToSchema)]
pub(super) struct ConversationDetail {
    #[serde(flatten)]
    summary: ConversationSummary,
    /// `none`, `valid` or `expired`.
    #[schema(value_type = String, example = "valid")]
    auth_state: &'static str,
    sessions: Vec<SessionRow>,
    events: Vec<EventRow>,
    /// The desk refs (chat or ticket ids) that name it, oldest first.
    external_refs: Vec<ExternalRefRow>,
}

/// Conversations, most recently active first; or the ones a desk ref names.
#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "agent",
    params(Page),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "A page of conversations; with `external_ref`, the conversations it names (none: an empty list)", body = ConversationList),
        (status = 400, description = "`invalid_request`: the cursor is not valid, or `connection` without `external_ref`; `invalid_external_ref`", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn list_conversations(
    State(g): State<Shared>,
    headers: HeaderMap,
    Params(page): Params<Page>,
) -> Result<Json<ConversationList>, Problem> {
    agent(&g, &headers).await?;
    if let Some(external_ref) = &page.external_ref {
        if let Some(problem) = crate::conversations::external_ref_problem(external_ref) {
            return Err(IntakeError::InvalidExternalRef(problem).into());
        }
        let rows = g
            .store
            .conversations_by_ref(external_ref, page.connection.as_deref())
            .await?;
        return Ok(Json(listed(&g, rows, None)));
    }
    if page.connection.is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemType::InvalidRequest,
            "connection filters a lookup by external_ref: send both",
        ));
    }
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
    Ok(Json(listed(&g, rows, next)))
}

fn listed(
    g: &Gateway,
    rows: Vec<(ConversationSummary, Option<crate::store::TokenStatus>)>,
    next_cursor: Option<String>,
) -> ConversationList {
    let now = g.now();
    let conversations = rows
        .into_iter()
        .map(|(summary, token)| ConversationItem {
            summary,
            auth_state: crate::auth_state_of(token, now),
        })
        .collect();
    ConversationList {
        conversations,
        next_cursor,
    }
}

/// Names a conversation with a desk ref (the desk's chat or ticket id),
/// so the desk finds it by the id it holds. A ref that named another
/// conversation of the connection moves here: the agent's word wins over
/// a channel's.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/external-refs",
    tag = "agent",
    params(("id", description = "The conversation id")),
    request_body = BindExternalRef,
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The ref names the conversation", body = ExternalRefBound),
        (status = 400, description = "`invalid_request`: a malformed body; `invalid_external_ref`", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`csrf_token_invalid`: signed in with the console cookie, without its `x-csrf-token`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`not_found`: no such conversation", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 503, description = "`store_unavailable`", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn bind_conversation_ref(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<BindExternalRef>,
) -> Result<Json<ExternalRefBound>, Problem> {
    let (name, _) = agent(&g, &headers).await?;
    g.bind_agent_ref(&name, &id, &body.external_ref).await?;
    Ok(Json(ExternalRefBound {
        conversation_id: id,
        external_ref: body.external_ref,
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
pub(super) async fn get_conversation(
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
    let external_refs = g.store.external_refs(&id).await?;
    Ok(Json(ConversationDetail {
        summary,
        auth_state,
        sessions,
        events,
        external_refs,
    }))
}

/// What an action returned.
#[derive(Serialize, ToSchema)]
pub(super) struct ActionOutcome {
    /// The company's answer as it came, or the fields the action maps out
    /// of it; masked for the caller's audience.
    #[schema(value_type = Value)]
    data: Box<serde_json::value::RawValue>,
    meta: ActionMeta,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ActionMeta {
    /// The status the company's API answered.
    status: u16,
    latency_ms: u64,
    /// The answer was reused from a run less than the action's
    /// `cache_ttl_secs` ago (same conversation, customer token and input).
    cached: bool,
    /// A write's first outcome, given again for a repeated `Idempotency-Key`;
    /// the company was not called again.
    replayed: bool,
    /// Each value masked for the caller: `{pointer, mask}` (`last4`, `hide`).
    #[schema(value_type = Vec<Object>)]
    masked: Vec<company::action::Masked>,
}

impl From<crate::ActionAnswer> for ActionOutcome {
    fn from(answer: crate::ActionAnswer) -> Self {
        let r = answer.result;
        Self {
            data: r.data,
            meta: ActionMeta {
                status: r.status,
                latency_ms: r.latency_ms,
                cached: r.cached,
                replayed: answer.replayed,
                masked: answer.masked,
            },
        }
    }
}

/// The body of a run: the action's input (none for an action without one;
/// an empty body is the same as `{}`).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RunAction {
    /// The action's input fields: `GET /v1/connections/{name}/actions`
    /// gives each action's schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: serde_json::Map<String, Value>,
}

/// The input and idempotency key of a run, from its request.
pub(super) async fn action_ask(request: axum::extract::Request) -> Result<crate::ActionAsk, Problem> {
    let (parts, body) = request.into_parts();
    let idempotency_key = match parts.headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
            Some(
                key.ok_or_else(|| action_problem(&ActionError::IdempotencyKeyRequired))?
                    .to_string(),
            )
        }
    };
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        if serving::is_body_timeout(&e) {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                ProblemType::RequestTimeout,
                "the body did not arrive in time",
            )
        } else {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemType::PayloadTooLarge,
                "the body is too large",
            )
        }
    })?;
    let body: RunAction = if bytes.is_empty() {
        RunAction::default()
    } else {
        let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        let Body(body) = <Body<RunAction> as axum::extract::FromRequest<()>>::from_request(request, &()).await?;
        body
    };
    Ok(crate::ActionAsk {
        input: body.input,
        idempotency_key,
    })
}

/// Runs an action of the conversation's connection.
///
/// Calls the company's API with the conversation's customer token and the
/// input given; audited (field names and a keyed digest of the values,
/// never the values). A write needs an `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/actions/{action}",
    tag = "agent",
    params(
        ("id", description = "The conversation id"),
        ("action", description = "The action's name in the connection's config"),
        ("Idempotency-Key" = Option<String>, Header, description = "Required for a write: 1-255 visible ASCII characters, one per intended change (the console makes one per confirmed click). The same key and input within 24 h gives the first outcome again without calling the company."),
    ),
    request_body(content = Option<RunAction>, description = "The input, for an action that takes one"),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The company's answer, masked for the caller", body = ActionOutcome),
        (status = 400, description = "`invalid_request`: a malformed body or path segment; `idempotency_key_required`: a write without a valid `Idempotency-Key`", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: the caller's role (or, for a bot, its kind) may not run this action; `csrf_token_invalid`: signed in with the console cookie, without its `x-csrf-token`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`not_found` (no such conversation) or `unknown_action`", body = ProblemBody, content_type = PROBLEM),
        (status = 409, description = "`customer_auth_required`: the customer must authenticate again; `idempotency_key_reused`: the key was used with another input; `idempotency_key_in_flight`: the first request with the key still runs", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 422, description = "`invalid_action_input`: `errors` has one `{field, reason}` per field that is wrong; the company was not called", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`backend_error` (with `backend_status` and `backend_error`), `api_key_rejected` when the company refused the connection's API key, or `token_endpoint_error` when the token endpoint refused", body = ProblemBody, content_type = PROBLEM),
        (status = 503, description = "`token_endpoint_error` (unreachable), `circuit_open`, or `store_unavailable` (the store did not answer within `[store] timeout_ms`)", body = ProblemBody, content_type = PROBLEM),
        (status = 504, description = "`backend_timeout`", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn run_action(
    State(g): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    // The whole request, not `HeaderMap`: that extractor copies the headers.
    request: axum::extract::Request,
) -> Result<Json<ActionOutcome>, Problem> {
    // The agent's rate is checked by `run_action`, which counts a refusal into the audit.
    let (agent_name, role) = authenticate_agent(&g, request.headers()).await?;
    // Set by the serve loop; a test router without it starts a trace.
    let trace = request.extensions().get().copied().unwrap_or_default();
    let ask = action_ask(request).await?;
    let runner = crate::Runner::agent(agent_name, role);
    let answer = g
        .run_action(&runner, &id, &action, &ask, trace)
        .await
        .map_err(|e| action_problem(&e))?;
    Ok(Json(answer.into()))
}

/// A masked value to see unmasked.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevealRequest {
    /// The value's JSON Pointer in the answer, as `meta.masked` gave it.
    pointer: String,
    /// Why it is needed: kept in the audit log (1-500 characters).
    reason: String,
    /// The input the answer was run with.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: serde_json::Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Revealed {
    pointer: String,
    /// The value as the company gave it.
    #[schema(value_type = Value)]
    value: Value,
}

/// Reveals one masked value of a read action's answer, for a role the
/// action's `reveal_roles` allows. Runs the action again; audited with the
/// pointer and the reason.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/actions/{action}/reveal",
    tag = "agent",
    params(
        ("id", description = "The conversation id"),
        ("action", description = "The action's name in the connection's config"),
    ),
    request_body = RevealRequest,
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The unmasked value", body = Revealed),
        (status = 400, description = "`invalid_request`: a malformed body, or a reason that is empty or over 500 characters", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: the role may not reveal, the action is a write, or the value is not masked; `csrf_token_invalid`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`not_found` (no such conversation) or `unknown_action`", body = ProblemBody, content_type = PROBLEM),
        (status = 409, description = "`customer_auth_required`", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 422, description = "`invalid_action_input`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`backend_error`", body = ProblemBody, content_type = PROBLEM),
        (status = 503, description = "`circuit_open`, `token_endpoint_error` or `store_unavailable`", body = ProblemBody, content_type = PROBLEM),
        (status = 504, description = "`backend_timeout`", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn reveal_value(
    State(g): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    trace: Option<axum::Extension<serving::TraceId>>,
    headers: HeaderMap,
    Body(body): Body<RevealRequest>,
) -> Result<Json<Revealed>, Problem> {
    let (agent_name, role) = authenticate_agent(&g, &headers).await?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemType::InvalidRequest,
            "a reason is required: 1-500 characters on one line",
        ));
    }
    if !body.pointer.starts_with('/') || body.pointer.len() > 512 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemType::InvalidRequest,
            "pointer must be a JSON Pointer from meta.masked",
        ));
    }
    let ask = crate::ActionAsk {
        input: body.input,
        idempotency_key: None,
    };
    let reveal = crate::Reveal {
        pointer: body.pointer.clone(),
        reason: reason.to_string(),
    };
    let runner = crate::Runner::agent(agent_name, role);
    // Set by the serve loop; a test router without it starts a trace.
    let trace = trace.map(|axum::Extension(t)| t).unwrap_or_default();
    let value = g
        .reveal(&runner, &id, &action, &ask, &reveal, trace)
        .await
        .map_err(|e| action_problem(&e))?;
    Ok(Json(Revealed {
        pointer: body.pointer,
        value,
    }))
}

/// An action as a user interface needs it.
#[derive(Serialize, ToSchema)]
pub(super) struct ActionItem {
    name: String,
    /// `read` or `write`.
    #[schema(value_type = String)]
    kind: company::config::ActionKind,
    description: Option<String>,
    /// The input's JSON Schema.
    #[schema(value_type = Object)]
    input: Value,
    /// The fields the answer maps out, when the action maps any.
    output: Option<Vec<String>>,
    /// Who may run it: `agent`, `customer`, `bot`.
    #[schema(value_type = Vec<String>)]
    callers: Vec<company::config::Caller>,
    /// The roles that may run it; absent: every role.
    roles: Option<Vec<String>>,
    /// Whether the calling agent may run it.
    may_run: bool,
    /// Whether the calling agent may reveal its masked values.
    may_reveal: bool,
    /// The masks that apply to the calling agent: JSON Pointer pattern -> mask.
    #[schema(value_type = Object)]
    masks: std::collections::BTreeMap<String, company::config::Mask>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ActionList {
    connection: String,
    /// The read action whose answer heads a conversation (name, tier).
    profile_action: Option<String>,
    actions: Vec<ActionItem>,
}

/// A connection's actions, with their input schemas and what the calling
/// agent may do with each: what a console or desk needs to build forms.
#[utoipa::path(
    get,
    path = "/v1/connections/{name}/actions",
    tag = "agent",
    params(("name", description = "The connection's name")),
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The actions", body = ActionList),
        (status = 400, description = "`invalid_request`: a path segment that is not UTF-8 text", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_connection`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn list_actions(
    State(g): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ActionList>, Problem> {
    let (agent_name, role) = agent(&g, &headers).await?;
    let runner = crate::Runner::agent(agent_name, role);
    let connection = g.connections.get(&name).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            ProblemType::UnknownConnection,
            "no such connection",
        )
    })?;
    let actions = connection
        .config
        .actions
        .iter()
        .map(|a| ActionItem {
            name: a.name.clone(),
            kind: a.kind,
            description: a.description.clone(),
            input: connection.input_schema(&a.name).unwrap_or(Value::Null),
            output: a.response.as_ref().map(|r| r.keys().cloned().collect()),
            callers: a.callers.clone(),
            roles: a.roles.clone(),
            may_run: runner.may_run(a),
            may_reveal: runner.may_reveal(a),
            masks: company::action::masks_for(a, runner.caller.audience()).clone(),
        })
        .collect();
    Ok(Json(ActionList {
        connection: name,
        profile_action: connection.config.profile_action().map(|a| a.name.clone()),
        actions,
    }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct ConnectionList {
    /// By name: `{name, base_url, timeout_ms, system_auth: {kind, ...},
    /// api_key_header, customer_auth: {in, name}, actions: [{name, method, path}]}`;
    /// never a secret.
    connections: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProbeReport {
    connection: String,
    /// Whether every step succeeded.
    ok: bool,
    /// Each step: `{step, ok, ...}`.
    steps: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct AuditList {
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
pub(super) async fn list_connections(
    State(g): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<ConnectionList>, Problem> {
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
                "system_auth": match cfg.system_auth.oauth() {
                    Some(client) => json!({"kind": cfg.system_auth.kind(), "token_url": client.token_url, "issuer": client.issuer,
                               "client_id": client.client_id, "auth_method": client.auth_method.as_str()}),
                    None => json!({"kind": cfg.system_auth.kind()}),
                },
                "api_key_header": cfg.api_key.as_ref().map(|k| k.header.clone()),
                "customer_auth": {"in": format!("{:?}", cfg.customer_auth.placement).to_lowercase(), "name": cfg.customer_auth.name},
                "actions": cfg.actions.iter().map(|a| json!({"name": a.name, "kind": a.kind, "method": a.method, "path": a.path})).collect::<Vec<_>>(),
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
pub(super) async fn probe_connection(
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
pub(super) struct AuditQuery {
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
pub(super) async fn list_audit(
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

#[derive(Serialize, ToSchema)]
pub(super) struct AgentTokenList {
    tokens: Vec<AgentTokenRow>,
}

/// Every agent's tokens with their expiry: the current one (even once
/// expired, so it can be renewed) and a rotated-out one while its overlap
/// lasts. Never a token's value.
#[utoipa::path(
    get,
    path = "/v1/agent-tokens",
    tag = "admin",
    security(("agent_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Agent tokens, by agent name", body = AgentTokenList),
        (status = 401, description = "`unauthorized`: no valid agent token or console sign-in; `agent_token_expired`: the token has expired", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: this needs the admin role", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the agent's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn list_agent_tokens(
    State(g): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<AgentTokenList>, Problem> {
    admin(&g, &headers).await?;
    Ok(Json(AgentTokenList {
        tokens: g.agent_tokens().await?,
    }))
}
