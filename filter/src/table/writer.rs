//! The key table's write path, used by the lease holder only: a delta
//! applied in place, whole ([`apply_delta`]) or page by page
//! ([`DeltaWriter`]), or a full snapshot written page by page under a
//! reserved generation and flipped in at the end ([`SnapshotWriter`]).

use super::{META_KEY, Meta, StoredEntry, entry_key, read_entry, read_meta};
use crate::slot;
use crate::store::{SharedStore, StoreError};
use keygate_protocol::KeyTable;
use std::collections::BTreeSet;

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
    /// Whether a whole snapshot was applied (else a delta).
    pub snapshot: bool,
    /// Answers it came in (more than one when paged).
    pub pages: u32,
}

fn is_live(stored: Option<&StoredEntry>, generation: u64) -> bool {
    stored.is_some_and(|s| s.entry.is_some() && s.generation >= generation)
}

/// Writes one slot unless it already holds a newer write. Returns how the
/// number of keys live at `generation` changed: +1, -1, or 0 (also when the
/// newer write stays, which a paged delta's later page can leave in place).
fn put_entry(
    store: &dyn SharedStore,
    id: i64,
    new: &StoredEntry,
    generation: u64,
) -> Result<i128, ApplyError> {
    let key = entry_key(id);
    let value = slot::encode(new);
    for _ in 0..4 {
        let (old, cas) = read_entry(store, id)?;
        if old
            .as_ref()
            .is_some_and(|o| o.generation >= new.generation && o.version > new.version)
        {
            return Ok(0);
        }
        let change = i128::from(is_live(Some(new), generation))
            - i128::from(is_live(old.as_ref(), generation));
        match store.set(&key, &value, cas) {
            Ok(()) => return Ok(change),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host) => return Err(ApplyError::Store),
        }
    }
    Err(ApplyError::Conflict)
}

pub(super) fn write_meta(
    store: &dyn SharedStore,
    meta: &Meta,
    cas: Option<u32>,
) -> Result<(), ApplyError> {
    let value = serde_json::to_vec(meta).map_err(|_| ApplyError::Store)?;
    match store.set(META_KEY, &value, cas) {
        Ok(()) => Ok(()),
        Err(StoreError::CasMismatch) => Err(ApplyError::Conflict),
        Err(StoreError::Host) => Err(ApplyError::Store),
    }
}

/// Applies a whole delta answer of the key-table feed, asked for with
/// `since=<since>`, and records the sync: a [`DeltaWriter`] of one page.
/// Full snapshots go through [`SnapshotWriter`].
///
/// `known_ids` is the writer's memory of the ids the table holds, which a
/// later snapshot uses to give back the memory of the keys it drops.
pub fn apply_delta(
    store: &dyn SharedStore,
    table: &KeyTable,
    since: u64,
    now_ms: u64,
    known_ids: &mut BTreeSet<i64>,
) -> Result<Applied, ApplyError> {
    let mut writer = DeltaWriter::begin(store, table, since, now_ms)?;
    writer.write_page(store, table, known_ids)?;
    writer.finish(store)
}

/// A delta being applied page by page, in place, under the table's own
/// generation.
///
/// Each page's entries are live as soon as they are written: every one is
/// the key's state at that page's version or later, never older than what
/// meta's version promises, so no key is ever in a wrong state; a key the
/// delta has not reached yet simply keeps its older state a little longer.
/// Meta stays at `since` until [`finish`](Self::finish) moves it to the
/// *first* page's version (the oldest data the delta brought), synced as of
/// the first page's arrival; the delta since that version, asked for next,
/// re-ships whatever changed while paging. Every page checks that meta is
/// still where the delta started, so another writer's table is never mixed
/// in, and a page that more pages follow records meta's key count, so the
/// count stays true if the delta stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaWriter {
    generation: u64,
    /// The version the delta starts from (meta's, while paging).
    since: u64,
    /// The first page's version: the table's version once finished.
    version: u64,
    first_page_ms: u64,
    /// Live keys, counted from meta's as pages add and remove them.
    key_count: i128,
    writes: usize,
    pages: u32,
    /// Meta as last read, and its CAS token: the meta write at the end
    /// fails if anything touched meta since.
    meta: Meta,
    cas: Option<u32>,
}

impl DeltaWriter {
    /// Starts applying a delta from `since` whose first page is `first`,
    /// arrived at `now_ms`: refused unless the table is at `since`.
    pub fn begin(
        store: &dyn SharedStore,
        first: &KeyTable,
        since: u64,
        now_ms: u64,
    ) -> Result<Self, ApplyError> {
        let (meta, cas) = read_meta(store)?;
        let meta = meta
            .filter(|m| m.generation > 0)
            .ok_or(ApplyError::NotBasedOnTable)?;
        if first.full || since != meta.version || first.version < meta.version {
            return Err(ApplyError::NotBasedOnTable);
        }
        Ok(Self {
            generation: meta.generation,
            since,
            version: first.version,
            first_page_ms: now_ms,
            key_count: i128::from(meta.key_count),
            writes: 0,
            pages: 0,
            meta,
            cas,
        })
    }

    /// Meta and its CAS token, if the table is still where the delta started.
    fn check(&self, store: &dyn SharedStore) -> Result<(Meta, Option<u32>), ApplyError> {
        match read_meta(store)? {
            (Some(m), cas) if m.generation == self.generation && m.version == self.since => {
                Ok((m, cas))
            }
            _ => Err(ApplyError::NotBasedOnTable),
        }
    }

    /// Writes one page's upserts, then its removals.
    pub fn write_page(
        &mut self,
        store: &dyn SharedStore,
        page: &KeyTable,
        known_ids: &mut BTreeSet<i64>,
    ) -> Result<(), ApplyError> {
        // The first page's check was `begin`'s read; later pages come after
        // other callouts, when another writer may have moved the table (an
        // entry written under a generation it replaced would be dead).
        if self.pages > 0 {
            (self.meta, self.cas) = self.check(store)?;
        }
        if page.full || page.version < self.version {
            return Err(ApplyError::NotBasedOnTable);
        }
        self.pages += 1;
        for entry in &page.upserts {
            let stored = StoredEntry {
                generation: self.generation,
                version: page.version,
                entry: Some(entry.clone()),
            };
            self.key_count += put_entry(store, entry.id, &stored, self.generation)?;
            known_ids.insert(entry.id);
            self.writes += 1;
        }
        let tombstone = StoredEntry {
            generation: self.generation,
            version: page.version,
            entry: None,
        };
        for id in &page.removals {
            self.key_count += put_entry(store, *id, &tombstone, self.generation)?;
            known_ids.remove(id);
            self.writes += 1;
        }
        if page.next.is_some() {
            let meta = Meta {
                key_count: u64::try_from(self.key_count.max(0)).unwrap_or(0),
                ..self.meta
            };
            // The next page reads meta (and its CAS token) again.
            write_meta(store, &meta, self.cas)?;
        }
        Ok(())
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.writes as u64
    }

    /// Moves meta to the first page's version and records the sync.
    pub fn finish(self, store: &dyn SharedStore) -> Result<Applied, ApplyError> {
        let meta = self.meta;
        let new_meta = Meta {
            generation: self.generation,
            version: self.version,
            synced_at_ms: self.first_page_ms,
            key_count: u64::try_from(self.key_count.max(0)).unwrap_or(0),
            // A reservation left by an aborted snapshot stays reserved.
            reserved: meta.reserved,
            servers_stamp: meta.servers_stamp,
        };
        write_meta(store, &new_meta, self.cas)?;
        Ok(Applied {
            version: new_meta.version,
            key_count: new_meta.key_count,
            writes: self.writes,
            snapshot: false,
            pages: self.pages,
        })
    }
}

/// A full snapshot being written page by page under a reserved generation.
///
/// [`begin`](Self::begin) reserves generation `max(generation, reserved) + 1`
/// in meta before any entry is written; each page writes its entries under it
/// (live at once: readers accept `entry.generation >= meta.generation`);
/// [`finish`](Self::finish) flips meta to the new generation at the first
/// page's version and records the sync at the first page's arrival. Every meta write checks, by
/// compare-and-swap, that the reservation is still this writer's and the
/// table has not moved meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWriter {
    /// `meta.generation` when the snapshot began.
    base: u64,
    /// The reserved generation.
    generation: u64,
    /// The first page's version: the table's version once flipped.
    version: u64,
    /// When the first page arrived: the flipped table's last sync. The first
    /// page is the oldest data in the table (later pages are read later, and
    /// a failing page is retried indefinitely), so the table is no fresher
    /// than it. Its arrival, not its request's sending, for the same clock
    /// as every delta (stamped on arrival): the request may have been a long
    /// poll that waited up to `feedWaitSeconds` before the control plane read
    /// the table, so the sending time would misdate it by that much.
    first_page_ms: u64,
    /// Ids written so far (pages come in id order; sorted again at the end).
    ids: Vec<i64>,
    writes: usize,
    pages: u32,
}

impl SnapshotWriter {
    /// Reserves a generation for a snapshot whose first page is at `version`
    /// and arrived at `now_ms`.
    pub fn begin(store: &dyn SharedStore, version: u64, now_ms: u64) -> Result<Self, ApplyError> {
        let (meta, cas) = read_meta(store)?;
        let base = meta.map_or(0, |m| m.generation);
        let reserved = meta.and_then(|m| m.reserved).unwrap_or(0);
        let generation = base.max(reserved).saturating_add(1);
        // The last sync stays that of the last complete table: a snapshot
        // counts as a sync only once it is flipped in (see `finish`).
        let reservation = Meta {
            generation: base,
            version: meta.map_or(0, |m| m.version),
            synced_at_ms: meta.map_or(0, |m| m.synced_at_ms),
            key_count: meta.map_or(0, |m| m.key_count),
            reserved: Some(generation),
            servers_stamp: meta.and_then(|m| m.servers_stamp),
        };
        write_meta(store, &reservation, cas)?;
        Ok(Self {
            base,
            generation,
            version,
            first_page_ms: now_ms,
            ids: Vec::new(),
            writes: 0,
            pages: 0,
        })
    }

    /// Keys written so far.
    pub fn written(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Meta and its CAS token, if the table is still as this snapshot left it.
    fn check(&self, store: &dyn SharedStore) -> Result<(Meta, Option<u32>), ApplyError> {
        match read_meta(store)? {
            (Some(m), cas) if m.generation == self.base && m.reserved == Some(self.generation) => {
                Ok((m, cas))
            }
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
        self.pages += 1;
        for entry in &page.upserts {
            let stored = StoredEntry {
                generation: self.generation,
                version: page.version,
                entry: Some(entry.clone()),
            };
            put_entry(store, entry.id, &stored, self.generation)?;
            self.ids.push(entry.id);
            self.writes += 1;
        }
        // Removals in a snapshot are redundant (absent is removed) but harmless.
        self.check(store).map(|_| ())
    }

    /// Flips the table to the new generation, which kills every entry the
    /// snapshot did not write, and records the sync as of the first page;
    /// then clears the slots of known ids it dropped.
    /// (A new lease holder starts with an empty memory; entries it never saw
    /// stay dead, not live, until overwritten.)
    pub fn finish(
        mut self,
        store: &dyn SharedStore,
        known_ids: &mut BTreeSet<i64>,
    ) -> Result<Applied, ApplyError> {
        let (meta, cas) = self.check(store)?;
        self.ids.sort_unstable();
        self.ids.dedup();
        let ids: BTreeSet<i64> = self.ids.into_iter().collect();
        let new_meta = Meta {
            generation: self.generation,
            version: self.version,
            synced_at_ms: self.first_page_ms,
            key_count: ids.len() as u64,
            reserved: None,
            // The registered servers live beside the entries, not under a
            // generation: they stay until an answer says otherwise.
            servers_stamp: meta.servers_stamp,
        };
        write_meta(store, &new_meta, cas)?;
        let tombstone = StoredEntry {
            generation: self.generation,
            version: self.version,
            entry: None,
        };
        let mut writes = self.writes;
        for id in known_ids.difference(&ids) {
            put_entry(store, *id, &tombstone, self.generation)?;
            writes += 1;
        }
        *known_ids = ids;
        Ok(Applied {
            version: self.version,
            key_count: new_meta.key_count,
            writes,
            snapshot: true,
            pages: self.pages,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decision::KeyLookup;
    use crate::store::memory::{MemoryStore, RefusesReads, Spy};
    use crate::table::ENTRY_PREFIX;
    use crate::table::TableReader;
    use crate::table::testing::{delta, entry, snapshot, write_snapshot};
    use keygate_protocol::ServerScope;

    fn live_ids(store: &MemoryStore, range: std::ops::Range<i64>) -> Vec<i64> {
        let r = TableReader::new(store);
        range.filter(|i| r.entry(*i).is_some()).collect()
    }

    #[test]
    fn a_refused_read_writes_nothing() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(5, &[1, 2]), 7_000, &mut known).unwrap();
        apply_delta(&s, &delta(8, vec![], vec![2]), 5, 8_000, &mut known).unwrap();
        let before = s.data.borrow().clone();
        // Entry reads refused: a delta may not write its slots blind (taken
        // for absent, the read would let any write through, a stale one
        // over a newer tombstone too).
        let entries_refused = RefusesReads::of(&s, ENTRY_PREFIX);
        let change = delta(9, vec![entry(2, "alpha"), entry(3, "alpha")], vec![]);
        assert_eq!(
            apply_delta(&entries_refused, &change, 8, 9_000, &mut known),
            Err(ApplyError::Store)
        );
        // Meta reads refused: no snapshot may reserve a generation blind.
        let meta_refused = RefusesReads::of(&s, META_KEY);
        assert_eq!(
            SnapshotWriter::begin(&meta_refused, 10, 9_000).err(),
            Some(ApplyError::Store)
        );
        assert_eq!(*s.data.borrow(), before);
        // Readers fail closed: no table, or no key.
        assert_eq!(TableReader::new(&meta_refused).last_sync_unix(), None);
        assert!(TableReader::new(&entries_refused).entry(1).is_none());
        assert_eq!(live_ids(&s, 0..5), vec![1]);
    }

    #[test]
    fn snapshot_then_deltas() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        let a = write_snapshot(&s, &snapshot(5, &[1, 2, 3]), 7_000, &mut known).unwrap();
        assert_eq!((a.version, a.key_count), (5, 3));
        assert_eq!(live_ids(&s, 0..10), vec![1, 2, 3]);
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(7));

        let change = delta(8, vec![entry(4, "beta"), entry(2, "beta")], vec![1, 99]);
        let a = apply_delta(&s, &change, 5, 9_000, &mut known).unwrap();
        assert_eq!((a.version, a.key_count, a.writes), (8, 3, 4));
        assert_eq!(live_ids(&s, 0..10), vec![2, 3, 4]);
        let r = TableReader::new(&s);
        assert_eq!(
            r.entry(2).unwrap().servers,
            ServerScope::Named(vec!["beta".into()])
        );
        assert_eq!(r.meta().unwrap().version, 8);

        // An empty long-poll answer only refreshes the sync time.
        apply_delta(&s, &delta(8, vec![], vec![]), 8, 20_000, &mut known).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(20));
        assert_eq!(TableReader::new(&s).meta().unwrap().key_count, 3);
    }

    #[test]
    fn delta_of_k_changes_costs_o_k() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        let ids: Vec<i64> = (1..=500).collect();
        write_snapshot(&s, &snapshot(1, &ids), 0, &mut known).unwrap();
        let before = s.data.borrow().len();
        *s.reads.borrow_mut() = 0;
        let change = delta(2, vec![entry(7, "beta")], vec![9]);
        let a = apply_delta(&s, &change, 1, 0, &mut known).unwrap();
        assert_eq!(a.writes, 2);
        // meta + one read per changed slot.
        assert_eq!(*s.reads.borrow(), 3);
        assert_eq!(s.data.borrow().len(), before);
    }

    #[test]
    fn delta_not_based_on_table_is_refused() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        let change = delta(3, vec![entry(1, "a")], vec![]);
        assert_eq!(
            apply_delta(&s, &change, 2, 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        write_snapshot(&s, &snapshot(5, &[1]), 0, &mut known).unwrap();
        assert_eq!(
            apply_delta(&s, &change, 2, 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        assert_eq!(
            apply_delta(&s, &change, 5, 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        // A snapshot is never applied as a delta.
        assert_eq!(
            apply_delta(&s, &snapshot(6, &[2]), 5, 0, &mut known),
            Err(ApplyError::NotBasedOnTable)
        );
        assert_eq!(live_ids(&s, 0..5), vec![1]);
    }

    #[test]
    fn snapshot_replacement_has_no_window() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(1, &[1, 2, 3, 4]), 0, &mut known).unwrap();
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
        let a = write_snapshot(&spy, &next, 0, &mut known).unwrap();
        assert_eq!((a.version, a.key_count), (9, 3));
        assert_eq!(live_ids(&s, 0..10), vec![2, 3, 5]);
        // Dropped slots were cleared, not left holding data.
        let (raw, _) = s.get(&entry_key(1)).unwrap();
        let stored = slot::decode(&raw.unwrap()).unwrap();
        assert_eq!(stored.entry, None);
    }

    #[test]
    fn new_writer_snapshot_kills_entries_it_never_saw() {
        let s = MemoryStore::default();
        let mut first_owner = BTreeSet::new();
        write_snapshot(&s, &snapshot(1, &[1, 2]), 0, &mut first_owner).unwrap();
        let mut second_owner = BTreeSet::new();
        write_snapshot(&s, &snapshot(4, &[2]), 0, &mut second_owner).unwrap();
        assert_eq!(live_ids(&s, 0..5), vec![2]);
    }

    #[test]
    fn older_write_never_overwrites_newer() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut known).unwrap();
        // A newer writer removed key 1 at version 3...
        apply_delta(&s, &delta(3, vec![], vec![1]), 1, 0, &mut known).unwrap();
        // ...and a slow writer's stale upsert of version 2 arrives after.
        let generation = TableReader::new(&s).meta().unwrap().generation;
        let stale = StoredEntry {
            generation,
            version: 2,
            entry: Some(entry(1, "alpha")),
        };
        // Left out, and not counted as a key made live.
        assert_eq!(put_entry(&s, 1, &stale, generation).unwrap(), 0);
        assert_eq!(TableReader::new(&s).entry(1), None);
    }

    #[test]
    fn meta_conflict_is_reported() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut known).unwrap();
        let bump = |st: &MemoryStore| {
            // Another writer touches meta between our read and our write.
            let (m, _) = read_meta(st).unwrap();
            let mut m = m.unwrap();
            if m.synced_at_ms == 0 {
                m.synced_at_ms = 1;
                st.set(META_KEY, &serde_json::to_vec(&m).unwrap(), None)
                    .unwrap();
            }
        };
        let spy = Spy {
            inner: &s,
            on_set: &bump,
        };
        let change = delta(2, vec![entry(2, "a")], vec![]);
        assert_eq!(
            apply_delta(&spy, &change, 1, 0, &mut known),
            Err(ApplyError::Conflict)
        );
    }

    #[test]
    fn slots_are_compact() {
        // What one key costs in Envoy's shared data (the value; see docs for
        // the map's own overhead). The JSON form took ~170-190 bytes.
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(1_234_567, &[734_512]), 0, &mut known).unwrap();
        let (raw, _) = s.get(&entry_key(734_512)).unwrap();
        let len = raw.unwrap().len();
        assert!(len <= 90, "{len} bytes per key");
    }

    #[test]
    fn meta_keeps_its_compact_field_names() {
        let meta = Meta {
            generation: 2,
            version: 9,
            synced_at_ms: 4_000,
            key_count: 5,
            reserved: None,
            servers_stamp: None,
        };
        assert_eq!(
            serde_json::to_string(&meta).unwrap(),
            r#"{"g":2,"v":9,"s":4000,"n":5}"#
        );
    }

    #[test]
    fn a_snapshot_in_progress_does_not_refresh_freshness() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(1, &[1]), 1_000, &mut known).unwrap();
        let mut writer = SnapshotWriter::begin(&s, 2, 5_000).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1), "begin");
        let mut page = snapshot(2, &[1, 2]);
        page.next = Some(2);
        writer.write_page(&s, &page).unwrap();
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1), "a page");
        writer.finish(&s, &mut known).unwrap();
        // As of the first page, not of the flip.
        assert_eq!(TableReader::new(&s).last_sync_unix(), Some(5), "flipped");
    }
}
