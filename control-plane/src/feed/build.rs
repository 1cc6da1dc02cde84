//! The database reads behind one feed answer, at a version the caller has
//! already read ([`crate::feed::Hub`] reads it once per replica).
//!
//! Every answer carries the version read *before* its keys, so it is never
//! older than the version it names; anything that commits meanwhile is
//! simply shipped again next time, which is harmless because entries are
//! whole states, not diffs.

use crate::db::{self, Conn};
use keygate_protocol::KeyTable;
use std::collections::HashMap;

/// One page of the full snapshot at `version`: whole when `limit` is `None`,
/// else at most `limit` keys after key id `after` (from the first key when
/// `None`), with `next` set when more follow.
///
/// Pages are read at different versions. That is safe because the edge keeps
/// the version of the *first* page and, after the last one, asks for the
/// delta since it, which re-ships every key changed while it was paging.
pub async fn snapshot(
    conn: &mut Conn,
    version: u64,
    after: Option<i64>,
    limit: Option<u32>,
    servers: &[String],
) -> Result<KeyTable, sqlx::Error> {
    let (upserts, next) = db::feed::snapshot_page(conn, after, limit).await?;
    Ok(KeyTable {
        version,
        full: true,
        upserts,
        removals: Vec::new(),
        next,
        registered_servers: Some(servers.to_vec()),
    })
}

/// The keys changed after `since` up to `version`, each as its current
/// entry or its removal; `None` when the change log no longer reaches
/// `since` (pruned, perhaps while reading), so only a snapshot can answer.
/// Deltas are never paged.
pub async fn delta(
    conn: &mut Conn,
    since: u64,
    version: u64,
    servers: &[String],
) -> Result<Option<KeyTable>, sqlx::Error> {
    let (Ok(since_i), Ok(version_i)) = (i64::try_from(since), i64::try_from(version)) else {
        return Ok(None);
    };
    let changed = db::feed::changed_between(conn, since_i, version_i).await?;
    // Read after the log, so a prune that ran meanwhile is seen.
    let (_, floor) = db::feed::state(conn).await?;
    if since_i < floor {
        return Ok(None);
    }
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    let mut access_cache = HashMap::new();
    for key_id in changed {
        match db::feed::entry(conn, key_id, &mut access_cache).await? {
            Some(e) => upserts.push(e),
            None => removals.push(key_id),
        }
    }
    upserts.sort_by_key(|e| e.id);
    removals.sort_unstable();
    Ok(Some(KeyTable {
        version,
        full: false,
        upserts,
        removals,
        next: None,
        registered_servers: Some(servers.to_vec()),
    }))
}

/// Nothing to tell after `version`: the answer of a long poll that timed
/// out (or was released by a shutdown) at the current version.
pub fn empty(version: u64, servers: &[String]) -> KeyTable {
    KeyTable {
        version,
        full: false,
        upserts: Vec::new(),
        removals: Vec::new(),
        next: None,
        registered_servers: Some(servers.to_vec()),
    }
}
