//! The Proxy-Wasm adapter: reads what Envoy hands the filter and forwards it
//! to [`crate::plugin`], and implements its [`Host`] trait (and the shared
//! data's [`SharedStore`]) with Envoy's host calls. Decisions about what to
//! reply, count or log live in `plugin`, where they are tested.
//!
//! - Root context (one per VM: each worker's and the main thread's): the
//!   configuration, and a 200 ms tick.
//! - HTTP context: the request headers.
//!
//! Every host call goes through [`crate::abi`], which returns the host's
//! status instead of panicking (the SDK's wrappers panic on a status they do
//! not expect, and a panic kills the VM and every request on its worker),
//! except the callout itself, which the SDK's dispatcher must see.

use crate::abi;
use crate::feed::{HttpRequest, callout_status};
use crate::headers::HeaderOp;
use crate::metrics::{Metric, MetricKind};
use crate::plugin::{self, Host, LogLevel, Shared, Verdict};
use crate::request_headers::RequestHeaders;
use crate::store::{SharedStore, StoreError};
use crate::sync::TICK_MS;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{self, Action, BufferType, ContextType, MapType, MetricType};
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

/// Unix milliseconds; 0 if the host refuses (every freshness check then
/// fails closed).
fn now_ms() -> u64 {
    abi::now_nanos().map_or(0, |nanos| nanos / 1_000_000)
}

fn level(level: LogLevel) -> types::LogLevel {
    match level {
        LogLevel::Debug => types::LogLevel::Debug,
        LogLevel::Info => types::LogLevel::Info,
        LogLevel::Warn => types::LogLevel::Warn,
        LogLevel::Critical => types::LogLevel::Critical,
    }
}

/// Envoy's shared data, which every worker VM with the same `vm_id` sees.
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        abi::shared_data(key).map_err(|_| StoreError::Host)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(abi::CAS_MISMATCH) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Host),
        }
    }
}

/// Envoy as [`plugin`] sees it. Holds this VM's metric ids (ids are per VM;
/// the stats behind them are shared), defined once configured.
#[derive(Default)]
struct EnvoyHost {
    metric_ids: std::cell::RefCell<Vec<Option<u32>>>,
}

impl EnvoyHost {
    fn define_metrics(&self) {
        let ids = Metric::all()
            .map(|m| {
                let kind = match m.kind() {
                    MetricKind::Counter => MetricType::Counter,
                    MetricKind::Gauge => MetricType::Gauge,
                };
                abi::define_metric(kind, &m.name()).ok()
            })
            .collect();
        *self.metric_ids.borrow_mut() = ids;
    }

    fn metric_id(&self, metric: Metric) -> Option<u32> {
        self.metric_ids
            .borrow()
            .get(metric.index())
            .copied()
            .flatten()
    }
}

impl Host for EnvoyHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn dispatch(&self, cluster: &str, request: &HttpRequest) -> Result<u32, String> {
        hostcalls::dispatch_http_call(
            cluster,
            request.header_pairs(),
            request.body.as_deref(),
            vec![],
            Duration::from_millis(request.timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &str) {
        if abi::send_local_response(status, headers, body).is_err() && abi::reset_request().is_err()
        {
            // The request stays paused until Envoy's own timeouts end it:
            // still never sent upstream.
            self.log(
                LogLevel::Critical,
                "the host refused both a local reply and a reset",
            );
        }
    }

    fn edit_request_headers(&self, ops: &[HeaderOp]) -> bool {
        // One call per edit: replacing the whole map in one call (`set_map`)
        // measured no cheaper in the bench's cost probe, and it would
        // rewrite the pseudo-headers too.
        ops.iter().all(|op| match op {
            HeaderOp::Remove(name) => abi::remove_request_header(name).is_ok(),
            HeaderOp::Add(name, value) => abi::add_request_header(name, value).is_ok(),
        })
    }

    fn add_to_counter(&self, metric: Metric, n: u64) {
        if let Some(id) = self.metric_id(metric) {
            let _ = abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn set_gauge(&self, metric: Metric, value: u64) {
        if let Some(id) = self.metric_id(metric) {
            let _ = abi::record_metric(id, value);
        }
    }

    fn log_enabled(&self, at: LogLevel) -> bool {
        abi::log_level().is_ok_and(|l| l <= level(at) as u32)
    }

    fn log(&self, at: LogLevel, message: &str) {
        let _ = abi::log(level(at), message);
    }

    fn set_property(&self, name: &str, value: &str) {
        // A refusal only loses the access log's fields.
        let _ = abi::set_property(name, value);
    }
}

struct Root {
    root: plugin::Root,
    host: Rc<EnvoyHost>,
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
            root: plugin::Root::new(context_id, random_owner_id(context_id)),
            host: Rc::new(EnvoyHost::default()),
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
        let status = callout_status(num_headers, || {
            abi::header_value(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        });
        let read_body = || {
            abi::buffer(BufferType::HttpCallResponseBody, body_size)
                .ok()
                .flatten()
        };
        self.root
            .on_callout_response(&*self.host, &HostStore, token_id, status, read_body);
    }

    fn on_done(&mut self) -> bool {
        self.root.on_done(&*self.host, &HostStore);
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = abi::buffer(BufferType::PluginConfiguration, plugin_configuration_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if !self.root.configure(&*self.host, &bytes) {
            return false;
        }
        self.host.define_metrics();
        if u32::try_from(TICK_MS)
            .map_err(|_| ())
            .and_then(|ms| abi::set_tick_period_ms(ms).map_err(|_| ()))
            .is_err()
        {
            self.host
                .log(LogLevel::Critical, "cannot set the tick period");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        self.root.on_tick(&*self.host, &HostStore);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            shared: self.root.shared(),
            host: Rc::clone(&self.host),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    shared: Option<Rc<Shared>>,
    host: Rc<EnvoyHost>,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let headers = abi::request_header_pairs()
            .ok()
            .and_then(RequestHeaders::from_serialized);
        match plugin::on_request_headers(&*self.host, &HostStore, self.shared.as_deref(), headers) {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
        }
    }
}
