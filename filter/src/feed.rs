//! The key-table feed client, minus the host: when the lease holder should
//! call `GET /internal/v1/key-table`, with which `since`, and what to do with
//! the answer. The adapter only dispatches the request it is handed.
//!
//! The `since` of every poll comes from the shared table's meta, not from this
//! worker's memory, so a new lease holder carries on where the last one stopped.
//!
//! Full snapshots are asked for in pages of `snapshotPageSize` keys
//! (`limit=`): each page is applied as it arrives under a reserved generation
//! ([`SnapshotWriter`]), the next one (`after=next`) is asked for at once, and
//! after the last one the table flips to the first page's version, synced as
//! of the first page's arrival (its data is the oldest), and long polling
//! resumes from there, which re-ships whatever changed while paging.
//! A snapshot in progress lives only in this feed: if the lease moves on, the
//! new holder starts its own. Against a control plane that refuses `limit`
//! (400), snapshots are asked for whole.
//! Deltas are asked for in pages of the same size (`paged=1`): a change
//! touching more keys (an access rule over every user) arrives as pages
//! (`since=V&after=next`), each written in place as it arrives
//! ([`DeltaWriter`]); after the last one the table moves to the first page's
//! version and the next poll, sent at once, re-ships what changed while
//! paging. Against a control plane that refuses `paged` (400), deltas are
//! asked for whole.
//! Each applied answer also brings the set of registered MCP servers (see
//! [`servers`]) in step with what it says.
//! Failures back off exponentially (250 ms → 5 s); the table keeps serving
//! until it is older than `maxStalenessSeconds`, then the decision layer fails
//! closed, and the first good answer brings it back.

use crate::config::Config;
use crate::store::SharedStore;
use crate::table::{
    Applied, ApplyError, DeltaWriter, SnapshotWriter, apply_delta, read_table_meta, servers,
};
use keygate_protocol::{FeedQuery, KeyTable, PageSize, WaitSeconds, bearer};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeSet;

pub const INITIAL_BACKOFF_MS: u64 = 250;
pub const MAX_BACKOFF_MS: u64 = 5_000;
/// Headroom on top of the long-poll wait before a callout counts as failed.
pub const CALLOUT_SLACK_MS: u64 = 5_000;

/// A request the adapter should dispatch to the control-plane cluster. The
/// `authorization` value carries the data-plane token, so it is held apart
/// from the other headers in a [`SecretString`] and never shown by `Debug`.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Every header but `authorization`.
    pub headers: Vec<(String, String)>,
    pub authorization: SecretString,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl HttpRequest {
    /// A request to the control plane: pseudo-headers, the data-plane token
    /// as a bearer, and `extra` headers.
    pub fn to_control_plane(
        cfg: &Config,
        method: &str,
        path: String,
        extra: (&str, &str),
        body: Option<Vec<u8>>,
        timeout_ms: u64,
    ) -> Self {
        Self {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path),
                (
                    ":authority".into(),
                    cfg.control_plane_authority().to_owned(),
                ),
                (extra.0.into(), extra.1.into()),
            ],
            authorization: bearer::authorization(cfg.data_plane_token.expose_secret()).into(),
            body,
            timeout_ms,
        }
    }

    /// A header other than `authorization`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header, `authorization` included, as the host sends them.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain([("authorization", self.authorization.expose_secret())])
            .collect()
    }
}

/// The HTTP status of a callout answer, `None` when the callout failed.
///
/// Envoy reports a failed callout (reset, response over a buffer limit) as an
/// answer with no headers and then refuses to read its header map
/// (`BadArgument`), which the proxy-wasm SDK turns into a panic that kills
/// the VM; so `read_status` is only called when there are headers.
pub fn callout_status(
    num_headers: usize,
    read_status: impl FnOnce() -> Option<Vec<u8>>,
) -> Option<u32> {
    if num_headers == 0 {
        return None;
    }
    let bytes = read_status()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

/// What an answer did, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    Applied(Applied),
    /// Answer fine but not applicable (another writer moved the table);
    /// polls again right away from the current version.
    Skipped(ApplyError),
    /// One page of a paged snapshot or delta applied; more pages follow.
    PageApplied {
        /// Entries written by the snapshot or delta so far.
        written: u64,
        snapshot: bool,
    },
    /// Transport error, timeout, non-200 or undecodable body.
    Failed,
}

impl FeedEvent {
    /// The answer arrived after this VM lost the fetch lease (see
    /// [`crate::sync`]): dropped unread.
    pub const LEASE_LOST: FeedEvent = FeedEvent::Skipped(ApplyError::LeaseLost);
}

/// What the poll in flight asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A full snapshot (no table yet).
    Snapshot,
    /// Changes after `version` (or a full snapshot if the log cannot say),
    /// in pages when `paged_deltas`.
    Since { version: u64, paged_deltas: bool },
    /// The page of a snapshot in progress after this key id.
    Page(i64),
    /// The page of a delta in progress from `since` after key id `after`.
    DeltaPage { since: u64, after: i64 },
}

/// A paged answer being received; `next` is the key id to continue after.
#[derive(Debug)]
enum Paging {
    Snapshot {
        writer: SnapshotWriter,
        next: i64,
    },
    Delta {
        writer: DeltaWriter,
        since: u64,
        next: i64,
    },
}

#[derive(Debug, Default)]
pub struct Feed {
    /// The poll in flight and when it was sent.
    in_flight: Option<(Asked, u64)>,
    backoff_ms: u64,
    next_attempt_ms: u64,
    known_ids: BTreeSet<i64>,
    paging: Option<Paging>,
    /// The control plane refused `limit` (an older version): ask whole.
    unpaged: bool,
    /// The control plane refused `paged` (an older version): ask for whole
    /// deltas (snapshots may still come in pages).
    whole_deltas: bool,
    /// A snapshot was just flipped in: its sync is as of its first page, so
    /// the next poll asks without waiting, and its answer (whatever changed
    /// meanwhile, or nothing) records a sync as of now. Else an idle feed
    /// would leave the table's age at paging time plus `feedWaitSeconds`.
    catch_up: bool,
}

impl Feed {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The poll to send now, if one is due. Marks it in flight.
    pub fn next_request(
        &mut self,
        cfg: &Config,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Option<HttpRequest> {
        // After a failure, ask without waiting: a long poll proves nothing
        // until it returns, and the table may be close to stale.
        // `Config::validate` checked both settings against the same limits.
        let wait = if self.backoff_ms > 0 || self.catch_up {
            WaitSeconds::ZERO
        } else {
            WaitSeconds::saturating(cfg.feed_wait_seconds)
        };
        let timeout_ms = wait.get() * 1000 + CALLOUT_SLACK_MS;
        if let Some((_, sent)) = self.in_flight {
            // The host always answers a callout (at worst with a timeout);
            // this only guards against a lost callback wedging the feed.
            if now_ms.saturating_sub(sent) < timeout_ms * 2 {
                return None;
            }
            self.in_flight = None;
        }
        if now_ms < self.next_attempt_ms {
            return None;
        }
        let page_size = PageSize::saturating(cfg.snapshot_page_size);
        let page = (!self.unpaged).then_some(page_size);
        let asked = match (&self.paging, read_table_meta(store)) {
            (Some(Paging::Snapshot { next, .. }), _) => Asked::Page(*next),
            (Some(Paging::Delta { since, next, .. }), _) => Asked::DeltaPage {
                since: *since,
                after: *next,
            },
            (None, Some(m)) => Asked::Since {
                version: m.version,
                paged_deltas: page.is_some() && !self.whole_deltas,
            },
            (None, None) => Asked::Snapshot,
        };
        let query = match asked {
            Asked::Page(after) => FeedQuery::Page {
                after,
                page: page_size,
            },
            // `limit` too: the answer is a snapshot if the log no longer reaches `v`.
            Asked::Since {
                version,
                paged_deltas,
            } => FeedQuery::Since {
                version,
                wait,
                page,
                paged_deltas,
            },
            Asked::DeltaPage { since, after } => FeedQuery::DeltaPage {
                since,
                after,
                page: page_size,
            },
            Asked::Snapshot => FeedQuery::Snapshot { page },
        };
        let path = query.path();
        self.in_flight = Some((asked, now_ms));
        if matches!(asked, Asked::Since { .. }) {
            self.catch_up = false;
        }
        Some(HttpRequest::to_control_plane(
            cfg,
            "GET",
            path,
            ("accept", "application/json"),
            None,
            timeout_ms,
        ))
    }

    /// Forgets the poll in flight without applying its answer, and any
    /// snapshot in progress (another VM may be writing the table now), and
    /// polls again as soon as this VM holds the lease again.
    pub fn drop_in_flight(&mut self, now_ms: u64) {
        self.in_flight = None;
        self.paging = None;
        self.next_attempt_ms = now_ms;
    }

    /// Forgets a snapshot or delta in progress (the lease was lost). A
    /// snapshot's entries stay under a reserved generation that the next
    /// snapshot skips; a delta's are current states, harmless to keep.
    pub fn abandon_paging(&mut self) {
        self.paging = None;
    }

    pub fn snapshot_in_progress(&self) -> bool {
        matches!(self.paging, Some(Paging::Snapshot { .. }))
    }

    pub fn delta_in_progress(&self) -> bool {
        matches!(self.paging, Some(Paging::Delta { .. }))
    }

    /// The dispatch itself failed (unknown cluster, host refusal).
    pub fn on_dispatch_failed(&mut self, now_ms: u64) {
        self.in_flight = None;
        self.fail(now_ms);
    }

    fn fail(&mut self, now_ms: u64) {
        self.backoff_ms = if self.backoff_ms == 0 {
            INITIAL_BACKOFF_MS
        } else {
            (self.backoff_ms * 2).min(MAX_BACKOFF_MS)
        };
        self.next_attempt_ms = now_ms.saturating_add(self.backoff_ms);
    }

    /// Handles the answer to the poll in flight. `status` is `None` when the
    /// callout failed or timed out.
    pub fn on_response(
        &mut self,
        store: &dyn SharedStore,
        status: Option<u32>,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> FeedEvent {
        let asked = match self.in_flight.take() {
            Some((asked, _)) => asked,
            None => return FeedEvent::Failed,
        };
        if status == Some(400) {
            // An older control plane refuses parameters it does not know:
            // ask for whole deltas (it refused `paged`, or a continuation
            // reached an older replica), or else whole snapshots, from now
            // on, and start this answer again.
            match asked {
                Asked::Since {
                    paged_deltas: true, ..
                }
                | Asked::DeltaPage { .. } => self.whole_deltas = true,
                _ => self.unpaged = true,
            }
            self.paging = None;
        }
        let table = match (status, body) {
            (Some(200), Some(body)) => serde_json::from_slice::<KeyTable>(body).ok(),
            _ => None,
        };
        let Some(table) = table else {
            // A failed page is asked for again (after the backoff).
            self.fail(now_ms);
            return FeedEvent::Failed;
        };
        let result = match asked {
            Asked::Page(after) => self.continue_snapshot(store, &table, after),
            // Also a delta's continuation, when the log no longer reaches it.
            _ if table.full => self.start_snapshot(store, &table, now_ms),
            Asked::Since { version, .. } => self.start_delta(store, &table, version, now_ms),
            Asked::DeltaPage { since, after } => self.continue_delta(store, &table, since, after),
            Asked::Snapshot => Err(ApplyError::NotBasedOnTable),
        };
        // Every whole answer carries the registered servers (or, from an
        // older control plane, none), applied once its keys are.
        let result = result.and_then(|event| match event {
            FeedEvent::Applied(_) => {
                servers::sync(store, table.registered_servers.as_deref(), now_ms).map(|_| event)
            }
            other => Ok(other),
        });
        match result {
            Ok(event) => {
                self.backoff_ms = 0;
                self.next_attempt_ms = now_ms;
                event
            }
            Err(ApplyError::Store) => {
                self.paging = None;
                self.fail(now_ms);
                FeedEvent::Failed
            }
            Err(e) => {
                self.paging = None;
                self.next_attempt_ms = now_ms;
                FeedEvent::Skipped(e)
            }
        }
    }

    /// The first (or only) page of a full snapshot.
    fn start_snapshot(
        &mut self,
        store: &dyn SharedStore,
        page: &KeyTable,
        now_ms: u64,
    ) -> Result<FeedEvent, ApplyError> {
        self.paging = None;
        let writer = SnapshotWriter::begin(store, page.version, now_ms)?;
        self.page(store, writer, page, i64::MIN)
    }

    fn continue_snapshot(
        &mut self,
        store: &dyn SharedStore,
        page: &KeyTable,
        after: i64,
    ) -> Result<FeedEvent, ApplyError> {
        match self.paging.take() {
            Some(Paging::Snapshot { writer, next }) if next == after && page.full => {
                self.page(store, writer, page, after)
            }
            // Not a page of the snapshot in progress: start over.
            _ => Err(ApplyError::NotBasedOnTable),
        }
    }

    /// The first (or only) page of a delta from `since`.
    fn start_delta(
        &mut self,
        store: &dyn SharedStore,
        page: &KeyTable,
        since: u64,
        now_ms: u64,
    ) -> Result<FeedEvent, ApplyError> {
        self.paging = None;
        if page.next.is_none() {
            return apply_delta(store, page, since, now_ms, &mut self.known_ids)
                .map(FeedEvent::Applied);
        }
        let writer = DeltaWriter::begin(store, page, since, now_ms)?;
        self.delta_page(store, writer, since, page, i64::MIN)
    }

    fn continue_delta(
        &mut self,
        store: &dyn SharedStore,
        page: &KeyTable,
        since: u64,
        after: i64,
    ) -> Result<FeedEvent, ApplyError> {
        match self.paging.take() {
            Some(Paging::Delta {
                writer,
                since: s,
                next,
            }) if s == since && next == after => self.delta_page(store, writer, since, page, after),
            // Not a page of the delta in progress: poll again from meta.
            _ => Err(ApplyError::NotBasedOnTable),
        }
    }

    fn delta_page(
        &mut self,
        store: &dyn SharedStore,
        mut writer: DeltaWriter,
        since: u64,
        page: &KeyTable,
        after: i64,
    ) -> Result<FeedEvent, ApplyError> {
        // A cursor that does not move forward would never end.
        if page.next.is_some_and(|next| next <= after) {
            return Err(ApplyError::NotBasedOnTable);
        }
        writer.write_page(store, page, &mut self.known_ids)?;
        match page.next {
            Some(next) => {
                let written = writer.written();
                self.paging = Some(Paging::Delta {
                    writer,
                    since,
                    next,
                });
                Ok(FeedEvent::PageApplied {
                    written,
                    snapshot: false,
                })
            }
            None => {
                let applied = writer.finish(store)?;
                // As of its first page, like a snapshot: catch up at once.
                self.catch_up = true;
                Ok(FeedEvent::Applied(applied))
            }
        }
    }

    fn page(
        &mut self,
        store: &dyn SharedStore,
        mut writer: SnapshotWriter,
        page: &KeyTable,
        after: i64,
    ) -> Result<FeedEvent, ApplyError> {
        // A cursor that does not move forward would never end.
        if page.next.is_some_and(|next| next <= after) {
            return Err(ApplyError::NotBasedOnTable);
        }
        writer.write_page(store, page)?;
        match page.next {
            Some(next) => {
                let written = writer.written();
                self.paging = Some(Paging::Snapshot { writer, next });
                Ok(FeedEvent::PageApplied {
                    written,
                    snapshot: true,
                })
            }
            None => {
                let applied = writer.finish(store, &mut self.known_ids)?;
                self.catch_up = true;
                Ok(FeedEvent::Applied(applied))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
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
}
