//! Persistence of conversations, sessions, encrypted customer tokens,
//! events, agents, console sign-ins, the audit log and the running
//! instances: the only place with SQL. SQLite (WAL mode) by default, or
//! PostgreSQL; see [`engine`].

mod contexts;
mod copy;
pub mod engine;
mod external_refs;
mod idempotency;
mod instances;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

use std::sync::Arc;

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

pub use self::contexts::ActionContext;
use self::contexts::{ChangeHook, ContextCache};
pub use self::copy::CopyReport;
use self::engine::{Db, on_pool};
pub use self::engine::{Engine, StoreOptions, redacted_url};
pub use self::external_refs::{Binder, ExternalRefRow};
pub use self::idempotency::{Claim, IDEMPOTENCY_TTL_SECS};
pub use self::instances::{HEARTBEAT, Instance, InstanceRow, STALE_AFTER_SECS};
use crate::GatewayError;

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// The audit writer's own connection: an agent's answer waits for its
    /// audit record, so that write must not queue behind channel traffic
    /// for the shared pool's connections.
    audit_db: Db,
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
    /// Who ran it: `agent`, `bot`, or `customer` (then `agent` is the
    /// customer's session id).
    pub caller: String,
    /// The names of the input fields sent, never their values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_fields: Vec<String>,
    /// A keyed digest (HMAC-SHA256 under the gateway's token key) of the
    /// action and its input: equal inputs give equal digests, and the
    /// values cannot be read back from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// A reveal: the JSON Pointer shown unmasked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revealed: Option<String>,
    /// A reveal: the reason the agent stated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Token exchange: the actor the company's token named (`agent:NAME`,
    /// `bot:NAME`), as the company will have it in its `act` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
}

/// Who holds an agent token, and when that token expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub name: String,
    pub role: String,
    pub expires_at: i64,
}

/// One agent token as an administrator sees it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AgentTokenRow {
    pub agent: String,
    pub role: String,
    /// The first 8 hex digits of the token's SHA-256: tells two tokens of
    /// one agent apart, and says nothing of the token.
    pub id: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// True for a rotated-out token still valid for its overlap.
    pub previous: bool,
}

impl AgentTokenRow {
    fn new(agent: &str, role: &str, digest: &[u8], expires_at: i64, previous: bool) -> Self {
        Self {
            agent: agent.to_string(),
            role: role.to_string(),
            id: digest.iter().take(4).map(|b| format!("{b:02x}")).collect(),
            expires_at,
            previous,
        }
    }
}

/// The columns an audit record is read from, in [`audit_row`]'s order (a
/// macro: sqlx takes only static SQL text, which `concat!` makes).
macro_rules! audit_columns {
    () => {
        "at, agent, conversation_id, connection, action, outcome, status, latency_ms, trace_id, count, \
         caller, input_fields, input_digest, revealed, reason, act"
    };
}
pub(crate) use audit_columns;

/// An audit record from a row of [`audit_columns`] starting at column `at`.
fn audit_row<R: sqlx::Row>(r: &R, at: usize) -> AuditRecord
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    AuditRecord {
        at: r.get(at),
        agent: r.get(at + 1),
        conversation_id: r.get(at + 2),
        connection: r.get(at + 3),
        action: r.get(at + 4),
        outcome: r.get(at + 5),
        status: r.get::<Option<i64>, _>(at + 6).map(|s| s as u16),
        latency_ms: r.get::<i64, _>(at + 7) as u64,
        trace_id: r.get(at + 8),
        count: u32::try_from(r.get::<i64, _>(at + 9)).unwrap_or(u32::MAX),
        caller: r.get(at + 10),
        input_fields: r
            .get::<Option<String>, _>(at + 11)
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
        input_digest: r.get(at + 12),
        revealed: r.get(at + 13),
        reason: r.get(at + 14),
        act: r.get(at + 15),
    }
}

/// A listing of conversations with their channels and their token's state
/// in one read (a console lists a page on every event), for `$db`'s
/// dialect, ending in `$tail` (its WHERE and ORDER BY): static SQL text,
/// as sqlx takes it. Rows are read with [`listing_row`].
macro_rules! listing_sql {
    ($db:expr, $tail:literal) => {
        match $db {
            $crate::store::engine::Db::Sqlite(_) => {
                concat!($crate::store::listing_head!("group_concat(DISTINCT s.channel)"), $tail)
            }
            $crate::store::engine::Db::Postgres(_) => {
                concat!(
                    $crate::store::listing_head!("string_agg(DISTINCT s.channel, ',')"),
                    $tail
                )
            }
        }
    };
}
/// [`listing_sql`] up to its tail, with `$channels` aggregating the channels.
macro_rules! listing_head {
    ($channels:literal) => {
        concat!(
            "SELECT c.id, c.connection, c.customer_key, c.created_at, c.last_activity_at, (SELECT ",
            $channels,
            " FROM sessions s WHERE s.conversation_id = c.id),
                t.conversation_id IS NOT NULL, t.expires_at, t.rejected
             FROM conversations c LEFT JOIN customer_tokens t ON t.conversation_id = c.id "
        )
    };
}
pub(crate) use listing_head;
pub(crate) use listing_sql;

/// A conversation and its token's state from a row of [`listing_sql`].
fn listing_row<R: sqlx::Row>(r: &R) -> (ConversationSummary, Option<TokenStatus>)
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<bool>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
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
}

impl Store {
    /// Opens the store at `url` with the default pool size and timeout, and
    /// brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, GatewayError> {
        Self::connect(&StoreOptions::new(url)).await
    }

    /// Connects as `options` say and migrates.
    pub async fn connect(options: &StoreOptions) -> Result<Self, GatewayError> {
        let store = Self::connect_unmigrated(options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema (`config check --connect`).
    pub async fn connect_unmigrated(options: &StoreOptions) -> Result<Self, GatewayError> {
        let (db, audit_db) = engine::connect(options).await?;
        Ok(Self {
            db,
            audit_db,
            contexts: Arc::default(),
        })
    }

    /// Applies the migrations not applied yet, under the database's lock.
    pub async fn migrate(&self) -> Result<(), GatewayError> {
        engine::migrate(&self.db).await
    }

    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    pub async fn close(&self) {
        on_pool!(&self.db, pool => pool.close().await);
        on_pool!(&self.audit_db, pool => pool.close().await);
    }

    pub async fn ping(&self) -> bool {
        on_pool!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    /// The customer's one conversation on this connection, created on first sight.
    pub async fn customer_conversation(
        &self,
        id_if_new: &str,
        connection: &str,
        customer_key: &str,
        now: i64,
    ) -> Result<String, GatewayError> {
        on_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO conversations (id, connection, customer_key, created_at, last_activity_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT(connection, customer_key) DO UPDATE SET last_activity_at = excluded.last_activity_at",
            )
            .bind(id_if_new)
            .bind(connection)
            .bind(customer_key)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await?;
            let row = sqlx::query("SELECT id FROM conversations WHERE connection = $1 AND customer_key = $2")
                .bind(connection)
                .bind(customer_key)
                .fetch_one(pool)
                .await?;
            Ok(row.get(0))
        })
    }

    pub async fn anonymous_conversation(&self, id: &str, connection: &str, now: i64) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query("INSERT INTO conversations (id, connection, customer_key, created_at, last_activity_at) VALUES ($1, $2, NULL, $3, $4)")
            .bind(id)
            .bind(connection)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await
            .map(drop)?);
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
        on_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO sessions (id, conversation_id, channel, authenticated, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(conversation_id)
        .bind(channel)
        .bind(authenticated)
        .bind(now)
        .execute(pool)
        .await
            .map(drop)?);
        Ok(())
    }

    /// (conversation id, channel, connection, customer key) of a session.
    pub async fn session(&self, id: &str) -> Result<Option<(String, String, String, Option<String>)>, GatewayError> {
        on_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT s.conversation_id, s.channel, c.connection, c.customer_key
                 FROM sessions s JOIN conversations c ON c.id = s.conversation_id WHERE s.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
        })
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
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE sessions SET authenticated = TRUE WHERE id = $1")
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
            if from != into {
                let anonymous: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT customer_key FROM conversations WHERE id = $1")
                        .bind(from)
                        .fetch_optional(&mut *tx)
                        .await?;
                if matches!(anonymous, Some((None,))) {
                    for statement in [
                        "UPDATE sessions SET conversation_id = $1 WHERE conversation_id = $2",
                        "UPDATE events SET conversation_id = $1 WHERE conversation_id = $2",
                        // The desk's refs follow the visitor into the customer's conversation.
                        "UPDATE external_refs SET conversation_id = $1 WHERE conversation_id = $2",
                    ] {
                        sqlx::query(statement).bind(into).bind(from).execute(&mut *tx).await?;
                    }
                    sqlx::query("DELETE FROM customer_tokens WHERE conversation_id = $1")
                        .bind(from)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM conversations WHERE id = $1")
                        .bind(from)
                        .execute(&mut *tx)
                        .await?;
                } else {
                    sqlx::query("UPDATE sessions SET conversation_id = $1 WHERE id = $2")
                        .bind(into)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query("UPDATE conversations SET last_activity_at = $1 WHERE id = $2")
                .bind(now)
                .bind(into)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn put_token(
        &self,
        conversation_id: &str,
        ciphertext: &[u8],
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(), GatewayError> {
        let stored = on_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO customer_tokens (conversation_id, ciphertext, expires_at, rejected, updated_at) VALUES ($1, $2, $3, FALSE, $4)
             ON CONFLICT(conversation_id) DO UPDATE SET ciphertext = excluded.ciphertext,
                 expires_at = excluded.expires_at, rejected = FALSE, updated_at = excluded.updated_at",
        )
        .bind(conversation_id)
        .bind(ciphertext)
        .bind(expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(drop));
        self.contexts.invalidate(conversation_id);
        stored?;
        Ok(())
    }

    pub async fn token(&self, conversation_id: &str) -> Result<Option<StoredToken>, GatewayError> {
        on_pool!(&self.db, pool => {
            let row = sqlx::query("SELECT ciphertext, expires_at, rejected FROM customer_tokens WHERE conversation_id = $1")
                .bind(conversation_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| StoredToken {
                ciphertext: r.get(0),
                expires_at: r.get(1),
                rejected: r.get(2),
            }))
        })
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
        let read = on_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT c.connection, t.ciphertext, t.expires_at, t.rejected FROM conversations c
                 LEFT JOIN customer_tokens t ON t.conversation_id = c.id WHERE c.id = $1",
            )
            .bind(conversation_id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| {
                let ciphertext: Option<Vec<u8>> = r.get(1);
                ActionContext::new(
                    r.get(0),
                    ciphertext.map(|ciphertext| StoredToken {
                        ciphertext,
                        expires_at: r.get(2),
                        rejected: r.get::<Option<bool>, _>(3).unwrap_or(false),
                    }),
                )
            })
        });
        // An unknown id is not remembered: ids are random, and a flood of
        // made-up ones must not push out real conversations.
        let Some(context) = read else { return Ok(None) };
        let context = Arc::new(context);
        self.contexts.fill(conversation_id, context.clone(), version);
        Ok(Some(context))
    }

    /// Whether this call refused it: false when it was refused already (by
    /// a concurrent call, maybe on another instance), so that only one
    /// caller tells the channel.
    pub async fn mark_token_rejected(&self, conversation_id: &str) -> Result<bool, GatewayError> {
        // The company refused it: useless now, so not kept either.
        let marked = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE customer_tokens SET rejected = TRUE, ciphertext = $2 WHERE conversation_id = $1 AND NOT rejected",
        )
            .bind(conversation_id)
            .bind(&[][..] as &[u8])
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0));
        self.contexts.invalidate(conversation_id);
        Ok(marked?)
    }

    /// Expired tokens are useless and dangerous to keep: their ciphertext is
    /// wiped (the row stays, to show the state). Returns the conversations.
    pub async fn expire_tokens(&self, now: i64) -> Result<Vec<String>, GatewayError> {
        let expired: Vec<String> = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE customer_tokens SET ciphertext = $2 WHERE expires_at IS NOT NULL AND expires_at <= $1
             AND length(ciphertext) > 0 RETURNING conversation_id",
        )
        .bind(now)
        .bind(&[][..] as &[u8])
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect());
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
        on_pool!(&self.db, pool => {
            sqlx::query("INSERT INTO events (conversation_id, session_id, kind, at) VALUES ($1, $2, $3, $4)")
                .bind(conversation_id)
                .bind(session_id)
                .bind(kind)
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query("UPDATE conversations SET last_activity_at = $1 WHERE id = $2")
                .bind(now)
                .bind(conversation_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Newest activity first; `before` is the cursor `last_activity_at:id` of the previous page.
    pub async fn conversations(
        &self,
        limit: i64,
        before: Option<(i64, String)>,
    ) -> Result<Vec<(ConversationSummary, Option<TokenStatus>)>, GatewayError> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let sql = listing_sql!(
            self.db,
            "WHERE c.last_activity_at < $1 OR (c.last_activity_at = $2 AND c.id < $3 AND $4 != '')
             ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $5"
        );
        Ok(on_pool!(&self.db, pool => sqlx::query(sql)
            .bind(at)
            .bind(at)
            .bind(&id)
            .bind(&id)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(listing_row)
            .collect()))
    }

    pub async fn conversation(
        &self,
        id: &str,
    ) -> Result<Option<(ConversationSummary, Vec<SessionRow>, Vec<EventRow>)>, GatewayError> {
        on_pool!(&self.db, pool => {
            let Some(r) = sqlx::query(
                "SELECT id, connection, customer_key, created_at, last_activity_at FROM conversations WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            else {
                return Ok(None);
            };
            let sessions: Vec<SessionRow> = sqlx::query("SELECT id, channel, authenticated, created_at FROM sessions WHERE conversation_id = $1 ORDER BY created_at, id")
                .bind(id)
                .fetch_all(pool)
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
                sqlx::query("SELECT kind, session_id, at FROM events WHERE conversation_id = $1 ORDER BY id DESC LIMIT 50")
                    .bind(id)
                    .fetch_all(pool)
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
        })
    }

    /// Removes an agent; false if there was none by that name.
    pub async fn delete_agent(&self, name: &str) -> Result<bool, GatewayError> {
        let deleted = on_pool!(&self.db, pool => sqlx::query("DELETE FROM agents WHERE name = $1")
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted > 0)
    }

    /// Creates an agent, or gives it a new role and token: its previous
    /// token, and the one before, stop working at once.
    pub async fn insert_agent(
        &self,
        name: &str,
        role: &str,
        digest: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO agents (name, role, token_digest, created_at, token_expires_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, token_digest = excluded.token_digest,
                 token_expires_at = excluded.token_expires_at,
                 previous_token_digest = NULL, previous_token_expires_at = NULL",
        )
        .bind(name)
        .bind(role)
        .bind(digest)
        .bind(now)
        .bind(expires_at)
        .execute(pool)
        .await
            .map(drop)?);
        Ok(())
    }

    /// Gives an agent a new token that expires at `expires_at`; its current
    /// token stays valid until `previous_until` (never past its own expiry),
    /// and the one it replaced before stops working. False if there is no
    /// such agent.
    pub async fn rotate_agent_token(
        &self,
        name: &str,
        digest: &[u8],
        expires_at: i64,
        previous_until: i64,
    ) -> Result<bool, GatewayError> {
        let updated = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE agents SET previous_token_digest = token_digest,
                 previous_token_expires_at = CASE WHEN token_expires_at < $1 THEN token_expires_at ELSE $2 END,
                 token_digest = $3, token_expires_at = $4
             WHERE name = $5",
        )
        .bind(previous_until)
        .bind(previous_until)
        .bind(digest)
        .bind(expires_at)
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(updated > 0)
    }

    /// The agent that holds the token of this digest, current or previous,
    /// with that token's expiry (expired or not: the caller says which).
    pub async fn agent_by_digest(&self, digest: &[u8]) -> Result<Option<TokenHolder>, GatewayError> {
        on_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT name, role, CASE WHEN token_digest = $1 THEN token_expires_at ELSE previous_token_expires_at END
                 FROM agents WHERE token_digest = $2 OR previous_token_digest = $3",
            )
            .bind(digest)
            .bind(digest)
            .bind(digest)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| TokenHolder {
                name: r.get(0),
                role: r.get(1),
                expires_at: r.get::<Option<i64>, _>(2).unwrap_or(0),
            }))
        })
    }

    /// Every agent's tokens, by name: the current one even once expired
    /// (an administrator renews it), a previous one while its overlap lasts.
    pub async fn agent_tokens(&self, now: i64) -> Result<Vec<AgentTokenRow>, GatewayError> {
        type Row = (String, String, Vec<u8>, i64, Option<Vec<u8>>, Option<i64>);
        let rows: Vec<Row> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT name, role, token_digest, token_expires_at, previous_token_digest, previous_token_expires_at
             FROM agents ORDER BY name",
        )
        .fetch_all(pool)
        .await?);
        let mut tokens = Vec::with_capacity(rows.len());
        for (name, role, digest, expires_at, previous, previous_expires_at) in rows {
            tokens.push(AgentTokenRow::new(&name, &role, &digest, expires_at, false));
            if let (Some(digest), Some(expires_at)) = (previous, previous_expires_at)
                && expires_at > now
            {
                tokens.push(AgentTokenRow::new(&name, &role, &digest, expires_at, true));
            }
        }
        Ok(tokens)
    }

    /// (role, password hash) of an agent.
    pub async fn agent_password(&self, name: &str) -> Result<Option<(String, Option<String>)>, GatewayError> {
        on_pool!(&self.db, pool => {
            let row = sqlx::query("SELECT role, password_hash FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    /// Sets an agent's console password hash and ends its console sessions.
    pub async fn set_agent_password(&self, name: &str, hash: &str) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query("UPDATE agents SET password_hash = $1 WHERE name = $2")
                .bind(hash)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                return Err(GatewayError::Invalid(format!("no agent named {name:?}")));
            }
            sqlx::query("DELETE FROM console_sessions WHERE agent = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn insert_console_session(
        &self,
        digest: &[u8],
        agent: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => {
            // Sign-ins are rare: sweeping expired sessions here keeps the table small.
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query("INSERT INTO console_sessions (digest, agent, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(digest)
                .bind(agent)
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// (name, role) of the agent of a session that has not expired.
    pub async fn console_session_agent(
        &self,
        digest: &[u8],
        now: i64,
    ) -> Result<Option<(String, String)>, GatewayError> {
        on_pool!(&self.db, pool => {
            // Local agents take their role as it is now; agents of the
            // identity provider, as their claims gave it at sign-in.
            let row = sqlx::query(
                "SELECT a.name, a.role FROM console_sessions s JOIN agents a ON a.name = s.agent
                 WHERE s.digest = $1 AND s.expires_at > $2
                 UNION ALL
                 SELECT agent, role FROM console_idp_sessions WHERE digest = $1 AND expires_at > $2",
            )
            .bind(digest)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    /// Ends a console session; for a sign-in at the identity provider,
    /// gives back its sealed ID token (for the provider's logout).
    pub async fn delete_console_session(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        on_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM console_sessions WHERE digest = $1")
                .bind(digest)
                .execute(pool)
                .await?;
            let id_token = sqlx::query_scalar("DELETE FROM console_idp_sessions WHERE digest = $1 RETURNING id_token")
                .bind(digest)
                .fetch_optional(pool)
                .await?;
            Ok(id_token)
        })
    }

    /// A console session of an agent who signed in at the identity
    /// provider, with the role its claims gave and its sealed ID token.
    pub async fn insert_idp_console_session(
        &self,
        digest: &[u8],
        signed_in: &crate::oidc::SignedIn,
        sealed_id_token: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM console_idp_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO console_idp_sessions (digest, agent, role, id_token, created_at, expires_at, subject, sid)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(digest)
            .bind(&signed_in.agent.name)
            .bind(&signed_in.agent.role)
            .bind(sealed_id_token)
            .bind(now)
            .bind(expires_at)
            .bind(&signed_in.subject)
            .bind(&signed_in.sid)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends the console sessions the provider's back-channel logout names;
    /// how many there were.
    pub async fn delete_logged_out_sessions(&self, who: &crate::oidc::LoggedOut) -> Result<u64, GatewayError> {
        let (sql, value) = match who {
            crate::oidc::LoggedOut::Session(sid) => ("DELETE FROM console_idp_sessions WHERE sid = $1", sid),
            crate::oidc::LoggedOut::Subject(sub) => ("DELETE FROM console_idp_sessions WHERE subject = $1", sub),
        };
        on_pool!(&self.db, pool => Ok(sqlx::query(sql).bind(value).execute(pool).await?.rows_affected()))
    }

    /// Ends every console session of an agent (its credentials changed, or
    /// it was removed), signed in here or at the identity provider; the
    /// number of sessions ended.
    pub async fn delete_agent_sessions(&self, name: &str) -> Result<u64, GatewayError> {
        on_pool!(&self.db, pool => {
            let mut ended = 0;
            for sql in [
                "DELETE FROM console_sessions WHERE agent = $1",
                "DELETE FROM console_idp_sessions WHERE agent = $1",
            ] {
                ended += sqlx::query(sql).bind(name).execute(pool).await?.rows_affected();
            }
            Ok(ended)
        })
    }

    /// Writes up to [`MAX_AUDIT_ROWS`] audit records with one statement:
    /// one round trip to the database, atomic by itself. The rows travel
    /// as one JSON array, so the statement is the same for every batch
    /// size and stays prepared (a statement per size would be prepared
    /// anew each time: most batches are small and of varied size).
    pub async fn insert_audit(&self, records: Vec<AuditRecord>) -> Result<(), GatewayError> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = serde_json::to_string(&records).map_err(|e| GatewayError::Io(e.to_string()))?;
        let sql = audit_insert_sql(&self.audit_db);
        on_pool!(&self.audit_db, pool => sqlx::query(sql).bind(rows).execute(pool).await.map(drop)?);
        Ok(())
    }

    pub async fn audit(
        &self,
        agent: Option<&str>,
        conversation: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, GatewayError> {
        const SQL: &str = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit WHERE ($1 IS NULL OR agent = $2) AND ($3 IS NULL OR conversation_id = $4) ORDER BY id DESC LIMIT $5"
        );
        Ok(on_pool!(&self.db, pool => sqlx::query(SQL)
        .bind(agent)
        .bind(agent)
        .bind(conversation)
        .bind(conversation)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| audit_row(r, 0))
        .collect()))
    }

    /// Deletes the records written before `cutoff` (Unix seconds); returns
    /// how many. Records are in time order by id, so the first one to
    /// keep is found by walking only the ones to delete.
    pub async fn prune_audit(&self, cutoff: i64) -> Result<u64, GatewayError> {
        on_pool!(&self.db, pool => {
            let first_kept: Option<i64> = sqlx::query_scalar("SELECT id FROM audit WHERE at >= $1 ORDER BY id LIMIT 1")
                .bind(cutoff)
                .fetch_optional(pool)
                .await?;
            let deleted = match first_kept {
                Some(id) => sqlx::query("DELETE FROM audit WHERE id < $1").bind(id),
                None => sqlx::query("DELETE FROM audit WHERE at < $1").bind(cutoff),
            }
            .execute(pool)
            .await?;
            Ok(deleted.rows_affected())
        })
    }

    /// The number of audit records kept.
    pub async fn audit_rows(&self) -> Result<i64, GatewayError> {
        Ok(
            on_pool!(&self.db, pool => sqlx::query_scalar("SELECT count(*) FROM audit")
            .fetch_one(pool)
            .await?),
        )
    }

    /// How many migrations the store records as applied (each once).
    #[cfg(any(test, feature = "test-support"))]
    pub async fn applied_migrations(&self) -> Result<i64, GatewayError> {
        Ok(
            on_pool!(&self.db, pool => sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await?),
        )
    }

    /// Drops a table, for tests that need the store to fail on purpose.
    #[cfg(any(test, feature = "test-support"))]
    pub async fn drop_table(&self, table: &str) -> Result<(), GatewayError> {
        let sql = match table {
            "audit" => "DROP TABLE audit",
            "events" => "DROP TABLE events",
            _ => return Err(GatewayError::Invalid(format!("no table {table:?} to drop"))),
        };
        on_pool!(&self.db, pool => sqlx::query(sql).execute(pool).await
            .map(drop)?);
        Ok(())
    }
}

/// The migrations a Postgres store has once it is up to date, for tests.
#[cfg(any(test, feature = "test-support"))]
pub fn postgres_migrations() -> i64 {
    sqlx::migrate!("./migrations/postgres").iter().count() as i64
}

/// The most audit records one statement writes: a bound on the size of
/// one statement, so one commit stays short.
pub const MAX_AUDIT_ROWS: usize = 2048;

/// `INSERT INTO audit …` of the records in `$1`, a JSON array (as
/// [`AuditRecord`] serializes), in their order.
fn audit_insert_sql(db: &Db) -> &'static str {
    match db {
        Db::Sqlite(_) => {
            "INSERT INTO audit (at, agent, conversation_id, connection, action, outcome, status, latency_ms, trace_id, count,
                                caller, input_fields, input_digest, revealed, reason, act)
             SELECT value ->> 'at', value ->> 'agent', value ->> 'conversation_id', value ->> 'connection',
                    value ->> 'action', value ->> 'outcome', value ->> 'status', value ->> 'latency_ms',
                    value ->> 'trace_id', value ->> 'count', value ->> 'caller', value -> 'input_fields',
                    value ->> 'input_digest', value ->> 'revealed', value ->> 'reason', value ->> 'act'
             FROM json_each($1) ORDER BY key"
        }
        Db::Postgres(_) => {
            "INSERT INTO audit (at, agent, conversation_id, connection, action, outcome, status, latency_ms, trace_id, count,
                                caller, input_fields, input_digest, revealed, reason, act)
             SELECT (r ->> 'at')::bigint, r ->> 'agent', r ->> 'conversation_id', r ->> 'connection',
                    r ->> 'action', r ->> 'outcome', (r ->> 'status')::bigint, (r ->> 'latency_ms')::bigint,
                    r ->> 'trace_id', (r ->> 'count')::bigint, r ->> 'caller', (r -> 'input_fields')::text,
                    r ->> 'input_digest', r ->> 'revealed', r ->> 'reason', r ->> 'act'
             FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS rows(r, n) ORDER BY n"
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::test_support::TestDatabase;

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
            caller: ["agent", "bot", "customer"][(i % 3) as usize].into(),
            input_fields: match i % 2 {
                0 => vec!["account_id".into(), format!("f {text}")],
                _ => Vec::new(),
            },
            input_digest: (i % 2 == 0).then(|| format!("{i:064x}")),
            revealed: (i % 4 == 1).then(|| format!("/accounts/{i}/id")),
            reason: (i % 4 == 1).then(|| format!("reason {text}")),
            act: (i % 5 == 2).then(|| format!("agent:{text}")),
        }
    }

    /// One store per engine, each in a database of its own: SQLite in a
    /// temporary directory, Postgres in a new database dropped afterwards.
    pub(crate) async fn each_engine() -> Vec<(TestDatabase, Store)> {
        let mut stores = Vec::new();
        for db in [
            TestDatabase::sqlite().unwrap(),
            TestDatabase::postgres()
                .await
                .expect("Postgres for tests (DESKBRIDGE_TEST_POSTGRES)"),
        ] {
            let store = Store::open(&db.url).await.unwrap();
            stores.push((db, store));
        }
        stores
    }

    #[tokio::test]
    async fn audit_batches_keep_every_field_and_their_order() {
        for (db, store) in each_engine().await {
            audit_batches_on(store).await;
            drop(db);
        }
    }

    async fn audit_batches_on(store: Store) {
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

    /// Every kind of row, written and read back the same on each engine.
    async fn fill(store: &Store) -> String {
        let cnv = store
            .customer_conversation("cnv_a", "acme", "cust-1", 100)
            .await
            .unwrap();
        assert_eq!(cnv, "cnv_a");
        // The same customer again: the same conversation.
        assert_eq!(
            store
                .customer_conversation("cnv_b", "acme", "cust-1", 101)
                .await
                .unwrap(),
            "cnv_a"
        );
        store.anonymous_conversation("cnv_anon", "acme", 102).await.unwrap();
        store
            .insert_session("ses_1", "cnv_anon", "web", false, 102)
            .await
            .unwrap();
        store
            .add_event("cnv_anon", Some("ses_1"), "session_opened", 103)
            .await
            .unwrap();
        // Refs of both: the visitor's follow them into the customer's conversation.
        for (r, conversation, binder, at) in [
            ("ZD-1", "cnv_a", Binder::Agent, 102),
            ("chat/7", "cnv_anon", Binder::Channel, 103),
        ] {
            assert!(
                store
                    .bind_external_ref("acme", r, conversation, binder, "channel:web", at)
                    .await
                    .unwrap()
            );
        }
        // A channel cannot move a ref bound elsewhere; an agent can.
        assert!(
            !store
                .bind_external_ref("acme", "ZD-1", "cnv_anon", Binder::Channel, "channel:web", 103)
                .await
                .unwrap()
        );
        store.join("ses_1", "cnv_anon", "cnv_a", 104).await.unwrap();
        store.put_token("cnv_a", b"sealed", Some(10_000), 105).await.unwrap();
        store
            .insert_agent("ann", "admin", b"digest-ann", 106, 9_000)
            .await
            .unwrap();
        store.set_agent_password("ann", "$argon2id$hash").await.unwrap();
        store
            .insert_console_session(b"cookie", "ann", 107, 5_000)
            .await
            .unwrap();
        store
            .insert_idp_console_session(b"idp-cookie", &olga(), b"sealed-id", 107, 5_000)
            .await
            .unwrap();
        store
            .insert_audit(vec![record(1, "first", Some(200)), record(2, "second", None)])
            .await
            .unwrap();
        cnv
    }

    /// An agent signed in at the identity provider, in its session `sid-1`.
    fn olga() -> crate::oidc::SignedIn {
        crate::oidc::SignedIn {
            agent: crate::oidc::IdpAgent {
                name: "olga".into(),
                role: "supervisor".into(),
            },
            id_token: secrecy::SecretString::from("eyJ.id.token"),
            subject: "u-olga".into(),
            sid: Some("sid-1".into()),
        }
    }

    async fn read_back(store: &Store, cnv: &str) {
        let (summary, sessions, events) = store.conversation(cnv).await.unwrap().unwrap();
        assert_eq!(
            (summary.customer_id.as_deref(), summary.channels.clone()),
            (Some("cust-1"), vec!["web".to_string()])
        );
        assert_eq!(sessions.len(), 1);
        assert!(sessions[0].authenticated);
        assert_eq!(events[0].kind, "session_opened");
        // The anonymous conversation went into the customer's, with its ref.
        assert!(store.conversation("cnv_anon").await.unwrap().is_none());
        let refs: Vec<String> = store
            .external_refs(cnv)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.external_ref)
            .collect();
        assert_eq!(refs, ["ZD-1", "chat/7"]);
        let found = store.conversations_by_ref("chat/7", Some("acme")).await.unwrap();
        assert_eq!(found.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(), [cnv]);
        assert_eq!(found[0].0.channels, vec!["web".to_string()]);
        assert_eq!(store.conversations_by_ref("chat/7", None).await.unwrap().len(), 1);
        assert!(
            store
                .conversations_by_ref("chat/7", Some("other"))
                .await
                .unwrap()
                .is_empty()
        );
        let listed = store.conversations(10, None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0.channels, vec!["web".to_string()]);
        assert!(
            listed[0]
                .1
                .as_ref()
                .is_some_and(|t| t.expires_at == Some(10_000) && !t.rejected)
        );
        let context = store.action_context(cnv).await.unwrap().unwrap();
        assert_eq!(context.connection, "acme");
        assert_eq!(context.token.as_ref().unwrap().ciphertext, b"sealed");
        assert_eq!(
            store.agent_by_digest(b"digest-ann").await.unwrap(),
            Some(TokenHolder {
                name: "ann".into(),
                role: "admin".into(),
                expires_at: 9_000
            })
        );
        assert_eq!(
            store.agent_password("ann").await.unwrap(),
            Some(("admin".into(), Some("$argon2id$hash".into())))
        );
        assert_eq!(
            store.console_session_agent(b"cookie", 200).await.unwrap(),
            Some(("ann".into(), "admin".into()))
        );
        assert_eq!(
            store.console_session_agent(b"idp-cookie", 200).await.unwrap(),
            Some(("olga".into(), "supervisor".into()))
        );
        assert_eq!(store.console_session_agent(b"idp-cookie", 5_000).await.unwrap(), None);
        let audit = store.audit(Some("agent second"), None, 10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(store.audit(None, None, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn every_table_reads_back_what_was_written_on_both_engines() {
        for (_db, store) in each_engine().await {
            let cnv = fill(&store).await;
            read_back(&store, &cnv).await;
            // Tokens: refused, then expired; the sweep reports each once.
            store.mark_token_rejected(&cnv).await.unwrap();
            assert!(store.token(&cnv).await.unwrap().unwrap().rejected);
            store.put_token(&cnv, b"again", Some(500), 300).await.unwrap();
            assert_eq!(store.expire_tokens(600).await.unwrap(), vec![cnv.clone()]);
            assert!(store.expire_tokens(600).await.unwrap().is_empty());
            assert!(store.token(&cnv).await.unwrap().unwrap().ciphertext.is_empty());
            store.delete_agent_sessions("ann").await.unwrap();
            assert_eq!(store.console_session_agent(b"cookie", 200).await.unwrap(), None);
            // A sign-in at the provider ends at logout (giving back its
            // sealed ID token), by its provider session, or by its subject.
            use crate::oidc::LoggedOut;
            assert_eq!(
                store.delete_console_session(b"idp-cookie").await.unwrap(),
                Some(b"sealed-id".to_vec())
            );
            assert_eq!(store.console_session_agent(b"idp-cookie", 200).await.unwrap(), None);
            let olga = olga();
            let sign_in = || store.insert_idp_console_session(b"idp-cookie", &olga, b"sealed-id", 300, 5_000);
            sign_in().await.unwrap();
            let sid_2 = LoggedOut::Session("sid-2".into());
            assert_eq!(store.delete_logged_out_sessions(&sid_2).await.unwrap(), 0);
            let sid_1 = LoggedOut::Session("sid-1".into());
            assert_eq!(store.delete_logged_out_sessions(&sid_1).await.unwrap(), 1);
            sign_in().await.unwrap();
            let subject = LoggedOut::Subject("u-olga".into());
            assert_eq!(store.delete_logged_out_sessions(&subject).await.unwrap(), 1);
            assert_eq!(store.console_session_agent(b"idp-cookie", 400).await.unwrap(), None);
            // A rotation: the old token lives on for the overlap, never past
            // its own expiry; a second rotation ends the first token at once.
            assert!(
                store
                    .rotate_agent_token("ann", b"digest-ann-2", 20_000, 1_000)
                    .await
                    .unwrap()
            );
            async fn expiry(store: &Store, digest: &[u8]) -> Option<i64> {
                store.agent_by_digest(digest).await.unwrap().map(|h| h.expires_at)
            }
            assert_eq!(expiry(&store, b"digest-ann").await, Some(1_000));
            assert_eq!(expiry(&store, b"digest-ann-2").await, Some(20_000));
            assert!(
                store
                    .rotate_agent_token("ann", b"digest-ann-3", 30_000, 99_000)
                    .await
                    .unwrap()
            );
            assert_eq!(expiry(&store, b"digest-ann").await, None);
            assert_eq!(expiry(&store, b"digest-ann-2").await, Some(20_000));
            let listed = store.agent_tokens(500).await.unwrap();
            assert_eq!(
                listed.iter().map(|t| (t.expires_at, t.previous)).collect::<Vec<_>>(),
                vec![(30_000, false), (20_000, true)]
            );
            assert_eq!(store.agent_tokens(25_000).await.unwrap().len(), 1);
            assert!(!store.rotate_agent_token("nobody", b"d", 1, 1).await.unwrap());
            assert_eq!(store.prune_audit(1_700_000_002).await.unwrap(), 1);
            assert_eq!(store.audit_rows().await.unwrap(), 1);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_store_copies_whole_into_an_empty_one_across_engines() {
        let mut stores = each_engine().await;
        let (_pg_db, postgres) = stores.pop().unwrap();
        let (_sqlite_db, sqlite) = stores.pop().unwrap();
        let cnv = fill(&sqlite).await;
        let report = sqlite.copy_into(&postgres).await.unwrap();
        assert_eq!(
            report,
            CopyReport {
                conversations: 1,
                sessions: 1,
                customer_tokens: 1,
                events: 1,
                agents: 1,
                console_sessions: 2,
                external_refs: 2,
                audit: 2,
            }
        );
        read_back(&postgres, &cnv).await;
        // Not into a store that holds something: nothing is doubled.
        assert!(sqlite.copy_into(&postgres).await.is_err());
        // And back again, into a new SQLite store.
        let back_db = TestDatabase::sqlite().unwrap();
        let back = Store::open(&back_db.url).await.unwrap();
        postgres.copy_into(&back).await.unwrap();
        read_back(&back, &cnv).await;
    }

    #[tokio::test]
    async fn a_second_live_instance_is_seen_and_a_stale_one_is_not() {
        for (_db, store) in each_engine().await {
            let me = Instance::this_process();
            store.register_instance(&me, 1000).await.unwrap();
            assert!(store.other_live_instances(&me, 1000).await.unwrap().is_empty());
            // Another host's instance, beating.
            let other = Instance {
                id: "elsewhere-1".into(),
                host: "elsewhere".into(),
                pid: 1,
            };
            store.register_instance(&other, 1001).await.unwrap();
            let live = store.other_live_instances(&me, 1002).await.unwrap();
            assert_eq!(live.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["elsewhere-1"]);
            // Three beats missed: gone.
            assert!(
                store
                    .other_live_instances(&me, 1001 + STALE_AFTER_SECS + 1)
                    .await
                    .unwrap()
                    .is_empty()
            );
            // A process of this host that has ended counts as gone at once.
            let ended = Instance {
                id: format!("{}-{}", me.host, u32::MAX),
                host: me.host.clone(),
                pid: u32::MAX,
            };
            store.register_instance(&ended, 1002).await.unwrap();
            let live = store.other_live_instances(&me, 1003).await.unwrap();
            assert_eq!(live.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["elsewhere-1"]);
            store.deregister_instance(&other).await.unwrap();
            assert!(store.other_live_instances(&me, 1003).await.unwrap().is_empty());
        }
    }

    /// Instances starting together migrate once: sqlx's Postgres migrator
    /// holds an advisory lock, so the others wait and find nothing to do.
    #[tokio::test]
    async fn concurrent_starts_migrate_once() {
        let db = TestDatabase::postgres().await.unwrap();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move { Store::open(&url).await.map(|s| s.engine()) })
            })
            .collect();
        for start in starts {
            assert_eq!(start.await.unwrap().unwrap(), Engine::Postgres);
        }
        let store = Store::open(&db.url).await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap(), postgres_migrations());
    }
}
