//! The queries of the unused-key sweep ([`crate::key_sweep`]): which keys
//! have gone unused past the key policy's cutoff, and turning one off with a
//! single conditional `UPDATE`, so that replicas sweeping the same database
//! at once turn each key off exactly once and log exactly one feed change.

use super::{Conn, Db, Tx, feed};

/// The condition "unused since `$cutoff`" on a query `FROM api_keys`: still
/// on, last used (or created, when never used) at or before the cutoff,
/// not turned on again after it, and not expired at `$now` (an expired key
/// is already refused; turning it off would only hide why).
macro_rules! unused_since {
    ($cutoff:literal, $now:literal) => {
        concat!(
            "disabled_at IS NULL AND COALESCE(last_used_at, created_at) <= ",
            $cutoff,
            " AND (enabled_at IS NULL OR enabled_at <= ",
            $cutoff,
            ") AND (expires_at IS NULL OR expires_at > ",
            $now,
            ")"
        )
    };
}

/// Ids of the keys unused since `cutoff` at `now`, found through the
/// `api_keys_last_activity` index.
pub async fn candidates(conn: &mut Conn, cutoff: i64, now: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "SELECT id FROM api_keys WHERE ",
        unused_since!("$1", "$2"),
        " ORDER BY id"
    ))
    .bind(cutoff)
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Turns key `id` off with `reason`, if it is still unused since `cutoff`:
/// one `UPDATE` that re-checks the condition on the row as it is now, so a
/// key used (or turned off, or on again) since it was listed is left alone,
/// and of two replicas racing for one key exactly one wins. Runs inside
/// [`Db::begin_write`]'s transaction; the winner logs the key for the feed
/// there. Returns whether this call turned the key off.
pub async fn disable_if_unused(
    tx: &mut Tx,
    db: &Db,
    id: i64,
    cutoff: i64,
    now: i64,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE api_keys SET disabled_at = $3, disabled_by = NULL, disabled_reason = $4 \
         WHERE id = $1 AND ",
        unused_since!("$2", "$3")
    ))
    .bind(id)
    .bind(cutoff)
    .bind(now)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let version = feed::bump(tx, db).await?;
    feed::log_key(tx, version, id).await?;
    Ok(true)
}
