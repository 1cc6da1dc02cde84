//! One VM's part in keeping the shared table: on every tick, hold (or try to
//! take) the fetch lease and, while holding it, poll the feed. The adapter
//! calls [`Syncer::tick`] from `on_tick` and dispatches what it returns.

use crate::config::Config;
use crate::feed::{Feed, FeedEvent, HttpRequest};
use crate::lease;
use crate::table::{ApplyError, SharedStore, StoreError};
use std::cell::Cell;

/// A holder that stops ticking loses the lease after this long (10 ticks).
pub const LEASE_TTL_MS: u64 = 2_000;
/// How often each VM's root context ticks.
pub const TICK_MS: u64 = 200;

/// What a tick asks of the adapter.
#[derive(Debug, Default, PartialEq, Eq)]
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
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
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
            // Whoever holds the lease now writes the table; a snapshot this
            // VM had in progress is not continued (the new holder starts one).
            self.feed.abandon_snapshot();
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

    pub fn on_response(
        &mut self,
        store: &dyn SharedStore,
        status: Option<u32>,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> FeedEvent {
        self.on_response_timed(store, status, body, &|| now_ms)
    }

    /// Handles the answer to this VM's poll. An answer that arrives after
    /// the lease moved on is dropped; while applying one, the lease is
    /// renewed by the host's time (`clock`, read afresh) so that a long apply
    /// does not let it lapse.
    pub fn on_response_timed(
        &mut self,
        store: &dyn SharedStore,
        status: Option<u32>,
        body: Option<&[u8]>,
        clock: &dyn Fn() -> u64,
    ) -> FeedEvent {
        let now_ms = clock();
        if !lease::is_held_by(store, self.owner_id, now_ms) {
            self.feed.drop_in_flight(now_ms);
            return FeedEvent::Skipped(ApplyError::LeaseLost);
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
            self.feed.abandon_snapshot();
            return FeedEvent::Skipped(ApplyError::LeaseLost);
        }
        event
    }

    /// Gives the lease up when the VM goes away.
    pub fn release(&self, store: &dyn SharedStore) {
        lease::release(store, self.owner_id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    //! A simulated Envoy: several VMs ticking over one shared store, a fake
    //! control plane with long polls, and requests decided in between.
    use super::*;
    use crate::decision::{Reason, Request, decide};
    use crate::table::TableReader;
    use crate::table::memory::MemoryStore;
    use keygate_protocol::{ApiKeyToken, KeyEntry, KeyTable, Secret, ServerScope};
    use std::collections::BTreeMap;

    fn cfg() -> Config {
        Config::from_json(
            br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","feedWaitSeconds":5,"maxStalenessSeconds":8}"#,
        )
        .unwrap()
    }

    fn entry(id: i64) -> KeyEntry {
        KeyEntry {
            id,
            user_id: 1,
            secret_hash: Secret::from_bytes([id as u8; 32]).hash(),
            expires_at: None,
            servers: ServerScope::Named(vec!["alpha".into()]),
        }
    }

    fn key(id: i64) -> String {
        ApiKeyToken {
            user_id: 1,
            key_id: id,
            secret: Secret::from_bytes([id as u8; 32]),
        }
        .encode()
    }

    /// A query parameter of a feed path.
    fn param(path: &str, name: &str) -> Option<u64> {
        let query = path.split_once('?')?.1;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.parse().unwrap())
    }

    /// The control plane's side of contract 2, with paged snapshots.
    struct FakeControlPlane {
        version: u64,
        keys: BTreeMap<i64, KeyEntry>,
        log: Vec<(u64, i64, bool)>, // (version, id, removed)
        /// `since` below this gets a full snapshot (the log was pruned).
        floor: u64,
        up: bool,
    }

    impl FakeControlPlane {
        fn page(&self, after: Option<u64>, limit: Option<u64>) -> KeyTable {
            let from = after.map_or(i64::MIN, |a| a as i64 + 1);
            let limit = limit.map_or(usize::MAX, |l| l as usize);
            let rest: Vec<&KeyEntry> = self.keys.range(from..).map(|(_, e)| e).collect();
            let upserts: Vec<KeyEntry> = rest.iter().take(limit).map(|e| (*e).clone()).collect();
            let next = (rest.len() > limit).then(|| upserts.last().unwrap().id);
            KeyTable {
                version: self.version,
                full: true,
                upserts,
                removals: vec![],
                next,
            }
        }

        fn answer(&self, path: &str) -> Option<KeyTable> {
            let limit = param(path, "limit");
            if let Some(after) = param(path, "after") {
                return Some(self.page(Some(after), limit));
            }
            match param(path, "since") {
                None => Some(self.page(None, limit)),
                Some(v) if v > self.version || v < self.floor => Some(self.page(None, limit)),
                Some(v) => {
                    let changes: Vec<_> = self.log.iter().filter(|(ver, ..)| *ver > v).collect();
                    if changes.is_empty() && param(path, "wait") != Some(0) {
                        return None; // long poll: hold the request
                    }
                    Some(KeyTable {
                        version: self.version,
                        full: false,
                        upserts: changes
                            .iter()
                            .filter_map(|(_, id, _)| self.keys.get(id).cloned())
                            .collect(),
                        removals: changes
                            .iter()
                            .filter(|(_, id, _)| !self.keys.contains_key(id))
                            .map(|(_, id, _)| *id)
                            .collect(),
                        next: None,
                    })
                }
            }
        }

        fn remove(&mut self, id: i64) {
            self.version += 1;
            self.keys.remove(&id);
            self.log.push((self.version, id, true));
        }

        fn upsert(&mut self, e: KeyEntry) {
            self.version += 1;
            self.log.push((self.version, e.id, false));
            self.keys.insert(e.id, e);
        }
    }

    struct Vm {
        syncer: Syncer,
        /// Poll in flight: (path, sent at, timeout).
        pending: Option<(String, u64, u64)>,
        alive: bool,
    }

    struct World {
        store: MemoryStore,
        cp: FakeControlPlane,
        vms: Vec<Vm>,
        now: u64,
        cfg: Config,
        /// Feed answers served so far.
        answered: usize,
    }

    impl World {
        fn new(n: usize) -> Self {
            let keys: BTreeMap<i64, KeyEntry> = [1, 2].iter().map(|i| (*i, entry(*i))).collect();
            Self {
                store: MemoryStore::default(),
                cp: FakeControlPlane {
                    version: 10,
                    keys,
                    log: vec![],
                    floor: 0,
                    up: true,
                },
                vms: (0..n)
                    .map(|i| Vm {
                        syncer: Syncer::new(1000 + i as u64),
                        pending: None,
                        alive: true,
                    })
                    .collect(),
                now: 1_000_000,
                cfg: cfg(),
                answered: 0,
            }
        }

        /// Advances 50 ms: VMs tick every 200 ms (staggered); callouts are
        /// answered when the control plane has something or they time out.
        fn step(&mut self) {
            self.now += 50;
            for (i, vm) in self.vms.iter_mut().enumerate() {
                if !vm.alive {
                    vm.pending = None;
                    continue;
                }
                if let Some((path, sent, timeout)) = vm.pending.clone() {
                    let answer = if self.cp.up {
                        self.cp.answer(&path)
                    } else {
                        None
                    };
                    let timed_out = self.now >= sent + timeout;
                    if let Some(table) = answer {
                        let body = serde_json::to_vec(&table).unwrap();
                        self.answered += 1;
                        let ev =
                            vm.syncer
                                .on_response(&self.store, Some(200), Some(&body), self.now);
                        vm.pending = None;
                        // As the adapter does: the next poll goes out at once.
                        if matches!(ev, FeedEvent::Applied(_) | FeedEvent::PageApplied { .. })
                            && let Some(req) = vm.syncer.follow_up(&self.cfg, &self.store, self.now)
                        {
                            let path = req.header(":path").unwrap().to_owned();
                            vm.pending = Some((path, self.now, req.timeout_ms));
                        }
                    } else if !self.cp.up || timed_out {
                        // Connection refused, or the callout timed out.
                        vm.syncer.on_response(&self.store, None, None, self.now);
                        vm.pending = None;
                    } else if path.contains("wait=") {
                        // The long poll ends with an empty delta after `wait`.
                        let wait = param(&path, "wait").unwrap();
                        if self.now >= sent + wait * 1000 {
                            let table = KeyTable {
                                version: self.cp.version,
                                full: false,
                                upserts: vec![],
                                removals: vec![],
                                next: None,
                            };
                            let body = serde_json::to_vec(&table).unwrap();
                            vm.syncer
                                .on_response(&self.store, Some(200), Some(&body), self.now);
                            vm.pending = None;
                        }
                    }
                }
                if (self.now / 50 + i as u64).is_multiple_of(4) {
                    let tick = vm.syncer.tick(&self.cfg, &self.store, self.now);
                    if let Some(req) = tick.poll {
                        let path = req.header(":path").unwrap().to_owned();
                        vm.pending = Some((path, self.now, req.timeout_ms));
                    }
                }
            }
        }

        fn run_ms(&mut self, ms: u64) {
            for _ in 0..ms / 50 {
                self.step();
            }
        }

        fn holders(&self) -> Vec<usize> {
            (0..self.vms.len())
                .filter(|i| self.vms[*i].alive && self.vms[*i].syncer.holds_lease())
                .collect()
        }

        fn decide(&self, key_id: i64) -> Reason {
            let headers = vec![(
                "authorization".to_owned(),
                format!("Bearer {}", key(key_id)).into_bytes(),
            )];
            let req = Request {
                method: "POST",
                path: "/mcp-connect/alpha/mcp",
                headers: &headers,
            };
            let now = i64::try_from(self.now / 1000).unwrap();
            decide(&req, &self.cfg, now, &TableReader::new(&self.store)).reason()
        }
    }

    #[test]
    fn one_holder_serves_the_process_and_a_dead_one_is_replaced() {
        let mut w = World::new(3);
        assert_eq!(w.decide(1), Reason::NoTable);
        w.run_ms(1_000);
        assert_eq!(w.holders().len(), 1);
        assert_eq!(w.decide(1), Reason::Allowed);
        // Only the holder ever has a poll in flight.
        w.run_ms(3_000);
        let pollers: Vec<usize> = (0..3).filter(|i| w.vms[*i].pending.is_some()).collect();
        assert!(
            pollers.iter().all(|p| w.holders().contains(p)),
            "{pollers:?}"
        );

        // A change is seen at once through the long poll.
        w.cp.remove(2);
        w.run_ms(300);
        assert_eq!(w.decide(2), Reason::UnknownKey);

        // The holder dies; a change lands while nobody polls.
        let dead = w.holders()[0];
        w.vms[dead].alive = false;
        w.cp.remove(1);
        let mut waited = 0;
        while w.decide(1) != Reason::UnknownKey {
            w.run_ms(50);
            waited += 50;
            assert!(waited <= 3_000, "no takeover after {waited} ms");
        }
        let holders = w.holders();
        assert_eq!(holders.len(), 1);
        assert_ne!(holders[0], dead);
        // The new holder went on from the shared version, not from scratch.
        assert_eq!(TableReader::new(&w.store).meta().unwrap().g, 1);
        assert_eq!(TableReader::new(&w.store).meta().unwrap().v, 12);
    }

    #[test]
    fn outage_fails_closed_after_max_staleness_and_recovers() {
        let mut w = World::new(2);
        w.run_ms(1_000);
        assert_eq!(w.decide(1), Reason::Allowed);
        w.cp.up = false;
        let start = w.now;
        while w.decide(1) == Reason::Allowed {
            w.run_ms(50);
            assert!(w.now - start <= 10_000, "still serving after 10 s");
        }
        assert_eq!(w.decide(1), Reason::StaleTable);
        // Served at least maxStaleness − feedWait = 3 s into the outage.
        assert!(w.now - start >= 3_000, "{}", w.now - start);
        w.run_ms(20_000);
        assert_eq!(w.decide(1), Reason::StaleTable);
        w.cp.up = true;
        let back = w.now;
        while w.decide(1) != Reason::Allowed {
            w.run_ms(50);
            assert!(w.now - back <= 5_500, "no recovery");
        }
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
        };
        let body = serde_json::to_vec(&fresh).unwrap();
        assert!(matches!(
            b.on_response(&s, Some(200), Some(&body), later + 10),
            crate::feed::FeedEvent::Applied(_)
        ));
        // A's older answer (key 2 still present) finally arrives: dropped,
        // so the table neither goes back in time nor revives key 2.
        let stale = KeyTable {
            version: 3,
            full: true,
            upserts: vec![entry(1), entry(2)],
            removals: vec![],
            next: None,
        };
        let body = serde_json::to_vec(&stale).unwrap();
        let ev = a.on_response(&s, Some(200), Some(&body), later + 20);
        assert_eq!(
            ev,
            crate::feed::FeedEvent::Skipped(crate::table::ApplyError::LeaseLost)
        );
        let r = TableReader::new(&s);
        assert_eq!(r.meta().unwrap().v, 10);
        assert!(crate::decision::KeyLookup::entry(&r, 2).is_none());
        assert!(crate::decision::KeyLookup::entry(&r, 1).is_some());
    }

    /// A store whose writes take 5 ms each, with a second VM trying to take
    /// the lease after every table write.
    struct SlowStore<'a> {
        inner: &'a MemoryStore,
        now: &'a std::cell::Cell<u64>,
        other_took_lease: &'a std::cell::Cell<bool>,
    }

    impl SharedStore for SlowStore<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(key)
        }
        fn set(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), crate::table::StoreError> {
            let r = self.inner.set(key, value, cas);
            if key != crate::lease::LEASE_KEY {
                self.now.set(self.now.get() + 5);
                if crate::lease::hold(self.inner, 2, self.now.get(), LEASE_TTL_MS) {
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
        let now = std::cell::Cell::new(1_000_000u64);
        let other = std::cell::Cell::new(false);
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
        };
        let body = serde_json::to_vec(&table).unwrap();
        let slow = SlowStore {
            inner: &s,
            now: &now,
            other_took_lease: &other,
        };
        let ev = a.on_response_timed(&slow, Some(200), Some(&body), &|| now.get());
        assert!(!other.get(), "another VM took the lease mid-apply");
        assert!(
            matches!(ev, crate::feed::FeedEvent::Applied(x) if x.key_count == 2000),
            "{ev:?}"
        );
        assert!(crate::lease::is_held_by(&s, 1, now.get()));
    }

    /// A store where another VM takes the lease (as if this one had been
    /// stalled) after a given number of table writes.
    struct Hijack<'a> {
        inner: &'a MemoryStore,
        writes: std::cell::Cell<u32>,
        at: u32,
    }

    impl SharedStore for Hijack<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(key)
        }
        fn set(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), crate::table::StoreError> {
            if key != crate::lease::LEASE_KEY {
                self.writes.set(self.writes.get() + 1);
                if self.writes.get() == self.at {
                    let theirs = br#"{"o":2,"x":99999999999999}"#;
                    self.inner.set(crate::lease::LEASE_KEY, theirs, None)?;
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
        };
        let body = serde_json::to_vec(&table).unwrap();
        let store = Hijack {
            inner: &s,
            writes: std::cell::Cell::new(0),
            at: 100,
        };
        let ev = a.on_response_timed(&store, Some(200), Some(&body), &|| 1_000_300);
        assert_eq!(
            ev,
            crate::feed::FeedEvent::Skipped(crate::table::ApplyError::LeaseLost)
        );
        // Stopped at the next renewal, long before the end; meta never flipped.
        assert!(store.writes.get() < 200, "{}", store.writes.get());
        assert!(TableReader::new(&s).meta().is_none());
    }

    #[test]
    fn release_hands_over_without_waiting_for_expiry() {
        let mut w = World::new(2);
        w.run_ms(1_000);
        let holder = w.holders()[0];
        w.vms[holder].syncer.release(&w.store);
        w.vms[holder].alive = false;
        w.run_ms(450);
        assert_eq!(w.holders(), vec![1 - holder]);
    }

    #[test]
    fn changes_during_a_paged_snapshot_converge_after_the_delta() {
        let mut w = World::new(2);
        w.cfg = Config::from_json(
            br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","feedWaitSeconds":5,"maxStalenessSeconds":8,"snapshotPageSize":3}"#,
        )
        .unwrap();
        for id in 3..=20 {
            w.cp.keys.insert(id, entry(id));
        }
        // The first snapshot comes in 7 pages of 3.
        w.run_ms(2_000);
        assert!((1..=20).all(|id| w.decide(id) == Reason::Allowed));
        let synced = w.answered;

        // The change log no longer reaches the edge: the answer to the next
        // change is a paged snapshot.
        w.cp.floor = w.cp.version + 1;
        w.cp.remove(20);
        let mut steps = 0;
        while !w.vms.iter().any(|vm| vm.syncer.snapshot_in_progress()) {
            w.step();
            steps += 1;
            assert!(steps < 100, "no paged snapshot started");
        }
        // Meanwhile: a key already shipped changes scope, one shipped and
        // one not yet shipped are deleted, one is created.
        let mut moved = entry(1);
        moved.servers = ServerScope::Named(vec!["beta".into()]);
        w.cp.upsert(moved);
        w.cp.remove(2);
        w.cp.remove(15);
        w.cp.upsert(entry(30));
        w.cp.floor = 0;
        let started = w.now;
        while w.vms.iter().any(|vm| vm.syncer.snapshot_in_progress()) {
            w.step();
            // Keys valid throughout never fail.
            for id in 5..=14 {
                assert_eq!(w.decide(id), Reason::Allowed, "key {id} mid-snapshot");
            }
            assert!(w.now - started < 5_000, "paging does not end");
        }
        // Pages follow each other without waiting for ticks (7 pages would
        // take 1.4 s at one per 200 ms tick).
        assert!(w.now - started < 1_000, "{} ms", w.now - started);
        // The delta since the first page's version repairs the rest.
        w.run_ms(500);
        for id in 1..=30 {
            let expected = match id {
                1 => Reason::OutOfScope,
                _ if w.cp.keys.contains_key(&id) => Reason::Allowed,
                _ => Reason::UnknownKey,
            };
            assert_eq!(w.decide(id), expected, "key {id}");
        }
        let meta = TableReader::new(&w.store).meta().unwrap();
        assert_eq!(meta.v, w.cp.version);
        assert_eq!(meta.n, w.cp.keys.len() as u64);
        assert!(w.answered > synced + 7, "{} answers", w.answered - synced);
    }
}
