//! A simulated Envoy for [`super`]: several VMs ticking over one shared
//! store, a fake control plane with long polls and paged snapshots, and
//! requests decided in between.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use crate::decision::{Reason, Request, decide};
use crate::request_headers::RequestHeaders;
use crate::store::memory::MemoryStore;
use crate::table::TableReader;
use crate::table::testing::entry as scoped_entry;
use keygate_protocol::{ApiKeyToken, KeyEntry, KeyTable, Secret, ServerScope};
use std::collections::BTreeMap;

fn cfg() -> Config {
    Config::from_json(
        br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","feedWaitSeconds":5,"maxStalenessSeconds":8}"#,
    )
    .unwrap()
}

fn entry(id: i64) -> KeyEntry {
    scoped_entry(id, "alpha")
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

/// The control plane's side of the key-table feed (`protocol::feed`), with paged snapshots.
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
            registered_servers: None,
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
                    registered_servers: None,
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
        let now = self.now;
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
                    let ev = vm
                        .syncer
                        .on_response(&self.store, Some(200), Some(&body), &|| now);
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
                    vm.syncer.on_response(&self.store, None, None, &|| now);
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
                            registered_servers: None,
                        };
                        let body = serde_json::to_vec(&table).unwrap();
                        vm.syncer
                            .on_response(&self.store, Some(200), Some(&body), &|| now);
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
        let headers = RequestHeaders::from_pairs(&[(
            "authorization".to_owned(),
            format!("Bearer {}", key(key_id)),
        )])
        .unwrap();
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
    assert_eq!(TableReader::new(&w.store).meta().unwrap().generation, 1);
    assert_eq!(TableReader::new(&w.store).meta().unwrap().version, 12);
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
    assert_eq!(meta.version, w.cp.version);
    assert_eq!(meta.key_count, w.cp.keys.len() as u64);
    assert!(w.answered > synced + 7, "{} answers", w.answered - synced);
}
