//! The gateway processes serving from one store. Each registers itself at
//! start, beats every [`HEARTBEAT`] and deregisters on a clean shutdown; one
//! that missed three beats is gone. Without `[cluster]` only one may serve:
//! its caches and event bus live in its own memory.

use std::time::Duration;

use sqlx::Row;

use super::Store;
use super::engine::on_pool;
use crate::GatewayError;

/// How often a serving instance says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// An instance whose last beat is older than this (three missed beats) is gone.
pub const STALE_AFTER_SECS: i64 = 3 * HEARTBEAT.as_secs() as i64;

/// This process, as the store knows it: `hostname-pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Instance {
    pub fn this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "localhost".into());
        let pid = std::process::id();
        Self {
            id: format!("{host}-{pid}"),
            host,
            pid,
        }
    }

    /// Whether a registered instance on this host is a process that ended
    /// without deregistering (killed): then its row is no one's, whatever
    /// its last beat. Only Linux can tell; elsewhere every row counts.
    fn is_gone_here(&self, other: &InstanceRow) -> bool {
        other.host == self.host
            && cfg!(target_os = "linux")
            && !std::path::Path::new("/proc").join(other.pid.to_string()).exists()
    }
}

/// A registered instance.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl Store {
    /// Registers `me` (or refreshes its beat) and forgets instances that stopped beating.
    pub async fn register_instance(&self, me: &Instance, now: i64) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
            .bind(now - STALE_AFTER_SECS)
            .execute(pool)
            .await
            .map(drop)?);
        self.instance_heartbeat(me, now).await
    }

    /// A beat: `me` is alive at `now`. Registers it again if its row went
    /// (the store was replaced, or it was taken for gone during an outage).
    pub async fn instance_heartbeat(&self, me: &Instance, now: i64) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&me.id)
        .bind(&me.host)
        .bind(i64::from(me.pid))
        .bind(now)
        .bind(now)
        .execute(pool)
        .await
            .map(drop)?);
        Ok(())
    }

    pub async fn deregister_instance(&self, me: &Instance) -> Result<(), GatewayError> {
        on_pool!(&self.db, pool => sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(&me.id)
            .execute(pool)
            .await
            .map(drop)?);
        Ok(())
    }

    /// The other instances alive at `now`: beating, and not a process of
    /// this host that has ended.
    pub async fn other_live_instances(&self, me: &Instance, now: i64) -> Result<Vec<InstanceRow>, GatewayError> {
        let rows: Vec<InstanceRow> = on_pool!(&self.db, pool => sqlx::query(
            "SELECT id, host, pid, started_at, heartbeat_at FROM instances WHERE id != $1 AND heartbeat_at >= $2 ORDER BY id",
        )
        .bind(&me.id)
        .bind(now - STALE_AFTER_SECS)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| InstanceRow {
            id: r.get(0),
            host: r.get(1),
            pid: r.get(2),
            started_at: r.get(3),
            heartbeat_at: r.get(4),
        })
        .collect());
        Ok(rows.into_iter().filter(|row| !me.is_gone_here(row)).collect())
    }
}
