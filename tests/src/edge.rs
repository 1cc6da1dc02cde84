//! Requests to Envoy's listener as an MCP client would send them, and
//! assertions on the edge's answers (statuses, `WWW-Authenticate`,
//! `Retry-After`, small JSON error bodies that never echo the key).

use std::time::Duration;

use serde_json::{Value, json};

/// MCP protocol version that still has the `initialize` handshake and
/// sessions (`Mcp-Session-Id`); used by the raw-HTTP probes.
pub const SESSION_PROTOCOL_VERSION: &str = "2025-11-25";

/// How long after one worker shows a table change every worker does: each
/// worker re-reads the shared key table within the filter's
/// `tableCacheMillis` (10 ms, the default these tests run with). Twice that,
/// plus scheduling slack.
pub const WORKERS_AGREE_AFTER: Duration = Duration::from_millis(30);

/// One HTTP answer, fully read.
#[derive(Debug, Clone)]
pub struct EdgeResponse {
    pub status: u16,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl EdgeResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// JSON-RPC messages of the body, whether it is JSON or an SSE stream.
    pub fn jsonrpc_messages(&self) -> Vec<Value> {
        jsonrpc_messages(&self.body)
    }

    /// The `result` of the first JSON-RPC response in the body.
    pub fn jsonrpc_result(&self) -> Value {
        self.jsonrpc_messages()
            .into_iter()
            .find_map(|m| m.get("result").cloned())
            .unwrap_or_else(|| panic!("no JSON-RPC result in answer: {self:?}"))
    }
}

/// Parses a JSON body or the `data:` lines of an SSE body into messages.
pub fn jsonrpc_messages(body: &str) -> Vec<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return vec![value];
    }
    let mut messages = Vec::new();
    let mut data = String::new();
    for line in body.lines().chain(std::iter::once("")) {
        if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        } else if line.is_empty() {
            if let Ok(value) = serde_json::from_str::<Value>(&data) {
                messages.push(value);
            }
            data.clear();
        }
    }
    messages
}

/// The body of an MCP `initialize` request.
pub fn initialize_request(id: i64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": SESSION_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "keygate-e2e", "version": "0.1.0"}
        }
    })
}

/// A client of Envoy's listener.
#[derive(Debug, Clone)]
pub struct Edge {
    port: u16,
    http: reqwest::Client,
}

impl Edge {
    pub fn new(listener_port: u16) -> Self {
        crate::ensure_crypto_provider();
        // No connection reuse: each request is a new connection, which Envoy
        // may hand to either worker, so repeated checks cover both.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("build reqwest client");
        Self {
            port: listener_port,
            http,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// MCP endpoint of `server` through the edge.
    pub fn mcp_url(&self, server: &str) -> String {
        self.url(&format!("/mcp-connect/{server}/mcp"))
    }

    /// Sends a request; `headers` are added as given (names may repeat).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> reqwest::Result<EdgeResponse> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self.http.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.text().await?;
        Ok(EdgeResponse {
            status,
            headers,
            body,
        })
    }

    /// `GET path`, with `Authorization: Bearer <key>` when a key is given.
    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Result<EdgeResponse> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.send("GET", path, &headers, None).await
    }

    /// POSTs an MCP `initialize` to `path` with `headers` (e.g. the key).
    pub async fn initialize_at(&self, path: &str, headers: &[(&str, &str)]) -> EdgeResponse {
        let mut all = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        all.extend_from_slice(headers);
        self.send("POST", path, &all, Some(initialize_request(1).to_string()))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POSTs an MCP `initialize` to `server` through the edge with `key`.
    pub async fn initialize(&self, server: &str, key: Option<&str>) -> EdgeResponse {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.initialize_at(&format!("/mcp-connect/{server}/mcp"), &headers)
            .await
    }

    /// Sends `target` byte for byte (see [`crate::raw_http`]).
    pub async fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> EdgeResponse {
        crate::raw_http::request(self.port, method, target, headers, body)
            .await
            .unwrap_or_else(|e| panic!("raw {method} {target}: {e}"))
    }

    /// Raw `initialize` POST to `target` with the key as bearer.
    pub async fn raw_initialize(&self, target: &str, key: &str) -> EdgeResponse {
        let auth = format!("Bearer {key}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        self.raw("POST", target, &headers, &initialize_request(1).to_string())
            .await
    }

    /// Polls `initialize` on `server` with `key` until the edge refuses it as
    /// an invalid token (401, checked in full), for at most 10 s; returns
    /// how long it took.
    pub async fn wait_invalid_token(&self, server: &str, key: &str) -> Duration {
        let (took, refused) = self
            .poll_until_status(
                server,
                key,
                401,
                Duration::from_millis(10),
                Duration::from_secs(10),
            )
            .await;
        assert_invalid_token(&refused, key);
        took
    }

    /// Polls `initialize` on `server` with `key` every `every` until the
    /// answer's status is `status`; returns the time it took and the answer.
    pub async fn poll_until_status(
        &self,
        server: &str,
        key: &str,
        status: u16,
        every: Duration,
        timeout: Duration,
    ) -> (Duration, EdgeResponse) {
        let start = std::time::Instant::now();
        loop {
            let response = self.initialize(server, Some(key)).await;
            if response.status == status {
                let took = start.elapsed();
                tokio::time::sleep(WORKERS_AGREE_AFTER).await;
                return (took, response);
            }
            assert!(
                start.elapsed() < timeout,
                "{server}: status still {} (want {status}) after {timeout:?}: {response:?}",
                response.status
            );
            tokio::time::sleep(every).await;
        }
    }
}

/// Asserts an edge refusal: `status`, a JSON body `{"error": "<text>"}` with
/// a generic message, and no trace of `key` anywhere in the answer.
pub fn assert_edge_error(response: &EdgeResponse, status: u16, key: Option<&str>) {
    assert_eq!(response.status, status, "unexpected answer: {response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "edge error must be JSON, got content-type {content_type:?}: {response:?}"
    );
    let body = response.json();
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert!(
        object
            .get("error")
            .is_some_and(|e| e.is_string() && !e.as_str().unwrap_or_default().is_empty()),
        "error body must be {{\"error\": \"...\"}}: {body}"
    );
    assert_eq!(object.len(), 1, "error body must hold only `error`: {body}");
    if let Some(key) = key {
        let everything = format!("{:?}{}", response.headers, response.body);
        assert!(
            !everything.contains(key),
            "the key leaked into the answer: {response:?}"
        );
        // The secret part alone: everything after the third `-` (base64url
        // has `-` in it); too short a remainder proves nothing.
        let secret = key.splitn(4, '-').nth(3).unwrap_or(key);
        assert!(
            secret.len() < 16 || !everything.contains(secret),
            "the secret leaked into the answer: {response:?}"
        );
    }
}

/// 401 for a request without any key: `WWW-Authenticate: Bearer` without an error code.
pub fn assert_missing_key(response: &EdgeResponse) {
    assert_edge_error(response, 401, None);
    let challenge = response
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("401 without WWW-Authenticate: {response:?}"));
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "want `WWW-Authenticate: Bearer` (no error code), got {challenge:?}"
    );
}

/// 401 `WWW-Authenticate: Bearer error="invalid_token"`.
pub fn assert_invalid_token(response: &EdgeResponse, key: &str) {
    assert_edge_error(response, 401, Some(key));
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
        "want Bearer error=\"invalid_token\", got {challenge:?}: {response:?}"
    );
}

/// 403 `WWW-Authenticate: Bearer error="insufficient_scope"`.
pub fn assert_insufficient_scope(response: &EdgeResponse, key: &str) {
    assert_edge_error(response, 403, Some(key));
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("error=\"insufficient_scope\""),
        "want Bearer error=\"insufficient_scope\", got {challenge:?}: {response:?}"
    );
}

/// 503 with a positive integer `Retry-After` (fail closed).
pub fn assert_unavailable(response: &EdgeResponse, key: Option<&str>) {
    assert_edge_error(response, 503, key);
    let retry_after = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {response:?}"));
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not seconds: {retry_after:?}"));
    assert!(seconds > 0, "Retry-After must be positive: {response:?}");
}

/// A successful `initialize` answered by the MCP server named `server`,
/// with a session id (the session header made it back through Envoy).
pub fn assert_initialized_by(response: &EdgeResponse, server: &str) {
    assert_eq!(response.status, 200, "initialize not allowed: {response:?}");
    let result = response.jsonrpc_result();
    assert_eq!(
        result["serverInfo"]["name"], server,
        "initialize answered by the wrong server: {result}"
    );
    assert!(
        response
            .header("mcp-session-id")
            .is_some_and(|s| !s.is_empty()),
        "no Mcp-Session-Id in the answer: {response:?}"
    );
}
