//! The real MCP servers (`keygate-mcp-server`) used as Envoy's upstreams.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::env;
use crate::ports::free_port;
use crate::process::ManagedProcess;

/// Which tool a server offers besides `whoami`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Echo,
    Time,
}

impl Tool {
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Echo => "echo",
            Tool::Time => "time",
        }
    }
}

#[derive(Debug)]
pub struct McpServer {
    process: ManagedProcess,
    name: String,
    tool: Tool,
    port: u16,
}

impl McpServer {
    /// Starts a server named `name` offering `tool` (and `whoami`), logging
    /// into `dir`, and waits for its `listening on` line.
    pub fn start(dir: &Path, name: &str, tool: Tool) -> Self {
        let port = free_port();
        let mut command = Command::new(env::required_file(env::MCP_SERVER_BIN));
        command
            .arg("--tool")
            .arg(tool.as_str())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--name")
            .arg(name)
            .env("RUST_LOG", "info");
        let mut process = ManagedProcess::spawn(
            &format!("mcp-server-{name}"),
            command,
            &dir.join(format!("mcp-{name}.log")),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        process.wait_for_log("listening on", Duration::from_secs(30));
        Self {
            process,
            name: name.to_owned(),
            tool,
            port,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tool(&self) -> Tool {
        self.tool
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
