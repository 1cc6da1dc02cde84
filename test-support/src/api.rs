//! The one client of the control plane's HTTP API, for everything that is not
//! the product itself: end-to-end tests, the bench, the demo and the control
//! plane's own integration tests.
//!
//! [`Api::call_as`] is the raw call (any status, any token); [`Api::expect`]
//! requires one of the documented statuses; the named helpers (users,
//! servers, access rules, keys, the key-table snapshot) read like the spec.
//! Every error says, in plain words, which call answered what.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use reqwest::header::HeaderMap;
pub use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A status, headers and body from the control plane.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as sent.
    pub text: String,
    /// The body as JSON; `null` when empty or not JSON.
    pub body: Value,
}

impl Answer {
    /// Reads a whole response.
    pub async fn read(response: reqwest::Response) -> Result<Self> {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .context("reading the answer's body failed")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Self {
            status,
            headers,
            text,
            body,
        })
    }
}

/// A key as returned once at creation.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: i64,
    /// The full `ok1-…` key, shown only once.
    pub key: String,
    /// The whole creation answer (record + `key`).
    pub record: Value,
}

/// A full key-table snapshot as the edge fetches it.
#[derive(Debug)]
pub struct Snapshot {
    pub table: keygate_protocol::KeyTable,
    /// Size of the answer's body.
    pub bytes: usize,
    /// Time from sending the request to having read the whole body.
    pub elapsed: Duration,
}

/// A name that is unique per call within this process run: `<label>-<pid>-<n>`
/// (for users, servers, rules, keys and tokens of tests that share one
/// control plane; short enough for a server name).
pub fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{label}-{}-{n}", std::process::id())
}

/// Reads the `id` of a record, which the API may send as a number or a
/// numeric string.
pub fn id_of(record: &Value) -> Result<i64> {
    let id = &record["id"];
    id.as_i64()
        .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| anyhow!("no numeric `id` in {record}"))
}

/// The control plane at `base` (e.g. `http://127.0.0.1:8081`), called with
/// one bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Result<Self> {
        Ok(Self::with_client(base, token, crate::http_client()?))
    }

    /// The API reached through an HTTP client of the caller's.
    pub fn with_client(
        base: impl Into<String>,
        token: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            base: base.into(),
            token: token.into(),
            http,
        }
    }

    /// The same API authenticated with another bearer (e.g. an ok1 key).
    pub fn with_token(&self, token: &str) -> Self {
        Self::with_client(self.base.clone(), token, self.http.clone())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, with `token` as bearer when given, for callers
    /// that need more than JSON bodies.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request with `token` (or none) and returns whatever came back.
    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let mut request = self.request(method.clone(), path, token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {} failed", self.url(path)))?;
        Answer::read(response)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Sends a request with this API's token.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer> {
        self.call_as(method, path, Some(&self.token), body).await
    }

    /// Sends a request and returns the JSON body (`null` when empty) if the
    /// status is one of `statuses`.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        statuses: &[u16],
    ) -> Result<Value> {
        let answer = self.call(method.clone(), path, body).await?;
        ensure!(
            statuses.contains(&answer.status.as_u16()),
            "{method} {path} answered {} (expected {statuses:?}): {}",
            answer.status,
            answer.text
        );
        Ok(answer.body)
    }

    /// POSTs `body` to `path`; returns the created record.
    pub async fn create(&self, path: &str, body: &Value) -> Result<Value> {
        self.expect(Method::POST, path, Some(body), &[200, 201])
            .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.expect(Method::DELETE, path, None, &[200, 204]).await?;
        Ok(())
    }

    /// `GET /api/me` for this token.
    pub async fn me(&self) -> Result<Value> {
        self.expect(Method::GET, "/api/me", None, &[200]).await
    }

    /// Creates a user with role `user`; returns its id.
    pub async fn create_user(&self, username: &str) -> Result<i64> {
        let body = json!({"username": username, "email": format!("{username}@example.test"), "role": "user"});
        id_of(&self.create("/api/users", &body).await?)
    }

    /// Registers an MCP server by name.
    pub async fn create_server(&self, name: &str) -> Result<Value> {
        let body = json!({"name": name, "displayName": format!("Test server {name}")});
        self.create("/api/mcp-servers", &body).await
    }

    /// Grants `subjects` (e.g. `user:7`, or `*`) access to `servers` (names
    /// or `*`); returns the rule id.
    pub async fn grant(&self, name: &str, servers: &[&str], subjects: &[String]) -> Result<i64> {
        let body = json!({"name": name, "mcpServerIds": servers, "subjects": subjects});
        id_of(&self.create("/api/access-rules", &body).await?)
    }

    /// Grants one user access to `servers`; returns the rule id.
    pub async fn grant_user(&self, user_id: i64, servers: &[&str]) -> Result<i64> {
        let name = unique_name(&format!("rule-user-{user_id}"));
        self.grant(&name, servers, &[format!("user:{user_id}")])
            .await
    }

    /// Replaces an access rule (`PUT`): its servers and subjects change at once.
    pub async fn update_rule(
        &self,
        rule_id: i64,
        name: &str,
        servers: &[&str],
        subjects: &[String],
    ) -> Result<()> {
        let body = json!({"name": name, "mcpServerIds": servers, "subjects": subjects});
        let path = format!("/api/access-rules/{rule_id}");
        self.expect(Method::PUT, &path, Some(&body), &[200]).await?;
        Ok(())
    }

    pub async fn delete_user(&self, user_id: i64) -> Result<()> {
        self.delete(&format!("/api/users/{user_id}")).await
    }

    pub async fn delete_server(&self, name: &str) -> Result<()> {
        self.delete(&format!("/api/mcp-servers/{name}")).await
    }

    pub async fn delete_rule(&self, rule_id: i64) -> Result<()> {
        self.delete(&format!("/api/access-rules/{rule_id}")).await
    }

    /// Creates a key for `user_id` (admin API) scoped to `servers` (names or `*`).
    pub async fn create_key_for(
        &self,
        user_id: i64,
        servers: &[&str],
        expires_at: Option<&str>,
    ) -> Result<CreatedKey> {
        let mut body = json!({
            "userId": user_id,
            "name": unique_name("key"),
            "description": "created by a keygate test",
            "mcpServerIds": servers,
        });
        if let Some(at) = expires_at {
            body["expiresAt"] = json!(at);
        }
        let path = "/api/admin-api-keys";
        created_key(self.expect(Method::POST, path, Some(&body), &[201]).await?)
    }

    /// Creates a key for the caller itself (user API).
    pub async fn create_own_key(&self, servers: &[&str]) -> Result<CreatedKey> {
        let body = json!({"name": unique_name("own-key"), "mcpServerIds": servers});
        let path = "/api/api-keys";
        created_key(self.expect(Method::POST, path, Some(&body), &[201]).await?)
    }

    /// `GET /api/api-keys/{id}` (one of the caller's own keys).
    pub async fn get_own_key(&self, key_id: i64) -> Result<Value> {
        let path = format!("/api/api-keys/{key_id}");
        self.expect(Method::GET, &path, None, &[200]).await
    }

    /// `PATCH /api/admin-api-keys/{id}` with `body` (e.g. `{"enabled": false}`);
    /// returns the key record as it now is.
    pub async fn update_key(&self, key_id: i64, body: &Value) -> Result<Value> {
        let path = format!("/api/admin-api-keys/{key_id}");
        self.expect(Method::PATCH, &path, Some(body), &[200]).await
    }

    /// Turns any user's key off (`false`) or on (`true`) through the admin API.
    pub async fn set_key_enabled(&self, key_id: i64, enabled: bool) -> Result<Value> {
        self.update_key(key_id, &json!({ "enabled": enabled }))
            .await
    }

    /// Deletes any user's key through the admin API.
    pub async fn delete_key(&self, key_id: i64) -> Result<()> {
        self.delete(&format!("/api/admin-api-keys/{key_id}")).await
    }

    /// The key table's first snapshot page, with this API's token as the
    /// data-plane token, waiting up to `timeout`.
    pub async fn snapshot(&self, timeout: Duration) -> Result<Snapshot> {
        let path = keygate_protocol::feed::KEY_TABLE_PATH;
        let started = std::time::Instant::now();
        let response = self
            .request(Method::GET, path, Some(&self.token))
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("GET {path} failed"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer of GET {path} failed"))?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let table = serde_json::from_slice(&body)
            .with_context(|| format!("the answer of GET {path} is not a key table"))?;
        Ok(Snapshot {
            table,
            bytes: body.len(),
            elapsed,
        })
    }
}

fn created_key(record: Value) -> Result<CreatedKey> {
    let key = record["key"]
        .as_str()
        .ok_or_else(|| anyhow!("key creation answered no `key`: {record}"))?
        .to_owned();
    ensure!(key.starts_with("ok1-"), "the issued key is not an ok1 key");
    let id = id_of(&record)?;
    let parsed = keygate_protocol::ApiKeyToken::parse(key.as_bytes())
        .map_err(|e| anyhow!("the issued key does not parse as an ok1 key: {e:?}"))?;
    ensure!(
        parsed.key_id == id,
        "the key's id part differs from the record id"
    );
    Ok(CreatedKey { id, key, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_numbers_or_numeric_strings() {
        assert_eq!(id_of(&json!({"id": 7})).unwrap(), 7);
        assert_eq!(id_of(&json!({"id": "8"})).unwrap(), 8);
        let error = id_of(&json!({"name": "x"})).unwrap_err();
        assert!(error.to_string().contains("no numeric `id`"), "{error}");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
        assert!(unique_name("key").starts_with("key-"));
    }

    #[test]
    fn a_created_key_must_be_an_ok1_key_with_an_id() {
        let token = keygate_protocol::ApiKeyToken {
            user_id: 1,
            key_id: 3,
            secret: keygate_protocol::Secret::from_bytes([7; 32]),
        };
        let record = json!({"id": 3, "key": token.encode()});
        assert_eq!(created_key(record).unwrap().id, 3);
        let other_id = json!({"id": 4, "key": token.encode()});
        assert!(created_key(other_id).is_err());
        assert!(created_key(json!({"id": 3, "key": "nope"})).is_err());
        assert!(created_key(json!({"id": 3})).is_err());
    }
}
