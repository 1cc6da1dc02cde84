//! An `rmcp` Streamable HTTP client through the edge, authenticated with an
//! ok1 key as `Authorization: Bearer`, plus helpers to call tools.

use std::collections::HashMap;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

pub type McpClient = RunningService<RoleClient, ClientConfig>;

/// How the client negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `initialize` with 2025-11-25: the server opens a session
    /// (`Mcp-Session-Id`) and answers over SSE streams.
    Session,
    /// rmcp's default (latest protocol version).
    Default,
}

/// Connects to `url` with `key` as bearer and `extra_headers` on every request.
pub async fn connect(
    url: &str,
    key: &str,
    extra_headers: &[(&str, &str)],
    lifecycle: Lifecycle,
) -> Result<McpClient, rmcp::service::ClientInitializeError> {
    let mut headers = HashMap::new();
    for (name, value) in extra_headers {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
        // rmcp adds the `Bearer ` prefix itself.
        .auth_header(key.to_owned())
        .custom_headers(headers);
    crate::ensure_crypto_provider();
    let transport = StreamableHttpClientTransport::from_config(config);
    let client_config = match lifecycle {
        Lifecycle::Session => {
            ClientConfig::default().with_protocol_version(ProtocolVersion::V_2025_11_25)
        }
        Lifecycle::Default => ClientConfig::default(),
    };
    client_config.serve(transport).await
}

/// Calls `tool` with JSON object `arguments`.
pub async fn call_tool(client: &McpClient, tool: &str, arguments: Value) -> CallToolResult {
    let arguments = match arguments {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => panic!("tool arguments must be an object, got {other}"),
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

/// The text blocks of a tool result, joined.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.clone()))
        .collect()
}

/// Calls `whoami` and returns its structured report
/// (`serverName`, `userId`, `keyId`, `server`, `authorizationPresent`, `xApiKeyPresent`).
pub async fn whoami(client: &McpClient) -> Value {
    let result = call_tool(client, "whoami", Value::Null).await;
    result
        .structured_content
        .clone()
        .or_else(|| serde_json::from_str(&text_of(&result)).ok())
        .unwrap_or_else(|| panic!("whoami returned no report: {result:?}"))
}

/// Sorted names of the server's tools.
pub async fn tool_names(client: &McpClient) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap_or_else(|e| panic!("tools/list: {e}"))
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}
