//! The key-table feed client, minus the host: when the lease holder should
//! call `GET /internal/v1/key-table`, with which `since`, and what to do with
//! the answer. The adapter only dispatches the request it is handed.
//!
//! The `since` of every poll comes from the shared table's meta, not from this
//! worker's memory, so a new lease holder carries on where the last one stopped.
//! Failures back off exponentially (250 ms → 5 s); the table keeps serving
//! until it is older than `maxStalenessSeconds`, then the decision layer fails
//! closed, and the first good answer brings it back.

use crate::config::Config;
use crate::table::{Applied, ApplyError, SharedStore, apply, read_meta};
use keygate_protocol::KeyTable;
use std::collections::BTreeSet;

pub const INITIAL_BACKOFF_MS: u64 = 250;
pub const MAX_BACKOFF_MS: u64 = 5_000;
/// Headroom on top of the long-poll wait before a callout counts as failed.
pub const CALLOUT_SLACK_MS: u64 = 5_000;

/// A request the adapter should dispatch to the control-plane cluster. Its
/// `Debug` never shows the `authorization` value (the data-plane token).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if n.eq_ignore_ascii_case("authorization") {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("headers", &headers)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
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
    /// Transport error, timeout, non-200 or undecodable body.
    Failed,
}

#[derive(Debug, Default)]
pub struct Feed {
    /// `since` of the poll in flight (`Some(None)`: a snapshot request) and
    /// when it was sent.
    in_flight: Option<(Option<u64>, u64)>,
    backoff_ms: u64,
    next_attempt_ms: u64,
    known_ids: BTreeSet<i64>,
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
        let wait = if self.backoff_ms > 0 {
            0
        } else {
            cfg.feed_wait_seconds
        };
        let timeout_ms = wait * 1000 + CALLOUT_SLACK_MS;
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
        let since = read_meta(store).0.map(|m| m.v);
        let path = match since {
            Some(v) => format!("/internal/v1/key-table?since={v}&wait={wait}"),
            None => "/internal/v1/key-table".to_owned(),
        };
        self.in_flight = Some((since, now_ms));
        Some(HttpRequest {
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), path),
                (":authority".into(), cfg.control_plane_authority.clone()),
                (
                    "authorization".into(),
                    format!("Bearer {}", cfg.data_plane_token),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: None,
            timeout_ms,
        })
    }

    /// Forgets the poll in flight without applying its answer, and polls
    /// again as soon as this VM holds the lease again.
    pub fn drop_in_flight(&mut self, now_ms: u64) {
        self.in_flight = None;
        self.next_attempt_ms = now_ms;
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
        let since = match self.in_flight.take() {
            Some((since, _)) => since,
            None => return FeedEvent::Failed,
        };
        let table = match (status, body) {
            (Some(200), Some(body)) => serde_json::from_slice::<KeyTable>(body).ok(),
            _ => None,
        };
        let Some(table) = table else {
            self.fail(now_ms);
            return FeedEvent::Failed;
        };
        match apply(store, &table, since, now_ms, &mut self.known_ids) {
            Ok(applied) => {
                self.backoff_ms = 0;
                self.next_attempt_ms = now_ms;
                FeedEvent::Applied(applied)
            }
            Err(ApplyError::Store) => {
                self.fail(now_ms);
                FeedEvent::Failed
            }
            Err(e) => {
                self.next_attempt_ms = now_ms;
                FeedEvent::Skipped(e)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::decision::KeyLookup;
    use crate::table::TableReader;
    use crate::table::memory::MemoryStore;
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
                })
                .collect(),
            removals: removals.to_vec(),
            next: None,
        };
        serde_json::to_vec(&t).unwrap()
    }

    #[test]
    fn first_poll_is_a_snapshot_then_long_polls_from_meta() {
        let s = MemoryStore::default();
        let c = cfg();
        let mut f = Feed::new();
        let r = f.next_request(&c, &s, 0).unwrap();
        assert_eq!(r.header(":path"), Some("/internal/v1/key-table"));
        assert_eq!(r.header(":authority"), Some("cp.local:8081"));
        assert_eq!(r.header("authorization"), Some("Bearer dp-token"));
        assert_eq!(r.timeout_ms, 25_000);
        // Only one poll at a time.
        assert_eq!(f.next_request(&c, &s, 10), None);
        let ev = f.on_response(&s, Some(200), Some(&body(4, true, &[1, 2], &[])), 100);
        assert!(matches!(ev, FeedEvent::Applied(a) if a.version == 4 && a.key_count == 2));
        let r = f.next_request(&c, &s, 100).unwrap();
        assert_eq!(
            r.header(":path"),
            Some("/internal/v1/key-table?since=4&wait=20")
        );
        let ev = f.on_response(&s, Some(200), Some(&body(5, false, &[], &[1])), 300);
        assert!(matches!(ev, FeedEvent::Applied(a) if a.version == 5 && a.key_count == 1));
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
            Some("/internal/v1/key-table?since=7&wait=20")
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
            Some("/internal/v1/key-table?since=1&wait=0")
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
            Some("/internal/v1/key-table?since=6&wait=20")
        );
    }
}
