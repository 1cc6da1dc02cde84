//! The feed client's tests: what it asks for and how it applies what it
//! gets, against the in-memory store.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::decision::KeyLookup;
use crate::store::memory::{MemoryStore, Spy};
use crate::table::TableReader;
use keygate_protocol::{KeyEntry, Secret, ServerScope};

fn cfg() -> Config {
    Config::from_json(
        br#"{"controlPlaneCluster":"cp","controlPlaneAuthority":"cp.local:8081","dataPlaneToken":"dp-token","feedWaitSeconds":20}"#,
    )
    .unwrap()
}

fn body(version: u64, full: bool, ids: &[i64], removals: &[i64]) -> Vec<u8> {
    let t = KeyTable {
        version,
        full,
        upserts: ids
            .iter()
            .map(|id| KeyEntry {
                id: *id,
                user_id: 1,
                secret_hash: Secret::from_bytes([1; 32]).hash(),
                expires_at: None,
                servers: ServerScope::All,
                previous_secret: None,
            })
            .collect(),
        removals: removals.to_vec(),
        next: None,
        registered_servers: None,
    };
    serde_json::to_vec(&t).unwrap()
}

#[test]
fn first_poll_is_a_snapshot_then_long_polls_from_meta() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut f = Feed::new();
    let r = f.next_request(&c, &s, 0).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?limit=50000")
    );
    assert_eq!(r.header(":authority"), Some("cp.local:8081"));
    assert_eq!(r.authorization.expose_secret(), "Bearer dp-token");
    assert!(
        r.header_pairs()
            .contains(&("authorization", "Bearer dp-token"))
    );
    assert_eq!(r.timeout_ms, 25_000);
    // Only one poll at a time.
    assert!(f.next_request(&c, &s, 10).is_none());
    let ev = f.on_response(&s, Some(200), Some(&body(4, true, &[1, 2], &[])), 100);
    assert!(matches!(ev, FeedEvent::Applied(a) if a.version == 4 && a.key_count == 2));
    // Right after a snapshot: catch up without waiting (see `catch_up`).
    let r = f.next_request(&c, &s, 100).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=4&wait=0&limit=50000&paged=1")
    );
    let ev = f.on_response(&s, Some(200), Some(&body(5, false, &[], &[1])), 300);
    assert!(matches!(ev, FeedEvent::Applied(a) if a.version == 5 && a.key_count == 1));
    // Then long polls.
    let r = f.next_request(&c, &s, 300).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=5&wait=20&limit=50000&paged=1")
    );
}

#[test]
fn registered_servers_follow_every_answer_and_older_control_planes_send_none() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut f = Feed::new();
    let star = |id: i64| {
        format!(
            r#"{{"id":{id},"userId":1,"secretHash":"{}","servers":"*"}}"#,
            Secret::from_bytes([1; 32]).hash().to_hex()
        )
    };
    let registered = |name: &str| TableReader::new(&s).server_registered(name);
    // A newer control plane: the set comes with the snapshot...
    f.next_request(&c, &s, 0).unwrap();
    let snapshot = format!(
        r#"{{"version":4,"full":true,"upserts":[{}],"registeredServers":["alpha","beta"]}}"#,
        star(1)
    );
    let ev = f.on_response(&s, Some(200), Some(snapshot.as_bytes()), 100);
    assert!(matches!(ev, FeedEvent::Applied(_)), "{ev:?}");
    assert!(registered("beta") && !registered("gamma"));
    // ...and with every delta, even one that changes no key.
    f.next_request(&c, &s, 100).unwrap();
    let delta = r#"{"version":5,"full":false,"registeredServers":["alpha"]}"#;
    f.on_response(&s, Some(200), Some(delta.as_bytes()), 200);
    assert!(registered("alpha") && !registered("beta"));
    // An older control plane (no field): every name counts again.
    f.next_request(&c, &s, 200).unwrap();
    let old = r#"{"version":6,"full":false,"upserts":[],"removals":[]}"#;
    let ev = f.on_response(&s, Some(200), Some(old.as_bytes()), 300);
    assert!(matches!(ev, FeedEvent::Applied(a) if a.version == 6));
    assert!(registered("gamma"));
    assert!(TableReader::new(&s).entry(1).is_some());
}

#[test]
fn new_holder_continues_from_shared_version() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut old = Feed::new();
    old.next_request(&c, &s, 0).unwrap();
    old.on_response(&s, Some(200), Some(&body(7, true, &[1], &[])), 0);
    // The old holder dies; a fresh worker's feed takes over.
    let mut new = Feed::new();
    let r = new.next_request(&c, &s, 5_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=7&wait=20&limit=50000&paged=1")
    );
    let ev = new.on_response(&s, Some(200), Some(&body(8, false, &[2], &[])), 5_100);
    assert!(matches!(ev, FeedEvent::Applied(a) if a.key_count == 2));
}

#[test]
fn failures_back_off_and_table_goes_stale_then_recovers() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut f = Feed::new();
    f.next_request(&c, &s, 0).unwrap();
    f.on_response(&s, Some(200), Some(&body(1, true, &[1], &[])), 1_000);
    let mut now = 1_000;
    let mut waits = vec![];
    f.next_request(&c, &s, now).unwrap();
    // Control plane gone: timeouts, 5xx, garbage.
    for (status, b) in [
        (None, None),
        (Some(503), Some(&b"{}"[..])),
        (Some(200), Some(&b"not json"[..])),
        (Some(401), None),
        (None, None),
        (None, None),
        (None, None),
    ] {
        assert_eq!(f.on_response(&s, status, b, now), FeedEvent::Failed);
        let mut t = now;
        while f.next_request(&c, &s, t).is_none() {
            t += 50;
        }
        waits.push(t - now);
        now = t;
    }
    assert_eq!(waits, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
    // While failing, polls do not wait, so recovery is seen at once.
    f.on_response(&s, None, None, now);
    let r = loop {
        now += 50;
        if let Some(r) = f.next_request(&c, &s, now) {
            break r;
        }
    };
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=0&limit=50000&paged=1")
    );
    assert_eq!(r.timeout_ms, CALLOUT_SLACK_MS);
    // The table keeps its last sync time while failing...
    let r = TableReader::new(&s);
    assert_eq!(r.last_sync_unix(), Some(1));
    assert!(r.entry(1).is_some());
    // ...and the first good answer refreshes it and resets the backoff.
    let ev = f.on_response(&s, Some(200), Some(&body(1, false, &[], &[])), 40_000);
    assert!(matches!(ev, FeedEvent::Applied(_)));
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(40));
    assert!(f.next_request(&c, &s, 40_000).is_some());
}

#[test]
fn debug_of_a_callout_never_shows_the_token() {
    let s = MemoryStore::default();
    let r = Feed::new().next_request(&cfg(), &s, 0).unwrap();
    let shown = format!("{r:?}");
    assert!(!shown.contains("dp-token"), "{shown}");
    assert!(shown.contains("/internal/v1/key-table"), "{shown}");
}

#[test]
fn failed_callout_headers_are_never_read() {
    // Envoy reports a reset callout with zero headers and then answers
    // BadArgument to any header read, which the SDK turns into a panic.
    let mut read = false;
    let status = callout_status(0, || {
        read = true;
        Some(b"200".to_vec())
    });
    assert_eq!(status, None);
    assert!(!read, "the headers of a failed callout were read");
    assert_eq!(callout_status(3, || Some(b"200".to_vec())), Some(200));
    assert_eq!(callout_status(3, || Some(b"2x0".to_vec())), None);
    assert_eq!(callout_status(3, || Some(vec![0xff])), None);
    assert_eq!(callout_status(3, || None), None);
}

#[test]
fn dispatch_failure_backs_off() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut f = Feed::new();
    f.next_request(&c, &s, 0).unwrap();
    f.on_dispatch_failed(0);
    assert!(!f.in_flight());
    assert!(f.next_request(&c, &s, 100).is_none());
    assert!(f.next_request(&c, &s, 250).is_some());
}

#[test]
fn lost_callback_does_not_wedge_the_feed() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut f = Feed::new();
    f.next_request(&c, &s, 0).unwrap();
    assert!(f.next_request(&c, &s, 49_999).is_none());
    assert!(f.next_request(&c, &s, 50_000).is_some());
}

#[test]
fn delta_after_someone_else_moved_the_table_is_skipped() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut a = Feed::new();
    a.next_request(&c, &s, 0).unwrap();
    a.on_response(&s, Some(200), Some(&body(3, true, &[1], &[])), 0);
    a.next_request(&c, &s, 0).unwrap(); // since=3
    // Meanwhile another writer moved the table to 6.
    let mut b = Feed::new();
    b.next_request(&c, &s, 0).unwrap();
    b.on_response(&s, Some(200), Some(&body(6, false, &[2], &[])), 0);
    let ev = a.on_response(&s, Some(200), Some(&body(4, false, &[9], &[])), 0);
    assert_eq!(ev, FeedEvent::Skipped(ApplyError::NotBasedOnTable));
    assert!(TableReader::new(&s).entry(9).is_none());
    let r = a.next_request(&c, &s, 0).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=6&wait=20&limit=50000&paged=1")
    );
}

fn page(version: u64, ids: &[i64], next: Option<i64>) -> Vec<u8> {
    let mut t: KeyTable = serde_json::from_slice(&body(version, true, ids, &[])).unwrap();
    t.next = next;
    serde_json::to_vec(&t).unwrap()
}

fn paged_cfg(size: u32) -> Config {
    Config::from_json(
        format!(
            r#"{{"controlPlaneCluster":"cp","dataPlaneToken":"t","feedWaitSeconds":20,"snapshotPageSize":{size}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn live(s: &dyn SharedStore, ids: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    let r = TableReader::new(s);
    ids.filter(|i| r.entry(*i).is_some()).collect()
}

#[test]
fn paged_snapshot_replaces_the_table_page_by_page_without_a_window() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    let mut f = Feed::new();
    let r = f.next_request(&c, &s, 0).unwrap();
    assert_eq!(r.header(":path"), Some("/internal/v1/key-table?limit=2"));
    // A first snapshot in one page (no `next`).
    f.on_response(&s, Some(200), Some(&page(1, &[1, 2, 3, 4, 6], None)), 1_000);
    assert_eq!(live(&s, 1..=9), vec![1, 2, 3, 4, 6]);
    let r = f.next_request(&c, &s, 1_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=0&limit=2&paged=1")
    );
    // The log no longer reaches 1: a paged snapshot at version 9 that
    // keeps 2 and 3 and drops 1, 4 and 6. Keys 2 and 3 stay valid at every
    // instant; the old table (1, 4, 6) serves until the flip.
    let check = |st: &MemoryStore| {
        let r = TableReader::new(st);
        assert!(r.entry(2).is_some(), "key 2 vanished mid-snapshot");
        assert!(r.entry(3).is_some(), "key 3 vanished mid-snapshot");
    };
    let spy = Spy {
        inner: &s,
        on_set: &check,
    };
    let ev = f.on_response(&spy, Some(200), Some(&page(9, &[2, 3], Some(3))), 2_000);
    assert_eq!(
        ev,
        FeedEvent::PageApplied {
            written: 2,
            snapshot: true
        }
    );
    let meta = TableReader::new(&s).meta().unwrap();
    assert_eq!(
        (meta.generation, meta.version, meta.reserved),
        (1, 1, Some(2))
    );
    // A page is not a sync: freshness is that of the last complete table.
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1));
    // The next page is asked for at once, with the cursor.
    let r = f.next_request(&c, &s, 2_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?after=3&limit=2")
    );
    let ev = f.on_response(&spy, Some(200), Some(&page(10, &[5, 7], Some(7))), 3_000);
    assert_eq!(
        ev,
        FeedEvent::PageApplied {
            written: 4,
            snapshot: true
        }
    );
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1));
    assert_eq!(live(&s, 1..=9), vec![1, 2, 3, 4, 5, 6, 7]);
    // A failed page is asked for again, not the whole snapshot.
    let r = f.next_request(&c, &s, 3_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?after=7&limit=2")
    );
    assert_eq!(f.on_response(&spy, None, None, 3_100), FeedEvent::Failed);
    let r = f.next_request(&c, &s, 3_400).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?after=7&limit=2")
    );
    let ev = f.on_response(&spy, Some(200), Some(&page(11, &[8], None)), 4_000);
    assert!(
        matches!(ev, FeedEvent::Applied(a) if a.version == 9 && a.key_count == 5),
        "{ev:?}"
    );
    // Flipped to the reserved generation at the FIRST page's version,
    // synced as of the first page's arrival (its data is the oldest).
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(2));
    let meta = TableReader::new(&s).meta().unwrap();
    assert_eq!(
        (meta.generation, meta.version, meta.key_count, meta.reserved),
        (2, 9, 5, None)
    );
    assert_eq!(live(&s, 1..=9), vec![2, 3, 5, 7, 8]);
    // Then polling resumes from there: at once, so the catch-up's
    // answer records a sync as of now, then long polls.
    let r = f.next_request(&c, &s, 4_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=9&wait=0&limit=2&paged=1")
    );
    let ev = f.on_response(&s, Some(200), Some(&body(12, false, &[], &[])), 4_100);
    assert!(
        matches!(ev, FeedEvent::Applied(a) if a.version == 12),
        "{ev:?}"
    );
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(4));
    let r = f.next_request(&c, &s, 4_100).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=12&wait=20&limit=2&paged=1")
    );
}

#[test]
fn aborted_snapshot_leaves_no_live_partial_entries() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    let mut a = Feed::new();
    a.next_request(&c, &s, 0).unwrap();
    a.on_response(&s, Some(200), Some(&page(1, &[1, 2], None)), 0);
    a.next_request(&c, &s, 0).unwrap();
    // A full snapshot starts: key 3 (new) is written under the next
    // generation, then the writer stops (lease lost) mid-snapshot.
    let ev = a.on_response(&s, Some(200), Some(&page(5, &[1, 3], Some(3))), 0);
    assert_eq!(
        ev,
        FeedEvent::PageApplied {
            written: 2,
            snapshot: true
        }
    );
    a.abandon_paging();
    // Key 3 is deleted at the control plane. A new holder's snapshot
    // (one page) no longer lists it.
    let mut b = Feed::new();
    let r = b.next_request(&c, &s, 100).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=20&limit=2&paged=1")
    );
    let ev = b.on_response(&s, Some(200), Some(&page(7, &[1, 2], None)), 100);
    assert!(
        matches!(ev, FeedEvent::Applied(x) if x.version == 7),
        "{ev:?}"
    );
    // It flipped past the aborted snapshot's generation, so key 3's
    // partial entry is dead rather than reused.
    assert_eq!(TableReader::new(&s).meta().unwrap().generation, 3);
    assert_eq!(live(&s, 1..=5), vec![1, 2]);
    // The abandoned writer does not resume.
    let r = a.next_request(&c, &s, 200).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=7&wait=20&limit=2&paged=1")
    );
}

#[test]
fn a_page_after_someone_else_moved_the_table_restarts() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    let mut a = Feed::new();
    a.next_request(&c, &s, 0).unwrap();
    assert_eq!(
        a.on_response(&s, Some(200), Some(&page(3, &[1, 2], Some(2))), 0),
        FeedEvent::PageApplied {
            written: 2,
            snapshot: true
        }
    );
    // Another writer completes its own snapshot meanwhile.
    let mut b = Feed::new();
    b.next_request(&c, &s, 0).unwrap();
    b.on_response(&s, Some(200), Some(&page(4, &[9], None)), 0);
    a.next_request(&c, &s, 0).unwrap();
    let ev = a.on_response(&s, Some(200), Some(&page(4, &[3], None)), 0);
    assert_eq!(ev, FeedEvent::Skipped(ApplyError::Conflict));
    assert!(!a.snapshot_in_progress());
    assert_eq!(live(&s, 1..=9), vec![9]);
    assert_eq!(TableReader::new(&s).meta().unwrap().version, 4);
}

#[test]
fn no_table_until_the_first_snapshot_is_complete() {
    let s = MemoryStore::default();
    let c = paged_cfg(1);
    let mut f = Feed::new();
    f.next_request(&c, &s, 0).unwrap();
    f.on_response(&s, Some(200), Some(&page(2, &[1], Some(1))), 0);
    // Only a reservation exists: requests still get "no table" (503),
    // not "unknown key" (401).
    assert_eq!(TableReader::new(&s).last_sync_unix(), None);
    let r = f.next_request(&c, &s, 0).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?after=1&limit=1")
    );
    f.on_response(&s, Some(200), Some(&page(2, &[2], None)), 0);
    assert_eq!(live(&s, 1..=3), vec![1, 2]);
}

#[test]
fn a_snapshot_that_keeps_failing_mid_paging_leaves_the_table_to_go_stale() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    let mut f = Feed::new();
    f.next_request(&c, &s, 0).unwrap();
    f.on_response(&s, Some(200), Some(&page(1, &[1, 2], None)), 1_000);
    // The log no longer reaches version 1, and the control plane breaks
    // every snapshot after its first page (here: a cursor that does not
    // move forward), so each attempt starts over with a good first page.
    let mut now = 1_000;
    while now < 60_000 {
        let r = f.next_request(&c, &s, now).unwrap();
        let path = r.header(":path").unwrap();
        let answer = if path.contains("after=") {
            page(9, &[5], Some(1))
        } else {
            page(9, &[1, 2, 3], Some(3))
        };
        f.on_response(&s, Some(200), Some(&answer), now);
        now += 500;
    }
    // Freshness means a complete table: the last one was at 1 s, so a
    // request now (60 s later, staleness limit 30 s) fails closed.
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1));
}

/// Review 2: a table is as fresh as its OLDEST data, which in a paged
/// snapshot is the first page. Here the pages span ten minutes (a failing
/// page is retried indefinitely); stamping the flip with the last page's
/// arrival would count key 1's ten-minute-old data as 29 s old, so a key
/// revoked at 2 s would be accepted until about 635 s if the control
/// plane then died.
#[test]
fn a_paged_snapshot_is_as_old_as_its_first_page() {
    let s = MemoryStore::default();
    let c = paged_cfg(1);
    let mut f = Feed::new();
    f.next_request(&c, &s, 1_000).unwrap();
    let ev = f.on_response(&s, Some(200), Some(&page(2, &[1], Some(1))), 1_000);
    assert_eq!(
        ev,
        FeedEvent::PageApplied {
            written: 1,
            snapshot: true
        }
    );
    // The second page fails for ten minutes.
    let mut now = 5_000;
    while now <= 600_000 {
        if f.next_request(&c, &s, now).is_some() {
            assert_eq!(f.on_response(&s, None, None, now), FeedEvent::Failed);
        }
        now += 5_000;
    }
    let mut now = 605_000;
    let r = loop {
        if let Some(r) = f.next_request(&c, &s, now) {
            break r;
        }
        now += 100;
    };
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?after=1&limit=1")
    );
    let ev = f.on_response(&s, Some(200), Some(&page(700, &[2], None)), now);
    assert!(
        matches!(ev, FeedEvent::Applied(a) if a.version == 2 && a.key_count == 2),
        "{ev:?}"
    );
    let synced = TableReader::new(&s).last_sync_unix().unwrap();
    assert_eq!(
        synced, 1,
        "the flipped table counts as synced at {synced} s; its first page arrived at 1 s"
    );
    // So at 634 s it is stale (limit 30 s) and fails closed.
    let age = 634 - synced;
    assert!(
        age > i64::try_from(c.max_staleness_seconds).unwrap(),
        "age {age} s"
    );
    // Unless the control plane is still there: the catch-up poll after the
    // flip goes out at once, and its answer is a sync as of its arrival.
    let r = f.next_request(&c, &s, now).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=2&wait=0&limit=1&paged=1")
    );
    f.on_response(
        &s,
        Some(200),
        Some(&body(701, false, &[], &[1])),
        now + 1_000,
    );
    assert_eq!(
        TableReader::new(&s).last_sync_unix(),
        Some(i64::try_from(now / 1_000 + 1).unwrap())
    );
}

/// A page of a delta: `ids` upserted, `removals` removed, `next` set.
fn delta_page(version: u64, ids: &[i64], removals: &[i64], next: Option<i64>) -> Vec<u8> {
    let mut t: KeyTable = serde_json::from_slice(&body(version, false, ids, removals)).unwrap();
    t.next = next;
    serde_json::to_vec(&t).unwrap()
}

/// A table of keys 1 to 4 at version 1, caught up; returns the feed.
fn table_at_1(s: &MemoryStore, c: &Config) -> Feed {
    let mut f = Feed::new();
    f.next_request(c, s, 0).unwrap();
    f.on_response(s, Some(200), Some(&page(1, &[1, 2, 3, 4], None)), 1_000);
    f.next_request(c, s, 1_000).unwrap();
    f.on_response(s, Some(200), Some(&body(1, false, &[], &[])), 1_000);
    f
}

#[test]
fn paged_delta_is_written_page_by_page_and_lands_at_its_first_version() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    let mut f = table_at_1(&s, &c);
    let r = f.next_request(&c, &s, 1_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=20&limit=2&paged=1")
    );
    // A change naming four keys, two per page, in id order: 1 and 3 are
    // gone, 5 and 6 are new. Keys 2 and 4 stay valid at every instant.
    let check = |st: &MemoryStore| {
        let r = TableReader::new(st);
        assert!(r.entry(2).is_some(), "key 2 vanished mid-delta");
        assert!(r.entry(4).is_some(), "key 4 vanished mid-delta");
    };
    let spy = Spy {
        inner: &s,
        on_set: &check,
    };
    let ev = f.on_response(
        &spy,
        Some(200),
        Some(&delta_page(7, &[], &[1, 3], Some(3))),
        2_000,
    );
    assert_eq!(
        ev,
        FeedEvent::PageApplied {
            written: 2,
            snapshot: false
        }
    );
    assert!(f.delta_in_progress() && !f.snapshot_in_progress());
    // Written at once, but the table stays at `since` until the end: a
    // page is not a sync.
    assert_eq!(live(&s, 1..=9), vec![2, 4]);
    let meta = TableReader::new(&s).meta().unwrap();
    // The count stays true page by page, in case the delta stops here.
    assert_eq!((meta.version, meta.key_count), (1, 2));
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(1));
    // The next page, at once, with the cursor; a failed one is asked again.
    let r = f.next_request(&c, &s, 2_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&after=3&limit=2")
    );
    assert_eq!(f.on_response(&spy, None, None, 2_100), FeedEvent::Failed);
    let r = f.next_request(&c, &s, 2_400).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&after=3&limit=2")
    );
    // The last page was read later, at version 8.
    let ev = f.on_response(
        &spy,
        Some(200),
        Some(&delta_page(8, &[5, 6], &[], None)),
        3_000,
    );
    assert!(
        matches!(ev, FeedEvent::Applied(a) if a.version == 7 && a.key_count == 4 && !a.snapshot && a.pages == 2),
        "{ev:?}"
    );
    assert_eq!(live(&s, 1..=9), vec![2, 4, 5, 6]);
    // At the FIRST page's version, synced as of its arrival; then a poll
    // at once re-ships whatever changed while paging.
    let meta = TableReader::new(&s).meta().unwrap();
    assert_eq!((meta.version, meta.key_count), (7, 4));
    assert_eq!(TableReader::new(&s).last_sync_unix(), Some(2));
    let r = f.next_request(&c, &s, 3_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=7&wait=0&limit=2&paged=1")
    );
}

#[test]
fn a_paged_delta_that_cannot_go_on_starts_again_from_the_table() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    // A continuation answered with a full snapshot (the log no longer
    // reaches `since`) starts that snapshot.
    let mut f = table_at_1(&s, &c);
    f.next_request(&c, &s, 1_000).unwrap();
    f.on_response(
        &s,
        Some(200),
        Some(&delta_page(7, &[5], &[1], Some(5))),
        2_000,
    );
    f.next_request(&c, &s, 2_000).unwrap();
    let ev = f.on_response(&s, Some(200), Some(&page(20, &[2, 9], Some(9))), 2_000);
    assert_eq!(
        ev,
        FeedEvent::PageApplied {
            written: 2,
            snapshot: true
        }
    );
    assert!(f.snapshot_in_progress());

    // A page whose cursor does not move forward is dropped unwritten,
    // and the feed asks again from the table's version.
    let s = MemoryStore::default();
    let mut f = table_at_1(&s, &c);
    f.next_request(&c, &s, 1_000).unwrap();
    f.on_response(
        &s,
        Some(200),
        Some(&delta_page(7, &[5], &[1], Some(5))),
        2_000,
    );
    f.next_request(&c, &s, 2_000).unwrap();
    let ev = f.on_response(
        &s,
        Some(200),
        Some(&delta_page(7, &[6], &[], Some(5))),
        2_000,
    );
    assert_eq!(ev, FeedEvent::Skipped(ApplyError::NotBasedOnTable));
    assert!(!f.delta_in_progress());
    let r = f.next_request(&c, &s, 2_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=20&limit=2&paged=1")
    );
    // What the pages wrote are current states, and stay.
    assert_eq!(live(&s, 1..=9), vec![2, 3, 4, 5]);

    // Another writer moved the table between pages: the next page is
    // not written under the replaced table.
    let s = MemoryStore::default();
    let mut f = table_at_1(&s, &c);
    f.next_request(&c, &s, 1_000).unwrap();
    f.on_response(
        &s,
        Some(200),
        Some(&delta_page(7, &[5], &[1], Some(5))),
        2_000,
    );
    let mut other = Feed::new();
    other.next_request(&c, &s, 2_000).unwrap();
    other.on_response(&s, Some(200), Some(&body(9, false, &[], &[])), 2_000);
    f.next_request(&c, &s, 2_000).unwrap();
    let ev = f.on_response(&s, Some(200), Some(&delta_page(9, &[6], &[], None)), 2_000);
    assert_eq!(ev, FeedEvent::Skipped(ApplyError::NotBasedOnTable));
    assert_eq!(live(&s, 1..=9), vec![2, 3, 4, 5]);
    assert_eq!(TableReader::new(&s).meta().unwrap().version, 9);
}

#[test]
fn an_older_control_plane_gets_whole_deltas() {
    let s = MemoryStore::default();
    let c = paged_cfg(2);
    let mut f = table_at_1(&s, &c);
    // It refuses the unknown `paged` parameter: deltas are asked for
    // whole from then on; snapshots keep their pages.
    f.next_request(&c, &s, 1_000).unwrap();
    assert_eq!(
        f.on_response(&s, Some(400), Some(&b"{}"[..]), 1_000),
        FeedEvent::Failed
    );
    let r = f.next_request(&c, &s, 2_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=0&limit=2")
    );
    // Likewise when a continuation reaches an older replica mid-delta.
    let s = MemoryStore::default();
    let mut f = table_at_1(&s, &c);
    f.next_request(&c, &s, 1_000).unwrap();
    f.on_response(
        &s,
        Some(200),
        Some(&delta_page(7, &[5], &[1], Some(5))),
        2_000,
    );
    f.next_request(&c, &s, 2_000).unwrap();
    f.on_response(&s, Some(400), Some(&b"{}"[..]), 2_000);
    assert!(!f.delta_in_progress());
    let r = f.next_request(&c, &s, 3_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=1&wait=0&limit=2")
    );
}

#[test]
fn an_older_control_plane_gets_whole_snapshots() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut f = Feed::new();
    f.next_request(&c, &s, 0).unwrap();
    // It refuses the unknown `limit` parameter.
    assert_eq!(
        f.on_response(&s, Some(400), Some(&b"{}"[..]), 0),
        FeedEvent::Failed
    );
    let r = f.next_request(&c, &s, 1_000).unwrap();
    assert_eq!(r.header(":path"), Some("/internal/v1/key-table"));
    f.on_response(&s, Some(200), Some(&body(3, true, &[1], &[])), 1_000);
    let r = f.next_request(&c, &s, 1_000).unwrap();
    assert_eq!(
        r.header(":path"),
        Some("/internal/v1/key-table?since=3&wait=0")
    );
}
