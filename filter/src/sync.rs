//! One VM's part in keeping the shared table: on every tick, hold (or try to
//! take) the fetch lease and, while holding it, poll the feed. The adapter
//! calls [`Syncer::tick`] from `on_tick` and dispatches what it returns.

use crate::config::Config;
use crate::feed::{Feed, FeedEvent, HttpRequest};
use crate::lease;
use crate::table::{ApplyError, SharedStore};

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

    pub fn tick(&mut self, cfg: &Config, store: &dyn SharedStore, now_ms: u64) -> Tick {
        let holds = lease::hold(store, self.owner_id, now_ms, LEASE_TTL_MS);
        let lease_changed = (holds != self.holds).then_some(holds);
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
        if !lease::is_held_by(store, self.owner_id, now_ms) {
            self.feed.drop_in_flight(now_ms);
            return FeedEvent::Skipped(ApplyError::LeaseLost);
        }
        self.feed.on_response(store, status, body, now_ms)
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

    /// The control plane's side of contract 2.
    struct FakeControlPlane {
        version: u64,
        keys: BTreeMap<i64, KeyEntry>,
        log: Vec<(u64, i64, bool)>, // (version, id, removed)
        up: bool,
    }

    impl FakeControlPlane {
        fn answer(&self, path: &str) -> Option<KeyTable> {
            let since = path
                .split_once("since=")
                .map(|(_, rest)| rest.split('&').next().unwrap().parse::<u64>().unwrap());
            match since {
                None => Some(KeyTable {
                    version: self.version,
                    full: true,
                    upserts: self.keys.values().cloned().collect(),
                    removals: vec![],
                }),
                Some(v) if v > self.version => self.answer("/"),
                Some(v) => {
                    let changes: Vec<_> = self.log.iter().filter(|(ver, ..)| *ver > v).collect();
                    if changes.is_empty() && !path.ends_with("wait=0") {
                        return None; // long poll: hold the request
                    }
                    Some(KeyTable {
                        version: self.version,
                        full: false,
                        upserts: changes
                            .iter()
                            .filter(|(_, _, removed)| !removed)
                            .filter_map(|(_, id, _)| self.keys.get(id).cloned())
                            .collect(),
                        removals: changes
                            .iter()
                            .filter(|(_, _, removed)| *removed)
                            .map(|(_, id, _)| *id)
                            .collect(),
                    })
                }
            }
        }

        fn remove(&mut self, id: i64) {
            self.version += 1;
            self.keys.remove(&id);
            self.log.push((self.version, id, true));
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
                        vm.syncer
                            .on_response(&self.store, Some(200), Some(&body), self.now);
                        vm.pending = None;
                    } else if !self.cp.up || timed_out {
                        // Connection refused, or the callout timed out.
                        vm.syncer.on_response(&self.store, None, None, self.now);
                        vm.pending = None;
                    } else if path.contains("wait=") {
                        // The long poll ends with an empty delta after `wait`.
                        let wait: u64 = path.rsplit("wait=").next().unwrap().parse().unwrap();
                        if self.now >= sent + wait * 1000 {
                            let table = KeyTable {
                                version: self.cp.version,
                                full: false,
                                upserts: vec![],
                                removals: vec![],
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
}
