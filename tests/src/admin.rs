//! A small client of the control plane's user and admin APIs (contract 3),
//! so tests read like the spec: create a user, a server, an access rule, a key.
//!
//! Every call asserts the documented status and panics with the answer
//! otherwise, so a test fails at the step that went wrong.

use serde_json::{Value, json};

/// A key as returned once at creation.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: i64,
    /// The full `ok1-…` key, shown only once.
    pub key: String,
    /// The whole creation answer (record + `key`).
    pub record: Value,
}

#[derive(Debug, Clone)]
pub struct AdminApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// A status and JSON body from the control plane.
#[derive(Debug, Clone)]
pub struct ApiAnswer {
    pub status: u16,
    pub body: Value,
}

/// Reads an id that the API may send as a number or a numeric string.
pub fn id_of(value: &Value) -> i64 {
    let id = &value["id"];
    id.as_i64()
        .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("no numeric `id` in {value}"))
}

impl AdminApi {
    pub fn new(base: String, token: String) -> Self {
        Self {
            base,
            token,
            http: crate::http_client(),
        }
    }

    /// The same API authenticated with another bearer (e.g. an ok1 key).
    pub fn with_token(&self, token: &str) -> Self {
        Self::new(self.base.clone(), token.to_owned())
    }

    /// Sends a request and returns status and JSON body (`null` when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> ApiAnswer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {text}"))
        };
        ApiAnswer { status, body }
    }

    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        statuses: &[u16],
    ) -> Value {
        let sent = body.clone();
        let answer = self.call(method, path, body).await;
        assert!(
            statuses.contains(&answer.status),
            "{method} {path} {sent:?}: want {statuses:?}, got {} {}",
            answer.status,
            answer.body
        );
        answer.body
    }

    /// `GET /api/me` for this token.
    pub async fn me(&self) -> Value {
        self.expect("GET", "/api/me", None, &[200]).await
    }

    /// Creates a user with role `user`; returns its id.
    pub async fn create_user(&self, username: &str) -> i64 {
        let body = json!({"username": username, "email": format!("{username}@example.test"), "role": "user"});
        id_of(
            &self
                .expect("POST", "/api/users", Some(body), &[200, 201])
                .await,
        )
    }

    /// Registers an MCP server by name.
    pub async fn create_server(&self, name: &str) -> Value {
        let body = json!({"name": name, "displayName": format!("Test server {name}")});
        self.expect("POST", "/api/mcp-servers", Some(body), &[200, 201])
            .await
    }

    /// Grants `subjects` (e.g. `user:7`, or `*`) access to `servers` (names or `*`); returns the rule id.
    pub async fn grant(&self, name: &str, servers: &[&str], subjects: &[String]) -> i64 {
        let body = json!({"name": name, "mcpServerIds": servers, "subjects": subjects});
        id_of(
            &self
                .expect("POST", "/api/access-rules", Some(body), &[200, 201])
                .await,
        )
    }

    /// Grants one user access to `servers`; returns the rule id.
    pub async fn grant_user(&self, user_id: i64, servers: &[&str]) -> i64 {
        let name = crate::control_plane::unique_token(&format!("rule-user-{user_id}"));
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
    ) {
        let body = json!({"name": name, "mcpServerIds": servers, "subjects": subjects});
        self.expect(
            "PUT",
            &format!("/api/access-rules/{rule_id}"),
            Some(body),
            &[200],
        )
        .await;
    }

    pub async fn delete_user(&self, user_id: i64) {
        self.expect(
            "DELETE",
            &format!("/api/users/{user_id}"),
            None,
            &[200, 204],
        )
        .await;
    }

    pub async fn delete_server(&self, name: &str) {
        self.expect(
            "DELETE",
            &format!("/api/mcp-servers/{name}"),
            None,
            &[200, 204],
        )
        .await;
    }

    pub async fn delete_rule(&self, rule_id: i64) {
        self.expect(
            "DELETE",
            &format!("/api/access-rules/{rule_id}"),
            None,
            &[200, 204],
        )
        .await;
    }

    /// Creates a key for `user_id` (admin API) scoped to `servers` (names or `*`).
    pub async fn create_key_for(
        &self,
        user_id: i64,
        servers: &[&str],
        expires_at: Option<&str>,
    ) -> CreatedKey {
        let mut body = json!({
            "userId": user_id,
            "name": crate::control_plane::unique_token("key"),
            "description": "created by keygate-e2e",
            "mcpServerIds": servers,
        });
        if let Some(at) = expires_at {
            body["expiresAt"] = json!(at);
        }
        created_key(
            self.expect("POST", "/api/admin-api-keys", Some(body), &[201])
                .await,
        )
    }

    /// Creates a key for the caller itself (user API).
    pub async fn create_own_key(&self, servers: &[&str]) -> CreatedKey {
        let body = json!({
            "name": crate::control_plane::unique_token("own-key"),
            "mcpServerIds": servers,
        });
        created_key(
            self.expect("POST", "/api/api-keys", Some(body), &[201])
                .await,
        )
    }

    /// `GET /api/api-keys/{id}` (one of the caller's own keys).
    pub async fn get_own_key(&self, key_id: i64) -> Value {
        self.expect("GET", &format!("/api/api-keys/{key_id}"), None, &[200])
            .await
    }

    /// Deletes any user's key through the admin API.
    pub async fn delete_key(&self, key_id: i64) {
        self.expect(
            "DELETE",
            &format!("/api/admin-api-keys/{key_id}"),
            None,
            &[200, 204],
        )
        .await;
    }
}

fn created_key(body: Value) -> CreatedKey {
    let key = body["key"]
        .as_str()
        .unwrap_or_else(|| panic!("key creation answer has no `key`: {body}"))
        .to_owned();
    assert!(key.starts_with("ok1-"), "issued key is not an ok1 key");
    let id = id_of(&body);
    let parsed = crate::keys::parse(&key);
    assert_eq!(
        parsed.key_id, id,
        "the key's id part differs from the record id"
    );
    CreatedKey {
        id,
        key,
        record: body,
    }
}
