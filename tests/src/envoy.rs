//! Real Envoy 1.40 with the keygate filter, configured per test.
//!
//! [`EnvoyConfig`] renders a bootstrap (listener,
//! one route and cluster per MCP server with the `/mcp-connect/<name>/`
//! prefix rewritten to `/`, everything else to the control plane, the wasm
//! filter in front). [`render_shipped_config`] instead renders the repo's
//! `envoy/envoy.yaml` by replacing its fixed ports, token and wasm path.
//! Envoy runs with 2 workers and hot restart disabled (no shared-memory
//! base id to collide between parallel tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env;
use crate::ports::free_port;
use crate::process::ManagedProcess;
pub use keygate_test_support::filter_config::{
    CONTROL_PLANE_CLUSTER, FilterConfig, IdentityHeaders, wasm_http_filter,
};

/// The filter's configuration for tests: the production shape with short
/// intervals, keys also read from `x-api-key`, and the identity headers
/// spelled out. [`EnvoyConfig::new`] fills in the control plane's address
/// and token; tests change the intervals they need.
pub fn test_filter_config(control_plane_port: u16, data_plane_token: &str) -> FilterConfig {
    FilterConfig {
        feed_wait_seconds: 2,
        max_staleness_seconds: 30,
        usage_flush_seconds: 1,
        key_headers: vec!["authorization".into(), "x-api-key".into()],
        identity_headers: Some(IdentityHeaders::default()),
        ..FilterConfig::new(control_plane_port, data_plane_token)
    }
}

/// Everything a rendered Envoy bootstrap depends on.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub listener_port: u16,
    pub admin_port: u16,
    pub control_plane_port: u16,
    /// More control-plane replicas in the same cluster (round robin).
    pub extra_control_plane_ports: Vec<u16>,
    pub data_plane_token: String,
    /// `(server name, upstream port)`: one route `/mcp-connect/<name>/` each.
    pub upstreams: Vec<(String, u16)>,
    /// The filter's configuration; its control-plane address and token are
    /// this config's.
    pub filter: FilterConfig,
    /// Raw plugin configuration instead of the one built from `filter`
    /// (to test how an invalid one is handled).
    pub raw_filter_configuration: Option<String>,
}

impl EnvoyConfig {
    /// A config on fresh ports for the given control plane and upstreams.
    pub fn new(
        control_plane_port: u16,
        data_plane_token: &str,
        upstreams: Vec<(String, u16)>,
    ) -> Self {
        Self {
            listener_port: free_port(),
            admin_port: free_port(),
            control_plane_port,
            extra_control_plane_ports: Vec::new(),
            data_plane_token: data_plane_token.to_owned(),
            upstreams,
            filter: test_filter_config(control_plane_port, data_plane_token),
            raw_filter_configuration: None,
        }
    }

    /// Replaces the filter's settings with `filter`'s, keeping this
    /// config's control-plane address and token.
    pub fn set_filter(&mut self, filter: &FilterConfig) {
        self.filter = FilterConfig {
            control_plane_authority: self.filter.control_plane_authority.clone(),
            data_plane_token: self.filter.data_plane_token.clone(),
            ..filter.clone()
        };
    }

    /// The full bootstrap as JSON (Envoy reads JSON bootstraps too).
    pub fn render(&self, wasm: &Path) -> Value {
        let configuration = self
            .raw_filter_configuration
            .clone()
            .unwrap_or_else(|| self.filter.to_json());
        let mut routes: Vec<Value> = self
            .upstreams
            .iter()
            .map(|(name, _)| {
                json!({
                    "match": {"prefix": format!("/mcp-connect/{name}/")},
                    // timeout 0: MCP responses may stream (SSE) indefinitely.
                    "route": {"cluster": format!("mcp_{name}"), "prefix_rewrite": "/", "timeout": "0s"}
                })
            })
            .collect();
        routes.push(json!({
            "match": {"prefix": "/"},
            "route": {"cluster": CONTROL_PLANE_CLUSTER, "timeout": "30s"}
        }));

        let mut clusters: Vec<Value> = self
            .upstreams
            .iter()
            .map(|(name, port)| static_cluster(&format!("mcp_{name}"), &[*port]))
            .collect();
        let mut control_plane_ports = vec![self.control_plane_port];
        control_plane_ports.extend(&self.extra_control_plane_ports);
        clusters.push(static_cluster(CONTROL_PLANE_CLUSTER, &control_plane_ports));

        json!({
            "admin": {"address": socket(self.admin_port)},
            "static_resources": {
                "listeners": [{
                    "name": "keygate",
                    "address": socket(self.listener_port),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "keygate",
                            "codec_type": "AUTO",
                            "normalize_path": true,
                            "merge_slashes": true,
                            "route_config": {
                                "name": "keygate",
                                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
                            },
                            "http_filters": [
                                wasm_http_filter("keygate", "keygate", wasm, &configuration),
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                                }
                            ]
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn static_cluster(name: &str, ports: &[u16]) -> Value {
    let endpoints: Vec<Value> = ports
        .iter()
        .map(|port| json!({"endpoint": {"address": socket(*port)}}))
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": endpoints}]
        }
    })
}

/// Fixed literals of the shipped `envoy/envoy.yaml` and their per-test values.
#[derive(Debug, Clone)]
pub struct ShippedConfigPorts {
    pub listener_port: u16,
    pub control_plane_port: u16,
    pub echo_port: u16,
    pub time_port: u16,
    pub admin_port: u16,
    pub data_plane_token: String,
}

/// Path of the shipped demo config.
pub fn shipped_config_path() -> PathBuf {
    env::workspace_dir().join("envoy").join("envoy.yaml")
}

/// Renders `envoy/envoy.yaml` for one test: its fixed ports (8080 listener,
/// 8081 control plane, 9001 echo, 9002 time, 9901 admin), data-plane token
/// and wasm path are replaced.
pub fn render_shipped_config(ports: &ShippedConfigPorts, wasm: &Path) -> String {
    let path = shipped_config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read shipped Envoy config {}: {e}", path.display()));
    let mut out = text;
    for (literal, value) in [
        ("8080", ports.listener_port.to_string()),
        ("8081", ports.control_plane_port.to_string()),
        ("9001", ports.echo_port.to_string()),
        ("9002", ports.time_port.to_string()),
        ("9901", ports.admin_port.to_string()),
    ] {
        let (replaced, count) = replace_number(&out, literal, &value);
        assert!(
            count > 0,
            "{} no longer contains the literal port {literal}",
            path.display()
        );
        out = replaced;
    }
    let wasm_literal = "target/wasm32-wasip1/release/keygate_filter.wasm";
    assert!(
        out.contains(wasm_literal),
        "{} no longer contains the wasm path {wasm_literal}",
        path.display()
    );
    out = out.replace(wasm_literal, &wasm.display().to_string());
    let token_literal = "change-me-data-plane-token";
    assert!(
        out.contains(token_literal),
        "{} no longer contains the token {token_literal}",
        path.display()
    );
    out.replace(token_literal, &ports.data_plane_token)
}

/// Replaces `number` where it stands alone (not inside a longer number);
/// returns the new text and how many were replaced.
fn replace_number(text: &str, number: &str, value: &str) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut last = 0;
    for (at, _) in text.match_indices(number) {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + number.len()).copied();
        if before.is_some_and(|b| b.is_ascii_digit()) || after.is_some_and(|b| b.is_ascii_digit()) {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str(value);
        last = at + number.len();
        count += 1;
    }
    out.push_str(&text[last..]);
    (out, count)
}

/// What [`Envoy::start`] waits for before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// The admin interface's `/ready` answers 200.
    Ready,
    /// Ready, and the filter has a key table (an unknown key gets 401, not 503).
    FirstSync,
}

#[derive(Debug)]
pub struct Envoy {
    process: ManagedProcess,
    listener_port: u16,
    admin_port: u16,
    config_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `config` (written into `dir`) and waits as asked.
    pub async fn start(dir: &Path, config: &EnvoyConfig, wait: WaitFor) -> Self {
        let wasm = env::required_file(env::FILTER_WASM);
        let text = serde_json::to_string_pretty(&config.render(&wasm)).expect("render config");
        Self::start_with_text(
            dir,
            &text,
            "json",
            config.listener_port,
            config.admin_port,
            wait,
        )
        .await
    }

    /// Starts Envoy on an already rendered bootstrap (`extension`: `json` or `yaml`).
    pub async fn start_with_text(
        dir: &Path,
        config_text: &str,
        extension: &str,
        listener_port: u16,
        admin_port: u16,
        wait: WaitFor,
    ) -> Self {
        let config_path = dir.join(format!("envoy-{listener_port}.{extension}"));
        std::fs::write(&config_path, config_text)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let process = spawn_envoy(dir, &config_path, listener_port);
        let mut envoy = Self {
            process,
            listener_port,
            admin_port,
            config_path,
        };
        envoy.wait_ready(Duration::from_secs(60)).await;
        if wait == WaitFor::FirstSync {
            envoy.wait_first_sync(Duration::from_secs(30)).await;
        }
        envoy
    }

    /// Starts Envoy on `config` without waiting for anything: for configs
    /// that may make it exit.
    pub fn spawn(dir: &Path, config: &EnvoyConfig) -> Self {
        let wasm = env::required_file(env::FILTER_WASM);
        let text = serde_json::to_string_pretty(&config.render(&wasm)).expect("render config");
        let config_path = dir.join(format!("envoy-{}.json", config.listener_port));
        std::fs::write(&config_path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let process = spawn_envoy(dir, &config_path, config.listener_port);
        Self {
            process,
            listener_port: config.listener_port,
            admin_port: config.admin_port,
            config_path,
        }
    }

    /// Whether the process is still running (false once it exited).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Waits for the admin `/ready` (true) or the process exiting (false).
    pub async fn ready_or_exited(&mut self, timeout: Duration) -> bool {
        let http = crate::http_client();
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        let deadline = Instant::now() + timeout;
        loop {
            if !self.process.is_running() {
                return false;
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status() == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "envoy neither ready nor exited within {timeout:?}\n{}",
                self.process.log_tail(120)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let http = crate::http_client();
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            self.process.assert_running();
            assert!(
                Instant::now() < deadline,
                "envoy: admin /ready not 200 within {timeout:?}\n{}",
                self.process.log_tail(120)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a well-formed but unknown key is refused with 401 rather
    /// than 503: the filter then has a key table.
    pub async fn wait_first_sync(&mut self, timeout: Duration) {
        let edge = crate::edge::Edge::new(self.listener_port);
        let unknown = crate::keys::unknown_key();
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(response) = edge
                .get("/mcp-connect/keygate-probe/mcp", Some(&unknown))
                .await
            {
                if response.status == 401 {
                    return;
                }
                last = Some(response);
            }
            self.process.assert_running();
            assert!(
                Instant::now() < deadline,
                "envoy: the filter did not load a key table within {timeout:?} \
                 (last probe answer: {last:?})\n{}",
                self.process.log_tail(120)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }

    /// The process id (for its memory, in the soak).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The file holding Envoy's stdout and stderr (its access log included).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Base URL of the listener, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener_port)
    }

    /// The admin interface's `/stats/prometheus` text.
    pub async fn prometheus_stats(&self) -> String {
        let url = format!("http://127.0.0.1:{}/stats/prometheus", self.admin_port);
        crate::http_client()
            .get(url)
            .send()
            .await
            .expect("GET /stats/prometheus")
            .text()
            .await
            .expect("stats body")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }
}

/// Envoy with 2 workers and no hot restart (nothing shared between tests).
fn spawn_envoy(dir: &Path, config_path: &Path, listener_port: u16) -> ManagedProcess {
    let mut command = Command::new(env::required_file(env::ENVOY_BIN));
    command
        .arg("-c")
        .arg(config_path)
        .args(["--concurrency", "2", "--disable-hot-restart"])
        .args(["--log-level", "info"])
        .current_dir(dir);
    ManagedProcess::spawn(
        &format!("envoy-{listener_port}"),
        command,
        &dir.join(format!("envoy-{listener_port}.log")),
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The value of one metric in Envoy's Prometheus text (summed over label sets).
pub fn metric_value(stats: &str, name: &str) -> f64 {
    let values: Vec<f64> = stats
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        !values.is_empty(),
        "metric {name} missing from /stats/prometheus"
    );
    values.iter().sum()
}

/// Runs `envoy --mode validate -c <path>` and returns (success, output).
pub fn validate_config(path: &Path) -> (bool, String) {
    let output = Command::new(env::required_file(env::ENVOY_BIN))
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(path)
        .output()
        .expect("run envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
