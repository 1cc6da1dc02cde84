//! A key's life beyond create and delete, through real Envoy and the real
//! control plane, on SQLite and on PostgreSQL:
//! - a valid key whose owner lost every server (or whose servers were
//!   deleted) is still a valid key: 403 on MCP servers, 200 on `/api/me`;
//! - server names the control plane has not registered (or has deleted) are
//!   closed to every key, `*` keys included;
//! - a disabled key is refused like a deleted one, within a second at every
//!   worker, and works again once enabled;
//! - suspending a user stops all their keys within a second and lifting it
//!   restores them; an edited expiry reaches the edge; revoke-all and user
//!   deletion take keys off the edge and keep their records.
//!
//! One stack per backend, shared by this file's tests: `alpha` for the
//! tests that only make users and keys, `beta` (registered) and `gamma`
//! (routed by Envoy, not registered) for the one that deletes and adds
//! servers.

use std::time::{Duration, Instant};

use keygate_e2e::api::Method;
use keygate_e2e::edge::{
    Edge, WORKERS_AGREE_AFTER, assert_initialized_by, assert_insufficient_scope,
    assert_invalid_token,
};
use keygate_e2e::mcp_server::Tool;
use keygate_e2e::postgres::TestDatabase;
use keygate_e2e::stack::{ServerSpec, Stack, StackOptions};
use keygate_e2e::{rfc3339, unix_now};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

static SQLITE: OnceCell<Stack> = OnceCell::const_new();
/// The database outlives the stack: both live until the binary exits.
static POSTGRES: OnceCell<(TestDatabase, Stack)> = OnceCell::const_new();

fn options() -> StackOptions {
    StackOptions {
        servers: vec![
            ServerSpec::registered("alpha", Tool::Echo),
            ServerSpec::registered("beta", Tool::Time),
            ServerSpec::unregistered("gamma", Tool::Echo),
        ],
        ..StackOptions::default()
    }
}

async fn stack(backend: Backend) -> &'static Stack {
    match backend {
        Backend::Sqlite => {
            SQLITE
                .get_or_init(|| Stack::start_shared("lifecycle-sqlite", options()))
                .await
        }
        Backend::Postgres => {
            &POSTGRES
                .get_or_init(|| async {
                    let database = TestDatabase::create().await;
                    let mut options = options();
                    options.control_plane.database_url = Some(database.url().to_owned());
                    let stack = Stack::start_shared("lifecycle-postgres", options).await;
                    (database, stack)
                })
                .await
                .1
        }
    }
}

/// Polls `initialize` on `server` with `key` until it is a 403
/// `insufficient_scope` (checked in full); returns how long that took.
async fn wait_insufficient_scope(edge: &Edge, server: &str, key: &str) -> Duration {
    let (took, refused) = edge
        .poll_until_status(
            server,
            key,
            403,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
    assert_insufficient_scope(&refused, key);
    took
}

/// `GET /api/me` through Envoy with `key`.
async fn me_through_edge(edge: &Edge, key: &str) -> (u16, Value) {
    let response = edge.get("/api/me", Some(key)).await.expect("/api/me");
    let body = if response.status == 200 {
        response.json()
    } else {
        assert_invalid_token(&response, key);
        Value::Null
    };
    (response.status, body)
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

async fn key_without_access_is_still_a_valid_key(backend: Backend) {
    let stack = stack(backend).await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = admin
        .create_user(&keygate_e2e::stack::unique_name("no-access"))
        .await
        .unwrap();
    let rule = admin.grant_user(user, &["alpha"]).await.unwrap();
    let named = stack.usable_key(user, &["alpha"], "alpha").await;
    let star = stack.usable_key(user, &["*"], "alpha").await;

    // The owner loses every server: both keys stay valid keys without access.
    admin.delete_rule(rule).await.unwrap();
    let started = Instant::now();
    for key in [&named, &star] {
        wait_insufficient_scope(&edge, "alpha", &key.key).await;
        assert_insufficient_scope(&edge.initialize("beta", Some(&key.key)).await, &key.key);
        let (status, me) = me_through_edge(&edge, &key.key).await;
        assert_eq!(status, 200, "{backend:?}: /api/me of a key without access");
        assert_eq!(me["id"], user, "{me}");
        // The control plane says the same.
        let direct = admin.with_token(&key.key).me().await.unwrap();
        assert_eq!(direct["id"], user);
    }
    println!(
        "{backend:?}: access removed -> 403 on MCP, 200 on /api/me after {:?}",
        started.elapsed()
    );

    // Access returns: 200 again with the same keys.
    admin.grant_user(user, &["alpha"]).await.unwrap();
    for key in [&named, &star] {
        stack.wait_key_allowed("alpha", &key.key).await;
        assert_initialized_by(&edge.initialize("alpha", Some(&key.key)).await, "alpha");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_without_access_is_403_on_mcp_and_200_on_api_me_sqlite() {
    key_without_access_is_still_a_valid_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_without_access_is_403_on_mcp_and_200_on_api_me_postgres() {
    key_without_access_is_still_a_valid_key(Backend::Postgres).await;
}

async fn unregistered_servers_are_closed(backend: Backend) {
    let stack = stack(backend).await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    // A user with access to every server, now and later, and a `*` key.
    let user = stack.user_with_access("everything", &["*"]).await;
    let star = stack.usable_key(user, &["*"], "alpha").await;
    let beta_only = stack.usable_key(user, &["beta"], "beta").await;
    stack.wait_key_allowed("beta", &star.key).await;

    // gamma is routed by Envoy but was never registered.
    assert_insufficient_scope(&edge.initialize("gamma", Some(&star.key)).await, &star.key);

    // A deleted server closes to every key, `*` included; the key scoped to
    // it alone is still a valid key (see above).
    admin.delete_server("beta").await.unwrap();
    let deleted = Instant::now();
    wait_insufficient_scope(&edge, "beta", &star.key).await;
    let took = deleted.elapsed();
    assert_insufficient_scope(
        &edge.initialize("beta", Some(&beta_only.key)).await,
        &beta_only.key,
    );
    assert_eq!(me_through_edge(&edge, &beta_only.key).await.0, 200);
    assert_initialized_by(&edge.initialize("alpha", Some(&star.key)).await, "alpha");
    println!("{backend:?}: server deleted -> `*` key refused on it after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Registering gamma opens it to the `*` key at once, with no key change.
    admin.create_server("gamma").await.unwrap();
    let added = Instant::now();
    let reach = stack.wait_key_allowed("gamma", &star.key).await;
    println!("{backend:?}: server registered -> `*` key reaches it after {reach:?}");
    assert!(added.elapsed() < Duration::from_secs(2), "took {reach:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_key_is_refused_on_unregistered_and_deleted_servers_sqlite() {
    unregistered_servers_are_closed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_key_is_refused_on_unregistered_and_deleted_servers_postgres() {
    unregistered_servers_are_closed(Backend::Postgres).await;
}

async fn disable_and_enable(backend: Backend) {
    let stack = stack(backend).await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("disable", &["alpha"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;
    let other = stack.usable_key(user, &["alpha"], "alpha").await;
    assert_eq!(listed(stack, key.id).await["status"], "active");

    let mut measured = Vec::new();
    for round in 1..=3 {
        let record = admin.set_key_enabled(key.id, false).await.unwrap();
        let disabled = Instant::now();
        assert_eq!(record["status"], "disabled", "{record}");
        assert!(record["disabledAt"].is_string(), "{record}");
        // First 401 anywhere, then 401 on every worker.
        let first = edge.wait_invalid_token("alpha", &key.key).await;
        for _ in 0..10 {
            assert_invalid_token(&edge.initialize("alpha", Some(&key.key)).await, &key.key);
        }
        let everywhere = disabled.elapsed();
        println!(
            "DISABLE {backend:?} round {round}: first 401 after {first:?}, \
             401 on every worker by {everywhere:?}"
        );
        assert!(
            first + WORKERS_AGREE_AFTER < Duration::from_secs(1),
            "{backend:?}: disable took {first:?}"
        );
        measured.push(first);
        // `/api/me` refuses it too, through the edge and at the control plane.
        assert_eq!(me_through_edge(&edge, &key.key).await.0, 401);
        let direct = admin
            .with_token(&key.key)
            .call(Method::GET, "/api/me", None)
            .await
            .unwrap();
        assert_eq!(direct.status.as_u16(), 401, "{}", direct.text);
        // The owner's other key is untouched.
        assert_initialized_by(&edge.initialize("alpha", Some(&other.key)).await, "alpha");
        assert_eq!(listed(stack, key.id).await["status"], "disabled");

        // Disabling twice changes nothing.
        admin.set_key_enabled(key.id, false).await.unwrap();
        let record = admin.set_key_enabled(key.id, true).await.unwrap();
        assert_eq!(record["status"], "active", "{record}");
        assert_eq!(record["disabledAt"], Value::Null, "{record}");
        stack.wait_key_allowed("alpha", &key.key).await;
        assert_eq!(me_through_edge(&edge, &key.key).await.0, 200);
    }
    println!("DISABLE {backend:?} times (PATCH enabled=false -> first 401): {measured:?}");

    // Bad edits are 4xx, never 500.
    for (body, status) in [
        (json!({}), 400),
        (json!({"enabled": "no"}), 400),
        (json!({"enabled": false, "secret": "x"}), 400),
    ] {
        let path = format!("/api/admin-api-keys/{}", key.id);
        let answer = admin.call(Method::PATCH, &path, Some(&body)).await.unwrap();
        assert_eq!(answer.status.as_u16(), status, "{body}: {}", answer.text);
        assert!(answer.body["error"].is_string(), "{}", answer.text);
    }
    let answer = admin
        .call(
            Method::PATCH,
            "/api/admin-api-keys/999999999",
            Some(&json!({"enabled": false})),
        )
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 404, "{}", answer.text);

    // An expired key is listed as expired.
    let soon = admin
        .create_key_for(user, &["alpha"], Some(&rfc3339(unix_now() as i64 + 2)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(listed(stack, soon.id).await["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_key_is_401_everywhere_within_a_second_then_enabled_sqlite() {
    disable_and_enable(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_key_is_401_everywhere_within_a_second_then_enabled_postgres() {
    disable_and_enable(Backend::Postgres).await;
}

async fn offboarding_and_edits(backend: Backend) {
    let stack = stack(backend).await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("offboard", &["alpha"]).await;
    let keys = [
        stack.usable_key(user, &["alpha"], "alpha").await,
        stack.usable_key(user, &["*"], "alpha").await,
    ];
    let colleague = stack.user_with_access("colleague", &["alpha"]).await;
    let other = stack.usable_key(colleague, &["alpha"], "alpha").await;

    // Suspend: every key of theirs stops within a second, at every worker.
    let path = format!("/api/users/{user}/suspend");
    admin
        .expect(Method::POST, &path, None, &[200])
        .await
        .unwrap();
    let suspended = Instant::now();
    for key in &keys {
        edge.wait_invalid_token("alpha", &key.key).await;
    }
    let took = suspended.elapsed();
    for key in &keys {
        for _ in 0..4 {
            assert_invalid_token(&edge.initialize("alpha", Some(&key.key)).await, &key.key);
        }
    }
    println!("SUSPEND {backend:?}: all keys of the user refused after {took:?}");
    assert!(
        took + WORKERS_AGREE_AFTER < Duration::from_secs(1),
        "took {took:?}"
    );
    assert_initialized_by(&edge.initialize("alpha", Some(&other.key)).await, "alpha");
    // Lifted: the same keys work again.
    let path = format!("/api/users/{user}/unsuspend");
    admin
        .expect(Method::POST, &path, None, &[200])
        .await
        .unwrap();
    for key in &keys {
        stack.wait_key_allowed("alpha", &key.key).await;
    }

    // A PATCH of name and expiry shows in lists and at the edge.
    let expiry = unix_now() as i64 + 3;
    let record = admin
        .update_key(
            keys[0].id,
            &json!({"name": "renamed-at-edge", "expiresAt": rfc3339(expiry)}),
        )
        .await
        .unwrap();
    assert_eq!(record["name"], "renamed-at-edge");
    assert_eq!(listed(stack, keys[0].id).await["name"], "renamed-at-edge");
    // The edge learns the new expiry: refused from then on.
    let refused_after = edge.wait_invalid_token("alpha", &keys[0].key).await;
    assert!(
        unix_now() >= expiry as f64 - 0.5,
        "refused {refused_after:?} before its new expiry"
    );
    assert_eq!(listed(stack, keys[0].id).await["status"], "expired");

    // Revoke all: the other key stops at the edge, and both are on record.
    let path = format!("/api/users/{user}/revoke-keys");
    let answer = admin
        .expect(
            Method::POST,
            &path,
            Some(&json!({"reason": "offboarded"})),
            &[200],
        )
        .await
        .unwrap();
    assert_eq!(answer["revoked"], 2, "{answer}");
    edge.wait_invalid_token("alpha", &keys[1].key).await;
    let all = admin
        .expect(
            Method::GET,
            "/api/admin-api-keys?include=revoked",
            None,
            &[200],
        )
        .await
        .unwrap();
    for key in &keys {
        let record = all["items"]
            .as_array()
            .and_then(|items| items.iter().find(|k| k["id"] == key.id))
            .unwrap_or_else(|| panic!("{} not on record: {all}", key.id));
        assert_eq!(record["status"], "revoked", "{record}");
        assert_eq!(record["revokeReason"], "offboarded", "{record}");
    }

    // Deleting a user revokes their keys and keeps the records.
    let leaver_key = stack.usable_key(colleague, &["alpha"], "alpha").await;
    admin.delete_user(colleague).await.unwrap();
    edge.wait_invalid_token("alpha", &leaver_key.key).await;
    let all = admin
        .expect(
            Method::GET,
            "/api/admin-api-keys?include=revoked",
            None,
            &[200],
        )
        .await
        .unwrap();
    for id in [other.id, leaver_key.id] {
        let record = all["items"]
            .as_array()
            .and_then(|items| items.iter().find(|k| k["id"] == id))
            .unwrap_or_else(|| panic!("{id} not on record: {all}"));
        assert_eq!(record["status"], "revoked", "{record}");
        assert_eq!(record["revokeReason"], "user deleted", "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_revoke_all_edit_and_user_deletion_through_the_edge_sqlite() {
    offboarding_and_edits(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_revoke_all_edit_and_user_deletion_through_the_edge_postgres() {
    offboarding_and_edits(Backend::Postgres).await;
}
