//! Small blocking HTTP helpers over loopback: the control plane's API
//! client (shared with the tests and the bench) to provision the demo, and a
//! minimal MCP Streamable HTTP exchange through Envoy (to prove a client call
//! works with the printed key).

use anyhow::{Context, Result, anyhow};
use keygate_test_support::api::Api;
use serde_json::{Value, json};

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
                .ok_or_else(|| anyhow!("no JSON event in SSE body: {}", self.body))?
        } else {
            self.body.as_str()
        };
        serde_json::from_str(text)
            .map_err(|error| anyhow!("response is not JSON ({error}): {text}"))
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

/// Blocking HTTP for loopback calls: the shared async client, driven by a
/// small runtime of xtask's own (xtask is otherwise synchronous).
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting xtask's HTTP runtime")?;
        Ok(Self {
            runtime,
            client: keygate_test_support::http_client()?,
        })
    }

    /// The control plane's API at `base_url` with `token`, on this client.
    pub fn api(&self, base_url: &str, token: &str) -> Api {
        Api::with_client(base_url, token, self.client.clone())
    }

    /// Runs one of the API's calls to completion.
    pub fn block_on<F: Future>(&self, call: F) -> F::Output {
        self.runtime.block_on(call)
    }

    pub fn get(&self, url: &str, bearer: Option<&str>) -> Result<Reply> {
        self.send(self.client.get(url), url, bearer, &[])
    }

    pub fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<Reply> {
        self.send(self.client.post(url).json(body), url, bearer, headers)
    }

    /// True when `GET url` answers 200.
    pub fn is_ok(&self, url: &str) -> bool {
        self.get(url, None).is_ok_and(|reply| reply.status == 200)
    }

    fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        url: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Reply> {
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| format!("request to {url} failed"))?;
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
                .text()
                .await
                .with_context(|| format!("reading the response of {url} failed"))?;
            Ok(Reply {
                status,
                session_id,
                content_type,
                body,
            })
        })
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
        return Err(anyhow!(
            "initialize answered {}: {}",
            reply.status,
            reply.body
        ));
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
        return Err(anyhow!(
            "notifications/initialized answered {}: {}",
            reply.status,
            reply.body
        ));
    }
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}
    });
    let reply = http.post_json(url, Some(key), &session_headers, &call)?;
    if reply.status != 200 {
        return Err(anyhow!(
            "tools/call answered {}: {}",
            reply.status,
            reply.body
        ));
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
