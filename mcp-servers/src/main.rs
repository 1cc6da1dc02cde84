//! `keygate-mcp-server`: a small MCP server over Streamable HTTP, used by
//! keygate's demo and end-to-end tests as the upstream behind Envoy.
//!
//! One binary serves one tool set, chosen with `--tool echo|time`; every
//! server also has `whoami`, which reports the identity headers the edge set
//! and whether any client key leaked through. MCP is served at `/mcp`.

mod http;
mod tools;

use std::net::SocketAddr;

use clap::Parser;

use crate::tools::ToolSet;

/// Command line of the MCP server.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Small MCP server (echo or time) over Streamable HTTP"
)]
struct Args {
    /// Which tool this server offers besides `whoami`.
    #[arg(long, value_enum)]
    tool: ToolSet,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Server name reported in `initialize` and by `whoami`
    /// (defaults to the tool name).
    #[arg(long)]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Plain text when captured by xtask or tests, so `listening on` greps cleanly.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let name = args.name.unwrap_or_else(|| args.tool.as_str().to_owned());
    match http::serve(args.listen, args.tool, name).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("keygate-mcp-server failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
