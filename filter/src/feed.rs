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
mod tests;
