//! The key-table feed the edge polls: snapshots, deltas and long-poll wake-ups.
//!
//! A delta reads the current version first and then the keys changed after
//! `since`, shipping each key's *current* entry (or its removal). Reading in
//! this order means an answer is never older than the version it carries;
//! anything that commits meanwhile is simply shipped again next time, which is
//! harmless because entries are whole states, not diffs.
//!
//! Waiters wake on a local [`tokio::sync::watch`] bumped after every local
//! commit and, on PostgreSQL, by a LISTEN on [`PG_CHANNEL`] for commits made
//! through other replicas. A periodic re-check bounds the damage of a lost
//! notification.

use crate::db::feed::PG_CHANNEL;
use crate::db::{self, Db};
use keygate_protocol::KeyTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Wakes long polls. Cheap to clone.
#[derive(Clone)]
pub struct FeedNotifier {
    tx: watch::Sender<u64>,
    closing: Arc<AtomicBool>,
}

impl Default for FeedNotifier {
    fn default() -> Self {
        Self {
            tx: watch::channel(0).0,
            closing: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl FeedNotifier {
    /// Ends every waiting long poll (with what it has), for a prompt shutdown.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.changed();
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Wakes every waiting long poll. [`crate::db::FeedTx::commit`] calls it
    /// after each committed change; PostgreSQL notifications from other
    /// replicas call it too.
    pub fn changed(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Builds a full snapshot at (at least) the current version: whole when
/// `limit` is `None`, else the page of at most `limit` keys after key id
/// `after` (from the first key when `None`), with `next` set when more follow.
///
/// Pages are read at different versions. That is safe because the edge keeps
/// the version of the *first* page and, after the last one, asks for the
/// delta since it, which re-ships every key changed while it was paging.
pub async fn full(
    conn: &mut db::Conn,
    after: Option<i64>,
    limit: Option<u32>,
) -> Result<KeyTable, sqlx::Error> {
    // The version is read before the keys, so the page is never older than it.
    let (version, _) = db::feed::state(conn).await?;
    let (upserts, next) = db::feed::snapshot_page(conn, after, limit).await?;
    Ok(KeyTable {
        version: u64::try_from(version).unwrap_or(0),
        full: true,
        upserts,
        removals: Vec::new(),
        next,
        registered_servers: None,
    })
}

/// The changes after `since`, or a full snapshot (its first page when
/// `limit` is set) when the log cannot answer. Deltas are never paged.
pub async fn since(
    conn: &mut db::Conn,
    since: u64,
    limit: Option<u32>,
) -> Result<KeyTable, sqlx::Error> {
    let (version, floor) = db::feed::state(conn).await?;
    let Ok(since_i) = i64::try_from(since) else {
        return full(conn, None, limit).await;
    };
    if since_i > version || since_i < floor {
        return full(conn, None, limit).await;
    }
    if since_i == version {
        return Ok(empty(version));
    }
    let changed = db::feed::changed_since(conn, since_i).await?;
    // A prune that ran meanwhile may have removed rows we needed.
    let (_, floor_after) = db::feed::state(conn).await?;
    if since_i < floor_after {
        return full(conn, None, limit).await;
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
    Ok(KeyTable {
        version: u64::try_from(version).unwrap_or(0),
        full: false,
        upserts,
        removals,
        next: None,
        registered_servers: None,
    })
}

fn empty(version: i64) -> KeyTable {
    KeyTable {
        version: u64::try_from(version).unwrap_or(0),
        full: false,
        upserts: Vec::new(),
        removals: Vec::new(),
        next: None,
        registered_servers: None,
    }
}

/// Nothing to tell: not a snapshot, and the version has not moved. (A
/// version can move with no key changed: a server was registered, which the
/// answer's server list tells the edge.)
fn is_empty_delta(t: &KeyTable, since: u64) -> bool {
    !t.full && t.version <= since && t.upserts.is_empty() && t.removals.is_empty()
}

/// Answers `since` (with `wait`): immediately if anything changed, else when
/// a change arrives or `wait` runs out (then an empty delta at the current version).
/// A snapshot answer is paged by `limit` (see [`full`]).
pub async fn poll(
    db: &Db,
    notifier: &FeedNotifier,
    since_v: Option<u64>,
    wait: Duration,
    recheck: Duration,
    limit: Option<u32>,
) -> Result<KeyTable, sqlx::Error> {
    let Some(since_v) = since_v else {
        let mut conn = db.conn().await?;
        return full(&mut conn, None, limit).await;
    };
    // Subscribe before the first read so a change committed in between still wakes us.
    let mut rx = notifier.subscribe();
    let deadline = Instant::now() + wait;
    loop {
        rx.borrow_and_update();
        let table = {
            let mut conn = db.conn().await?;
            since(&mut conn, since_v, limit).await?
        };
        let now = Instant::now();
        if !is_empty_delta(&table, since_v) || now >= deadline || notifier.is_closing() {
            return Ok(table);
        }
        let nap = (deadline - now).min(recheck);
        // Woken, timed out or sender gone: re-check either way.
        let _ = tokio::time::timeout(nap, rx.changed()).await;
    }
}

/// Relays PostgreSQL NOTIFYs from other replicas into the local notifier,
/// reconnecting forever. A wake-up is also sent after each (re)connect, since
/// notifications sent while disconnected are lost.
pub async fn listen_postgres(url: String, notifier: FeedNotifier) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(PG_CHANNEL).await {
                    tracing::warn!(error = %e, "feed LISTEN failed");
                } else {
                    notifier.changed();
                    loop {
                        match listener.recv().await {
                            Ok(_) => notifier.changed(),
                            Err(e) => {
                                tracing::warn!(error = %e, "feed listener lost its connection");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "feed listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
