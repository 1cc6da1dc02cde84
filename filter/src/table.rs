//! The key table in Envoy's shared data: one copy per Envoy process, shared
//! by every worker's VM (shared data is keyed by `vm_id`).
//!
//! Layout (the `2` is the layout version: filter builds with different
//! layouts that share a `vm_id` during an upgrade keep separate tables and
//! leases instead of misreading each other's):
//! - `kg2/meta` = [`Meta`] (small JSON): generation, table version, last
//!   sync, key count.
//! - `kg2/k/<keyId>` = [`StoredEntry`] in the compact binary form of
//!   [`crate::slot`]: generation, version, and the entry or a tombstone for a
//!   removed key.
//!
//! A request reads `kg2/k/<keyId>`, one O(1) lookup, never a decode of the
//! whole table, and each VM keeps what it read for a few milliseconds (see
//! [`TableCache`]). A delta of k changes writes k entries and meta.
//! A full snapshot first reserves generation G+1 in meta (`p`), then writes
//! every entry, page by page, with generation G+1 while meta still says G
//! (readers accept `entry.g >= meta.g`), then flips meta to G+1, which kills
//! the entries the snapshot did not rewrite: there is no moment where a valid
//! key is missing. The reservation means an aborted snapshot's entries are
//! never reused by the next one (which takes G+2), so they die at its flip.
//! A meta with `g == 0` is only a reservation: no table yet. Entries carry the table version they were written at
//! and are written with compare-and-swap, so a slower writer (a lease holder
//! that just lost its lease) never overwrites a newer entry with an older one.

use crate::decision::KeyLookup;
use crate::slot;
use keygate_protocol::{KeyEntry, KeyTable};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeSet, HashMap};

pub const META_KEY: &str = "kg2/meta";
pub const ENTRY_PREFIX: &str = "kg2/k/";

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the key since we read it.
    CasMismatch,
    /// The host refused the call.
    Host,
}

/// The few shared-data calls the table needs; Envoy's in the filter, an
/// in-memory map in tests.
pub trait SharedStore {
    /// The value and its CAS token; `(None, None)` when absent.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value`; with `cas`, only if the key is still at that token.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// The table's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Snapshot generation: entries older than this are dead.
    pub g: u64,
    /// Control-plane table version the table is at.
    pub v: u64,
    /// Unix milliseconds of the last successful answer from the control plane.
    pub s: u64,
    /// Live keys.
    pub n: u64,
    /// Generation reserved by a snapshot being written (see [`SnapshotWriter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<u64>,
}

impl Meta {
    pub fn last_sync_unix(&self) -> i64 {
        i64::try_from(self.s / 1000).unwrap_or(i64::MAX)
    }
}

/// One key's slot (stored as [`crate::slot`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub g: u64,
    pub v: u64,
    /// `None` is a tombstone.
    pub e: Option<KeyEntry>,
}

fn entry_key(id: i64) -> String {
    format!("{ENTRY_PREFIX}{id}")
}

/// Reads and decodes meta with its CAS token.
pub fn read_meta(store: &dyn SharedStore) -> (Option<Meta>, Option<u32>) {
    let (bytes, cas) = store.get(META_KEY);
    let meta = bytes
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
    (meta, cas)
}

/// Meta of a table that exists (a flipped snapshot), not a bare reservation.
pub fn read_table_meta(store: &dyn SharedStore) -> Option<Meta> {
    read_meta(store).0.filter(|m| m.g > 0)
}

fn read_entry(store: &dyn SharedStore, id: i64) -> (Option<StoredEntry>, Option<u32>) {
    let (bytes, cas) = store.get(&entry_key(id));
    let stored = bytes.and_then(|b| slot::decode(&b));
    (stored, cas)
}

fn is_live(stored: Option<&StoredEntry>, generation: u64) -> bool {
    stored.is_some_and(|s| s.e.is_some() && s.g >= generation)
}

/// Most entries a VM keeps decoded (about 150 bytes each); past it the
/// cache starts over, so keys sprayed at random cannot grow it.
pub const CACHE_MAX_ENTRIES: usize = 4096;

/// A VM's decoded view of the shared table, so a request normally makes no
/// shared-data read at all: each read copies the value into the VM through
/// a call back into it, the dearest step of a request.
///
/// - Meta is read again once it is `ttl_ms` old.
/// - Entries are kept with the meta (generation and version) they were read
///   under, and dropped as soon as a fresh meta shows the table moved: any
///   change to any key moves the version, so a cached entry is never older
///   than the table as of the last meta read.
///
/// So a change written to shared data reaches a VM's requests at most
/// `ttl_ms` later (the VM that wrote it drops its copy at once); with
/// `ttl_ms == 0` every request reads meta and its entry, as without a cache.
#[derive(Debug, Default)]
pub struct TableCache {
    ttl_ms: u64,
    /// When meta was read (Unix ms), and what.
    meta: Cell<Option<(u64, Option<Meta>)>>,
    entries: RefCell<CachedEntries>,
}

/// Entries read under one table generation and version; `None` values are
/// keys the table lacks.
#[derive(Debug, Default)]
struct CachedEntries {
    under: Option<(u64, u64)>,
    by_id: HashMap<i64, Option<KeyEntry>>,
}

impl TableCache {
    pub fn new(ttl_ms: u64) -> Self {
        Self {
            ttl_ms,
            ..Self::default()
        }
    }

    /// Meta as of at most `ttl_ms` ago (a clock that went back also forces
    /// a read).
    pub fn meta(&self, store: &dyn SharedStore, now_ms: u64) -> Option<Meta> {
        match self.meta.get() {
            Some((at, meta)) if now_ms >= at && now_ms - at < self.ttl_ms => meta,
            _ => self.refresh(store, now_ms),
        }
    }

    /// Reads meta now and keeps it.
    pub fn refresh(&self, store: &dyn SharedStore, now_ms: u64) -> Option<Meta> {
        let meta = read_table_meta(store);
        self.meta.set(Some((now_ms, meta)));
        meta
    }

    /// Forgets everything: the next request reads meta and entries again.
    pub fn invalidate(&self) {
        self.meta.set(None);
        let mut entries = self.entries.borrow_mut();
        entries.under = None;
        entries.by_id.clear();
    }

    /// The live entry for `key_id` under `meta`, from the cache or the store.
    fn entry(&self, store: &dyn SharedStore, meta: &Meta, key_id: i64) -> Option<KeyEntry> {
        let at = Some((meta.g, meta.v));
        let mut cached = self.entries.borrow_mut();
        if cached.under != at {
            cached.under = at;
            cached.by_id.clear();
        }
        if let Some(entry) = cached.by_id.get(&key_id) {
            return entry.clone();
        }
        let entry = live_entry(store, meta, key_id);
        if self.ttl_ms > 0 {
            if cached.by_id.len() >= CACHE_MAX_ENTRIES {
                cached.by_id.clear();
            }
            cached.by_id.insert(key_id, entry.clone());
        }
        entry
    }
}

/// `key_id`'s entry if its slot is live under `meta`.
fn live_entry(store: &dyn SharedStore, meta: &Meta, key_id: i64) -> Option<KeyEntry> {
    let (stored, _) = read_entry(store, key_id);
    let stored = stored.filter(|s| s.g >= meta.g)?;
    stored.e.filter(|e| e.id == key_id)
}

/// The table as one request sees it. Reads meta at most once, or takes it
/// and the entries from the VM's [`TableCache`].
pub struct TableReader<'s> {
    store: &'s dyn SharedStore,
    cache: Option<(&'s TableCache, u64)>,
    meta: OnceCell<Option<Meta>>,
}

impl<'s> TableReader<'s> {
    /// A reader that reads meta (once) and entries from the store.
    pub fn new(store: &'s dyn SharedStore) -> Self {
        Self {
            store,
            cache: None,
            meta: OnceCell::new(),
        }
    }

    /// A reader that goes through `cache`, as of `now_ms`.
    pub fn cached(store: &'s dyn SharedStore, cache: &'s TableCache, now_ms: u64) -> Self {
        Self {
            store,
            cache: Some((cache, now_ms)),
            meta: OnceCell::new(),
        }
    }

    pub fn meta(&self) -> Option<Meta> {
        *self.meta.get_or_init(|| match self.cache {
            Some((cache, now_ms)) => cache.meta(self.store, now_ms),
            None => read_table_meta(self.store),
        })
    }
}

impl KeyLookup for TableReader<'_> {
    fn last_sync_unix(&self) -> Option<i64> {
        self.meta().map(|m| m.last_sync_unix())
    }

    fn entry(&self, key_id: i64) -> Option<KeyEntry> {
        let meta = self.meta()?;
        match self.cache {
            Some((cache, _)) => cache.entry(self.store, &meta, key_id),
            None => live_entry(self.store, &meta, key_id),
        }
    }
}

/// Why an answer from the control plane was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// A delta that does not start where the table is (another writer moved
    /// it, or the table is gone): poll again from the current version.
    NotBasedOnTable,
    /// Meta changed while applying; entries written are version-guarded, so
    /// polling again from the current version converges.
    Conflict,
    Store,
    /// The answer arrived after this VM lost the fetch lease: another VM may
    /// already have written a newer table, so this one is dropped unread.
    LeaseLost,
}

/// What an applied answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub key_count: u64,
    /// Entries written (upserts, removals, and dead slots cleared).
    pub writes: usize,
}

/// Writes one slot unless it already holds a newer write. Returns whether
/// the slot was live (at `generation`) before.
fn put_entry(
    store: &dyn SharedStore,
    id: i64,
    new: &StoredEntry,
    generation: u64,
) -> Result<bool, ApplyError> {
    let key = entry_key(id);
    let value = slot::encode(new);
    for _ in 0..4 {
        let (old, cas) = read_entry(store, id);
        let was_live = is_live(old.as_ref(), generation);
        if old.as_ref().is_some_and(|o| o.g >= new.g && o.v > new.v) {
            return Ok(was_live);
        }
        match store.set(&key, &value, cas) {
            Ok(()) => return Ok(was_live),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host) => return Err(ApplyError::Store),
        }
    }
    Err(ApplyError::Conflict)
}

fn write_meta(store: &dyn SharedStore, meta: &Meta, cas: Option<u32>) -> Result<(), ApplyError> {
    let value = serde_json::to_vec(meta).map_err(|_| ApplyError::Store)?;
    match store.set(META_KEY, &value, cas) {
        Ok(()) => Ok(()),
        Err(StoreError::CasMismatch) => Err(ApplyError::Conflict),
        Err(StoreError::Host) => Err(ApplyError::Store),
    }
}

/// Applies one whole answer of the key-table feed: a delta, or a full
/// snapshot in one piece (see [`SnapshotWriter`] for one in pages).
///
/// `since` is the version the request asked from (`None`: a full snapshot
/// was asked for). `known_ids` is the writer's memory of the ids the table
/// holds; a snapshot tombstones the ones it no longer lists so their memory
/// is given back. (A new lease holder starts with an empty memory; entries
/// it never saw stay dead, not live, until overwritten.)
pub fn apply(
    store: &dyn SharedStore,
    table: &KeyTable,
    since: Option<u64>,
    now_ms: u64,
    known_ids: &mut BTreeSet<i64>,
) -> Result<Applied, ApplyError> {
    if table.full {
        let mut writer = SnapshotWriter::begin(store, table.version)?;
        writer.write_page(store, table)?;
        writer.finish(store, now_ms, known_ids)
    } else {
        let (meta, meta_cas) = read_meta(store);
        let meta = meta
            .filter(|m| m.g > 0)
            .ok_or(ApplyError::NotBasedOnTable)?;
        if since != Some(meta.v) || table.version < meta.v {
            return Err(ApplyError::NotBasedOnTable);
        }
        apply_delta(store, table, meta, meta_cas, now_ms, known_ids)
    }
}

/// A full snapshot being written page by page under a reserved generation.
///
/// [`begin`](Self::begin) reserves generation `max(g, p) + 1` in meta before
/// any entry is written; each page writes its entries under it (live at once:
/// readers accept `entry.g >= meta.g`); [`finish`](Self::finish) flips meta
/// to the new generation at the first page's version and records the sync. Every meta write checks, by compare-and-swap, that the
/// reservation is still this writer's and the table has not moved meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWriter {
    /// `meta.g` when the snapshot began.
    base: u64,
    /// The reserved generation.
    generation: u64,
    /// The first page's version: the table's version once flipped.
    version: u64,
    /// Ids written so far (pages come in id order; sorted again at the end).
    ids: Vec<i64>,
    writes: usize,
}

impl SnapshotWriter {
    /// Reserves a generation for a snapshot whose first page is at `version`.
    pub fn begin(store: &dyn SharedStore, version: u64) -> Result<Self, ApplyError> {
        let (meta, cas) = read_meta(store);
        let base = meta.map_or(0, |m| m.g);
        let reserved = meta.and_then(|m| m.p).unwrap_or(0);
        let generation = base.max(reserved).saturating_add(1);
        // The last sync stays that of the last complete table: a snapshot
        // counts as a sync only once it is flipped in (see `finish`).
        let reservation = Meta {
            g: base,
            v: meta.map_or(0, |m| m.v),
            s: meta.map_or(0, |m| m.s),
            n: meta.map_or(0, |m| m.n),
            p: Some(generation),
        };
        write_meta(store, &reservation, cas)?;
        Ok(Self {
            base,
            generation,
            version,
            ids: Vec::new(),
            writes: 0,
        })
    }

    /// Keys written so far.
    pub fn written(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Meta and its CAS token, if the table is still as this snapshot left it.
    fn check(&self, store: &dyn SharedStore) -> Result<(Meta, Option<u32>), ApplyError> {
        match read_meta(store) {
            (Some(m), cas) if m.g == self.base && m.p == Some(self.generation) => Ok((m, cas)),
            _ => Err(ApplyError::Conflict),
        }
    }

    /// Writes one page's entries under the reserved generation. A page is not
    /// a sync: the table's freshness is that of the last complete table, so a
    /// control plane that keeps failing mid-paging cannot keep a half-written
    /// table counted as fresh.
    pub fn write_page(
        &mut self,
        store: &dyn SharedStore,
        page: &KeyTable,
    ) -> Result<(), ApplyError> {
        self.check(store)?;
        for entry in &page.upserts {
            let stored = StoredEntry {
                g: self.generation,
                v: page.version,
                e: Some(entry.clone()),
            };
            put_entry(store, entry.id, &stored, self.generation)?;
            self.ids.push(entry.id);
            self.writes += 1;
        }
        // Removals in a snapshot are redundant (absent is removed) but harmless.
        self.check(store).map(|_| ())
    }

    /// Flips the table to the new generation, which kills every entry the
    /// snapshot did not write, then clears the slots of known ids it dropped.
    pub fn finish(
        mut self,
        store: &dyn SharedStore,
        now_ms: u64,
        known_ids: &mut BTreeSet<i64>,
    ) -> Result<Applied, ApplyError> {
        let (_, cas) = self.check(store)?;
        self.ids.sort_unstable();
        self.ids.dedup();
        let ids: BTreeSet<i64> = self.ids.into_iter().collect();
        let new_meta = Meta {
            g: self.generation,
            v: self.version,
            s: now_ms,
            n: ids.len() as u64,
            p: None,
        };
        write_meta(store, &new_meta, cas)?;
        let tombstone = StoredEntry {
            g: self.generation,
            v: self.version,
            e: None,
        };
        let mut writes = self.writes;
        for id in known_ids.difference(&ids) {
            put_entry(store, *id, &tombstone, self.generation)?;
            writes += 1;
        }
        *known_ids = ids;
        Ok(Applied {
            version: self.version,
            key_count: new_meta.n,
            writes,
        })
    }
}

fn apply_delta(
    store: &dyn SharedStore,
    table: &KeyTable,
    meta: Meta,
    meta_cas: Option<u32>,
    now_ms: u64,
    known_ids: &mut BTreeSet<i64>,
) -> Result<Applied, ApplyError> {
    let mut count = i128::from(meta.n);
    let mut writes = 0;
    for entry in &table.upserts {
        let stored = StoredEntry {
            g: meta.g,
            v: table.version,
            e: Some(entry.clone()),
        };
        if !put_entry(store, entry.id, &stored, meta.g)? {
            count += 1;
        }
        known_ids.insert(entry.id);
        writes += 1;
    }
    let tombstone = StoredEntry {
        g: meta.g,
        v: table.version,
        e: None,
    };
    for id in &table.removals {
        if put_entry(store, *id, &tombstone, meta.g)? {
            count -= 1;
        }
        known_ids.remove(id);
        writes += 1;
    }
    let new_meta = Meta {
        g: meta.g,
        v: table.version,
        s: now_ms,
        n: u64::try_from(count.max(0)).unwrap_or(0),
        // A reservation left by an aborted snapshot stays reserved.
        p: meta.p,
    };
    write_meta(store, &new_meta, meta_cas)?;
    Ok(Applied {
        version: new_meta.v,
        key_count: new_meta.n,
        writes,
    })
}

#[cfg(test)]
pub mod memory {
    //! An in-memory [`SharedStore`] with Envoy's CAS semantics.
    use super::{SharedStore, StoreError};
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MemoryStore {
        pub data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: RefCell<u32>,
        pub reads: RefCell<usize>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            *self.reads.borrow_mut() += 1;
            match self.data.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let mut data = self.data.borrow_mut();
            // Envoy checks the CAS only when the key exists and cas != 0.
            if let (Some((_, current)), Some(cas)) = (data.get(key), cas)
                && *current != cas
            {
                return Err(StoreError::CasMismatch);
            }
            let mut next = self.next_cas.borrow_mut();
            *next += 1;
            data.insert(key.to_owned(), (value.to_vec(), *next));
            Ok(())
        }
    }

    /// A store that lets a test look at the table before and after every
    /// write.
    pub struct Spy<'a> {
        pub inner: &'a MemoryStore,
        pub on_set: &'a dyn Fn(&MemoryStore),
    }

    impl SharedStore for Spy<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            (self.on_set)(self.inner);
            let r = self.inner.set(key, value, cas);
            (self.on_set)(self.inner);
            r
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::memory::{MemoryStore, Spy};
    use super::*;
    use keygate_protocol::{Secret, ServerScope};

    fn entry(id: i64, server: &str) -> KeyEntry {
        KeyEntry {
            id,
            user_id: 1,
            secret_hash: Secret::from_bytes([id as u8; 32]).hash(),
            expires_at: None,
            servers: ServerScope::Named(vec![server.to_owned()]),
        }
    }

    fn snapshot(version: u64, ids: &[i64]) -> KeyTable {
        KeyTable {
            version,
            full: true,
            upserts: ids.iter().map(|i| entry(*i, "alpha")).collect(),
            removals: vec![],
            next: None,
        }
    }

    fn live_ids(store: &MemoryStore, range: std::ops::Range<i64>) -> Vec<i64> {
        let r = TableReader::new(store);
        range.filter(|i| r.entry(*i).is_some()).collect()
    }

    #[test]
    fn table_cache_reads_nothing_while_the_table_stands_still() {
        const TTL: u64 = 10;
        let s = MemoryStore::default();
        let cache = TableCache::new(TTL);
        let at = 1_000_000;
        let reader = |now: u64| TableReader::cached(&s, &cache, now);
        assert_eq!(cache.meta(&s, at), None, "no table yet");
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(3, &[1, 2]), None, at, &mut known).unwrap();
        // Within the TTL the VM still sees no table; a fresh copy sees it.
        assert!(reader(at + TTL - 1).entry(1).is_none());
        assert!(reader(at + TTL).entry(1).is_some());
        let reads = *s.reads.borrow();
        for i in 0..500 {
            let r = reader(at + TTL + i);
            assert!(r.entry(1).is_some());
            assert!(r.entry(9).is_none(), "a missing key is remembered too");
        }
        // Meta again every TTL (49 times over 499 ms), key 9 once, key 1
        // never again: the version did not move.
        assert_eq!(*s.reads.borrow() - reads, 49 + 1);

        // A delta revoking key 1 reaches the VM at its next meta read.
        let revoke = KeyTable {
            version: 4,
            full: false,
            upserts: vec![],
            removals: vec![1],
            next: None,
        };
        let now = at + 600;
        assert!(reader(now).entry(1).is_some());
        apply(&s, &revoke, Some(3), now, &mut known).unwrap();
        assert!(reader(now + TTL - 1).entry(1).is_some(), "within the TTL");
        assert!(reader(now + TTL).entry(1).is_none());
        assert!(reader(now + TTL).entry(2).is_some());

        // The VM that wrote a change drops its copy at once.
        let now = now + 2 * TTL;
        assert!(reader(now).entry(2).is_some());
        apply(&s, &snapshot(5, &[1]), None, now, &mut known).unwrap();
        cache.invalidate();
        assert!(reader(now).entry(2).is_none());
        assert!(reader(now).entry(1).is_some());
        // A clock that went back reads meta again rather than trust the copy.
        assert_eq!(cache.meta(&s, at).map(|m| m.v), Some(5));
    }

    #[test]
    fn table_cache_with_no_ttl_reads_every_time_and_stays_bounded() {
        let s = MemoryStore::default();
        apply(&s, &snapshot(1, &[1]), None, 0, &mut BTreeSet::new()).unwrap();
        let off = TableCache::new(0);
        let reads = *s.reads.borrow();
        for _ in 0..10 {
            assert!(TableReader::cached(&s, &off, 5).entry(1).is_some());
        }
        assert_eq!(*s.reads.borrow() - reads, 20, "meta and entry each time");

        let on = TableCache::new(1000);
        for id in 0..(CACHE_MAX_ENTRIES as i64 * 2 + 7) {
            let _ = TableReader::cached(&s, &on, 5).entry(id);
        }
        assert!(on.entries.borrow().by_id.len() <= CACHE_MAX_ENTRIES);
    }

    #[test]
    fn empty_store_has_no_table() {
        let s = MemoryStore::default();
        let r = TableReader::new(&s);
        assert_eq!(r.last_sync_unix(), None);
        assert_eq!(r.entry(1), None);
    }

    #[test]
    fn snapshot_then_deltas() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        let a = apply(&s, &snapshot(5, &[1, 2, 3]), None, 7_000, &mut known).unwrap();
        assert_eq!((a.version, a.key_count), (5, 3));
        assert_eq!(live_ids(&s, 0..10), vec![1, 2, 3]);
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(7));

        let delta = KeyTable {
            version: 8,
            full: false,
            upserts: vec![entry(4, "beta"), entry(2, "beta")],
            removals: vec![1, 99],
            next: None,
        };
        let a = apply(&s, &delta, Some(5), 9_000, &mut known).unwrap();
        assert_eq!((a.version, a.key_count, a.writes), (8, 3, 4));
        assert_eq!(live_ids(&s, 0..10), vec![2, 3, 4]);
        let r = TableReader::new(&s);
        assert_eq!(
            r.entry(2).unwrap().servers,
            ServerScope::Named(vec!["beta".into()])
        );
        assert_eq!(r.meta().unwrap().v, 8);

        // An empty long-poll answer only refreshes the sync time.
        let empty = KeyTable {
            version: 8,
            full: false,
            upserts: vec![],
            removals: vec![],
            next: None,
        };
        apply(&s, &empty, Some(8), 20_000, &mut known).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(20));
        assert_eq!(TableReader::new(&s).meta().unwrap().n, 3);
    }

    #[test]
    fn delta_of_k_changes_costs_o_k() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        let ids: Vec<i64> = (1..=500).collect();
        apply(&s, &snapshot(1, &ids), None, 0, &mut known).unwrap();
        let before = s.data.borrow().len();
        *s.reads.borrow_mut() = 0;
        let delta = KeyTable {
            version: 2,
            full: false,
            upserts: vec![entry(7, "beta")],
            removals: vec![9],
            next: None,
        };
        let a = apply(&s, &delta, Some(1), 0, &mut known).unwrap();
        assert_eq!(a.writes, 2);
        // meta + one read per changed slot.
        assert_eq!(*s.reads.borrow(), 3);
        assert_eq!(s.data.borrow().len(), before);
    }

    #[test]
    fn request_costs_two_reads() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(
            &s,
            &snapshot(1, &(1..=200).collect::<Vec<_>>()),
            None,
            0,
            &mut known,
        )
        .unwrap();
        *s.reads.borrow_mut() = 0;
        let r = TableReader::new(&s);
        assert!(r.last_sync_unix().is_some());
        assert!(r.entry(150).is_some());
        assert_eq!(*s.reads.borrow(), 2);
    }

    #[test]
    fn delta_not_based_on_table_is_refused() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        let delta = KeyTable {
            version: 3,
            full: false,
            upserts: vec![entry(1, "a")],
            removals: vec![],
            next: None,
        };
        assert_eq!(
            apply(&s, &delta, Some(2), 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        apply(&s, &snapshot(5, &[1]), None, 0, &mut known).unwrap();
        assert_eq!(
            apply(&s, &delta, Some(2), 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        assert_eq!(
            apply(&s, &delta, Some(5), 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        assert_eq!(live_ids(&s, 0..5), vec![1]);
    }

    #[test]
    fn snapshot_replacement_has_no_window() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(1, &[1, 2, 3, 4]), None, 0, &mut known).unwrap();
        // The new snapshot keeps 2 and 3 (3 with a new scope), drops 1 and 4, adds 5.
        let mut next = snapshot(9, &[2, 5]);
        next.upserts.push(entry(3, "beta"));
        let check = |st: &MemoryStore| {
            let r = TableReader::new(st);
            // Keys valid before and after are valid at every instant.
            assert!(r.entry(2).is_some(), "key 2 vanished mid-snapshot");
            assert!(r.entry(3).is_some(), "key 3 vanished mid-snapshot");
        };
        let spy = Spy {
            inner: &s,
            on_set: &check,
        };
        let a = apply(&spy, &next, Some(1), 0, &mut known).unwrap();
        assert_eq!((a.version, a.key_count), (9, 3));
        assert_eq!(live_ids(&s, 0..10), vec![2, 3, 5]);
        // Dropped slots were cleared, not left holding data.
        let (raw, _) = s.get(&entry_key(1));
        let stored = slot::decode(&raw.unwrap()).unwrap();
        assert_eq!(stored.e, None);
    }

    #[test]
    fn new_writer_snapshot_kills_entries_it_never_saw() {
        let s = MemoryStore::default();
        let mut first_owner = BTreeSet::new();
        apply(&s, &snapshot(1, &[1, 2]), None, 0, &mut first_owner).unwrap();
        let mut second_owner = BTreeSet::new();
        apply(&s, &snapshot(4, &[2]), None, 0, &mut second_owner).unwrap();
        assert_eq!(live_ids(&s, 0..5), vec![2]);
    }

    #[test]
    fn older_write_never_overwrites_newer() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(1, &[1]), None, 0, &mut known).unwrap();
        // A newer writer removed key 1 at version 3...
        let removal = KeyTable {
            version: 3,
            full: false,
            upserts: vec![],
            removals: vec![1],
            next: None,
        };
        apply(&s, &removal, Some(1), 0, &mut known).unwrap();
        // ...and a slow writer's stale upsert of version 2 arrives after.
        let generation = TableReader::new(&s).meta().unwrap().g;
        let stale = StoredEntry {
            g: generation,
            v: 2,
            e: Some(entry(1, "alpha")),
        };
        put_entry(&s, 1, &stale, generation).unwrap();
        assert_eq!(TableReader::new(&s).entry(1), None);
    }

    #[test]
    fn meta_conflict_is_reported() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(1, &[1]), None, 0, &mut known).unwrap();
        let bump = |st: &MemoryStore| {
            // Another writer touches meta between our read and our write.
            let (m, _) = read_meta(st);
            let mut m = m.unwrap();
            if m.s == 0 {
                m.s = 1;
                st.set(META_KEY, &serde_json::to_vec(&m).unwrap(), None)
                    .unwrap();
            }
        };
        let spy = Spy {
            inner: &s,
            on_set: &bump,
        };
        let delta = KeyTable {
            version: 2,
            full: false,
            upserts: vec![entry(2, "a")],
            removals: vec![],
            next: None,
        };
        assert_eq!(
            apply(&spy, &delta, Some(1), 0, &mut known),
            Err(ApplyError::Conflict)
        );
    }

    #[test]
    fn garbage_in_shared_data_reads_as_absent() {
        let s = MemoryStore::default();
        s.set(META_KEY, b"not json", None).unwrap();
        s.set(&entry_key(1), b"{", None).unwrap();
        let r = TableReader::new(&s);
        assert_eq!(r.last_sync_unix(), None);
        assert_eq!(r.entry(1), None);
    }

    #[test]
    fn slots_are_compact() {
        // What one key costs in Envoy's shared data (the value; see docs for
        // the map's own overhead). The JSON form took ~170-190 bytes.
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(1_234_567, &[734_512]), None, 0, &mut known).unwrap();
        let (raw, _) = s.get(&entry_key(734_512));
        let len = raw.unwrap().len();
        assert!(len <= 90, "{len} bytes per key");
    }

    #[test]
    fn a_snapshot_in_progress_does_not_refresh_freshness() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(1, &[1]), None, 1_000, &mut known).unwrap();
        let mut writer = SnapshotWriter::begin(&s, 2).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1), "begin");
        let mut page = snapshot(2, &[1, 2]);
        page.next = Some(2);
        writer.write_page(&s, &page).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1), "a page");
        writer.finish(&s, 70_000, &mut known).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(70), "flipped");
    }

    #[test]
    fn entry_under_wrong_slot_is_ignored() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        apply(&s, &snapshot(1, &[1]), None, 0, &mut known).unwrap();
        let (raw, _) = s.get(&entry_key(1));
        s.set(&entry_key(2), &raw.unwrap(), None).unwrap();
        assert_eq!(TableReader::new(&s).entry(2), None);
    }
}
