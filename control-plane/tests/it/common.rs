//! Test harness: runs the real control plane in-process on 127.0.0.1:0
//! against a fresh SQLite file or a fresh PostgreSQL database, and talks to
//! it over HTTP with the shared API client of `keygate-test-support`.

use keygate_control_plane::config::Config;
use keygate_control_plane::{RunningServer, start};
use keygate_test_support::api::{Answer, Api};
use keygate_test_support::postgres::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token";
pub const DATA_PLANE: &str = "test-data-plane-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database that lives as long as the test: a temp SQLite file, or a
/// throwaway PostgreSQL database (from `keygate-test-support`, dropped on
/// drop even after a panic).
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    /// Held only to be dropped with the test, which drops the database.
    Postgres {
        _database: TestDatabase,
    },
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", unique("keygate_test")));
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::File(path),
                }
            }
            Backend::Postgres => {
                let database = TestDatabase::create().await;
                TestDb {
                    url: database.url().to_owned(),
                    cleanup: Cleanup::Postgres {
                        _database: database,
                    },
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A PostgreSQL database drops itself.
        if let Cleanup::File(path) = &self.cleanup {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

pub fn config(db_url: &str) -> Config {
    let mut c = Config::new(db_url);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.admin_token = Some(ADMIN.into());
    c.data_plane_token = Some(DATA_PLANE.into());
    c
}

/// An HTTP client for loopback tests (reqwest is built without a bundled
/// TLS provider, so one is installed first; proxies from the environment are ignored).
pub fn client() -> reqwest::Client {
    keygate_test_support::http_client().unwrap()
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// The shared API client; each call names its own token.
    pub api: Api,
    pub server: Option<RunningServer>,
    pub db: std::sync::Arc<TestDb>,
}

impl Drop for TestApp {
    /// Stops the server and closes its pool before the database is removed,
    /// so no connection outlives (or recreates) the test's SQLite file.
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let pool = server.state.db.pool.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server.shutdown())
                    .await;
                pool.close().await;
            })
        });
    }
}

/// A status, headers and body (JSON, or `null`) from the control plane.
pub type Resp = Answer;

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = std::sync::Arc::new(TestDb::new(backend).await);
        Self::start_on(db, tweak).await
    }

    /// Another app instance on the same database (a second replica).
    pub async fn start_on(db: std::sync::Arc<TestDb>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = config(&db.url);
        tweak(&mut cfg);
        let server = start(cfg).await.expect("control plane starts");
        let base = format!("http://{}", server.addr);
        let http = client();
        TestApp {
            api: Api::with_client(base.clone(), "", http.clone()),
            base,
            http,
            server: Some(server),
            db,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.api
            .call_as(method, path, token, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Sends a raw body with a JSON content type (for malformed-JSON tests).
    pub async fn post_raw(&self, path: &str, token: &str, raw: &str) -> Resp {
        let response = self
            .api
            .request(Method::POST, path, Some(token))
            .header("content-type", "application/json")
            .body(raw.to_owned())
            .send()
            .await
            .unwrap();
        Answer::read(response).await.unwrap()
    }

    // ---- fixtures through the admin API ----

    pub async fn server(&self, name: &str) {
        let r = self
            .post("/api/mcp-servers", ADMIN, serde_json::json!({"name": name}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    pub async fn rule(&self, servers: &[&str], subjects: &[&str]) -> i64 {
        let r = self
            .post(
                "/api/access-rules",
                ADMIN,
                serde_json::json!({"name": "rule", "mcpServerIds": servers, "subjects": subjects}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    }

    pub async fn user(&self, username: &str) -> i64 {
        let r = self
            .post(
                "/api/users",
                ADMIN,
                serde_json::json!({"username": username}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    }

    /// Creates a key for the admin; returns (id, full key).
    pub async fn admin_key(&self, servers: &[&str]) -> (i64, String) {
        let r = self
            .post(
                "/api/api-keys",
                ADMIN,
                serde_json::json!({"name": "k", "mcpServerIds": servers}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.body["id"].as_i64().unwrap(),
            r.body["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a key for `user_id` through the admin API; returns (id, full key).
    pub async fn key_for(&self, user_id: i64, servers: &[&str]) -> (i64, String) {
        let r = self
            .post(
                "/api/admin-api-keys",
                ADMIN,
                serde_json::json!({"userId": user_id, "name": "k", "mcpServerIds": servers}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.body["id"].as_i64().unwrap(),
            r.body["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn table(&self, query: &str) -> Value {
        let r = self
            .get(&format!("/internal/v1/key-table{query}"), DATA_PLANE)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body
    }
}

/// Asserts a JSON error with this status and exact message.
/// The key-table version a running binary at `base` serves now (a full
/// snapshot asked with its data-plane token).
pub async fn feed_version(http: &reqwest::Client, base: &str, data_plane_token: &str) -> u64 {
    let t: Value = http
        .get(format!("{base}/internal/v1/key-table"))
        .bearer_auth(data_plane_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t["version"].as_u64().unwrap()
}

pub fn assert_error(r: &Resp, status: StatusCode, message: &str) {
    assert_eq!(r.status, status, "body: {}", r.text);
    assert_eq!(r.body["error"].as_str(), Some(message), "body: {}", r.text);
}

/// Asserts a JSON error with this status whose message contains `part`.
pub fn assert_error_contains(r: &Resp, status: StatusCode, part: &str) {
    assert_eq!(r.status, status, "body: {}", r.text);
    let msg = r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error: {}", r.text));
    assert!(msg.contains(part), "error {msg:?} lacks {part:?}");
}

/// Entry ids in a key table, sorted.
pub fn upsert_ids(t: &Value) -> Vec<i64> {
    let mut v: Vec<i64> = t["upserts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

pub fn removal_ids(t: &Value) -> Vec<i64> {
    let mut v: Vec<i64> = t["removals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_i64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

pub fn entry(t: &Value, id: i64) -> Option<&Value> {
    t["upserts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
}

/// The same string with its first character changed (still base64url).
pub fn flip_first_char(s: &str) -> String {
    let mut chars = s.chars();
    let first = chars.next().expect("non-empty");
    let replacement = if first == 'A' { 'B' } else { 'A' };
    std::iter::once(replacement).chain(chars).collect()
}

/// Collects the stdout and stderr of a spawned control-plane binary into one
/// shared log and waits (30 s) for its `listening on <addr>` line; returns
/// the log and the address.
pub fn capture_until_listening(child: &mut Child) -> (Arc<Mutex<String>>, String) {
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        let addr_tx = addr_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = addr_tx.send(addr);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no `listening on` line; log:\n{}", log.lock().unwrap()));
    (log, addr)
}
