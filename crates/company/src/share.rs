//! Where a connection's system token is kept, and who may fetch the next
//! one: the seam between one gateway process ([`LocalShare`]) and many that
//! share one token per company (an implementation over a shared store).
//!
//! Each [`crate::system_token::TokenSource`] keeps the token it last saw in
//! memory and asks its share only when that one is due for renewal, gone, or
//! refused by the company, so the action path does not reach the share.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a share's methods return: boxed, so a share can sit behind `dyn`.
pub type ShareFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A system token as it is shared. Times are Unix milliseconds, so they mean
/// the same to every instance; `id` names this token (random, drawn when it
/// was fetched), so it can be purged without comparing secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedToken {
    pub id: u64,
    /// The access token itself: a store over a network seals it.
    pub access_token: String,
    pub expires_at_ms: u64,
    pub refresh_at_ms: u64,
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedToken")
            .field("id", &self.id)
            .field("access_token", &"[REDACTED]")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("refresh_at_ms", &self.refresh_at_ms)
            .finish()
    }
}

/// The right to fetch the next token, held until [`TokenShare::release`]
/// or, should its holder vanish, until its TTL runs out.
pub struct Lease {
    /// Names this lease, so a share over a network releases only its own.
    pub id: u64,
    /// What a share in this process holds while the lease lasts; dropping
    /// it (a cancelled fetch) frees the lease.
    _held: Option<Box<dyn Send + Sync>>,
}

impl Lease {
    /// A lease known by its id alone (its share expires it by TTL).
    pub fn new(id: u64) -> Self {
        Self { id, _held: None }
    }

    /// A lease that also holds `guard` until it is released or dropped.
    pub fn holding(id: u64, guard: impl Send + Sync + 'static) -> Self {
        Self {
            id,
            _held: Some(Box::new(guard)),
        }
    }
}

/// One connection's system token and its single flight, as seen by every
/// instance that shares it.
///
/// A share never fails: one over a network that cannot be reached degrades
/// to this instance alone (reads nothing, grants every lease, stores
/// nothing) and reports that itself, so a company call never waits on it.
pub trait TokenShare: Send + Sync {
    /// The token last stored, if any (expired or not: the caller judges).
    fn read(&self) -> ShareFuture<'_, Option<SharedToken>>;

    /// The lease to fetch, if no one holds it now; it lapses after `ttl`.
    fn try_lease(&self, ttl: Duration) -> ShareFuture<'_, Option<Lease>>;

    /// The lease to fetch, once whoever holds it releases it (or it lapses).
    /// By default, asks again every 50 ms.
    fn lease(&self, ttl: Duration) -> ShareFuture<'_, Lease> {
        Box::pin(async move {
            loop {
                if let Some(lease) = self.try_lease(ttl).await {
                    return lease;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Stores a freshly fetched token for all.
    fn store(&self, token: SharedToken) -> ShareFuture<'_, ()>;

    /// Gives the lease back.
    fn release(&self, lease: Lease) -> ShareFuture<'_, ()>;

    /// Forgets the token `id` if it is still the one stored (the company
    /// refused it); a newer one stays.
    fn purge(&self, id: u64) -> ShareFuture<'_, ()>;
}

/// A connection's call budget (`[connections.limits]`) and the pause its
/// company asked for, as every instance sees them. Without one, each
/// instance keeps its own (`Connection` does, in memory).
pub trait LimitShare: Send + Sync {
    /// Takes one call from the shared bucket of `per_second` and `burst`,
    /// unless a shared pause holds. `None`: the share cannot say now (its
    /// store is away), so the instance decides alone.
    fn admit(&self, per_second: u32, burst: u32) -> ShareFuture<'_, Option<SharedAdmission>>;

    /// Tells every instance to pause calls for `wait` (the company's
    /// `Retry-After` on a `status` of 429 or 503).
    fn pause(&self, status: u16, wait: Duration) -> ShareFuture<'_, ()>;
}

/// What a [`LimitShare`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedAdmission {
    Admitted,
    OverRate(Duration),
    Paused { wait: Duration, status: u16 },
}

/// The share of one process: the token in memory and the lease a mutex
/// that waiters queue on, so the one fetch in flight is awaited, not polled.
#[derive(Default)]
pub struct LocalShare {
    token: Mutex<Option<SharedToken>>,
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl LocalShare {
    fn token(&self) -> std::sync::MutexGuard<'_, Option<SharedToken>> {
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TokenShare for LocalShare {
    fn read(&self) -> ShareFuture<'_, Option<SharedToken>> {
        let token = self.token().clone();
        Box::pin(async move { token })
    }

    fn try_lease(&self, _ttl: Duration) -> ShareFuture<'_, Option<Lease>> {
        // In one process the holder cannot vanish without dropping its
        // lease, so no TTL is needed.
        let lease = self
            .fetching
            .clone()
            .try_lock_owned()
            .ok()
            .map(|g| Lease::holding(0, g));
        Box::pin(async move { lease })
    }

    fn lease(&self, _ttl: Duration) -> ShareFuture<'_, Lease> {
        Box::pin(async move { Lease::holding(0, self.fetching.clone().lock_owned().await) })
    }

    fn store(&self, token: SharedToken) -> ShareFuture<'_, ()> {
        *self.token() = Some(token);
        Box::pin(async {})
    }

    fn release(&self, lease: Lease) -> ShareFuture<'_, ()> {
        drop(lease);
        Box::pin(async {})
    }

    fn purge(&self, id: u64) -> ShareFuture<'_, ()> {
        let mut token = self.token();
        if token.as_ref().is_some_and(|t| t.id == id) {
            *token = None;
        }
        drop(token);
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u64) -> SharedToken {
        SharedToken {
            id,
            access_token: format!("t{id}"),
            expires_at_ms: 2,
            refresh_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn one_lease_at_a_time_and_a_purge_spares_a_newer_token() {
        let share = LocalShare::default();
        let ttl = Duration::from_secs(1);
        let lease = share.try_lease(ttl).await.unwrap();
        assert!(share.try_lease(ttl).await.is_none());
        share.store(token(1)).await;
        share.release(lease).await;
        assert!(share.try_lease(ttl).await.is_some(), "a dropped lease is free again");
        share.store(token(2)).await;
        share.purge(1).await;
        assert_eq!(share.read().await, Some(token(2)));
        share.purge(2).await;
        assert_eq!(share.read().await, None);
    }

    #[test]
    fn debug_output_hides_the_token() {
        assert!(!format!("{:?}", token(7)).contains("t7"));
    }
}
