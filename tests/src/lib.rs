//! End-to-end test harness for keygate: starts the real control plane, MCP
//! servers and Envoy with the keygate filter on loopback, one set per test
//! (or per test file), and gives tests small clients to drive them.
//!
//! The binaries come from environment variables set by `cargo xtask test`
//! ([`env`]); a missing one fails the test with a message saying so.
//!
//! - [`stack`]: the whole path, started and wired together.
//! - [`control_plane`], [`mcp_server`], [`envoy`]: one process each.
//! - [`api`] (the control plane's API client), [`process`], [`ports`] and
//!   [`postgres`] come from `keygate-test-support`, shared with the bench
//!   and xtask; [`edge`] and [`raw_http`]: requests
//!   through Envoy; [`mcp_client`]: an rmcp client; [`keys`]: key variants;
//!   [`spelling`]: path spellings that must not widen a key's scope.
//! - [`soak`]: the long run with churn, faults and an oracle (`cargo xtask soak`).
//! - [`header_echo`]: an upstream that shows the headers it received;
//!   [`shipped`]: the shipped `envoy/envoy.yaml` in front of it.

pub mod console;
pub mod control_plane;
pub mod dirs;
pub mod edge;
pub mod env;
pub mod envoy;
pub mod header_echo;
pub mod keys;
pub mod mcp_client;
pub mod mcp_server;
pub mod raw_http;
pub mod shipped;
pub mod snippets;
pub mod soak;
pub mod spelling;
pub mod stack;

pub use keygate_test_support::{api, ensure_crypto_provider, ports, postgres, process};

/// An HTTP client for loopback: no proxy from the environment, bounded waits.
pub fn http_client() -> reqwest::Client {
    keygate_test_support::http_client().unwrap_or_else(|e| panic!("{e:#}"))
}

/// RFC 3339 (UTC, whole seconds) for `unix_seconds`, as the API's `expiresAt`.
pub fn rfc3339(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .expect("valid timestamp")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, in unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
