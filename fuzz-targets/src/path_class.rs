//! Target `path_class`: the server name the filter decides a request on must
//! be the one Envoy routes it to.
//!
//! The input is a request target ([`envoy_path::request_target`]). The
//! model in [`envoy_path`] says what `:path` Envoy hands the filter (or that
//! Envoy refuses the request first) and which route it then picks; the
//! filter's [`classify`] runs on that `:path`. What must hold:
//! - a path the filter reads as server `s` routes to `s`'s route or to none;
//! - a path the filter lets through as "not protected" (`Other`, `/api/me`)
//!   never routes to an MCP server's route (that would skip the key check);
//! - `/api/me` is exactly what the `/api/` route serves as the filter's me path;
//! - on any string at all (a deployment without normalization), `classify`
//!   and `for_log` do not panic, and a logged path never shows an `ok1` segment.

use crate::envoy_path::{self, Normalized, Route};
use keygate_filter::path::{PathClass, classify, for_log};
use keygate_protocol::server_name::is_valid_server_name;

const PREFIXES: &[&str] = &["/mcp-connect/"];
const ME_PATH: &str = "/api/me";

/// What the filter decides on for one normalized `:path`, as a route would
/// name it: the server, `/api/me`, passed, or refused.
pub fn filter_reading(path: &str) -> PathClass<'_> {
    let prefixes: Vec<String> = PREFIXES.iter().map(|p| (*p).to_owned()).collect();
    classify(path, &prefixes, ME_PATH)
}

/// Panics when the filter's reading of `path` disagrees with Envoy's route.
pub fn assert_agrees(path: &str) {
    let route = match envoy_path::route(path) {
        // Operators configure routes for valid server names only.
        Route::McpServer(name) if !is_valid_server_name(name.as_bytes()) => Route::None,
        route => route,
    };
    let class = filter_reading(path);
    match (&class, &route) {
        (PathClass::Protected { server }, Route::McpServer(routed)) => assert_eq!(
            server, routed,
            "filter checks the key for {server:?}, Envoy routes {path:?} to {routed:?}"
        ),
        (PathClass::Protected { server }, Route::Api) => {
            panic!("filter checks {server:?}, Envoy routes {path:?} to the control plane")
        }
        (PathClass::Protected { .. }, Route::None) | (PathClass::Bad, _) => {}
        (PathClass::Me | PathClass::Other, Route::McpServer(routed)) => {
            panic!("filter passes {path:?} as {class:?}, Envoy routes it to MCP server {routed:?}")
        }
        (PathClass::Me, route) => assert_eq!(route, &Route::Api, "{path:?}"),
        (PathClass::Other, _) => {}
    }
}

pub fn check(data: &[u8]) {
    let target = envoy_path::request_target(data);
    if let Normalized::Path(path) = envoy_path::normalize(&target) {
        assert_agrees(&path);
        // Envoy's own output is stable under a second pass.
        assert_eq!(
            envoy_path::normalize(path.as_bytes()),
            Normalized::Path(path.clone()),
            "normalization is not idempotent"
        );
    }
    // Whatever reaches the filter unnormalized must not panic it either.
    let raw = String::from_utf8_lossy(data);
    let _ = filter_reading(&raw);
    let logged = for_log(&raw);
    assert!(logged.chars().count() <= 200, "logged path too long");
    for segment in logged.split('/') {
        assert!(
            !segment.to_ascii_lowercase().contains("ok1"),
            "a logged path shows {segment:?}"
        );
    }
}
