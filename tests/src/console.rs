//! The web console's stack for browser tests: the shipped `envoy/envoy.yaml`
//! (so the console is at the edge's `/`, as in the demo) in front of the real
//! control plane, real `echo` and `time` MCP servers and a real OpenID
//! provider (`oidc-provider-mock`), and a runner for the Playwright scenarios
//! of `tests/python/console_browser.py` in headless Chromium.
//!
//! The control plane's `--public-url` is the edge's URL, so the console's
//! same-origin check, the OIDC redirect URI and the connection URLs it shows
//! all name the edge.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::control_plane::{ControlPlane, ControlPlaneOptions};
use crate::dirs::TestDir;
use crate::env;
use crate::envoy::{Envoy, ShippedConfigPorts, WaitFor, render_shipped_config};
use crate::mcp_server::{McpServer, Tool};
use crate::ports::free_port;
use crate::process::ManagedProcess;

/// The OpenID provider of the sign-in tests, shared with the control
/// plane's own tests.
const PROVIDER_SCRIPT: &str = "control-plane/tests/it/fixtures/oidc_provider.py";
/// The client id and secret the control plane presents to the provider
/// (which accepts any pair).
const CLIENT_ID: &str = "keygate-console";
const CLIENT_SECRET: &str = "console-secret";

/// Fields drop in order: Envoy first, the scratch directory last.
#[derive(Debug)]
pub struct ConsoleStack {
    pub envoy: Envoy,
    pub echo: McpServer,
    pub time: McpServer,
    pub control_plane: ControlPlane,
    pub provider: ManagedProcess,
    pub issuer: String,
    dir: TestDir,
}

impl ConsoleStack {
    /// Starts everything and waits for the filter's first key table; the
    /// directory is removed at exit unless a test failed.
    pub async fn start(label: &str) -> Self {
        let mut dir = TestDir::new(label);
        let (provider, issuer) = start_provider(dir.path());
        let listener_port = free_port();
        let public_url = format!("http://127.0.0.1:{listener_port}");
        let control_plane = ControlPlane::start_with(
            dir.path(),
            ControlPlaneOptions {
                extra_args: vec![
                    "--public-url".into(),
                    public_url,
                    "--oidc-issuer".into(),
                    issuer.clone(),
                    "--oidc-client-id".into(),
                    CLIENT_ID.into(),
                ],
                extra_env: vec![("KEYGATE_OIDC_CLIENT_SECRET".into(), CLIENT_SECRET.into())],
                ..ControlPlaneOptions::default()
            },
        )
        .await;
        let echo = McpServer::start(dir.path(), "echo", Tool::Echo);
        let time = McpServer::start(dir.path(), "time", Tool::Time);
        let admin = control_plane.admin();
        admin.create_server("echo").await.unwrap();
        admin.create_server("time").await.unwrap();
        let ports = ShippedConfigPorts {
            listener_port,
            control_plane_port: control_plane.port(),
            echo_port: echo.port(),
            time_port: time.port(),
            admin_port: free_port(),
            data_plane_token: control_plane.data_plane_token().to_owned(),
        };
        let wasm = env::required_file(env::FILTER_WASM);
        let text = render_shipped_config(&ports, &wasm);
        let envoy = Envoy::start_with_text(
            dir.path(),
            &text,
            "yaml",
            ports.listener_port,
            ports.admin_port,
            WaitFor::FirstSync,
        )
        .await;
        dir.remove_at_exit();
        Self {
            envoy,
            echo,
            time,
            control_plane,
            provider,
            issuer,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The edge's URL: the console is at its `/`.
    pub fn url(&self) -> String {
        self.envoy.url()
    }

    /// Runs one scenario of `console_browser.py` in headless Chromium and
    /// panics with its output (and where its failure screenshot is) unless it
    /// passed. Screenshots go to `target/e2e-console/<scenario>/`.
    pub fn run_scenario(&self, scenario: &str) {
        self.run_scenario_with(scenario, &[]);
    }

    pub fn run_scenario_with(&self, scenario: &str, extra_env: &[(&str, &Path)]) {
        let python = env::required_file(env::PYTHON);
        let chromium = env::required_file(env::CHROMIUM);
        let out = output_dir(scenario);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        let script = env::crate_dir().join("python/console_browser.py");
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(scenario)
            .env("KEYGATE_CHROMIUM", &chromium)
            .env("KEYGATE_CONSOLE_URL", self.url())
            .env("KEYGATE_ADMIN_TOKEN", self.control_plane.admin_token())
            .env("KEYGATE_CONSOLE_OUT", &out)
            .env("KEYGATE_OIDC_ISSUER", &self.issuer)
            // Playwright must never download a browser of its own.
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(self.dir());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("{stdout}");
        assert!(
            output.status.success() && stdout.contains(&format!("PASS {scenario}")),
            "browser scenario {scenario} failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
            output.status,
            out.display(),
            self.log_tails(40)
        );
    }

    pub fn log_tails(&self, lines: usize) -> String {
        [
            self.envoy.log_tail(lines),
            self.control_plane.log_tail(lines),
            self.provider.log_tail(lines / 2),
        ]
        .join("\n")
    }
}

/// `target/e2e-console/<scenario>`: where a scenario's failure screenshot goes.
pub fn output_dir(scenario: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env::workspace_dir().join("target"));
    let target = std::path::absolute(&target).unwrap_or(target);
    target.join("e2e-console").join(scenario)
}

/// Starts oidc-provider-mock on a free port; returns it and its issuer URL.
fn start_provider(dir: &Path) -> (ManagedProcess, String) {
    let python = env::required_file(env::PYTHON);
    let script = env::workspace_dir().join(PROVIDER_SCRIPT);
    assert!(
        script.is_file(),
        "the OpenID provider fixture {} is missing",
        script.display()
    );
    let mut command = Command::new(python);
    command.arg(&script).current_dir(dir);
    let log = dir.join("oidc-provider.log");
    let mut process =
        ManagedProcess::spawn("oidc-provider", command, &log).unwrap_or_else(|e| panic!("{e:#}"));
    process.wait_for_log("listening on", Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let port: u16 = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("listening on "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the OpenID provider printed no port:\n{text}"));
    (process, format!("http://127.0.0.1:{port}"))
}
