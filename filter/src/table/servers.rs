//! The MCP servers registered at the control plane, as the edge keeps them:
//! one shared-data value ([`SERVERS_KEY`]), the names separated by newlines
//! (a valid server name has none), beside the key slots.
//!
//! The lease holder rewrites it, and moves meta's `servers_stamp`, only when
//! an answer's set differs from the stored one: a steady feed costs one read
//! per answer and no write. Each VM reads the value again when the stamp in
//! meta differs from the one it decoded it under, so a request normally pays
//! one hash lookup. While the control plane sends no set (an older one) meta
//! carries no stamp and every name counts as registered, as before.

use super::writer::write_meta;
use super::{ApplyError, read_meta};
use crate::store::{SharedStore, StoreError};
use keygate_protocol::server_name::is_valid_server_name;
use std::collections::HashSet;

pub const SERVERS_KEY: &str = "kg4/servers";

/// The stored form: valid names only, sorted, once each, one per line.
pub fn encode(names: &[String]) -> Vec<u8> {
    let mut valid: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| is_valid_server_name(n.as_bytes()))
        .collect();
    valid.sort_unstable();
    valid.dedup();
    valid.join("\n").into_bytes()
}

/// The names in a stored value. A value that is not one [`encode`] writes
/// (garbage, an invalid name) reads as no server at all: it fails closed.
pub fn decode(bytes: &[u8]) -> HashSet<String> {
    let mut names = HashSet::new();
    if bytes.is_empty() {
        return names;
    }
    for name in bytes.split(|b| *b == b'\n') {
        if !is_valid_server_name(name) {
            return HashSet::new();
        }
        match std::str::from_utf8(name) {
            Ok(n) => names.insert(n.to_owned()),
            Err(_) => return HashSet::new(),
        };
    }
    names
}

/// The registered servers as stored (empty when absent); an error when the
/// host refused the read, so a cache does not keep a refusal.
pub fn read(store: &dyn SharedStore) -> Result<HashSet<String>, StoreError> {
    let (stored, _) = store.get(SERVERS_KEY)?;
    Ok(decode(&stored.unwrap_or_default()))
}

/// Makes the stored set what an answer said: `Some(names)`, or `None` (an
/// older control plane) which turns the check off. Call it after the
/// answer's keys were applied; a table that does not exist yet is left alone
/// (the snapshot that creates it is followed by this call). True when it
/// wrote.
///
/// The stamp is the later of `now_ms` and the previous stamp plus one, so it
/// never comes back to a value a VM may still hold, even across a spell
/// without a set.
pub fn sync(
    store: &dyn SharedStore,
    names: Option<&[String]>,
    now_ms: u64,
) -> Result<bool, ApplyError> {
    let wanted = names.map(encode);
    // Once this call has written the value, a retry must still move the
    // stamp: another writer's meta update in between makes the stored value
    // equal the wanted one, yet VMs that decoded the old set under the old
    // stamp would keep it (a deleted server left open) until the next change.
    let mut wrote = false;
    for _ in 0..4 {
        let (meta, cas) = read_meta(store)?;
        let Some(meta) = meta.filter(|m| m.generation > 0) else {
            return Ok(false);
        };
        let stored = meta
            .servers_stamp
            .map(|_| {
                store
                    .get(SERVERS_KEY)
                    .map(|(value, _)| value.unwrap_or_default())
            })
            .transpose()
            .map_err(|_| ApplyError::Store)?;
        if stored == wanted && !wrote {
            return Ok(false);
        }
        wrote = true;
        let stamp = match &wanted {
            Some(value) => {
                store
                    .set(SERVERS_KEY, value, None)
                    .map_err(|_| ApplyError::Store)?;
                Some(now_ms.max(meta.servers_stamp.unwrap_or(0).saturating_add(1)))
            }
            None => None,
        };
        let new_meta = super::Meta {
            servers_stamp: stamp,
            ..meta
        };
        match write_meta(store, &new_meta, cas) {
            Ok(()) => return Ok(true),
            Err(ApplyError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApplyError::Conflict)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decision::KeyLookup;
    use crate::store::StoreError;
    use crate::store::memory::MemoryStore;
    use crate::table::META_KEY;
    use crate::table::testing::{snapshot, write_snapshot};
    use crate::table::{TableCache, TableReader, read_table_meta};
    use std::cell::Cell;
    use std::collections::BTreeSet;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn encoding_keeps_valid_names_once() {
        let bytes = encode(&names(&["beta", "alpha", "Bad", "a/b", "alpha", ""]));
        assert_eq!(bytes, b"alpha\nbeta");
        assert_eq!(decode(&bytes), ["alpha", "beta"].map(String::from).into());
        assert!(decode(b"").is_empty());
        // Garbage fails closed: no server is registered.
        assert!(decode(b"alpha\nBETA").is_empty());
        assert!(decode(b"alpha\n\nbeta").is_empty());
        assert!(decode(&[0xff, b'a']).is_empty());
    }

    #[test]
    fn no_table_no_write() {
        let s = MemoryStore::default();
        assert_eq!(sync(&s, Some(&names(&["alpha"])), 5), Ok(false));
        assert_eq!(s.get(SERVERS_KEY).unwrap().0, None);
    }

    #[test]
    fn a_steady_set_writes_once_and_readers_follow_the_stamp() {
        let s = MemoryStore::default();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut BTreeSet::new()).unwrap();
        let cache = TableCache::new(0);
        let reader = |now| TableReader::cached(&s, &cache, now);
        // Before any set (an older control plane): every name counts.
        assert!(reader(1).server_registered("anything"));

        assert_eq!(sync(&s, Some(&names(&["alpha", "beta"])), 1_000), Ok(true));
        assert_eq!(sync(&s, Some(&names(&["beta", "alpha"])), 2_000), Ok(false));
        let stamp = read_table_meta(&s).unwrap().servers_stamp;
        assert_eq!(stamp, Some(1_000));
        assert!(reader(2).server_registered("alpha"));
        assert!(!reader(2).server_registered("gamma"));
        // The set is decoded once per stamp, not per request.
        let reads = *s.reads.borrow();
        for _ in 0..10 {
            assert!(reader(3).server_registered("beta"));
        }
        assert_eq!(*s.reads.borrow() - reads, 10, "meta only");

        // A server deleted: a new stamp, and the VM sees it at once.
        assert_eq!(sync(&s, Some(&names(&["alpha"])), 500), Ok(true));
        assert_eq!(read_table_meta(&s).unwrap().servers_stamp, Some(1_001));
        assert!(!reader(4).server_registered("beta"));
        // An answer without a set turns the check off; a set later on gets
        // a stamp no VM held before.
        assert_eq!(sync(&s, None, 600), Ok(true));
        assert!(reader(5).server_registered("gamma"));
        assert_eq!(sync(&s, Some(&names(&["gamma"])), 700), Ok(true));
        assert!(reader(6).server_registered("gamma"));
        assert!(!reader(6).server_registered("alpha"));
    }

    #[test]
    fn a_snapshot_keeps_the_set() {
        let s = MemoryStore::default();
        let mut known = BTreeSet::new();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut known).unwrap();
        sync(&s, Some(&names(&["alpha"])), 10).unwrap();
        write_snapshot(&s, &snapshot(2, &[1]), 0, &mut known).unwrap();
        assert_eq!(read_table_meta(&s).unwrap().servers_stamp, Some(10));
        assert!(!TableReader::new(&s).server_registered("beta"));
        assert!(TableReader::new(&s).server_registered("alpha"));
    }

    /// Another writer touches meta right after the servers value is
    /// written (a second lease holder during a handover), once.
    struct MetaRace<'a> {
        inner: &'a MemoryStore,
        armed: Cell<bool>,
    }

    impl SharedStore for MetaRace<'_> {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let r = self.inner.set(key, value, cas);
            if key == SERVERS_KEY && self.armed.replace(false) {
                let (m, _) = self.inner.get(META_KEY).unwrap();
                self.inner.set(META_KEY, &m.unwrap(), None).unwrap();
            }
            r
        }
    }

    #[test]
    fn a_meta_conflict_after_the_write_still_moves_the_stamp() {
        let s = MemoryStore::default();
        write_snapshot(&s, &snapshot(1, &[1]), 0, &mut BTreeSet::new()).unwrap();
        sync(&s, Some(&names(&["alpha", "beta"])), 1_000).unwrap();
        let cache = TableCache::new(0);
        assert!(TableReader::cached(&s, &cache, 1).server_registered("beta"));
        // beta is deleted at the control plane; the write races a meta write.
        let racy = MetaRace {
            inner: &s,
            armed: Cell::new(true),
        };
        assert_eq!(sync(&racy, Some(&names(&["alpha"])), 2_000), Ok(true));
        // A VM that decoded the set under the old stamp sees beta closed.
        assert!(!TableReader::cached(&s, &cache, 5).server_registered("beta"));
        assert!(TableReader::cached(&s, &cache, 5).server_registered("alpha"));
    }
}
