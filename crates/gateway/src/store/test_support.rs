//! Databases for tests (the `test-support` feature): a SQLite file in a
//! temporary directory, or a fresh Postgres database `deskbridge_t_<random>`
//! on the server `DESKBRIDGE_TEST_POSTGRES` names (default: the local one),
//! dropped when the guard goes.

use sqlx::Connection;

use super::Engine;

/// Where the tests' Postgres databases are created.
pub fn postgres_admin_url() -> String {
    std::env::var("DESKBRIDGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of its own for one test; dropped with the guard.
pub struct TestDatabase {
    pub url: String,
    pub engine: Engine,
    dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(Self {
            url: format!("sqlite://{}/gateway.db", dir.path().display()),
            engine: Engine::Sqlite,
            dir: Some(dir),
            postgres: None,
        })
    }

    /// A new, empty database on the test server.
    pub async fn postgres() -> Result<Self, sqlx::Error> {
        let admin = postgres_admin_url();
        let name = format!("deskbridge_t_{:016x}", fastrand::u64(..));
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Self {
            url: with_database(&admin, &name),
            engine: Engine::Postgres,
            dir: None,
            postgres: Some((admin, name)),
        })
    }

    /// The SQLite file's directory (a data dir for a gateway), if SQLite.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async; a thread of its own with its own runtime
        // drops the database (ending the test's connections to it).
        let dropping = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropping.join();
    }
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}
