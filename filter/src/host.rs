//! The Proxy-Wasm adapter: reads what Envoy hands the filter and forwards it
//! to [`crate::plugin`], and implements its [`Host`] trait (and the shared
//! data's [`SharedStore`]) with Envoy's host calls. Decisions about what to
//! reply, count or log live in `plugin`, where they are tested.
//!
//! - Root context (one per VM: each worker's and the main thread's): the
//!   configuration, and a 200 ms tick.
//! - HTTP context: the request headers.
//!
//! The calls every request makes (read the headers and the clock, edit the
//! headers, set the access-log properties) are made on the ABI directly:
//! no allocation, and a refusal is a status this code handles rather than
//! a panic in the SDK's wrapper. Other calls go through
//! `proxy_wasm::hostcalls`, whose results are handled here, rather than the
//! trait helpers, which unwrap them.

use crate::feed::{HttpRequest, callout_status};
use crate::headers::HeaderOp;
use crate::metrics::{Metric, MetricKind};
use crate::plugin::{self, Host, LogLevel, Shared, Verdict};
use crate::request_headers::RequestHeaders;
use crate::store::{SharedStore, StoreError};
use crate::sync::TICK_MS;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{self, Action, BufferType, ContextType, MapType, MetricType, Status};
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

// The ABI calls made on every request, called directly: the SDK's wrappers
// panic on a status they do not expect (a panic kills the VM and every
// request on its worker), and `set_property` allocates its path on each call.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// The call behind the SDK's `get_map_bytes`, which would copy every
    /// header into its own `String` and `Vec` (see [`RequestHeaders`]).
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    /// A one-part property path is the name itself (parts are joined by NUL).
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
}

const OK: u32 = Status::Ok as u32;
const REQUEST_HEADERS: u32 = MapType::HttpRequestHeaders as u32;

/// The request headers in the host's serialization, as one buffer; `None`
/// when the host refuses the call. An empty map may come back as no buffer.
fn request_header_bytes() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes the address and size of a buffer it obtained
    // from this module's `proxy_on_memory_allocate` (the SDK's allocator,
    // which hands out a forgotten `Vec<u8>` with capacity == size); the
    // buffer is ours from here on, exactly as in the SDK's `get_map_bytes`.
    let status = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
    if status != OK {
        return None;
    }
    if data.is_null() || size == 0 {
        return Some(Vec::new());
    }
    // SAFETY: see above: allocated as a Vec<u8> of capacity `size`, fully written.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Unix milliseconds; 0 if the host refuses (every freshness check then
/// fails closed).
fn now_ms() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer.
    if unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } != OK {
        return 0;
    }
    nanos / 1_000_000
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
                hostcalls::define_metric(kind, &m.name()).ok()
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
        if hostcalls::send_http_response(status, headers.to_vec(), Some(body.as_bytes())).is_err() {
            let _ = hostcalls::reset_http_request();
        }
    }

    fn edit_request_headers(&self, ops: &[HeaderOp]) -> bool {
        // One call per edit: replacing the whole map in one call (`set_map`)
        // measured no cheaper in the bench's cost probe, and it would
        // rewrite the pseudo-headers too.
        ops.iter().all(|op| {
            // SAFETY: the host reads `len` bytes at each pointer, during the call.
            let status = unsafe {
                match op {
                    HeaderOp::Remove(name) => {
                        proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len())
                    }
                    HeaderOp::Add(name, value) => proxy_add_header_map_value(
                        REQUEST_HEADERS,
                        name.as_ptr(),
                        name.len(),
                        value.as_ptr(),
                        value.len(),
                    ),
                }
            };
            status == OK
        })
    }

    fn add_to_counter(&self, metric: Metric, n: u64) {
        if let Some(id) = self.metric_id(metric) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn set_gauge(&self, metric: Metric, value: u64) {
        if let Some(id) = self.metric_id(metric) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn log_enabled(&self, at: LogLevel) -> bool {
        hostcalls::get_log_level().is_ok_and(|l| l as u32 <= level(at) as u32)
    }

    fn log(&self, at: LogLevel, message: &str) {
        let _ = hostcalls::log(level(at), message);
    }

    fn set_property(&self, name: &str, value: &str) {
        // SAFETY: the host reads `len` bytes at each pointer, during the call.
        // A refusal only loses an access-log field.
        let _ =
            unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
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
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        });
        let read_body = || {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
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
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        if !self.root.configure(&*self.host, &bytes) {
            return false;
        }
        self.host.define_metrics();
        if hostcalls::set_tick_period(Duration::from_millis(TICK_MS)).is_err() {
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
        let headers = request_header_bytes().and_then(RequestHeaders::from_serialized);
        match plugin::on_request_headers(&*self.host, &HostStore, self.shared.as_deref(), headers) {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
        }
    }
}
