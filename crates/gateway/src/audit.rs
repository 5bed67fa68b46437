//! The audit trail of agents' actions.
//!
//! - An action's answer goes out only once its record is in the store.
//!   Records that wait while one commit is under way go into the next as one
//!   statement (group commit, led by a waiting request itself), so a busy
//!   gateway pays one commit per batch, not per action, and a crash loses
//!   no record of an action that was answered.
//! - Refusals that an attacker can repeat at no cost (an unknown action or
//!   conversation, an open breaker, a rate limit) are counted, not written
//!   one by one: one row per kind and window, with the number of requests.
//! - Records older than `[audit] retention_days` are pruned in the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::GatewayError;
use crate::metrics::Metrics;
use crate::store::{AuditRecord, MAX_AUDIT_ROWS, Store};

/// `[audit]`: how long records are kept, and how refusals are counted.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days a record is kept.
    pub retention_days: u32,
    /// Seconds over which repeated refusals make one record.
    pub refusal_window_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 90,
            refusal_window_secs: 60,
        }
    }
}

impl AuditConfig {
    /// What is wrong with these settings, as (key, problem) pairs.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if !(1..=36_500).contains(&self.retention_days) {
            problems.push(("retention_days", "must be between 1 and 36500"));
        }
        if !(1..=3600).contains(&self.refusal_window_secs) {
            problems.push(("refusal_window_secs", "must be between 1 and 3600"));
        }
        problems
    }
}

/// Outcomes that are counted per window rather than written per request.
pub(crate) fn is_repeatable_refusal(outcome: &str) -> bool {
    matches!(
        outcome,
        "unknown_action"
            | "not_found"
            | "circuit_open"
            | "rate_limited"
            | "company_rate_limited"
            | "backend_unavailable"
    )
}

/// The record could not be made durable; the action's answer must not go out.
/// Why a durable record is not in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAudited {
    #[error("the audit record could not be written")]
    Failed,
    /// The store did not answer in time (`503 store_unavailable`).
    #[error("the audit record could not be written: the store is unavailable")]
    StoreUnavailable,
}

/// What a waiting request hears.
enum Turn {
    /// Its record's batch was committed (`true`) or could not be (`false`).
    Written(Result<(), NotAudited>),
    /// The commit before it is done: it now leads the next one.
    Lead,
}

/// Durable records waiting for a commit, and whether one is under way.
///
/// Group commit without a writer task: the request that finds no commit
/// under way leads one itself, with whatever waits (its own record among
/// it). Requests that come meanwhile queue; when the commit is done, its
/// leader answers its batch and hands the lead to the first of them. One
/// commit per batch under load, and no hop through another task when idle.
#[derive(Default)]
struct Group {
    /// In arrival order. A waiter's sender is taken when it is handed the
    /// lead (its record stays, for it to commit) or when its batch is written.
    waiting: Vec<(AuditRecord, Option<oneshot::Sender<Turn>>)>,
    committing: bool,
    closed: bool,
}

pub(crate) struct AuditTrail {
    store: Store,
    metrics: Arc<Metrics>,
    group: Mutex<Group>,
    /// Told when a commit ends with nobody to hand the lead to (for `flush`).
    idle: Notify,
    /// Counted refusals; taken (closed) at shutdown so their writer drains and ends.
    refusals: Mutex<Option<mpsc::Sender<AuditRecord>>>,
    refusal_writer: Mutex<Option<JoinHandle<()>>>,
}

/// Refusals waiting at most: past it, one is dropped (and counted).
const QUEUE: usize = 10_000;
/// Distinct refusal kinds counted at once; more flush the window early.
const MAX_REFUSAL_KINDS: usize = 10_000;
/// How often old records are pruned and the table counted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl AuditTrail {
    pub(crate) fn start(store: Store, metrics: Arc<Metrics>, config: AuditConfig) -> Self {
        let (refusals, counted) = mpsc::channel(QUEUE);
        let window = Duration::from_secs(config.refusal_window_secs);
        let writer = tokio::spawn(count_refusals(store.clone(), metrics.clone(), counted, window));
        Self {
            store,
            metrics,
            group: Mutex::default(),
            idle: Notify::new(),
            refusals: Mutex::new(Some(refusals)),
            refusal_writer: Mutex::new(Some(writer)),
        }
    }

    fn group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `record` and returns once it is in the store.
    ///
    /// Cancel-safe: a request dropped while it waits or leads (its client
    /// went away) hands the lead on, so the queue never stalls.
    pub(crate) async fn durable(&self, record: AuditRecord) -> Result<(), NotAudited> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut group = self.group();
            if group.closed {
                drop(group);
                self.metrics.audit_dropped("closed", 1);
                return Err(NotAudited::Failed);
            }
            group.waiting.push((record, Some(tx)));
            !std::mem::replace(&mut group.committing, true)
        };
        if !lead {
            let mut waiting = Waiting { trail: self, turn: rx };
            match (&mut waiting.turn).await {
                Ok(Turn::Written(written)) => return written,
                Err(_) => return Err(NotAudited::Failed),
                Ok(Turn::Lead) => {}
            }
        }
        // Leading: the record is among what waits, so it is written now.
        Leading(self).commit().await
    }

    /// Commits everything that waits (the leader's own record among it),
    /// one statement per `MAX_AUDIT_ROWS`, and answers each waiter; `Ok`
    /// if all of it was written.
    async fn commit_waiting(&self) -> Result<(), NotAudited> {
        let mut batch = std::mem::take(&mut self.group().waiting);
        let mut all_written = Ok(());
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(MAX_AUDIT_ROWS));
            let (records, waiters): (Vec<_>, Vec<_>) = std::mem::replace(&mut batch, rest).into_iter().unzip();
            let written = insert(&self.store, &self.metrics, records).await;
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(Turn::Written(written));
            }
            all_written = all_written.and(written);
        }
        all_written
    }

    /// Hands the lead to the first waiter still listening, or ends the
    /// commit if there is none. Records whose requests went away stay
    /// queued for the next leader (or `flush`).
    fn hand_on(&self) {
        let mut group = self.group();
        for (_, waiter) in &mut group.waiting {
            if let Some(waiter) = waiter.take()
                && waiter.send(Turn::Lead).is_ok()
            {
                return;
            }
        }
        group.committing = false;
        drop(group);
        self.idle.notify_waiters();
    }

    /// Counts a repeatable refusal into its window's record.
    pub(crate) fn refusal(&self, record: AuditRecord) {
        let queue = self.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if queue.is_none_or(|q| q.try_send(record).is_err()) {
            self.metrics.audit_dropped("queue_full", 1);
        }
    }

    /// Refuses new records, then waits until every durable record and
    /// every counted refusal is written.
    pub(crate) async fn flush(&self) {
        loop {
            let idle = self.idle.notified();
            let lead = {
                let mut group = self.group();
                group.closed = true;
                if group.committing {
                    false
                } else if group.waiting.is_empty() {
                    break;
                } else {
                    // Records left by requests that went away.
                    group.committing = true;
                    true
                }
            };
            if lead {
                let _ = Leading(self).commit().await;
            } else {
                idle.await;
            }
        }
        self.refusals.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.refusal_writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// A request waiting for its batch; if it is dropped just as it was
/// handed the lead, it passes the lead on.
struct Waiting<'a> {
    trail: &'a AuditTrail,
    turn: oneshot::Receiver<Turn>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(Turn::Lead) = self.turn.try_recv() {
            self.trail.hand_on();
        }
    }
}

/// The lead of one commit: passed on when done, or when dropped midway.
struct Leading<'a>(&'a AuditTrail);

impl Leading<'_> {
    async fn commit(&self) -> Result<(), NotAudited> {
        self.0.commit_waiting().await
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.hand_on();
    }
}

/// The refusals of one window, by who, where, what and why.
#[derive(Default)]
struct Refusals(HashMap<(String, String, String, String, String), AuditRecord>);

impl Refusals {
    fn count(&mut self, record: AuditRecord) {
        let key = (
            record.agent.clone(),
            record.conversation_id.clone(),
            record.connection.clone(),
            record.action.clone(),
            record.outcome.clone(),
        );
        // The first of the window keeps its time and trace; later ones add to its count.
        self.0
            .entry(key)
            .and_modify(|first| first.count += record.count)
            .or_insert(record);
    }

    fn take(&mut self) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = std::mem::take(&mut self.0).into_values().collect();
        records.sort_by_key(|r| r.at);
        records
    }
}

/// Counts refusals until their window ends (or too many kinds are counted),
/// then writes one record per kind.
async fn count_refusals(
    store: Store,
    metrics: Arc<Metrics>,
    mut counted: mpsc::Receiver<AuditRecord>,
    window: Duration,
) {
    let mut refusals = Refusals::default();
    let mut window_ends = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    window_ends.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = counted.recv() => match received {
                Some(record) => {
                    refusals.count(record);
                    if refusals.0.len() < MAX_REFUSAL_KINDS {
                        continue;
                    }
                }
                None => break,
            },
            _ = window_ends.tick() => {}
        }
        let _ = insert(&store, &metrics, refusals.take()).await;
    }
    let _ = insert(&store, &metrics, refusals.take()).await;
}

/// Writes `records` as one statement; says whether they were written.
async fn insert(store: &Store, metrics: &Metrics, records: Vec<AuditRecord>) -> Result<(), NotAudited> {
    if records.is_empty() {
        return Ok(());
    }
    let count = records.len();
    match store.insert_audit(records).await {
        Ok(()) => {
            metrics.audit_written.inc_by(count as u64);
            metrics.audit_rows.inc_by(count as i64);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, count, "could not write audit records");
            metrics.audit_dropped("write_failed", count);
            Err(match e {
                GatewayError::StoreUnavailable(_) => NotAudited::StoreUnavailable,
                _ => NotAudited::Failed,
            })
        }
    }
}

/// Prunes records older than the retention, at start and hourly, and
/// keeps the table's row count as a metric.
pub(crate) async fn prune(store: Store, metrics: Arc<Metrics>, config: AuditConfig, clock: Arc<dyn clock::Clock>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let now = i64::try_from(clock.unix_secs()).unwrap_or(i64::MAX);
        let cutoff = now - i64::from(config.retention_days) * 86_400;
        match store.prune_audit(cutoff).await {
            Ok(pruned) if pruned > 0 => tracing::info!(pruned, "pruned audit records past their retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not prune audit records"),
        }
        match store.audit_rows().await {
            Ok(rows) => {
                metrics.audit_rows.set(rows);
            }
            Err(e) => tracing::warn!(error = %e, "could not count audit records"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DropReason;
    use crate::store::tests::{record, temp_store};

    /// A durable record is in the store when `durable` returns; one the
    /// store refuses, here because its table is gone, is reported and
    /// counted as lost.
    #[tokio::test]
    async fn a_durable_record_is_written_before_it_returns() {
        let (_dir, store) = temp_store().await;
        let metrics = Arc::new(Metrics::default());
        let trail = AuditTrail::start(store.clone(), metrics.clone(), AuditConfig::default());
        for i in 0..3 {
            trail.durable(record(i, "a", Some(200))).await.unwrap();
            assert_eq!(store.audit(None, None, 10).await.unwrap().len(), i as usize + 1);
        }
        store.drop_table("audit").await.unwrap();
        assert!(trail.durable(record(3, "b", None)).await.is_err());
        trail.flush().await;
        assert!(trail.durable(record(4, "c", None)).await.is_err());

        let lost = |reason| metrics.audit_dropped.get_or_create(&DropReason { reason }).get();
        assert_eq!(
            (metrics.audit_written.get(), lost("write_failed"), lost("closed")),
            (3, 1, 1)
        );
        let text = metrics.render();
        assert!(
            text.contains("deskbridge_gateway_audit_records_written_total 3"),
            "{text}"
        );
    }

    /// Requests that go away while they wait or lead a commit (their
    /// client hung up) never stall the ones behind them, and their records
    /// are still written.
    #[tokio::test]
    async fn requests_dropped_midway_hand_the_lead_on() {
        let (_dir, store) = temp_store().await;
        let metrics = Arc::new(Metrics::default());
        let trail = Arc::new(AuditTrail::start(
            store.clone(),
            metrics.clone(),
            AuditConfig::default(),
        ));
        let mut answered = Vec::new();
        for round in 0..20 {
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let trail = trail.clone();
                    let at = round * 50 + i;
                    tokio::spawn(async move { trail.durable(record(at, "a", Some(200))).await.map(|()| at) })
                })
                .collect();
            // Every third request is dropped wherever it is: not yet
            // queued, waiting, or leading a commit (the first one, after a yield).
            for _ in 0..round % 3 {
                tokio::task::yield_now().await;
            }
            for (i, task) in tasks.iter().enumerate() {
                if i % 3 == 0 {
                    task.abort();
                }
            }
            for (i, task) in tasks.into_iter().enumerate() {
                let answer = tokio::time::timeout(Duration::from_secs(5), task);
                match answer.await.expect("the queue stalled") {
                    Ok(written) => answered.push(written.expect("a record not written")),
                    Err(e) => assert!(e.is_cancelled() && i % 3 == 0, "{e}"),
                }
            }
        }
        // Not stalled: one more goes through at once, and nothing is left behind.
        tokio::time::timeout(Duration::from_secs(5), trail.durable(record(9999, "b", None)))
            .await
            .expect("the queue stalled")
            .unwrap();
        trail.flush().await;
        assert!(trail.group().waiting.is_empty() && !trail.group().committing);
        let written: std::collections::HashSet<i64> = store
            .audit(None, None, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.at - record(0, "", None).at)
            .collect();
        assert!(answered.len() >= 20 * 33, "{}", answered.len());
        assert!(answered.iter().all(|at| written.contains(at)));
    }

    /// A thousand refusals of one kind make one record with their count;
    /// another kind makes its own.
    #[tokio::test]
    async fn repeated_refusals_make_one_record_per_window() {
        let (_dir, store) = temp_store().await;
        let metrics = Arc::new(Metrics::default());
        let trail = AuditTrail::start(store.clone(), metrics.clone(), AuditConfig::default());
        let refusal = |i: i64, outcome: &str| AuditRecord {
            outcome: outcome.into(),
            count: 1,
            ..record(i, "nope", None)
        };
        for i in 0..1000 {
            trail.refusal(AuditRecord {
                conversation_id: "cnv_x".into(),
                ..refusal(i, "unknown_action")
            });
        }
        trail.refusal(AuditRecord {
            conversation_id: "cnv_x".into(),
            ..refusal(0, "rate_limited")
        });
        trail.flush().await;
        let rows = store.audit(None, None, 10).await.unwrap();
        let mut counts: Vec<(String, u32)> = rows.iter().map(|r| (r.outcome.clone(), r.count)).collect();
        counts.sort();
        assert_eq!(
            counts,
            vec![("rate_limited".into(), 1), ("unknown_action".into(), 1000)]
        );
    }

    #[tokio::test]
    async fn records_past_their_retention_are_pruned() {
        let (_dir, store) = temp_store().await;
        use clock::Clock;
        let clock = Arc::new(clock::SystemClock);
        let now = clock.unix_secs() as i64;
        let at = |days: i64| AuditRecord {
            at: now - days * 86_400,
            ..record(0, "x", Some(200))
        };
        store.insert_audit(vec![at(100), at(91), at(89), at(0)]).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let pruning = tokio::spawn(prune(store.clone(), metrics.clone(), AuditConfig::default(), clock));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.audit_rows.get() != 2 {
            assert!(tokio::time::Instant::now() < deadline, "not pruned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pruning.abort();
        let kept: Vec<i64> = store
            .audit(None, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.at)
            .collect();
        assert_eq!(kept, vec![at(0).at, at(89).at]);
        assert!(metrics.render().contains("deskbridge_gateway_audit_rows 2"));
    }
}
