//! The real control plane as a child process of the bench, and its API
//! client (the shared one of `keygate-test-support`) with the admin token.

use anyhow::{Context, Result, bail};
use keygate_test_support::api::Api;
use keygate_test_support::ports::try_free_port;
use keygate_test_support::process::ManagedProcess;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
pub const DATA_PLANE_TOKEN: &str = "bench-data-plane-token-0123456789abcdef";

pub struct ControlPlane {
    pub port: u16,
    /// The API with the admin token (`with_token` for the data-plane one).
    pub api: Api,
    process: ManagedProcess,
    pid: u32,
}

impl ControlPlane {
    /// Starts `serve` on a free port with a SQLite database at `db_path`
    /// (created and migrated by the control plane when missing) and waits
    /// for `/healthz`.
    pub async fn start(bin: &Path, dir: &Path, name: &str, db_path: &Path) -> Result<ControlPlane> {
        let port = try_free_port().context("no free port for the control plane")?;
        let log = dir.join(format!("control-plane-{name}.log"));
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", db_path.display()))
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .arg("--data-plane-token")
            .arg(DATA_PLANE_TOKEN)
            // The fixtures give one user many keys (the edge and revocation
            // scenarios, key creations/s): no per-user cap here.
            .arg("--max-keys-per-user")
            .arg(u32::MAX.to_string())
            .env("RUST_LOG", "warn");
        let _ = std::fs::remove_file(&log);
        let process = ManagedProcess::spawn(&format!("control plane {name}"), command, &log)?;
        let pid = process.pid().context("the control plane exited at once")?;
        let api = Api::new(format!("http://127.0.0.1:{port}"), ADMIN_TOKEN)?;
        let mut cp = ControlPlane {
            port,
            api,
            process,
            pid,
        };
        cp.wait_healthy(Duration::from_secs(120)).await?;
        Ok(cp)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.exit_status() {
                bail!(
                    "the control plane exited ({status}) while starting;\n{}",
                    self.process.log_tail(15)
                );
            }
            if let Ok(answer) = self
                .api
                .call_as(
                    keygate_test_support::api::Method::GET,
                    "/healthz",
                    None,
                    None,
                )
                .await
                && answer.status.is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the control plane was not healthy after {timeout:?};\n{}",
                    self.process.log_tail(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self, path: &str) -> String {
        self.api.url(path)
    }

    pub async fn stop(mut self) {
        self.process.kill();
    }
}
