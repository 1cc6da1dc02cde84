//! End-to-end test harness for keygate: starts the real control plane, MCP
//! servers and Envoy with the keygate filter on loopback, one set per test
//! (or per test file), and gives tests small clients to drive them.
//!
//! The binaries come from environment variables set by `cargo xtask test`
//! ([`env`]); a missing one fails the test with a message saying so.
//!
//! - [`stack`]: the whole path, started and wired together.
//! - [`control_plane`], [`mcp_server`], [`envoy`]: one process each;
//!   [`postgres`]: a database of its own for control-plane replicas.
//! - [`admin`]: the control plane's API; [`edge`] and [`raw_http`]: requests
//!   through Envoy; [`mcp_client`]: an rmcp client; [`keys`]: key variants;
//!   [`spelling`]: path spellings that must not widen a key's scope.
//! - [`header_echo`]: an upstream that shows the headers it received;
//!   [`shipped`]: the shipped `envoy/envoy.yaml` in front of it.

pub mod admin;
pub mod control_plane;
pub mod dirs;
pub mod edge;
pub mod env;
pub mod envoy;
pub mod header_echo;
pub mod keys;
pub mod mcp_client;
pub mod mcp_server;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod raw_http;
pub mod shipped;
pub mod spelling;
pub mod stack;

use std::time::Duration;

/// Installs rustls' ring crypto provider once. Call before building any
/// reqwest client (ours or rmcp's): in a workspace build reqwest's features
/// unify with the control plane's `rustls-no-provider`, and building a client
/// without a provider panics even when it only speaks plain HTTP.
pub fn ensure_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // An error means a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client for loopback: no proxy from the environment, bounded waits.
pub fn http_client() -> reqwest::Client {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build reqwest client")
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
