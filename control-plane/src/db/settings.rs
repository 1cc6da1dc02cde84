//! Settings admins change at run time, stored in the database so every
//! replica sharing it applies the same ones: today the key lifetime policy
//! (one row of `key_policy`, migration 0006). Read on every use, never
//! cached: one primary-key read is cheap, and a change is in force on
//! every replica with the next request.

use super::Conn;
use crate::domain::key_policy::KeyPolicy;

/// The policy as stored, with who set it last and when.
#[derive(Debug, Clone, Copy)]
pub struct StoredKeyPolicy {
    pub policy: KeyPolicy,
    pub updated_at: Option<i64>,
    pub updated_by: Option<i64>,
}

type Row = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Days as stored: the table's CHECK keeps them in 1..=3650; anything else
/// (a hand-edited row) reads as no limit rather than failing every create.
fn stored_days(v: Option<i64>) -> Option<u32> {
    v.and_then(|d| u32::try_from(d).ok()).filter(|d| *d >= 1)
}

pub async fn key_policy(conn: &mut Conn) -> Result<StoredKeyPolicy, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT max_lifetime_days, default_lifetime_days, max_unused_days, updated_at, updated_by \
         FROM key_policy WHERE id = 1",
    )
    .fetch_optional(conn)
    .await?;
    // The migration inserts the row; a missing one is no policy.
    let (max, default, unused, updated_at, updated_by) = row.unwrap_or_default();
    Ok(StoredKeyPolicy {
        policy: KeyPolicy {
            max_lifetime_days: stored_days(max),
            default_lifetime_days: stored_days(default),
            max_unused_days: stored_days(unused),
        },
        updated_at,
        updated_by,
    })
}

pub async fn set_key_policy(
    conn: &mut Conn,
    policy: &KeyPolicy,
    now: i64,
    by: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE key_policy SET max_lifetime_days = $1, default_lifetime_days = $2, \
         max_unused_days = $3, updated_at = $4, updated_by = $5 WHERE id = 1",
    )
    .bind(policy.max_lifetime_days.map(i64::from))
    .bind(policy.default_lifetime_days.map(i64::from))
    .bind(policy.max_unused_days.map(i64::from))
    .bind(now)
    .bind(by)
    .execute(conn)
    .await
    .map(|_| ())
}
