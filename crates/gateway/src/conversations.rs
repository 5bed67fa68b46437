//! Conversations: sessions opened by channels, their customer's login,
//! the events they raise, and the actions agents run in them.

use super::*;

/// Something that happened in a conversation, pushed to its channels (SSE)
/// and to agent consoles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// What happened: the name of the server-sent event, and `kind` in its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A channel opened a session in the conversation.
    SessionOpened,
    /// A customer token was stored for it.
    Authenticated,
    /// Its customer token expired or was refused: a fresh one is needed.
    AuthenticationRequired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionOpened => "session_opened",
            Self::Authenticated => "authenticated",
            Self::AuthenticationRequired => "authentication_required",
        }
    }
}

/// Why a session could not be opened or authenticated.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("unknown connection {0:?}")]
    UnknownConnection(String),
    #[error("the customer identifier {0}")]
    NotOpaque(&'static str),
    /// The words say which identifiers disagree.
    #[error("{0}")]
    IdentityMismatch(&'static str),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("a token is required to authenticate")]
    MissingToken,
    /// The words say where the token would go and what it may hold.
    #[error("the customer token {0}")]
    UnfitToken(&'static str),
    #[error("a customer_id is required for an opaque connection")]
    MissingCustomerId,
    #[error("no such session")]
    UnknownSession,
    #[error(transparent)]
    Internal(#[from] GatewayError),
}

/// What a channel hands over about the customer.
#[derive(Debug, Default)]
pub struct CustomerHandoff {
    pub customer_id: Option<String>,
    pub token: Option<SecretString>,
    pub expires_in: Option<u64>,
}

impl Gateway {
    fn connection(&self, name: &str) -> Result<&Arc<Connection>, IntakeError> {
        self.connections
            .get(name)
            .ok_or_else(|| IntakeError::UnknownConnection(name.to_string()))
    }

    /// Establishes the customer key from what the channel sent, per the
    /// connection's identity mode.
    async fn customer_key(
        &self,
        connection: &Connection,
        handoff: &CustomerHandoff,
    ) -> Result<(String, Option<i64>), IntakeError> {
        // Checked before anything is stored: a token that cannot be sent
        // as the connection sends it would only fail on every action.
        if let Some(token) = &handoff.token
            && let Some(problem) = connection.config.customer_auth.placement.refuses(token.expose_secret())
        {
            return Err(IntakeError::UnfitToken(problem));
        }
        // Saturating: an absurd `expires_in` or `exp` (up to 2^64 - 1)
        // means "far in the future", not a wrapped, negative instant.
        let token_expiry = handoff
            .expires_in
            .map(|s| self.now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        if let Some(verifier) = &connection.verifier {
            let token = handoff.token.as_ref().ok_or(IntakeError::MissingToken)?;
            let verified = verifier.verify(token.expose_secret()).await?;
            if handoff
                .customer_id
                .as_ref()
                .is_some_and(|id| *id != verified.customer_key)
            {
                return Err(IntakeError::IdentityMismatch(
                    "customer_id does not match the identifier in the token",
                ));
            }
            let expires = verified
                .expires_at
                .map(|e| i64::try_from(e).unwrap_or(i64::MAX))
                .or(token_expiry);
            return Ok((verified.customer_key, expires));
        }
        let id = handoff.customer_id.clone().ok_or(IntakeError::MissingCustomerId)?;
        if let Some(problem) = opacity_problem(&id) {
            match connection.config.identity.opacity {
                Opacity::Reject => return Err(IntakeError::NotOpaque(problem)),
                Opacity::Warn => tracing::warn!(connection = %connection.name(), "a customer identifier {problem}"),
                Opacity::Off => {}
            }
        }
        Ok((id, token_expiry))
    }

    /// Opens a session; with a customer, it joins their one conversation.
    pub async fn open_session(
        &self,
        channel: &str,
        connection: &str,
        handoff: CustomerHandoff,
    ) -> Result<(String, String, bool), IntakeError> {
        let connection = self.connection(connection)?;
        let session_id = random_id("ses_")?;
        let new_id = random_id("cnv_")?;
        let t = self.now();
        let identified = handoff.customer_id.is_some() || handoff.token.is_some();
        if !identified {
            self.store.anonymous_conversation(&new_id, connection.name(), t).await?;
            self.store
                .insert_session(&session_id, &new_id, channel, false, t)
                .await?;
            self.record_event(&new_id, Some(&session_id), EventKind::SessionOpened)
                .await;
            return Ok((session_id, new_id, false));
        }
        let (key, expires) = self.customer_key(connection, &handoff).await?;
        let conversation = self
            .store
            .customer_conversation(&new_id, connection.name(), &key, t)
            .await?;
        self.store
            .insert_session(&session_id, &conversation, channel, true, t)
            .await?;
        if let Some(token) = &handoff.token {
            self.store_token(&conversation, token, expires).await?;
        }
        self.record_event(&conversation, Some(&session_id), EventKind::SessionOpened)
            .await;
        Ok((session_id, conversation, true))
    }

    /// Authenticates a session (anonymous → customer), or gives an
    /// authenticated one a fresh token.
    pub async fn authenticate_session(
        &self,
        session_id: &str,
        handoff: CustomerHandoff,
    ) -> Result<String, IntakeError> {
        let (from, _channel, connection_name, current_key) = self
            .store
            .session(session_id)
            .await?
            .ok_or(IntakeError::UnknownSession)?;
        let connection = self.connection(&connection_name)?;
        let (key, expires) = self.customer_key(connection, &handoff).await?;
        if current_key.as_ref().is_some_and(|k| *k != key) {
            return Err(IntakeError::IdentityMismatch(
                "this session already belongs to another customer; open a new session for this one",
            ));
        }
        let t = self.now();
        let conversation = self
            .store
            .customer_conversation(&random_id("cnv_")?, &connection_name, &key, t)
            .await?;
        self.store.join(session_id, &from, &conversation, t).await?;
        if let Some(token) = &handoff.token {
            self.store_token(&conversation, token, expires).await?;
        }
        self.record_event(&conversation, Some(session_id), EventKind::Authenticated)
            .await;
        Ok(conversation)
    }

    async fn store_token(
        &self,
        conversation: &str,
        token: &SecretString,
        expires: Option<i64>,
    ) -> Result<(), GatewayError> {
        let sealed = self.vault.seal(token.expose_secret(), conversation)?;
        self.store.put_token(conversation, &sealed, expires, self.now()).await
    }

    async fn record_event(&self, conversation: &str, session: Option<&str>, kind: EventKind) {
        if let Err(e) = self
            .store
            .add_event(conversation, session, kind.as_str(), self.now())
            .await
        {
            tracing::warn!(error = %e, "could not record an event");
        }
        let event = Event {
            kind,
            conversation_id: conversation.to_string(),
            session_id: session.map(str::to_string),
        };
        self.coordination.tell(Signal::Event(event.clone()));
        let _ = self.events.send(event);
    }

    /// `valid`, `expired` (or rejected by the company) or `none`.
    pub async fn auth_state(&self, conversation: &str) -> Result<&'static str, GatewayError> {
        let token = self.store.token(conversation).await?;
        Ok(auth_state_of(
            token.map(|t| store::TokenStatus {
                expires_at: t.expires_at,
                rejected: t.rejected,
            }),
            self.now(),
        ))
    }

    /// Runs `action` for `agent` in `conversation`, as part of `trace`.
    /// The result is returned only once its audit record is in the store;
    /// repeatable refusals are counted into their window's record instead.
    pub async fn run_action(
        &self,
        agent: &str,
        conversation: &str,
        action: &str,
        trace: serving::TraceId,
    ) -> Result<ActionResult, ActionError> {
        // What no conversation or action could be named is refused before
        // it reaches the audit log, a log line or an answer.
        if !is_random_id(conversation, "cnv_") {
            return Err(ActionError::UnknownConversation);
        }
        if !config::valid_name(action) {
            return Err(ActionError::UnknownAction);
        }
        let started = std::time::Instant::now();
        let (connection, result) = match self.rates.agent(agent) {
            Err(wait) => (String::new(), Err(ActionError::RateLimited(wait))),
            // The conversation's connection and its customer's (sealed)
            // token: from memory, or one read.
            Ok(()) => match self.store.action_context(conversation).await {
                Err(e) => return Err(ActionError::from(e)),
                Ok(None) => (String::new(), Err(ActionError::UnknownConversation)),
                Ok(Some(context)) => (
                    context.connection.clone(),
                    self.run_action_inner(conversation, &context, action, trace).await,
                ),
            },
        };
        let record = AuditRecord {
            at: self.now(),
            agent: agent.to_string(),
            conversation_id: conversation.to_string(),
            connection,
            action: action.to_string(),
            outcome: match &result {
                Ok(r) if r.cached => "cached".to_string(),
                Ok(_) => "ok".to_string(),
                Err(e) => problem::ProblemType::of(e).slug().to_string(),
            },
            status: match &result {
                Ok(r) => Some(r.status),
                Err(
                    ActionError::Backend { status, .. }
                    | ActionError::ApiKeyRejected { status, .. }
                    | ActionError::TooLarge { status }
                    | ActionError::NotJson { status },
                ) => Some(*status),
                Err(_) => None,
            },
            latency_ms: started.elapsed().as_millis() as u64,
            trace_id: Some(trace.to_string()),
            count: 1,
        };
        if audit::is_repeatable_refusal(&record.outcome) {
            self.metrics.refusal(&record.outcome);
            self.audit.refusal(record);
        } else if let Err(e) = self.audit.durable(record).await {
            return Err(ActionError::from(e));
        }
        result
    }

    async fn run_action_inner(
        &self,
        conversation: &str,
        context: &store::ActionContext,
        action: &str,
        trace: serving::TraceId,
    ) -> Result<ActionResult, ActionError> {
        let connection = self
            .connections
            .get(&context.connection)
            .ok_or(ActionError::UnknownAction)?;
        let Some(spec) = connection.action(action) else {
            return Err(ActionError::UnknownAction);
        };
        // `tell`: whether this call is the one to ask the channel for a
        // token. A token refused or expired was asked for once already (by
        // whoever refused it, or by the sweep), on whichever instance.
        let (token, tell) = match &context.token {
            Some(t) if !t.rejected && t.expires_at.is_none_or(|e| e > self.now()) => {
                match self.vault.open_sealed(&t.ciphertext, conversation) {
                    Ok(token) => (Some(token), false),
                    // Sealed under another key (it changed) or for another
                    // conversation (the row was tampered with): useless
                    // either way, so wiped, and the channel asked for a fresh one.
                    Err(e) => {
                        tracing::warn!(error = %e, "a stored customer token could not be opened; it is wiped");
                        let marked = self
                            .store
                            .mark_token_rejected(conversation)
                            .await
                            .map_err(ActionError::from)?;
                        (None, marked)
                    }
                }
            }
            Some(_) => (None, false),
            None => (None, true),
        };
        let Some(token) = token else {
            if tell {
                self.record_event(conversation, None, EventKind::AuthenticationRequired)
                    .await;
            }
            return Err(ActionError::CustomerAuthRequired);
        };
        // Only while the token is valid (checked above) and the same: a new
        // or refused token ends the context and its answers with it.
        let ttl = Duration::from_secs(spec.cache_ttl_secs);
        if !ttl.is_zero()
            && let Some((data, status)) = context.recent_answer(action, self.clock.now())
        {
            connection.outcome_counter(action, "cached").inc();
            return Ok(ActionResult {
                data,
                status,
                latency_ms: 0,
                cached: true,
            });
        }
        let result = connection.call(action, Some(&token), trace).await;
        if let Ok(r) = &result
            && !ttl.is_zero()
        {
            context.remember_answer(action, &r.data, r.status, self.clock.now(), ttl);
        }
        // Concurrent calls refused with the same token: one event, from the
        // call that marked it (or from each, when the store cannot say).
        if matches!(result, Err(ActionError::CustomerAuthRequired))
            && !matches!(self.store.mark_token_rejected(conversation).await, Ok(false))
        {
            self.record_event(conversation, None, EventKind::AuthenticationRequired)
                .await;
        }
        result
    }
}

/// `valid`, `expired` (or rejected by the company) or `none`, from what is
/// known of the conversation's customer token at `now` (Unix seconds).
pub fn auth_state_of(token: Option<store::TokenStatus>, now: i64) -> &'static str {
    match token {
        None => "none",
        Some(t) if t.rejected || t.expires_at.is_some_and(|e| e <= now) => "expired",
        Some(_) => "valid",
    }
}

/// Wipes expired customer tokens (the row stays, so the state reads
/// "expired") and tells their channels to send a fresh one.
pub(crate) async fn sweep_expired(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut forgotten = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if forgotten.elapsed() >= limits::FORGET_IDLE_EVERY {
            gateway.rates.forget_idle();
            forgotten = tokio::time::Instant::now();
        }
        match gateway.store.expire_tokens(gateway.now()).await {
            Ok(expired) => {
                for conversation in expired {
                    gateway
                        .record_event(&conversation, None, EventKind::AuthenticationRequired)
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not expire customer tokens"),
        }
    }
}
