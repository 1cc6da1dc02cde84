//! Queries on API keys. Only the SHA-256 of a secret is stored.

use super::{Conn, Db, Tx, feed, flag};
use crate::domain::{ServerSelection, now_unix};
use std::collections::HashMap;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyHead {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub all_servers: i64,
    /// Set while the key is turned off.
    pub disabled_at: Option<i64>,
    /// Why, when the key policy's sweep turned it off (else `None`).
    pub disabled_reason: Option<String>,
    /// The last rotation (see [`super::key_rotation`]).
    pub rotated_at: Option<i64>,
    /// When the secret the last rotation replaced stops (an overlap), and
    /// its latest use the edge reported; both may lie in the past.
    pub previous_secret_expires_at: Option<i64>,
    pub previous_secret_used_at: Option<i64>,
}

/// A key record as the API shows it (never the secret or its hash).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub head: KeyHead,
    /// `["*"]` or the named servers left in scope.
    pub server_ids: Vec<String>,
}

fn assemble(heads: Vec<KeyHead>, pairs: Vec<(i64, String)>) -> Vec<KeyRow> {
    let mut by_key: HashMap<i64, Vec<String>> = HashMap::new();
    for (k, s) in pairs {
        by_key.entry(k).or_default().push(s);
    }
    heads
        .into_iter()
        .map(|head| {
            let server_ids = if head.all_servers == 1 {
                vec!["*".to_owned()]
            } else {
                let mut v = by_key.remove(&head.id).unwrap_or_default();
                v.sort();
                v
            };
            KeyRow { head, server_ids }
        })
        .collect()
}

/// Keys newest first; all keys, or one user's.
pub async fn list(conn: &mut Conn, owner: Option<i64>) -> Result<Vec<KeyRow>, sqlx::Error> {
    let (heads, pairs): (Vec<KeyHead>, Vec<(i64, String)>) = match owner {
        Some(uid) => (
            sqlx::query_as(
                "SELECT k.id, k.user_id, u.username, k.name, k.description, k.created_at, \
                 k.expires_at, k.last_used_at, k.all_servers, k.disabled_at, k.disabled_reason, \
                 k.rotated_at, k.previous_secret_expires_at, k.previous_secret_used_at \
                 FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.user_id = $1 \
                 ORDER BY k.created_at DESC, k.id DESC",
            )
            .bind(uid)
            .fetch_all(&mut *conn)
            .await?,
            sqlx::query_as(
                "SELECT s.key_id, s.server_name FROM api_key_servers s \
                 JOIN api_keys k ON k.id = s.key_id WHERE k.user_id = $1",
            )
            .bind(uid)
            .fetch_all(&mut *conn)
            .await?,
        ),
        None => (
            sqlx::query_as(
                "SELECT k.id, k.user_id, u.username, k.name, k.description, k.created_at, \
                 k.expires_at, k.last_used_at, k.all_servers, k.disabled_at, k.disabled_reason, \
                 k.rotated_at, k.previous_secret_expires_at, k.previous_secret_used_at \
                 FROM api_keys k JOIN users u ON u.id = k.user_id \
                 ORDER BY k.created_at DESC, k.id DESC",
            )
            .fetch_all(&mut *conn)
            .await?,
            sqlx::query_as("SELECT key_id, server_name FROM api_key_servers")
                .fetch_all(&mut *conn)
                .await?,
        ),
    };
    Ok(assemble(heads, pairs))
}

/// One page of keys, newest first (all keys, or one user's), and how many
/// match in all. Server names are read for the page's keys only, so a page
/// costs the same with ten keys or a hundred thousand.
pub async fn list_page(
    conn: &mut Conn,
    owner: Option<i64>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<KeyRow>, i64), sqlx::Error> {
    // `$1 IS NULL` keeps one query text for both (owner given or not); the
    // cast names the parameter's type for PostgreSQL.
    macro_rules! filter {
        () => {
            "WHERE (CAST($1 AS BIGINT) IS NULL OR k.user_id = $1)"
        };
    }
    macro_rules! page {
        () => {
            concat!(
                "SELECT k.id FROM api_keys k ",
                filter!(),
                " ORDER BY k.created_at DESC, k.id DESC LIMIT $2 OFFSET $3"
            )
        };
    }
    let total: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*) FROM api_keys k ", filter!()))
        .bind(owner)
        .fetch_one(&mut *conn)
        .await?;
    let heads: Vec<KeyHead> = sqlx::query_as(concat!(
        "SELECT k.id, k.user_id, u.username, k.name, k.description, k.created_at, \
         k.expires_at, k.last_used_at, k.all_servers, k.disabled_at, k.disabled_reason, \
         k.rotated_at, k.previous_secret_expires_at, k.previous_secret_used_at \
         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id IN (",
        page!(),
        ") ORDER BY k.created_at DESC, k.id DESC"
    ))
    .bind(owner)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let pairs: Vec<(i64, String)> = sqlx::query_as(concat!(
        "SELECT key_id, server_name FROM api_key_servers WHERE key_id IN (",
        page!(),
        ")"
    ))
    .bind(owner)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok((assemble(heads, pairs), total))
}

/// One key; with `owner`, only if it belongs to that user.
pub async fn get(
    conn: &mut Conn,
    id: i64,
    owner: Option<i64>,
) -> Result<Option<KeyRow>, sqlx::Error> {
    let head: Option<KeyHead> = sqlx::query_as(
        "SELECT k.id, k.user_id, u.username, k.name, k.description, k.created_at, \
         k.expires_at, k.last_used_at, k.all_servers, k.disabled_at, k.disabled_reason, \
         k.rotated_at, k.previous_secret_expires_at, k.previous_secret_used_at \
         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(head) = head.filter(|h| owner.is_none_or(|o| o == h.user_id)) else {
        return Ok(None);
    };
    let pairs: Vec<(i64, String)> =
        sqlx::query_as("SELECT key_id, server_name FROM api_key_servers WHERE key_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(assemble(vec![head], pairs).pop())
}

/// Keys that count against the owner's limit: every key in `api_keys`
/// (revoked keys live in `revoked_keys` and do not count). Call it
/// inside [`Db::begin_write`]'s transaction: that holds the feed's write lock
/// (SQLite `BEGIN IMMEDIATE`, the PostgreSQL `feed_state` row lock) until
/// commit, so concurrent creates are serialized and none can pass a stale count.
pub async fn count_active(tx: &mut Tx, user_id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await
}

pub struct NewKey<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub description: &'a str,
    pub secret_hash_hex: String,
    pub scope: &'a ServerSelection,
    pub expires_at: Option<i64>,
}

/// Inserts a key and logs it for the feed; returns its id.
pub async fn create(tx: &mut Tx, db: &Db, k: NewKey<'_>) -> Result<i64, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_keys (user_id, name, description, secret_hash, all_servers, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(k.user_id)
    .bind(k.name)
    .bind(k.description)
    .bind(k.secret_hash_hex)
    .bind(flag(*k.scope == ServerSelection::All))
    .bind(now_unix())
    .bind(k.expires_at)
    .fetch_one(&mut **tx)
    .await?;
    if let ServerSelection::Named(names) = k.scope {
        for n in names {
            sqlx::query("INSERT INTO api_key_servers (key_id, server_name) VALUES ($1, $2)")
                .bind(id)
                .bind(n.as_str())
                .execute(&mut **tx)
                .await?;
        }
    }
    let version = feed::bump(tx, db).await?;
    feed::log_key(tx, version, id).await?;
    Ok(id)
}

/// Deletes a key (only the owner's, with `owner`). Returns false if absent.
pub async fn delete(
    tx: &mut Tx,
    db: &Db,
    id: i64,
    owner: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let user: Option<i64> = sqlx::query_scalar("SELECT user_id FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    match user {
        Some(u) if owner.is_none_or(|o| o == u) => {}
        _ => return Ok(false),
    }
    let version = feed::bump(tx, db).await?;
    feed::log_key(tx, version, id).await?;
    sqlx::query("DELETE FROM api_key_servers WHERE key_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Edits of a key's details; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct KeyEdits {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<i64>>,
}

/// Applies `edits` to key `id` (already checked to exist and to be the
/// caller's). An expiry change goes to the feed: the edge enforces expiry.
pub async fn edit(tx: &mut Tx, db: &Db, id: i64, edits: &KeyEdits) -> Result<(), sqlx::Error> {
    if let Some(name) = &edits.name {
        sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2")
            .bind(name.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(description) = &edits.description {
        sqlx::query("UPDATE api_keys SET description = $1 WHERE id = $2")
            .bind(description.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(expires_at) = edits.expires_at {
        sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let version = feed::bump(tx, db).await?;
        feed::log_key(tx, version, id).await?;
    }
    Ok(())
}

/// What authenticating a key needs.
#[derive(sqlx::FromRow)]
pub struct KeyAuth {
    pub user_id: i64,
    pub secret_hash: String,
    pub expires_at: Option<i64>,
    /// The secret a rotation replaced and when it stops (an overlap).
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
}

/// A key that may authenticate: the same keys the edge holds
/// ([`feed::LIVE_KEY`]), so `/api/me` agrees with the edge.
pub async fn auth_lookup(conn: &mut Conn, id: i64) -> Result<Option<KeyAuth>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT user_id, secret_hash, expires_at, previous_secret_hash, \
         previous_secret_expires_at FROM api_keys WHERE id = $1 AND ",
        feed::live_key!()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Turns a key off (`enabled: false`) or on again (only the owner's, with
/// `owner`) at `now`. `None` when there is no such key; `Some(changed)` otherwise. A
/// change goes to the feed like a deletion (off) or a creation (on). Turning
/// a key on clears why it was off and restarts its unused clock
/// (`enabled_at`), so the key policy's sweep does not take it again at once.
pub async fn set_enabled(
    tx: &mut Tx,
    db: &Db,
    id: i64,
    owner: Option<i64>,
    enabled: bool,
    by: i64,
    now: i64,
) -> Result<Toggle, sqlx::Error> {
    let row: Option<(i64, Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT user_id, disabled_at, disabled_by FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let (disabled_at, disabled_by) = match row {
        Some((user, at, by)) if owner.is_none_or(|o| o == user) => (at, by),
        _ => return Ok(Toggle::NotFound),
    };
    if disabled_at.is_none() == enabled {
        // An admin turning off a key its owner (or the unused-key sweep)
        // already turned off takes the hold over, so the owner cannot turn
        // it back on: otherwise the admin's containment would be a no-op.
        if !enabled && owner.is_none() && disabled_by != Some(by) {
            sqlx::query(
                "UPDATE api_keys SET disabled_by = $1, disabled_reason = NULL WHERE id = $2",
            )
            .bind(by)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            return Ok(Toggle::HeldByAdmin);
        }
        return Ok(Toggle::Unchanged);
    }
    // On the owner's route, a key someone else (an admin) turned off stays off.
    if enabled && owner.is_some() && disabled_by.is_some_and(|d| Some(d) != owner) {
        return Ok(Toggle::DisabledByAdmin);
    }
    if enabled {
        sqlx::query(
            "UPDATE api_keys SET disabled_at = NULL, disabled_by = NULL, \
             disabled_reason = NULL, enabled_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query("UPDATE api_keys SET disabled_at = $1, disabled_by = $2 WHERE id = $3")
            .bind(now)
            .bind(by)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let version = feed::bump(tx, db).await?;
    feed::log_key(tx, version, id).await?;
    Ok(Toggle::Changed)
}

/// What [`set_enabled`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Toggle {
    Changed,
    Unchanged,
    NotFound,
    /// The owner asked to turn on a key an admin turned off.
    DisabledByAdmin,
    /// An admin turned off a key that was already off (by its owner or the
    /// key policy): nothing changes at the edge, but only an admin can turn
    /// it on now.
    HeldByAdmin,
}

/// Keeps the later of the stored and reported last use; unknown keys match no row.
pub async fn record_use(conn: &mut Conn, id: i64, last_used_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $1 \
         WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
    )
    .bind(last_used_at)
    .bind(id)
    .execute(conn)
    .await
    .map(|_| ())
}

pub fn is_expired(expires_at: Option<i64>) -> bool {
    expires_at.is_some_and(|e| e <= now_unix())
}
