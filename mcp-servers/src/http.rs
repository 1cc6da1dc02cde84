//! HTTP side: mounts rmcp's Streamable HTTP service at `/mcp` on axum and
//! runs until Ctrl-C or SIGTERM.

use std::{future::Future, net::SocketAddr, sync::Arc};

use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tools::{McpServer, ToolSet};

/// Path the MCP endpoint is served at. Envoy rewrites
/// `/mcp-connect/<name>/` to `/`, so clients use `/mcp-connect/<name>/mcp`.
pub const MCP_PATH: &str = "/mcp";

/// Binds `listen`, logs `listening on <addr>` once ready, and serves MCP
/// until a shutdown signal arrives.
pub async fn serve(listen: SocketAddr, tool: ToolSet, name: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    serve_on(listener, tool, name, shutdown_signal()).await
}

/// Serves MCP on an already bound listener until `shutdown` resolves; open
/// SSE streams are ended then too, so shutdown never hangs on them.
pub async fn serve_on(
    listener: TcpListener,
    tool: ToolSet,
    name: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    // Defaults keep rmcp's DNS-rebinding guard (loopback Host only), which
    // fits the demo and tests: Envoy forwards the client's loopback Host.
    let config = StreamableHttpServerConfig::default().with_cancellation_token(cancel.clone());
    let service = StreamableHttpService::new(
        move || Ok(McpServer::new(tool, name.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new()
        .nest_service(MCP_PATH, service)
        .layer(axum::middleware::from_fn(session_end_is_no_content));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
}

/// rmcp answers a session's `DELETE` with 202, which the Streamable HTTP
/// transport does not list for it: clients accept 200, 204, or 405 (servers
/// that do not support termination), and the official Python SDK logs
/// "Session termination failed: 202" on close. The session is gone either way,
/// so say so with 204.
async fn session_end_is_no_content(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_delete = request.method() == http::Method::DELETE;
    let mut response = next.run(request).await;
    if is_delete && response.status() == http::StatusCode::ACCEPTED {
        *response.status_mut() = http::StatusCode::NO_CONTENT;
        *response.body_mut() = axum::body::Body::empty();
    }
    response
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    //! The real HTTP stack on loopback: initialize, then `whoami` with
    //! identity and key headers, read back from the SSE response.

    use super::*;

    /// One HTTP/1.1 POST over a raw socket; returns (head, body).
    async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> (String, String) {
        request(addr, "POST", headers, body).await
    }

    /// One HTTP/1.1 request to /mcp over a raw socket; returns (head, body).
    async fn request(
        addr: SocketAddr,
        method: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "{method} /mcp HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n",
            addr.port(),
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    /// The JSON-RPC message carried in an SSE body (skips the priming event).
    fn sse_message(body: &str) -> serde_json::Value {
        let data = body
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim)
            .find(|data| data.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON event in {body:?}"));
        serde_json::from_str(data).unwrap()
    }

    #[tokio::test]
    async fn whoami_over_http_reports_identity_headers_and_key_presence() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, ToolSet::Time, "beta".into(), async {
            let _ = stopped.await;
        }));

        let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
        let (head, body) = post(addr, &[], initialize).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(sse_message(&body)["result"]["serverInfo"]["name"], "beta");
        let session = head
            .lines()
            .find_map(|line| line.strip_prefix("mcp-session-id: "))
            .unwrap_or_else(|| panic!("no session id in {head}"))
            .to_owned();
        let session_headers = [
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", "2025-06-18"),
        ];
        let (head, _) = post(
            addr,
            &session_headers,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 202"), "{head}");

        let mut headers = session_headers.to_vec();
        headers.extend([
            ("x-keygate-user-id", "7"),
            ("x-keygate-key-id", "42"),
            ("x-keygate-server", "beta"),
            ("x-api-key", "ok1-7-42-not-a-real-secret"),
        ]);
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
        let (head, body) = post(addr, &headers, call).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let report = &sse_message(&body)["result"]["structuredContent"];
        assert_eq!(report["serverName"], "beta");
        assert_eq!(report["userId"], "7");
        assert_eq!(report["keyId"], "42");
        assert_eq!(report["server"], "beta");
        assert_eq!(report["authorizationPresent"], false);
        assert_eq!(report["xApiKeyPresent"], true);
        assert!(
            !body.contains("not-a-real-secret"),
            "key value echoed: {body}"
        );

        // Ending the session: a status the transport lists for DELETE, then
        // the session is gone.
        let (head, body) = request(addr, "DELETE", &session_headers, "").await;
        assert!(head.starts_with("HTTP/1.1 204"), "{head}");
        assert!(body.is_empty(), "{body}");
        let (head, _) = post(addr, &session_headers, call).await;
        assert!(
            head.starts_with("HTTP/1.1 404"),
            "session still open: {head}"
        );

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
