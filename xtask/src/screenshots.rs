//! `cargo xtask screenshots`: the README's console pictures in `docs/`,
//! taken by the browser test (`tests/tests/console.rs`, scenario
//! `screenshots`) in headless Chromium against a real stack, never drawn by
//! hand.

use anyhow::Result;

use crate::{
    artifacts, browser,
    step::step,
    venv,
    workspace::{Workspace, run_checked},
};

pub fn run() -> Result<()> {
    let workspace = Workspace::locate()?;
    let venv = venv::prepare(&workspace)?;
    let browser = step(
        "Chromium and Playwright for the console's browser tests",
        || browser::prepare(&workspace, &venv),
    )?;
    let artifacts = artifacts::build(&workspace)?;
    let docs = workspace.root.join("docs");
    step("take the console screenshots into docs/", || {
        let mut command = workspace.cargo();
        command
            .args(["test", "-p", "keygate-e2e", "--test", "console", "--"])
            .args(["--exact", "screenshots", "--nocapture"])
            .env("KEYGATE_SCREENSHOTS", &docs)
            .env("KEYGATE_ENVOY_BIN", &venv.envoy)
            .env("KEYGATE_PYTHON", &venv.python)
            .env("KEYGATE_FILTER_WASM", &artifacts.filter_wasm)
            .env("KEYGATE_CONTROL_PLANE_BIN", &artifacts.control_plane_bin)
            .env("KEYGATE_MCP_SERVER_BIN", &artifacts.mcp_server_bin);
        browser.set_env(&mut command);
        run_checked(&mut command, "the screenshots browser test")
    })?;
    println!("Screenshots written to {}", docs.display());
    Ok(())
}
