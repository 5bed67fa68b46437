//! What one gateway instance tells the others, and what it takes from
//! them: the seam between one process (`[cluster]` absent: nothing is sent,
//! everything stays in memory, as always) and many behind a load balancer
//! sharing one Redis (`crates/cluster`).
//!
//! Shared through Redis:
//! - **events** for the event streams, so an agent connected to B sees what
//!   happened on A (each instance delivers its own events at once, and the
//!   others' as Redis relays them, in the order Redis received them);
//! - **invalidations** of what instances remember: an agent re-keyed or
//!   removed, a conversation whose token changed;
//! - **the system token** of each connection and the lease to fetch the next
//!   one ([`SharedTokens`]), sealed under `crypto.token_key`;
//! - **failed console sign-ins**, so throttling counts across instances;
//! - **each company's call budget** (`[connections.limits]`) and the pause
//!   its `Retry-After` asked for ([`SharedLimits`]).
//!
//! Redis being away never stops an instance: sends are dropped and counted,
//! each instance fetches its own system token, and when Redis returns each
//! one forgets what it remembered (it may have missed invalidations).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use clock::Clock;
use cluster::Cluster;
use company::share::{Lease, LimitShare, ShareFuture, SharedAdmission, SharedToken, TokenShare};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::metrics::{InstanceLabel, Metrics};
use crate::vault::Vault;
use crate::{Event, Gateway};

/// Reaches the Redis of `config` and waits up to 3 s for an answer; where
/// it is (`host:port/db`, no credentials), or why it cannot be reached.
pub async fn reach_cluster(config: &crate::config::ClusterConfig) -> Result<String, String> {
    let url = config
        .redis_url
        .resolve()
        .map_err(|e| format!("cluster.redis_url: {e}"))?;
    let url = secrecy::ExposeSecret::expose_secret(&url);
    let shown = Cluster::server_of(url).map_err(|e| e.to_string())?;
    let cluster = Cluster::connect(url, &config.key_prefix, "config-check").map_err(|e| e.to_string())?;
    let mut up = cluster.watch_up();
    match tokio::time::timeout(Duration::from_secs(3), up.wait_for(|up| *up)).await {
        Ok(Ok(_)) => Ok(shown),
        _ => Err(format!("Redis at {shown} did not answer within 3 s")),
    }
}

/// What one instance tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub(crate) enum Signal {
    /// Something happened in a conversation: for their event streams.
    Event(Event),
    /// An agent's credentials changed: forget what was remembered of it.
    AgentChanged { name: String },
    /// A conversation's token or connection changed: forget its context.
    ContextChanged { conversation_id: String },
}

/// One instance's link to the others; without `[cluster]`, a link to none.
pub(crate) struct Coordination {
    cluster: Option<Arc<Cluster>>,
    /// Signals to send, in order, by one task (a send never waits on
    /// Redis); set by [`Coordination::start`].
    outbox: OnceLock<mpsc::UnboundedSender<Signal>>,
}

impl Coordination {
    pub(crate) fn local() -> Self {
        Self {
            cluster: None,
            outbox: OnceLock::new(),
        }
    }

    pub(crate) fn shared(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster: Some(cluster),
            outbox: OnceLock::new(),
        }
    }

    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Whether this instance reaches the others (true when alone: there is
    /// nobody to reach).
    pub(crate) fn up(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.up())
    }

    /// Starts sending and receiving for `gateway`, and tells the others of
    /// every conversation whose context its store changes. Nothing to start
    /// without `[cluster]`.
    pub(crate) fn start(gateway: &Arc<Gateway>) {
        let coordination = &gateway.coordination;
        let Some(cluster) = coordination.cluster.clone() else {
            return;
        };
        let (outbox, queue) = mpsc::unbounded_channel();
        let changes = outbox.clone();
        gateway.store.on_context_change(Box::new(move |conversation_id: &str| {
            let _ = changes.send(Signal::ContextChanged {
                conversation_id: conversation_id.to_string(),
            });
        }));
        let _ = coordination.outbox.set(outbox);
        let metrics = gateway.metrics.clone();
        tokio::spawn(send(cluster.clone(), queue, metrics.clone()));
        tokio::spawn(receive(cluster.clone(), Arc::downgrade(gateway)));
        tokio::spawn(watch_up(cluster, Arc::downgrade(gateway), metrics));
    }

    /// Tells the other instances, if there are any.
    pub(crate) fn tell(&self, signal: Signal) {
        if let Some(outbox) = self.outbox.get() {
            let _ = outbox.send(signal);
        }
    }

    /// Tells the other instances now, and waits until it is sent (for a
    /// command that exits right after): up to 2 s for Redis to answer.
    pub(crate) async fn announce(&self, signal: Signal) -> Result<(), cluster::ClusterError> {
        let Some(cluster) = &self.cluster else { return Ok(()) };
        let mut up = cluster.watch_up();
        let _ = tokio::time::timeout(Duration::from_secs(2), up.wait_for(|up| *up)).await;
        let body = serde_json::to_string(&signal).map_err(|e| cluster::ClusterError::Redis(e.to_string()))?;
        cluster.publish(&body).await
    }

    /// How long to wait before another sign-in for `username` (if any) from
    /// `address`, by the failures all instances counted; `None` when the
    /// shared tallies allow it (or nobody shares them).
    pub(crate) async fn sign_in_wait(
        &self,
        throttle: &login::ThrottleConfig,
        username: Option<&str>,
        address: IpAddr,
    ) -> Option<u64> {
        let cluster = self.cluster.as_ref()?;
        let subjects = sign_in_subjects(username, address);
        let names: Vec<&str> = subjects.iter().map(|(name, _)| name.as_str()).collect();
        let counts = cluster.failures(&names).await.ok()?;
        subjects
            .iter()
            .zip(counts)
            .filter(|((_, user), (count, _))| {
                *count
                    >= u64::from(if *user {
                        throttle.max_failures_per_user
                    } else {
                        throttle.max_failures_per_address
                    })
            })
            .map(|(_, (_, left))| left.as_secs().max(1))
            .max()
    }

    /// Counts a failed sign-in for every instance to see.
    pub(crate) async fn sign_in_failed(
        &self,
        throttle: &login::ThrottleConfig,
        username: Option<&str>,
        address: IpAddr,
    ) {
        let Some(cluster) = &self.cluster else { return };
        let window = Duration::from_secs(throttle.window_secs);
        for (name, _) in sign_in_subjects(username, address) {
            if let Err(e) = cluster.count_failure(&name, window).await {
                tracing::warn!(error = %e, "a failed sign-in could not be counted in redis");
            }
        }
    }

    /// A right password forgives the user's failures on every instance.
    pub(crate) async fn sign_in_succeeded(&self, username: &str) {
        let Some(cluster) = &self.cluster else { return };
        let _ = cluster.clear_failures(&format!("signin:user:{username}")).await;
    }
}

/// The tallies a sign-in counts against: its address, and its user if it
/// names one; `true` marks the user's.
fn sign_in_subjects(username: Option<&str>, address: IpAddr) -> Vec<(String, bool)> {
    let mut subjects = vec![(format!("signin:address:{address}"), false)];
    subjects.extend(username.map(|u| (format!("signin:user:{u}"), true)));
    subjects
}

/// Sends the outbox's signals in order.
async fn send(cluster: Arc<Cluster>, mut queue: mpsc::UnboundedReceiver<Signal>, metrics: Arc<Metrics>) {
    while let Some(signal) = queue.recv().await {
        let Ok(body) = serde_json::to_string(&signal) else {
            continue;
        };
        if !cluster.up() || cluster.publish(&body).await.is_err() {
            metrics.cluster_signals_lost.inc();
        }
    }
}

/// Applies what the other instances say.
async fn receive(cluster: Arc<Cluster>, gateway: Weak<Gateway>) {
    let mut signals = cluster.signals();
    loop {
        let signal = match signals.recv().await {
            Ok(signal) => signal,
            // Too many at once: some were missed, so forget everything
            // remembered, as after an outage.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let Some(gateway) = gateway.upgrade() else { return };
                gateway.forget_shared_state();
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(gateway) = gateway.upgrade() else { return };
        match serde_json::from_str::<Signal>(&signal.body) {
            Ok(Signal::Event(event)) => {
                let _ = gateway.events.send(event);
            }
            Ok(Signal::AgentChanged { name }) => gateway.forget_agent(&name),
            Ok(Signal::ContextChanged { conversation_id }) => gateway.store.forget_context(&conversation_id),
            Err(e) => {
                tracing::warn!(from = %signal.from, error = %e, "a signal from another instance was not understood")
            }
        }
    }
}

/// Keeps `cluster_up` true to what the instance sees, and forgets what it
/// remembered whenever Redis comes back.
async fn watch_up(cluster: Arc<Cluster>, gateway: Weak<Gateway>, metrics: Arc<Metrics>) {
    let gauge = metrics
        .cluster_up
        .get_or_create(&InstanceLabel {
            instance: cluster.instance().to_string(),
        })
        .clone();
    gauge.set(0);
    let mut up = cluster.watch_up();
    loop {
        let now_up = *up.borrow_and_update();
        gauge.set(i64::from(now_up));
        if now_up {
            let Some(gateway) = gateway.upgrade() else { return };
            gateway.forget_shared_state();
        }
        if up.changed().await.is_err() {
            return;
        }
    }
}

/// A connection's system token, shared by every instance through Redis:
/// sealed (AES-256-GCM under `crypto.token_key`, bound to the connection's
/// name), never in plaintext. When Redis cannot be reached it shares
/// nothing: reads find nothing and every lease is granted, so each
/// instance fetches its own token, as if alone.
/// A connection's `[connections.limits]` bucket and its company's pause,
/// one for all instances, in Redis. Redis away: each instance decides alone.
pub(crate) struct SharedLimits {
    cluster: Arc<Cluster>,
    connection: String,
}

impl SharedLimits {
    pub(crate) fn new(cluster: Arc<Cluster>, connection: &str) -> Self {
        Self {
            cluster,
            connection: connection.to_string(),
        }
    }
}

impl LimitShare for SharedLimits {
    fn admit(&self, per_second: u32, burst: u32) -> ShareFuture<'_, Option<SharedAdmission>> {
        Box::pin(async move {
            match self.cluster.admit(&self.connection, per_second, burst).await {
                Ok(cluster::Admission::Admitted) => Some(SharedAdmission::Admitted),
                Ok(cluster::Admission::OverRate(wait)) => Some(SharedAdmission::OverRate(wait)),
                Ok(cluster::Admission::Paused { wait, status }) => Some(SharedAdmission::Paused { wait, status }),
                Err(_) => None,
            }
        })
    }

    fn pause(&self, status: u16, wait: Duration) -> ShareFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.cluster.pause(&self.connection, status, wait).await {
                tracing::warn!(error = %e, connection = %self.connection, "the other instances could not be told of a pause");
            }
        })
    }
}

pub(crate) struct SharedTokens {
    cluster: Arc<Cluster>,
    vault: Arc<Vault>,
    connection: String,
    clock: Arc<dyn Clock>,
}

impl SharedTokens {
    pub(crate) fn new(cluster: Arc<Cluster>, vault: Arc<Vault>, connection: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            cluster,
            vault,
            connection: connection.to_string(),
            clock,
        }
    }

    fn key(&self) -> String {
        format!("token:{}", self.connection)
    }

    fn context(&self) -> String {
        format!("system-token:{}", self.connection)
    }

    async fn read_sealed(&self) -> Option<SharedToken> {
        let (_, sealed) = self.cluster.get(&self.key()).await.ok()??;
        let plain = self.vault.open_sealed(&sealed, &self.context()).ok()?;
        serde_json::from_str(secrecy::ExposeSecret::expose_secret(&plain)).ok()
    }
}

impl TokenShare for SharedTokens {
    fn read(&self) -> ShareFuture<'_, Option<SharedToken>> {
        Box::pin(self.read_sealed())
    }

    fn try_lease(&self, ttl: Duration) -> ShareFuture<'_, Option<Lease>> {
        Box::pin(async move {
            match self.cluster.try_lease(&self.key(), ttl).await {
                Ok(Some(id)) => Some(Lease::new(id)),
                Ok(None) => None,
                // Nobody to share with: fetch alone.
                Err(_) => Some(Lease::new(0)),
            }
        })
    }

    fn store(&self, token: SharedToken) -> ShareFuture<'_, ()> {
        Box::pin(async move {
            let now_ms = self.clock.unix_millis() as u64;
            let ttl = Duration::from_millis(token.expires_at_ms.saturating_sub(now_ms));
            if ttl.is_zero() {
                return;
            }
            let Ok(plain) = serde_json::to_string(&token) else {
                return;
            };
            let Ok(sealed) = self.vault.seal(&plain, &self.context()) else {
                return;
            };
            if let Err(e) = self.cluster.put(&self.key(), &token.id.to_string(), &sealed, ttl).await {
                tracing::warn!(error = %e, connection = %self.connection, "the system token could not be shared");
            }
        })
    }

    fn release(&self, lease: Lease) -> ShareFuture<'_, ()> {
        Box::pin(async move {
            if lease.id != 0 {
                let _ = self.cluster.release(&self.key(), lease.id).await;
            }
        })
    }

    fn purge(&self, id: u64) -> ShareFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.cluster.remove_if(&self.key(), &id.to_string()).await;
        })
    }
}
