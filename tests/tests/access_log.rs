//! Key identity for operators, end to end through the real Envoy with the
//! shipped `envoy/envoy.yaml`: its access log names the key's owner, the key
//! and the MCP server of an allowed request, and the reason and the key of
//! a denied one, read from the filter's filter state (no header carries
//! them, so denials are covered too), and never the key itself.

use std::time::{Duration, Instant};

use keygate_e2e::edge::WORKERS_AGREE_AFTER;
use keygate_e2e::shipped::ShippedEdge;
use keygate_e2e::stack::unique_name;

/// Waits for the access log line of the request whose path holds `tag`.
async fn line_for(shipped: &ShippedEdge, tag: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = shipped
            .access_log_lines()
            .into_iter()
            .find(|line| line.contains(tag))
        {
            return line;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no access log line for {tag} within 15 s; the log:\n{}",
            shipped.access_log_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the shipped format writes after `upstream=…`: the filter's one
/// property, `user=… key=… server=… deny=…`, or `-` when it set none.
fn keygate_fields(line: &str) -> &str {
    let upstream = line
        .find(" upstream=")
        .unwrap_or_else(|| panic!("no upstream field in {line}"));
    let rest = &line[upstream + 1..];
    let at = rest
        .find(' ')
        .unwrap_or_else(|| panic!("nothing after upstream= in {line}"));
    rest[at + 1..].trim_end()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_names_the_key_of_allowed_and_denied_requests() {
    let shipped = ShippedEdge::start("access-log-identity").await;
    let (user, key) = shipped.echo_key().await;
    let edge = shipped.edge();
    let admin = shipped.control_plane.admin();

    // Allowed: owner, key and server.
    let tag = unique_name("allowed");
    let response = edge
        .get(&format!("/mcp-connect/echo/{tag}"), Some(&key.key))
        .await
        .expect("allowed request");
    assert_eq!(response.status, 200, "{response:?}");
    let line = line_for(&shipped, &tag).await;
    assert_eq!(
        keygate_fields(&line),
        format!("user={user} key={} server=echo deny=-", key.id),
        "{line}"
    );

    // Denied out of scope: the reason and the key, no identity.
    let tag = unique_name("denied");
    let response = edge
        .get(&format!("/mcp-connect/time/{tag}"), Some(&key.key))
        .await
        .expect("denied request");
    assert_eq!(response.status, 403, "{response:?}");
    let line = line_for(&shipped, &tag).await;
    assert_eq!(
        keygate_fields(&line),
        format!("user=- key={} server=- deny=out_of_scope", key.id),
        "{line}"
    );

    // A disabled key: refused as unknown, and the log says which key it was.
    admin.set_key_enabled(key.id, false).await.unwrap();
    let start = Instant::now();
    loop {
        let probe = edge
            .get("/mcp-connect/echo/probe", Some(&key.key))
            .await
            .expect("probe");
        if probe.status == 401 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{probe:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(WORKERS_AGREE_AFTER).await;
    let tag = unique_name("disabled");
    let response = edge
        .get(&format!("/mcp-connect/echo/{tag}"), Some(&key.key))
        .await
        .expect("disabled key");
    assert_eq!(response.status, 401, "{response:?}");
    let line = line_for(&shipped, &tag).await;
    assert_eq!(
        keygate_fields(&line),
        format!("user=- key={} server=- deny=unknown_key", key.id),
        "{line}"
    );

    // No key at all: only the reason.
    let tag = unique_name("nokey");
    let response = edge
        .get(&format!("/mcp-connect/echo/{tag}"), None)
        .await
        .expect("no key");
    assert_eq!(response.status, 401, "{response:?}");
    let line = line_for(&shipped, &tag).await;
    assert_eq!(
        keygate_fields(&line),
        "user=- key=- server=- deny=missing_key",
        "{line}"
    );

    // A request the filter lets pass without deciding (the console's
    // pages, no key): the filter sets nothing, Envoy writes `-`.
    let tag = unique_name("passed");
    let response = edge
        .get(&format!("/{tag}"), None)
        .await
        .expect("console path");
    assert_ne!(response.status, 401, "{response:?}");
    let line = line_for(&shipped, &tag).await;
    assert_eq!(keygate_fields(&line), "-", "{line}");

    // The key itself never reaches the log.
    let secret = &key.key[key.key.len() - 43..];
    for line in shipped.access_log_lines() {
        assert!(!line.contains(secret) && !line.contains("ok1-"), "{line}");
    }
}
