//! External references: the desk's own ids for a conversation (its chat or
//! ticket id), so a desk finds the conversation from what it already holds.
//! One ref names one conversation per connection; a conversation may have
//! many (one customer, many tickets).

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::engine::on_pool;
use super::{ConversationSummary, Store, TokenStatus};
use crate::GatewayError;

/// One ref of a conversation, as an agent sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExternalRefRow {
    pub external_ref: String,
    /// Who named it: `channel:<channel>` or `agent:<agent>`.
    pub bound_by: String,
    pub created_at: i64,
}

/// Who binds a ref, and so whether a binding made before may be moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binder {
    /// A channel: what the customer's side claims. It never moves a ref
    /// bound to another conversation: that ref would then show another
    /// customer to the agent who opens it.
    Channel,
    /// An agent or the desk's backend with an agent token: the desk's own
    /// word, so it moves a ref bound elsewhere.
    Agent,
}

impl Store {
    /// Binds `external_ref` on `connection` to `conversation_id`; false
    /// when a channel found it bound to another conversation.
    pub async fn bind_external_ref(
        &self,
        connection: &str,
        external_ref: &str,
        conversation_id: &str,
        binder: Binder,
        bound_by: &str,
        now: i64,
    ) -> Result<bool, GatewayError> {
        let sql = match binder {
            Binder::Channel => {
                "INSERT INTO external_refs (connection, external_ref, conversation_id, bound_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connection, external_ref) DO NOTHING"
            }
            Binder::Agent => {
                "INSERT INTO external_refs (connection, external_ref, conversation_id, bound_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connection, external_ref) DO UPDATE
                 SET conversation_id = excluded.conversation_id, bound_by = excluded.bound_by, created_at = excluded.created_at"
            }
        };
        on_pool!(&self.db, pool => {
            sqlx::query(sql)
                .bind(connection)
                .bind(external_ref)
                .bind(conversation_id)
                .bind(bound_by)
                .bind(now)
                .execute(pool)
                .await?;
        });
        let bound = self.external_ref_owner(connection, external_ref).await?;
        Ok(bound.as_deref() == Some(conversation_id))
    }

    /// The conversation `external_ref` names on `connection`, if any.
    pub async fn external_ref_owner(
        &self,
        connection: &str,
        external_ref: &str,
    ) -> Result<Option<String>, GatewayError> {
        Ok(on_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT conversation_id FROM external_refs WHERE connection = $1 AND external_ref = $2",
        )
        .bind(connection)
        .bind(external_ref)
        .fetch_optional(pool)
        .await?))
    }

    /// The customer's conversation on `connection`, if they have one yet.
    pub async fn customer_conversation_id(
        &self,
        connection: &str,
        customer_key: &str,
    ) -> Result<Option<String>, GatewayError> {
        Ok(on_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT id FROM conversations WHERE connection = $1 AND customer_key = $2",
        )
        .bind(connection)
        .bind(customer_key)
        .fetch_optional(pool)
        .await?))
    }

    /// The refs of a conversation, oldest first.
    pub async fn external_refs(&self, conversation_id: &str) -> Result<Vec<ExternalRefRow>, GatewayError> {
        Ok(on_pool!(&self.db, pool => sqlx::query(
            "SELECT external_ref, bound_by, created_at FROM external_refs WHERE conversation_id = $1
             ORDER BY created_at, external_ref",
        )
        .bind(conversation_id)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| ExternalRefRow {
            external_ref: r.get(0),
            bound_by: r.get(1),
            created_at: r.get(2),
        })
        .collect()))
    }

    /// The conversations `external_ref` names: on `connection`, or on any
    /// (one at most per connection), most recently active first.
    pub async fn conversations_by_ref(
        &self,
        external_ref: &str,
        connection: Option<&str>,
    ) -> Result<Vec<(ConversationSummary, Option<TokenStatus>)>, GatewayError> {
        let sql = super::listing_sql!(
            self.db,
            "WHERE c.id IN (SELECT conversation_id FROM external_refs WHERE external_ref = $1 AND ($2 IS NULL OR connection = $3))
             ORDER BY c.last_activity_at DESC, c.id DESC"
        );
        Ok(on_pool!(&self.db, pool => sqlx::query(sql)
            .bind(external_ref)
            .bind(connection)
            .bind(connection)
            .fetch_all(pool)
            .await?
            .iter()
            .map(super::listing_row)
            .collect()))
    }
}
