//! Target `feed_answer`: key-table feed answers as the filter decodes and
//! applies them to its shared table.
//!
//! Input: answer bodies split on NUL bytes (which JSON never holds). The
//! filter's [`Feed`] asks for each in turn (a snapshot first, then deltas or
//! pages, whatever the answers lead to) and gets the body with status 200.
//! What must hold after each answer:
//! - a body that is not a key table changes nothing;
//! - once a snapshot is complete, no key outside it is live (a key the
//!   control plane no longer lists must stop working);
//! - a key a delta removes is gone, and one it upserts (not removed) reads
//!   back with its user, hash and expiry, as long as versions only grow as
//!   a control plane's do (entries are stamped with the version that wrote
//!   them, and an older write never replaces a newer one, so after an
//!   answer from the past the table rightly keeps the newer entries);
//! - meta's version is the applied answer's (a paged answer's first page's),
//!   and its key count the number of live keys, after every page too, as
//!   long as no snapshot was abandoned since the last complete one (an
//!   abandoned snapshot's entries are live, current states, but uncounted:
//!   the count is a gauge, which no decision reads);
//! - pages of a delta are applied like a delta, page by page.

use crate::memory_store::MemoryStore;
use keygate_filter::config::Config;
use keygate_filter::decision::KeyLookup;
use keygate_filter::feed::{Feed, FeedEvent};
use keygate_filter::slot;
use keygate_filter::table::{ENTRY_PREFIX, TableReader, read_table_meta};
use keygate_protocol::{KeyEntry, KeyTable};
use std::collections::{BTreeMap, BTreeSet};

const START_MS: u64 = 1_800_000_000_000;
/// More than the longest backoff, so every step sends a poll.
const STEP_MS: u64 = 10_000;

fn config() -> Config {
    match Config::from_json(
        br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","snapshotPageSize":2}"#,
    ) {
        Ok(c) => c,
        Err(e) => panic!("the target's own configuration: {e}"),
    }
}

/// Ids of the keys the table serves now.
fn live_ids(store: &MemoryStore) -> BTreeSet<i64> {
    let Some(meta) = read_table_meta(store) else {
        return BTreeSet::new();
    };
    store
        .entries()
        .into_iter()
        .filter_map(|(key, value)| {
            let id: i64 = key.strip_prefix(ENTRY_PREFIX)?.parse().ok()?;
            let stored = slot::decode(&value)?;
            (stored.generation >= meta.generation && stored.entry.is_some_and(|e| e.id == id))
                .then_some(id)
        })
        .collect()
}

fn assert_reads_back(store: &MemoryStore, want: &KeyEntry) {
    if let Some(got) = TableReader::new(store).entry(want.id) {
        assert_eq!(got.id, want.id);
        assert_eq!(
            got.user_id, want.user_id,
            "key {} reads another user",
            want.id
        );
        assert_eq!(
            got.secret_hash, want.secret_hash,
            "key {} reads another hash",
            want.id
        );
        assert_eq!(
            got.expires_at, want.expires_at,
            "key {} reads another expiry",
            want.id
        );
    }
}

/// The last upsert of each id.
fn last_upserts(table: &KeyTable) -> BTreeMap<i64, &KeyEntry> {
    table.upserts.iter().map(|e| (e.id, e)).collect()
}

pub fn check(data: &[u8]) {
    let cfg = config();
    let store = MemoryStore::new();
    let mut feed = Feed::new();
    let mut now = START_MS;
    // Ids of the snapshot being paged in, and its entries.
    let mut snapshot_ids: BTreeSet<i64> = BTreeSet::new();
    // A paged snapshot flips in at its first page's version.
    let mut snapshot_version = 0;
    // A paged delta ends at its first page's version.
    let mut delta_version = 0;
    // A paged snapshot stopped before its last page since the last complete one.
    let mut abandoned_snapshot = false;
    // The newest version an applied answer carried.
    let mut newest = 0;
    for body in data.split(|&b| b == 0).take(16) {
        now += STEP_MS;
        if feed.next_request(&cfg, &store, now).is_none() {
            continue;
        }
        let before = (store.entries(), read_table_meta(&store));
        let paging_before = feed.snapshot_in_progress();
        let delta_paging_before = feed.delta_in_progress();
        let event = feed.on_response(&store, Some(200), Some(body), now);
        let parsed = serde_json::from_slice::<KeyTable>(body).ok();
        let Some(table) = parsed else {
            assert_eq!(
                event,
                FeedEvent::Failed,
                "an undecodable answer was applied"
            );
            let mut after = store.entries();
            let mut was = before.0;
            after.sort();
            was.sort();
            assert!(after == was, "an undecodable answer changed the table");
            continue;
        };
        let upserts = last_upserts(&table);
        if table.full && (paging_before || !matches!(event, FeedEvent::Skipped(_))) {
            if !paging_before {
                snapshot_ids.clear();
                snapshot_version = table.version;
            }
            snapshot_ids.extend(upserts.keys());
        }
        let in_order = table.version >= newest;
        if matches!(event, FeedEvent::Applied(_) | FeedEvent::PageApplied { .. }) {
            newest = newest.max(table.version);
        }
        if paging_before && !feed.snapshot_in_progress() && !matches!(event, FeedEvent::Applied(_))
        {
            abandoned_snapshot = true;
        }
        let counted = !abandoned_snapshot;
        if matches!(event, FeedEvent::Applied(_)) && table.full {
            abandoned_snapshot = false;
        }
        if matches!(
            event,
            FeedEvent::PageApplied {
                snapshot: false,
                ..
            }
        ) && !delta_paging_before
        {
            delta_version = table.version;
        }
        match event {
            FeedEvent::Applied(applied) => {
                let meta = read_table_meta(&store);
                assert_eq!(meta.map(|m| m.version), Some(applied.version));
                let version = if table.full {
                    snapshot_version
                } else if delta_paging_before {
                    delta_version
                } else {
                    table.version
                };
                assert_eq!(applied.version, version, "meta not at the answer's version");
                let live = live_ids(&store);
                if counted || table.full {
                    assert_eq!(
                        meta.map(|m| m.key_count),
                        Some(live.len() as u64),
                        "meta's key count is not the number of live keys"
                    );
                }
                if table.full {
                    let outside: Vec<&i64> = live.difference(&snapshot_ids).collect();
                    assert!(
                        outside.is_empty(),
                        "keys {outside:?} live after a snapshot without them"
                    );
                    snapshot_ids.clear();
                } else if in_order {
                    for id in &table.removals {
                        assert!(
                            TableReader::new(&store).entry(*id).is_none(),
                            "key {id} live after its removal"
                        );
                    }
                }
                for (id, entry) in &upserts {
                    if in_order && (!table.removals.contains(id) || table.full) {
                        assert_reads_back(&store, entry);
                    }
                }
            }
            FeedEvent::PageApplied { snapshot, .. } => {
                assert_eq!(snapshot, table.full, "a page applied as the other kind");
                if !table.full {
                    let meta = read_table_meta(&store);
                    assert_eq!(meta.map(|m| m.version), before.1.map(|m| m.version));
                    if counted {
                        assert_eq!(
                            meta.map(|m| m.key_count),
                            Some(live_ids(&store).len() as u64),
                            "meta's key count is not the number of live keys mid-delta"
                        );
                    }
                    for (id, entry) in &upserts {
                        if in_order && !table.removals.contains(id) {
                            assert_reads_back(&store, entry);
                        }
                    }
                    for id in &table.removals {
                        assert!(
                            !in_order || TableReader::new(&store).entry(*id).is_none(),
                            "key {id} live after its removal in a delta page"
                        );
                    }
                }
            }
            FeedEvent::Skipped(_) | FeedEvent::Failed => {
                if !table.full {
                    assert_eq!(
                        read_table_meta(&store),
                        before.1,
                        "a skipped delta moved meta"
                    );
                }
            }
        }
    }
}
