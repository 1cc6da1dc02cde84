//! Small blocking HTTP helpers over loopback: the control plane's admin API
//! (to provision the demo) and a minimal MCP Streamable HTTP exchange
//! through Envoy (to prove a client call works with the printed key).

use std::time::Duration;

use serde_json::{Value, json};

use crate::failure::{Failure, Result};

/// Header rmcp and the MCP spec use to carry the session.
const SESSION_HEADER: &str = "mcp-session-id";
/// Protocol version the proof client speaks (supported by rmcp 3.11).
const PROTOCOL_VERSION: &str = "2025-06-18";

/// A response reduced to what the callers check.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub session_id: Option<String>,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON, or the JSON-RPC message of an SSE body.
    pub fn json(&self) -> Result<Value> {
        let text = if self.content_type.starts_with("text/event-stream") {
            sse_json_payload(&self.body)
                .ok_or_else(|| Failure::new(format!("no JSON event in SSE body: {}", self.body)))?
        } else {
            self.body.as_str()
        };
        serde_json::from_str(text)
            .map_err(|error| Failure::new(format!("response is not JSON ({error}): {text}")))
    }
}

/// The first `data:` line of an SSE body that holds a JSON object (rmcp
/// sends an empty priming event before the message).
fn sse_json_payload(body: &str) -> Option<&str> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .find(|data| data.starts_with('{'))
}

/// Blocking HTTP client for loopback calls.
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            // Loopback only: never route through a proxy from the environment.
            .proxy(None)
            // Callers look at 4xx/5xx themselves.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    pub fn get(&self, url: &str, bearer: Option<&str>) -> Result<Reply> {
        let mut request = self.agent.get(url);
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        into_reply(url, request.call())
    }

    pub fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<Reply> {
        let mut request = self.agent.post(url);
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_reply(url, request.send_json(body))
    }

    /// True when `GET url` answers 200.
    pub fn is_ok(&self, url: &str) -> bool {
        self.get(url, None).is_ok_and(|reply| reply.status == 200)
    }
}

fn into_reply(
    url: &str,
    response: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply> {
    let mut response =
        response.map_err(|error| Failure::new(format!("request to {url} failed: {error}")))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let session_id = header(SESSION_HEADER);
    let content_type = header("content-type").unwrap_or_default();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|error| Failure::new(format!("reading the response of {url} failed: {error}")))?;
    Ok(Reply {
        status,
        session_id,
        content_type,
        body,
    })
}

/// The control plane's admin API, authenticated with the admin token.
pub struct AdminApi<'a> {
    pub http: &'a Http,
    pub base_url: String,
    pub admin_token: String,
}

impl AdminApi<'_> {
    /// POSTs `body` to `path` and returns the created record (expects 201/200).
    pub fn create(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let reply = self
            .http
            .post_json(&url, Some(&self.admin_token), &[], body)?;
        if !(200..300).contains(&reply.status) {
            return Err(Failure::new(format!(
                "POST {path} answered {}: {}",
                reply.status, reply.body
            )));
        }
        reply.json()
    }
}

/// Outcome of the proof call through Envoy.
pub struct McpProof {
    pub server_name: String,
    pub echoed: String,
}

/// The JSON-RPC `initialize` request of the proof client.
pub fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "keygate-xtask", "version": env!("CARGO_PKG_VERSION")}
        }
    })
}

/// Initializes an MCP session at `url` with `key`, then calls the `echo`
/// tool: the same exchange any Streamable HTTP client performs.
pub fn mcp_echo_call(http: &Http, url: &str, key: &str, text: &str) -> Result<McpProof> {
    let accept = ("accept", "application/json, text/event-stream");
    let initialize = initialize_request();
    let reply = http.post_json(url, Some(key), &[accept], &initialize)?;
    if reply.status != 200 {
        return Err(Failure::new(format!(
            "initialize answered {}: {}",
            reply.status, reply.body
        )));
    }
    let server_name = reply.json()?["result"]["serverInfo"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let session = reply.session_id.clone().unwrap_or_default();
    let session_headers = [
        accept,
        (SESSION_HEADER, session.as_str()),
        ("mcp-protocol-version", PROTOCOL_VERSION),
    ];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = http.post_json(url, Some(key), &session_headers, &initialized)?;
    if !(200..300).contains(&reply.status) {
        return Err(Failure::new(format!(
            "notifications/initialized answered {}: {}",
            reply.status, reply.body
        )));
    }
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}
    });
    let reply = http.post_json(url, Some(key), &session_headers, &call)?;
    if reply.status != 200 {
        return Err(Failure::new(format!(
            "tools/call answered {}: {}",
            reply.status, reply.body
        )));
    }
    let echoed = reply.json()?["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(McpProof {
        server_name,
        echoed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payload_skips_the_priming_event() {
        let body = "data: \nid: 0\nretry: 3000\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1}\nid: 1\n\n";
        assert_eq!(
            sse_json_payload(body),
            Some("{\"jsonrpc\":\"2.0\",\"id\":1}")
        );
        assert_eq!(sse_json_payload("data: \n\n"), None);
    }

    #[test]
    fn reply_json_reads_sse_and_plain_bodies() {
        let sse = Reply {
            status: 200,
            session_id: None,
            content_type: "text/event-stream".into(),
            body: "data: {\"a\":1}\n\n".into(),
        };
        assert_eq!(sse.json().unwrap()["a"], 1);
        let plain = Reply {
            status: 200,
            session_id: None,
            content_type: "application/json".into(),
            body: "{\"b\":2}".into(),
        };
        assert_eq!(plain.json().unwrap()["b"], 2);
    }
}
