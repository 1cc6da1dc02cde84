//! Audit retention: events older than `--audit-retention-days` are deleted
//! by a task every replica runs (hourly, and once at start). The deletes are
//! by age alone, so replicas running them at once only find less to delete;
//! they go in batches so no statement holds the table long.

use crate::db::Db;
use crate::domain::now_unix;
use std::time::Duration;

/// How often each replica prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows one DELETE removes at most.
const BATCH: i64 = 10_000;
const DAY_SECS: i64 = 86_400;

/// Deletes the events older than `retention_days` days before `now` (unix
/// seconds; a parameter so tests control the time). 0 days keeps every
/// event. Returns how many were deleted.
pub async fn prune(db: &Db, now: i64, retention_days: u32) -> Result<u64, sqlx::Error> {
    if retention_days == 0 {
        return Ok(0);
    }
    let cutoff = now.saturating_sub(i64::from(retention_days).saturating_mul(DAY_SECS));
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM audit_events WHERE id IN \
             (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(BATCH)
        .execute(&db.pool)
        .await?;
        deleted += done.rows_affected();
        if done.rows_affected() < u64::try_from(BATCH).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}

/// Prunes now and then every [`PRUNE_EVERY`], for as long as the task
/// lives (the server aborts it at shutdown). A failure is logged and
/// retried at the next tick.
pub async fn run(db: Db, retention_days: u32) {
    if retention_days == 0 {
        return;
    }
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune(&db, now_unix(), retention_days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned {n} audit events past retention"),
            Err(e) => tracing::warn!(error = %e, "audit retention prune failed"),
        }
    }
}
