//! `deskbridge store copy`: everything one store holds, into another that
//! is empty (an embedded SQLite install moving to Postgres, say). Customer
//! tokens move sealed, as they are: the gateway on the new store needs the
//! same token key to open them.

use serde::Serialize;
use sqlx::Row;

use super::engine::on_pool;
use super::{AuditRecord, MAX_AUDIT_ROWS, Store, audit_columns, audit_insert_sql, audit_row};
use crate::GatewayError;

/// How many rows of each table were copied.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub conversations: u64,
    pub sessions: u64,
    pub customer_tokens: u64,
    pub events: u64,
    pub agents: u64,
    pub console_sessions: u64,
    pub external_refs: u64,
    pub audit: u64,
}

type Conversation = (String, String, Option<String>, i64, i64);
type Session = (String, String, String, bool, i64);
type Token = (String, Vec<u8>, Option<i64>, bool, i64);
type Event = (String, Option<String>, String, i64);
type Agent = (
    String,
    String,
    Vec<u8>,
    i64,
    Option<String>,
    i64,
    Option<Vec<u8>>,
    Option<i64>,
);
type ConsoleSession = (Vec<u8>, String, i64, i64);
type IdpSession = (Vec<u8>, String, String, Vec<u8>, i64, i64, String, Option<String>);
type ExternalRef = (String, String, String, String, i64);

/// Audit records are read and written this many at a time.
const AUDIT_PAGE: i64 = MAX_AUDIT_ROWS as i64;

impl Store {
    /// Copies every conversation, session, customer token (sealed), event,
    /// agent, console sign-in (local or at the identity provider), external ref and audit record into `to`, which must hold
    /// none yet. The audit log and events keep their order. All or nothing:
    /// one transaction on `to`. Instances are not copied: they register
    /// when they start.
    pub async fn copy_into(&self, to: &Store) -> Result<CopyReport, GatewayError> {
        if !to.is_empty().await? {
            return Err(GatewayError::Invalid(
                "the target store already holds conversations, agents or audit records; copy only into a new one"
                    .into(),
            ));
        }
        let conversations: Vec<Conversation> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT id, connection, customer_key, created_at, last_activity_at FROM conversations ORDER BY id",
        )
        .fetch_all(pool)
        .await?);
        let sessions: Vec<Session> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT id, conversation_id, channel, authenticated, created_at FROM sessions ORDER BY id",
        )
        .fetch_all(pool)
        .await?);
        let tokens: Vec<Token> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT conversation_id, ciphertext, expires_at, rejected, updated_at FROM customer_tokens ORDER BY conversation_id",
        )
        .fetch_all(pool)
        .await?);
        let events: Vec<Event> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT conversation_id, session_id, kind, at FROM events ORDER BY id",
        )
        .fetch_all(pool)
        .await?);
        let agents: Vec<Agent> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT name, role, token_digest, created_at, password_hash, token_expires_at, previous_token_digest, \
             previous_token_expires_at FROM agents ORDER BY name",
        )
        .fetch_all(pool)
        .await?);
        let console_sessions: Vec<ConsoleSession> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT digest, agent, created_at, expires_at FROM console_sessions ORDER BY digest",
        )
        .fetch_all(pool)
        .await?);
        // Sign-ins at the identity provider count as console sign-ins.
        let idp_sessions: Vec<IdpSession> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT digest, agent, role, id_token, created_at, expires_at, subject, sid FROM console_idp_sessions ORDER BY digest",
        )
        .fetch_all(pool)
        .await?);
        let external_refs: Vec<ExternalRef> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT connection, external_ref, conversation_id, bound_by, created_at FROM external_refs
             ORDER BY connection, external_ref",
        )
        .fetch_all(pool)
        .await?);
        let mut report = CopyReport {
            conversations: conversations.len() as u64,
            sessions: sessions.len() as u64,
            customer_tokens: tokens.len() as u64,
            events: events.len() as u64,
            agents: agents.len() as u64,
            console_sessions: (console_sessions.len() + idp_sessions.len()) as u64,
            external_refs: external_refs.len() as u64,
            audit: 0,
        };
        on_pool!(&to.db, pool => {
            let mut tx = pool.begin().await?;
            for c in conversations {
                sqlx::query("INSERT INTO conversations (id, connection, customer_key, created_at, last_activity_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(c.0).bind(c.1).bind(c.2).bind(c.3).bind(c.4)
                    .execute(&mut *tx)
                    .await?;
            }
            for s in sessions {
                sqlx::query("INSERT INTO sessions (id, conversation_id, channel, authenticated, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(s.0).bind(s.1).bind(s.2).bind(s.3).bind(s.4)
                    .execute(&mut *tx)
                    .await?;
            }
            for t in tokens {
                sqlx::query("INSERT INTO customer_tokens (conversation_id, ciphertext, expires_at, rejected, updated_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(t.0).bind(t.1).bind(t.2).bind(t.3).bind(t.4)
                    .execute(&mut *tx)
                    .await?;
            }
            for e in events {
                sqlx::query("INSERT INTO events (conversation_id, session_id, kind, at) VALUES ($1, $2, $3, $4)")
                    .bind(e.0).bind(e.1).bind(e.2).bind(e.3)
                    .execute(&mut *tx)
                    .await?;
            }
            for a in agents {
                sqlx::query("INSERT INTO agents (name, role, token_digest, created_at, password_hash, token_expires_at, \
                             previous_token_digest, previous_token_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(a.0).bind(a.1).bind(a.2).bind(a.3).bind(a.4).bind(a.5).bind(a.6).bind(a.7)
                    .execute(&mut *tx)
                    .await?;
            }
            for s in console_sessions {
                sqlx::query("INSERT INTO console_sessions (digest, agent, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(s.0).bind(s.1).bind(s.2).bind(s.3)
                    .execute(&mut *tx)
                    .await?;
            }
            for s in idp_sessions {
                sqlx::query("INSERT INTO console_idp_sessions (digest, agent, role, id_token, created_at, expires_at, \
                             subject, sid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(s.0).bind(s.1).bind(s.2).bind(s.3).bind(s.4).bind(s.5).bind(s.6).bind(s.7)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in external_refs {
                sqlx::query("INSERT INTO external_refs (connection, external_ref, conversation_id, bound_by, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(r.0).bind(r.1).bind(r.2).bind(r.3).bind(r.4)
                    .execute(&mut *tx)
                    .await?;
            }
            // The audit log can be long: page by page, oldest first, so the
            // new ids keep the old order.
            let mut after = i64::MIN;
            loop {
                let (last, page) = self.audit_page(after).await?;
                let Some(last) = last else { break };
                after = last;
                report.audit += page.len() as u64;
                let rows = serde_json::to_string(&page).map_err(|e| GatewayError::Io(e.to_string()))?;
                sqlx::query(audit_insert_sql(&to.db)).bind(rows).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(report)
    }

    /// Whether the store holds no conversation, agent or audit record.
    async fn is_empty(&self) -> Result<bool, GatewayError> {
        let held: i64 = on_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM conversations) + (SELECT count(*) FROM agents) + (SELECT count(*) FROM audit)",
        )
        .fetch_one(pool)
        .await?);
        Ok(held == 0)
    }

    /// Up to [`AUDIT_PAGE`] audit records after id `after`, oldest first,
    /// and the id of the last one.
    async fn audit_page(&self, after: i64) -> Result<(Option<i64>, Vec<AuditRecord>), GatewayError> {
        on_pool!(&self.db, pool => {
            const SQL: &str = concat!("SELECT id, ", audit_columns!(), " FROM audit WHERE id > $1 ORDER BY id LIMIT $2");
            let rows = sqlx::query(SQL).bind(after).bind(AUDIT_PAGE).fetch_all(pool).await?;
            let last = rows.last().map(|r| r.get::<i64, _>(0));
            let page = rows.iter().map(|r| audit_row(r, 1)).collect();
            Ok((last, page))
        })
    }
}
