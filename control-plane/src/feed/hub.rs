//! One replica's view of the key-table feed: a single follower of the
//! version, and the answers built at it, shared by every edge that asks.
//!
//! The follower is woken by local commits and PostgreSQL notifications
//! ([`FeedNotifier`]) and by a periodic re-check (once per replica, not per
//! waiter); it reads the version and, when it moved, the registered servers
//! and the delta from the previous version, encodes that once, and
//! publishes the new state on a [`watch`] channel. A parked long poll holds
//! only a receiver of that channel and its own deadline: no database work,
//! no re-check timer. Woken, it takes the bytes already built for its
//! `since`.
//!
//! Answers are kept per version: delta pages by `(since, after, limit)`
//! (one build however many edges ask for the same one), snapshot pages by
//! `(after, limit)`, so a fleet restarting at once reads and encodes each
//! page about once per version. The follower's own delta is a page of at
//! most [`MAX_PAGE_SIZE`] keys; whenever it holds the whole change it also
//! answers every edge asking for a smaller page or the whole delta, so the
//! usual small change is built once for the whole fleet. What an old
//! version built is dropped when the version moves and the last request
//! using it finishes; what one version keeps is bounded by
//! [`Hub::cache_bytes`] (an answer that does not fit is still shared by
//! those already waiting for it, then dropped).

use super::{FeedNotifier, build};
use crate::db::{self, Db};
use crate::metrics::Metrics;
use axum::body::Bytes;
use keygate_protocol::KeyTable;
use keygate_protocol::feed::MAX_PAGE_SIZE;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OnceCell, watch};

/// Bytes of encoded answers one version may keep: two 50,000-key snapshot
/// pages (~7 MB each) and their neighbours, with room for deltas.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// What this replica knows of the table: one version, its registered
/// servers (read once, right after the version, so never older than it),
/// and the answers already built at that version.
#[derive(Clone)]
pub struct Published {
    pub version: u64,
    /// Oldest `since` the change log can answer with a delta.
    floor: i64,
    servers: Arc<[String]>,
    /// Set at shutdown: every waiter answers at once with what it has.
    closing: bool,
    answers: Arc<Answers>,
}

/// Which answer, at one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AnswerKey {
    /// The changes after `since` (nothing, when `since` is the version):
    /// those with a key id above `after` (from the first when `None`), at
    /// most `limit` (all when `None`).
    Delta {
        since: u64,
        after: Option<i64>,
        limit: Option<u32>,
    },
    /// A snapshot page: keys after `after` (from the first when `None`), at
    /// most `limit` (all when `None`).
    Snapshot {
        after: Option<i64>,
        limit: Option<u32>,
    },
}

impl AnswerKey {
    /// The delta the follower builds when the version moves, and the first
    /// place any delta from `since` is looked for.
    fn follower_delta(since: u64) -> Self {
        AnswerKey::Delta {
            since,
            after: None,
            limit: Some(FOLLOWER_PAGE),
        }
    }
}

/// Keys in the follower's delta page: the edge's default page size.
const FOLLOWER_PAGE: u32 = MAX_PAGE_SIZE;

/// One encoded answer.
#[derive(Clone)]
struct Built {
    bytes: Bytes,
    /// Keys it names (upserts and removals).
    keys: usize,
    /// Nothing follows it (no `next`).
    last_page: bool,
}

/// An answer built once, by the first asker; the others wait for it. `None`:
/// the change log no longer reaches that `since` (only a snapshot can answer).
type Cell = Arc<OnceCell<Option<Built>>>;

#[derive(Default)]
struct Answers {
    cells: Mutex<HashMap<AnswerKey, Cell>>,
    /// Encoded bytes the cells hold.
    bytes: AtomicUsize,
}

impl Answers {
    fn cell(&self, key: AnswerKey) -> Cell {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(key).or_default().clone()
    }

    /// The answer `key`, if one is already built (never waits, never builds).
    fn built(&self, key: AnswerKey) -> Option<Built> {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.get(&key)?.get()?.clone()
    }

    /// Counts a built answer against `bound`, or forgets it when it does not
    /// fit (whoever already holds the cell still gets it). Returns the bytes
    /// kept.
    fn keep(&self, key: AnswerKey, len: usize, bound: usize) -> usize {
        let total = self.bytes.fetch_add(len, Ordering::SeqCst) + len;
        if total <= bound {
            return total;
        }
        self.cells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.bytes.fetch_sub(len, Ordering::SeqCst) - len
    }
}

/// One replica's follower and shared answers. Build it with [`Hub::start`].
pub struct Hub {
    db: Db,
    notifier: FeedNotifier,
    metrics: Arc<Metrics>,
    tx: watch::Sender<Arc<Published>>,
    /// Serialises reads of the version; holds the number of the last
    /// completed one, so a request can reuse a read that began after it
    /// arrived instead of making its own ([`Hub::fresh`]).
    reads: tokio::sync::Mutex<u64>,
    reads_started: AtomicU64,
    /// The [`FeedNotifier::generation`] the published state includes: every
    /// commit announced up to it had finished before the version was read.
    seen_generation: AtomicU64,
    /// How often the follower reads the version with no wake-up at all, so
    /// a lost notification delays an edge by at most this.
    recheck: Duration,
    /// Bytes of encoded answers one version keeps.
    cache_bytes: usize,
}

/// What the edge asked for, as far as answering goes.
#[derive(Clone, Copy, Debug)]
pub enum Ask {
    /// A snapshot page (`after`: a continuation; `None`: the first page, or
    /// the whole table without `limit`).
    Snapshot {
        after: Option<i64>,
        limit: Option<u32>,
    },
    /// The changes after `since`, waiting up to `wait` for one; a snapshot
    /// (paged by `limit`) when the log cannot answer. With `paged_deltas`
    /// the delta is paged by `limit` too.
    Since {
        since: u64,
        wait: Duration,
        limit: Option<u32>,
        paged_deltas: bool,
    },
    /// The page of a paged delta from `since` after key id `after`.
    DeltaPage { since: u64, after: i64, limit: u32 },
}

type BuildFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Built>, sqlx::Error>> + Send + 'a>>;

impl Hub {
    /// Reads the current version and starts the follower task, which ends
    /// when the notifier closes or the hub is dropped.
    pub async fn start(
        db: Db,
        metrics: Arc<Metrics>,
        recheck: Duration,
        cache_bytes: usize,
    ) -> Result<Arc<Hub>, sqlx::Error> {
        let notifier = db.feed.clone();
        let generation = notifier.generation();
        let (version, floor, servers) = {
            let mut conn = db.conn().await?;
            let (version, floor) = db::feed::state(&mut conn).await?;
            let servers = db::feed::registered_servers(&mut conn).await?;
            (version, floor, servers)
        };
        metrics.feed_version_reads.inc();
        let published = Arc::new(Published {
            version: u64::try_from(version).unwrap_or(0),
            floor,
            servers: servers.into(),
            closing: notifier.is_closing(),
            answers: Arc::default(),
        });
        let hub = Arc::new(Hub {
            db,
            notifier,
            metrics,
            tx: watch::channel(published).0,
            reads: tokio::sync::Mutex::new(0),
            reads_started: AtomicU64::new(0),
            seen_generation: AtomicU64::new(generation),
            recheck,
            cache_bytes,
        });
        tokio::spawn(follow(Arc::downgrade(&hub), hub.notifier.subscribe()));
        Ok(hub)
    }

    /// The state as last published (no database work).
    pub fn current(&self) -> Arc<Published> {
        self.tx.borrow().clone()
    }

    /// Releases every parked long poll at once, for a prompt shutdown.
    pub fn close(&self) {
        self.tx.send_modify(|p| {
            let mut closed = Published::clone(p);
            closed.closing = true;
            *p = Arc::new(closed);
        });
    }

    /// The state after a version read that began after this call: what a
    /// request must see when it may follow a write made through any replica.
    /// Concurrent callers share reads, so a burst costs about two.
    pub async fn fresh(&self) -> Result<Arc<Published>, sqlx::Error> {
        let arrived = self.reads_started.load(Ordering::SeqCst);
        let mut last_done = self.reads.lock().await;
        if *last_done > arrived {
            return Ok(self.current());
        }
        let number = self.reads_started.fetch_add(1, Ordering::SeqCst) + 1;
        // Read before the version: every commit announced by now is in it.
        let generation = self.notifier.generation();
        self.read_version().await?;
        *last_done = number;
        self.seen_generation.fetch_max(generation, Ordering::SeqCst);
        Ok(self.current())
    }

    /// The state including every local commit announced before this call:
    /// usually the published one; a fresh read only when the follower has
    /// not yet caught up with a commit.
    async fn caught_up(&self) -> Result<Arc<Published>, sqlx::Error> {
        if self.notifier.generation() > self.seen_generation.load(Ordering::SeqCst) {
            self.fresh().await
        } else {
            Ok(self.current())
        }
    }

    /// Reads the version; when it moved, reads the servers, builds the delta
    /// from the previous version (what every parked edge waits for) and
    /// publishes. Called with `reads` held, so publications are in order.
    async fn read_version(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.db.conn().await?;
        let (version, floor) = db::feed::state(&mut conn).await?;
        self.metrics.feed_version_reads.inc();
        let version = u64::try_from(version).unwrap_or(0);
        let prev = self.current();
        // The servers and the floor only change with the version.
        if version == prev.version {
            return Ok(());
        }
        let servers: Arc<[String]> = db::feed::registered_servers(&mut conn).await?.into();
        let answers = Arc::new(Answers::default());
        let prev_in_log = i64::try_from(prev.version).is_ok_and(|p| p >= floor);
        if prev.version < version && prev_in_log {
            self.metrics.feed_delta_builds.inc();
            let key = AnswerKey::follower_delta(prev.version);
            let page = Some(FOLLOWER_PAGE);
            let table =
                build::delta(&mut conn, prev.version, version, None, page, &servers).await?;
            let built = match table {
                Some(table) => Some(self.encode(&table)?),
                None => None,
            };
            let len = built.as_ref().map_or(0, |b| b.bytes.len());
            let cell = answers.cell(key);
            // Nobody else can see this cell yet: setting it cannot fail.
            let _ = cell.set(built);
            answers.keep(key, len, self.cache_bytes);
        }
        self.metrics
            .feed_cache_bytes
            .set(i64::try_from(answers.bytes.load(Ordering::SeqCst)).unwrap_or(i64::MAX));
        self.tx.send_replace(Arc::new(Published {
            version,
            floor,
            servers,
            closing: prev.closing || self.notifier.is_closing(),
            answers,
        }));
        Ok(())
    }

    /// Answers one key-table request with the encoded `KeyTable`.
    pub async fn answer(&self, ask: Ask) -> Result<Bytes, sqlx::Error> {
        match ask {
            Ask::Snapshot { after: None, limit } => {
                let st = self.fresh().await?;
                self.snapshot(&st, None, limit).await
            }
            // A continuation page may be at any version (the edge keeps the
            // first page's and follows with a delta since it).
            Ask::Snapshot { after, limit } => {
                let st = self.caught_up().await?;
                self.snapshot(&st, after, limit).await
            }
            Ask::Since {
                since,
                wait,
                limit,
                paged_deltas,
            } => {
                let mut st = self.caught_up().await?;
                if wait.is_zero() || since > st.version {
                    // No wait: answer as of now, whichever replica took
                    // the write. Ahead of us: another replica may have
                    // answered a newer version than the follower has heard of.
                    st = self.fresh().await?;
                }
                if since == st.version && !st.closing && !wait.is_zero() {
                    st = self.park(since, wait).await;
                }
                let delta_limit = if paged_deltas { limit } else { None };
                if let Some(bytes) = self.delta(&st, since, None, delta_limit).await? {
                    return Ok(bytes);
                }
                self.snapshot(&st, None, limit).await
            }
            // Like a snapshot's continuation, at whatever version is current.
            Ask::DeltaPage {
                since,
                after,
                limit,
            } => {
                let st = self.caught_up().await?;
                match self.delta(&st, since, Some(after), Some(limit)).await? {
                    Some(bytes) => Ok(bytes),
                    None => self.snapshot(&st, None, Some(limit)).await,
                }
            }
        }
    }

    /// Waits until the version moves off `since`, the hub closes or `wait`
    /// runs out; returns the state then. Holds only a channel receiver and
    /// one deadline.
    async fn park(&self, since: u64, wait: Duration) -> Arc<Published> {
        let mut rx = self.tx.subscribe();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            {
                let st = rx.borrow_and_update();
                if st.version != since || st.closing {
                    return st.clone();
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                () = &mut deadline => break,
            }
        }
        self.current()
    }

    /// The changes after `since` at `st` (after key id `after`, at most
    /// `limit` of them), built once per version and page; `None` when the
    /// log cannot answer: `since` ahead of the version (a restored database)
    /// or behind the log's floor.
    async fn delta(
        &self,
        st: &Published,
        since: u64,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Option<Bytes>, sqlx::Error> {
        let in_log = since <= st.version && i64::try_from(since).is_ok_and(|s| s >= st.floor);
        if !in_log {
            return Ok(None);
        }
        let follower = AnswerKey::follower_delta(since);
        if after.is_none() {
            // The follower's page (or an earlier asker's at its size) holds
            // the whole change: it answers any first page it fits in.
            if let Some(b) = st.answers.built(follower)
                && b.last_page
                && limit.is_none_or(|l| b.keys <= l as usize)
            {
                self.metrics.feed_shared_answers.inc();
                return Ok(Some(b.bytes));
            }
        }
        // Nothing changed: one empty answer fits every asker.
        let key = if since == st.version {
            follower
        } else {
            AnswerKey::Delta {
                since,
                after,
                limit,
            }
        };
        let built = self
            .shared(st, key, || {
                Box::pin(async move {
                    if since == st.version {
                        let table = build::empty(st.version, &st.servers);
                        return Ok(Some(self.encode(&table)?));
                    }
                    self.metrics.feed_delta_builds.inc();
                    let mut conn = self.db.conn().await?;
                    match build::delta(&mut conn, since, st.version, after, limit, &st.servers)
                        .await?
                    {
                        Some(table) => Ok(Some(self.encode(&table)?)),
                        None => Ok(None),
                    }
                })
            })
            .await?;
        Ok(built.map(|b| b.bytes))
    }

    /// A snapshot page at `st`, built once per version and page.
    async fn snapshot(
        &self,
        st: &Published,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Bytes, sqlx::Error> {
        let key = AnswerKey::Snapshot { after, limit };
        let built = self
            .shared(st, key, || {
                Box::pin(async move {
                    self.metrics.feed_snapshot_builds.inc();
                    let mut conn = self.db.conn().await?;
                    let table =
                        build::snapshot(&mut conn, st.version, after, limit, &st.servers).await?;
                    Ok(Some(self.encode(&table)?))
                })
            })
            .await?;
        // A snapshot build always yields bytes; `None` is only for deltas.
        built
            .map(|b| b.bytes)
            .ok_or_else(|| sqlx::Error::Protocol("snapshot answer missing".into()))
    }

    /// The answer `key` at `st`: built by the first asker (boxed, so a
    /// parked request's future does not carry the build's size), shared
    /// with everyone else.
    async fn shared<'a>(
        &'a self,
        st: &'a Published,
        key: AnswerKey,
        build: impl FnOnce() -> BuildFuture<'a>,
    ) -> Result<Option<Built>, sqlx::Error> {
        let cell = st.answers.cell(key);
        let mut built = false;
        let value = cell
            .get_or_try_init(|| {
                built = true;
                build()
            })
            .await?
            .clone();
        if built {
            let kept = st.answers.keep(
                key,
                value.as_ref().map_or(0, |b| b.bytes.len()),
                self.cache_bytes,
            );
            if Arc::ptr_eq(&st.answers, &self.current().answers) {
                self.metrics
                    .feed_cache_bytes
                    .set(i64::try_from(kept).unwrap_or(i64::MAX));
            }
        } else {
            self.metrics.feed_shared_answers.inc();
        }
        Ok(value)
    }

    fn encode(&self, table: &KeyTable) -> Result<Built, sqlx::Error> {
        self.metrics.feed_encodes.inc();
        let bytes = serde_json::to_vec(table).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        Ok(Built {
            bytes: Bytes::from(bytes),
            keys: table.upserts.len() + table.removals.len(),
            last_page: table.next.is_none(),
        })
    }
}

/// The follower: reads the version after every wake-up (local commit,
/// PostgreSQL notification) and every `recheck` without one; publishes on
/// change. Holds the hub only while reading, so dropping the hub ends it.
async fn follow(hub: Weak<Hub>, mut wakeups: watch::Receiver<u64>) {
    loop {
        let Some(recheck) = hub.upgrade().map(|h| h.recheck) else {
            return;
        };
        tokio::select! {
            changed = wakeups.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(recheck) => {}
        }
        wakeups.borrow_and_update();
        let Some(hub) = hub.upgrade() else { return };
        if hub.notifier.is_closing() {
            hub.close();
            return;
        }
        if let Err(e) = hub.fresh().await {
            tracing::warn!(error = %e, "feed follower cannot read the version");
        }
    }
}
