//! Persistence of conversations, sessions, encrypted customer tokens,
//! events, agents and the audit log: SQLite through sqlx, WAL mode.

mod contexts;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use utoipa::ToSchema;

pub use self::contexts::ActionContext;
use self::contexts::{ChangeHook, ContextCache};
use crate::GatewayError;

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    /// The audit writer's own connection: an agent's answer waits for its
    /// audit record, so that write must not queue behind channel traffic
    /// for the shared pool's connections.
    audit_pool: SqlitePool,
    /// Action contexts read recently; see [`contexts`].
    contexts: Arc<ContextCache>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationSummary {
    pub id: String,
    pub connection: String,
    pub customer_id: Option<String>,
    pub created_at: i64,
    pub last_activity_at: i64,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionRow {
    pub id: String,
    pub channel: String,
    pub authenticated: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventRow {
    pub kind: String,
    pub session_id: Option<String>,
    pub at: i64,
}

/// What is known of a customer token without opening it.
pub struct TokenStatus {
    pub expires_at: Option<i64>,
    pub rejected: bool,
}

pub struct StoredToken {
    pub ciphertext: Vec<u8>,
    pub expires_at: Option<i64>,
    pub rejected: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecord {
    pub at: i64,
    pub agent: String,
    pub conversation_id: String,
    pub connection: String,
    pub action: String,
    pub outcome: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The trace of the request: its `x-trace-id`, and the trace id of the
    /// `traceparent` the company was sent. Absent on records written before
    /// the gateway kept it.
    pub trace_id: Option<String>,
    /// The requests this record stands for: 1, or for a refusal repeated
    /// within a window (`[audit] refusal_window_secs`), how often it came.
    pub count: u32,
}

impl Store {
    pub async fn open(url: &str) -> Result<Self, GatewayError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // No liveness ping before each use: the database is a local file,
        // and sqlx's ping is one more round trip to the connection's
        // worker thread on every query (an action's audit write included).
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let audit_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            audit_pool,
            contexts: Arc::default(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.audit_pool.close().await;
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The customer's one conversation on this connection, created on first sight.
    pub async fn customer_conversation(
        &self,
        id_if_new: &str,
        connection: &str,
        customer_key: &str,
        now: i64,
    ) -> Result<String, GatewayError> {
        sqlx::query(
            "INSERT INTO conversations (id, connection, customer_key, created_at, last_activity_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(connection, customer_key) DO UPDATE SET last_activity_at = excluded.last_activity_at",
        )
        .bind(id_if_new)
        .bind(connection)
        .bind(customer_key)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id FROM conversations WHERE connection = ? AND customer_key = ?")
            .bind(connection)
            .bind(customer_key)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn anonymous_conversation(&self, id: &str, connection: &str, now: i64) -> Result<(), GatewayError> {
        sqlx::query("INSERT INTO conversations (id, connection, customer_key, created_at, last_activity_at) VALUES (?, ?, NULL, ?, ?)")
            .bind(id)
            .bind(connection)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_session(
        &self,
        id: &str,
        conversation_id: &str,
        channel: &str,
        authenticated: bool,
        now: i64,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO sessions (id, conversation_id, channel, authenticated, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(conversation_id)
        .bind(channel)
        .bind(authenticated)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// (conversation id, channel, connection, customer key) of a session.
    pub async fn session(&self, id: &str) -> Result<Option<(String, String, String, Option<String>)>, GatewayError> {
        let row = sqlx::query(
            "SELECT s.conversation_id, s.channel, c.connection, c.customer_key
             FROM sessions s JOIN conversations c ON c.id = s.conversation_id WHERE s.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
    }

    /// Moves a session (and, when it was anonymous, its whole conversation's
    /// history) into the customer's conversation.
    pub async fn join(&self, session_id: &str, from: &str, into: &str, now: i64) -> Result<(), GatewayError> {
        let joined = self.join_tx(session_id, from, into, now).await;
        if from != into {
            // An anonymous `from` is deleted, with its token.
            self.contexts.invalidate(from);
        }
        joined
    }

    async fn join_tx(&self, session_id: &str, from: &str, into: &str, now: i64) -> Result<(), GatewayError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE sessions SET authenticated = 1 WHERE id = ?")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        if from != into {
            let anonymous: Option<(Option<String>,)> =
                sqlx::query_as("SELECT customer_key FROM conversations WHERE id = ?")
                    .bind(from)
                    .fetch_optional(&mut *tx)
                    .await?;
            if matches!(anonymous, Some((None,))) {
                for statement in [
                    "UPDATE sessions SET conversation_id = ? WHERE conversation_id = ?",
                    "UPDATE events SET conversation_id = ? WHERE conversation_id = ?",
                ] {
                    sqlx::query(statement).bind(into).bind(from).execute(&mut *tx).await?;
                }
                sqlx::query("DELETE FROM customer_tokens WHERE conversation_id = ?")
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM conversations WHERE id = ?")
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE sessions SET conversation_id = ? WHERE id = ?")
                    .bind(into)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("UPDATE conversations SET last_activity_at = ? WHERE id = ?")
            .bind(now)
            .bind(into)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn put_token(
        &self,
        conversation_id: &str,
        ciphertext: &[u8],
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(), GatewayError> {
        let stored = sqlx::query(
            "INSERT INTO customer_tokens (conversation_id, ciphertext, expires_at, rejected, updated_at) VALUES (?, ?, ?, 0, ?)
             ON CONFLICT(conversation_id) DO UPDATE SET ciphertext = excluded.ciphertext,
                 expires_at = excluded.expires_at, rejected = 0, updated_at = excluded.updated_at",
        )
        .bind(conversation_id)
        .bind(ciphertext)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await;
        self.contexts.invalidate(conversation_id);
        stored?;
        Ok(())
    }

    pub async fn token(&self, conversation_id: &str) -> Result<Option<StoredToken>, GatewayError> {
        let row = sqlx::query("SELECT ciphertext, expires_at, rejected FROM customer_tokens WHERE conversation_id = ?")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| StoredToken {
            ciphertext: r.get(0),
            expires_at: r.get(1),
            rejected: r.get(2),
        }))
    }

    /// Calls `hook` with each conversation whose context this process
    /// changes, after the change is committed; set once.
    pub fn on_context_change(&self, hook: ChangeHook) {
        self.contexts.on_change(hook);
    }

    /// Forgets the remembered context of a conversation changed elsewhere.
    pub fn forget_context(&self, conversation_id: &str) {
        self.contexts.forget(conversation_id);
    }

    /// Forgets every remembered context.
    pub fn forget_all_contexts(&self) {
        self.contexts.forget_all();
    }

    /// The conversation's connection and its customer token, in one read
    /// (the hot path of an agent's action), from memory when it was read
    /// recently.
    pub async fn action_context(&self, conversation_id: &str) -> Result<Option<Arc<ActionContext>>, GatewayError> {
        if let Some(context) = self.contexts.get(conversation_id) {
            return Ok(Some(context));
        }
        let version = self.contexts.version();
        let row = sqlx::query(
            "SELECT c.connection, t.ciphertext, t.expires_at, t.rejected FROM conversations c
             LEFT JOIN customer_tokens t ON t.conversation_id = c.id WHERE c.id = ?",
        )
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await?;
        // An unknown id is not remembered: ids are random, and a flood of
        // made-up ones must not push out real conversations.
        let Some(r) = row else { return Ok(None) };
        let ciphertext: Option<Vec<u8>> = r.get(1);
        let context = Arc::new(ActionContext::new(
            r.get(0),
            ciphertext.map(|ciphertext| StoredToken {
                ciphertext,
                expires_at: r.get(2),
                rejected: r.get::<Option<bool>, _>(3).unwrap_or(false),
            }),
        ));
        self.contexts.fill(conversation_id, context.clone(), version);
        Ok(Some(context))
    }

    pub async fn mark_token_rejected(&self, conversation_id: &str) -> Result<(), GatewayError> {
        // The company refused it: useless now, so not kept either.
        let marked = sqlx::query("UPDATE customer_tokens SET rejected = 1, ciphertext = x'' WHERE conversation_id = ?")
            .bind(conversation_id)
            .execute(&self.pool)
            .await;
        self.contexts.invalidate(conversation_id);
        marked?;
        Ok(())
    }

    /// Expired tokens are useless and dangerous to keep: their ciphertext is
    /// wiped (the row stays, to show the state). Returns the conversations.
    pub async fn expire_tokens(&self, now: i64) -> Result<Vec<String>, GatewayError> {
        let rows = sqlx::query(
            "UPDATE customer_tokens SET ciphertext = x'' WHERE expires_at IS NOT NULL AND expires_at <= ?
             AND length(ciphertext) > 0 RETURNING conversation_id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let expired: Vec<String> = rows.into_iter().map(|r| r.get(0)).collect();
        for conversation in &expired {
            self.contexts.invalidate(conversation);
        }
        Ok(expired)
    }

    pub async fn add_event(
        &self,
        conversation_id: &str,
        session_id: Option<&str>,
        kind: &str,
        now: i64,
    ) -> Result<(), GatewayError> {
        sqlx::query("INSERT INTO events (conversation_id, session_id, kind, at) VALUES (?, ?, ?, ?)")
            .bind(conversation_id)
            .bind(session_id)
            .bind(kind)
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE conversations SET last_activity_at = ? WHERE id = ?")
            .bind(now)
            .bind(conversation_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Newest activity first; `before` is the cursor `last_activity_at:id` of the previous page.
    pub async fn conversations(
        &self,
        limit: i64,
        before: Option<(i64, String)>,
    ) -> Result<Vec<(ConversationSummary, Option<TokenStatus>)>, GatewayError> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        // The token's state comes in the same read: a console lists a page on every event.
        let rows = sqlx::query(
            "SELECT c.id, c.connection, c.customer_key, c.created_at, c.last_activity_at,
                    (SELECT group_concat(DISTINCT s.channel) FROM sessions s WHERE s.conversation_id = c.id),
                    t.conversation_id IS NOT NULL, t.expires_at, t.rejected
             FROM conversations c LEFT JOIN customer_tokens t ON t.conversation_id = c.id
             WHERE c.last_activity_at < ? OR (c.last_activity_at = ? AND c.id < ? AND ? != '')
             ORDER BY c.last_activity_at DESC, c.id DESC LIMIT ?",
        )
        .bind(at)
        .bind(at)
        .bind(&id)
        .bind(&id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let channels: Option<String> = r.get(5);
                let summary = ConversationSummary {
                    id: r.get(0),
                    connection: r.get(1),
                    customer_id: r.get(2),
                    created_at: r.get(3),
                    last_activity_at: r.get(4),
                    channels: channels
                        .map(|c| c.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                };
                let token = r.get::<bool, _>(6).then(|| TokenStatus {
                    expires_at: r.get(7),
                    rejected: r.get::<Option<bool>, _>(8).unwrap_or(false),
                });
                (summary, token)
            })
            .collect())
    }

    pub async fn conversation(
        &self,
        id: &str,
    ) -> Result<Option<(ConversationSummary, Vec<SessionRow>, Vec<EventRow>)>, GatewayError> {
        let Some(r) = sqlx::query(
            "SELECT id, connection, customer_key, created_at, last_activity_at FROM conversations WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let sessions: Vec<SessionRow> = sqlx::query("SELECT id, channel, authenticated, created_at FROM sessions WHERE conversation_id = ? ORDER BY created_at, id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|s| SessionRow {
                id: s.get(0),
                channel: s.get(1),
                authenticated: s.get(2),
                created_at: s.get(3),
            })
            .collect();
        let events: Vec<EventRow> =
            sqlx::query("SELECT kind, session_id, at FROM events WHERE conversation_id = ? ORDER BY id DESC LIMIT 50")
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|e| EventRow {
                    kind: e.get(0),
                    session_id: e.get(1),
                    at: e.get(2),
                })
                .collect();
        let mut channels: Vec<String> = sessions.iter().map(|s| s.channel.clone()).collect();
        channels.sort();
        channels.dedup();
        Ok(Some((
            ConversationSummary {
                id: r.get(0),
                connection: r.get(1),
                customer_id: r.get(2),
                created_at: r.get(3),
                last_activity_at: r.get(4),
                channels,
            },
            sessions,
            events,
        )))
    }

    /// Removes an agent; false if there was none by that name.
    pub async fn delete_agent(&self, name: &str) -> Result<bool, GatewayError> {
        let deleted = sqlx::query("DELETE FROM agents WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    pub async fn insert_agent(&self, name: &str, role: &str, digest: &[u8], now: i64) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO agents (name, role, token_digest, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, token_digest = excluded.token_digest",
        )
        .bind(name)
        .bind(role)
        .bind(digest)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn agent_by_digest(&self, digest: &[u8]) -> Result<Option<(String, String)>, GatewayError> {
        let row = sqlx::query("SELECT name, role FROM agents WHERE token_digest = ?")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Writes up to [`MAX_AUDIT_ROWS`] audit records with one statement:
    /// one round trip to sqlx's worker thread, atomic by itself. The rows
    /// travel as one JSON array, so the statement is the same for every
    /// batch size and stays prepared (a statement per size would be
    /// prepared anew each time: most batches are small and of varied size).
    pub async fn insert_audit(&self, records: Vec<AuditRecord>) -> Result<(), GatewayError> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = serde_json::to_string(&records).map_err(|e| GatewayError::Io(e.to_string()))?;
        sqlx::query(
            "INSERT INTO audit (at, agent, conversation_id, connection, action, outcome, status, latency_ms, trace_id, count)
             SELECT value ->> 'at', value ->> 'agent', value ->> 'conversation_id', value ->> 'connection',
                    value ->> 'action', value ->> 'outcome', value ->> 'status', value ->> 'latency_ms',
                    value ->> 'trace_id', value ->> 'count'
             FROM json_each(?) ORDER BY key",
        )
        .bind(rows)
        .execute(&self.audit_pool)
        .await?;
        Ok(())
    }

    pub async fn audit(
        &self,
        agent: Option<&str>,
        conversation: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, GatewayError> {
        let rows = sqlx::query(
            "SELECT at, agent, conversation_id, connection, action, outcome, status, latency_ms, trace_id, count FROM audit
             WHERE (? IS NULL OR agent = ?) AND (? IS NULL OR conversation_id = ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(agent)
        .bind(agent)
        .bind(conversation)
        .bind(conversation)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                at: r.get(0),
                agent: r.get(1),
                conversation_id: r.get(2),
                connection: r.get(3),
                action: r.get(4),
                outcome: r.get(5),
                status: r.get::<Option<i64>, _>(6).map(|s| s as u16),
                latency_ms: r.get::<i64, _>(7) as u64,
                trace_id: r.get(8),
                count: u32::try_from(r.get::<i64, _>(9)).unwrap_or(u32::MAX),
            })
            .collect())
    }

    /// Deletes the records written before `cutoff` (Unix seconds); returns
    /// how many. Records are in time order by rowid, so the first one to
    /// keep is found by walking only the ones to delete.
    pub async fn prune_audit(&self, cutoff: i64) -> Result<u64, GatewayError> {
        let first_kept: Option<i64> = sqlx::query_scalar("SELECT id FROM audit WHERE at >= ? ORDER BY id LIMIT 1")
            .bind(cutoff)
            .fetch_optional(&self.pool)
            .await?;
        let deleted = match first_kept {
            Some(id) => sqlx::query("DELETE FROM audit WHERE id < ?").bind(id),
            None => sqlx::query("DELETE FROM audit WHERE at < ?").bind(cutoff),
        }
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    /// The number of audit records kept.
    pub async fn audit_rows(&self) -> Result<i64, GatewayError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM audit")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// The most audit records one statement writes: a bound on the size of
/// one statement, so one commit stays short.
pub const MAX_AUDIT_ROWS: usize = 2048;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store in a new temporary directory, which lives as long as the guard.
    pub(crate) async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/gateway.db", dir.path().display()))
            .await
            .unwrap();
        (dir, store)
    }

    pub(crate) fn record(i: i64, text: &str, status: Option<u16>) -> AuditRecord {
        AuditRecord {
            at: 1_700_000_000 + i,
            agent: format!("agent {text}"),
            conversation_id: format!("cnv_{i}"),
            connection: "acme".into(),
            action: text.into(),
            outcome: "ok".into(),
            status,
            latency_ms: u64::from(u32::MAX) + i as u64,
            trace_id: (i % 3 != 0).then(|| format!("{i:032x}")),
            count: 1 + (i % 2) as u32,
        }
    }

    #[tokio::test]
    async fn audit_batches_keep_every_field_and_their_order() {
        let (_dir, store) = temp_store().await;
        // Text that SQL or the API's JSON must take care with, and a missing status.
        let awkward = [
            "plain",
            "quote \" and \\ backslash",
            "line\nbreak",
            "ünïcødé 🎧",
            "",
            "'; DROP TABLE audit; --",
        ];
        let batch: Vec<AuditRecord> = awkward
            .iter()
            .enumerate()
            .map(|(i, text)| record(i as i64, text, (i % 2 == 0).then_some(200 + i as u16)))
            .collect();
        store.insert_audit(batch.clone()).await.unwrap();
        store.insert_audit(Vec::new()).await.unwrap();
        store.insert_audit(batch[..1].to_vec()).await.unwrap();

        let read = store.audit(None, None, 100).await.unwrap();
        // Newest first: the single record, then the batch backwards.
        let expected: Vec<&AuditRecord> = batch[..1].iter().chain(batch.iter().rev()).collect();
        let written = expected.len();
        assert_eq!(read.len(), written);
        for (got, want) in read.iter().zip(expected) {
            assert_eq!(serde_json::to_value(got).unwrap(), serde_json::to_value(want).unwrap());
        }

        // The largest batch one statement takes.
        let full: Vec<AuditRecord> = (0..MAX_AUDIT_ROWS as i64).map(|i| record(i, "x", None)).collect();
        store.insert_audit(full).await.unwrap();
        let total = MAX_AUDIT_ROWS + written;
        assert_eq!(store.audit(None, None, i64::MAX).await.unwrap().len(), total);
    }
}
