//! Persistence: SQLite through sqlx, WAL mode, migrations embedded in the binary.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::BackendError;

mod activity;
pub(crate) use activity::{Claim, Position, TransactionRow};
pub use activity::{NewCard, NewTransaction};

/// How long an expired session is kept: a cookie presented that late is
/// told it has expired (the channel refreshes it), not that it is unknown.
/// The row holds only the cookie's keyed digest.
pub(crate) const EXPIRED_SESSIONS_KEPT_SECS: i64 = 24 * 3600;

#[derive(Clone)]
pub(crate) struct Store {
    pool: SqlitePool,
}

pub(crate) struct UserCredentials {
    pub user_id: i64,
    pub password_hash: String,
    pub customer_id: String,
}

pub(crate) struct ClientRecord {
    pub secret_digest: Vec<u8>,
    pub scopes: String,
    /// PEM, for a client that authenticates with `private_key_jwt`.
    pub public_key: Option<String>,
}

pub(crate) struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub private_pem: String,
}

pub struct NewProfile {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub tier: String,
    pub member_since: String,
    pub accounts: Vec<contract::Account>,
}

impl Store {
    pub(crate) async fn open(data_dir: &Path) -> Result<Self, BackendError> {
        let path = data_dir.join("backend.db");
        // Made private before SQLite creates it with the umask's mode; its
        // WAL and shared-memory files take the database's mode.
        if !path.exists() {
            crate::crypto::write_private_file(&path, b"")?;
        }
        crate::crypto::require_private(&path)?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>, BackendError> {
        let row = sqlx::query("SELECT id, password_hash, customer_id FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| UserCredentials {
            user_id: r.get(0),
            password_hash: r.get(1),
            customer_id: r.get(2),
        }))
    }

    pub(crate) async fn user_by_customer_id(&self, customer_id: &str) -> Result<Option<(i64, String)>, BackendError> {
        let row = sqlx::query("SELECT id, username FROM users WHERE customer_id = ?")
            .bind(customer_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Inserts a user; the customer id is derived from the new row id, so it
    /// is computed inside the same transaction.
    pub(crate) async fn insert_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
        customer_id: impl Fn(i64) -> String,
        profile: &NewProfile,
    ) -> Result<(i64, String), BackendError> {
        let mut tx = self.pool.begin().await?;
        // A placeholder keeps the UNIQUE column filled until the id is known.
        let placeholder = format!("pending:{username}");
        let user_id: i64 = sqlx::query(
            "INSERT INTO users (username, password_hash, customer_id, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(&placeholder)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                BackendError::Conflict(format!("user {username:?} already exists"))
            }
            other => other.into(),
        })?
        .get(0);
        let customer_id = customer_id(user_id);
        sqlx::query("UPDATE users SET customer_id = ? WHERE id = ?")
            .bind(&customer_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO profiles (user_id, name, email, phone, tier, member_since) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(user_id)
            .bind(&profile.name)
            .bind(&profile.email)
            .bind(&profile.phone)
            .bind(&profile.tier)
            .bind(&profile.member_since)
            .execute(&mut *tx)
            .await?;
        for account in &profile.accounts {
            sqlx::query("INSERT INTO accounts (id, user_id, kind, status, amount, currency) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(&account.id)
                .bind(user_id)
                .bind(&account.kind)
                .bind(&account.status)
                .bind(&account.balance.amount)
                .bind(&account.balance.currency)
                .execute(&mut *tx)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        BackendError::Conflict(format!("another user has the account id {:?}", account.id))
                    }
                    other => other.into(),
                })?;
        }
        tx.commit().await?;
        Ok((user_id, customer_id))
    }

    /// Sets a user's password and ends all its sessions (cookie and demo
    /// site), in one transaction: whoever knew the old one is signed out.
    pub(crate) async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, BackendError> {
        let mut tx = self.pool.begin().await?;
        let user_id: Option<i64> = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ? RETURNING id")
            .bind(password_hash)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        let Some(user_id) = user_id else { return Ok(false) };
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a user with its profile, accounts and sessions (cascaded).
    pub(crate) async fn delete_user(&self, username: &str) -> Result<bool, BackendError> {
        let done = sqlx::query("DELETE FROM users WHERE username = ?")
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The profile with its accounts, in one query (the hot path of `/getprofile`).
    pub(crate) async fn profile(&self, customer_id: &str) -> Result<Option<contract::Profile>, BackendError> {
        let row = sqlx::query(
            "SELECT p.name, p.email, p.phone, p.tier, p.member_since,
                    (SELECT json_group_array(json_object(
                        'id', a.id, 'type', a.kind, 'status', a.status,
                        'balance', json_object('amount', a.amount, 'currency', a.currency)))
                     FROM (SELECT * FROM accounts WHERE user_id = u.id ORDER BY id) a),
                    (SELECT json_group_array(json_object(
                        'id', c.id, 'account_id', c.account_id, 'brand', c.brand, 'last4', c.last4,
                        'status', c.status))
                     FROM (SELECT * FROM cards WHERE user_id = u.id ORDER BY id) c)
             FROM users u JOIN profiles p ON p.user_id = u.id
             WHERE u.customer_id = ?",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let accounts: String = row.get(5);
        let cards: String = row.get(6);
        let parse = |e: serde_json::Error| BackendError::Internal(e.to_string());
        Ok(Some(contract::Profile {
            customer_id: customer_id.to_string(),
            name: row.get(0),
            email: row.get(1),
            phone: row.get(2),
            tier: row.get(3),
            member_since: row.get(4),
            accounts: serde_json::from_str(&accounts).map_err(parse)?,
            cards: serde_json::from_str(&cards).map_err(parse)?,
        }))
    }

    pub(crate) async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, BackendError> {
        let row = sqlx::query("SELECT secret_digest, scopes, public_key FROM clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| ClientRecord {
            secret_digest: r.get(0),
            scopes: r.get(1),
            public_key: r.get(2),
        }))
    }

    /// Sets the public key a client signs its assertions with (`None`: it
    /// uses its secret).
    pub(crate) async fn set_client_public_key(&self, client_id: &str, pem: Option<&str>) -> Result<(), BackendError> {
        sqlx::query("UPDATE clients SET public_key = ? WHERE client_id = ?")
            .bind(pem)
            .bind(client_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remembers an assertion's `jti` until `expires_at`; false if it was
    /// already remembered (a replay). Forgets the expired ones on the way.
    pub(crate) async fn remember_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, BackendError> {
        sqlx::query("DELETE FROM client_assertions WHERE expires_at < ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(client_id)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Creates a client, or replaces its secret and scopes when it exists.
    pub(crate) async fn upsert_client(
        &self,
        client_id: &str,
        secret_digest: &[u8],
        scopes: &str,
        now: i64,
    ) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO clients (client_id, secret_digest, scopes, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(client_id) DO UPDATE SET secret_digest = excluded.secret_digest, scopes = excluded.scopes",
        )
        .bind(client_id)
        .bind(secret_digest)
        .bind(scopes)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn api_key_apis(&self, key_digest: &[u8]) -> Result<Option<String>, BackendError> {
        let row = sqlx::query("SELECT apis FROM api_keys WHERE key_digest = ?")
            .bind(key_digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn insert_api_key(
        &self,
        key_digest: &[u8],
        label: &str,
        apis: &str,
        now: i64,
    ) -> Result<(), BackendError> {
        sqlx::query("INSERT INTO api_keys (key_digest, label, apis, created_at) VALUES (?, ?, ?, ?)")
            .bind(key_digest)
            .bind(label)
            .bind(apis)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn insert_session(
        &self,
        digest: &[u8],
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), BackendError> {
        sqlx::query("INSERT INTO sessions (session_digest, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(digest)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The customer id and expiry of a session.
    pub(crate) async fn session(&self, digest: &[u8]) -> Result<Option<(String, i64)>, BackendError> {
        let row = sqlx::query(
            "SELECT u.customer_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.session_digest = ?",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub(crate) async fn delete_session(&self, digest: &[u8]) -> Result<bool, BackendError> {
        let done = sqlx::query("DELETE FROM sessions WHERE session_digest = ?")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops revocations that no longer matter, sessions that expired
    /// [`EXPIRED_SESSIONS_KEPT_SECS`] ago or longer, and idempotency keys
    /// past their day.
    pub(crate) async fn delete_expired(&self, now: i64) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now.saturating_sub(EXPIRED_SESSIONS_KEPT_SECS))
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= ?")
            .bind(now.saturating_sub(activity::IDEMPOTENCY_KEY_KEPT_SECS))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Signing keys, oldest first.
    pub(crate) async fn signing_keys(&self) -> Result<Vec<StoredKey>, BackendError> {
        let rows = sqlx::query("SELECT kid, alg, private_pem FROM signing_keys ORDER BY created_at, rowid")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredKey {
                kid: r.get(0),
                alg: r.get(1),
                private_pem: r.get(2),
            })
            .collect())
    }

    /// Adds a signing key and keeps only the `keep` newest.
    pub(crate) async fn add_signing_key(&self, key: &StoredKey, now: i64, keep: i64) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_pem, created_at) VALUES (?, ?, ?, ?)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_pem)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM signing_keys WHERE kid NOT IN
             (SELECT kid FROM signing_keys ORDER BY created_at DESC, rowid DESC LIMIT ?)",
        )
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Per client, the instant (epoch ms) before which its tokens are revoked.
    pub(crate) async fn client_revocations(&self) -> Result<std::collections::HashMap<String, u64>, BackendError> {
        let rows =
            sqlx::query("SELECT client_id, tokens_not_before_ms FROM clients WHERE tokens_not_before_ms IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1).max(0) as u64))
            .collect())
    }

    pub(crate) async fn revoke_client_tokens(&self, client_id: &str, now_ms: i64) -> Result<bool, BackendError> {
        let done = sqlx::query("UPDATE clients SET tokens_not_before_ms = ? WHERE client_id = ?")
            .bind(now_ms)
            .bind(client_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn revoked_access_tokens(&self, now: i64) -> Result<Vec<(String, i64)>, BackendError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > ?")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(crate) async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<(), BackendError> {
        sqlx::query("INSERT OR IGNORE INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?)")
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_expired_session_is_kept_a_day_before_the_sweep_drops_it() -> Result<(), BackendError> {
        let dir = tempfile::tempdir().map_err(|e| BackendError::Io(e.to_string()))?;
        let store = Store::open(dir.path()).await?;
        let profile = NewProfile {
            name: "Dana".into(),
            email: "dana@example.com".into(),
            phone: String::new(),
            tier: "basic".into(),
            member_since: "2020-01-01".into(),
            accounts: Vec::new(),
        };
        let (user, customer) = store
            .insert_user("dana", "hash", 0, |id| format!("cus_{id}"), &profile)
            .await?;
        let expired_at = 1_000;
        store.insert_session(b"digest", user, 0, expired_at).await?;

        store
            .delete_expired(expired_at + EXPIRED_SESSIONS_KEPT_SECS - 1)
            .await?;
        assert_eq!(
            store.session(b"digest").await?,
            Some((customer, expired_at)),
            "still known as expired"
        );
        store.delete_expired(expired_at + EXPIRED_SESSIONS_KEPT_SECS).await?;
        assert_eq!(store.session(b"digest").await?, None);
        Ok(())
    }
}
