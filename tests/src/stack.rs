//! A whole keygate path for tests: control plane, MCP servers and Envoy with
//! the filter, wired together on fresh ports in one scratch directory.

use std::time::{Duration, Instant};

use crate::api::{Api, CreatedKey};
use crate::control_plane::{ControlPlane, ControlPlaneOptions};
use crate::dirs::TestDir;
use crate::edge::{Edge, EdgeResponse, WORKERS_AGREE_AFTER};
use crate::envoy::{Envoy, EnvoyConfig, FilterConfig, WaitFor, test_filter_config};
use crate::mcp_server::{McpServer, Tool};

/// One MCP server of a stack.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: &'static str,
    pub tool: Tool,
    /// Registered in the control plane at start. Envoy routes every server
    /// either way, so a server can be "added later" to the control plane only.
    pub registered: bool,
}

impl ServerSpec {
    pub fn registered(name: &'static str, tool: Tool) -> Self {
        Self {
            name,
            tool,
            registered: true,
        }
    }

    pub fn unregistered(name: &'static str, tool: Tool) -> Self {
        Self {
            name,
            tool,
            registered: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub servers: Vec<ServerSpec>,
    /// The filter's settings; the control plane's address and token are
    /// filled in when the stack starts.
    pub filter: FilterConfig,
    pub control_plane: ControlPlaneOptions,
}

impl Default for StackOptions {
    /// `alpha` (echo) and `beta` (time), both registered.
    fn default() -> Self {
        Self {
            servers: vec![
                ServerSpec::registered("alpha", Tool::Echo),
                ServerSpec::registered("beta", Tool::Time),
            ],
            filter: test_filter_config(0, "set-at-start"),
            control_plane: ControlPlaneOptions::default(),
        }
    }
}

/// Fields drop in order: Envoy first, the scratch directory last.
#[derive(Debug)]
pub struct Stack {
    pub envoy: Envoy,
    pub servers: Vec<McpServer>,
    pub control_plane: ControlPlane,
    pub config: EnvoyConfig,
    dir: TestDir,
}

impl Stack {
    /// Starts everything and waits until the filter has its first table.
    pub async fn start(label: &str, options: StackOptions) -> Self {
        let dir = TestDir::new(label);
        let control_plane =
            ControlPlane::start_with(dir.path(), options.control_plane.clone()).await;
        let servers: Vec<McpServer> = options
            .servers
            .iter()
            .map(|spec| McpServer::start(dir.path(), spec.name, spec.tool))
            .collect();
        let admin = control_plane.admin();
        for spec in options.servers.iter().filter(|s| s.registered) {
            admin.create_server(spec.name).await.unwrap();
        }
        let mut config = EnvoyConfig::new(
            control_plane.port(),
            control_plane.data_plane_token(),
            servers
                .iter()
                .map(|s| (s.name().to_owned(), s.port()))
                .collect(),
        );
        config.set_filter(&options.filter);
        let envoy = Envoy::start(dir.path(), &config, WaitFor::FirstSync).await;
        Self {
            envoy,
            servers,
            control_plane,
            config,
            dir,
        }
    }

    /// Starts a stack for several tests of one file (kept in a static):
    /// its directory is removed when the test binary exits, unless a test failed.
    pub async fn start_shared(label: &str, options: StackOptions) -> Self {
        let mut stack = Self::start(label, options).await;
        stack.dir.remove_at_exit();
        stack
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn edge(&self) -> Edge {
        Edge::new(self.envoy.listener_port())
    }

    /// Admin client talking to the control plane directly.
    pub fn admin(&self) -> Api {
        self.control_plane.admin()
    }

    /// Creates a user (unique name from `label`) with access to `servers`;
    /// returns its id.
    pub async fn user_with_access(&self, label: &str, servers: &[&str]) -> i64 {
        let admin = self.admin();
        let user_id = admin.create_user(&unique_name(label)).await.unwrap();
        if !servers.is_empty() {
            admin.grant_user(user_id, servers).await.unwrap();
        }
        user_id
    }

    /// Creates a key for `user_id` scoped to `servers` (no expiry) and waits
    /// until it opens `open` at the edge.
    pub async fn usable_key(&self, user_id: i64, servers: &[&str], open: &str) -> CreatedKey {
        let key = self
            .admin()
            .create_key_for(user_id, servers, None)
            .await
            .unwrap();
        self.wait_key_allowed(open, &key.key).await;
        key
    }

    /// Waits until `key` opens `server` at the edge (the filter got the key
    /// from the control plane's feed); returns the time that took.
    pub async fn wait_key_allowed(&self, server: &str, key: &str) -> Duration {
        let edge = self.edge();
        let start = Instant::now();
        loop {
            let response: EdgeResponse = edge.initialize(server, Some(key)).await;
            if response.status == 200 {
                let took = start.elapsed();
                // The other workers may still hold the table from before the
                // key for a few milliseconds.
                tokio::time::sleep(WORKERS_AGREE_AFTER).await;
                return took;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a new key did not open {server} within 10 s: {response:?}\n{}",
                self.log_tails(60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The whole text of every log file in the stack's directory.
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    text.push_str(&String::from_utf8_lossy(
                        &std::fs::read(&path).unwrap_or_default(),
                    ));
                }
            }
        }
        text
    }

    /// Tails of every process log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = vec![
            self.envoy.log_tail(lines),
            self.control_plane.log_tail(lines),
        ];
        out.extend(self.servers.iter().map(|s| s.log_tail(lines / 2)));
        out.join("\n")
    }

    /// Prints the logs if the current test panics while the guard lives;
    /// for stacks shared by several tests, which are never dropped.
    pub fn logs_on_failure(&self) -> LogsOnFailure<'_> {
        LogsOnFailure(self)
    }
}

pub struct LogsOnFailure<'a>(&'a Stack);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::dirs::note_test_failure();
            eprintln!(
                "logs of the shared stack in {}:\n{}",
                self.0.dir().display(),
                self.0.log_tails(60)
            );
        }
    }
}

pub use crate::api::unique_name;
