//! What channels call with their app key: sessions, their customer's
//! login, and their event streams.

use super::*;

/// What the channel knows of the customer's login at the company.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthHandoff {
    /// The customer's token from the company (e.g. its JWT).
    token: Option<String>,
    /// Seconds the token stays valid, for an opaque token.
    expires_in: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenSession {
    /// The channel, whose app key is in `x-deskbridge-app-key`.
    channel: String,
    /// The company connection the conversation is about.
    connection: String,
    /// The customer's identifier, for an opaque connection.
    customer_id: Option<String>,
    auth: Option<AuthHandoff>,
    /// The desk's own id for this chat or ticket: agents and desks find
    /// the conversation by it (`GET /v1/conversations?external_ref=`).
    /// 1-128 letters, digits and `-_.:/#@+=`; refused with
    /// `external_ref_taken` when it names another conversation already.
    #[schema(example = "zd-48213")]
    external_ref: Option<String>,
}

/// The desk's id for the session's chat or ticket.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BindExternalRef {
    /// 1-128 letters, digits and `-_.:/#@+=`.
    #[schema(example = "zd-48213")]
    pub(super) external_ref: String,
}

/// A conversation and the ref that now names it.
#[derive(Serialize, ToSchema)]
pub(super) struct ExternalRefBound {
    pub(super) conversation_id: String,
    pub(super) external_ref: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Authenticate {
    /// The customer's identifier, for an opaque connection.
    customer_id: Option<String>,
    auth: Option<AuthHandoff>,
}

/// A session and the conversation it belongs to.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionOpened {
    session_id: String,
    conversation_id: String,
    /// Whether the customer's identity is established.
    authenticated: bool,
}

pub(super) fn handoff(customer_id: Option<String>, auth: Option<AuthHandoff>) -> CustomerHandoff {
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
pub(super) fn authorize_channel(gateway: &Gateway, channel: &str, headers: &HeaderMap) -> Result<(), Problem> {
    let config = channel_with_key(gateway, channel, headers)?;
    if !origin_allowed(config, headers) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            ProblemType::OriginNotAllowed,
            "this origin may not use the channel",
        ));
    }
    Ok(())
}

/// The channel, if the request carries its app key (compared in constant time).
fn channel_with_key<'g>(
    gateway: &'g Gateway,
    channel: &str,
    headers: &HeaderMap,
) -> Result<&'g crate::config::ChannelConfig, Problem> {
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
    Ok(config)
}

/// Whether every `Origin` of the request is on the channel's list. One that
/// is not text is allowed by no list: neither may slip past as if there
/// were no Origin at all.
fn origin_allowed(config: &crate::config::ChannelConfig, headers: &HeaderMap) -> bool {
    headers.get_all(header::ORIGIN).iter().all(|origin| {
        origin
            .to_str()
            .is_ok_and(|origin| config.allowed_origins.iter().any(|o| o == origin))
    })
}

/// Whether the calling page's origin may use a channel.
#[derive(Serialize, ToSchema)]
pub(super) struct OriginCheck {
    channel: String,
    /// The request's `Origin`, exactly as the gateway compares it; null without one.
    origin: Option<String>,
    /// Whether the channel's `allowed_origins` has it (true without an `Origin`: not a browser).
    allowed: bool,
}

/// Tells a web page whether its origin may use a channel. Any origin may
/// call it (CORS open), so a page the channel refuses can read why its
/// other calls fail: the browser hides their answers from it. It says yes
/// or no for the caller's own origin only, never which origins are listed.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/origin",
    tag = "channel",
    params(("channel", description = "The channel's name")),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "Whether the request's `Origin` may use the channel", body = OriginCheck),
        (status = 400, description = "`invalid_request`: a path segment that is not UTF-8 text", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`invalid_app_key`: no such channel, or not its app key", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn check_origin(
    State(g): State<Shared>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Result<Json<OriginCheck>, Problem> {
    let config = channel_with_key(&g, &channel, &headers)?;
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(not text)").to_string());
    Ok(Json(OriginCheck {
        allowed: origin_allowed(config, &headers),
        channel,
        origin,
    }))
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
        (status = 400, description = "`invalid_request`: a malformed body, or a missing token or customer id; `invalid_customer_token`: a token that cannot travel where the connection sends it; `invalid_external_ref`", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`invalid_app_key`, `identity_mismatch`, `invalid_customer_token` or `customer_token_expired`", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`origin_not_allowed`: the browser's origin may not use this channel", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_connection`", body = ProblemBody, content_type = PROBLEM),
        (status = 409, description = "`external_ref_taken`: the external_ref names another conversation of this connection", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 422, description = "`identifier_not_opaque`", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: too many sessions opened from this address on this channel (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`identity_provider_unavailable`: the company's keys could not be fetched", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn open_session(
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
        .open_session(
            &body.channel,
            &body.connection,
            handoff(body.customer_id, body.auth),
            body.external_ref.as_deref(),
        )
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
pub(super) async fn authenticate_session(
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

/// Names the session's conversation with the desk's own id for its chat or
/// ticket, when the channel learns it after the session opened.
///
/// A channel never moves a ref that names another conversation (an agent can).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/external-refs",
    tag = "channel",
    params(("id", description = "The session id")),
    request_body = BindExternalRef,
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The ref names the session's conversation", body = ExternalRefBound),
        (status = 400, description = "`invalid_request`: a malformed body; `invalid_external_ref`", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`invalid_app_key`", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`origin_not_allowed`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_session`", body = ProblemBody, content_type = PROBLEM),
        (status = 409, description = "`external_ref_taken`: the ref names another conversation of this connection", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the session's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 503, description = "`store_unavailable`", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn bind_session_ref(
    State(g): State<Shared>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<ExternalRefBound>, Problem> {
    // As for authenticating: the session, its channel's key, then the body.
    let (_, channel) = session_within_rate(&g, &id).await?;
    authorize_channel(&g, &channel, request.headers())?;
    let Body(body) = <Body<BindExternalRef> as axum::extract::FromRequest<Shared>>::from_request(request, &g).await?;
    let conversation_id = g.bind_session_ref(&id, &body.external_ref).await?;
    Ok(Json(ExternalRefBound {
        conversation_id,
        external_ref: body.external_ref,
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
pub(super) async fn session_events(
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
pub(super) async fn session_within_rate(g: &Gateway, id: &str) -> Result<(String, String), Problem> {
    if !crate::vault::is_random_id(id, "ses_") {
        return Err(IntakeError::UnknownSession.into());
    }
    let (conversation, channel, _, _) = g.store.session(id).await?.ok_or(IntakeError::UnknownSession)?;
    g.admit_session(id)
        .map_err(|wait| Problem::rate_limited(wait, "too many requests for this session"))?;
    Ok((conversation, channel))
}

/// A place for one more event stream of `holder`, or a 429 that says which limit is reached.
pub(super) fn open_stream(g: &Gateway, holder: &StreamHolder) -> Result<crate::limits::StreamSlot, Problem> {
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

/// Runs an action for the customer of an authenticated session, on their
/// own conversation only, if the action's `callers` include `customer`.
/// The answer is masked for the `customer` audience.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/actions/{action}",
    tag = "channel",
    params(
        ("id", description = "The session id"),
        ("action", description = "The action's name in the connection's config"),
        ("Idempotency-Key" = Option<String>, Header, description = "Required for a write: one per intended change"),
    ),
    request_body(content = Option<RunAction>, description = "The input, for an action that takes one"),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The company's answer, masked for the customer", body = ActionOutcome),
        (status = 400, description = "`invalid_request` or `idempotency_key_required`", body = ProblemBody, content_type = PROBLEM),
        (status = 401, description = "`invalid_app_key`: not the app key of the session's channel; `customer_auth_required`: the session is not authenticated, or its login expired", body = ProblemBody, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: customers may not run this action; `origin_not_allowed`", body = ProblemBody, content_type = PROBLEM),
        (status = 404, description = "`unknown_session` or `unknown_action`", body = ProblemBody, content_type = PROBLEM),
        (status = 409, description = "`idempotency_key_reused` or `idempotency_key_in_flight`", body = ProblemBody, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = ProblemBody, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ProblemBody, content_type = PROBLEM),
        (status = 422, description = "`invalid_action_input`: `errors` has one `{field, reason}` per field that is wrong", body = ProblemBody, content_type = PROBLEM),
        (status = 429, description = "`rate_limited`: over the session's request rate (`Retry-After`)", body = ProblemBody, content_type = PROBLEM),
        (status = 500, description = "`internal`", body = ProblemBody, content_type = PROBLEM),
        (status = 502, description = "`backend_error` or `backend_unreachable`", body = ProblemBody, content_type = PROBLEM),
        (status = 503, description = "`circuit_open`, `token_endpoint_error` or `store_unavailable`", body = ProblemBody, content_type = PROBLEM),
        (status = 504, description = "`backend_timeout`", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn run_customer_action(
    State(g): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Json<ActionOutcome>, Problem> {
    if !crate::vault::is_random_id(&id, "ses_") {
        return Err(IntakeError::UnknownSession.into());
    }
    let (conversation, channel, _, customer) = g.store.session(&id).await?.ok_or(IntakeError::UnknownSession)?;
    authorize_channel(&g, &channel, request.headers())?;
    g.admit_session(&id)
        .map_err(|wait| Problem::rate_limited(wait, "too many requests for this session"))?;
    let auth_required = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            ProblemType::CustomerAuthRequired,
            "the customer must sign in: this session is not authenticated, or its login expired",
        )
    };
    if customer.is_none() {
        return Err(auth_required());
    }
    let trace = request.extensions().get().copied().unwrap_or_default();
    let ask = action_ask(request).await?;
    let runner = crate::Runner::customer(id);
    match g.run_action(&runner, &conversation, &action, &ask, trace).await {
        Ok(answer) => Ok(Json(answer.into())),
        // For the customer, a login to renew is theirs to do: 401, as for
        // any credential of theirs.
        Err(ActionError::CustomerAuthRequired) => Err(auth_required()),
        Err(e) => Err(action_problem(&e)),
    }
}
