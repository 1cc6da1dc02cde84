//! The Proxy-Wasm adapter: wires the host-agnostic modules to Envoy.
//!
//! - Root context (one per VM: each worker's and the main thread's): the
//!   configuration, and a 200 ms tick that holds the fetch lease, polls the
//!   key-table feed while holding it, flushes usage and refreshes the gauges.
//! - HTTP context: decides each request on its headers from the shared table
//!   (no network call), then answers locally or edits headers and continues.
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose results are handled
//! here, rather than the trait helpers, which unwrap them.

use crate::config::Config;
use crate::decision::{Decision, Reason, Request, decide};
use crate::feed::{FeedEvent, HttpRequest, callout_status};
use crate::headers::{HeaderOp, edits};
use crate::metrics::{self, DecisionCounts};
use crate::store::{SharedStore, StoreError};
use crate::sync::{Syncer, TICK_MS};
use crate::table::{TableCache, TableReader};
use crate::usage::UsageBatch;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Envoy's shared data, which every worker VM with the same `vm_id` sees.
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Host),
        }
    }
}

/// Metric ids of this VM (ids are per VM; the stats behind them are shared).
#[derive(Default)]
struct Metrics {
    decisions: Vec<Option<u32>>,
    table_version: Option<u32>,
    table_keys: Option<u32>,
    table_age: Option<u32>,
    feed_failures: Option<u32>,
    feed_updates: Option<u32>,
    usage_failures: Option<u32>,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    hostcalls::define_metric(kind, name).ok()
}

impl Metrics {
    fn define() -> Self {
        Self {
            decisions: Reason::ALL
                .iter()
                .map(|r| define(MetricType::Counter, &metrics::decision_counter(*r)))
                .collect(),
            table_version: define(MetricType::Gauge, metrics::TABLE_VERSION),
            table_keys: define(MetricType::Gauge, metrics::TABLE_KEYS),
            table_age: define(MetricType::Gauge, metrics::TABLE_AGE_SECONDS),
            feed_failures: define(MetricType::Counter, metrics::FEED_FAILURES),
            feed_updates: define(MetricType::Counter, metrics::FEED_UPDATES),
            usage_failures: define(MetricType::Counter, metrics::USAGE_FLUSH_FAILURES),
        }
    }

    fn incr(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn set(id: Option<u32>, value: u64) {
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Hands the decisions counted in VM memory to Envoy's counters.
    fn flush_decisions(&self, counts: &DecisionCounts) {
        for (reason, n) in counts.drain() {
            if let Some(id) = self.decisions.get(reason.index()).copied().flatten() {
                let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }
}

/// What the root context shares with its HTTP contexts (same thread).
struct Shared {
    config: Config,
    metrics: Metrics,
    decisions: DecisionCounts,
    table: TableCache,
    usage: RefCell<UsageBatch>,
}

struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    syncer: Syncer,
    feed_call: Option<u32>,
    usage_call: Option<u32>,
}

/// A random id per VM, so the lease tells workers apart. `RandomState` is
/// seeded from the host's `random_get`; the time and context id are mixed
/// in as well.
fn random_owner_id(context_id: u32) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((now_ms(), context_id))
}

impl Root {
    fn new(context_id: u32) -> Self {
        Self {
            context_id,
            shared: None,
            syncer: Syncer::new(random_owner_id(context_id)),
            feed_call: None,
            usage_call: None,
        }
    }

    fn dispatch(cfg: &Config, req: &HttpRequest) -> Result<u32, Status> {
        let headers = req.header_pairs();
        hostcalls::dispatch_http_call(
            &cfg.control_plane_cluster,
            headers,
            req.body.as_deref(),
            vec![],
            Duration::from_millis(req.timeout_ms),
        )
    }

    fn poll_feed(&mut self, shared: &Shared, req: &HttpRequest, now: u64) {
        match Self::dispatch(&shared.config, req) {
            Ok(token) => self.feed_call = Some(token),
            Err(status) => {
                self.syncer.on_dispatch_failed(now);
                Metrics::incr(shared.metrics.feed_failures);
                log(
                    LogLevel::Warn,
                    &format!(
                        "cannot call cluster {:?} for the key table: {status:?}",
                        shared.config.control_plane_cluster
                    ),
                );
            }
        }
    }

    fn flush_usage(&mut self, shared: &Shared, now: u64) {
        let req = shared.usage.borrow_mut().next_request(&shared.config, now);
        let Some(req) = req else { return };
        match Self::dispatch(&shared.config, &req) {
            Ok(token) => self.usage_call = Some(token),
            Err(_) => {
                shared.usage.borrow_mut().on_result(false);
                Metrics::incr(shared.metrics.usage_failures);
            }
        }
    }

    fn record_gauges(shared: &Shared, now: u64) {
        if let Some(meta) = shared.table.refresh(&HostStore, now) {
            Metrics::set(shared.metrics.table_version, meta.version);
            Metrics::set(shared.metrics.table_keys, meta.key_count);
            Metrics::set(
                shared.metrics.table_age,
                now.saturating_sub(meta.synced_at_ms) / 1000,
            );
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let status = callout_status(num_headers, || {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        });
        let now = now_ms();
        if self.feed_call == Some(token_id) {
            self.feed_call = None;
            // A failed callout has no body to read either.
            let body = status
                .and_then(|_| {
                    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok()
                })
                .flatten();
            let event = self
                .syncer
                .on_response(&HostStore, status, body.as_deref(), &now_ms);
            // Free the page before the next one arrives.
            drop(body);
            // This VM's requests see what it just wrote at once.
            shared.table.invalidate();
            match event {
                FeedEvent::PageApplied { written } => {
                    Metrics::incr(shared.metrics.feed_updates);
                    log(
                        LogLevel::Debug,
                        &format!("key-table snapshot page applied ({written} keys so far)"),
                    );
                }
                FeedEvent::Applied(a) => {
                    Metrics::incr(shared.metrics.feed_updates);
                    Self::record_gauges(&shared, now);
                    if a.writes > 0 {
                        log(
                            LogLevel::Info,
                            &format!(
                                "key table at version {} ({} keys, {} writes)",
                                a.version, a.key_count, a.writes
                            ),
                        );
                    }
                }
                FeedEvent::Skipped(e) => {
                    log(LogLevel::Debug, &format!("key-table answer skipped: {e:?}"))
                }
                FeedEvent::Failed => {
                    Metrics::incr(shared.metrics.feed_failures);
                    log(
                        LogLevel::Warn,
                        &format!(
                            "key-table poll failed (status {})",
                            status.map_or_else(|| "none".to_owned(), |s| s.to_string())
                        ),
                    );
                }
            }
            // After an applied answer (a page above all), poll again at once
            // rather than on the next tick.
            if matches!(event, FeedEvent::Applied(_) | FeedEvent::PageApplied { .. })
                && let Some(req) = self.syncer.follow_up(&shared.config, &HostStore, now_ms())
            {
                self.poll_feed(&shared, &req, now_ms());
            }
        } else if self.usage_call == Some(token_id) {
            self.usage_call = None;
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            shared.usage.borrow_mut().on_result(ok);
            if !ok {
                Metrics::incr(shared.metrics.usage_failures);
            }
        }
    }

    fn on_done(&mut self) -> bool {
        self.syncer.release(&HostStore);
        if let Some(shared) = &self.shared {
            shared.metrics.flush_decisions(&shared.decisions);
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(config) => {
                let table = TableCache::new(config.table_cache_millis);
                self.shared = Some(Rc::new(Shared {
                    config,
                    metrics: Metrics::define(),
                    decisions: DecisionCounts::default(),
                    table,
                    usage: RefCell::new(UsageBatch::new()),
                }));
                if hostcalls::set_tick_period(Duration::from_millis(TICK_MS)).is_err() {
                    log(LogLevel::Critical, "cannot set the tick period");
                    return false;
                }
                true
            }
            Err(e) => {
                log(LogLevel::Critical, &e.to_string());
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = now_ms();
        let tick = self.syncer.tick(&shared.config, &HostStore, now);
        if let Some(holds) = tick.lease_changed {
            log(
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
            self.poll_feed(&shared, &req, now);
        }
        self.flush_usage(&shared, now);
        shared.metrics.flush_decisions(&shared.decisions);
        Self::record_gauges(&shared, now);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    shared: Option<Rc<Shared>>,
}

impl Filter {
    /// Answers locally; if even that fails, resets the stream rather than
    /// let an undecided request through.
    fn reply(&self, status: u32, headers: Vec<(&str, &str)>, body: &str) -> Action {
        if hostcalls::send_http_response(status, headers, Some(body.as_bytes())).is_err() {
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    fn fail_closed(&self) -> Action {
        self.reply(
            503,
            vec![("content-type", "application/json")],
            r#"{"error":"key validation temporarily unavailable"}"#,
        )
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.fail_closed();
        };
        let Ok(mut headers) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
            return self.fail_closed();
        };
        // Envoy's header maps hold lowercase names already; this only guards
        // the comparisons below, in place.
        for (name, _) in &mut headers {
            name.make_ascii_lowercase();
        }
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v))
                .unwrap_or_default()
        };
        let method = pseudo(":method");
        let path = pseudo(":path");
        let now_ms = now_ms();
        let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let reader = TableReader::cached(&HostStore, &shared.table, now_ms);
        let request = Request {
            method: &method,
            path: &path,
            headers: &headers,
        };
        let decision = decide(&request, &shared.config, now, &reader);
        shared.decisions.record(decision.reason());
        match &decision {
            Decision::Deny(deny) => {
                // Formatting costs even when Envoy drops the line: ask first.
                if hostcalls::get_log_level()
                    .is_ok_and(|l| matches!(l, LogLevel::Trace | LogLevel::Debug))
                {
                    log(
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
                let retry_after = deny.retry_after_seconds.map(|s| s.to_string());
                let mut reply_headers = vec![
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ];
                if let Some(www) = deny.www_authenticate {
                    reply_headers.push(("www-authenticate", www));
                }
                if let Some(r) = retry_after.as_deref() {
                    reply_headers.push(("retry-after", r));
                }
                self.reply(deny.status, reply_headers, deny.body)
            }
            Decision::Allow(_) | Decision::Pass => {
                // One call per edit: replacing the whole map in one call
                // (`set_map`) measured no cheaper in the bench's cost probe,
                // and it would rewrite the pseudo-headers too.
                for op in edits(&shared.config, headers.iter().map(|(n, _)| n), &decision) {
                    let result = match &op {
                        HeaderOp::Remove(name) => {
                            hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
                        }
                        HeaderOp::Set(name, value) => {
                            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                        }
                    };
                    if result.is_err() {
                        return self.fail_closed();
                    }
                }
                if let Decision::Allow(allow) = &decision {
                    shared.usage.borrow_mut().record(allow.key_id, now);
                }
                Action::Continue
            }
        }
    }
}
