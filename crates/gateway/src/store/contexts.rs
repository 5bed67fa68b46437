//! The action context of recent conversations (connection and sealed
//! customer token), kept in memory so that an agent's action does no
//! database read: sqlx runs every query on a worker thread, and the hand-off
//! there and back cost an action more CPU than the gateway's own work
//! (bench/README.md, "Gateway vs nginx").
//!
//! Every change the store makes to a conversation's token or existence
//! removes its entry, and the next read fills it again from the database.
//! Removing, rather than writing the new value in, keeps the cache equal to
//! the database whatever order concurrent changes finish in. The token stays
//! sealed (AES-256-GCM), exactly as at rest.
//!
//! The answers of actions that may be reused (`cache_ttl_secs`) live in the
//! same entry, so whatever ends the entry (a new or refused token, a moved
//! conversation) ends them too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockWriteGuard};

use serde_json::value::RawValue;
use std::time::{Duration, SystemTime};

use super::StoredToken;

/// What an action needs of its conversation, in one read.
pub struct ActionContext {
    /// The connection the conversation belongs to.
    pub connection: String,
    /// The customer's token, sealed; `None` when none was ever handed over.
    pub token: Option<StoredToken>,
    /// Recent successful answers, by action name and input.
    answers: Mutex<HashMap<String, Answer>>,
}

struct Answer {
    data: Box<RawValue>,
    status: u16,
    /// By the gateway's clock.
    until: SystemTime,
}

impl ActionContext {
    pub fn new(connection: String, token: Option<StoredToken>) -> Self {
        Self {
            connection,
            token,
            answers: Mutex::default(),
        }
    }

    /// The answer the run `key` (an action and its input) gave less than
    /// its `cache_ttl_secs` before `now`: data and status.
    pub fn recent_answer(&self, key: &str, now: SystemTime) -> Option<(Box<RawValue>, u16)> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let answer = answers.get(key).filter(|a| a.until > now)?;
        Some((answer.data.clone(), answer.status))
    }

    /// Keeps an answer given at `now` for `ttl`. A conversation keeps at
    /// most [`MAX_ANSWERS`]: runs with many inputs (pages, say) drop the
    /// expired ones first, then all, rather than grow without bound.
    pub fn remember_answer(&self, key: &str, data: &RawValue, status: u16, now: SystemTime, ttl: Duration) {
        let answer = Answer {
            data: data.to_owned(),
            status,
            until: now + ttl,
        };
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, a| a.until > now);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        answers.insert(key.to_string(), answer);
    }
}

/// Answers kept per conversation at most.
const MAX_ANSWERS: usize = 32;

/// At most this many conversations are remembered (about 10 MB with
/// 1 kB tokens); beyond it the least recently used half is dropped.
pub(super) const CAPACITY: usize = 10_000;

/// Two generations: entries are added to `current`; when it holds half the
/// capacity it becomes `previous` and the old `previous` is dropped. An
/// entry found in `previous` moves back to `current`, so busy conversations
/// stay. Bounded, O(1), and no per-entry bookkeeping.
#[derive(Default)]
pub(super) struct ContextCache {
    inner: RwLock<Generations>,
    /// Told of every conversation this process changed (the other
    /// instances forget it too).
    changed: OnceLock<ChangeHook>,
}

/// What is told of a changed conversation.
pub type ChangeHook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Generations {
    /// Counts changes. A fill that started before a change may have read
    /// what the change replaced, so it is not stored.
    version: u64,
    current: HashMap<String, Arc<ActionContext>>,
    previous: HashMap<String, Arc<ActionContext>>,
}

impl Generations {
    fn insert(&mut self, conversation: String, context: Arc<ActionContext>) {
        if self.current.len() >= CAPACITY / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(conversation, context);
    }
}

impl ContextCache {
    fn write(&self) -> RwLockWriteGuard<'_, Generations> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, conversation: &str) -> Option<Arc<ActionContext>> {
        {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(context) = g.current.get(conversation) {
                return Some(context.clone());
            }
            if !g.previous.contains_key(conversation) {
                return None;
            }
        }
        let mut g = self.write();
        let (key, context) = g.previous.remove_entry(conversation)?;
        g.insert(key, context.clone());
        Some(context)
    }

    /// The version to hand back to [`Self::fill`] after reading the database.
    pub(super) fn version(&self) -> u64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).version
    }

    /// Remembers what a read found, unless something changed since `version`.
    pub(super) fn fill(&self, conversation: &str, context: Arc<ActionContext>, version: u64) {
        let mut g = self.write();
        if g.version == version {
            g.insert(conversation.to_string(), context);
        }
    }

    /// Forgets a conversation whose context changed (or may have: called on
    /// a failed write too). Call it after the database change is committed.
    pub(super) fn invalidate(&self, conversation: &str) {
        self.forget(conversation);
        if let Some(changed) = self.changed.get() {
            changed(conversation);
        }
    }

    /// Forgets a conversation changed elsewhere (by another instance).
    pub(super) fn forget(&self, conversation: &str) {
        let mut g = self.write();
        g.version += 1;
        g.current.remove(conversation);
        g.previous.remove(conversation);
    }

    /// Forgets every conversation.
    pub(super) fn forget_all(&self) {
        let mut g = self.write();
        g.version += 1;
        g.current.clear();
        g.previous.clear();
    }

    /// Sets what is told of each conversation changed here; once.
    pub(super) fn on_change(&self, hook: ChangeHook) {
        let _ = self.changed.set(hook);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(connection: &str) -> Arc<ActionContext> {
        Arc::new(ActionContext::new(
            connection.into(),
            Some(StoredToken {
                ciphertext: vec![1, 2, 3],
                expires_at: None,
                rejected: false,
            }),
        ))
    }

    #[test]
    fn a_fill_that_raced_a_change_is_not_stored() {
        let cache = ContextCache::default();
        let seen = cache.version();
        cache.invalidate("cnv_a");
        cache.fill("cnv_a", context("acme"), seen);
        assert!(cache.get("cnv_a").is_none());
        cache.fill("cnv_a", context("acme"), cache.version());
        assert_eq!(cache.get("cnv_a").map(|c| c.connection.clone()), Some("acme".into()));
        cache.invalidate("cnv_a");
        assert!(cache.get("cnv_a").is_none());
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_used() {
        let cache = ContextCache::default();
        cache.fill("cnv_busy", context("acme"), cache.version());
        for i in 0..3 * CAPACITY {
            cache.fill(&format!("cnv_{i}"), context("acme"), cache.version());
            assert!(cache.get("cnv_busy").is_some(), "dropped after {i}");
            assert!(cache.len() <= CAPACITY);
        }
        assert!(cache.get("cnv_0").is_none(), "the oldest went first");
    }
}
