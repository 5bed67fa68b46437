//! The audit trail of agents' actions.
//!
//! - An action's answer goes out only once its record is in the store: the
//!   writer commits whatever records are waiting as one statement (group
//!   commit), so a busy gateway pays one commit per batch, not per action,
//!   and a crash loses no record of an action that was answered.
//! - Refusals that an attacker can repeat at no cost (an unknown action or
//!   conversation, an open breaker, a rate limit) are counted, not written
//!   one by one: one row per kind and window, with the number of requests.
//! - Records older than `[audit] retention_days` are pruned in the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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
        "unknown_action" | "not_found" | "circuit_open" | "rate_limited"
    )
}

/// The record could not be made durable; the action's answer must not go out.
#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be written")]
pub struct NotAudited;

enum Entry {
    /// Written in the next batch; the sender hears whether it was.
    Durable(AuditRecord, oneshot::Sender<bool>),
    /// Added to its window's count.
    Refusal(AuditRecord),
}

pub(crate) struct AuditTrail {
    /// Taken (closed) at shutdown so the writer drains and ends.
    queue: Mutex<Option<mpsc::Sender<Entry>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

/// Records waiting at most: past it, a durable record waits for room and a
/// refusal is dropped (and counted).
const QUEUE: usize = 10_000;
/// Distinct refusal kinds counted at once; more flush the window early.
const MAX_REFUSAL_KINDS: usize = 10_000;
/// How often old records are pruned and the table counted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl AuditTrail {
    pub(crate) fn start(store: Store, metrics: Arc<Metrics>, config: AuditConfig) -> Self {
        let (queue, entries) = mpsc::channel(QUEUE);
        let window = Duration::from_secs(config.refusal_window_secs);
        let writer = tokio::spawn(write(store, metrics.clone(), entries, window));
        Self {
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
            metrics,
        }
    }

    fn queue(&self) -> Option<mpsc::Sender<Entry>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `record` and returns once it is in the store.
    pub(crate) async fn durable(&self, record: AuditRecord) -> Result<(), NotAudited> {
        let (written, heard) = oneshot::channel();
        let Some(queue) = self.queue() else {
            self.metrics.audit_dropped("closed", 1);
            return Err(NotAudited);
        };
        if queue.send(Entry::Durable(record, written)).await.is_err() {
            self.metrics.audit_dropped("closed", 1);
            return Err(NotAudited);
        }
        match heard.await {
            Ok(true) => Ok(()),
            _ => Err(NotAudited),
        }
    }

    /// Counts a repeatable refusal into its window's record.
    pub(crate) fn refusal(&self, record: AuditRecord) {
        if self.queue().is_none_or(|q| q.try_send(Entry::Refusal(record)).is_err()) {
            self.metrics.audit_dropped("queue_full", 1);
        }
    }

    /// Closes the queue and waits until every record, and every counted
    /// refusal, is written.
    pub(crate) async fn flush(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
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

/// The writer: batches durable records as they come (a batch is whatever
/// waited while the previous one was written), and counts refusals until
/// their window ends.
async fn write(store: Store, metrics: Arc<Metrics>, mut entries: mpsc::Receiver<Entry>, window: Duration) {
    let mut refusals = Refusals::default();
    let mut window_ends = tokio::time::interval(window);
    window_ends.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(MAX_AUDIT_ROWS);
    loop {
        batch.clear();
        let received = tokio::select! {
            received = entries.recv_many(&mut batch, MAX_AUDIT_ROWS) => received,
            _ = window_ends.tick() => {
                insert(&store, &metrics, refusals.take(), Vec::new()).await;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for entry in batch.drain(..) {
            match entry {
                Entry::Durable(record, written) => {
                    records.push(record);
                    waiting.push(written);
                }
                Entry::Refusal(record) => refusals.count(record),
            }
        }
        if refusals.0.len() >= MAX_REFUSAL_KINDS {
            records.extend(refusals.take());
        }
        insert(&store, &metrics, records, waiting).await;
    }
    insert(&store, &metrics, refusals.take(), Vec::new()).await;
}

/// Writes `records` as one statement and tells each waiter how it went.
async fn insert(store: &Store, metrics: &Metrics, records: Vec<AuditRecord>, waiting: Vec<oneshot::Sender<bool>>) {
    if records.is_empty() {
        return;
    }
    let count = records.len();
    let written = match store.insert_audit(records).await {
        Ok(()) => {
            metrics.audit_written.inc_by(count as u64);
            metrics.audit_rows.inc_by(count as i64);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, count, "could not write audit records");
            metrics.audit_dropped("write_failed", count);
            false
        }
    };
    for waiter in waiting {
        let _ = waiter.send(written);
    }
}

/// Prunes records older than the retention, at start and hourly, and
/// keeps the table's row count as a metric.
pub(crate) async fn prune(store: Store, metrics: Arc<Metrics>, config: AuditConfig) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let cutoff = crate::now() - i64::from(config.retention_days) * 86_400;
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
        sqlx::query("DROP TABLE audit").execute(&store.pool).await.unwrap();
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
        let now = crate::now();
        let at = |days: i64| AuditRecord {
            at: now - days * 86_400,
            ..record(0, "x", Some(200))
        };
        store.insert_audit(vec![at(100), at(91), at(89), at(0)]).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let pruning = tokio::spawn(prune(store.clone(), metrics.clone(), AuditConfig::default()));
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
