//! Issue 9, findings 2 and 7, end to end through the real Envoy: which
//! request headers reach an upstream, shown by an upstream that echoes what
//! it received, raw and as a WSGI app folds it (`-` and `_` alike).
//!
//! Finding 2: client-sent identity headers spelled with underscores
//! (`x_keygate_user_id`) never reach an upstream: the filter drops them even
//! where Envoy lets underscores through, and the shipped config and every
//! example refuse header names with underscores outright.
//! Finding 7: the shipped config's access log never shows a query string or
//! a path chosen by a client header, and Envoy's own `x-envoy-*` request
//! headers sent by a client never reach an upstream.

use std::time::{Duration, Instant};

use keygate_e2e::control_plane::ControlPlane;
use keygate_e2e::dirs::TestDir;
use keygate_e2e::edge::{Edge, WORKERS_AGREE_AFTER};
use keygate_e2e::env;
use keygate_e2e::envoy::{Envoy, EnvoyConfig, WaitFor};
use keygate_e2e::header_echo::{HeaderEcho, Seen};
use keygate_e2e::shipped::ShippedEdge;
use keygate_e2e::stack::unique_name;

/// The identity headers the filter sets (the tests' filter configuration).
const IDENTITY_HEADERS: [&str; 3] = ["x-keygate-user-id", "x-keygate-key-id", "x-keygate-server"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscored_identity_headers_never_reach_a_folding_upstream() {
    let dir = TestDir::new("underscore-filter");
    let control_plane = ControlPlane::start(dir.path()).await;
    let echo = HeaderEcho::start(dir.path(), "wsgi");
    let admin = control_plane.admin();
    admin.create_server("wsgi").await.unwrap();
    // The harness's bootstrap leaves headers_with_underscores_action at
    // Envoy's default, ALLOW, as an operator's own config may: the filter
    // alone must hold.
    let config = EnvoyConfig::new(
        control_plane.port(),
        control_plane.data_plane_token(),
        vec![("wsgi".to_owned(), echo.port())],
    );
    let envoy = Envoy::start(dir.path(), &config, WaitFor::FirstSync).await;
    let edge = Edge::new(envoy.listener_port());
    let user = admin.create_user(&unique_name("underscore")).await.unwrap();
    admin.grant_user(user, &["wsgi"]).await.unwrap();
    let key = admin.create_key_for(user, &["wsgi"], None).await.unwrap();
    wait_until_open(&edge, "/mcp-connect/wsgi/ready", &key.key).await;

    let bearer = format!("Bearer {}", key.key);
    let headers = [
        ("Authorization", bearer.as_str()),
        ("x_keygate_user_id", "4"),
        ("X_Keygate-Key_Id", "99"),
        ("x-keygate_server", "beta"),
        ("X_KEYGATE_EXTRA", "spoofed"),
        ("x_custom_header", "kept"),
    ];
    let response = edge
        .raw("GET", "/mcp-connect/wsgi/whoami", &headers, "")
        .await;
    assert_eq!(response.status, 200, "{response:?}\n{}", envoy.log_tail(40));
    let seen = Seen::parse(&response.body);
    // Underscores really pass this Envoy (else the test would prove nothing).
    assert_eq!(seen.values("x_custom_header"), ["kept"], "{seen:?}");
    let expected = [
        ("x-keygate-user-id", user.to_string()),
        ("x-keygate-key-id", key.id.to_string()),
        ("x-keygate-server", "wsgi".to_owned()),
    ];
    for (name, value) in &expected {
        assert_eq!(
            seen.environ_value(name),
            Some(value.as_str()),
            "the folding upstream must see only the filter's {name}: {seen:?}"
        );
        assert_eq!(seen.values(name), [value.as_str()], "{seen:?}");
    }
    for name in IDENTITY_HEADERS.iter().chain(&["x-keygate-extra"]) {
        assert!(
            seen.folded_spellings_of(name).is_empty(),
            "an underscore spelling of {name} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(seen.environ_value("x-keygate-extra"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_rejects_header_names_with_underscores() {
    let shipped = ShippedEdge::start("underscore-shipped").await;
    let (_, key) = shipped.echo_key().await;
    let edge = shipped.edge();
    let bearer = format!("Bearer {}", key.key);

    // The same request without an underscore reaches the echo.
    let plain = edge
        .raw(
            "GET",
            "/mcp-connect/echo/plain",
            &[("authorization", bearer.as_str()), ("x-custom-header", "1")],
            "",
        )
        .await;
    assert_eq!(plain.status, 200, "{plain:?}");
    Seen::parse(&plain.body);

    for (path, name) in [
        ("/mcp-connect/echo/spoof", "x_keygate_user_id"),
        ("/mcp-connect/echo/spoof", "X_Keygate-Key_Id"),
        ("/mcp-connect/echo/spoof", "x_custom_header"),
        ("/api/me", "x_keygate_user_id"),
    ] {
        let response = edge
            .raw(
                "GET",
                path,
                &[("authorization", bearer.as_str()), (name, "4")],
                "",
            )
            .await;
        assert_eq!(
            response.status,
            400,
            "{name} on {path}: Envoy must refuse header names with underscores: {response:?}\n{}",
            shipped.log_tails(30)
        );
        assert!(
            !response.body.contains("\"environ\""),
            "{name} reached the upstream: {response:?}"
        );
    }
}

/// The examples cannot run here (Kubernetes, a Wasm URL); each must carry
/// its platform's setting that refuses header names with underscores, as a
/// setting (not only in a comment).
#[test]
fn every_example_rejects_header_names_with_underscores() {
    let examples = env::workspace_dir().join("envoy").join("examples");
    for (file, kind, setting) in [
        (
            "wasm-from-url.yaml",
            "HttpConnectionManager",
            "headers_with_underscores_action: REJECT_REQUEST",
        ),
        (
            "istio-wasmplugin.yaml",
            "kind: EnvoyFilter",
            "headers_with_underscores_action: REJECT_REQUEST",
        ),
        (
            "envoy-gateway-extension-policy.yaml",
            "kind: ClientTrafficPolicy",
            "withUnderscoresAction: RejectRequest",
        ),
    ] {
        let path = examples.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let settings: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .collect();
        assert!(
            settings.iter().any(|line| line.contains(kind)),
            "{file}: no {kind}"
        );
        assert!(
            settings.iter().any(|line| line.starts_with(setting)),
            "{file}: no `{setting}`"
        );
    }
}

/// Polls `path` with `key` until the edge lets it through (200).
async fn wait_until_open(edge: &Edge, path: &str, key: &str) {
    let start = Instant::now();
    loop {
        let response = edge.get(path, Some(key)).await.expect("GET via the edge");
        if response.status == 200 {
            tokio::time::sleep(WORKERS_AGREE_AFTER).await;
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} not open with a new key within 10 s: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Finding 7: the access log shows the path the client asked for, without
// its query string and never a path a client header chose, and the shipped
// Envoy strips Envoy's own `x-envoy-*` request headers sent by clients.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_never_shows_a_query_or_a_client_chosen_path() {
    let shipped = ShippedEdge::start("access-log").await;
    let (_, key) = shipped.echo_key().await;
    let edge = shipped.edge();

    // A key in the query string (a client mistake) never lands in the log.
    let tag = unique_name("logged");
    let target = format!("/mcp-connect/echo/{tag}?key={}", key.key);
    let response = edge.raw("GET", &target, &[], "").await;
    assert_eq!(response.status, 401, "{response:?}");
    let line = wait_for_access_line(&shipped, |line| line.contains(&tag)).await;
    assert!(
        line.contains(&format!("\"GET /mcp-connect/echo/{tag} ")),
        "the line must show the path: {line}"
    );
    assert!(
        !line.contains('?') && !line.contains("ok1-") && !line.contains(&key.key),
        "the query string (and the key in it) reached the access log: {line}"
    );

    // A client-sent x-envoy-original-path never decides the logged path.
    let fake = unique_name("fake");
    let fake_path = format!("/api/{fake}");
    let bearer = format!("Bearer {}", key.key);
    let response = edge
        .raw(
            "GET",
            "/api/me",
            &[
                ("authorization", bearer.as_str()),
                ("x-envoy-original-path", fake_path.as_str()),
            ],
            "",
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let line = wait_for_access_line(&shipped, |line| {
        line.contains(&fake) || line.contains("\"GET /api/me ")
    })
    .await;
    assert!(
        line.contains("\"GET /api/me ") && !line.contains(&fake),
        "the access log shows a path the client chose: {line}"
    );

    // Nor on a request Envoy refuses before it strips the header (an escaped
    // slash is a 400 from path normalization; found by an attacker's review).
    for escaped in ["%2F", "%5C"] {
        let tag = unique_name("escaped");
        let fake = unique_name("fake");
        let fake_path = format!("/api/{fake}?key=ok1-1-1-secret");
        let response = edge
            .raw(
                "GET",
                &format!("/mcp-connect/echo/{tag}{escaped}b"),
                &[("x-envoy-original-path", fake_path.as_str())],
                "",
            )
            .await;
        assert_eq!(response.status, 400, "{escaped}: {response:?}");
        let line =
            wait_for_access_line(&shipped, |line| line.contains(&fake) || line.contains(&tag))
                .await;
        assert!(
            line.contains(&tag) && !line.contains(&fake) && !line.contains("ok1-"),
            "{escaped}: the access log shows a path the client chose: {line}"
        );
    }

    // Allowed MCP requests name their route, since the logged path is the one
    // sent upstream (after prefix_rewrite).
    let tag = unique_name("routed");
    let response = edge
        .raw(
            "GET",
            &format!("/mcp-connect/echo/{tag}"),
            &[("authorization", bearer.as_str())],
            "",
        )
        .await;
    assert_ne!(response.status, 401, "{response:?}");
    let line = wait_for_access_line(&shipped, |line| line.contains(&tag)).await;
    assert!(line.contains("route=mcp_echo"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_envoy_headers_never_reach_the_upstream() {
    let shipped = ShippedEdge::start("envoy-headers").await;
    let (_, key) = shipped.echo_key().await;
    let bearer = format!("Bearer {}", key.key);
    // Headers Envoy acts on or forwards as its own; a client must not set them.
    let spoofed = [
        ("x-envoy-internal", "true"),
        ("x-envoy-original-path", "/api/spoofed"),
        ("x-envoy-external-address", "203.0.113.9"),
        ("x-envoy-decorator-operation", "spoofed"),
        ("x-envoy-downstream-service-cluster", "spoofed"),
        ("x-envoy-downstream-service-node", "spoofed"),
        ("x-envoy-ip-tags", "spoofed"),
        ("x-envoy-force-trace", "true"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-max-retries", "9"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
        ("x-envoy-hedge-on-per-try-timeout", "true"),
        ("x-envoy-upstream-alt-stat-name", "spoofed"),
    ];
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(&spoofed);
    let path = "/mcp-connect/echo/envoy-headers";
    let response = shipped.edge().raw("GET", path, &headers, "").await;
    assert_eq!(response.status, 200, "{response:?}");
    let seen = Seen::parse(&response.body);
    for (name, value) in spoofed {
        assert!(
            !seen.values(name).contains(&value),
            "the client's {name}: {value} reached the upstream: {seen:?}"
        );
    }
    // Envoy sets this one itself on a rewritten route: the real path.
    assert!(
        seen.values("x-envoy-original-path")
            .iter()
            .all(|v| *v == path),
        "{seen:?}"
    );
}

/// The console and the MCP URLs share one origin, so a browser's console
/// cookies would travel with any request it makes to an MCP URL: the MCP
/// routes drop them, and an MCP server cannot set cookies on the console's
/// origin either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cookies_never_reach_an_mcp_server() {
    let shipped = ShippedEdge::start("mcp-cookies").await;
    let (_, key) = shipped.echo_key().await;
    let bearer = format!("Bearer {}", key.key);
    let headers = [
        ("authorization", bearer.as_str()),
        (
            "cookie",
            "keygate_session=session-value; keygate_login=login-value",
        ),
    ];
    let response = shipped
        .edge()
        .raw("GET", "/mcp-connect/echo/cookies", &headers, "")
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let seen = Seen::parse(&response.body);
    assert!(seen.values("cookie").is_empty(), "{seen:?}");
    assert!(!response.body.contains("session-value"), "{response:?}");
}

/// Waits for an access log line that `matches` and returns it.
async fn wait_for_access_line(shipped: &ShippedEdge, matches: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = shipped
            .access_log_lines()
            .into_iter()
            .find(|line| matches(line))
        {
            return line;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no such access log line within 15 s; the log:\n{}",
            shipped.access_log_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
