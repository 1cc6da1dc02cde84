//! The key table's read path: what one request reads ([`TableReader`]) and
//! what each VM keeps of it between requests ([`TableCache`]).

use super::{ApplyError, Meta, read_entry, read_table_meta, servers};
use crate::decision::KeyLookup;
use crate::store::SharedStore;
use keygate_protocol::KeyEntry;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

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
    /// The registered servers, with the meta stamp they were read under.
    servers: RefCell<Option<(u64, HashSet<String>)>>,
}

/// Entries read under one table generation and version; `None` values are
/// keys the table lacks.
#[derive(Debug, Default)]
struct CachedEntries {
    under: Option<(u64, u64)>,
    by_id: HashMap<i64, Option<Rc<KeyEntry>>>,
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
        *self.servers.borrow_mut() = None;
    }

    /// Whether `server` is in the registered set stored under `stamp`,
    /// decoded once per stamp. A refused read answers no (the request is
    /// refused) and is not kept: the stamp may not move for a long time.
    fn server_registered(&self, store: &dyn SharedStore, stamp: u64, server: &str) -> bool {
        let mut cached = self.servers.borrow_mut();
        match &*cached {
            Some((at, names)) if *at == stamp => names.contains(server),
            _ => match servers::read(store) {
                Ok(names) => {
                    let registered = names.contains(server);
                    *cached = Some((stamp, names));
                    registered
                }
                Err(_) => false,
            },
        }
    }

    /// The live entry for `key_id` under `meta`, from the cache or the store.
    fn entry(&self, store: &dyn SharedStore, meta: &Meta, key_id: i64) -> Option<Rc<KeyEntry>> {
        let at = Some((meta.generation, meta.version));
        let mut cached = self.entries.borrow_mut();
        if cached.under != at {
            cached.under = at;
            cached.by_id.clear();
        }
        if let Some(entry) = cached.by_id.get(&key_id) {
            return entry.clone();
        }
        // A refused read refuses this request and is not kept: the table's
        // version may not move for a long time.
        let Ok(entry) = live_entry(store, meta, key_id) else {
            return None;
        };
        let entry = entry.map(Rc::new);
        if self.ttl_ms > 0 {
            if cached.by_id.len() >= CACHE_MAX_ENTRIES {
                cached.by_id.clear();
            }
            cached.by_id.insert(key_id, entry.clone());
        }
        entry
    }
}

/// `key_id`'s entry if its slot is live under `meta`; an error when the host
/// refused the read.
fn live_entry(
    store: &dyn SharedStore,
    meta: &Meta,
    key_id: i64,
) -> Result<Option<KeyEntry>, ApplyError> {
    let (stored, _) = read_entry(store, key_id)?;
    Ok(stored
        .filter(|s| s.generation >= meta.generation)
        .and_then(|s| s.entry)
        .filter(|e| e.id == key_id))
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

    fn entry(&self, key_id: i64) -> Option<Rc<KeyEntry>> {
        let meta = self.meta()?;
        match self.cache {
            Some((cache, _)) => cache.entry(self.store, &meta, key_id),
            None => live_entry(self.store, &meta, key_id).ok()?.map(Rc::new),
        }
    }

    fn server_registered(&self, server: &str) -> bool {
        let Some(stamp) = self.meta().and_then(|m| m.servers_stamp) else {
            return true;
        };
        match self.cache {
            Some((cache, _)) => cache.server_registered(self.store, stamp, server),
            None => servers::read(self.store).is_ok_and(|names| names.contains(server)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryStore, RefusesReads};
    use crate::table::testing::{delta, snapshot, write_snapshot};
    use crate::table::{META_KEY, apply_delta, entry_key};
    use std::collections::BTreeSet;

    #[test]
    fn a_refused_read_refuses_the_request_and_is_not_cached() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(5, &[1]), 7_000, &mut known).unwrap();
        servers::sync(&s, Some(&["alpha".to_owned()]), 7_000).unwrap();
        let cache = TableCache::new(60_000);
        let now = 8_000;
        for prefix in [crate::table::ENTRY_PREFIX, servers::SERVERS_KEY] {
            cache.invalidate();
            let store = RefusesReads::of(&s, prefix);
            let reader = TableReader::cached(&store, &cache, now);
            let refused = if prefix == servers::SERVERS_KEY {
                !reader.server_registered("alpha")
            } else {
                reader.entry(1).is_none()
            };
            assert!(refused, "{prefix}: a refused read must refuse");
            // The host answers again: the same cache, unchanged table, must
            // read again rather than keep the refusal.
            store.on.set(false);
            let reader = TableReader::cached(&store, &cache, now);
            assert!(reader.entry(1).is_some(), "{prefix}");
            assert!(reader.server_registered("alpha"), "{prefix}");
        }
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
        write_snapshot(&s, &snapshot(3, &[1, 2]), at, &mut known).unwrap();
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
        let revoke = delta(4, vec![], vec![1]);
        let now = at + 600;
        assert!(reader(now).entry(1).is_some());
        apply_delta(&s, &revoke, 3, now, &mut known).unwrap();
        assert!(reader(now + TTL - 1).entry(1).is_some(), "within the TTL");
        assert!(reader(now + TTL).entry(1).is_none());
        assert!(reader(now + TTL).entry(2).is_some());

        // The VM that wrote a change drops its copy at once.
        let now = now + 2 * TTL;
        assert!(reader(now).entry(2).is_some());
        write_snapshot(&s, &snapshot(5, &[1]), now, &mut known).unwrap();
        cache.invalidate();
        assert!(reader(now).entry(2).is_none());
        assert!(reader(now).entry(1).is_some());
        // A clock that went back reads meta again rather than trust the copy.
        assert_eq!(cache.meta(&s, at).map(|m| m.version), Some(5));
    }

    #[test]
    fn table_cache_with_no_ttl_reads_every_time_and_stays_bounded() {
        let s = MemoryStore::default();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut BTreeSet::new()).unwrap();
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
    fn request_costs_two_reads() {
        let s = MemoryStore::default();
        let ids: Vec<i64> = (1..=200).collect();
        write_snapshot(&s, &snapshot(1, &ids), 0, &mut BTreeSet::new()).unwrap();
        *s.reads.borrow_mut() = 0;
        let r = TableReader::new(&s);
        assert!(r.last_sync_unix().is_some());
        assert!(r.entry(150).is_some());
        assert_eq!(*s.reads.borrow(), 2);
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
    fn entry_under_wrong_slot_is_ignored() {
        let s = MemoryStore::default();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut BTreeSet::new()).unwrap();
        let (raw, _) = s.get(&entry_key(1)).unwrap();
        s.set(&entry_key(2), &raw.unwrap(), None).unwrap();
        assert_eq!(TableReader::new(&s).entry(2), None);
    }
}
