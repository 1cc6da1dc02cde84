//! The key-table feed's storage: the version counter, the change log, and
//! building the edge's view of keys (effective servers = scope ∩ access).
//!
//! Writers call [`bump`] inside their transaction: the `UPDATE … RETURNING`
//! takes the single `feed_state` row lock, so versions are handed out in
//! commit order and a reader that sees version V has every change ≤ V.

use super::{Backend, Conn, Db, Tx};
use keygate_protocol::{KeyEntry, SecretHash, ServerScope};
use std::collections::{BTreeSet, HashMap};

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
        sqlx::query("NOTIFY keygate_feed")
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

/// Distinct keys changed after `since` (by index on version).
pub async fn changed_since(conn: &mut Conn, since: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT key_id FROM key_changes WHERE version > $1")
        .bind(since)
        .fetch_all(conn)
        .await
}

/// Which servers a user can reach through access rules.
pub async fn user_access(conn: &mut Conn, user_id: i64) -> Result<ServerScope, sqlx::Error> {
    let all: Option<i64> = sqlx::query_scalar(
        "SELECT r.id FROM access_rules r WHERE r.all_servers = 1 AND (r.all_subjects = 1 OR \
         EXISTS (SELECT 1 FROM access_rule_subjects s WHERE s.rule_id = r.id AND s.user_id = $1)) \
         LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    if all.is_some() {
        return Ok(ServerScope::All);
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT rs.server_name FROM access_rule_servers rs \
         JOIN access_rules r ON r.id = rs.rule_id WHERE r.all_subjects = 1 OR \
         EXISTS (SELECT 1 FROM access_rule_subjects s WHERE s.rule_id = r.id AND s.user_id = $1) \
         ORDER BY rs.server_name",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ServerScope::Named(names))
}

/// Scope ∩ access. A `*` key follows its owner's access; a named key keeps
/// only servers its owner can still reach.
pub fn effective(scope: &ServerScope, access: &ServerScope) -> ServerScope {
    match (scope, access) {
        (ServerScope::All, a) => a.clone(),
        (s, ServerScope::All) => s.clone(),
        (ServerScope::Named(s), ServerScope::Named(a)) => {
            let a: BTreeSet<&String> = a.iter().collect();
            let mut v: Vec<String> = s.iter().filter(|n| a.contains(n)).cloned().collect();
            v.sort();
            v.dedup();
            ServerScope::Named(v)
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeyFeedRow {
    id: i64,
    user_id: i64,
    secret_hash: String,
    expires_at: Option<i64>,
    all_servers: i64,
}

fn make_entry(row: KeyFeedRow, scope: &ServerScope, access: &ServerScope) -> Option<KeyEntry> {
    let servers = effective(scope, access);
    if servers.is_empty() {
        return None;
    }
    Some(KeyEntry {
        id: row.id,
        user_id: row.user_id,
        secret_hash: SecretHash::from_hex(&row.secret_hash)?,
        expires_at: row.expires_at,
        servers,
    })
}

/// The current edge entry of one key; `None` when it is gone or opens nothing.
/// `access_cache` avoids recomputing an owner's access within one delta.
pub async fn entry(
    conn: &mut Conn,
    key_id: i64,
    access_cache: &mut HashMap<i64, ServerScope>,
) -> Result<Option<KeyEntry>, sqlx::Error> {
    let row: Option<KeyFeedRow> = sqlx::query_as(
        "SELECT id, user_id, secret_hash, expires_at, all_servers FROM api_keys WHERE id = $1",
    )
    .bind(key_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let scope = if row.all_servers == 1 {
        ServerScope::All
    } else {
        ServerScope::Named(
            sqlx::query_scalar("SELECT server_name FROM api_key_servers WHERE key_id = $1")
                .bind(key_id)
                .fetch_all(&mut *conn)
                .await?,
        )
    };
    let access = match access_cache.get(&row.user_id) {
        Some(a) => a.clone(),
        None => {
            let a = user_access(conn, row.user_id).await?;
            access_cache.insert(row.user_id, a.clone());
            a
        }
    };
    Ok(make_entry(row, &scope, &access))
}

/// Every user's access, resolved in memory from all access rules (rules are
/// few, keys are many).
struct AccessRules {
    servers_of_rule: HashMap<i64, Vec<String>>,
    rules_of_user: HashMap<i64, Vec<i64>>,
    rule_all_servers: HashMap<i64, bool>,
    everyone_rules: Vec<i64>,
}

impl AccessRules {
    async fn load(conn: &mut Conn) -> Result<Self, sqlx::Error> {
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
        let mut servers_of_rule: HashMap<i64, Vec<String>> = HashMap::new();
        for (r, s) in rule_servers {
            servers_of_rule.entry(r).or_default().push(s);
        }
        let mut rules_of_user: HashMap<i64, Vec<i64>> = HashMap::new();
        for (r, u) in rule_subjects {
            rules_of_user.entry(u).or_default().push(r);
        }
        Ok(Self {
            servers_of_rule,
            rules_of_user,
            rule_all_servers: rules.iter().map(|r| (r.0, r.1 == 1)).collect(),
            everyone_rules: rules.iter().filter(|r| r.2 == 1).map(|r| r.0).collect(),
        })
    }

    fn of(&self, user: i64) -> ServerScope {
        let mut names = BTreeSet::new();
        let own = self
            .rules_of_user
            .get(&user)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for r in self.everyone_rules.iter().chain(own) {
            if self.rule_all_servers.get(r).copied().unwrap_or(false) {
                return ServerScope::All;
            }
            if let Some(s) = self.servers_of_rule.get(r) {
                names.extend(s.iter().cloned());
            }
        }
        ServerScope::Named(names.into_iter().collect())
    }
}

/// One page of the full snapshot: the keys with `id > after` (all keys when
/// `after` is `None`) in id order, at most `limit` of them (no limit when
/// `None`), as edge entries; keys that open nothing are left out. Also
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
    // One row more than asked tells whether another page follows.
    let fetch = limit.map_or(i64::MAX, |l| i64::from(l) + 1);
    let mut keys: Vec<KeyFeedRow> = sqlx::query_as(
        "SELECT id, user_id, secret_hash, expires_at, all_servers FROM api_keys \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(fetch)
    .fetch_all(&mut *conn)
    .await?;
    let next = match limit {
        Some(l) if keys.len() > l as usize => {
            keys.truncate(l as usize);
            keys.last().map(|k| k.id)
        }
        _ => None,
    };
    let Some(last) = keys.last().map(|k| k.id) else {
        return Ok((Vec::new(), None));
    };
    let access = AccessRules::load(conn).await?;
    let key_servers: Vec<(i64, String)> = sqlx::query_as(
        "SELECT key_id, server_name FROM api_key_servers WHERE key_id > $1 AND key_id <= $2",
    )
    .bind(after)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let mut scope_of_key: HashMap<i64, Vec<String>> = HashMap::new();
    for (k, s) in key_servers {
        scope_of_key.entry(k).or_default().push(s);
    }
    let mut access_cache: HashMap<i64, ServerScope> = HashMap::new();
    let mut out = Vec::with_capacity(keys.len());
    for row in keys {
        let scope = if row.all_servers == 1 {
            ServerScope::All
        } else {
            ServerScope::Named(scope_of_key.remove(&row.id).unwrap_or_default())
        };
        let access = access_cache
            .entry(row.user_id)
            .or_insert_with(|| access.of(row.user_id));
        if let Some(e) = make_entry(row, &scope, access) {
            out.push(e);
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(v: &[&str]) -> ServerScope {
        ServerScope::Named(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn effective_is_scope_intersect_access() {
        assert_eq!(
            effective(&ServerScope::All, &ServerScope::All),
            ServerScope::All
        );
        assert_eq!(effective(&ServerScope::All, &named(&["a"])), named(&["a"]));
        assert_eq!(effective(&named(&["a"]), &ServerScope::All), named(&["a"]));
        assert_eq!(
            effective(&named(&["a", "b"]), &named(&["b", "c"])),
            named(&["b"])
        );
        assert!(effective(&named(&["a"]), &named(&[])).is_empty());
    }
}
