//! The first outcome of each write, kept by the caller's `Idempotency-Key`
//! for a day: a retried request (a double click, a network retry, another
//! instance) gets it again instead of calling the company twice.
//!
//! A request claims its key before the company is called, by inserting the
//! row; the database's primary key makes exactly one claim win on every
//! instance at once. The winner records the outcome, or gives the key back
//! when the company never answered (the caller may then retry with it).

use sqlx::Row;

use super::Store;
use super::engine::on_pool;
use crate::GatewayError;

/// How long a key keeps its outcome.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;
/// A claim whose request has not finished after this long was left by an
/// instance that stopped midway: the next request with the key takes it.
const ABANDONED_AFTER_SECS: i64 = 300;

/// What a request finds for its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// It is the first: it calls the company.
    Won,
    /// The first outcome, to give again: the company's status and its
    /// sealed answer.
    Done { status: u16, answer: Vec<u8> },
    /// The key was used with another input.
    Reused,
    /// The first request with this key is still running.
    InFlight,
}

impl Store {
    /// Claims `key` for a write of `action` in `conversation` whose input
    /// digests to `digest`, at `now` (Unix seconds).
    pub async fn claim_idempotency_key(
        &self,
        conversation: &str,
        action: &str,
        key: &str,
        digest: &str,
        now: i64,
    ) -> Result<Claim, GatewayError> {
        on_pool!(&self.db, pool => {
            // An expired outcome, or a claim abandoned midway, is no one's.
            sqlx::query(
                "DELETE FROM idempotency WHERE conversation_id = $1 AND action = $2 AND key = $3
                 AND (created_at <= $4 OR (status IS NULL AND created_at <= $5))",
            )
            .bind(conversation)
            .bind(action)
            .bind(key)
            .bind(now - IDEMPOTENCY_TTL_SECS)
            .bind(now - ABANDONED_AFTER_SECS)
            .execute(pool)
            .await?;
            let inserted = sqlx::query(
                "INSERT INTO idempotency (conversation_id, action, key, input_digest, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(conversation)
            .bind(action)
            .bind(key)
            .bind(digest)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Claim::Won);
            }
            let row = sqlx::query(
                "SELECT input_digest, status, answer FROM idempotency
                 WHERE conversation_id = $1 AND action = $2 AND key = $3",
            )
            .bind(conversation)
            .bind(action)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                // Given back between the insert and the read: the caller retries.
                None => Claim::InFlight,
                Some(r) if r.get::<String, _>(0) != digest => Claim::Reused,
                Some(r) => match (r.get::<Option<i64>, _>(1), r.get::<Option<Vec<u8>>, _>(2)) {
                    (Some(status), Some(answer)) => Claim::Done {
                        status: u16::try_from(status).unwrap_or(500),
                        answer,
                    },
                    _ => Claim::InFlight,
                },
            })
        })
    }

    /// Records the outcome of a claimed key.
    pub async fn finish_idempotency_key(
        &self,
        conversation: &str,
        action: &str,
        key: &str,
        status: u16,
        answer: &[u8],
    ) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query(
            "UPDATE idempotency SET status = $1, answer = $2 WHERE conversation_id = $3 AND action = $4 AND key = $5",
        )
        .bind(i64::from(status))
        .bind(answer)
        .bind(conversation)
        .bind(action)
        .bind(key)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Gives a claimed key back: the company did not answer.
    pub async fn release_idempotency_key(
        &self,
        conversation: &str,
        action: &str,
        key: &str,
    ) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query(
            "DELETE FROM idempotency WHERE conversation_id = $1 AND action = $2 AND key = $3 AND status IS NULL",
        )
        .bind(conversation)
        .bind(action)
        .bind(key)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Forgets outcomes older than a day; returns how many.
    pub async fn prune_idempotency_keys(&self, now: i64) -> Result<u64, GatewayError> {
        Ok(
            on_pool!(&self.db, pool => sqlx::query("DELETE FROM idempotency WHERE created_at <= $1")
            .bind(now - IDEMPOTENCY_TTL_SECS)
            .execute(pool)
            .await?
            .rows_affected()),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::each_engine;

    use super::*;

    #[tokio::test]
    async fn one_claim_wins_and_its_outcome_is_given_again() {
        for (db, store) in each_engine().await {
            let claim = |key: &'static str, digest: &'static str, now: i64| {
                let store = store.clone();
                async move {
                    store
                        .claim_idempotency_key("cnv_a", "block", key, digest, now)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(claim("k1", "d1", 1000).await, Claim::Won);
            assert_eq!(claim("k1", "d1", 1001).await, Claim::InFlight);
            assert_eq!(claim("k1", "d2", 1001).await, Claim::Reused);
            store
                .finish_idempotency_key("cnv_a", "block", "k1", 200, b"sealed")
                .await
                .unwrap();
            assert_eq!(
                claim("k1", "d1", 1002).await,
                Claim::Done {
                    status: 200,
                    answer: b"sealed".to_vec()
                }
            );
            // Another action, or another conversation, has keys of its own.
            assert_eq!(
                store
                    .claim_idempotency_key("cnv_a", "other", "k1", "d9", 1002)
                    .await
                    .unwrap(),
                Claim::Won
            );
            // Given back: the next request with the key calls the company.
            assert_eq!(claim("k2", "d1", 1000).await, Claim::Won);
            store.release_idempotency_key("cnv_a", "block", "k2").await.unwrap();
            assert_eq!(claim("k2", "d3", 1001).await, Claim::Won);
            // A claim abandoned midway is taken over after a while.
            assert_eq!(claim("k2", "d3", 1001 + ABANDONED_AFTER_SECS).await, Claim::Won);
            // A day later the key is new again.
            assert_eq!(claim("k1", "d2", 1000 + IDEMPOTENCY_TTL_SECS).await, Claim::Won);
            // Only the other action's key, claimed at 1002, is a day old by then.
            assert_eq!(
                store.prune_idempotency_keys(1003 + IDEMPOTENCY_TTL_SECS).await.unwrap(),
                1
            );
            drop(db);
        }
    }
}
