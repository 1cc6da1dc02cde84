//! The shipped `envoy/envoy.yaml` running for one test, with the header echo
//! ([`HeaderEcho`]) as its `echo` upstream (the literal port 9001), a real
//! MCP server as `time` (9002) and a real control plane (8081): to check
//! what the operator's config itself does at the edge (rejected header
//! names, stripped `x-envoy-*` headers, the access log).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::CreatedKey;
use crate::control_plane::ControlPlane;
use crate::dirs::TestDir;
use crate::edge::{Edge, WORKERS_AGREE_AFTER};
use crate::envoy::{Envoy, ShippedConfigPorts, WaitFor, render_shipped_config};
use crate::header_echo::HeaderEcho;
use crate::mcp_server::{McpServer, Tool};
use crate::ports::free_port;
use crate::stack::unique_name;

/// Fields drop in order: Envoy first, the scratch directory last.
#[derive(Debug)]
pub struct ShippedEdge {
    pub envoy: Envoy,
    pub echo: HeaderEcho,
    pub time: McpServer,
    pub control_plane: ControlPlane,
    dir: TestDir,
}

impl ShippedEdge {
    /// Renders the shipped config with `edit` applied to its text, starts
    /// everything and waits for the filter's first key table.
    pub async fn start_edited(label: &str, edit: impl FnOnce(String) -> String) -> Self {
        let dir = TestDir::new(label);
        let control_plane = ControlPlane::start(dir.path()).await;
        let echo = HeaderEcho::start(dir.path(), "echo");
        let time = McpServer::start(dir.path(), "time", Tool::Time);
        let admin = control_plane.admin();
        admin.create_server("echo").await.unwrap();
        admin.create_server("time").await.unwrap();
        let ports = ShippedConfigPorts {
            listener_port: free_port(),
            control_plane_port: control_plane.port(),
            echo_port: echo.port(),
            time_port: time.port(),
            admin_port: free_port(),
            data_plane_token: control_plane.data_plane_token().to_owned(),
        };
        let wasm = crate::env::required_file(crate::env::FILTER_WASM);
        let text = edit(render_shipped_config(&ports, &wasm));
        let envoy = Envoy::start_with_text(
            dir.path(),
            &text,
            "yaml",
            ports.listener_port,
            ports.admin_port,
            WaitFor::FirstSync,
        )
        .await;
        Self {
            envoy,
            echo,
            time,
            control_plane,
            dir,
        }
    }

    /// The shipped config as it is.
    pub async fn start(label: &str) -> Self {
        Self::start_edited(label, |text| text).await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn edge(&self) -> Edge {
        Edge::new(self.envoy.listener_port())
    }

    /// A new user with a key for `echo` that the edge already accepts.
    pub async fn echo_key(&self) -> (i64, CreatedKey) {
        let admin = self.control_plane.admin();
        let user = admin
            .create_user(&unique_name("shipped-edge"))
            .await
            .unwrap();
        admin.grant_user(user, &["echo"]).await.unwrap();
        let key = admin.create_key_for(user, &["echo"], None).await.unwrap();
        let edge = self.edge();
        let start = Instant::now();
        loop {
            let response = edge
                .get("/mcp-connect/echo/ready", Some(&key.key))
                .await
                .expect("GET through the edge");
            if response.status == 200 {
                tokio::time::sleep(WORKERS_AGREE_AFTER).await;
                return (user, key);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a new key did not open echo within 10 s: {response:?}\n{}",
                self.envoy.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Envoy's captured stdout and stderr (the access log goes to stdout).
    pub fn envoy_log_path(&self) -> PathBuf {
        self.envoy.log_path().to_owned()
    }

    /// The access log lines Envoy has written so far (`[time] "METHOD ...`).
    pub fn access_log_lines(&self) -> Vec<String> {
        let text = std::fs::read(self.envoy_log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter(|line| line.starts_with('[') && line.contains("] \""))
            .map(str::to_owned)
            .collect()
    }

    /// Logs of every process, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        [
            self.envoy.log_tail(lines),
            self.control_plane.log_tail(lines),
            self.echo.log_tail(lines / 2),
        ]
        .join("\n")
    }
}
