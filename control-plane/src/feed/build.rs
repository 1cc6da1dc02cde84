//! The database reads behind one feed answer, at a version the caller has
//! already read ([`crate::feed::Hub`] reads it once per replica).
//!
//! Every answer carries the version read *before* its keys, so it is never
//! older than the version it names; anything that commits meanwhile is
//! simply shipped again next time, which is harmless because entries are
//! whole states, not diffs.

use crate::db::{self, Conn};
use keygate_protocol::KeyTable;

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
/// entry or its removal: all of them, or (`limit`) a page of at most `limit`
/// keys with an id above `after`, with `next` set when more follow. `None`
/// when the change log no longer reaches `since` (pruned, perhaps while
/// reading), so only a snapshot can answer.
///
/// Like snapshot pages, the pages of one delta may be read at different
/// versions: each names its own, the edge keeps the first page's and asks
/// for the delta since it after the last page, and a later page is a
/// superset of what it would have been at the first page's version.
pub async fn delta(
    conn: &mut Conn,
    since: u64,
    version: u64,
    after: Option<i64>,
    limit: Option<u32>,
    servers: &[String],
) -> Result<Option<KeyTable>, sqlx::Error> {
    let (Ok(since_i), Ok(version_i)) = (i64::try_from(since), i64::try_from(version)) else {
        return Ok(None);
    };
    let (upserts, removals, next) =
        db::feed::changes_page(conn, since_i, version_i, after, limit).await?;
    // Read after the log, so a prune that ran meanwhile is seen.
    let (_, floor) = db::feed::state(conn).await?;
    if since_i < floor {
        return Ok(None);
    }
    Ok(Some(KeyTable {
        version,
        full: false,
        upserts,
        removals,
        next,
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
