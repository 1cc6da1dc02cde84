//! Builds what the demo and the tests run: the release Wasm filter and the
//! debug binaries of the control plane and the MCP servers.

use crate::{
    step::step,
    toolchain::WASM_TARGET,
    workspace::{Workspace, run_checked},
};
use anyhow::{Result, anyhow};
use std::path::PathBuf;

/// Absolute paths of the built artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub filter_wasm: PathBuf,
    pub control_plane_bin: PathBuf,
    pub mcp_server_bin: PathBuf,
}

/// Builds the filter (release: it runs inside Envoy, where size and speed
/// matter) and the native binaries (debug: quicker to build, and fast enough
/// for loopback tests and the demo).
pub fn build(workspace: &Workspace) -> Result<Artifacts> {
    step("build the Wasm filter (release, wasm32-wasip1)", || {
        run_checked(
            workspace.cargo().args([
                "build",
                "-p",
                "keygate-filter",
                "--target",
                WASM_TARGET,
                "--release",
            ]),
            "building the Wasm filter",
        )
    })?;
    step("build the control plane and the MCP servers", || {
        run_checked(
            workspace.cargo().args([
                "build",
                "-p",
                "keygate-control-plane",
                "-p",
                "keygate-mcp-servers",
            ]),
            "building the control plane and the MCP servers",
        )
    })?;
    let artifacts = Artifacts {
        filter_wasm: workspace.filter_wasm(),
        control_plane_bin: workspace.debug_bin("keygate-control-plane"),
        mcp_server_bin: workspace.debug_bin("keygate-mcp-server"),
    };
    for path in [
        &artifacts.filter_wasm,
        &artifacts.control_plane_bin,
        &artifacts.mcp_server_bin,
    ] {
        if !path.is_file() {
            return Err(anyhow!(
                "the build finished but {} is missing",
                path.display()
            ));
        }
    }
    Ok(artifacts)
}
