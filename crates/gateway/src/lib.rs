//! The platform side of deskbridge: takes a customer's identifier and token
//! from a chat channel, ties every session of that customer into one
//! conversation, and runs the company's APIs for agents with all three
//! credentials, recording who asked for which customer's data.

pub mod agents;
pub mod audit;
pub mod config;
pub mod console;
mod conversations;
mod coordination;
mod http;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod problem;
#[cfg(test)]
mod proptests;
pub mod store;
pub mod vault;

// Calling a company is the `company` crate's job.
pub use company::{assertion, connector, discovery, identity, system_token};

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

pub use crate::agents::agent_token_digest;
use crate::audit::AuditTrail;
pub use crate::config::GatewayConfig;
use crate::config::{ChannelConfig, Opacity};
use crate::connector::{ActionError, ActionResult, Connection};
pub use crate::console::{CARD_ELEMENT_PATH, SDK_PATH, card_element_integrity, sdk_integrity};
pub use crate::conversations::{
    ActionAnswer, ActionAsk, CustomerHandoff, Event, EventKind, IntakeError, Reveal, Runner, auth_state_of,
};
pub use crate::coordination::reach_cluster;

use crate::coordination::{Coordination, SharedLimits, SharedTokens, Signal};
use crate::identity::{IdentityError, opacity_problem};
use crate::limits::{Rates, Streams};
use crate::metrics::Metrics;
use crate::store::{AuditRecord, Store};
use crate::vault::{Vault, is_random_id, random_id};

/// The client of token endpoint, JWKS and probe calls. Redirects are never
/// followed: a company's answer is final, and a redirect could carry our
/// credentials to another host. Like action calls (see `upstream`), they go
/// straight to the company: no proxy from the environment (a connection's
/// own `proxy` and `[connections.tls]` give it a client of its own).
fn company_http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())
}

/// The metadata of `connection`'s issuer (RFC 8414, or OpenID discovery),
/// fetched as its token requests go (its TLS settings and proxy): for
/// `config check --connect`.
pub async fn discover_issuer(
    connection: &config::ConnectionConfig,
    issuer: &str,
) -> Result<discovery::ServerMetadata, String> {
    let http = company::egress::http_client(connection, &company_http()?)?;
    discovery::discover(&http, issuer, Duration::from_millis(connection.timeout_ms)).await
}

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
    agents: std::sync::RwLock<HashMap<Vec<u8>, (store::TokenHolder, std::time::SystemTime)>>,
    /// The identity provider agents sign in at, if `[console.oidc]` names one.
    agent_idp: Option<oidc::AgentIdp>,
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
    /// `GET /openapi.json`, encoded when first asked for.
    openapi_document: std::sync::OnceLock<bytes::Bytes>,
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
        let http = company_http().map_err(GatewayError::Config)?;
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
            let connection = match coordination.cluster() {
                Some(cluster) => connection.with_limit_share(Arc::new(SharedLimits::new(cluster.clone(), &c.name))),
                None => connection,
            };
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
        let agent_idp = config
            .console
            .oidc
            .clone()
            .map(|oidc| oidc::AgentIdp::new(oidc, &config.agents, http.clone(), clock.clone()))
            .transpose()
            .map_err(GatewayError::Config)?;
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
            agent_idp,
            passwords,
            console_throttle,
            clock,
            coordination,
            instance: tokio::sync::OnceCell::new(),
            openapi_document: std::sync::OnceLock::new(),
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
        // Read first: a certificate that cannot be used stops the start.
        let (tls, reloader) = match &self.config.server.tls {
            Some(files) => {
                let tls = serving::tls::ServerTls::load(files).map_err(GatewayError::Config)?;
                let reloader = tls.reload_on_sighup().map_err(GatewayError::Config)?;
                (Some(tls.acceptor), Some(reloader))
            }
            None => (None, None),
        };
        self.claim_instance().await?;
        let heartbeat = tokio::spawn(heartbeat(self.clone()));
        let sweeper = tokio::spawn(conversations::sweep_expired(self.clone()));
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
        serving::serve_with(listener, self.router(), self.config.server.http, tls, shutdown).await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
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

    /// Whether a channel session (or, by channel and address, the opening
    /// of one) may make another request now.
    pub(crate) fn admit_session(&self, key: &str) -> Result<(), limits::RetryAfter> {
        self.rates.session(key)
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
