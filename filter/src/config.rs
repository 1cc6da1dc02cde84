//! The plugin configuration (JSON, camelCase), validated once in
//! `on_configure` so the request path never meets a half-valid setting.
//!
//! A setting is one field of [`Config`]: its name, type, default and doc
//! comment in one place, plus a rule in `Config::validate` if it needs one.

use keygate_protocol::feed::{MAX_PAGE_SIZE, MAX_WAIT_SECONDS, PageSize, WaitSeconds};
use keygate_protocol::{HEADER_KEY_ID, HEADER_SERVER, HEADER_USER_ID, MCP_CONNECT_PREFIX};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_inline_default::serde_inline_default;
use std::fmt;

/// Longest a VM may keep its decoded view of the key table.
pub const MAX_TABLE_CACHE_MILLIS: u64 = 1_000;

/// A validated configuration, read straight from the operator's JSON. Its
/// `Debug` never shows the data-plane token (held in a [`SecretString`]).
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The Envoy cluster that reaches the control plane (required).
    pub control_plane_cluster: String,
    /// `:authority` of calls to the control plane; the cluster name when
    /// unset (see [`Config::control_plane_authority`]).
    #[serde(default)]
    control_plane_authority: Option<String>,
    /// Bearer token of the control plane's data-plane endpoints (required).
    pub data_plane_token: SecretString,
    /// How long a key-table long poll waits for a change (at most the
    /// control plane's [`MAX_WAIT_SECONDS`]).
    #[serde_inline_default(20)]
    pub feed_wait_seconds: u64,
    /// A table older than this fails closed (503).
    #[serde_inline_default(30)]
    pub max_staleness_seconds: u64,
    /// How often last-use times are posted at most.
    #[serde_inline_default(5)]
    pub usage_flush_seconds: u64,
    /// Paths under which `<prefix><server>/…` needs a key for `<server>`.
    #[serde_inline_default(vec![MCP_CONNECT_PREFIX.to_owned()])]
    pub protected_path_prefixes: Vec<String>,
    /// The control plane's "who am I" path, where a key may also be used.
    #[serde_inline_default("/api/me".to_owned())]
    pub me_path: String,
    /// Lowercase header names; `authorization` is read as `Bearer <key>`,
    /// any other as the bare key.
    #[serde_inline_default(vec!["authorization".to_owned()])]
    pub key_headers: Vec<String>,
    /// Header names the filter sets for the upstream on allow.
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    /// Remove the key headers before the upstream on allow.
    #[serde_inline_default(true)]
    pub strip_key: bool,
    /// Keys per page of a full snapshot, and of a delta naming more keys
    /// (`limit=`); by default the largest page the control plane serves.
    #[serde_inline_default(MAX_PAGE_SIZE)]
    pub snapshot_page_size: u32,
    /// How long each VM serves requests from its decoded view of the table
    /// before checking the shared table again; 0 checks on every request.
    #[serde_inline_default(10)]
    pub table_cache_millis: u64,
}

/// Header names the filter sets for the upstream on allow (lowercase once
/// validated).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub user_id: String,
    pub key_id: String,
    pub server: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            user_id: HEADER_USER_ID.to_owned(),
            key_id: HEADER_KEY_ID.to_owned(),
            server: HEADER_SERVER.to_owned(),
        }
    }
}

/// Why a configuration was refused. Never contains the data-plane token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid keygate filter configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A lowercase HTTP header name (RFC 9110 token characters).
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// A value that can travel in a header: visible ASCII and spaces, no CR/LF.
fn is_header_value(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// An absolute path made of plain characters only, so that matching it
/// byte for byte against `:path` is exact.
fn is_plain_path(s: &str) -> bool {
    s.starts_with('/')
        && !s.contains("//")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && !s.split('/').any(|seg| seg == "." || seg == "..")
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json quotes offending *values* in type errors ("invalid
            // type: integer `123`"), which could be the token; only messages
            // that name fields are passed on.
            let msg = e.to_string();
            if ["unknown field", "missing field", "duplicate field"]
                .iter()
                .any(|m| msg.starts_with(m))
            {
                err(msg)
            } else {
                err(format!(
                    "not valid JSON of the expected shape (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            }
        })?;
        config.validate()
    }

    /// `:authority` of calls to the control plane.
    pub fn control_plane_authority(&self) -> &str {
        self.control_plane_authority
            .as_deref()
            .unwrap_or(&self.control_plane_cluster)
    }

    /// The rules settings must meet, and header names made lowercase.
    fn validate(mut self) -> Result<Self, ConfigError> {
        if !is_header_value(&self.control_plane_cluster) {
            return Err(err("controlPlaneCluster must be a non-empty cluster name"));
        }
        let authority = self.control_plane_authority();
        if !is_header_value(authority) || authority.contains(' ') {
            return Err(err("controlPlaneAuthority must be a host[:port]"));
        }
        if !is_header_value(self.data_plane_token.expose_secret()) {
            return Err(err(
                "dataPlaneToken must be non-empty printable ASCII (value not shown)",
            ));
        }
        if WaitSeconds::new(self.feed_wait_seconds).is_err() {
            return Err(err(format!(
                "feedWaitSeconds must be between 0 and {MAX_WAIT_SECONDS}"
            )));
        }
        // An idle but healthy feed refreshes the table once per long poll, so
        // the wait must be shorter than the staleness limit or a quiet
        // control plane would look dead.
        if self.max_staleness_seconds <= self.feed_wait_seconds {
            return Err(err(
                "maxStalenessSeconds must be greater than feedWaitSeconds",
            ));
        }
        if PageSize::new(self.snapshot_page_size).is_err() {
            return Err(err(format!(
                "snapshotPageSize must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        if self.table_cache_millis > MAX_TABLE_CACHE_MILLIS {
            return Err(err("tableCacheMillis must be between 0 and 1000"));
        }
        if self.usage_flush_seconds == 0 {
            return Err(err("usageFlushSeconds must be at least 1"));
        }
        if self.protected_path_prefixes.is_empty() {
            return Err(err("protectedPathPrefixes must not be empty"));
        }
        for p in &self.protected_path_prefixes {
            if !is_plain_path(p) || !p.ends_with('/') || p.len() < 3 {
                return Err(err(format!(
                    "protectedPathPrefixes entry {p:?} must look like \"/name/\" (plain characters, ending in '/')"
                )));
            }
            if p.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(err(format!(
                    "protectedPathPrefixes entry {p:?} must be lowercase"
                )));
            }
        }
        if !is_plain_path(&self.me_path) {
            return Err(err("mePath must be a plain absolute path"));
        }
        if self.key_headers.is_empty() {
            return Err(err("keyHeaders must not be empty"));
        }
        for h in &mut self.key_headers {
            h.make_ascii_lowercase();
            if !is_header_name(h) || h.starts_with(':') {
                return Err(err(format!("keyHeaders entry {h:?} is not a header name")));
            }
        }
        let ids = &mut self.identity_headers;
        for h in [&mut ids.user_id, &mut ids.key_id, &mut ids.server] {
            h.make_ascii_lowercase();
        }
        let names = [&ids.user_id, &ids.key_id, &ids.server];
        for h in names {
            if !is_header_name(h) {
                return Err(err(format!(
                    "identityHeaders entry {h:?} is not a header name"
                )));
            }
            if self.key_headers.contains(h) {
                return Err(err(format!(
                    "identityHeaders entry {h:?} is also a key header"
                )));
            }
        }
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            return Err(err("identityHeaders names must differ"));
        }
        Ok(self)
    }

    /// True for headers a client may never send: the `x-keygate-*` family and
    /// the configured identity headers, whatever they are named, in any case
    /// and with `_` read as `-`: upstreams that fold `_` into `-` (CGI, WSGI,
    /// several frameworks) read `x_keygate_user_id` as `x-keygate-user-id`.
    /// Runs for every header of every request, so it compares without
    /// allocating.
    pub fn is_reserved_header(&self, name: impl AsRef<[u8]>) -> bool {
        let name = name.as_ref();
        let prefix = keygate_protocol::IDENTITY_HEADER_PREFIX.as_bytes();
        let ids = &self.identity_headers;
        name.get(..prefix.len())
            .is_some_and(|p| same_header_name(p, prefix))
            || [&ids.user_id, &ids.key_id, &ids.server]
                .iter()
                .any(|h| same_header_name(name, h.as_bytes()))
    }
}

/// Header names that are equal once ASCII case is ignored and `_` is read as `-`.
fn same_header_name(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"controlPlaneCluster":"cp","dataPlaneToken":"s3cr3t-token"}"#;

    #[test]
    fn minimal_config_gets_contract_defaults() {
        let c = Config::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.control_plane_cluster, "cp");
        assert_eq!(c.control_plane_authority(), "cp");
        assert_eq!(c.feed_wait_seconds, 20);
        assert_eq!(c.max_staleness_seconds, 30);
        assert_eq!(c.usage_flush_seconds, 5);
        assert_eq!(c.protected_path_prefixes, vec!["/mcp-connect/".to_owned()]);
        assert_eq!(c.me_path, "/api/me");
        assert_eq!(c.key_headers, vec!["authorization".to_owned()]);
        assert_eq!(c.identity_headers.user_id, "x-keygate-user-id");
        assert_eq!(c.identity_headers.key_id, "x-keygate-key-id");
        assert_eq!(c.identity_headers.server, "x-keygate-server");
        assert!(c.strip_key);
        assert_eq!(c.snapshot_page_size, 50_000);
        assert_eq!(c.table_cache_millis, 10);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::from_json(br#"{"controlPlaneCluster":"cp"}"#).unwrap_err();
        assert!(e.to_string().contains("dataPlaneToken"), "{e}");
        let e =
            Config::from_json(br#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","bogus":1}"#)
                .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn full_config_is_read() {
        let json = r#"{
            "controlPlaneCluster": "keygate_control_plane",
            "controlPlaneAuthority": "127.0.0.1:8081",
            "dataPlaneToken": "t",
            "feedWaitSeconds": 5,
            "maxStalenessSeconds": 10,
            "usageFlushSeconds": 2,
            "protectedPathPrefixes": ["/mcp-connect/", "/mcp2/"],
            "mePath": "/api/me",
            "keyHeaders": ["Authorization", "x-api-key"],
            "identityHeaders": {"userId": "x-user", "keyId": "x-keygate-k", "server": "x-keygate-s"},
            "stripKey": false,
            "snapshotPageSize": 500,
            "tableCacheMillis": 0
        }"#;
        let c = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.control_plane_authority(), "127.0.0.1:8081");
        assert_eq!(c.key_headers, vec!["authorization", "x-api-key"]);
        assert_eq!(c.identity_headers.user_id, "x-user");
        assert!(!c.strip_key);
        assert_eq!(c.snapshot_page_size, 500);
        assert_eq!(c.table_cache_millis, 0);
        assert!(c.is_reserved_header("X-User"));
        assert!(c.is_reserved_header("x-keygate-anything"));
        assert!(!c.is_reserved_header("x-other"));
    }

    #[test]
    fn reserved_names_match_with_underscores_read_as_dashes() {
        // Upstreams that fold `_` into `-` (CGI, WSGI, several frameworks)
        // would read these as the identity headers.
        let json = r#"{"controlPlaneCluster":"cp","dataPlaneToken":"t","identityHeaders":{"userId":"x-user"}}"#;
        let c = Config::from_json(json.as_bytes()).unwrap();
        for name in [
            "x_keygate_user_id",
            "X_Keygate-Key_Id",
            "x-keygate_server",
            "X_KEYGATE_ANYTHING",
            "x_keygate_",
            "x_user",
            "X_User",
        ] {
            assert!(c.is_reserved_header(name), "{name} must be reserved");
        }
        for name in [
            "x_other",
            "x_keygate",
            "x__keygate_user_id",
            "x_user_",
            "xuser",
            "",
        ] {
            assert!(!c.is_reserved_header(name), "{name} must not be reserved");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Config::from_json(MINIMAL.as_bytes()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("controlPlaneCluster") || shown.contains("control_plane_cluster"));
    }

    #[test]
    fn invalid_configs_are_refused_without_leaking_the_token() {
        let cases = [
            "",
            "{}",
            "[]",
            r#"{"controlPlaneCluster":"cp"}"#,
            r#"{"dataPlaneToken":"SECRETVALUE"}"#,
            r#"{"controlPlaneCluster":"","dataPlaneToken":"SECRETVALUE"}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":""}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRET\nVALUE"}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","unknown":1}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","feedWaitSeconds":61,"maxStalenessSeconds":90}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","feedWaitSeconds":30,"maxStalenessSeconds":30}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","usageFlushSeconds":0}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","protectedPathPrefixes":[]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","protectedPathPrefixes":["/mcp-connect"]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","protectedPathPrefixes":["/MCP/"]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","protectedPathPrefixes":["/a/../b/"]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","protectedPathPrefixes":["/a%2f/"]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","mePath":"api/me"}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","keyHeaders":[]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","keyHeaders":["bad header"]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","identityHeaders":{"userId":"x-a","keyId":"x-a"}}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","identityHeaders":{"userId":"authorization"}}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","identityHeaders":{"bogus":"x"}}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","stripKey":"yes"}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":12345678}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","snapshotPageSize":0}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","snapshotPageSize":50001}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","tableCacheMillis":1001}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":["SECRETVALUE"]}"#,
            r#"{"controlPlaneCluster":"cp","dataPlaneToken":"SECRETVALUE","dataPlaneToken":"SECRETVALUE"}"#,
        ];
        for json in cases {
            let e = Config::from_json(json.as_bytes()).expect_err(json);
            let msg = e.to_string();
            assert!(
                msg.starts_with("invalid keygate filter configuration"),
                "{msg}"
            );
            assert!(!msg.contains("SECRET"), "token leaked: {msg}");
            assert!(!msg.contains("12345678"), "token leaked: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }
}
