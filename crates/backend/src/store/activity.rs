//! Cards, account transactions and the answers of writes kept by
//! idempotency key. Every lookup is by the customer, so one customer's ids
//! never reach another's data.

use sqlx::Row;

use super::Store;
use crate::BackendError;

/// How long an idempotency key and its answer are kept (seconds).
pub(crate) const IDEMPOTENCY_KEY_KEPT_SECS: i64 = 24 * 3600;

pub(crate) struct CardRow {
    pub id: String,
    pub last4: String,
    pub status: String,
    pub block_reason: Option<String>,
    pub blocked_at: Option<i64>,
}

pub(crate) struct TransactionRow {
    pub id: String,
    pub booked_at: i64,
    pub amount: String,
    pub currency: String,
    pub description: String,
    pub status: String,
    pub counterparty_iban: Option<String>,
}

/// Where a page starts: after this (booked_at, id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub booked_at: i64,
    pub id: String,
}

/// A card to create (demo data).
pub struct NewCard {
    pub id: String,
    pub account_id: String,
    pub brand: String,
    pub last4: String,
}

/// A transaction to create (demo data).
pub struct NewTransaction {
    pub id: String,
    pub account_id: String,
    pub booked_at: i64,
    pub amount: String,
    pub currency: String,
    pub description: String,
    pub status: String,
    pub counterparty_iban: Option<String>,
}

/// What an idempotency key already stands for.
pub(crate) enum Claim {
    /// The key is new: it is now this request's, and the write may run.
    New,
    /// The key was used before, for `request`; `answer` once that write is done.
    Seen {
        request: String,
        answer: Option<(u16, String)>,
    },
}

impl Store {
    /// Whether the customer has this account.
    pub(crate) async fn customer_has_account(&self, customer_id: &str, account_id: &str) -> Result<bool, BackendError> {
        let row = sqlx::query(
            "SELECT 1 FROM accounts a JOIN users u ON u.id = a.user_id WHERE u.customer_id = ? AND a.id = ?",
        )
        .bind(customer_id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Up to `limit` transactions of the account, newest first, after `after`.
    pub(crate) async fn transactions(
        &self,
        account_id: &str,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<TransactionRow>, BackendError> {
        // Without a cursor, the page starts after a position later than any booking.
        let (booked_at, id) = match after {
            Some(p) => (p.booked_at, p.id.as_str()),
            None => (i64::MAX, ""),
        };
        let rows = sqlx::query(
            "SELECT id, booked_at, amount, currency, description, status, counterparty_iban
             FROM transactions
             WHERE account_id = ? AND (booked_at < ? OR (booked_at = ? AND id < ?))
             ORDER BY booked_at DESC, id DESC LIMIT ?",
        )
        .bind(account_id)
        .bind(booked_at)
        .bind(booked_at)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TransactionRow {
                id: r.get(0),
                booked_at: r.get(1),
                amount: r.get(2),
                currency: r.get(3),
                description: r.get(4),
                status: r.get(5),
                counterparty_iban: r.get(6),
            })
            .collect())
    }

    /// The customer's card with this id.
    pub(crate) async fn customer_card(
        &self,
        customer_id: &str,
        card_id: &str,
    ) -> Result<Option<CardRow>, BackendError> {
        let row = sqlx::query(
            "SELECT c.id, c.last4, c.status, c.block_reason, c.blocked_at
             FROM cards c JOIN users u ON u.id = c.user_id WHERE u.customer_id = ? AND c.id = ?",
        )
        .bind(customer_id)
        .bind(card_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CardRow {
            id: r.get(0),
            last4: r.get(1),
            status: r.get(2),
            block_reason: r.get(3),
            blocked_at: r.get(4),
        }))
    }

    /// Blocks the card unless it is blocked already (whose first reason and
    /// time stay); true when this call blocked it.
    pub(crate) async fn block_card(&self, card_id: &str, reason: &str, now: i64) -> Result<bool, BackendError> {
        let done = sqlx::query(
            "UPDATE cards SET status = 'blocked', block_reason = ?, blocked_at = ? WHERE id = ? AND status <> 'blocked'",
        )
        .bind(reason)
        .bind(now)
        .bind(card_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes the key for `request`, or says what it already stands for. A
    /// key older than [`IDEMPOTENCY_KEY_KEPT_SECS`] is forgotten first.
    pub(crate) async fn claim_idempotency_key(
        &self,
        client_id: &str,
        customer_id: &str,
        key: &str,
        request: &str,
        now: i64,
    ) -> Result<Claim, BackendError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE client_id = ? AND customer_id = ? AND key = ? AND created_at <= ?",
        )
        .bind(client_id)
        .bind(customer_id)
        .bind(key)
        .bind(now - IDEMPOTENCY_KEY_KEPT_SECS)
        .execute(&mut *tx)
        .await?;
        // The insert decides atomically which of two concurrent requests owns the key.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (client_id, customer_id, key, request, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(client_id)
        .bind(customer_id)
        .bind(key)
        .bind(request)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let claim = if inserted {
            Claim::New
        } else {
            let row = sqlx::query(
                "SELECT request, status, response FROM idempotency_keys WHERE client_id = ? AND customer_id = ? AND key = ?",
            )
            .bind(client_id)
            .bind(customer_id)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let status: Option<i64> = row.get(1);
            let response: Option<String> = row.get(2);
            Claim::Seen {
                request: row.get(0),
                answer: status.zip(response).map(|(s, r)| (u16::try_from(s).unwrap_or(500), r)),
            }
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// Keeps the answer of the write a key was claimed for.
    pub(crate) async fn keep_idempotent_answer(
        &self,
        client_id: &str,
        customer_id: &str,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = ?, response = ? WHERE client_id = ? AND customer_id = ? AND key = ?",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(client_id)
        .bind(customer_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives a claimed key up when its write could not be done, so a retry runs it.
    pub(crate) async fn release_idempotency_key(
        &self,
        client_id: &str,
        customer_id: &str,
        key: &str,
    ) -> Result<(), BackendError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE client_id = ? AND customer_id = ? AND key = ? AND response IS NULL",
        )
        .bind(client_id)
        .bind(customer_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds cards and transactions to a user's accounts; those whose ids
    /// exist already are left as they are, so seeding twice changes nothing.
    pub(crate) async fn add_activity(
        &self,
        username: &str,
        cards: &[NewCard],
        transactions: &[NewTransaction],
    ) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await?;
        let user_id: Option<i64> = sqlx::query("SELECT id FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        let user_id = user_id.ok_or_else(|| BackendError::NotFound(format!("user {username:?}")))?;
        for c in cards {
            sqlx::query(
                "INSERT OR IGNORE INTO cards (id, user_id, account_id, brand, last4, status) VALUES (?, ?, ?, ?, ?, 'active')",
            )
            .bind(&c.id)
            .bind(user_id)
            .bind(&c.account_id)
            .bind(&c.brand)
            .bind(&c.last4)
            .execute(&mut *tx)
            .await?;
        }
        for t in transactions {
            sqlx::query(
                "INSERT OR IGNORE INTO transactions
                 (id, account_id, booked_at, amount, currency, description, status, counterparty_iban)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&t.id)
            .bind(&t.account_id)
            .bind(t.booked_at)
            .bind(&t.amount)
            .bind(&t.currency)
            .bind(&t.description)
            .bind(&t.status)
            .bind(&t.counterparty_iban)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_claimed_once_answers_once_and_is_forgotten_after_a_day() -> Result<(), BackendError> {
        let dir = tempfile::tempdir().map_err(|e| BackendError::Io(e.to_string()))?;
        let store = Store::open(dir.path()).await?;
        let claim = |request: &'static str, now: i64| {
            let store = store.clone();
            async move { store.claim_idempotency_key("client", "cus_1", "k", request, now).await }
        };
        assert!(matches!(claim("card-1\nlost", 0).await?, Claim::New));
        // Claimed, not yet answered: a second request is told it is in progress.
        assert!(matches!(
            claim("card-1\nlost", 1).await?,
            Claim::Seen { answer: None, .. }
        ));
        store.keep_idempotent_answer("client", "cus_1", "k", 200, "{}").await?;
        match claim("card-1\nstolen", 2).await? {
            Claim::Seen { request, answer } => {
                assert_eq!(request, "card-1\nlost");
                assert_eq!(answer, Some((200, "{}".to_string())));
            }
            Claim::New => unreachable!("the key was taken"),
        }
        // Another customer's key of the same text is its own.
        let other = store
            .claim_idempotency_key("client", "cus_2", "k", "card-2\nlost", 3)
            .await?;
        assert!(matches!(other, Claim::New));
        // A released key (its write failed) is free again; a kept one only after 24 h.
        store.release_idempotency_key("client", "cus_2", "k").await?;
        let again = store
            .claim_idempotency_key("client", "cus_2", "k", "card-2\nlost", 4)
            .await?;
        assert!(matches!(again, Claim::New));
        assert!(matches!(
            claim("card-1\nstolen", IDEMPOTENCY_KEY_KEPT_SECS - 1).await?,
            Claim::Seen { .. }
        ));
        assert!(matches!(
            claim("card-1\nstolen", IDEMPOTENCY_KEY_KEPT_SECS).await?,
            Claim::New
        ));
        Ok(())
    }
}
