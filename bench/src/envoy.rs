//! Envoy configurations under test, rendered as JSON bootstraps, and the
//! Envoy processes that run them.
//!
//! Every configuration has the same listener and the same route: a
//! `direct_response` answering `200 ok`. Envoy then does all of its HTTP work
//! (codec, connection manager, filter chain, router) but no upstream, and no
//! upstream process competes for the two cores, so the only difference
//! between configurations is the auth filter placed before the router.

use crate::http::{self, Client};
use anyhow::{Context, Result};
use keygate_test_support::filter_config::{CONTROL_PLANE_CLUSTER, FilterConfig, wasm_http_filter};
use keygate_test_support::ports::try_free_port;
use keygate_test_support::process::ManagedProcess;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Envoy buffers an HTTP callout's whole response and drops any larger than
/// the runtime value `http.async_response_buffer_limit` (32 MiB by default).
/// An unpaged full snapshot passes that near 230k keys (~142 bytes a key);
/// the filter now fetches snapshots in pages of ~7 MB, so the raise to
/// 256 MiB is headroom only (it was needed before paging).
pub const ASYNC_RESPONSE_BUFFER_LIMIT: u64 = 256 * 1024 * 1024;
const AUTHZ_CLUSTER: &str = "authz";

/// The auth filter in front of the router.
#[derive(Clone)]
pub enum AuthFilter {
    /// (1) No filter: Envoy's floor.
    None,
    /// (2) The no-op Proxy-Wasm filter.
    NoopWasm { wasm: PathBuf },
    /// (3) Envoy's native `api_key_auth`, keys inline: `(token, client id)`.
    ApiKeyAuth { credentials: Vec<(String, String)> },
    /// (4) keygate's filter fed by the control plane at `control_plane_port`;
    /// `table_cache_millis` overrides the filter's default when set.
    Keygate {
        wasm: PathBuf,
        control_plane_port: u16,
        data_plane_token: String,
        table_cache_millis: Option<u64>,
    },
    /// The cost-probe filter doing the comma-separated `ops` per request.
    Probe { wasm: PathBuf, ops: String },
    /// (5) `ext_authz` over HTTP: each request asks `GET <check_path>` on the
    /// server at `port`, forwarding the `Authorization` header.
    ExtAuthz { port: u16, check_path: String },
}

fn static_cluster(name: &str, port: u16, timeout_s: u32) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}]
        },
        // Long polls and bursts of checks must not hit the default limits.
        "circuit_breakers": {"thresholds": [{"max_connections": 10000, "max_pending_requests": 10000, "max_requests": 10000}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": format!("{}s", timeout_s.max(60) + 30)},
                "explicit_http_config": {"http_protocol_options": {}}
            }
        }
    })
}

/// The keygate filter's plugin configuration: the production defaults, a
/// longer staleness limit (a busy bench box can delay a poll), and the VM
/// cache setting under test when given.
pub fn keygate_plugin_config(
    control_plane_port: u16,
    data_plane_token: &str,
    table_cache_millis: Option<u64>,
) -> String {
    FilterConfig {
        max_staleness_seconds: 60,
        table_cache_millis,
        ..FilterConfig::new(control_plane_port, data_plane_token)
    }
    .to_json()
}

/// Renders a complete bootstrap for one configuration.
pub fn render(filter: &AuthFilter, edge_port: u16, admin_port: u16) -> Value {
    let mut http_filters = Vec::new();
    let mut clusters = Vec::new();
    match filter {
        AuthFilter::None => {}
        AuthFilter::NoopWasm { wasm } => {
            http_filters.push(wasm_http_filter("noop", "", wasm, "{}"))
        }
        AuthFilter::Probe { wasm, ops } => {
            http_filters.push(wasm_http_filter("probe", "", wasm, ops))
        }
        AuthFilter::ApiKeyAuth { credentials } => {
            let creds: Vec<Value> = credentials
                .iter()
                .map(|(key, client)| json!({"key": key, "client": client}))
                .collect();
            http_filters.push(json!({
                "name": "envoy.filters.http.api_key_auth",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                    "credentials": creds,
                    // For `Authorization`, the filter takes the value after `Bearer `.
                    "key_sources": [{"header": "authorization"}]
                }
            }));
        }
        AuthFilter::Keygate {
            wasm,
            control_plane_port,
            data_plane_token,
            table_cache_millis,
        } => {
            let cfg =
                keygate_plugin_config(*control_plane_port, data_plane_token, *table_cache_millis);
            http_filters.push(wasm_http_filter("keygate", "", wasm, &cfg));
            clusters.push(static_cluster(
                CONTROL_PLANE_CLUSTER,
                *control_plane_port,
                20,
            ));
        }
        AuthFilter::ExtAuthz { port, check_path } => {
            http_filters.push(json!({
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "transport_api_version": "V3",
                    "http_service": {
                        "server_uri": {"uri": format!("http://127.0.0.1:{port}"), "cluster": AUTHZ_CLUSTER, "timeout": "2s"},
                        // The check always asks one fixed path, whatever the client's path.
                        "path_override": check_path
                    },
                    "allowed_headers": {"patterns": [{"exact": "authorization"}]},
                    "failure_mode_allow": false
                }
            }));
            clusters.push(static_cluster(AUTHZ_CLUSTER, *port, 2));
        }
    }
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let mut bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "edge",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": edge_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "edge",
                        "normalize_path": true,
                        "merge_slashes": true,
                        "route_config": {"virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
                        }]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    });
    if matches!(filter, AuthFilter::Keygate { .. }) {
        bootstrap["layered_runtime"] = json!({"layers": [{
            "name": "static",
            "static_layer": {"http.async_response_buffer_limit": ASYNC_RESPONSE_BUFFER_LIMIT}
        }]});
    }
    bootstrap
}

/// A running Envoy with one worker thread.
pub struct Envoy {
    pub name: String,
    pub edge_port: u16,
    pub admin_port: u16,
    pub started: Instant,
    process: ManagedProcess,
    pid: u32,
    log: PathBuf,
}

impl Envoy {
    /// Writes the bootstrap for `filter` into `dir` and starts Envoy on it
    /// (`--concurrency 1`). Does not wait for readiness.
    pub fn start(bin: &Path, dir: &Path, name: &str, filter: &AuthFilter) -> Result<Envoy> {
        Self::start_under(&[], bin, dir, name, filter)
    }

    /// As [`Envoy::start`], with Envoy run by `launcher` (a program and its
    /// arguments, such as valgrind; empty: Envoy itself).
    pub fn start_under(
        launcher: &[String],
        bin: &Path,
        dir: &Path,
        name: &str,
        filter: &AuthFilter,
    ) -> Result<Envoy> {
        let edge_port = try_free_port().context("no free port for Envoy")?;
        let admin_port = try_free_port().context("no free port for Envoy's admin")?;
        let config = dir.join(format!("envoy-{name}.json"));
        let file = std::fs::File::create(&config)
            .with_context(|| format!("writing {}", config.display()))?;
        serde_json::to_writer(
            std::io::BufWriter::new(file),
            &render(filter, edge_port, admin_port),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join(format!("envoy-{name}.log"));
        let _ = std::fs::remove_file(&log);
        let started = Instant::now();
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        command
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ])
            .arg("--log-path")
            .arg(&log);
        // Envoy's own log (`--log-path`) and anything it prints go to one file.
        let process = ManagedProcess::spawn(&format!("envoy {name}"), command, &log)?;
        let pid = process.pid().context("envoy exited at once")?;
        Ok(Envoy {
            name: name.to_owned(),
            edge_port,
            admin_port,
            started,
            process,
            pid,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.edge_port)
    }

    fn log_tail(&self) -> String {
        keygate_test_support::process::log_tail(&self.log, 15)
    }

    /// The message of the last warning or error line in Envoy's log.
    pub fn last_warning(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .rev()
            .find(|l| l.contains("][warning][") || l.contains("][error]["))
            .map(|l| l.rsplit("] ").next().unwrap_or(l).trim().to_owned())
    }

    /// Waits until the admin interface says `LIVE`; returns the time from spawn.
    pub async fn wait_ready(&mut self, client: &Client, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.exit_status() {
                anyhow::bail!(
                    "envoy `{}` exited ({status}) while starting; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
            if let Ok(r) = http::get(client, &url).await
                && r.status.is_success()
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "envoy `{}` not ready after {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Envoy's `/stats/prometheus` text.
    pub async fn prometheus(&self, client: &Client) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/stats/prometheus", self.admin_port);
        let r = http::get(client, &url).await?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    pub async fn stop(mut self) {
        self.process.kill();
    }
}
