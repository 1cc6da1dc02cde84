//! The key-table feed's storage: the version counter, the change log, and
//! building the edge's view of keys (effective servers = scope ∩ access, as
//! decided by [`crate::domain::access`]; this file only loads rules).
//!
//! Writers call [`bump`] inside their transaction: the `UPDATE … RETURNING`
//! takes the single `feed_state` row lock, so versions are handed out in
//! commit order and a reader that sees version V has every change ≤ V.

use super::{Backend, Conn, Db, Tx};
use crate::domain::Subjects;
use crate::domain::access::{AccessRule, access_of, effective};
use crate::domain::now_unix;
use keygate_protocol::{KeyEntry, PreviousSecret, SecretHash, ServerScope};
use std::collections::HashMap;

/// The PostgreSQL channel a commit that changes the key table is announced on
/// (`NOTIFY` here, `LISTEN` in [`crate::feed::listen_postgres`]).
pub const PG_CHANNEL: &str = "keygate_feed";

/// Bumps the feed version, prunes the change log to the retention window and,
/// on PostgreSQL, queues a NOTIFY that other replicas receive on commit.
pub async fn bump(tx: &mut Tx, db: &Db) -> Result<i64, sqlx::Error> {
    let (version, floor): (i64, i64) = sqlx::query_as(
        "UPDATE feed_state SET version = version + 1 WHERE id = 1 RETURNING version, log_floor",
    )
    .fetch_one(&mut **tx)
    .await?;
    let new_floor = version - db.feed_log_retention;
    if new_floor > floor {
        sqlx::query("DELETE FROM key_changes WHERE version <= $1")
            .bind(new_floor)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE feed_state SET log_floor = $1 WHERE id = 1")
            .bind(new_floor)
            .execute(&mut **tx)
            .await?;
    }
    if db.backend == Backend::Postgres {
        // `pg_notify` takes the channel as a parameter, so the name is
        // written once, here, for both this NOTIFY and the LISTEN.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(PG_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(version)
}

pub async fn log_key(tx: &mut Tx, version: i64, key_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO key_changes (version, key_id) VALUES ($1, $2)")
        .bind(version)
        .bind(key_id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

pub async fn log_user_keys(tx: &mut Tx, version: i64, user_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO key_changes (version, key_id) SELECT $1, id FROM api_keys WHERE user_id = $2",
    )
    .bind(version)
    .bind(user_id)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

pub async fn log_all_keys(tx: &mut Tx, version: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO key_changes (version, key_id) SELECT $1, id FROM api_keys")
        .bind(version)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// `(version, log_floor)`: deltas can be served for any `since >= log_floor`.
pub async fn state(conn: &mut Conn) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT version, log_floor FROM feed_state WHERE id = 1")
        .fetch_one(conn)
        .await
}

/// Which servers a user can reach: [`access_of`] over the rules that apply
/// to them. Only those rules are read (the ones for everyone, and the ones
/// naming this user); the decision itself is the pure function's.
pub async fn user_access(conn: &mut Conn, user_id: i64) -> Result<ServerScope, sqlx::Error> {
    let rules: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT r.id, r.all_servers, r.all_subjects FROM access_rules r WHERE r.all_subjects = 1 \
         OR EXISTS (SELECT 1 FROM access_rule_subjects s WHERE s.rule_id = r.id AND s.user_id = $1)",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let rule_servers: Vec<(i64, String)> = sqlx::query_as(
        "SELECT rs.rule_id, rs.server_name FROM access_rule_servers rs \
         JOIN access_rules r ON r.id = rs.rule_id WHERE r.all_servers = 0 AND (r.all_subjects = 1 \
         OR EXISTS (SELECT 1 FROM access_rule_subjects s WHERE s.rule_id = r.id AND s.user_id = $1))",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    // The rules were read because they apply to this user: a listed rule's
    // subjects are, as far as this decision goes, just this user.
    let rules = assemble_rules(rules, rule_servers, |_| vec![user_id]);
    Ok(access_of(&rules, user_id))
}

/// Every access rule, for deciding many users at once (a snapshot page):
/// rules are few, keys are many.
async fn all_rules(conn: &mut Conn) -> Result<Vec<AccessRule>, sqlx::Error> {
    let rules: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT id, all_servers, all_subjects FROM access_rules")
            .fetch_all(&mut *conn)
            .await?;
    let rule_servers: Vec<(i64, String)> =
        sqlx::query_as("SELECT rule_id, server_name FROM access_rule_servers")
            .fetch_all(&mut *conn)
            .await?;
    let rule_subjects: Vec<(i64, i64)> =
        sqlx::query_as("SELECT rule_id, user_id FROM access_rule_subjects")
            .fetch_all(&mut *conn)
            .await?;
    let mut subjects_of_rule: HashMap<i64, Vec<i64>> = HashMap::new();
    for (rule, user) in rule_subjects {
        subjects_of_rule.entry(rule).or_default().push(user);
    }
    Ok(assemble_rules(rules, rule_servers, |rule| {
        subjects_of_rule.remove(&rule).unwrap_or_default()
    }))
}

/// Rows `(id, all_servers, all_subjects)` and `(rule_id, server)` as rules;
/// `users_of` gives a rule's listed users.
fn assemble_rules(
    rules: Vec<(i64, i64, i64)>,
    rule_servers: Vec<(i64, String)>,
    mut users_of: impl FnMut(i64) -> Vec<i64>,
) -> Vec<AccessRule> {
    let mut servers_of_rule: HashMap<i64, Vec<String>> = HashMap::new();
    for (rule, server) in rule_servers {
        servers_of_rule.entry(rule).or_default().push(server);
    }
    rules
        .into_iter()
        .map(|(id, all_servers, all_subjects)| {
            let servers = if all_servers == 1 {
                ServerScope::All
            } else {
                ServerScope::Named(servers_of_rule.remove(&id).unwrap_or_default())
            };
            let subjects = if all_subjects == 1 {
                Subjects::Everyone
            } else {
                Subjects::Users(users_of(id))
            };
            AccessRule::new(servers, subjects)
        })
        .collect()
}

/// Which `api_keys` rows the edge holds, as an SQL condition on a query
/// `FROM api_keys`: a disabled key, and every key of a suspended user, is
/// left out, exactly like a deleted one, so it gets the same 401 within the
/// same time. Expired keys stay (the edge knows their expiry).
macro_rules! live_key {
    () => {
        "api_keys.disabled_at IS NULL AND NOT EXISTS (SELECT 1 FROM users su \
         WHERE su.id = api_keys.user_id AND su.suspended_at IS NOT NULL)"
    };
}
pub(crate) use live_key;

/// The same condition, for documentation links.
pub const LIVE_KEY: &str = live_key!();

/// Every registered MCP server, by name: sent with every feed answer, so
/// the edge refuses every key on any other name.
pub async fn registered_servers(conn: &mut Conn) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM mcp_servers ORDER BY name")
        .fetch_all(conn)
        .await
}

#[derive(sqlx::FromRow)]
struct KeyFeedRow {
    id: i64,
    user_id: i64,
    secret_hash: String,
    expires_at: Option<i64>,
    all_servers: i64,
    previous_secret_hash: Option<String>,
    previous_secret_expires_at: Option<i64>,
}

/// The columns of a [`KeyFeedRow`], for queries `FROM api_keys`.
macro_rules! feed_columns {
    () => {
        "id, user_id, secret_hash, expires_at, all_servers, previous_secret_hash, \
         previous_secret_expires_at"
    };
}

/// A key's edge entry. A key that opens no server now (its owner lost
/// access, or its servers were deleted) keeps its entry with no servers: it
/// is still a valid key, so the edge answers 403 on MCP servers and lets it
/// through to `/api/me`, as the control plane does, rather than 401.
///
/// The secret a rotation replaced rides along until its deadline (`now`
/// decides only whether to send it: the edge enforces the deadline itself,
/// so an entry sent before it needs no later change).
fn make_entry(
    row: KeyFeedRow,
    scope: &ServerScope,
    access: &ServerScope,
    now: i64,
) -> Option<KeyEntry> {
    let servers = effective(scope, access);
    let previous_secret = match (row.previous_secret_hash, row.previous_secret_expires_at) {
        (Some(hash), Some(expires_at)) if now < expires_at => Some(PreviousSecret {
            hash: SecretHash::from_hex(&hash)?,
            expires_at,
        }),
        _ => None,
    };
    Some(KeyEntry {
        id: row.id,
        user_id: row.user_id,
        secret_hash: SecretHash::from_hex(&row.secret_hash)?,
        expires_at: row.expires_at,
        servers,
        previous_secret,
    })
}

/// Rows a page query asks for: one more than the page holds, which tells
/// whether another page follows ([`cut_page`]); all when unpaged.
fn rows_to_fetch(limit: Option<u32>) -> i64 {
    limit.map_or(i64::MAX, |l| i64::from(l) + 1)
}

/// Cuts rows fetched with [`rows_to_fetch`] to the page; returns the id to
/// continue after (the page's last) when more follow.
fn cut_page<T>(rows: &mut Vec<T>, limit: Option<u32>, id: impl Fn(&T) -> i64) -> Option<i64> {
    let limit = usize::try_from(limit?).ok()?;
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(id)
}

/// One page of the full snapshot: the keys with `id > after` (all keys when
/// `after` is `None`) in id order, at most `limit` of them (no limit when
/// `None`), as edge entries; keys the edge must refuse are left out. Also
/// returns the id to continue after when more keys follow.
///
/// Keys and their scopes are read by primary-key range, so a page costs
/// O(limit) however large the table is, and only one page is ever in memory.
pub async fn snapshot_page(
    conn: &mut Conn,
    after: Option<i64>,
    limit: Option<u32>,
) -> Result<(Vec<KeyEntry>, Option<i64>), sqlx::Error> {
    let after = after.unwrap_or(i64::MIN);
    let mut keys: Vec<KeyFeedRow> = sqlx::query_as(concat!(
        "SELECT ",
        feed_columns!(),
        " FROM api_keys WHERE id > $1 AND ",
        live_key!(),
        " ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(rows_to_fetch(limit))
    .fetch_all(&mut *conn)
    .await?;
    let next = cut_page(&mut keys, limit, |k| k.id);
    let Some(last) = keys.last().map(|k| k.id) else {
        return Ok((Vec::new(), None));
    };
    let key_servers: Vec<(i64, String)> = sqlx::query_as(
        "SELECT key_id, server_name FROM api_key_servers WHERE key_id > $1 AND key_id <= $2",
    )
    .bind(after)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    Ok((entries(conn, keys, key_servers).await?, next))
}

/// One page of the changes after `since` up to and including `upto`: the
/// distinct keys logged in that range with `id > after` (all when `after`
/// is `None`), in id order, at most `limit` of them (no limit when `None`).
/// Each is returned as its current edge entry, or as a removal when the edge
/// must refuse it now (deleted, disabled, owner suspended; see [`LIVE_KEY`]).
/// Also returns the id to continue after when more changed keys follow.
///
/// The upper bound pins the page to the version it names, so every edge
/// asking at that version gets the same answer; keys, scopes and rules are
/// read in one query each, so a page costs O(limit), not O(limit) queries.
pub async fn changes_page(
    conn: &mut Conn,
    since: i64,
    upto: i64,
    after: Option<i64>,
    limit: Option<u32>,
) -> Result<(Vec<KeyEntry>, Vec<i64>, Option<i64>), sqlx::Error> {
    let after = after.unwrap_or(i64::MIN);
    let mut changed: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT key_id FROM key_changes WHERE version > $1 AND version <= $2 \
         AND key_id > $3 ORDER BY key_id LIMIT $4",
    )
    .bind(since)
    .bind(upto)
    .bind(after)
    .bind(rows_to_fetch(limit))
    .fetch_all(&mut *conn)
    .await?;
    let next = cut_page(&mut changed, limit, |id| *id);
    let Some(last) = changed.last().copied() else {
        return Ok((Vec::new(), Vec::new(), None));
    };
    // The page's ids again, as a subquery (binds $1..$4 as below): no bind
    // list of page size.
    macro_rules! page_ids {
        () => {
            "(SELECT key_id FROM key_changes WHERE version > $1 AND version <= $2 \
             AND key_id > $3 AND key_id <= $4)"
        };
    }
    let keys: Vec<KeyFeedRow> = sqlx::query_as(concat!(
        "SELECT ",
        feed_columns!(),
        " FROM api_keys WHERE id IN ",
        page_ids!(),
        " AND ",
        live_key!(),
        " ORDER BY id"
    ))
    .bind(since)
    .bind(upto)
    .bind(after)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let key_servers: Vec<(i64, String)> = sqlx::query_as(concat!(
        "SELECT key_id, server_name FROM api_key_servers WHERE key_id IN ",
        page_ids!()
    ))
    .bind(since)
    .bind(upto)
    .bind(after)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let upserts = entries(conn, keys, key_servers).await?;
    let mut upserted = upserts.iter().map(|e| e.id).peekable();
    // Both lists are in id order: every changed id without an entry is gone.
    let removals = changed
        .into_iter()
        .filter(|id| {
            while upserted.next_if(|u| u < id).is_some() {}
            upserted.next_if_eq(id).is_none()
        })
        .collect();
    Ok((upserts, removals, next))
}

/// Edge entries for `keys` (in their order), given the named servers of
/// those keys. Every rule is read once, and each owner's access decided once
/// by [`access_of`]: rules are few, keys are many.
async fn entries(
    conn: &mut Conn,
    keys: Vec<KeyFeedRow>,
    key_servers: Vec<(i64, String)>,
) -> Result<Vec<KeyEntry>, sqlx::Error> {
    let rules = all_rules(conn).await?;
    let mut scope_of_key: HashMap<i64, Vec<String>> = HashMap::new();
    for (k, s) in key_servers {
        scope_of_key.entry(k).or_default().push(s);
    }
    let mut access_cache: HashMap<i64, ServerScope> = HashMap::new();
    let mut out = Vec::with_capacity(keys.len());
    let now = now_unix();
    for row in keys {
        let scope = if row.all_servers == 1 {
            ServerScope::All
        } else {
            ServerScope::Named(scope_of_key.remove(&row.id).unwrap_or_default())
        };
        let access = access_cache
            .entry(row.user_id)
            .or_insert_with(|| access_of(&rules, row.user_id));
        if let Some(e) = make_entry(row, &scope, access, now) {
            out.push(e);
        }
    }
    Ok(out)
}
