//! The MCP tools: `echo` or `time` (one per server, chosen at start) and
//! `whoami` on every server, which lets the end-to-end tests check what the
//! edge forwarded: identity headers present, client key absent.

use rmcp::{
    ErrorData, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::Extension, wrapper::Parameters},
    model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig},
    schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;

/// Which tool a server offers besides `whoami`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolSet {
    /// `echo`: returns its `text` argument.
    Echo,
    /// `time`: returns the current UTC time in RFC 3339.
    Time,
}

impl ToolSet {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolSet::Echo => "echo",
            ToolSet::Time => "time",
        }
    }

    /// The tool of the other set, removed from this server's router.
    fn other_tool(self) -> &'static str {
        match self {
            ToolSet::Echo => "time",
            ToolSet::Time => "echo",
        }
    }
}

/// Arguments of `echo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Text to send back unchanged.
    pub text: String,
}

/// Identity headers the keygate filter sets for the upstream.
const IDENTITY_HEADERS: [(&str, &str); 3] = [
    ("userId", "x-keygate-user-id"),
    ("keyId", "x-keygate-key-id"),
    ("server", "x-keygate-server"),
];

/// Headers that carry a client key; the edge must strip them on MCP paths.
const KEY_HEADERS: [(&str, &str); 2] = [
    ("authorizationPresent", "authorization"),
    ("xApiKeyPresent", "x-api-key"),
];

/// One MCP server instance (rmcp builds one per session).
#[derive(Debug, Clone)]
pub struct McpServer {
    name: String,
    tool_router: ToolRouter<Self>,
}

impl McpServer {
    pub fn new(tool: ToolSet, name: String) -> Self {
        let mut tool_router = Self::tool_router();
        tool_router.remove_route(tool.other_tool());
        Self { name, tool_router }
    }
}

#[tool_router]
impl McpServer {
    /// Returns `text` unchanged.
    #[tool(description = "Echo the given text back unchanged.")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Returns the current UTC time in RFC 3339.
    #[tool(description = "Return the current UTC time in RFC 3339 format.")]
    fn time(&self) -> Result<String, ErrorData> {
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|error| ErrorData::internal_error(error.to_string(), None))
    }

    /// Reports the identity headers of this HTTP request and whether a key
    /// header reached the server (values of key headers are never echoed).
    #[tool(
        description = "Report the x-keygate-* identity headers this request carried and whether an authorization or x-api-key header reached the server."
    )]
    fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> CallToolResult {
        CallToolResult::structured(whoami_report(&self.name, &parts.headers))
    }
}

/// Builds the `whoami` answer from request headers.
fn whoami_report(server_name: &str, headers: &http::HeaderMap) -> serde_json::Value {
    let mut report = serde_json::Map::new();
    report.insert("serverName".into(), server_name.into());
    for (field, header) in IDENTITY_HEADERS {
        let value = headers
            .get(header)
            .and_then(|value| value.to_str().ok())
            .map_or(serde_json::Value::Null, Into::into);
        report.insert(field.into(), value);
    }
    for (field, header) in KEY_HEADERS {
        report.insert(field.into(), headers.contains_key(header).into());
    }
    serde_json::Value::Object(report)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                self.name.clone(),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("keygate demo MCP server")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_reports_identity_and_key_presence_without_values() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-keygate-user-id", "7".parse().unwrap());
        headers.insert("x-keygate-key-id", "42".parse().unwrap());
        headers.insert("x-api-key", "ok1-secret-value".parse().unwrap());
        let report = whoami_report("echo", &headers);
        assert_eq!(report["serverName"], "echo");
        assert_eq!(report["userId"], "7");
        assert_eq!(report["keyId"], "42");
        assert_eq!(report["server"], serde_json::Value::Null);
        assert_eq!(report["authorizationPresent"], false);
        assert_eq!(report["xApiKeyPresent"], true);
        assert!(!report.to_string().contains("ok1-secret-value"));
    }

    #[test]
    fn each_tool_set_lists_its_tool_and_whoami_only() {
        let names = |set: ToolSet, name: &str| {
            let mut names: Vec<_> = McpServer::new(set, name.into())
                .tool_router
                .list_all()
                .into_iter()
                .map(|tool| tool.name.to_string())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(ToolSet::Echo, "echo"), ["echo", "whoami"]);
        assert_eq!(names(ToolSet::Time, "time"), ["time", "whoami"]);
    }

    #[test]
    fn echo_returns_text_and_time_is_rfc3339_utc() {
        let server = McpServer::new(ToolSet::Echo, "echo".into());
        let echoed = server.echo(Parameters(EchoArgs {
            text: "hello".into(),
        }));
        assert_eq!(echoed, "hello");
        let now = server.time().unwrap();
        let parsed =
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
    }
}
