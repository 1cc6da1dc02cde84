//! One VM's part in keeping the shared table: on every tick, hold (or try to
//! take) the fetch lease and, while holding it, poll the feed. The adapter
//! calls [`Syncer::tick`] from `on_tick` and dispatches what it returns.
//! A simulated Envoy of several VMs drives it in tests (`simulation`).

use crate::config::Config;
use crate::feed::{Feed, FeedEvent, HttpRequest};
use crate::lease;
use crate::store::{SharedStore, StoreError};
use std::cell::Cell;

/// A holder that stops ticking loses the lease after this long (10 ticks).
pub const LEASE_TTL_MS: u64 = 2_000;
/// How often each VM's root context ticks.
pub const TICK_MS: u64 = 200;

/// What a tick asks of the adapter.
#[derive(Debug, Default)]
pub struct Tick {
    /// Send this poll to the control-plane cluster.
    pub poll: Option<HttpRequest>,
    /// `Some(true)`: this VM just took the lease; `Some(false)`: just lost it.
    pub lease_changed: Option<bool>,
}

/// While applying an answer, the clock and the lease are checked every this
/// many table writes (a few milliseconds of work)...
pub const CLOCK_EVERY_WRITES: u32 = 64;
/// ...and the lease renewed once this much time has passed since it was.
pub const RENEW_AFTER_MS: u64 = LEASE_TTL_MS / 4;

/// The store as the lease holder's apply sees it: it renews the lease as time
/// passes, so applying a large snapshot (seconds for hundreds of thousands of
/// keys) never lets the lease lapse and a second VM start writing the table
/// at the same time. If a renewal fails, the remaining writes are refused and
/// the apply stops.
struct LeaseKeepingStore<'a> {
    inner: &'a dyn SharedStore,
    owner_id: u64,
    clock: &'a dyn Fn() -> u64,
    writes: Cell<u32>,
    renewed_at_ms: Cell<u64>,
    lost: Cell<bool>,
}

impl SharedStore for LeaseKeepingStore<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let writes = self.writes.get().wrapping_add(1);
        self.writes.set(writes);
        if writes.is_multiple_of(CLOCK_EVERY_WRITES) && !self.lost.get() {
            let now = (self.clock)();
            let held = if now.saturating_sub(self.renewed_at_ms.get()) >= RENEW_AFTER_MS {
                let renewed = lease::hold(self.inner, self.owner_id, now, LEASE_TTL_MS);
                if renewed {
                    self.renewed_at_ms.set(now);
                }
                renewed
            } else {
                lease::is_held_by(self.inner, self.owner_id, now)
            };
            self.lost.set(!held);
        }
        if self.lost.get() {
            return Err(StoreError::Host);
        }
        self.inner.set(key, value, cas)
    }
}

#[derive(Debug)]
pub struct Syncer {
    owner_id: u64,
    holds: bool,
    feed: Feed,
}

impl Syncer {
    pub fn new(owner_id: u64) -> Self {
        Self {
            owner_id,
            holds: false,
            feed: Feed::new(),
        }
    }

    pub fn owner_id(&self) -> u64 {
        self.owner_id
    }

    pub fn holds_lease(&self) -> bool {
        self.holds
    }

    pub fn snapshot_in_progress(&self) -> bool {
        self.feed.snapshot_in_progress()
    }

    pub fn tick(&mut self, cfg: &Config, store: &dyn SharedStore, now_ms: u64) -> Tick {
        let holds = lease::hold(store, self.owner_id, now_ms, LEASE_TTL_MS);
        let lease_changed = (holds != self.holds).then_some(holds);
        if !holds {
            // Whoever holds the lease now writes the table; a snapshot or a
            // paged delta this VM had in progress is not continued (the new
            // holder starts from the table's version).
            self.feed.abandon_paging();
        }
        self.holds = holds;
        let poll = if holds {
            self.feed.next_request(cfg, store, now_ms)
        } else {
            None
        };
        Tick {
            poll,
            lease_changed,
        }
    }

    /// The next poll, asked for right after an applied answer instead of on
    /// the next tick (pages of a snapshot follow each other at once).
    pub fn follow_up(
        &mut self,
        cfg: &Config,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Option<HttpRequest> {
        if !self.holds || !lease::is_held_by(store, self.owner_id, now_ms) {
            return None;
        }
        self.feed.next_request(cfg, store, now_ms)
    }

    pub fn on_dispatch_failed(&mut self, now_ms: u64) {
        self.feed.on_dispatch_failed(now_ms);
    }

    /// Handles the answer to this VM's poll. An answer that arrives after
    /// the lease moved on is dropped; while applying one, the lease is
    /// renewed by the host's time (`clock`, read afresh) so that a long apply
    /// does not let it lapse.
    pub fn on_response(
        &mut self,
        store: &dyn SharedStore,
        status: Option<u32>,
        body: Option<&[u8]>,
        clock: &dyn Fn() -> u64,
    ) -> FeedEvent {
        let now_ms = clock();
        if !lease::is_held_by(store, self.owner_id, now_ms) {
            self.feed.drop_in_flight(now_ms);
            return FeedEvent::LEASE_LOST;
        }
        let keeping = LeaseKeepingStore {
            inner: store,
            owner_id: self.owner_id,
            clock,
            writes: Cell::new(0),
            // Renew at the first clock check: the last tick's renewal may be
            // most of a lease lifetime ago.
            renewed_at_ms: Cell::new(0),
            lost: Cell::new(false),
        };
        let event = self.feed.on_response(&keeping, status, body, now_ms);
        if keeping.lost.get() {
            self.feed.abandon_paging();
            return FeedEvent::LEASE_LOST;
        }
        event
    }

    /// Gives the lease up when the VM goes away.
    pub fn release(&self, store: &dyn SharedStore) {
        lease::release(store, self.owner_id);
    }
}
#[cfg(test)]
mod simulation;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::decision::KeyLookup;
    use crate::store::memory::MemoryStore;
    use crate::table::TableReader;
    use crate::table::testing::entry as scoped_entry;
    use keygate_protocol::{KeyEntry, KeyTable};

    fn cfg() -> Config {
        Config::from_json(
            br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","feedWaitSeconds":5,"maxStalenessSeconds":8}"#,
        )
        .unwrap()
    }

    fn entry(id: i64) -> KeyEntry {
        scoped_entry(id, "alpha")
    }

    #[test]
    fn answer_arriving_after_the_lease_moved_on_is_dropped() {
        let c = cfg();
        let s = MemoryStore::default();
        let mut a = Syncer::new(1);
        let mut b = Syncer::new(2);
        let t0 = 1_000_000;
        assert!(a.tick(&c, &s, t0).poll.is_none()); // claim
        assert!(a.tick(&c, &s, t0 + 200).poll.is_some()); // confirmed: snapshot poll
        // A stalls with its poll in flight; the lease expires and B takes over.
        let later = t0 + 200 + LEASE_TTL_MS;
        assert!(b.tick(&c, &s, later).poll.is_some());
        let fresh = KeyTable {
            version: 10,
            full: true,
            upserts: vec![entry(1)],
            removals: vec![],
            next: None,
            registered_servers: None,
        };
        let body = serde_json::to_vec(&fresh).unwrap();
        assert!(matches!(
            b.on_response(&s, Some(200), Some(&body), &|| later + 10),
            FeedEvent::Applied(_)
        ));
        // A's older answer (key 2 still present) finally arrives: dropped,
        // so the table neither goes back in time nor revives key 2.
        let stale = KeyTable {
            version: 3,
            full: true,
            upserts: vec![entry(1), entry(2)],
            removals: vec![],
            next: None,
            registered_servers: None,
        };
        let body = serde_json::to_vec(&stale).unwrap();
        let ev = a.on_response(&s, Some(200), Some(&body), &|| later + 20);
        assert_eq!(ev, FeedEvent::LEASE_LOST);
        let r = TableReader::new(&s);
        assert_eq!(r.meta().unwrap().version, 10);
        assert!(r.entry(2).is_none());
        assert!(r.entry(1).is_some());
    }

    /// A store whose writes take 5 ms each, with a second VM trying to take
    /// the lease after every table write.
    struct SlowStore<'a> {
        inner: &'a MemoryStore,
        now: &'a Cell<u64>,
        other_took_lease: &'a Cell<bool>,
    }

    impl SharedStore for SlowStore<'_> {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let r = self.inner.set(key, value, cas);
            if key != lease::LEASE_KEY {
                self.now.set(self.now.get() + 5);
                if lease::hold(self.inner, 2, self.now.get(), LEASE_TTL_MS) {
                    self.other_took_lease.set(true);
                }
            }
            r
        }
    }

    #[test]
    fn a_long_apply_keeps_the_lease() {
        let c = cfg();
        let s = MemoryStore::default();
        let now = Cell::new(1_000_000u64);
        let other = Cell::new(false);
        let mut a = Syncer::new(1);
        a.tick(&c, &s, now.get());
        now.set(now.get() + 200);
        assert!(a.tick(&c, &s, now.get()).poll.is_some());
        // 2000 keys at 5 ms a write: 10 s, five lease lifetimes.
        let table = KeyTable {
            version: 10,
            full: true,
            upserts: (1..=2000).map(entry).collect(),
            removals: vec![],
            next: None,
            registered_servers: None,
        };
        let body = serde_json::to_vec(&table).unwrap();
        let slow = SlowStore {
            inner: &s,
            now: &now,
            other_took_lease: &other,
        };
        let ev = a.on_response(&slow, Some(200), Some(&body), &|| now.get());
        assert!(!other.get(), "another VM took the lease mid-apply");
        assert!(
            matches!(ev, FeedEvent::Applied(x) if x.key_count == 2000),
            "{ev:?}"
        );
        assert!(lease::is_held_by(&s, 1, now.get()));
    }

    /// A store where another VM takes the lease (as if this one had been
    /// stalled) after a given number of table writes.
    struct Hijack<'a> {
        inner: &'a MemoryStore,
        writes: Cell<u32>,
        at: u32,
    }

    impl SharedStore for Hijack<'_> {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if key != lease::LEASE_KEY {
                self.writes.set(self.writes.get() + 1);
                if self.writes.get() == self.at {
                    let theirs = br#"{"o":2,"x":99999999999999}"#;
                    self.inner.set(lease::LEASE_KEY, theirs, None)?;
                }
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn an_apply_stops_once_the_lease_is_gone() {
        let c = cfg();
        let s = MemoryStore::default();
        let mut a = Syncer::new(1);
        a.tick(&c, &s, 1_000_000);
        assert!(a.tick(&c, &s, 1_000_200).poll.is_some());
        let table = KeyTable {
            version: 10,
            full: true,
            upserts: (1..=1000).map(entry).collect(),
            removals: vec![],
            next: None,
            registered_servers: None,
        };
        let body = serde_json::to_vec(&table).unwrap();
        let store = Hijack {
            inner: &s,
            writes: Cell::new(0),
            at: 100,
        };
        let ev = a.on_response(&store, Some(200), Some(&body), &|| 1_000_300);
        assert_eq!(ev, FeedEvent::LEASE_LOST);
        // Stopped at the next renewal, long before the end; meta never flipped.
        assert!(store.writes.get() < 200, "{}", store.writes.get());
        assert!(TableReader::new(&s).meta().is_none());
    }
}
