//! Issue 4's end-to-end tests: real MCP clients (rmcp and the official
//! Python SDK) reach real MCP servers through Envoy with an ok1 key.
//!
//! One stack is shared by this file: `alpha` (echo) and `beta` (time) are
//! registered; `gamma` (echo) is routed by Envoy but registered in the control
//! plane only by the test of a server added later.

use std::process::Stdio;
use std::time::{Duration, Instant};

use keygate_e2e::edge::{
    SESSION_PROTOCOL_VERSION, assert_initialized_by, assert_insufficient_scope, assert_missing_key,
    jsonrpc_messages,
};
use keygate_e2e::env;
use keygate_e2e::mcp_client::{self, Lifecycle};
use keygate_e2e::mcp_server::Tool;
use keygate_e2e::stack::{ServerSpec, Stack, StackOptions};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static SHARED: OnceCell<Stack> = OnceCell::const_new();

async fn shared() -> &'static Stack {
    SHARED
        .get_or_init(|| {
            Stack::start_shared(
                "mcp-shared",
                StackOptions {
                    servers: vec![
                        ServerSpec::registered("alpha", Tool::Echo),
                        ServerSpec::registered("beta", Tool::Time),
                        ServerSpec::unregistered("gamma", Tool::Echo),
                    ],
                    ..StackOptions::default()
                },
            )
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_initializes_lists_and_calls_tools_through_envoy() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("rmcp", &["alpha", "beta"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    for lifecycle in [Lifecycle::Session, Lifecycle::Default] {
        let client = mcp_client::connect(&edge.mcp_url("alpha"), &key.key, &[], lifecycle)
            .await
            .unwrap_or_else(|e| panic!("{lifecycle:?}: rmcp client could not connect: {e}"));
        let info = client.peer_info().expect("server info after initialize");
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("alpha"),
            "{lifecycle:?}: {info:?}"
        );
        assert_eq!(
            mcp_client::tool_names(&client).await,
            ["echo", "whoami"],
            "{lifecycle:?}"
        );
        let echoed =
            mcp_client::call_tool(&client, "echo", json!({"text": "through the edge"})).await;
        assert_eq!(
            mcp_client::text_of(&echoed),
            "through the edge",
            "{lifecycle:?}"
        );
        assert_ne!(echoed.is_error, Some(true), "{lifecycle:?}: {echoed:?}");
        // Several calls on one connection (session reuse).
        for i in 0..3 {
            let text = format!("call {i}");
            let echoed = mcp_client::call_tool(&client, "echo", json!({"text": text})).await;
            assert_eq!(mcp_client::text_of(&echoed), text);
        }
        let whoami = mcp_client::whoami(&client).await;
        assert_eq!(whoami["userId"], user.to_string(), "{whoami}");
        assert_eq!(whoami["authorizationPresent"], false, "{whoami}");
        client.cancel().await.expect("close client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_header_and_streamed_responses_pass_through_envoy() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("session", &["alpha"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;
    let bearer = format!("Bearer {}", key.key);
    let path = "/mcp-connect/alpha/mcp";

    let init = edge.initialize("alpha", Some(&key.key)).await;
    assert_initialized_by(&init, "alpha");
    assert!(
        init.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "initialize should answer as an SSE stream: {init:?}"
    );
    let session = init
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    let with_session = |extra: Vec<(&'static str, String)>| {
        let mut headers: Vec<(String, String)> = vec![
            ("authorization".into(), bearer.clone()),
            ("content-type".into(), "application/json".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
            ("mcp-session-id".into(), session.clone()),
            (
                "mcp-protocol-version".into(),
                SESSION_PROTOCOL_VERSION.into(),
            ),
        ];
        headers.extend(extra.into_iter().map(|(n, v)| (n.to_owned(), v)));
        headers
    };
    let send = |method: &'static str, headers: Vec<(String, String)>, body: Option<Value>| {
        let edge = edge.clone();
        async move {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            edge.send(method, path, &refs, body.map(|b| b.to_string()))
                .await
                .expect("request through the edge")
        }
    };

    let initialized = send(
        "POST",
        with_session(vec![]),
        Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    )
    .await;
    assert_eq!(initialized.status, 202, "{initialized:?}");

    // The server-to-client stream (GET with the session) opens through Envoy
    // and stays open: its headers arrive before any end of body.
    let http = keygate_e2e::http_client();
    let mut stream = http
        .get(edge.mcp_url("alpha"))
        .header("authorization", &bearer)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", SESSION_PROTOCOL_VERSION)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stream.status(), 200, "GET stream: {stream:?}");
    assert!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{stream:?}"
    );
    match tokio::time::timeout(Duration::from_secs(1), stream.chunk()).await {
        // Nothing yet, and still open: a streamed (unbuffered) response.
        Err(_) => {}
        Ok(Ok(Some(bytes))) => {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                text.contains("retry:")
                    || text.contains("data:")
                    || text.starts_with(':')
                    || text.contains("id:"),
                "GET stream's first bytes are not SSE: {text:?}"
            );
        }
        Ok(other) => panic!("GET stream ended or failed at once: {other:?}"),
    }

    // A tool call in the session answers as an SSE stream with the result.
    let call = send(
        "POST",
        with_session(vec![]),
        Some(json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "streamed"}}
        })),
    )
    .await;
    assert_eq!(call.status, 200, "{call:?}");
    assert!(
        call.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{call:?}"
    );
    let messages = jsonrpc_messages(&call.body);
    let answer = messages
        .iter()
        .find(|m| m["id"] == 7)
        .unwrap_or_else(|| panic!("no answer to id 7 in {messages:?}"));
    assert_eq!(
        answer["result"]["content"][0]["text"], "streamed",
        "{answer}"
    );

    // The session id is no credential: without the key the edge refuses.
    let mut no_key = with_session(vec![]);
    no_key.retain(|(n, _)| n != "authorization");
    let refused = send(
        "POST",
        no_key,
        Some(json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"})),
    )
    .await;
    assert_missing_key(&refused);

    drop(stream);
    let mut delete_headers = with_session(vec![]);
    delete_headers.retain(|(n, _)| n != "content-type");
    let closed = send("DELETE", delete_headers, None).await;
    assert!(
        (200..300).contains(&closed.status),
        "DELETE session through the edge: {closed:?}"
    );
}

/// Runs tests/python/mcp_client.py against `url` with `key` in `mode`
/// (`auto` or `legacy`); returns its exit code, JSON report and stderr.
async fn run_python_client(url: &str, key: &str, mode: &str) -> (i32, Value, String) {
    let python = env::required_file(env::PYTHON);
    let script = env::crate_dir().join("python").join("mcp_client.py");
    let child = tokio::process::Command::new(python)
        .arg(&script)
        .arg(url)
        .arg(mode)
        .env("KEYGATE_TEST_KEY", key)
        .env("NO_PROXY", "*")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python MCP client");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("Python MCP client did not finish within 90 s")
        .expect("Python MCP client output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("Python client printed no JSON.\nstdout: {stdout}\nstderr: {stderr}")
        });
    assert!(
        !stdout.contains(key) && !stderr.contains(key),
        "the key is in the Python client's output"
    );
    (output.status.code().unwrap_or(-1), report, stderr)
}

/// HTTP statuses the Python SDK received, in order.
fn python_statuses(report: &Value) -> Vec<u64> {
    report["httpStatuses"]
        .as_array()
        .unwrap_or_else(|| panic!("no httpStatuses in {report}"))
        .iter()
        .map(|s| {
            s["status"]
                .as_u64()
                .unwrap_or_else(|| panic!("bad status in {report}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_sdk_calls_a_tool_with_a_bearer_key() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("python", &["alpha", "beta"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    for mode in ["auto", "legacy"] {
        let (code, report, stderr) =
            run_python_client(&edge.mcp_url("alpha"), &key.key, mode).await;
        assert_eq!(code, 0, "{mode}: Python client failed: {report}\n{stderr}");
        assert_eq!(report["serverName"], "alpha", "{mode}: {report}");
        assert_eq!(
            report["tools"],
            json!(["echo", "whoami"]),
            "{mode}: {report}"
        );
        assert_eq!(report["echo"], "hello from python", "{mode}: {report}");
        assert_eq!(report["echoIsError"], false, "{mode}: {report}");
        assert_eq!(report["whoami"]["serverName"], "alpha", "{mode}: {report}");
        assert_eq!(
            report["whoami"]["userId"],
            user.to_string(),
            "{mode}: {report}"
        );
        assert_eq!(
            report["whoami"]["keyId"],
            key.id.to_string(),
            "{mode}: {report}"
        );
        assert_eq!(
            report["whoami"]["authorizationPresent"], false,
            "{mode}: {report}"
        );
        let statuses = python_statuses(&report);
        assert!(
            statuses.contains(&200) && statuses.iter().all(|s| (200..300).contains(s)),
            "{mode}: every answer through the edge should succeed: {statuses:?}"
        );
        if mode == "legacy" {
            // The session ends with a DELETE the SDK accepts (200, 204 or
            // 405); rmcp's own 202 made it log a failed termination.
            let deletes: Vec<u64> = report["httpStatuses"]
                .as_array()
                .expect("statuses")
                .iter()
                .filter(|s| s["method"] == "DELETE")
                .filter_map(|s| s["status"].as_u64())
                .collect();
            assert_eq!(deletes, vec![204], "{mode}: {report}");
            assert!(
                !stderr.contains("Session termination failed"),
                "{mode}: {stderr}"
            );
        }
        println!(
            "Python SDK ({mode}) negotiated protocol {}",
            report["protocolVersion"]
        );

        // The same key on the other server: the SDK fails on the edge's 403.
        let (code, report, _) = run_python_client(&edge.mcp_url("beta"), &key.key, mode).await;
        assert_eq!(
            code, 2,
            "{mode}: Python client should fail on beta: {report}"
        );
        let statuses = python_statuses(&report);
        assert!(
            statuses.contains(&403) && !statuses.contains(&200),
            "{mode}: want the edge's 403 and no success on beta: {report}"
        );
        let challenges: Vec<&str> = report["httpStatuses"]
            .as_array()
            .expect("statuses")
            .iter()
            .filter_map(|s| s["wwwAuthenticate"].as_str())
            .collect();
        assert!(
            challenges.contains(&"Bearer error=\"insufficient_scope\""),
            "{mode}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_for_one_server_is_403_on_the_other() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("other", &["alpha", "beta"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    assert_insufficient_scope(&edge.initialize("beta", Some(&key.key)).await, &key.key);
    let refused =
        mcp_client::connect(&edge.mcp_url("beta"), &key.key, &[], Lifecycle::Session).await;
    assert!(refused.is_err(), "rmcp reached beta with a key for alpha");
    // And the right server still works with it.
    let client = mcp_client::connect(&edge.mcp_url("alpha"), &key.key, &[], Lifecycle::Session)
        .await
        .expect("alpha");
    assert_eq!(mcp_client::whoami(&client).await["serverName"], "alpha");
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_key_reaches_every_server_including_one_added_later() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();

    // A user whose access names alpha and beta, with a `*` key.
    let named = stack
        .user_with_access("star-named", &["alpha", "beta"])
        .await;
    let named_key = admin.create_key_for(named, &["*"], None).await.unwrap();
    // A user with access to every server, now and later, with a `*` key.
    let everything = stack.user_with_access("star-all", &["*"]).await;
    let every_key = admin
        .create_key_for(everything, &["*"], None)
        .await
        .unwrap();
    // A key scoped to alpha only, of the same all-access user.
    let alpha_key = admin
        .create_key_for(everything, &["alpha"], None)
        .await
        .unwrap();
    stack.wait_key_allowed("alpha", &named_key.key).await;
    stack.wait_key_allowed("alpha", &every_key.key).await;

    for (key, server) in [
        (&named_key, "alpha"),
        (&named_key, "beta"),
        (&every_key, "alpha"),
        (&every_key, "beta"),
    ] {
        stack.wait_key_allowed(server, &key.key).await;
        let client = mcp_client::connect(&edge.mcp_url(server), &key.key, &[], Lifecycle::Session)
            .await
            .unwrap_or_else(|e| panic!("{server}: {e}"));
        assert_eq!(mcp_client::whoami(&client).await["serverName"], server);
        client.cancel().await.expect("close");
    }
    // gamma is routed by Envoy but not yet a registered server.
    assert_insufficient_scope(
        &edge.initialize("gamma", Some(&named_key.key)).await,
        &named_key.key,
    );
    // Not registered: closed even to an all-access `*` key.
    assert_insufficient_scope(
        &edge.initialize("gamma", Some(&every_key.key)).await,
        &every_key.key,
    );

    admin.create_server("gamma").await.unwrap();
    let added = Instant::now();
    let reach = stack.wait_key_allowed("gamma", &every_key.key).await;
    println!("server added later: reachable with the existing `*` key after {reach:?}");
    let client = mcp_client::connect(
        &edge.mcp_url("gamma"),
        &every_key.key,
        &[],
        Lifecycle::Session,
    )
    .await
    .expect("gamma with the `*` key");
    assert_eq!(mcp_client::whoami(&client).await["serverName"], "gamma");
    assert_eq!(mcp_client::whoami(&client).await["server"], "gamma");
    client.cancel().await.expect("close");
    // Keys scoped to named servers do not grow.
    assert_insufficient_scope(
        &edge.initialize("gamma", Some(&alpha_key.key)).await,
        &alpha_key.key,
    );
    // The named-access user's `*` key reaches gamma once access is granted, with no new key.
    assert_insufficient_scope(
        &edge.initialize("gamma", Some(&named_key.key)).await,
        &named_key.key,
    );
    admin.grant_user(named, &["gamma"]).await.unwrap();
    let granted = stack.wait_key_allowed("gamma", &named_key.key).await;
    println!(
        "grant of gamma reached the `*` key after {granted:?} ({:?} since gamma was added)",
        added.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_access_through_a_rule_stops_the_key_at_the_edge() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = admin
        .create_user(&keygate_e2e::stack::unique_name("rule-revoke"))
        .await
        .unwrap();
    let subjects = [format!("user:{user}")];
    let rule_name = keygate_e2e::stack::unique_name("rule-revoke");
    let rule = admin
        .grant(&rule_name, &["alpha", "beta"], &subjects)
        .await
        .unwrap();
    let key = stack.usable_key(user, &["*"], "alpha").await;
    stack.wait_key_allowed("beta", &key.key).await;
    let client = mcp_client::connect(&edge.mcp_url("alpha"), &key.key, &[], Lifecycle::Session)
        .await
        .expect("alpha before revocation");
    assert_eq!(mcp_client::whoami(&client).await["serverName"], "alpha");

    // The rule changes to beta only: the same key loses alpha at the edge.
    admin
        .update_rule(rule, &rule_name, &["beta"], &subjects)
        .await
        .unwrap();
    let (took, refused) = edge
        .poll_until_status(
            "alpha",
            &key.key,
            403,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
    println!("REVOCATION (PUT access rule without alpha -> first 403 at the edge): {took:?}");
    assert_insufficient_scope(&refused, &key.key);
    assert!(
        took < Duration::from_secs(2),
        "access-rule revocation took {took:?}"
    );
    // The open rmcp session is cut off too: its next call is refused.
    let call = tokio::time::timeout(
        Duration::from_secs(20),
        client.call_tool(rmcp::model::CallToolRequestParams::new("whoami")),
    )
    .await
    .expect("tools/call after revocation neither failed nor answered in 20 s");
    assert!(
        call.is_err(),
        "an open session kept working after revocation: {call:?}"
    );
    drop(client);
    // Beta is still granted by the changed rule.
    let client = mcp_client::connect(&edge.mcp_url("beta"), &key.key, &[], Lifecycle::Session)
        .await
        .expect("beta still allowed");
    assert_eq!(mcp_client::whoami(&client).await["serverName"], "beta");
    client.cancel().await.expect("close");

    // Deleting the rule leaves the key nothing to open: it is still a valid
    // key (403 insufficient_scope, never 401), so a client is not told to
    // throw it away when it is access that went.
    admin.delete_rule(rule).await.unwrap();
    let (gone, refused) = edge
        .poll_until_status(
            "beta",
            &key.key,
            403,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
    println!("REVOCATION (DELETE last access rule -> first 403 at the edge): {gone:?}");
    assert_insufficient_scope(&refused, &key.key);
    assert!(gone < Duration::from_secs(2), "rule deletion took {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_server_sees_the_user_id_and_never_the_key() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let edge = stack.edge();
    let user = stack.user_with_access("identity", &["beta"]).await;
    let key = stack.usable_key(user, &["beta"], "beta").await;

    let client = mcp_client::connect(&edge.mcp_url("beta"), &key.key, &[], Lifecycle::Session)
        .await
        .expect("beta");
    assert_eq!(mcp_client::tool_names(&client).await, ["time", "whoami"]);
    let time = mcp_client::text_of(&mcp_client::call_tool(&client, "time", Value::Null).await);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&time).is_ok(),
        "time tool did not return RFC 3339: {time:?}"
    );
    let whoami = mcp_client::whoami(&client).await;
    assert_eq!(
        whoami,
        json!({
            "serverName": "beta",
            "userId": user.to_string(),
            "keyId": key.id.to_string(),
            "server": "beta",
            "authorizationPresent": false,
            "xApiKeyPresent": false
        })
    );
    client.cancel().await.expect("close");
}
