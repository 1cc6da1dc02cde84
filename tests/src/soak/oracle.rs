//! The oracle: the [`Model`] plus a timeline of changes and faults, and the
//! judgement of every request: the answer the model predicts when it was
//! sent, and, when the edge answered otherwise, whether a change touching
//! that key or its owner (or a fault, or the key's expiry) explains it.
//!
//! Times are unix seconds (f64): expiries are wall-clock times.

use std::collections::{BTreeMap, VecDeque};

use super::model::{Credential, Model, STALE};

/// What a change touched: one key, one user (all their keys), one server
/// name (its registration, and with it every key's access to it), or
/// everything (a resync after a lost answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    Key(i64),
    User(i64),
    Server(String),
    All,
}

/// The filter settings the oracle's rules depend on.
#[derive(Debug, Clone, Copy)]
pub struct EdgeTiming {
    pub table_cache_millis: u64,
    pub feed_wait_seconds: u64,
    pub max_staleness_seconds: u64,
}

impl EdgeTiming {
    /// The window of the issue: `tableCacheMillis` + 1 s.
    pub fn window(&self) -> f64 {
        self.table_cache_millis as f64 / 1000.0 + 1.0
    }
}

/// After a fault ends, the edge may still be backing off (≤ 5 s) and then
/// fetching a paged snapshot: changes made around a fault are excused until
/// this long after it ends.
pub const CATCH_UP: f64 = 8.0;
/// Slack around an `expiresAt` (the issue's ±1 s).
const EXPIRY_SLACK: f64 = 1.0;
/// Changes older than this (and ended) are forgotten.
const MEMORY: f64 = 300.0;

#[derive(Debug, Clone)]
struct Change {
    start: f64,
    end: Option<f64>,
    touches: Vec<Touch>,
}

/// A fault in progress or over.
#[derive(Debug, Clone)]
pub struct Fault {
    pub name: String,
    pub start: f64,
    pub end: Option<f64>,
    /// No control plane answers at all: the table goes stale for sure.
    pub control_plane_down: bool,
}

/// One request, as the load driver prepared it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Which mix entry it came from (for the report).
    pub kind: &'static str,
    pub credential: Credential,
    pub server: String,
    pub routed: bool,
    /// The model's answer at sending time, table fresh.
    pub expected: u16,
    pub send: f64,
}

/// Counts for the report.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub requests: u64,
    pub agreed: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub by_status: BTreeMap<u16, u64>,
    pub server_errors: u64,
    /// 503s the staleness rules required, and those they allowed.
    pub stale_required: u64,
    pub stale_allowed: u64,
    /// Disagreements within 50 ms, 250 ms and the full window of a change
    /// (cumulative), excused by a fault's catch-up or an expiry, and wrong.
    pub within_50ms: u64,
    pub within_250ms: u64,
    pub within_window: u64,
    pub excused_by_fault: u64,
    pub excused_by_expiry: u64,
    /// Requests sent outside every window (no change touching them in
    /// flight or within the window, no fault, no expiry near): the ones
    /// the oracle judged with no slack at all.
    pub strict: u64,
    pub wrong: u64,
    pub wrong_examples: Vec<String>,
    /// Changes by kind: (answered as asked, refused by the API).
    pub changes: BTreeMap<&'static str, (u64, u64)>,
    /// Changes whose answer was lost (transport error or 5xx).
    pub change_errors: u64,
    /// Why the API refused changes (the first few), to tell a model
    /// mistake from an expected refusal.
    pub refusal_examples: Vec<String>,
    /// Full re-reads of the API's state after a lost answer.
    pub resyncs: u64,
}

#[derive(Debug)]
pub struct Oracle {
    pub model: Model,
    pub timing: EdgeTiming,
    changes: VecDeque<(u64, Change)>,
    next_change: u64,
    pub faults: Vec<Fault>,
    pub counts: Counts,
    /// Changes whose answer was lost, ended by the next resync.
    pub pending_unknown: Vec<u64>,
}

impl Oracle {
    pub fn new(timing: EdgeTiming) -> Self {
        Self {
            model: Model::default(),
            timing,
            changes: VecDeque::new(),
            next_change: 0,
            faults: Vec::new(),
            counts: Counts::default(),
            pending_unknown: Vec::new(),
        }
    }

    /// A change is about to be sent; returns its handle for [`end_change`](Self::end_change).
    pub fn begin_change(&mut self, now: f64, touches: Vec<Touch>) -> u64 {
        let id = self.next_change;
        self.next_change += 1;
        self.changes.push_back((
            id,
            Change {
                start: now,
                end: None,
                touches,
            },
        ));
        while let Some((_, front)) = self.changes.front() {
            match front.end {
                Some(end) if end < now - MEMORY => {
                    self.changes.pop_front();
                }
                _ => break,
            }
        }
        id
    }

    /// The change's answer arrived (its effect is already in the model);
    /// `more` are touches learnt from the answer.
    pub fn end_change(&mut self, id: u64, now: f64, more: &[Touch]) {
        if let Some((_, change)) = self.changes.iter_mut().rev().find(|(i, _)| *i == id) {
            change.end = Some(now);
            change.touches.extend_from_slice(more);
        }
    }

    /// Records a change's outcome for the report.
    pub fn count_change(&mut self, kind: &'static str, accepted: bool) {
        let entry = self.counts.changes.entry(kind).or_default();
        if accepted {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    pub fn begin_fault(&mut self, name: &str, now: f64, control_plane_down: bool) -> usize {
        self.faults.push(Fault {
            name: name.to_owned(),
            start: now,
            end: None,
            control_plane_down,
        });
        self.faults.len() - 1
    }

    pub fn end_fault(&mut self, index: usize, now: f64) {
        if let Some(fault) = self.faults.get_mut(index) {
            fault.end = Some(now);
        }
    }

    /// The model's answer for a request about to be sent.
    pub fn plan(
        &self,
        kind: &'static str,
        credential: Credential,
        server: &str,
        routed: bool,
        send: f64,
    ) -> Planned {
        let expected = self.model.decide(&credential, server, routed, send);
        Planned {
            kind,
            credential,
            server: server.to_owned(),
            routed,
            expected,
            send,
        }
    }

    /// Judges the edge's answer `actual` to `planned`, received at `recv`.
    pub fn judge(&mut self, planned: &Planned, actual: u16, recv: f64) {
        let counts = &mut self.counts;
        counts.requests += 1;
        *counts.by_kind.entry(planned.kind).or_default() += 1;
        *counts.by_status.entry(actual).or_default() += 1;
        if actual >= 500 {
            counts.server_errors += 1;
        }
        let needs_table = matches!(planned.credential, Credential::WellFormed { .. });
        let (required, allowed) = if needs_table {
            self.staleness(planned.send, recv)
        } else {
            (false, false)
        };
        let distance = self.distance(planned, recv);
        if matches!(distance, Distance::After(d) if d >= self.timing.window())
            && !allowed
            && !required
        {
            self.counts.strict += 1;
        }
        let agrees = if required {
            actual == STALE
        } else {
            actual == planned.expected || (allowed && actual == STALE)
        };
        if agrees {
            self.counts.agreed += 1;
            if actual == STALE && required {
                self.counts.stale_required += 1;
            } else if actual == STALE {
                self.counts.stale_allowed += 1;
            }
            return;
        }
        let counts = &mut self.counts;
        match distance {
            Distance::Fault => counts.excused_by_fault += 1,
            Distance::Expiry => counts.excused_by_expiry += 1,
            Distance::After(d) => {
                let window = self.timing.window();
                if d < 0.05 {
                    counts.within_50ms += 1;
                }
                if d < 0.25 {
                    counts.within_250ms += 1;
                }
                if d < window {
                    counts.within_window += 1;
                } else {
                    counts.wrong += 1;
                    if counts.wrong_examples.len() < 30 {
                        counts.wrong_examples.push(format!(
                            "{} {:?} on {} (routed {}): expected {}{}, got {actual}; sent at {:.3}, \
                             answered at {recv:.3}, last touching change {d:.3} s before",
                            planned.kind,
                            planned.credential,
                            planned.server,
                            planned.routed,
                            planned.expected,
                            if required { " (stale: 503)" } else { "" },
                            planned.send,
                        ));
                    }
                }
            }
        }
    }

    /// (503 required, 503 allowed) for a request needing the table, from
    /// the faults and the filter's staleness rules: a table older than
    /// `maxStalenessSeconds` answers 503; the last sync can be up to
    /// `feedWaitSeconds` before the feed stopped; after the feed returns,
    /// the first good answer comes within one backoff step (≤ 5 s).
    fn staleness(&self, send: f64, recv: f64) -> (bool, bool) {
        let stale = self.timing.max_staleness_seconds as f64;
        let wait = self.timing.feed_wait_seconds as f64;
        let mut required = false;
        let mut allowed = false;
        for fault in &self.faults {
            let end = fault.end.unwrap_or(f64::INFINITY);
            if recv >= fault.start + stale - wait - 1.0 && send <= end + CATCH_UP {
                allowed = true;
            }
            if fault.control_plane_down && send >= fault.start + stale + 1.5 && recv < end {
                required = true;
            }
        }
        (required, allowed)
    }

    fn distance(&self, planned: &Planned, recv: f64) -> Distance {
        let send = planned.send;
        let (key_id, mut users) = match planned.credential {
            Credential::WellFormed {
                user_id, key_id, ..
            } => (Some(key_id), vec![user_id]),
            _ => (None, Vec::new()),
        };
        if let Some(key) = key_id.and_then(|id| self.model.keys.get(&id)) {
            users.push(key.user_id);
            if let Some(at) = key.expires_at
                && send <= at + EXPIRY_SLACK
                && recv >= at - EXPIRY_SLACK
            {
                return Distance::Expiry;
            }
        }
        let window = self.timing.window();
        let mut nearest = f64::INFINITY;
        for (_, change) in &self.changes {
            let relevant = change.touches.iter().any(|t| match t {
                Touch::All => true,
                Touch::Key(k) => Some(*k) == key_id,
                Touch::User(u) => users.contains(u),
                Touch::Server(name) => *name == planned.server,
            });
            if !relevant || change.start > recv {
                continue;
            }
            let Some(end) = change.end else {
                return Distance::After(0.0);
            };
            // A change whose propagation a fault held up counts until the
            // edge has caught up after that fault.
            let held_up = self.faults.iter().any(|f| {
                let fault_end = f.end.unwrap_or(f64::INFINITY) + CATCH_UP;
                end + window >= f.start && end <= fault_end && send <= fault_end
            });
            if held_up {
                return Distance::Fault;
            }
            if end >= send {
                return Distance::After(0.0);
            }
            nearest = nearest.min(send - end);
        }
        Distance::After(nearest)
    }
}

enum Distance {
    After(f64),
    Fault,
    Expiry,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::model::{Key, Servers, User};

    fn oracle() -> Oracle {
        let mut o = Oracle::new(EdgeTiming {
            table_cache_millis: 10,
            feed_wait_seconds: 2,
            max_staleness_seconds: 8,
        });
        o.model.users.insert(1, User { suspended: false });
        o.model.servers.insert("a".into());
        o.model.keys.insert(
            5,
            Key {
                user_id: 1,
                token: None,
                scope: Servers::All,
                expires_at: Some(1000.0),
                disabled: false,
                revoked: false,
            },
        );
        o
    }

    fn key5() -> Credential {
        Credential::WellFormed {
            user_id: 1,
            key_id: 5,
            secret_matches: true,
        }
    }

    #[test]
    fn a_disagreement_far_from_any_change_is_wrong() {
        let mut o = oracle();
        let p = o.plan("valid", key5(), "a", true, 100.0);
        assert_eq!(p.expected, 403);
        o.judge(&p, 200, 100.01);
        assert_eq!(o.counts.wrong, 1);
        o.judge(&p, 403, 100.01);
        assert_eq!(o.counts.agreed, 1);
    }

    #[test]
    fn a_disagreement_soon_after_a_change_is_in_its_window() {
        let mut o = oracle();
        let c = o.begin_change(99.0, vec![Touch::User(1)]);
        o.end_change(c, 99.9, &[]);
        let p = o.plan("valid", key5(), "a", true, 100.0);
        o.judge(&p, 200, 100.01);
        assert_eq!((o.counts.within_50ms, o.counts.within_250ms), (0, 1));
        assert_eq!((o.counts.within_window, o.counts.wrong), (1, 0));
        // A change to another key does not excuse it.
        let c = o.begin_change(200.0, vec![Touch::Key(6)]);
        o.end_change(c, 200.0, &[]);
        let p = o.plan("valid", key5(), "a", true, 200.1);
        o.judge(&p, 200, 200.2);
        assert_eq!(o.counts.wrong, 1);
    }

    #[test]
    fn expiry_and_staleness() {
        let mut o = oracle();
        let p = o.plan("expired", key5(), "a", true, 1000.5);
        o.judge(&p, 403, 1000.6);
        assert_eq!(o.counts.excused_by_expiry, 1);
        let f = o.begin_fault("kill", 2000.0, true);
        let early = o.plan("x", key5(), "a", true, 2003.0);
        o.judge(&early, 503, 2003.1);
        assert_eq!(o.counts.wrong, 1, "503 before the table can be stale");
        let late = o.plan("x", key5(), "a", true, 2010.0);
        o.judge(&late, 401, 2010.1);
        assert_eq!(o.counts.wrong, 2, "the table must be stale by then");
        o.judge(&late, 503, 2010.1);
        o.end_fault(f, 2012.0);
        let after = o.plan("x", key5(), "a", true, 2013.0);
        o.judge(&after, 503, 2013.1);
        o.judge(&after, 401, 2013.1);
        assert_eq!(o.counts.wrong, 2);
        assert_eq!((o.counts.stale_required, o.counts.stale_allowed), (1, 1));
    }
}
