//! What the filter does on each host event (configuration, tick, callout
//! answer, request headers, shutdown), written against a small [`Host`]
//! trait so it is tested natively with a fake host: which metric a feed
//! event moves, what is logged, which local reply a denial gets. The
//! Proxy-Wasm adapter (`host`) only reads what Envoy hands it and forwards
//! these calls.

use crate::config::Config;
use crate::decision::{Decision, Deny, Request, decide, unavailable};
use crate::feed::{FeedEvent, HttpRequest};
use crate::headers::{HeaderOp, edits};
use crate::metrics::{DecisionCounts, Metric};
use crate::published;
use crate::request_headers::RequestHeaders;
use crate::store::SharedStore;
use crate::sync::Syncer;
use crate::table::{Applied, TableCache, TableReader};
use crate::usage::{PostResult, UsageBatch};
use std::cell::RefCell;
use std::rc::Rc;

/// Log levels the filter uses (Envoy's, minus the ones it never needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Critical,
}

/// The host calls the filter makes, besides shared data ([`SharedStore`]).
pub trait Host {
    /// Unix milliseconds by the host's clock.
    fn now_ms(&self) -> u64;
    /// Sends `request` to `cluster`; the token names its answer. The error
    /// says why the host refused (for a log line).
    fn dispatch(&self, cluster: &str, request: &HttpRequest) -> Result<u32, String>;
    /// Answers the current request locally (or, if even that fails, resets
    /// it: an undecided request never goes on).
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &str);
    /// Edits the current request's headers; false when the host refused one.
    fn edit_request_headers(&self, ops: &[HeaderOp]) -> bool;
    /// Adds `n` to a counter.
    fn add_to_counter(&self, metric: Metric, n: u64);
    /// Sets a gauge.
    fn set_gauge(&self, metric: Metric, value: u64);
    /// True when a line at `level` would be written (formatting one costs
    /// even when the host drops it).
    fn log_enabled(&self, level: LogLevel) -> bool;
    fn log(&self, level: LogLevel, message: &str);
    /// Sets a property of the current request (Envoy: filter state
    /// `wasm.<name>`, read by the access log); failures are ignored, the
    /// request is decided either way.
    fn set_property(&self, name: &str, value: &str);
}

/// What the root context shares with its HTTP contexts (same thread).
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    decisions: DecisionCounts,
    table: TableCache,
    usage: RefCell<UsageBatch>,
}

/// One VM's root context: the configuration, the tick that keeps the shared
/// table and flushes usage, and the answers to its callouts.
#[derive(Debug)]
pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    syncer: Syncer,
    feed_call: Option<u32>,
    usage_call: Option<u32>,
}

impl Root {
    /// `owner_id` tells this VM apart from the others in the fetch lease.
    pub fn new(context_id: u32, owner_id: u64) -> Self {
        Self {
            context_id,
            shared: None,
            syncer: Syncer::new(owner_id),
            feed_call: None,
            usage_call: None,
        }
    }

    /// What HTTP contexts see; `None` until a valid configuration arrived.
    pub fn shared(&self) -> Option<Rc<Shared>> {
        self.shared.clone()
    }

    /// Validates the plugin configuration; false (and a critical log line
    /// that never shows the data-plane token) refuses it.
    pub fn configure(&mut self, host: &dyn Host, bytes: &[u8]) -> bool {
        match Config::from_json(bytes) {
            Ok(config) => {
                let table = TableCache::new(config.table_cache_millis);
                self.shared = Some(Rc::new(Shared {
                    config,
                    decisions: DecisionCounts::default(),
                    table,
                    usage: RefCell::new(UsageBatch::new()),
                }));
                true
            }
            Err(e) => {
                host.log(LogLevel::Critical, &e.to_string());
                false
            }
        }
    }

    /// Every tick: hold the lease and poll while holding it, post usage when
    /// due, hand decision counts to the host and refresh the gauges.
    pub fn on_tick(&mut self, host: &dyn Host, store: &dyn SharedStore) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = host.now_ms();
        let tick = self.syncer.tick(&shared.config, store, now);
        if let Some(holds) = tick.lease_changed {
            host.log(
                LogLevel::Info,
                &format!(
                    "root context {} (owner {:016x}) {} the key-table lease",
                    self.context_id,
                    self.syncer.owner_id(),
                    if holds { "took" } else { "gave up" }
                ),
            );
        }
        if let Some(req) = tick.poll {
            self.poll_feed(host, &shared, &req, now);
        }
        self.flush_usage(host, &shared, now);
        flush_decisions(host, &shared.decisions);
        record_gauges(host, store, &shared, now);
    }

    /// The answer to a callout: `status` is `None` when it failed;
    /// `read_body` is only called for an answer that has one.
    pub fn on_callout_response(
        &mut self,
        host: &dyn Host,
        store: &dyn SharedStore,
        token: u32,
        status: Option<u32>,
        read_body: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = host.now_ms();
        if self.feed_call == Some(token) {
            self.feed_call = None;
            // A failed callout has no body to read either.
            let body = status.and_then(|_| read_body());
            let event = self
                .syncer
                .on_response(store, status, body.as_deref(), &|| host.now_ms());
            // Free the page before the next one arrives.
            drop(body);
            // This VM's requests see what it just wrote at once.
            shared.table.invalidate();
            report_feed_event(host, store, &shared, event, status, now);
            // After an applied answer (a page above all), poll again at once
            // rather than on the next tick.
            if matches!(event, FeedEvent::Applied(_) | FeedEvent::PageApplied { .. })
                && let Some(req) = self.syncer.follow_up(&shared.config, store, host.now_ms())
            {
                self.poll_feed(host, &shared, &req, host.now_ms());
            }
        } else if self.usage_call == Some(token) {
            self.usage_call = None;
            let result = PostResult::of(status);
            shared.usage.borrow_mut().on_result(result);
            if result != PostResult::Sent {
                host.add_to_counter(Metric::UsageFlushFailures, 1);
            }
        }
    }

    /// The VM goes away: give the lease up and hand over the last counts.
    pub fn on_done(&mut self, host: &dyn Host, store: &dyn SharedStore) {
        self.syncer.release(store);
        if let Some(shared) = &self.shared {
            flush_decisions(host, &shared.decisions);
        }
    }

    fn poll_feed(&mut self, host: &dyn Host, shared: &Shared, req: &HttpRequest, now: u64) {
        match host.dispatch(&shared.config.control_plane_cluster, req) {
            Ok(token) => self.feed_call = Some(token),
            Err(why) => {
                self.syncer.on_dispatch_failed(now);
                host.add_to_counter(Metric::FeedFailures, 1);
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "cannot call cluster {:?} for the key table: {why}",
                        shared.config.control_plane_cluster
                    ),
                );
            }
        }
    }

    fn flush_usage(&mut self, host: &dyn Host, shared: &Shared, now: u64) {
        let req = shared.usage.borrow_mut().next_request(&shared.config, now);
        let Some(req) = req else { return };
        match host.dispatch(&shared.config.control_plane_cluster, &req) {
            Ok(token) => self.usage_call = Some(token),
            Err(_) => {
                shared.usage.borrow_mut().on_result(PostResult::Failed);
                host.add_to_counter(Metric::UsageFlushFailures, 1);
            }
        }
    }
}

/// Metrics and log lines for what a feed answer did.
fn report_feed_event(
    host: &dyn Host,
    store: &dyn SharedStore,
    shared: &Shared,
    event: FeedEvent,
    status: Option<u32>,
    now: u64,
) {
    match event {
        FeedEvent::PageApplied { written, snapshot } => {
            host.add_to_counter(Metric::FeedUpdates, 1);
            let kind = if snapshot { "snapshot" } else { "delta" };
            host.log(
                LogLevel::Debug,
                &format!("key-table {kind} page applied ({written} writes so far)"),
            );
        }
        FeedEvent::Applied(a) => {
            host.add_to_counter(Metric::FeedUpdates, 1);
            record_gauges(host, store, shared, now);
            if a.writes > 0 {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "key table at version {} ({} keys, {} writes, {})",
                        a.version,
                        a.key_count,
                        a.writes,
                        answer_kind(a)
                    ),
                );
            }
        }
        FeedEvent::Skipped(e) => {
            host.log(LogLevel::Debug, &format!("key-table answer skipped: {e:?}"));
        }
        FeedEvent::Failed => {
            host.add_to_counter(Metric::FeedFailures, 1);
            host.log(
                LogLevel::Warn,
                &format!(
                    "key-table poll failed (status {})",
                    status.map_or_else(|| "none".to_owned(), |s| s.to_string())
                ),
            );
        }
    }
}

/// `snapshot` or `delta`, and `in N pages` when it was paged.
fn answer_kind(a: Applied) -> String {
    let kind = if a.snapshot { "snapshot" } else { "delta" };
    if a.pages > 1 {
        format!("{kind} in {} pages", a.pages)
    } else {
        kind.to_owned()
    }
}

/// Hands the decisions counted in VM memory to the host's counters.
fn flush_decisions(host: &dyn Host, counts: &DecisionCounts) {
    for (reason, n) in counts.drain() {
        host.add_to_counter(Metric::Decisions(reason), n);
    }
}

fn record_gauges(host: &dyn Host, store: &dyn SharedStore, shared: &Shared, now: u64) {
    if let Some(meta) = shared.table.refresh(store, now) {
        host.set_gauge(Metric::TableVersion, meta.version);
        host.set_gauge(Metric::TableKeys, meta.key_count);
        host.set_gauge(
            Metric::TableAgeSeconds,
            now.saturating_sub(meta.synced_at_ms) / 1000,
        );
    }
}

/// What the adapter tells Envoy after the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on upstream (headers edited).
    Continue,
    /// Answered locally (or reset): stop here.
    Stop,
}

/// Decides one request on its headers (`None` when the host could not hand
/// them over, or handed over a malformed map) and answers it or
/// lets it go on. `shared` is `None` when the plugin has no configuration.
pub fn on_request_headers(
    host: &dyn Host,
    store: &dyn SharedStore,
    shared: Option<&Shared>,
    headers: Option<RequestHeaders>,
) -> Verdict {
    let (Some(shared), Some(headers)) = (shared, headers) else {
        return fail_closed(host);
    };
    let pseudo = |name: &str| {
        headers
            .get(name)
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
    };
    let method = pseudo(":method");
    let path = pseudo(":path");
    let now_ms = host.now_ms();
    let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let reader = TableReader::cached(store, &shared.table, now_ms);
    let request = Request {
        method: &method,
        path: &path,
        headers: &headers,
    };
    let decision = decide(&request, &shared.config, now, &reader);
    shared.decisions.record(decision.reason());
    let (mut user_id, mut key_id) = (itoa::Buffer::new(), itoa::Buffer::new());
    let ids = decision.id_text(&mut user_id, &mut key_id);
    if let Some(text) = published::access_log_text(&decision, ids) {
        host.set_property(published::PROPERTY, &text);
    }
    match &decision {
        Decision::Deny(deny) => {
            if host.log_enabled(LogLevel::Debug) {
                host.log(
                    LogLevel::Debug,
                    &format!(
                        "{} {} -> {} ({})",
                        method,
                        crate::path::for_log(&path),
                        deny.status,
                        deny.reason.as_str()
                    ),
                );
            }
            reply(host, deny)
        }
        Decision::Allow(_) | Decision::Pass => {
            let ops = edits(
                &shared.config,
                headers.iter().map(|(n, _)| n),
                &decision,
                ids,
            );
            if !host.edit_request_headers(&ops) {
                return fail_closed(host);
            }
            if let Decision::Allow(allow) = &decision {
                shared
                    .usage
                    .borrow_mut()
                    .record(allow.key_id, now, allow.previous_secret);
            }
            Verdict::Continue
        }
    }
}

/// The local reply for a denial: a generic JSON body, never cached.
fn reply(host: &dyn Host, deny: &Deny) -> Verdict {
    let retry_after = deny.retry_after_seconds.map(|s| s.to_string());
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    if let Some(www) = deny.www_authenticate {
        headers.push(("www-authenticate", www));
    }
    if let Some(r) = retry_after.as_deref() {
        headers.push(("retry-after", r));
    }
    host.send_reply(deny.status, &headers, deny.body);
    Verdict::Stop
}

/// A request the filter cannot decide is refused with the ordinary 503.
fn fail_closed(host: &dyn Host) -> Verdict {
    reply(host, &unavailable())
}

#[cfg(test)]
mod tests;
