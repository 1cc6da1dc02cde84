//! Key identity for operators, end to end through the real Envoy with the
//! shipped `envoy/envoy.yaml`: its access log names the key's owner, the key
//! and the MCP server of an allowed request, and the reason and the key of
//! a denied one, read from the filter's filter state (no header carries
//! them, so denials are covered too), and never the key itself.

use std::time::{Duration, Instant};

use keygate_e2e::edge::WORKERS_AGREE_AFTER;
use keygate_e2e::keys::secret_part;
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

/// Sends `GET {path_prefix}{tag}` (a fresh tag) with `key`; returns the
/// answer's status and the keygate fields of its access-log line.
async fn logged(shipped: &ShippedEdge, path_prefix: &str, key: Option<&str>) -> (u16, String) {
    let tag = unique_name("logged");
    let response = shipped
        .edge()
        .get(&format!("{path_prefix}{tag}"), key)
        .await
        .unwrap_or_else(|e| panic!("GET {path_prefix}{tag}: {e}"));
    let line = line_for(shipped, &tag).await;
    println!("{} -> {}: {line}", path_prefix, response.status);
    (response.status, keygate_fields(&line).to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_names_the_key_of_allowed_and_denied_requests() {
    let shipped = ShippedEdge::start("access-log-identity").await;
    let (user, key) = shipped.echo_key().await;
    let edge = shipped.edge();
    let admin = shipped.control_plane.admin();

    // Allowed: owner, key and server.
    let (status, fields) = logged(&shipped, "/mcp-connect/echo/", Some(&key.key)).await;
    assert_eq!(status, 200);
    assert_eq!(
        fields,
        format!("user={user} key={} server=echo deny=-", key.id)
    );

    // Denied out of scope: the reason and the key, no identity.
    let (status, fields) = logged(&shipped, "/mcp-connect/time/", Some(&key.key)).await;
    assert_eq!(status, 403);
    assert_eq!(
        fields,
        format!("user=- key={} server=- deny=out_of_scope", key.id)
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
    let (status, fields) = logged(&shipped, "/mcp-connect/echo/", Some(&key.key)).await;
    assert_eq!(status, 401);
    assert_eq!(
        fields,
        format!("user=- key={} server=- deny=unknown_key", key.id)
    );

    // No key at all: only the reason.
    let (status, fields) = logged(&shipped, "/mcp-connect/echo/", None).await;
    assert_eq!(status, 401);
    assert_eq!(fields, "user=- key=- server=- deny=missing_key");

    // A request the filter lets pass without deciding (the console's
    // pages, no key): the filter sets nothing, Envoy writes `-`.
    let (status, fields) = logged(&shipped, "/", None).await;
    assert_ne!(status, 401);
    assert_eq!(fields, "-");

    // The key itself never reaches the log.
    let secret = secret_part(&key.key);
    for line in shipped.access_log_lines() {
        assert!(!line.contains(secret) && !line.contains("ok1-"), "{line}");
    }
}
