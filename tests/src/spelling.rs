//! The path spellings a key for one MCP server uses to try to reach
//! another: dot segments, encoded slashes and backslashes, doubled slashes,
//! case, `;` parameters, encoded letters. Shared by the tests of the repo's
//! own Envoy config and of the shipped `envoy/envoy.yaml`.

use crate::edge::{Edge, assert_edge_error, assert_initialized_by};

/// Key for `allowed` tries to reach `other` (and `allowed` itself) by odd spellings.
pub async fn assert_spellings_never_widen_scope(
    edge: &Edge,
    key: &str,
    allowed: &str,
    other: &str,
) {
    // Spellings that Envoy normalizes to `other`'s path, or that the filter
    // refuses outright: every one must end in 400 or 403, never at `other`.
    let attempts = [
        format!("/mcp-connect/{allowed}/../{other}/mcp"),
        format!("/mcp-connect/{allowed}/./../{other}/mcp"),
        format!("/mcp-connect/{allowed}/mcp/../../{other}/mcp"),
        format!("/mcp-connect/{allowed}/../../mcp-connect/{other}/mcp"),
        format!("/mcp-connect/{other}%2F..%2F{allowed}/mcp"),
        format!("/mcp-connect/{other}%2f..%2f{allowed}/mcp"),
        format!("/mcp-connect/{allowed}%2F..%2F{other}/mcp"),
        format!("/mcp-connect/{allowed}%2f..%2f{other}/mcp"),
        format!("/mcp-connect/{allowed}%5c..%5c{other}/mcp"),
        format!("/mcp-connect/{allowed}%5C..%5C{other}/mcp"),
        format!("/mcp-connect/{allowed}\\..\\{other}/mcp"),
        format!("/mcp-connect/{allowed}/%2e%2e/{other}/mcp"),
        format!("/mcp-connect/{allowed}/%2E%2E/{other}/mcp"),
        format!("/mcp-connect/{allowed}/..%2f{other}/mcp"),
        format!("/mcp-connect//{other}/mcp"),
        format!("//mcp-connect/{other}/mcp"),
        format!("/mcp-connect/{other}//mcp"),
        format!("/mcp-connect/{}/mcp", other.to_uppercase()),
        format!("/MCP-CONNECT/{other}/mcp"),
        format!("/Mcp-Connect/{other}/mcp"),
        format!("/mcp-connect/{other};x/mcp"),
        format!("/mcp-connect/{allowed};/../{other}/mcp"),
        format!("/mcp-connect/{allowed}/..;/{other}/mcp"),
        format!("/mcp-connect/{other}/mcp;jsessionid=1"),
        format!("/%6dcp-connect/{other}/mcp"),
        format!("/mcp-connect%2F{other}/mcp"),
        format!(
            "/mcp-connect/%{:02X}{}/mcp",
            other.as_bytes()[0],
            &other[1..]
        ),
        format!("/mcp-connect/{other}"),
        format!("/mcp-connect/{other}/"),
        format!("/mcp-connect/{other}.{allowed}/mcp"),
        format!("/mcp-connect/{allowed}.{other}/mcp"),
        format!("/mcp-connect/{other}%00/mcp"),
        format!("/mcp-connect/{other}%20/mcp"),
        "/mcp-connect/".to_owned(),
        "/mcp-connect".to_owned(),
    ];
    for target in &attempts {
        let response = edge.raw_initialize(target, key).await;
        assert!(
            matches!(response.status, 400 | 403),
            "{target}: a key for {allowed} must be refused (400/403), got {response:?}"
        );
        // No upstream answered: no MCP session was opened anywhere.
        assert_eq!(
            response.header("mcp-session-id"),
            None,
            "{target}: {response:?}"
        );
        assert!(
            !response.body.contains("serverInfo"),
            "{target} reached an MCP server: {response:?}"
        );
        if response.status == 403 {
            assert_edge_error(&response, 403, Some(key));
        }
        println!("{target:60} -> {}", response.status);
    }

    // The plain spelling (and a query string that names the other server)
    // reaches `allowed`, and only it.
    for target in [
        format!("/mcp-connect/{allowed}/mcp"),
        format!("/mcp-connect/{allowed}/mcp?next=/mcp-connect/{other}/mcp"),
        format!("/mcp-connect/{allowed}/mcp?x=%2F..%2F{other}"),
    ] {
        let response = edge.raw_initialize(&target, key).await;
        assert_initialized_by(&response, allowed);
    }
}
