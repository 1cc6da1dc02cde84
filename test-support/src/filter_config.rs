//! The keygate filter's plugin configuration as a typed value, and the Envoy
//! HTTP-filter entry that loads the filter with it. The tests and the bench
//! build the configuration here; a unit test parses it with the filter's own
//! `Config::from_json`, so a renamed or new required setting breaks this
//! crate's tests instead of an Envoy run.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

/// Name of the control-plane cluster (also used by the filter's callouts).
pub const CONTROL_PLANE_CLUSTER: &str = "keygate_control_plane";

/// The settings of `filter/src/config.rs`'s `Config`, serialized the way the
/// filter reads them. A setting left `None` takes the filter's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterConfig {
    pub control_plane_cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_authority: Option<String>,
    pub data_plane_token: String,
    pub feed_wait_seconds: u64,
    pub max_staleness_seconds: u64,
    pub usage_flush_seconds: u64,
    pub protected_path_prefixes: Vec<String>,
    pub me_path: String,
    pub key_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_headers: Option<IdentityHeaders>,
    pub strip_key: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_page_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_cache_millis: Option<u64>,
}

/// Header names the filter sets for the upstream on allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityHeaders {
    pub user_id: String,
    pub key_id: String,
    pub server: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            user_id: keygate_protocol::HEADER_USER_ID.to_owned(),
            key_id: keygate_protocol::HEADER_KEY_ID.to_owned(),
            server: keygate_protocol::HEADER_SERVER.to_owned(),
        }
    }
}

impl FilterConfig {
    /// The filter talking to one control plane at `127.0.0.1:<port>` through
    /// [`CONTROL_PLANE_CLUSTER`], protecting `/mcp-connect/`, reading keys
    /// from `Authorization` and stripping them; the intervals are the
    /// filter's production defaults.
    pub fn new(control_plane_port: u16, data_plane_token: &str) -> Self {
        Self {
            control_plane_cluster: CONTROL_PLANE_CLUSTER.to_owned(),
            control_plane_authority: Some(format!("127.0.0.1:{control_plane_port}")),
            data_plane_token: data_plane_token.to_owned(),
            feed_wait_seconds: 20,
            max_staleness_seconds: 30,
            usage_flush_seconds: 5,
            protected_path_prefixes: vec![keygate_protocol::MCP_CONNECT_PREFIX.to_owned()],
            me_path: "/api/me".to_owned(),
            key_headers: vec!["authorization".to_owned()],
            identity_headers: None,
            strip_key: true,
            snapshot_page_size: None,
            table_cache_millis: None,
        }
    }

    /// The JSON text Envoy hands the filter.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and lists always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `envoy.filters.http.wasm` entry of an HTTP connection manager that
/// runs the module at `wasm` (V8) with `configuration` as its plugin
/// configuration.
pub fn wasm_http_filter(name: &str, root_id: &str, wasm: &Path, configuration: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": root_id,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_filter::config::Config;

    fn parsed(config: &FilterConfig) -> Config {
        Config::from_json(config.to_json().as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {}", config.to_json()))
    }

    #[test]
    fn the_default_value_parses_as_the_filters_config() {
        let config = FilterConfig::new(8081, "token");
        let filter = parsed(&config);
        assert_eq!(filter.control_plane_cluster, CONTROL_PLANE_CLUSTER);
        assert_eq!(filter.control_plane_authority(), "127.0.0.1:8081");
        assert_eq!(filter.feed_wait_seconds, 20);
        assert_eq!(filter.max_staleness_seconds, 30);
        assert_eq!(filter.usage_flush_seconds, 5);
        assert_eq!(filter.protected_path_prefixes, ["/mcp-connect/"]);
        assert_eq!(filter.me_path, "/api/me");
        assert_eq!(filter.key_headers, ["authorization"]);
        assert!(filter.strip_key);
    }

    #[test]
    fn every_setting_reaches_the_filter() {
        // Every field set to a value other than the filter's default: a
        // setting the filter renamed or dropped fails `deny_unknown_fields`.
        let config = FilterConfig {
            feed_wait_seconds: 2,
            max_staleness_seconds: 40,
            usage_flush_seconds: 1,
            protected_path_prefixes: vec!["/mcp-connect/".into(), "/other/".into()],
            me_path: "/api/whoami".into(),
            key_headers: vec!["authorization".into(), "x-api-key".into()],
            identity_headers: Some(IdentityHeaders {
                user_id: "x-u".into(),
                key_id: "x-k".into(),
                server: "x-s".into(),
            }),
            strip_key: false,
            snapshot_page_size: Some(500),
            table_cache_millis: Some(0),
            ..FilterConfig::new(9, "token")
        };
        let filter = parsed(&config);
        assert_eq!(filter.feed_wait_seconds, 2);
        assert_eq!(filter.max_staleness_seconds, 40);
        assert_eq!(filter.usage_flush_seconds, 1);
        assert_eq!(filter.protected_path_prefixes, ["/mcp-connect/", "/other/"]);
        assert_eq!(filter.me_path, "/api/whoami");
        assert_eq!(filter.key_headers, ["authorization", "x-api-key"]);
        assert_eq!(filter.identity_headers.user_id, "x-u");
        assert_eq!(filter.identity_headers.key_id, "x-k");
        assert_eq!(filter.identity_headers.server, "x-s");
        assert!(!filter.strip_key);
        assert_eq!(filter.snapshot_page_size, 500);
        assert_eq!(filter.table_cache_millis, 0);
    }

    #[test]
    fn default_identity_headers_are_the_filters_defaults() {
        let config = FilterConfig {
            identity_headers: Some(IdentityHeaders::default()),
            ..FilterConfig::new(9, "token")
        };
        let with = parsed(&config);
        let without = parsed(&FilterConfig::new(9, "token"));
        assert_eq!(with.identity_headers, without.identity_headers);
    }

    #[test]
    fn the_wasm_entry_carries_the_configuration_as_a_string() {
        let config = FilterConfig::new(1, "t").to_json();
        let entry = wasm_http_filter("keygate", "keygate", Path::new("/f.wasm"), &config);
        let plugin = &entry["typed_config"]["config"];
        assert_eq!(plugin["configuration"]["value"], config);
        assert_eq!(plugin["vm_config"]["code"]["local"]["filename"], "/f.wasm");
        assert_eq!(plugin["root_id"], "keygate");
    }
}
