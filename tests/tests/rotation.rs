//! Rotating a key with overlap, through real Envoy and the real control
//! plane, on SQLite and on PostgreSQL:
//! - during the overlap both secrets open the key's servers and `/api/me`,
//!   and the list says the old secret is still in use (the edge reported it);
//! - a rotation without overlap refuses the old secret within the same time
//!   as a deletion, and ends an older overlap at once;
//! - the old secret is refused at its deadline by the edge's own clock,
//!   with the control plane stopped while the deadline passes, while the
//!   new secret keeps working;
//! - the key keeps exactly its scope.
//!
//! Each backend has its own stack: the test stops its control plane.

use std::time::{Duration, Instant};

use keygate_e2e::api::Method;
use keygate_e2e::edge::{
    Edge, WORKERS_AGREE_AFTER, assert_initialized_by, assert_insufficient_scope,
    assert_invalid_token,
};
use keygate_e2e::postgres::TestDatabase;
use keygate_e2e::stack::{Stack, StackOptions};
use keygate_e2e::unix_now;
use serde_json::{Value, json};

/// Rotates key `id` through the admin route; returns the new full key and
/// the record.
async fn rotate(stack: &Stack, id: i64, overlap_seconds: i64) -> (String, Value) {
    let record = stack
        .admin()
        .expect(
            Method::POST,
            &format!("/api/admin-api-keys/{id}/rotate"),
            Some(&json!({"overlapSeconds": overlap_seconds})),
            &[200],
        )
        .await
        .unwrap();
    let key = record["key"].as_str().unwrap().to_owned();
    (key, record)
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

async fn me_status(edge: &Edge, key: &str) -> u16 {
    edge.get("/api/me", Some(key))
        .await
        .expect("/api/me")
        .status
}

async fn rotation_with_overlap(stack: &mut Stack, label: &str) {
    let edge = stack.edge();
    let user = stack.user_with_access("rotate", &["alpha", "beta"]).await;
    let original = stack.usable_key(user, &["alpha"], "alpha").await;

    // Rotate with a long overlap: both secrets work, with the same scope.
    let (second, record) = rotate(stack, original.id, 3600).await;
    assert_eq!(record["mcpServerIds"], json!(["alpha"]), "{record}");
    assert!(record["previousSecretExpiresAt"].is_string(), "{record}");
    let learned = stack.wait_key_allowed("alpha", &second).await;
    println!("ROTATE {label}: new secret open at the edge after {learned:?}");
    for key in [&original.key, &second] {
        for _ in 0..4 {
            assert_initialized_by(&edge.initialize("alpha", Some(key)).await, "alpha");
        }
        assert_insufficient_scope(&edge.initialize("beta", Some(key)).await, key);
        assert_eq!(me_status(&edge, key).await, 200);
    }
    // The edge reports that the old secret was used; the list shows it.
    let started = Instant::now();
    let last_used = loop {
        let record = listed(stack, original.id).await;
        if let Some(at) = record["previousSecretLastUsedAt"].as_str() {
            break at.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "old secret's use never reported: {record}\n{}",
            stack.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "ROTATE {label}: old secret's use listed ({last_used}) after {:?}",
        started.elapsed()
    );

    // A rotation without overlap ends both older secrets at once, within
    // the time a deletion takes.
    let (third, _) = rotate(stack, original.id, 0).await;
    let rotated = Instant::now();
    let first = edge.wait_invalid_token("alpha", &second).await;
    edge.wait_invalid_token("alpha", &original.key).await;
    let both = rotated.elapsed();
    for key in [&original.key, &second] {
        for _ in 0..10 {
            assert_invalid_token(&edge.initialize("alpha", Some(key)).await, key);
        }
        assert_eq!(me_status(&edge, key).await, 401);
    }
    assert_initialized_by(&edge.initialize("alpha", Some(&third)).await, "alpha");
    println!(
        "ROTATE {label}: overlap 0 -> old secret 401 after {first:?} (both older ones by {both:?})"
    );
    assert!(
        first + WORKERS_AGREE_AFTER < Duration::from_secs(1),
        "{label}: rotation without overlap took {first:?}"
    );
    assert_eq!(
        listed(stack, original.id).await["previousSecretExpiresAt"],
        Value::Null
    );

    // A short overlap, and the control plane stopped while it ends: the
    // edge refuses the old secret at its deadline by its own clock.
    let (fourth, record) = rotate(stack, original.id, 4).await;
    let deadline =
        chrono::DateTime::parse_from_rfc3339(record["previousSecretExpiresAt"].as_str().unwrap())
            .unwrap()
            .timestamp();
    stack.wait_key_allowed("alpha", &fourth).await;
    assert_initialized_by(&edge.initialize("alpha", Some(&third)).await, "alpha");
    stack.control_plane.stop();
    let (took, refused) = edge
        .poll_until_status(
            "alpha",
            &third,
            401,
            Duration::from_millis(50),
            Duration::from_secs(10),
        )
        .await;
    assert_invalid_token(&refused, &third);
    let now = unix_now();
    println!(
        "ROTATE {label}: control plane down; old secret 401 after {took:?}, {:.2} s after its deadline",
        now - deadline as f64
    );
    assert!(
        now >= deadline as f64 - 0.1,
        "refused {:.2} s before its deadline",
        deadline as f64 - now
    );
    assert!(
        now < deadline as f64 + 2.0,
        "refused late: {now} vs {deadline}"
    );
    for _ in 0..10 {
        assert_invalid_token(&edge.initialize("alpha", Some(&third)).await, &third);
        assert_initialized_by(&edge.initialize("alpha", Some(&fourth)).await, "alpha");
    }
    assert_eq!(me_status(&edge, &third).await, 401);
    stack.control_plane.restart().await;
    // Back: the new key still works, the old one stays refused.
    stack.wait_key_allowed("alpha", &fourth).await;
    assert_invalid_token(&edge.initialize("alpha", Some(&third)).await, &third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_old_secret_works_until_its_deadline_at_the_edge_sqlite() {
    let mut stack = Stack::start("rotation-sqlite", StackOptions::default()).await;
    rotation_with_overlap(&mut stack, "Sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_old_secret_works_until_its_deadline_at_the_edge_postgres() {
    let database = TestDatabase::create().await;
    let mut options = StackOptions::default();
    options.control_plane.database_url = Some(database.url().to_owned());
    let mut stack = Stack::start("rotation-postgres", options).await;
    rotation_with_overlap(&mut stack, "Postgres").await;
}
