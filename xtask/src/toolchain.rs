//! Rust toolchain setup: the `wasm32-wasip1` target the filter builds for.

use std::process::Command;

use crate::workspace::{output_checked, run_checked};
use anyhow::Result;

pub const WASM_TARGET: &str = "wasm32-wasip1";

/// Adds the Wasm target with rustup when it is not installed yet.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = output_checked(
        Command::new("rustup").args(["target", "list", "--installed"]),
        "listing installed Rust targets with rustup (is rustup installed?)",
    )?;
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        println!("    {WASM_TARGET} already installed");
        return Ok(());
    }
    run_checked(
        Command::new("rustup").args(["target", "add", WASM_TARGET]),
        "adding the wasm32-wasip1 target with rustup",
    )
}
