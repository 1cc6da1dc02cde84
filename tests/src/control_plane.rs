//! The real control plane (`keygate-control-plane serve`) on a free port,
//! with its own SQLite database and tokens; it can be stopped and started
//! again on the same port and database.

use std::path::PathBuf;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::env;
use crate::ports::free_port;
use crate::process::ManagedProcess;

/// A token that is unique per call and per test binary run.
pub use crate::api::unique_name as unique_token;

/// How to start a control plane; the default is a fresh SQLite database and
/// fresh tokens. Replicas share a PostgreSQL URL and the tokens.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    /// `postgres://…`; `None`: SQLite in the test directory.
    pub database_url: Option<String>,
    pub admin_token: Option<String>,
    pub data_plane_token: Option<String>,
    /// More `serve` flags (e.g. `--feed-log-retention 1`).
    pub extra_args: Vec<String>,
    /// More environment variables (settings read only from the environment,
    /// such as `KEYGATE_OIDC_CLIENT_SECRET`).
    pub extra_env: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct ControlPlane {
    process: Option<ManagedProcess>,
    port: u16,
    database_url: String,
    work_dir: PathBuf,
    log_path: PathBuf,
    admin_token: String,
    data_plane_token: String,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl ControlPlane {
    /// Starts a control plane whose database and log live in `dir`, and
    /// waits until `/healthz` answers 200.
    pub async fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, ControlPlaneOptions::default()).await
    }

    /// Starts a control plane as `options` say (see [`ControlPlaneOptions`]).
    pub async fn start_with(dir: &std::path::Path, options: ControlPlaneOptions) -> Self {
        let port = free_port();
        let database_url = options
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("keygate.db").display()));
        let mut control_plane = Self {
            process: None,
            port,
            database_url,
            work_dir: dir.to_owned(),
            log_path: dir.join(format!("control-plane-{port}.log")),
            admin_token: options.admin_token.unwrap_or_else(|| unique_token("admin")),
            data_plane_token: options
                .data_plane_token
                .unwrap_or_else(|| unique_token("data-plane")),
            extra_args: options.extra_args,
            extra_env: options.extra_env,
        };
        control_plane.restart().await;
        control_plane
    }

    /// Kills the control plane (like a crash). Envoy keeps its last table.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again (after [`stop`](Self::stop)) on the same port and database.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "control plane is already running");
        let bin = env::required_file(env::CONTROL_PLANE_BIN);
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--admin-token")
            .arg(&self.admin_token)
            .arg("--data-plane-token")
            .arg(&self.data_plane_token)
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .current_dir(&self.work_dir);
        let name = format!("control-plane-{}", self.port);
        let process = ManagedProcess::spawn(&name, command, &self.log_path)
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.process = Some(process);
        self.wait_healthy(Duration::from_secs(30)).await;
    }

    async fn wait_healthy(&mut self, timeout: Duration) {
        let http = crate::http_client();
        let url = format!("{}/healthz", self.url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            if let Some(process) = self.process.as_mut() {
                process.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "control plane: GET /healthz not 200 within {timeout:?}\n{}",
                self.log_tail(80)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while it runs (for its memory, in the soak).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ManagedProcess::pid)
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn data_plane_token(&self) -> &str {
        &self.data_plane_token
    }

    /// Client of the user and admin APIs, authenticated with the admin token,
    /// talking to the control plane directly (not through Envoy).
    pub fn admin(&self) -> Api {
        Api::with_client(self.url(), self.admin_token.clone(), crate::http_client())
    }

    /// Moves key `key_id`'s creation and last use `seconds` into the past in
    /// the database, as if it had been made and used that much earlier. The
    /// control plane runs on the real clock (no flag changes its time), so
    /// this is how an end-to-end test shows its unused-key sweep an old key.
    pub async fn backdate_key(&self, key_id: i64, seconds: i64) {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.database_url));
        let done = sqlx::query(
            "UPDATE api_keys SET created_at = created_at - $1, \
             last_used_at = last_used_at - $1 WHERE id = $2",
        )
        .bind(seconds)
        .bind(key_id)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("backdate key {key_id}: {e}"));
        assert_eq!(done.rows_affected(), 1, "no key {key_id} to backdate");
        let _ = conn.close().await;
    }

    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "----- control-plane ({}) -----\n{}",
            self.log_path.display(),
            crate::process::log_tail(&self.log_path, lines)
        )
    }
}
