//! What keygate's end-to-end tests, bench, xtask and control-plane tests
//! share, written once:
//!
//! - [`api`]: the control plane's HTTP API client;
//! - [`process`]: a child process with its output in a log file, tied to the
//!   life of the process that started it;
//! - [`ports`]: free loopback ports;
//! - [`postgres`] (feature `postgres`): a throwaway PostgreSQL database;
//! - [`filter_config`]: the keygate filter's configuration and its Envoy
//!   HTTP-filter entry.
//!
//! Errors are `anyhow` errors in plain words: tests unwrap them, the tools
//! print them for the person at the terminal.

pub mod api;
pub mod filter_config;
pub mod ports;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod process;

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
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| anyhow::anyhow!("cannot build an HTTP client: {error}"))
}
