//! The real control plane as a child process, and the admin-API calls the
//! bench makes against it (contract 1 and 3 of the shared brief).

use crate::error::{Context, Error, Result};
use crate::fail;
use crate::http::{self, Client};
use hyper::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
pub const DATA_PLANE_TOKEN: &str = "bench-data-plane-token-0123456789abcdef";

pub struct ControlPlane {
    pub port: u16,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    client: Client,
}

/// A full snapshot of the key-table feed as the edge would fetch it.
pub struct Snapshot {
    pub version: u64,
    pub keys: usize,
    pub bytes: usize,
    pub elapsed: Duration,
}

impl ControlPlane {
    /// Starts `serve` on a free port with a SQLite database at `db_path`
    /// (created and migrated by the control plane when missing) and waits
    /// for `/healthz`.
    pub async fn start(bin: &Path, dir: &Path, name: &str, db_path: &Path) -> Result<ControlPlane> {
        let port = crate::envoy::free_port()?;
        let log = dir.join(format!("control-plane-{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin)
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
            .env("RUST_LOG", "warn")
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .context(|| "control plane exited at once".to_owned())?;
        let mut cp = ControlPlane {
            port,
            child,
            pid,
            log,
            client: http::client(),
        };
        cp.wait_healthy(Duration::from_secs(120)).await?;
        Ok(cp)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                fail!(
                    "control plane exited ({status}) while starting; log {}:\n{}",
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if let Ok(r) = http::get(&self.client, &self.url("/healthz")).await
                && r.status.is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                fail!(
                    "control plane not healthy after {timeout:?}; log {}:\n{}",
                    self.log.display(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// An admin call that must succeed; returns the JSON body (`null` for 204).
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes());
        let r = http::send(
            &self.client,
            method.clone(),
            &self.url(path),
            &[http::bearer(ADMIN_TOKEN)],
            body,
            Duration::from_secs(30),
        )
        .await?;
        if !r.status.is_success() {
            fail!(
                "{method} {path} → {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        if r.body.is_empty() {
            Ok(Value::Null)
        } else {
            r.json()
        }
    }

    pub async fn create_user(&self, username: &str) -> Result<i64> {
        let v = self
            .admin(
                Method::POST,
                "/api/users",
                Some(json!({"username": username, "role": "user"})),
            )
            .await?;
        id_of(&v)
    }

    pub async fn create_server(&self, name: &str) -> Result<()> {
        self.admin(
            Method::POST,
            "/api/mcp-servers",
            Some(json!({"name": name})),
        )
        .await?;
        Ok(())
    }

    /// An access rule opening `servers` to one user; returns the rule id.
    pub async fn create_rule(&self, name: &str, servers: &[&str], user_id: i64) -> Result<i64> {
        let v = self
            .admin(
                Method::POST,
                "/api/access-rules",
                Some(json!({"name": name, "mcpServerIds": servers, "subjects": [format!("user:{user_id}")]})),
            )
            .await?;
        id_of(&v)
    }

    pub async fn delete_rule(&self, id: i64) -> Result<()> {
        self.admin(Method::DELETE, &format!("/api/access-rules/{id}"), None)
            .await?;
        Ok(())
    }

    /// Creates a key for `user_id` through the admin API; returns `(id, key)`.
    pub async fn create_key(
        &self,
        user_id: i64,
        name: &str,
        servers: &[&str],
    ) -> Result<(i64, String)> {
        let v = self
            .admin(
                Method::POST,
                "/api/admin-api-keys",
                Some(json!({"userId": user_id, "name": name, "mcpServerIds": servers})),
            )
            .await?;
        let key = v["key"]
            .as_str()
            .context(|| format!("key creation answered no `key`: {v}"))?
            .to_owned();
        Ok((id_of(&v)?, key))
    }

    pub async fn delete_key(&self, id: i64) -> Result<()> {
        self.admin(Method::DELETE, &format!("/api/admin-api-keys/{id}"), None)
            .await?;
        Ok(())
    }

    /// Fetches the full key-table snapshot with the data-plane token.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let started = Instant::now();
        let r = http::send(
            &self.client,
            Method::GET,
            &self.url(keygate_protocol::feed::KEY_TABLE_PATH),
            &[http::bearer(DATA_PLANE_TOKEN)],
            None,
            Duration::from_secs(300),
        )
        .await?;
        let elapsed = started.elapsed();
        if !r.status.is_success() {
            fail!(
                "key-table snapshot → {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let table: keygate_protocol::KeyTable = serde_json::from_slice(&r.body)
            .map_err(|e| Error(format!("key-table snapshot does not parse: {e}")))?;
        Ok(Snapshot {
            version: table.version,
            keys: table.upserts.len(),
            bytes: r.body.len(),
            elapsed,
        })
    }
}

/// Reads `id` from a created record, whether the API sends it as a number or a string.
pub fn id_of(v: &Value) -> Result<i64> {
    match &v["id"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .context(|| format!("no numeric `id` in {v}"))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
