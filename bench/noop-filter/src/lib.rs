//! A Proxy-Wasm HTTP filter that does nothing.
//!
//! The benchmark loads it as configuration (2): the cost Envoy pays for any
//! Wasm filter built with the same `proxy-wasm` SDK (VM entry, context
//! creation, callbacks) before a line of real logic runs. It registers a root
//! context and an HTTP context and lets every callback return `Continue`
//! (the SDK's defaults), so the difference to keygate's filter is keygate's
//! own work.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

/// Accepts any plugin configuration and creates one [`NoopHttp`] per stream.
struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }
}

/// Every HTTP callback keeps the SDK default: `Action::Continue`.
struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {}
