//! The two database engines behind [`super::Store`]: SQLite (embedded, the
//! default) and PostgreSQL (for installs that run several gateways). Both
//! take the same SQL text with `$N` placeholders (SQLite reads `$N` as the
//! N-th argument too); where their dialects differ, the caller matches on
//! [`Db`] itself.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::GatewayError;

/// A pool of one engine or the other. Matching on it costs nothing next to
/// a query, so the SQLite path does exactly what it did before Postgres.
#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds: the same
/// code, type-checked once per engine.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::engine::Db::Sqlite($pool) => $body,
            $crate::store::engine::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Which engine a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn of(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err("must start with sqlite:// or postgres://".into())
        }
    }
}

/// How to reach the store (`[store]`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// The most connections to a Postgres store; SQLite keeps at most 4
    /// (it has one writer: more connections would only wait for it).
    pub max_connections: u32,
    /// How long a request waits for a connection, and the longest a Postgres
    /// statement may run, before the store counts as unavailable.
    pub timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            timeout: Duration::from_millis(5000),
        }
    }

    /// Checks the URL without connecting: its engine, and that the driver
    /// can read it. The message never repeats the URL (it may hold a password).
    pub fn validate(&self) -> Result<Engine, String> {
        let engine = Engine::of(&self.url)?;
        let parsed = match engine {
            Engine::Sqlite => SqliteConnectOptions::from_str(&self.url).map(drop),
            Engine::Postgres => PgConnectOptions::from_str(&self.url).map(drop),
        };
        parsed.map_err(|e| format!("cannot be read: {}", redact(&e.to_string(), &self.url)))?;
        Ok(engine)
    }
}

/// The shared pool and the audit writer's own, connected; not migrated.
pub(super) async fn connect(options: &StoreOptions) -> Result<(Db, Db), GatewayError> {
    match Engine::of(&options.url).map_err(|e| GatewayError::Config(format!("store.url: {e}")))? {
        Engine::Sqlite => {
            let connect = SqliteConnectOptions::from_str(&options.url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(options.timeout);
            // No liveness ping before each use: the database is a local file,
            // and sqlx's ping is one more round trip to the connection's
            // worker thread on every query (an action's audit write included).
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 4))
                .acquire_timeout(options.timeout)
                .test_before_acquire(false)
                .connect_with(connect.clone())
                .await?;
            let audit = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.timeout)
                .test_before_acquire(false)
                .connect_with(connect)
                .await?;
            Ok((Db::Sqlite(pool), Db::Sqlite(audit)))
        }
        Engine::Postgres => {
            let connect = PgConnectOptions::from_str(&options.url)?
                .application_name("deskbridge-gateway")
                .options([("statement_timeout", options.timeout.as_millis().to_string())]);
            // A Postgres connection can die with its server or the network
            // between: the pool pings one before handing it out (sqlx's
            // default), so a store that comes back is used again at once.
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(options.timeout)
                .connect_with(connect.clone())
                .await?;
            // The audit writer's commits do not wait for Postgres to flush
            // its log to disk (they are in the server's memory when they
            // return): an answered action keeps its record through a crash
            // of the gateway, as on SQLite (`synchronous = NORMAL` in WAL
            // mode), and the last fraction of a second of records can be
            // lost only with the database server itself. Waiting for the
            // flush on every action cost 30 % of throughput (bench/README.md,
            // "Many instances"). Nor is the connection pinged before each
            // commit: a dead one fails that commit (503, retried by the
            // caller) and is replaced.
            let audit = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.timeout)
                .test_before_acquire(false)
                .connect_with(connect.options([("synchronous_commit", "off")]))
                .await?;
            Ok((Db::Postgres(pool), Db::Postgres(audit)))
        }
    }
}

/// Brings the schema up to date. On Postgres sqlx's migrator holds an
/// advisory lock (`pg_advisory_lock`, keyed by the database's name) from
/// before it reads the applied migrations until it is done, so instances
/// starting together migrate once, one after the other.
pub(super) async fn migrate(db: &Db) -> Result<(), GatewayError> {
    match db {
        Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
    }
    Ok(())
}

/// Whether an error means the store could not be reached or answer in
/// time (rather than that it refused the statement).
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Postgres: connection exceptions (08…), shut down or starting
            // (57P01-57P03), a statement cancelled by `statement_timeout`
            // (57014), the database gone (3D000), too many connections (53300).
            code.starts_with("08") || code.starts_with("57P") || matches!(&*code, "57014" | "3D000" | "53300")
        }),
        _ => false,
    }
}

/// `text` with the password of `url`, if it has one, replaced.
pub fn redact(text: &str, url: &str) -> String {
    match password_of(url) {
        Some(password) if !password.is_empty() => text.replace(password, "****"),
        _ => text.to_string(),
    }
}

/// `postgres://user:PASSWORD@host/…` → `PASSWORD` (as written, percent-encoded or not).
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1)
}

/// The URL with its password replaced, for messages.
pub fn redacted_url(url: &str) -> String {
    redact(url, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let url = "postgres://deskbridge:s3cr%2Ft@db.example:5432/deskbridge";
        assert_eq!(
            redacted_url(url),
            "postgres://deskbridge:****@db.example:5432/deskbridge"
        );
        assert_eq!(redacted_url("postgres://db.example/x"), "postgres://db.example/x");
        assert_eq!(redacted_url("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
    }

    #[test]
    fn urls_are_checked_without_connecting() {
        assert_eq!(StoreOptions::new("sqlite://x.db").validate(), Ok(Engine::Sqlite));
        assert_eq!(
            StoreOptions::new("postgres://u:p@127.0.0.1:1/db").validate(),
            Ok(Engine::Postgres)
        );
        assert!(StoreOptions::new("mysql://x").validate().is_err());
        let bad = StoreOptions::new("postgres://u:hunter2@127.0.0.1:notaport/db").validate();
        assert!(bad.as_ref().is_err_and(|e| !e.contains("hunter2")), "{bad:?}");
    }
}
