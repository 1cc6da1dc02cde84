//! The bodies of keygate's fuzz targets, as plain functions on stable Rust.
//!
//! Every parser that meets untrusted bytes has one target here. Each takes
//! the fuzzer's bytes, runs the product's own code on them, and asserts what
//! must hold for every input (a panic is a finding):
//!
//! - [`token`]: the `ok1-` key parser.
//! - [`key_headers`]: finding the key in request headers, and what the
//!   filter decides and strips with it.
//! - [`path_class`]: the server name the filter decides on, against the one
//!   Envoy routes on, per [`envoy_path`] (an independent model of Envoy's
//!   `normalize_path` and `merge_slashes`, not the filter's code).
//! - [`plugin_config`]: the filter's configuration.
//! - [`feed_answer`]: key-table feed answers as the filter decodes and
//!   applies them.
//! - [`table_slot`]: the compact slot encoding of the shared key table.
//! - [`usage_report`]: last-use reports, from the filter's batch to the
//!   control plane's parser.
//! - [`api_json`]: the control plane's JSON bodies, through its real router
//!   (feature `control-plane`).
//!
//! `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, nightly) calls [`run`] with the
//! same names, and `tests/corpus_replay.rs` replays every committed corpus
//! file through the same functions on stable, so a found crash stays a test.

// A fuzz target reports a finding by panicking: asserts are its whole point.
#![allow(clippy::panic)]

#[cfg(feature = "control-plane")]
pub mod api_json;
pub mod envoy_path;
pub mod feed_answer;
pub mod key_headers;
pub mod memory_store;
pub mod path_class;
pub mod plugin_config;
pub mod table_slot;
pub mod token;
pub mod usage_report;

/// Every target, by the name its corpus folder and cargo-fuzz binary carry.
pub const TARGETS: &[&str] = &[
    "token",
    "key_headers",
    "path_class",
    "plugin_config",
    "feed_answer",
    "table_slot",
    "usage_report",
    "api_json",
];

/// Targets that need the `control-plane` feature.
pub const CONTROL_PLANE_TARGETS: &[&str] = &["api_json"];

/// Runs target `name` on `data`; `false` when no such target is built in.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "token" => token::check(data),
        "key_headers" => key_headers::check(data),
        "path_class" => path_class::check(data),
        "plugin_config" => plugin_config::check(data),
        "feed_answer" => feed_answer::check(data),
        "table_slot" => table_slot::check(data),
        "usage_report" => usage_report::check(data),
        #[cfg(feature = "control-plane")]
        "api_json" => api_json::check(data),
        _ => return false,
    }
    true
}
