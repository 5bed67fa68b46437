//! The reference company backend ("Your APIs" in `shared/CONTRACT.md`):
//! customer login (`/customer_authenticate`, JWT or cookie), the OAuth 2.0
//! client-credentials token endpoint (`/access_token`), and customer-data
//! APIs guarded by all three credentials (`/getprofile`, an account's
//! transactions, blocking a card).

mod access_tokens;
pub mod admin;
mod calendar;
pub mod config;
mod crypto;
mod customer_auth;
mod error;
mod http;
mod keys;
mod metrics;
#[cfg(test)]
mod proptests;
mod store;
pub mod tls_clients;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;

pub use crate::config::{BackendConfig, SessionMode, SigningAlg};
pub use crate::error::BackendError;
pub use crate::store::{NewCard, NewProfile, NewTransaction};
pub use clock::{Clock, ManualClock, SystemClock};

/// The APIs this backend serves, by the names API keys grant.
pub const APIS: &[&str] = &[http::profile::API, http::accounts::API, http::cards::API];

/// The scopes of the system token each API needs, in the order of [`APIS`].
pub const SCOPES: &[&str] = &[http::profile::SCOPE, http::accounts::SCOPE, http::cards::SCOPE];

use crate::access_tokens::AccessTokens;
use crate::crypto::Secrets;
use crate::customer_auth::VerifiedTokens;
use crate::keys::Keyring;
use crate::metrics::Metrics;
use crate::store::Store;
use login::{HashQueue, LoginThrottle, PasswordHasher};

/// How often the keyring is re-read from the store, so a key rotated by the
/// admin command is picked up by a running server.
const KEYRING_RELOAD: Duration = Duration::from_secs(30);

pub(crate) struct State {
    config: BackendConfig,
    issuer: String,
    public_url: String,
    /// Origins whose pages may sign a visitor in or out ([`http::refuse_cross_site`]).
    allowed_origins: Vec<String>,
    store: Store,
    secrets: Secrets,
    keyring: RwLock<Arc<Keyring>>,
    access_tokens: AccessTokens,
    passwords: PasswordHasher,
    hash_queue: HashQueue,
    throttle: LoginThrottle,
    api_keys: http::ApiKeyCache,
    verified: VerifiedTokens,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
}

impl State {
    fn now(&self) -> u64 {
        self.clock.unix_secs()
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An opened backend: its store, keys and secrets, ready to serve or administer.
#[derive(Clone)]
pub struct Backend {
    state: Arc<State>,
}

impl Backend {
    /// Opens (creating when needed) the data dir, database, server secret and
    /// signing keys. `config.listen` should already be the bound address, so
    /// the default issuer names the real port.
    pub async fn open(config: BackendConfig, clock: Arc<dyn Clock>) -> Result<Self, BackendError> {
        config.validate()?;
        create_private_dir(&config.data_dir)?;
        // The files in it are each required to be private; a shared
        // directory only shows their names, so it is warned about.
        if let Some(problem) = crypto::shared_access(&config.data_dir)? {
            tracing::warn!("data directory {problem}");
        }
        let store = Store::open(&config.data_dir).await?;
        let secrets = Secrets::load_or_create(&config.server_secret_path())?;
        let keyring = load_keyring(&store, &config, clock.unix_secs()).await?;
        let revoked = store.revoked_access_tokens(clock.unix_secs() as i64).await?;
        let client_revocations = store.client_revocations().await?;
        let concurrency = config
            .password_hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let state = State {
            issuer: config.issuer(),
            public_url: config.public_url(),
            allowed_origins: config.allowed_origins(),
            throttle: LoginThrottle::new(config.throttle.clone()),
            passwords: PasswordHasher::new(concurrency).await?,
            hash_queue: HashQueue::new(config.password_hash_queue, config.password_hash_queue_per_address),
            access_tokens: {
                let tokens = AccessTokens::with_revoked(revoked.into_iter().map(|(j, e)| (j, e.max(0) as u64)));
                tokens.set_client_revocations(client_revocations);
                tokens
            },
            keyring: RwLock::new(Arc::new(keyring)),
            api_keys: http::ApiKeyCache::default(),
            verified: VerifiedTokens::default(),
            metrics: Metrics::new(),
            config,
            store,
            secrets,
            clock,
        };
        Ok(Self { state: Arc::new(state) })
    }

    /// The HTTP routes, for a real socket or an in-process test.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Administrative operations (users, clients, keys) on this backend's store.
    pub fn admin(&self) -> admin::Admin {
        admin::Admin::new(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    /// Background upkeep (key reload, expiry sweeps) runs while it serves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BackendError> {
        // Read first: a certificate that cannot be used stops the start.
        let (tls, reloader) = match &self.state.config.tls {
            Some(files) => {
                let tls = serving::tls::ServerTls::load(files).map_err(BackendError::Config)?;
                let reloader = tls.reload_on_sighup().map_err(BackendError::Config)?;
                (Some(tls.acceptor), Some(reloader))
            }
            None => (None, None),
        };
        let upkeep = tokio::spawn(upkeep(self.state.clone()));
        serving::serve_with(listener, self.router(), self.state.config.http, tls, shutdown).await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        upkeep.abort();
        self.state.store.close().await;
        Ok(())
    }
}

/// Periodic work of a serving backend: reload rotated keys and client
/// revocations made by the admin command, drop expired sessions and revocations.
async fn upkeep(state: Arc<State>) {
    let mut tick = tokio::time::interval(KEYRING_RELOAD);
    tick.tick().await;
    loop {
        tick.tick().await;
        match load_keyring(&state.store, &state.config, state.now()).await {
            Ok(ring) => {
                *state.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
                state.verified.clear();
            }
            Err(e) => tracing::warn!(error = %e, "could not reload signing keys"),
        }
        match state.store.client_revocations().await {
            Ok(cutoffs) => state.access_tokens.set_client_revocations(cutoffs),
            Err(e) => tracing::warn!(error = %e, "could not reload client revocations"),
        }
        if let Err(e) = state.store.delete_expired(state.now() as i64).await {
            tracing::warn!(error = %e, "could not sweep expired sessions");
        }
    }
}

/// The keyring from the store; generates the first key, or a new one when
/// the configured algorithm changed.
async fn load_keyring(store: &Store, config: &BackendConfig, now: u64) -> Result<Keyring, BackendError> {
    let file_pem = match &config.signing_key_file {
        Some(path) => {
            crypto::require_private(path)?;
            Some(std::fs::read_to_string(path).map_err(|e| BackendError::Config(format!("{}: {e}", path.display())))?)
        }
        None => None,
    };
    let mut stored = store.signing_keys().await?;
    let newest_matches = stored.last().is_some_and(|k| k.alg == config.signing_alg.name());
    if file_pem.is_none() && !newest_matches {
        let key = keys::new_stored_key(config.signing_alg)?;
        store.add_signing_key(&key, now as i64, keys::KEYS_KEPT).await?;
        stored = store.signing_keys().await?;
    }
    Keyring::build(&stored, file_pem.as_deref().map(|pem| (config.signing_alg, pem)))
}

fn create_private_dir(path: &std::path::Path) -> Result<(), BackendError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| BackendError::Io(format!("{}: {e}", path.display())))
}
