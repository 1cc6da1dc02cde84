//! keygate's edge filter: validates `ok1` API keys and per-server scopes
//! inside Envoy (Proxy-Wasm), from a key table synced from the control plane.
//!
//! Host-agnostic logic, unit-tested natively:
//! - [`config`]: the plugin configuration, validated (docs/filter.md).
//! - [`request_headers`]: the request's headers, read in place from the host's buffer.
//! - [`path`], [`keys`], [`decision`]: what happens to one request.
//! - [`headers`]: the header edits for a request that goes on.
//! - [`published`]: what a decision tells Envoy's access log (filter state).
//! - [`store`]: the shared-data calls, as a trait with in-memory fakes.
//! - [`table`] (layout; [`table::reader`], [`table::writer`]; slots encoded
//!   by [`slot`]), [`lease`], [`feed`], [`sync`]: the shared key table, who
//!   fetches it, and how.
//! - [`usage`]: batched last-use reports.
//! - [`metrics`]: metric names.
//! - [`plugin`]: what happens on each host event, behind a small `Host`
//!   trait (dispatch, reply, header edits, metrics, logs) faked in tests.
//!
//! The Proxy-Wasm adapter (`host`, wasm32 only) reads what Envoy hands it
//! and forwards to [`plugin`]; `abi` (wasm32 only) makes its host calls,
//! returning the host's status where the SDK's wrappers would panic.

pub mod config;
pub mod decision;
pub mod feed;
pub mod headers;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod path;
pub mod plugin;
pub mod published;
pub mod request_headers;
pub mod slot;
pub mod store;
pub mod sync;
pub mod table;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(target_arch = "wasm32")]
mod host;
