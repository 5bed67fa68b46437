//! The platform side of deskbridge: takes a customer's identifier and token
//! from a chat channel, ties every session of that customer into one
//! conversation, and runs the company's APIs for agents with all three
//! credentials, recording who asked for which customer's data.

pub mod audit;
pub mod config;
pub mod console;
mod coordination;
mod http;
pub mod limits;
pub mod metrics;
pub mod problem;
#[cfg(test)]
mod proptests;
pub mod store;
pub mod vault;

// Calling a company is the `company` crate's job.
pub use company::{connector, identity, system_token};

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clock::{Clock, SystemClock};
use company::share::LocalShare;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::audit::AuditTrail;
pub use crate::config::GatewayConfig;
use crate::config::{ChannelConfig, Opacity};
use crate::connector::{ActionError, ActionResult, Connection};
pub use crate::coordination::reach_cluster;
use crate::coordination::{Coordination, SharedTokens, Signal};
use crate::identity::{IdentityError, opacity_problem};
use crate::limits::{Rates, Streams};
use crate::metrics::Metrics;
use crate::store::{AuditRecord, Store};
use crate::vault::{Vault, is_random_id, random_id};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("configuration: {0}")]
    Config(String),
    /// An administrative request that cannot be carried out as given (a
    /// malformed agent name, a short password): the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The store could not be reached, or did not answer, within
    /// `[store] timeout_ms`: answered `503 store_unavailable`.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("crypto: {0}")]
    Crypto(String),
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        if store::engine::is_unavailable(&e) {
            Self::StoreUnavailable(e.to_string())
        } else {
            Self::Database(e)
        }
    }
}

impl From<audit::NotAudited> for ActionError {
    fn from(e: audit::NotAudited) -> Self {
        match e {
            audit::NotAudited::StoreUnavailable => Self::StoreUnavailable(e.to_string()),
            audit::NotAudited::Failed => Self::Internal(e.to_string()),
        }
    }
}

impl From<GatewayError> for ActionError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::StoreUnavailable(cause) => Self::StoreUnavailable(cause),
            e => Self::Internal(e.to_string()),
        }
    }
}

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

pub struct Gateway {
    config: GatewayConfig,
    store: Store,
    vault: Arc<Vault>,
    connections: HashMap<String, Arc<Connection>>,
    channels: HashMap<String, (ChannelConfig, SecretString)>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<Event>,
    audit: AuditTrail,
    rates: Rates,
    streams: Arc<Streams>,
    /// Set when shutdown begins, so long-lived event streams end and the
    /// graceful shutdown is not held open by them.
    closing: tokio::sync::watch::Sender<bool>,
    agents: std::sync::RwLock<HashMap<Vec<u8>, (String, String, std::time::SystemTime)>>,
    /// Console passwords (Argon2id) and throttling of failed console sign-ins.
    passwords: login::PasswordHasher,
    console_throttle: login::LoginThrottle,
    /// Every decision about expiry and age reads this clock (timeouts of
    /// network I/O stay on tokio's time).
    clock: Arc<dyn Clock>,
    /// What this instance tells the others and takes from them.
    coordination: Coordination,
    /// This process in the store's table of instances, once it serves.
    instance: tokio::sync::OnceCell<store::Instance>,
}

impl Gateway {
    /// Opens the gateway on the wall clock.
    pub async fn open(config: GatewayConfig) -> Result<Arc<Self>, GatewayError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the gateway with `clock` deciding every expiry: system and
    /// customer tokens, the breaker's open time, reused answers, audit times.
    pub async fn open_with_clock(config: GatewayConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>, GatewayError> {
        let fatal: Vec<String> = config
            .check()
            .into_iter()
            .filter(|p| p.fatal)
            // "configuration: server.http.max_connections: must be …", the
            // level left out: every one of these is an error.
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        if !fatal.is_empty() {
            return Err(GatewayError::Config(fatal.join("; ")));
        }
        // Owner only: the database and the token key live here.
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(&config.server.data_dir)
            .map_err(|e| GatewayError::Io(format!("{}: {e}", config.server.data_dir.display())))?;
        let store = Store::connect(&config.store_options()).await?;
        let key = match &config.crypto.token_key {
            Some(source) => Some(source.resolve().map_err(GatewayError::Config)?),
            None => None,
        };
        let vault = Arc::new(Vault::open(key, &config.server.data_dir)?);
        let coordination = match &config.cluster {
            None => Coordination::local(),
            Some(cluster) => {
                let url = cluster.redis_url.resolve().map_err(GatewayError::Config)?;
                Coordination::shared(
                    cluster::Cluster::connect(
                        url.expose_secret(),
                        &cluster.key_prefix,
                        &cluster
                            .instance_id
                            .clone()
                            .unwrap_or_else(|| store::Instance::this_process().id),
                    )
                    .map_err(|e| GatewayError::Config(e.to_string()))?,
                )
            }
        };
        let metrics = Arc::new(Metrics::default());
        // Redirects are never followed: a company's answer is final, and a
        // redirect could carry our credentials to another host.
        // Token endpoint, JWKS and probe calls. Like action calls (see
        // `upstream`), they go straight to the company: no environment proxy.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let mut connections = HashMap::new();
        for c in &config.connections {
            let connection = Connection::new(
                c.clone(),
                http.clone(),
                metrics.company.clone(),
                match coordination.cluster() {
                    Some(cluster) => Arc::new(SharedTokens::new(
                        cluster.clone(),
                        vault.clone(),
                        &c.name,
                        clock.clone(),
                    )),
                    None => Arc::new(LocalShare::default()),
                },
                clock.clone(),
            )
            .map_err(GatewayError::Config)?;
            connections.insert(c.name.clone(), Arc::new(connection));
        }
        let mut channels = HashMap::new();
        for ch in &config.channels {
            let key = ch.app_key.resolve().map_err(GatewayError::Config)?;
            channels.insert(ch.name.clone(), (ch.clone(), key));
        }
        let passwords = login::PasswordHasher::new(2)
            .await
            .map_err(|e| GatewayError::Crypto(e.to_string()))?;
        let console_throttle = login::LoginThrottle::new(config.console.throttle.clone());
        let (events, _) = broadcast::channel(1024);
        let audit = AuditTrail::start(store.clone(), metrics.clone(), config.audit);
        let rates = Rates::new(&config.limits);
        let streams = Streams::new(config.limits, metrics.event_streams.clone());
        let gateway = Arc::new(Self {
            config,
            store,
            vault,
            connections,
            channels,
            metrics,
            events,
            audit,
            rates,
            streams,
            closing: tokio::sync::watch::channel(false).0,
            agents: std::sync::RwLock::default(),
            passwords,
            console_throttle,
            clock,
            coordination,
            instance: tokio::sync::OnceCell::new(),
        });
        Coordination::start(&gateway);
        Ok(gateway)
    }

    /// Forgets what this instance remembered on the strength of signals
    /// from the others (after Redis was away, some may have been missed):
    /// agents and action contexts are read again from the store.
    pub(crate) fn forget_shared_state(&self) {
        self.agents.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.store.forget_all_contexts();
    }

    /// Forgets what was remembered of the agent `name` (its credentials
    /// changed, here or on another instance).
    pub(crate) fn forget_agent(&self, name: &str) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (agent, _, _)| agent != name);
    }

    /// Whether this instance reaches the Redis it shares with the others
    /// (true without `[cluster]`).
    pub fn cluster_up(&self) -> bool {
        self.coordination.up()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Its store (conversations, tokens, agents, the audit log).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Unix seconds by the gateway's clock.
    pub(crate) fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_secs()).unwrap_or(i64::MAX)
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Registers this process as the store's serving instance, or refuses
    /// when another one is alive on the same store: without `[cluster]`
    /// the caches and the event bus live in one process's memory, so a
    /// second one would serve stale agents and miss events. Done once;
    /// [`Gateway::serve`] calls it too.
    pub async fn claim_instance(&self) -> Result<(), GatewayError> {
        self.instance
            .get_or_try_init(|| async {
                let mut me = store::Instance::this_process();
                if let Some(cluster) = &self.coordination.cluster() {
                    // Instances of a cluster share caches and events: each
                    // registers (for the operator to see), none refuses.
                    me.id = cluster.instance().to_string();
                    self.store.register_instance(&me, self.now()).await?;
                    return Ok(me);
                }
                self.store.register_instance(&me, self.now()).await?;
                let others = self.store.other_live_instances(&me, self.now()).await?;
                if let Some(other) = others.first() {
                    let _ = self.store.deregister_instance(&me).await;
                    return Err(GatewayError::Config(format!(
                        "another gateway instance ({}, last heartbeat {} s ago) is serving from this store; \
                         several instances on one store need a [cluster] section, so that they share caches \
                         and events. Stop the other one (an instance killed without a clean shutdown counts \
                         as gone {} s after its last heartbeat)",
                        other.id,
                        (self.now() - other.heartbeat_at).max(0),
                        store::STALE_AFTER_SECS,
                    )));
                }
                Ok(me)
            })
            .await
            .map(drop)
    }

    /// Serves until `shutdown`, then drains in-flight requests and flushes the audit log.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        self.claim_instance().await?;
        let heartbeat = tokio::spawn(heartbeat(self.clone()));
        let sweeper = tokio::spawn(sweep_expired(self.clone()));
        let pruner = tokio::spawn(audit::prune(
            self.store.clone(),
            self.metrics.clone(),
            self.config.audit,
            self.clock.clone(),
        ));
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            closing.send_replace(true);
        };
        serving::serve(listener, self.router(), self.config.server.http, shutdown).await;
        sweeper.abort();
        pruner.abort();
        heartbeat.abort();
        self.flush_audit().await;
        if let Some(me) = self.instance.get()
            && let Err(e) = self.store.deregister_instance(me).await
        {
            tracing::warn!(error = %e, "could not deregister this instance from the store");
        }
        self.store.close().await;
        Ok(())
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Closes the audit queue and waits until every record is written.
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }

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

    /// Whether the agent may make another request now.
    pub(crate) fn admit_agent(&self, name: &str) -> Result<(), limits::RetryAfter> {
        self.rates.agent(name)
    }

    /// Whether a channel session (or, by channel and address, the opening
    /// of one) may make another request now.
    pub(crate) fn admit_session(&self, key: &str) -> Result<(), limits::RetryAfter> {
        self.rates.session(key)
    }

    /// The agent behind an API token: (name, role). Lookups are remembered
    /// briefly, so a busy agent does not cost a database read per request;
    /// a replaced token stops working within that time.
    pub async fn agent(&self, token: &str) -> Result<Option<(String, String)>, GatewayError> {
        let digest = agent_token_digest(token);
        let now = self.clock.now();
        if let Some((name, role, at)) = self.agents.read().unwrap_or_else(|p| p.into_inner()).get(&digest)
            && now.duration_since(*at).is_ok_and(|age| age < AGENT_CACHE_TTL)
        {
            return Ok(Some((name.clone(), role.clone())));
        }
        let found = self.store.agent_by_digest(&digest).await?;
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        match &found {
            Some((name, role)) => {
                if agents.len() >= 10_000 {
                    agents.clear();
                }
                agents.insert(digest, (name.clone(), role.clone(), now));
            }
            None => {
                agents.remove(&digest);
            }
        }
        Ok(found)
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

/// How long an agent lookup is remembered.
const AGENT_CACHE_TTL: Duration = Duration::from_secs(5);

/// An agent's API token: shown once, stored as a SHA-256 digest (it is a
/// 256-bit random value, so a fast digest is as strong as a slow one).
pub fn agent_token_digest(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

impl Gateway {
    /// Creates an agent (or replaces its token); returns the new token.
    pub async fn add_agent(&self, name: &str, role: &str) -> Result<String, GatewayError> {
        if !matches!(role, "agent" | "admin") {
            return Err(GatewayError::Invalid("role is agent or admin".into()));
        }
        // Names go into the audit log, log lines and the console: plain
        // words only (an email address is fine), nothing to forge a line with.
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_.@".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
            return Err(GatewayError::Invalid(
                "an agent name is 1-64 letters, digits, '-', '_', '.' or '@'".into(),
            ));
        }
        let token = random_id("dbg_")?;
        self.store
            .insert_agent(name, role, &agent_token_digest(&token), self.now())
            .await?;
        // New credentials: whoever signed in with the old ones signs in again.
        self.store.delete_agent_sessions(name).await?;
        self.agent_changed(name).await;
        Ok(token)
    }

    /// Removes an agent: its token and console sessions stop working here
    /// at once, and on the other instances as soon as they hear of it.
    /// False if there was no such agent.
    pub async fn remove_agent(&self, name: &str) -> Result<bool, GatewayError> {
        let removed = self.store.delete_agent(name).await?;
        self.store.delete_agent_sessions(name).await?;
        self.agent_changed(name).await;
        Ok(removed)
    }

    async fn agent_changed(&self, name: &str) {
        self.forget_agent(name);
        let signal = Signal::AgentChanged { name: name.to_string() };
        if let Err(e) = self.coordination.announce(signal).await {
            // The others forget it within their agent cache's lifetime.
            tracing::warn!(error = %e, agent = name, "the other instances could not be told of a changed agent");
        }
    }
}

/// Tells the store every few seconds that this instance is alive. A beat
/// that fails (the store is down) is logged; the next one tries again.
async fn heartbeat(gateway: Arc<Gateway>) {
    let Some(me) = gateway.instance.get() else { return };
    let mut tick = tokio::time::interval(store::HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = gateway.store.instance_heartbeat(me, gateway.now()).await {
            tracing::warn!(error = %e, "instance heartbeat failed");
        }
    }
}

/// Wipes expired customer tokens (the row stays, so the state reads
/// "expired") and tells their channels to send a fresh one.
async fn sweep_expired(gateway: Arc<Gateway>) {
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
