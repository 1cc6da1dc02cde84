//! Revocation records: revoking a key deletes its row (so the feed ships its
//! removal, as a deletion always did) after copying what the key was into
//! `revoked_keys`, with when, by whom and why. Records have no foreign keys,
//! so they outlive the key's owner and servers.

use super::keys::{self, KeyHead, KeyRow};
use super::{Conn, Db, Tx, feed};
use crate::domain::now_unix;

/// Who revoked a key and why.
#[derive(Debug, Clone, Copy)]
pub struct Revocation<'a> {
    /// The user who revoked it (an admin, the owner, or the admin who
    /// deleted the owner).
    pub by: i64,
    pub reason: Option<&'a str>,
}

/// A revoked key's record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevokedRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub description: String,
    pub server_ids: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: i64,
    pub revoked_by: i64,
    pub reason: Option<String>,
}

impl RevokedRow {
    /// The scope as the API showed it (`["*"]` or names).
    pub fn server_ids(&self) -> Vec<String> {
        self.server_ids
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Copies `rows` into `revoked_keys`.
async fn record(tx: &mut Tx, rows: &[KeyRow], how: Revocation<'_>) -> Result<(), sqlx::Error> {
    let now = now_unix();
    for row in rows {
        let h: &KeyHead = &row.head;
        sqlx::query(
            "INSERT INTO revoked_keys (id, user_id, username, name, description, server_ids, \
             created_at, expires_at, last_used_at, revoked_at, revoked_by, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(h.id)
        .bind(h.user_id)
        .bind(h.username.as_str())
        .bind(h.name.as_str())
        .bind(h.description.as_str())
        .bind(row.server_ids.join("\n"))
        .bind(h.created_at)
        .bind(h.expires_at)
        .bind(h.last_used_at)
        .bind(now)
        .bind(how.by)
        .bind(how.reason)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Revokes key `id` (only the owner's, with `owner`): keeps its record, then
/// deletes it, which takes it off every edge. False when there is no such key.
pub async fn revoke(
    tx: &mut Tx,
    db: &Db,
    id: i64,
    owner: Option<i64>,
    how: Revocation<'_>,
) -> Result<bool, sqlx::Error> {
    let Some(row) = keys::get(tx, id, owner).await? else {
        return Ok(false);
    };
    record(tx, &[row], how).await?;
    keys::delete(tx, db, id, owner).await
}

/// Revokes every key of `user_id` in one feed change; returns how many.
pub async fn revoke_all_of(
    tx: &mut Tx,
    db: &Db,
    user_id: i64,
    how: Revocation<'_>,
) -> Result<usize, sqlx::Error> {
    let rows = keys::list(tx, Some(user_id)).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    record(tx, &rows, how).await?;
    let version = feed::bump(tx, db).await?;
    feed::log_user_keys(tx, version, user_id).await?;
    sqlx::query(
        "DELETE FROM api_key_servers WHERE key_id IN (SELECT id FROM api_keys WHERE user_id = $1)",
    )
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM api_keys WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(rows.len())
}

macro_rules! columns {
    () => {
        "id, user_id, username, name, description, server_ids, created_at, expires_at, \
         last_used_at, revoked_at, revoked_by, reason"
    };
}

/// Revoked keys newest first; all, or one user's.
pub async fn list(conn: &mut Conn, owner: Option<i64>) -> Result<Vec<RevokedRow>, sqlx::Error> {
    match owner {
        Some(uid) => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM revoked_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
            ))
            .bind(uid)
            .fetch_all(conn)
            .await
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM revoked_keys ORDER BY created_at DESC, id DESC"
            ))
            .fetch_all(conn)
            .await
        }
    }
}

/// One revoked key; with `owner`, only if it was that user's.
pub async fn get(
    conn: &mut Conn,
    id: i64,
    owner: Option<i64>,
) -> Result<Option<RevokedRow>, sqlx::Error> {
    let row: Option<RevokedRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM revoked_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.filter(|r| owner.is_none_or(|o| o == r.user_id)))
}
