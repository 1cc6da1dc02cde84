//! Issue 3's integration tests, part 1: how the keygate filter decides
//! requests, in real Envoy 1.40 (2 workers) in front of the real control
//! plane and real MCP servers: scope, every status, path spellings, identity
//! headers, `/api/me`, metrics, logs.
//!
//! The tests share one stack; each creates its own users and keys, so they
//! cannot see each other's state.

use std::time::Duration;

use keygate_e2e::edge::{
    Edge, EdgeResponse, assert_edge_error, assert_initialized_by, assert_insufficient_scope,
    assert_invalid_token, assert_missing_key,
};
use keygate_e2e::envoy::metric_value;
use keygate_e2e::keys;
use keygate_e2e::mcp_client::{self, Lifecycle};
use keygate_e2e::spelling::assert_spellings_never_widen_scope;
use keygate_e2e::stack::{Stack, StackOptions, unique_name};
use serde_json::Value;
use tokio::sync::OnceCell;

static SHARED: OnceCell<Stack> = OnceCell::const_new();

/// `alpha` (echo) and `beta` (time) behind one Envoy, shared by this file's tests.
async fn shared() -> &'static Stack {
    SHARED
        .get_or_init(|| Stack::start_shared("edge-shared", StackOptions::default()))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_matrix_allows_exactly_the_keys_servers() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("matrix", &["alpha", "beta"]).await;

    let only_alpha = admin.create_key_for(user, &["alpha"], None).await.unwrap();
    let only_beta = admin.create_key_for(user, &["beta"], None).await.unwrap();
    let both = admin
        .create_key_for(user, &["alpha", "beta"], None)
        .await
        .unwrap();
    let every = stack.usable_key(user, &["*"], "alpha").await;

    let cases = [
        (&only_alpha, "alpha", true),
        (&only_alpha, "beta", false),
        (&only_beta, "alpha", false),
        (&only_beta, "beta", true),
        (&both, "alpha", true),
        (&both, "beta", true),
        (&every, "alpha", true),
        (&every, "beta", true),
    ];
    for (key, server, allowed) in cases {
        // The key may still be on its way to the edge; wait for the allowed ones.
        if allowed {
            stack.wait_key_allowed(server, &key.key).await;
        }
        let response = edge.initialize(server, Some(&key.key)).await;
        if allowed {
            assert_initialized_by(&response, server);
        } else {
            assert_insufficient_scope(&response, &key.key);
            assert_eq!(
                response.json()["error"],
                "API key not valid for this server"
            );
        }
    }

    // A `*` key of a user who may reach only alpha opens only alpha:
    // the key's scope is intersected with its owner's access.
    let narrow_user = stack.user_with_access("matrix-narrow", &["alpha"]).await;
    let narrow_every = stack.usable_key(narrow_user, &["*"], "alpha").await;
    assert_insufficient_scope(
        &edge.initialize("beta", Some(&narrow_every.key)).await,
        &narrow_every.key,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_on_mcp_path_is_401_bearer_challenge() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();

    let response = edge.initialize("alpha", None).await;
    assert_missing_key(&response);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(response.json()["error"], "API key required");

    // Credentials that are not ok1 keys count as no key on an MCP path.
    for authorization in ["Basic dXNlcjpwYXNz", "Bearer some-oidc-token", "Bearer"] {
        let response = edge
            .initialize_at(
                "/mcp-connect/alpha/mcp",
                &[("authorization", authorization)],
            )
            .await;
        assert_missing_key(&response);
    }
    // GET and DELETE are refused the same way as POST.
    for method in ["GET", "DELETE"] {
        let response = edge
            .send(method, "/mcp-connect/alpha/mcp", &[], None)
            .await
            .expect("request");
        assert_missing_key(&response);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_401_invalid_token() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("invalid", &["alpha"]).await;
    let good = stack.usable_key(user, &["alpha"], "alpha").await;

    let secret = keys::secret_part(&good.key);
    let truncated = good.key[..good.key.len() - 1].to_owned();
    let cases: Vec<(&str, String)> = vec![
        ("malformed: prefix only", "ok1-".to_owned()),
        ("malformed: garbage", "ok1-abc".to_owned()),
        ("malformed: truncated secret", truncated),
        ("malformed: one extra character", format!("{}A", good.key)),
        (
            "malformed: leading zero user id",
            format!("ok1-0{user}-{}-{secret}", good.id),
        ),
        (
            "malformed: negative key id",
            format!("ok1-{user}--{}-{secret}", good.id),
        ),
        (
            "malformed: non-base64url secret",
            format!("ok1-{user}-{}-{}", good.id, "+".repeat(43)),
        ),
        (
            "unknown key id",
            keys::with_key_id(&good.key, good.id + 1_000_000),
        ),
        ("never issued", keys::unknown_key()),
        ("wrong secret", keys::with_wrong_secret(&good.key)),
        ("wrong user id", keys::with_user_id(&good.key, user + 1)),
    ];
    for (what, key) in &cases {
        let response = edge.initialize("alpha", Some(key)).await;
        assert_eq!(response.status, 401, "{what}: {response:?}");
        assert_invalid_token(&response, key);
        assert_eq!(response.json()["error"], "invalid API key", "{what}");
        // The same through the X-API-Key header.
        let response = edge
            .initialize_at("/mcp-connect/alpha/mcp", &[("x-api-key", key.as_str())])
            .await;
        assert_eq!(response.status, 401, "{what} via x-api-key: {response:?}");
        assert_invalid_token(&response, key);
    }

    // Two different keys in one request are refused, not picked from.
    let other = admin.create_key_for(user, &["alpha"], None).await.unwrap();
    let bearer = format!("Bearer {}", good.key);
    let response = edge
        .initialize_at(
            "/mcp-connect/alpha/mcp",
            &[
                ("authorization", bearer.as_str()),
                ("x-api-key", other.key.as_str()),
            ],
        )
        .await;
    assert_invalid_token(&response, &good.key);

    // The scheme is case-insensitive and the key works in either header.
    let lower = format!("bearer {}", good.key);
    let response = edge
        .initialize_at(
            "/mcp-connect/alpha/mcp",
            &[("authorization", lower.as_str())],
        )
        .await;
    assert_initialized_by(&response, "alpha");
    let response = edge
        .initialize_at(
            "/mcp-connect/alpha/mcp",
            &[("x-api-key", good.key.as_str())],
        )
        .await;
    assert_initialized_by(&response, "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_open_nothing_but_mcp_paths_and_api_me() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("offroute", &["alpha"]).await;
    let key = stack.usable_key(user, &["*"], "alpha").await;
    let bearer = format!("Bearer {}", key.key);

    for (method, path) in [
        ("GET", "/api/api-keys"),
        ("POST", "/api/api-keys"),
        ("GET", "/api/users"),
        ("GET", "/api/admin-api-keys"),
        ("GET", "/healthz"),
        ("GET", "/internal/v1/key-table"),
        ("POST", "/api/me"),
        ("GET", "/api/me/"),
        ("GET", "/"),
    ] {
        let response = edge
            .send(method, path, &[("authorization", bearer.as_str())], None)
            .await
            .expect("request");
        assert_edge_error(&response, 403, Some(&key.key));
        assert_eq!(
            response.json()["error"],
            "API keys are not accepted on this path",
            "{method} {path}"
        );
        assert_eq!(response.header("www-authenticate"), None, "{method} {path}");
        // The same key as X-API-Key.
        let response = edge
            .send(method, path, &[("x-api-key", key.key.as_str())], None)
            .await
            .expect("request");
        assert_edge_error(&response, 403, Some(&key.key));
    }

    // Without an ok1 key, other paths pass untouched: the control plane
    // answers them itself (health, and the admin token for its API).
    let health = edge.get("/healthz", None).await.expect("healthz");
    assert_eq!(health.status, 200, "{health:?}");
    let admin_bearer = format!("Bearer {}", stack.control_plane.admin_token());
    let users = edge
        .send(
            "GET",
            "/api/users",
            &[("authorization", admin_bearer.as_str())],
            None,
        )
        .await
        .expect("users");
    assert_eq!(users.status, 200, "admin token through Envoy: {users:?}");
    let listed = users.json();
    let text = listed.to_string();
    assert!(
        text.contains("offroute-"),
        "user list misses the test user: {text}"
    );
    // The feed is not reachable without the data-plane token.
    let feed = edge
        .get("/internal/v1/key-table", None)
        .await
        .expect("feed");
    assert_eq!(feed.status, 401, "feed without token: {feed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_me_through_envoy_with_a_key_returns_its_user() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let username = unique_name("me");
    let user = admin.create_user(&username).await.unwrap();
    admin.grant_user(user, &["alpha"]).await.unwrap();
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    let response = edge.get("/api/me", Some(&key.key)).await.expect("me");
    assert_eq!(response.status, 200, "{response:?}");
    let me = response.json();
    assert_eq!(me["id"], user, "{me}");
    assert_eq!(me["username"], username.as_str(), "{me}");
    assert_eq!(me["role"], "user", "{me}");
    assert!(
        !response.body.contains(&key.key),
        "the key came back in /api/me"
    );

    // The edge checks the key before the control plane sees it.
    let wrong = keys::with_wrong_secret(&key.key);
    assert_invalid_token(
        &edge.get("/api/me", Some(&wrong)).await.expect("me"),
        &wrong,
    );
    let unknown = keys::unknown_key();
    assert_invalid_token(
        &edge.get("/api/me", Some(&unknown)).await.expect("me"),
        &unknown,
    );
    // Without any credential /api/me passes the edge and the control plane refuses it.
    let anonymous = edge.get("/api/me", None).await.expect("me");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    // Identity headers sent by a client are no credential anywhere.
    let admin_id = keygate_e2e::api::id_of(&admin.me().await.unwrap())
        .unwrap()
        .to_string();
    let user_id = user.to_string();
    let key_id = key.id.to_string();
    for spoofed_user in [admin_id.as_str(), user_id.as_str()] {
        let headers = [
            ("x-keygate-user-id", spoofed_user),
            ("x-keygate-key-id", key_id.as_str()),
            ("x-keygate-server", "alpha"),
        ];
        for path in ["/api/me", "/api/api-keys", "/api/users"] {
            let response = edge.send("GET", path, &headers, None).await.expect("spoof");
            assert_eq!(
                response.status, 401,
                "{path} with spoofed identity: {response:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_never_let_a_key_reach_another_server() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let user = stack.user_with_access("spelling", &["alpha", "beta"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;
    assert_insufficient_scope(
        &stack.edge().initialize("beta", Some(&key.key)).await,
        &key.key,
    );
    assert_spellings_never_widen_scope(&stack.edge(), &key.key, "alpha", "beta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_are_replaced_and_the_key_is_stripped() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("spoof", &["alpha"]).await;
    let victim = stack
        .user_with_access("spoof-victim", &["alpha", "beta"])
        .await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    let victim_id = victim.to_string();
    let spoofed = [
        ("x-keygate-user-id", victim_id.as_str()),
        ("x-keygate-key-id", "1"),
        ("x-keygate-server", "beta"),
        ("X-Keygate-Extra", "spoofed"),
    ];
    let client = mcp_client::connect(
        &edge.mcp_url("alpha"),
        &key.key,
        &spoofed,
        Lifecycle::Session,
    )
    .await
    .expect("rmcp client through the edge");
    let whoami = mcp_client::whoami(&client).await;
    assert_eq!(whoami["serverName"], "alpha", "{whoami}");
    assert_eq!(whoami["userId"], user.to_string(), "{whoami}");
    assert_eq!(whoami["keyId"], key.id.to_string(), "{whoami}");
    assert_eq!(whoami["server"], "alpha", "{whoami}");
    assert_eq!(
        whoami["authorizationPresent"], false,
        "key reached the upstream: {whoami}"
    );
    assert_eq!(whoami["xApiKeyPresent"], false, "{whoami}");
    client.cancel().await.expect("close client");

    // The same with the key in X-API-Key (and no Authorization at all).
    let mut headers = spoofed.to_vec();
    headers.push(("x-api-key", key.key.as_str()));
    let response = edge.initialize_at("/mcp-connect/alpha/mcp", &headers).await;
    assert_initialized_by(&response, "alpha");
    let session = response
        .header("mcp-session-id")
        .expect("session")
        .to_owned();
    let whoami = raw_whoami(&edge, "alpha", &session, &headers).await;
    assert_eq!(whoami["userId"], user.to_string(), "{whoami}");
    assert_eq!(whoami["keyId"], key.id.to_string(), "{whoami}");
    assert_eq!(whoami["server"], "alpha", "{whoami}");
    assert_eq!(
        whoami["xApiKeyPresent"], false,
        "x-api-key reached the upstream: {whoami}"
    );
    assert_eq!(whoami["authorizationPresent"], false, "{whoami}");
}

/// Finishes the handshake of `session` and calls `whoami` over plain HTTP.
async fn raw_whoami(edge: &Edge, server: &str, session: &str, headers: &[(&str, &str)]) -> Value {
    let path = format!("/mcp-connect/{server}/mcp");
    let mut all = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-session-id", session),
        (
            "mcp-protocol-version",
            keygate_e2e::edge::SESSION_PROTOCOL_VERSION,
        ),
    ];
    all.extend_from_slice(headers);
    let initialized = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = edge
        .send("POST", &path, &all, Some(initialized.to_string()))
        .await
        .expect("initialized");
    assert_eq!(
        response.status, 202,
        "notifications/initialized: {response:?}"
    );
    let call = serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}
    });
    let response: EdgeResponse = edge
        .send("POST", &path, &all, Some(call.to_string()))
        .await
        .expect("tools/call");
    assert_eq!(response.status, 200, "tools/call whoami: {response:?}");
    response.jsonrpc_result()["structuredContent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_table_show_in_envoy_metrics_on_both_workers() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("metrics", &["alpha"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    let before = stack.envoy.prometheus_stats().await;
    let wrong = keys::with_wrong_secret(&key.key);
    for _ in 0..10 {
        assert_initialized_by(&edge.initialize("alpha", Some(&key.key)).await, "alpha");
        assert_invalid_token(&edge.initialize("alpha", Some(&wrong)).await, &wrong);
    }
    // Each VM counts decisions in its memory and hands them to Envoy on its
    // 200 ms tick; other tests share this Envoy, so counters grow at least
    // by ours.
    let delta = |after: &str, name: &str| metric_value(after, name) - metric_value(&before, name);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let after = loop {
        let after = stack.envoy.prometheus_stats().await;
        let counted = delta(&after, "keygate_decisions_allow_allowed") >= 10.0
            && delta(&after, "keygate_decisions_deny_bad_secret") >= 10.0;
        if counted || std::time::Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(delta(&after, "keygate_decisions_allow_allowed") >= 10.0);
    assert!(delta(&after, "keygate_decisions_deny_bad_secret") >= 10.0);
    assert!(metric_value(&after, "keygate_table_keys") >= 1.0);
    assert!(metric_value(&after, "keygate_table_version") >= 1.0);
    assert!(metric_value(&after, "keygate_table_age_seconds") <= 5.0);
    assert!(
        !after.contains(&key.key) && !after.contains(&wrong),
        "a key is in the metrics"
    );

    // Each request came on a new connection: both workers served some.
    let listener = format!("127.0.0.1_{}", stack.envoy.listener_port());
    for worker in ["worker_0", "worker_1"] {
        let name = format!("listener.{listener}.{worker}.downstream_cx_total");
        let url = format!(
            "http://127.0.0.1:{}/stats?filter=^{}$",
            stack.envoy.admin_port(),
            name.replace('.', "\\.")
        );
        let text = keygate_e2e::http_client()
            .get(url)
            .send()
            .await
            .expect("stats")
            .text()
            .await
            .expect("stats body");
        let count: u64 = text
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"));
        assert!(count > 0, "{worker} served no connection: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens_never_appear_in_any_log() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("logs", &["alpha"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;
    let wrong = keys::with_wrong_secret(&key.key);
    // Allowed, refused, off-route and /api/me uses, in both key headers.
    assert_initialized_by(&edge.initialize("alpha", Some(&key.key)).await, "alpha");
    assert_insufficient_scope(&edge.initialize("beta", Some(&key.key)).await, &key.key);
    assert_invalid_token(&edge.initialize("alpha", Some(&wrong)).await, &wrong);
    let off_route = edge
        .send(
            "GET",
            "/api/users",
            &[("x-api-key", key.key.as_str())],
            None,
        )
        .await
        .expect("off route");
    assert_edge_error(&off_route, 403, Some(&key.key));
    assert_eq!(
        edge.get("/api/me", Some(&key.key))
            .await
            .expect("me")
            .status,
        200
    );
    // Let usage reports and access logs reach the files.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let logs = stack.all_logs();
    assert!(
        logs.len() > 1000,
        "the stack wrote hardly any log: {} bytes",
        logs.len()
    );
    let secret = |k: &str| keys::secret_part(k).to_owned();
    for (what, needle) in [
        ("key", key.key.clone()),
        ("secret", secret(&key.key)),
        ("wrong key", wrong.clone()),
        ("wrong secret", secret(&wrong)),
        ("admin token", stack.control_plane.admin_token().to_owned()),
        (
            "data-plane token",
            stack.control_plane.data_plane_token().to_owned(),
        ),
    ] {
        assert!(
            !logs.contains(&needle),
            "the {what} appears in a log of {}",
            stack.dir().display()
        );
    }
}
