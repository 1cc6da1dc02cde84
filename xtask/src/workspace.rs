//! Where things are: the repository root, the Cargo target directory, and
//! how to run Cargo and other tools with a clear error when they fail.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow};

/// Paths of the checkout xtask runs in.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Workspace {
    /// The workspace this xtask binary was built from. The target directory
    /// follows `CARGO_TARGET_DIR` when set (child Cargo runs inherit it), so
    /// artifact paths always match where Cargo actually put them.
    pub fn locate() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("xtask crate has no parent directory"))?
            .to_path_buf();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir()
                        .context("reading the current directory")?
                        .join(dir)
                }
            }
            _ => root.join("target"),
        };
        Ok(Self { root, target_dir })
    }

    /// A `cargo` command run from the repository root, using the same Cargo
    /// that started xtask.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(&self.root);
        command
    }

    /// Release Wasm filter built by `cargo build -p keygate-filter --target wasm32-wasip1 --release`.
    pub fn filter_wasm(&self) -> PathBuf {
        self.target_dir
            .join("wasm32-wasip1/release/keygate_filter.wasm")
    }

    /// A binary of the debug profile.
    pub fn debug_bin(&self, name: &str) -> PathBuf {
        self.target_dir.join("debug").join(name)
    }

    /// Scratch directory of the demo: database, rendered Envoy config, logs.
    pub fn demo_dir(&self) -> PathBuf {
        self.target_dir.join("demo")
    }
}

/// Runs a command to completion, inheriting the terminal so its own
/// progress shows; a non-zero exit becomes a plain-words failure.
pub fn run_checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start `{}` ({what})", program_name(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(anyhow!("{what} failed ({status})"))
    }
}

/// Runs a command and returns its standard output; failures include stderr.
pub fn output_checked(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("could not start `{}` ({what})", program_name(command)))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(anyhow!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

fn program_name(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}
