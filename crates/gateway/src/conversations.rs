//! Conversations: sessions opened by channels, their customer's login,
//! the events they raise, and the actions agents run in them.

use super::*;

use std::collections::BTreeMap;

use company::action;
use company::config::{ActionKind, Caller, Mask};
use serde_json::Value;

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

    /// Runs `action` for `runner` in `conversation`, as part of `trace`, and
    /// masks its answer for the runner's audience. The result is returned
    /// only once its audit record is in the store; repeatable refusals are
    /// counted into their window's record instead.
    pub async fn run_action(
        &self,
        runner: &Runner,
        conversation: &str,
        action: &str,
        ask: &ActionAsk,
        trace: serving::TraceId,
    ) -> Result<ActionAnswer, ActionError> {
        self.execute(runner, conversation, action, ask, None, trace).await?
    }

    /// Runs a read action for an agent whose role may reveal, and gives the
    /// unmasked value at `pointer`: a value its audience sees masked. The
    /// audit record keeps the pointer and the agent's reason.
    pub async fn reveal(
        &self,
        runner: &Runner,
        conversation: &str,
        action: &str,
        ask: &ActionAsk,
        reveal: &Reveal,
        trace: serving::TraceId,
    ) -> Result<Value, ActionError> {
        let answer = self
            .execute(runner, conversation, action, ask, Some(reveal), trace)
            .await??;
        let value = connector::raw_pointer(&answer.result.data, &reveal.pointer)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null);
        Ok(value)
    }

    /// Runs the action and writes its audit record. The outer error is the
    /// audit record's own failure (the answer is then withheld); the inner
    /// result is the action's.
    async fn execute(
        &self,
        runner: &Runner,
        conversation: &str,
        action: &str,
        ask: &ActionAsk,
        reveal: Option<&Reveal>,
        trace: serving::TraceId,
    ) -> Result<Result<ActionAnswer, ActionError>, ActionError> {
        // What no conversation or action could be named is refused before
        // it reaches the audit log, a log line or an answer.
        if !is_random_id(conversation, "cnv_") {
            return Err(ActionError::UnknownConversation);
        }
        if !config::valid_name(action) {
            return Err(ActionError::UnknownAction);
        }
        let started = std::time::Instant::now();
        // Only an input sent is digested: the common read without one pays nothing.
        let digest = (!ask.input.is_empty()).then(|| self.vault.input_digest(action, &ask.input));
        let admitted = match runner.caller {
            // A customer's session was admitted by its own rate, at the door.
            Caller::Customer => Ok(()),
            Caller::Agent | Caller::Bot => self.rates.agent(&runner.name),
        };
        let (connection, result) = match admitted {
            Err(wait) => (String::new(), Err(ActionError::RateLimited(wait))),
            // The conversation's connection and its customer's (sealed)
            // token: from memory, or one read.
            Ok(()) => match self.store.action_context(conversation).await {
                Err(e) => return Err(ActionError::from(e)),
                Ok(None) => (String::new(), Err(ActionError::UnknownConversation)),
                Ok(Some(context)) => (
                    context.connection.clone(),
                    self.run_action_inner(runner, conversation, &context, action, ask, reveal, trace)
                        .await,
                ),
            },
        };
        let exchanged = self
            .connections
            .get(&connection)
            .is_some_and(|c| matches!(c.config.system_auth, config::SystemAuthConfig::TokenExchange(_)));
        let record = AuditRecord {
            at: self.now(),
            agent: runner.name.clone(),
            conversation_id: conversation.to_string(),
            connection,
            action: action.to_string(),
            outcome: match &result {
                Ok(a) if a.result.cached => "cached".to_string(),
                Ok(a) if a.replayed => "replayed".to_string(),
                Ok(_) => "ok".to_string(),
                Err(e) => problem::ProblemType::of(e).slug().to_string(),
            },
            status: match &result {
                Ok(a) => Some(a.result.status),
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
            caller: runner.caller.as_str().to_string(),
            // Names only, and only names an input field could have: what a
            // caller made up does not reach the log.
            input_fields: ask
                .input
                .keys()
                .filter(|k| config::valid_name(k))
                .take(MAX_AUDITED_FIELDS)
                .cloned()
                .collect(),
            input_digest: digest,
            revealed: reveal.map(|r| r.pointer.clone()),
            reason: reveal.map(|r| r.reason.clone()),
            act: exchanged.then(|| runner.actor()).flatten(),
        };
        if audit::is_repeatable_refusal(&record.outcome) {
            self.metrics.refusal(&record.outcome);
            self.audit.refusal(record);
        } else if let Err(e) = self.audit.durable(record).await {
            return Err(ActionError::from(e));
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_action_inner(
        &self,
        runner: &Runner,
        conversation: &str,
        context: &store::ActionContext,
        action: &str,
        ask: &ActionAsk,
        reveal: Option<&Reveal>,
        trace: serving::TraceId,
    ) -> Result<ActionAnswer, ActionError> {
        let connection = self
            .connections
            .get(&context.connection)
            .ok_or(ActionError::UnknownAction)?;
        let Some(spec) = connection.action(action) else {
            return Err(ActionError::UnknownAction);
        };
        may_run(spec, runner, reveal)?;
        let input = connection
            .check_input(action, &ask.input)
            .map_err(ActionError::InvalidInput)?;
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
        let request = connector::ActionRequest {
            input,
            idempotency_key: ask.idempotency_key.clone(),
            actor: runner.actor(),
        };
        let result = match spec.kind {
            ActionKind::Read => self.read(connection, context, spec, &request, &token, trace).await,
            ActionKind::Write => {
                self.write(connection, conversation, spec, &request, &token, trace)
                    .await
            }
        };
        // Concurrent calls refused with the same token: one event, from the
        // call that marked it (or from each, when the store cannot say).
        if matches!(result, Err(ActionError::CustomerAuthRequired))
            && !matches!(self.store.mark_token_rejected(conversation).await, Ok(false))
        {
            self.record_event(conversation, None, EventKind::AuthenticationRequired)
                .await;
        }
        let (mut result, replayed) = result?;
        if tracing::enabled!(target: ANSWERS_LOG, tracing::Level::DEBUG) {
            let mut logged = result.clone();
            if mask(&mut logged, action::masks_for(spec, action::Audience::Logs)).is_ok() {
                tracing::debug!(target: ANSWERS_LOG, action, answer = %logged.data.get(), "an action's answer, masked for logs");
            }
        }
        // A reveal takes the value as it came; everyone else sees it masked.
        let masked = match reveal {
            Some(_) => Vec::new(),
            None => mask(&mut result, action::masks_for(spec, runner.caller.audience()))?,
        };
        Ok(ActionAnswer {
            result,
            replayed,
            masked,
        })
    }

    /// A read: reused from a recent identical run when the action allows it.
    #[allow(clippy::too_many_arguments)]
    async fn read(
        &self,
        connection: &Connection,
        context: &store::ActionContext,
        spec: &config::ActionConfig,
        request: &connector::ActionRequest,
        token: &SecretString,
        trace: serving::TraceId,
    ) -> Result<(ActionResult, bool), ActionError> {
        // Only while the token is valid (checked above) and the same: a new
        // or refused token ends the context and its answers with it. Runs
        // with other inputs are other answers.
        let ttl = Duration::from_secs(spec.cache_ttl_secs);
        let cache_key = match request.input.is_empty() {
            true => spec.name.clone(),
            false => format!("{}\0{}", spec.name, Value::Object(request.input.clone())),
        };
        if !ttl.is_zero()
            && let Some((data, status)) = context.recent_answer(&cache_key, self.clock.now())
        {
            connection.outcome_counter(&spec.name, "cached").inc();
            return Ok((
                ActionResult {
                    data,
                    status,
                    latency_ms: 0,
                    cached: true,
                },
                false,
            ));
        }
        let result = connection.call(&spec.name, request, Some(token), trace).await?;
        if !ttl.is_zero() {
            context.remember_answer(&cache_key, &result.data, result.status, self.clock.now(), ttl);
        }
        Ok((result, false))
    }

    /// A write: once per idempotency key. A key seen before gives the first
    /// outcome again without calling the company; a key the company never
    /// answered for is given back, so the caller may retry with it (the
    /// company sees the same key, and can tell a retry from a new request).
    async fn write(
        &self,
        connection: &Connection,
        conversation: &str,
        spec: &config::ActionConfig,
        request: &connector::ActionRequest,
        token: &SecretString,
        trace: serving::TraceId,
    ) -> Result<(ActionResult, bool), ActionError> {
        let key = request
            .idempotency_key
            .as_deref()
            .ok_or(ActionError::IdempotencyKeyRequired)?;
        let digest = self.vault.input_digest(&spec.name, &request.input);
        let claim = self
            .store
            .claim_idempotency_key(conversation, &spec.name, key, &digest, self.now())
            .await?;
        match claim {
            store::Claim::Won => {}
            store::Claim::Reused => return Err(ActionError::IdempotencyKeyReused),
            store::Claim::InFlight => return Err(ActionError::IdempotencyKeyInFlight),
            store::Claim::Done { status, answer } => {
                let first = self
                    .vault
                    .open_sealed(&answer, conversation)
                    .map_err(ActionError::from)?;
                return replay(first.expose_secret(), status);
            }
        }
        let result = connection.call(&spec.name, request, Some(token), trace).await;
        // A success or a refusal (4xx) is the company's answer to this
        // change; a failure (5xx, timeout, no answer) says nothing of it.
        let kept = match &result {
            Ok(r) => Some((r.status, serde_json::json!({ "data": r.data }))),
            Err(ActionError::Backend { status, error }) if *status < 500 => {
                Some((*status, serde_json::json!({ "error": error })))
            }
            Err(_) => None,
        };
        let recorded = match kept {
            Some((status, outcome)) => {
                let sealed = self.vault.seal(&outcome.to_string(), conversation)?;
                self.store
                    .finish_idempotency_key(conversation, &spec.name, key, status, &sealed)
                    .await
            }
            None => self.store.release_idempotency_key(conversation, &spec.name, key).await,
        };
        if let Err(e) = recorded {
            // The outcome stands; a retry with this key finds it in flight
            // until the claim is abandoned, rather than running it twice.
            tracing::warn!(error = %e, "the outcome of a write could not be kept for its idempotency key");
        }
        result.map(|r| (r, false))
    }
}

/// Masks the answer in `result` with `masks`; returns what was masked.
fn mask(result: &mut ActionResult, masks: &BTreeMap<String, Mask>) -> Result<Vec<action::Masked>, ActionError> {
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let mut doc: Value = serde_json::from_str(result.data.get())
        .map_err(|e| ActionError::Internal(format!("an answer could not be read again: {e}")))?;
    let masked = action::apply_masks(&mut doc, masks);
    result.data = serde_json::value::to_raw_value(&doc).map_err(|e| ActionError::Internal(e.to_string()))?;
    Ok(masked)
}

/// The log target of actions' answers, at `debug` level only and masked for
/// the `logs` audience (`RUST_LOG=deskbridge::answers=debug` to see them).
const ANSWERS_LOG: &str = "deskbridge::answers";

/// At most this many input field names go into an audit record.
const MAX_AUDITED_FIELDS: usize = 32;

/// Whether `runner` may run (or reveal from) `spec`.
fn may_run(spec: &config::ActionConfig, runner: &Runner, reveal: Option<&Reveal>) -> Result<(), ActionError> {
    if !spec.callers.contains(&runner.caller) {
        return Err(ActionError::NotAllowed(match runner.caller {
            Caller::Customer => "customers may not run this action",
            Caller::Bot => "bots may not run this action",
            Caller::Agent => "agents may not run this action",
        }));
    }
    if !runner.role_allowed(spec.roles.as_deref()) {
        return Err(ActionError::NotAllowed("your role may not run this action"));
    }
    if let Some(reveal) = reveal {
        if spec.kind == ActionKind::Write {
            return Err(ActionError::NotAllowed("a write's answer cannot be revealed"));
        }
        if !runner.may_reveal(spec) {
            return Err(ActionError::NotAllowed(
                "your role may not reveal masked values of this action",
            ));
        }
        if !action::covered(action::masks_for(spec, runner.caller.audience()), &reveal.pointer) {
            return Err(ActionError::NotAllowed(
                "this value is not masked for you: there is nothing to reveal",
            ));
        }
    }
    Ok(())
}

/// The first outcome of a write, as kept: `{"data": …}` or `{"error": …}`.
fn replay(kept: &str, status: u16) -> Result<(ActionResult, bool), ActionError> {
    #[derive(Deserialize)]
    struct Kept<'a> {
        #[serde(borrow)]
        data: Option<&'a serde_json::value::RawValue>,
        error: Option<String>,
    }
    let kept: Kept = serde_json::from_str(kept).map_err(|e| ActionError::Internal(e.to_string()))?;
    match kept.data {
        Some(data) => Ok((
            ActionResult {
                data: data.to_owned(),
                status,
                latency_ms: 0,
                cached: false,
            },
            true,
        )),
        None => Err(ActionError::Backend {
            status,
            error: kept.error,
        }),
    }
}

/// Who runs an action.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The agent's or bot's name, or the customer's session id.
    pub name: String,
    /// The agent's role; none for a customer.
    pub role: Option<String>,
    pub caller: Caller,
}

impl Runner {
    /// An agent, or a bot (an agent principal with the role `bot`).
    pub fn agent(name: String, role: String) -> Self {
        let caller = if role == crate::agents::BOT_ROLE {
            Caller::Bot
        } else {
            Caller::Agent
        };
        Self {
            name,
            role: Some(role),
            caller,
        }
    }

    /// Who acts, as a token exchange names them to the company; a
    /// customer acts for themselves and is named by their own token.
    pub fn actor(&self) -> Option<String> {
        match self.caller {
            Caller::Agent => Some(format!("agent:{}", self.name)),
            Caller::Bot => Some(format!("bot:{}", self.name)),
            Caller::Customer => None,
        }
    }

    /// Whether this runner may run `spec` at all: its kind of caller is
    /// among the action's `callers`, and its role among its `roles`.
    pub fn may_run(&self, spec: &config::ActionConfig) -> bool {
        may_run(spec, self, None).is_ok()
    }

    /// Whether this runner's role may reveal the values `spec`'s answers
    /// mask for it (reads only; never a customer).
    pub fn may_reveal(&self, spec: &config::ActionConfig) -> bool {
        let role = self.role.as_deref().unwrap_or_default();
        self.caller != Caller::Customer && spec.kind == ActionKind::Read && spec.reveal_roles.iter().any(|r| r == role)
    }

    /// Whether `roles` (an action's; `None`: every role) lets this runner
    /// in. A customer has no role: `callers` alone decides for them.
    fn role_allowed(&self, roles: Option<&[String]>) -> bool {
        let role = self.role.as_deref().unwrap_or_default();
        self.caller == Caller::Customer || roles.is_none_or(|roles| roles.iter().any(|r| r == role))
    }

    /// A customer, from their own session.
    pub fn customer(session: String) -> Self {
        Self {
            name: session,
            role: None,
            caller: Caller::Customer,
        }
    }
}

/// What a caller asks of an action besides its name.
#[derive(Debug, Default)]
pub struct ActionAsk {
    pub input: serde_json::Map<String, Value>,
    /// A write's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// A masked value to show unmasked, and why.
#[derive(Debug)]
pub struct Reveal {
    pub pointer: String,
    pub reason: String,
}

/// An action's answer as its runner may see it.
#[derive(Debug)]
pub struct ActionAnswer {
    pub result: ActionResult,
    /// A write's first outcome, given again for its idempotency key.
    pub replayed: bool,
    /// The values masked for the runner's audience.
    pub masked: Vec<action::Masked>,
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
/// "expired") and tells their channels to send a fresh one; now and then,
/// forgets idle callers' rates and writes' outcomes older than a day.
pub(crate) async fn sweep_expired(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut forgotten = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if forgotten.elapsed() >= limits::FORGET_IDLE_EVERY {
            gateway.rates.forget_idle();
            // Each instance prunes; the delete is the same for all.
            if let Err(e) = gateway.store.prune_idempotency_keys(gateway.now()).await {
                tracing::warn!(error = %e, "could not forget old idempotency keys");
            }
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
