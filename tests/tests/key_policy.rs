//! The key lifetime policy through real Envoy and the real control plane,
//! on SQLite and on PostgreSQL: a key the unused-key sweep turns off gets
//! 401 `invalid_token` at the edge, like any disabled key, while a key in
//! use keeps working; the lists say why; turned on again, it stays on.
//!
//! The control plane runs on the real clock (no flag moves its time), with
//! its sweep every second (`--key-policy-sweep-seconds 1`); the test makes a
//! key old by moving its creation and last use two days back in the
//! database (`ControlPlane::backdate_key`), under `maxUnusedDays: 1`.

use std::time::{Duration, Instant};

use keygate_e2e::api::Method;
use keygate_e2e::control_plane::ControlPlaneOptions;
use keygate_e2e::edge::{WORKERS_AGREE_AFTER, assert_initialized_by, assert_invalid_token};
use keygate_e2e::mcp_server::Tool;
use keygate_e2e::postgres::TestDatabase;
use keygate_e2e::stack::{ServerSpec, Stack, StackOptions};
use serde_json::{Value, json};

const DAY: i64 = 86_400;

async fn stack(label: &str, database_url: Option<String>) -> Stack {
    Stack::start(
        label,
        StackOptions {
            servers: vec![ServerSpec::registered("alpha", Tool::Echo)],
            control_plane: ControlPlaneOptions {
                database_url,
                extra_args: vec!["--key-policy-sweep-seconds".into(), "1".into()],
                ..ControlPlaneOptions::default()
            },
            ..StackOptions::default()
        },
    )
    .await
}

/// The key's record in the admin list, by id.
async fn listed(stack: &Stack, key_id: i64) -> Value {
    let list = stack
        .admin()
        .expect(Method::GET, "/api/admin-api-keys", None, &[200])
        .await
        .unwrap();
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|k| k["id"] == key_id))
        .cloned()
        .unwrap_or_else(|| panic!("key {key_id} not listed: {list}"))
}

async fn unused_key_is_refused_at_the_edge(stack: &Stack, backend: &str) {
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("policy", &["alpha"]).await;
    let idle = stack.usable_key(user, &["alpha"], "alpha").await;
    let busy = stack.usable_key(user, &["alpha"], "alpha").await;

    // The edge reports the idle key's use; once recorded, no request uses
    // it again, so its last use only gets older.
    let started = Instant::now();
    while listed(stack, idle.id).await["lastUsedAt"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the edge did not report the key's use within 20 s\n{}",
            stack.log_tails(60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.control_plane.backdate_key(idle.id, 2 * DAY).await;

    admin
        .expect(
            Method::PUT,
            "/api/settings/key-policy",
            Some(&json!({"maxUnusedDays": 1})),
            &[200],
        )
        .await
        .unwrap();
    let set = Instant::now();
    // The next sweep (within a second) turns it off. Only the API is asked
    // until then: a request with the key through the edge would be a use.
    let record = loop {
        let record = listed(stack, idle.id).await;
        if record["status"] == "disabled" {
            break record;
        }
        assert!(
            set.elapsed() < Duration::from_secs(10),
            "the sweep did not turn the key off within 10 s: {record}\n{}",
            stack.log_tails(60)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let swept = set.elapsed();
    assert_eq!(
        record["disabledReason"], "unused for 1 day (key policy)",
        "{record}"
    );
    // Then the edge refuses it, like any disabled key.
    let refused = edge.wait_invalid_token("alpha", &idle.key).await;
    println!(
        "POLICY {backend}: swept {swept:?} after the policy was set (sweep every 1 s); \
         401 at the edge {refused:?} after that"
    );
    tokio::time::sleep(WORKERS_AGREE_AFTER).await;
    assert_invalid_token(&edge.initialize("alpha", Some(&idle.key)).await, &idle.key);
    // The key in use is untouched.
    assert_initialized_by(&edge.initialize("alpha", Some(&busy.key)).await, "alpha");
    assert_eq!(listed(stack, busy.id).await["status"], "active");

    // Turned on again, it works at once and stays on through the next
    // sweeps (turning it on restarts its unused clock).
    let record = admin.set_key_enabled(idle.id, true).await.unwrap();
    assert_eq!(record["status"], "active", "{record}");
    stack.wait_key_allowed("alpha", &idle.key).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_initialized_by(&edge.initialize("alpha", Some(&idle.key)).await, "alpha");
    assert_eq!(listed(stack, idle.id).await["status"], "active");

    admin
        .expect(
            Method::PUT,
            "/api/settings/key-policy",
            Some(&json!({})),
            &[200],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_unused_past_the_policy_is_refused_at_the_edge_sqlite() {
    let stack = stack("policy-sqlite", None).await;
    unused_key_is_refused_at_the_edge(&stack, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_unused_past_the_policy_is_refused_at_the_edge_postgres() {
    let database = TestDatabase::create().await;
    let stack = stack("policy-postgres", Some(database.url().to_owned())).await;
    unused_key_is_refused_at_the_edge(&stack, "postgres").await;
}
