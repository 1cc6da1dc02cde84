//! Issue 3's integration tests, part 2: keeping the key table in step with
//! the control plane: new, expired and deleted keys, last use, an outage of
//! the control plane, full snapshots, and PostgreSQL replicas.
//!
//! Tests that only create their own users and keys share one stack; tests
//! that stop the control plane or need other settings start their own.

use std::time::{Duration, Instant};

use keygate_e2e::edge::{
    Edge, WORKERS_AGREE_AFTER, assert_initialized_by, assert_insufficient_scope,
    assert_invalid_token, assert_missing_key, assert_unavailable,
};
use keygate_e2e::envoy::{
    Envoy, EnvoyConfig, FilterConfig, WaitFor, metric_value, test_filter_config,
};
use keygate_e2e::mcp_server::Tool;
use keygate_e2e::stack::{ServerSpec, Stack, StackOptions, unique_name};
use keygate_e2e::{rfc3339, unix_now};
use serde_json::Value;
use tokio::sync::OnceCell;

static SHARED: OnceCell<Stack> = OnceCell::const_new();

/// `alpha` (echo) and `beta` (time) behind one Envoy, shared by this file's tests.
async fn shared() -> &'static Stack {
    SHARED
        .get_or_init(|| Stack::start_shared("sync-shared", StackOptions::default()))
        .await
}

/// The control plane's key table as the edge would fetch it (`query` after
/// the path, e.g. `?since=4`).
async fn feed(stack: &Stack, query: &str) -> Value {
    let url = format!("{}/internal/v1/key-table{query}", stack.control_plane.url());
    let response = keygate_e2e::http_client()
        .get(url)
        .bearer_auth(stack.control_plane.data_plane_token())
        .send()
        .await
        .expect("feed");
    assert_eq!(response.status(), 200);
    response.json().await.expect("feed JSON")
}

/// A client that keeps initializing an MCP session with one key until
/// stopped, for checking that a change elsewhere never refuses it.
struct Hammer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<keygate_e2e::edge::EdgeResponse>>,
}

impl Hammer {
    fn start(edge: Edge, server: &'static str, key: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let key = key.to_owned();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push(edge.initialize(server, Some(&key)).await);
            }
            answers
        });
        Self { stop, task }
    }

    /// Every answer it got.
    async fn stop(self) -> Vec<keygate_e2e::edge::EdgeResponse> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("client task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_table_is_503_with_retry_after() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let user = stack.user_with_access("notable", &["alpha"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    // A second Envoy whose filter presents a wrong data-plane token never
    // gets a table: it must fail closed.
    let dir = keygate_e2e::dirs::TestDir::new("sync-no-table");
    let upstreams = stack
        .servers
        .iter()
        .map(|s| (s.name().to_owned(), s.port()))
        .collect();
    let config = EnvoyConfig::new(
        stack.control_plane.port(),
        "not-the-data-plane-token",
        upstreams,
    );
    let envoy = Envoy::start(dir.path(), &config, WaitFor::Ready).await;
    let edge = Edge::new(envoy.listener_port());
    // Give the filter time to try (and fail) a few polls.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let response = edge.initialize("alpha", Some(&key.key)).await;
    assert_unavailable(&response, Some(&key.key));
    assert_eq!(response.header("retry-after"), Some("5"));
    assert_eq!(
        response.json()["error"],
        "key validation temporarily unavailable"
    );
    let response = edge.get("/api/me", Some(&key.key)).await.expect("me");
    assert_unavailable(&response, Some(&key.key));
    // A request without a key is still told to bring one.
    assert_missing_key(&edge.initialize("alpha", None).await);
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_is_refused_from_its_expiry_on() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("expiry", &["alpha"]).await;
    let expires_at = unix_now().ceil() as i64 + 3;
    let key = admin
        .create_key_for(user, &["alpha"], Some(&rfc3339(expires_at)))
        .await
        .unwrap();
    stack.wait_key_allowed("alpha", &key.key).await;
    assert!(
        unix_now() < expires_at as f64,
        "the key took until its expiry to reach the edge"
    );

    let (_, refused) = edge
        .poll_until_status(
            "alpha",
            &key.key,
            401,
            Duration::from_millis(50),
            Duration::from_secs(10),
        )
        .await;
    let refused_at = unix_now();
    assert_invalid_token(&refused, &key.key);
    println!(
        "key expiring at {expires_at} refused at {refused_at:.3} ({:+.3} s)",
        refused_at - expires_at as f64
    );
    assert!(
        refused_at >= expires_at as f64,
        "refused {:.3} s before its expiry",
        expires_at as f64 - refused_at
    );
    assert!(
        refused_at < expires_at as f64 + 2.0,
        "still accepted {:.3} s after its expiry",
        refused_at - expires_at as f64
    );
    // And it stays refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_invalid_token(&edge.initialize("alpha", Some(&key.key)).await, &key.key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_is_refused_at_the_edge_within_two_seconds() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("revoke", &["alpha"]).await;
    let mut measured = Vec::new();
    for round in 1..=3 {
        let key = admin.create_key_for(user, &["alpha"], None).await.unwrap();
        let propagation = stack.wait_key_allowed("alpha", &key.key).await;
        println!("round {round}: new key usable at the edge after {propagation:?}");
        // Allowed on every worker (no flapping) before the delete.
        for _ in 0..5 {
            assert_initialized_by(&edge.initialize("alpha", Some(&key.key)).await, "alpha");
        }

        admin.delete_key(key.id).await.unwrap();
        let deleted = Instant::now();
        let probe = format!("Bearer {}", key.key);
        let revocation = loop {
            // A cheap GET: the MCP server never answers 401, so a 401 is the edge's.
            let response = edge
                .send(
                    "GET",
                    "/mcp-connect/alpha/mcp",
                    &[("authorization", probe.as_str())],
                    None,
                )
                .await
                .expect("probe");
            if response.status == 401 {
                let elapsed = deleted.elapsed();
                assert_invalid_token(&response, &key.key);
                break elapsed;
            }
            assert!(
                deleted.elapsed() < Duration::from_secs(10),
                "deleted key still accepted 10 s later: {response:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!("REVOCATION round {round} (DELETE key -> first 401 at the edge): {revocation:?}");
        assert!(
            revocation < Duration::from_secs(2),
            "revocation took {revocation:?}"
        );
        // Refused on every worker once each has re-read the table.
        tokio::time::sleep(WORKERS_AGREE_AFTER).await;
        for _ in 0..10 {
            assert_invalid_token(&edge.initialize("alpha", Some(&key.key)).await, &key.key);
        }
        measured.push(revocation);
    }
    println!("REVOCATION times (DELETE -> first 401): {measured:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_shows_in_the_api_after_traffic() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let me = admin.me().await.unwrap();
    let admin_id = keygate_e2e::api::id_of(&me).unwrap();
    admin.grant_user(admin_id, &["alpha"]).await.unwrap();
    let key = admin.create_own_key(&["alpha"]).await.unwrap();
    let before = admin.get_own_key(key.id).await.unwrap();
    assert!(
        before["lastUsedAt"].is_null(),
        "unused key has a last use: {before}"
    );

    let started = unix_now();
    stack.wait_key_allowed("alpha", &key.key).await;
    assert_initialized_by(&edge.initialize("alpha", Some(&key.key)).await, "alpha");

    // usageFlushSeconds is 1: the report should land within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let record = loop {
        let record = admin.get_own_key(key.id).await.unwrap();
        if !record["lastUsedAt"].is_null() {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "lastUsedAt still null 15 s after use: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last_used = record["lastUsedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("lastUsedAt is not an RFC 3339 string: {record}"));
    let last_used = chrono::DateTime::parse_from_rfc3339(last_used)
        .unwrap_or_else(|e| panic!("lastUsedAt {last_used:?}: {e}"))
        .timestamp() as f64;
    assert!(
        last_used >= started.floor() - 1.0 && last_used <= unix_now() + 1.0,
        "lastUsedAt {last_used} is not the time of use (around {started})"
    );
    assert!(
        !record.to_string().contains(&key.key),
        "the key is in its record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage_serves_until_max_staleness_then_503_then_recovers() {
    let filter = FilterConfig {
        feed_wait_seconds: 1,
        max_staleness_seconds: 4,
        ..test_filter_config(0, "set-at-start")
    };
    let mut stack = Stack::start(
        "sync-outage",
        StackOptions {
            servers: vec![ServerSpec::registered("alpha", Tool::Echo)],
            filter,
            ..StackOptions::default()
        },
    )
    .await;
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("outage", &["alpha"]).await;
    let key = stack.usable_key(user, &["alpha"], "alpha").await;

    stack.control_plane.stop();
    let stopped = Instant::now();
    // The last sync was at most feedWait (1 s) plus one 200 ms tick before
    // the stop, and the filter counts whole seconds: the table stays fresh
    // for at least maxStaleness - 1.2 s - 1 s = 1.8 s. Check up to 1.5 s.
    while stopped.elapsed() < Duration::from_millis(1500) {
        let response = edge.initialize("alpha", Some(&key.key)).await;
        assert_initialized_by(&response, "alpha");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, unavailable) = edge
        .poll_until_status(
            "alpha",
            &key.key,
            503,
            Duration::from_millis(50),
            Duration::from_secs(8),
        )
        .await;
    let failed_closed_after = stopped.elapsed();
    assert_unavailable(&unavailable, Some(&key.key));
    println!(
        "control plane down: edge failed closed after {failed_closed_after:?} (maxStaleness 4 s)"
    );
    assert!(
        // maxStaleness, plus up to 1 s of whole-second rounding, plus slack.
        failed_closed_after <= Duration::from_millis(6500),
        "stale table served for {failed_closed_after:?}"
    );
    // Still closed a bit later, on every worker.
    for _ in 0..10 {
        assert_unavailable(
            &edge.initialize("alpha", Some(&key.key)).await,
            Some(&key.key),
        );
    }

    stack.control_plane.restart().await;
    let restarted = Instant::now();
    let (recovery, _) = edge
        .poll_until_status(
            "alpha",
            &key.key,
            200,
            Duration::from_millis(50),
            Duration::from_secs(30),
        )
        .await;
    println!("control plane back: edge serving again after {recovery:?}");
    assert_initialized_by(&edge.initialize("alpha", Some(&key.key)).await, "alpha");
    // And new changes flow again: a key deleted now is refused.
    admin.delete_key(key.id).await.unwrap();
    let gone = edge.wait_invalid_token("alpha", &key.key).await;
    println!(
        "after recovery, deletion reached the edge in {gone:?} (restart {restarted:?} ago)",
        restarted = restarted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_snapshots_never_open_a_window_where_valid_keys_fail() {
    // The change log keeps one version: the edge, usually behind by more
    // during a burst of changes, gets full snapshots instead of deltas.
    let stack = Stack::start(
        "sync-snapshots",
        StackOptions {
            servers: vec![ServerSpec::registered("alpha", Tool::Echo)],
            control_plane: keygate_e2e::control_plane::ControlPlaneOptions {
                extra_args: vec!["--feed-log-retention".into(), "1".into()],
                ..Default::default()
            },
            ..StackOptions::default()
        },
    )
    .await;
    let admin = stack.admin();
    let user = stack.user_with_access("snapshot", &["alpha"]).await;
    let steady = stack.usable_key(user, &["alpha"], "alpha").await;
    let updates_before = metric_value(
        &stack.envoy.prometheus_stats().await,
        "keygate_feed_updates_total",
    );

    // A client keeps using the steady key while the table churns.
    let hammer = Hammer::start(stack.edge(), "alpha", &steady.key);
    let mut deleted = Vec::new();
    let mut kept = Vec::new();
    for round in 0..8 {
        // A burst of changes, faster than one poll.
        let mut burst = Vec::new();
        for _ in 0..4 {
            burst.push(admin.create_key_for(user, &["alpha"], None).await.unwrap());
        }
        for key in burst.drain(..2) {
            admin.delete_key(key.id).await.unwrap();
            deleted.push(key);
        }
        kept.extend(burst);
        tokio::time::sleep(Duration::from_millis(if round % 2 == 0 { 50 } else { 300 })).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = hammer.stop().await;

    assert!(
        answers.len() >= 10,
        "too few requests during the churn: {}",
        answers.len()
    );
    for answer in &answers {
        assert_initialized_by(answer, "alpha");
    }
    println!(
        "{} requests with a steady key during 32 key changes: all allowed",
        answers.len()
    );
    // The table converged: kept keys work, deleted ones do not.
    for key in &kept {
        stack.wait_key_allowed("alpha", &key.key).await;
    }
    let edge = stack.edge();
    for key in &deleted {
        edge.wait_invalid_token("alpha", &key.key).await;
    }
    // Precondition: this control plane answers a poll from a few versions
    // back with a full snapshot, not a delta.
    let current = feed(&stack, "").await["version"].as_u64().expect("version");
    let behind = feed(&stack, &format!("?since={}", current.saturating_sub(3))).await;
    assert_eq!(behind["full"], true, "a lagging poll got a delta: {behind}");
    let updates = metric_value(
        &stack.envoy.prometheus_stats().await,
        "keygate_feed_updates_total",
    ) - updates_before;
    println!("the edge applied {updates} table answers during the churn");
    assert!(updates >= 2.0, "the edge hardly polled: {updates}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_behind_one_edge_stay_in_step() {
    use keygate_e2e::control_plane::{ControlPlane, ControlPlaneOptions};
    use keygate_e2e::mcp_server::McpServer;
    use keygate_e2e::postgres::TestDatabase;

    let database = TestDatabase::create().await;
    let dir = keygate_e2e::dirs::TestDir::new("sync-replicas");
    let first = ControlPlane::start_with(
        dir.path(),
        ControlPlaneOptions {
            database_url: Some(database.url().to_owned()),
            ..ControlPlaneOptions::default()
        },
    )
    .await;
    // Started after the first one has migrated the database.
    let mut second = ControlPlane::start_with(
        dir.path(),
        ControlPlaneOptions {
            database_url: Some(database.url().to_owned()),
            admin_token: Some(first.admin_token().to_owned()),
            data_plane_token: Some(first.data_plane_token().to_owned()),
            ..ControlPlaneOptions::default()
        },
    )
    .await;
    let alpha = McpServer::start(dir.path(), "alpha", Tool::Echo);
    first.admin().create_server("alpha").await.unwrap();
    let mut config = EnvoyConfig::new(
        first.port(),
        first.data_plane_token(),
        vec![("alpha".to_owned(), alpha.port())],
    );
    // Both replicas in the control-plane cluster: polls alternate between them.
    config.extra_control_plane_ports = vec![second.port()];
    let envoy = Envoy::start(dir.path(), &config, WaitFor::FirstSync).await;
    let edge = Edge::new(envoy.listener_port());

    // Changes made on either replica reach the edge, whichever one it polls.
    for (label, creator, deleter) in [
        ("first->second", first.admin(), second.admin()),
        ("second->first", second.admin(), first.admin()),
    ] {
        let user = creator.create_user(&unique_name("replica")).await.unwrap();
        deleter.grant_user(user, &["alpha"]).await.unwrap();
        let key = creator
            .create_key_for(user, &["alpha"], None)
            .await
            .unwrap();
        let (usable, _) = edge
            .poll_until_status(
                "alpha",
                &key.key,
                200,
                Duration::from_millis(20),
                Duration::from_secs(10),
            )
            .await;
        deleter.delete_key(key.id).await.unwrap();
        let revoked = edge.wait_invalid_token("alpha", &key.key).await;
        println!(
            "PostgreSQL replicas {label}: key usable after {usable:?}, \
             REVOCATION across replicas {revoked:?}"
        );
        assert!(
            revoked < Duration::from_secs(2),
            "{label}: revocation took {revoked:?}"
        );
    }

    // One replica dies: the edge keeps its table fresh through the other.
    second.stop();
    let user = first
        .admin()
        .create_user(&unique_name("replica-down"))
        .await
        .unwrap();
    first.admin().grant_user(user, &["alpha"]).await.unwrap();
    let key = first
        .admin()
        .create_key_for(user, &["alpha"], None)
        .await
        .unwrap();
    let (usable, _) = edge
        .poll_until_status(
            "alpha",
            &key.key,
            200,
            Duration::from_millis(50),
            Duration::from_secs(15),
        )
        .await;
    println!("one replica down: new key usable after {usable:?}");
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_stops_all_their_keys_at_the_edge() {
    let stack = shared().await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("leaver", &["alpha", "beta"]).await;
    let colleague = stack.user_with_access("stayer", &["alpha"]).await;
    let keys = [
        admin.create_key_for(user, &["alpha"], None).await.unwrap(),
        admin.create_key_for(user, &["*"], None).await.unwrap(),
    ];
    let other = admin
        .create_key_for(colleague, &["alpha"], None)
        .await
        .unwrap();
    for key in keys.iter().chain([&other]) {
        stack.wait_key_allowed("alpha", &key.key).await;
    }

    admin.delete_user(user).await.unwrap();
    let deleted = Instant::now();
    for key in &keys {
        edge.wait_invalid_token("alpha", &key.key).await;
    }
    let took = deleted.elapsed();
    println!("user deleted -> all their keys refused at the edge after {took:?}");
    assert!(took < Duration::from_secs(2), "user deletion took {took:?}");
    // Someone else's key is untouched.
    assert_initialized_by(&edge.initialize("alpha", Some(&other.key)).await, "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_server_closes_it_and_keeps_the_keys_scoped_to_it_valid() {
    // Own stack: deleting a server would disturb the shared one.
    let stack = Stack::start("sync-server-delete", StackOptions::default()).await;
    let admin = stack.admin();
    let edge = stack.edge();
    let user = stack.user_with_access("server-delete", &["*"]).await;
    let beta_only = admin.create_key_for(user, &["beta"], None).await.unwrap();
    let every = admin.create_key_for(user, &["*"], None).await.unwrap();
    stack.wait_key_allowed("beta", &beta_only.key).await;
    stack.wait_key_allowed("beta", &every.key).await;

    admin.delete_server("beta").await.unwrap();
    // A key for beta alone now opens nothing, but it is still a valid key:
    // 403 on MCP servers, 200 on /api/me, as the control plane says.
    let (took, refused) = edge
        .poll_until_status(
            "beta",
            &beta_only.key,
            403,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
    assert_insufficient_scope(&refused, &beta_only.key);
    println!("server deleted -> its single-server key refused on it after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_insufficient_scope(
        &edge.initialize("alpha", Some(&beta_only.key)).await,
        &beta_only.key,
    );
    let me = edge.get("/api/me", Some(&beta_only.key)).await.expect("me");
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["id"], user);
    // The user's `*` key keeps alpha; beta is still routed by Envoy but no
    // longer registered, so it is closed to every key.
    assert_initialized_by(&edge.initialize("alpha", Some(&every.key)).await, "alpha");
    assert_insufficient_scope(&edge.initialize("beta", Some(&every.key)).await, &every.key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_change_over_more_keys_than_a_page_arrives_in_pages_without_a_window() {
    // Pages of 3 keys: one access-rule change naming 13 keys reaches the
    // edge as a paged delta, not one unbounded answer.
    const PAGE: u32 = 3;
    let mut filter = test_filter_config(0, "set-at-start");
    filter.snapshot_page_size = Some(PAGE);
    let stack = Stack::start(
        "sync-paged-delta",
        StackOptions {
            filter,
            ..StackOptions::default()
        },
    )
    .await;
    let _logs = stack.logs_on_failure();
    let admin = stack.admin();
    let edge = stack.edge();
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(admin.create_user(&unique_name("paged")).await.unwrap());
    }
    let subjects: Vec<String> = users.iter().map(|u| format!("user:{u}")).collect();
    let rule_name = unique_name("paged-rule");
    let rule = admin
        .grant(&rule_name, &["alpha"], &subjects)
        .await
        .unwrap();
    // Three keys per user for every server the owner can reach, and one
    // for alpha alone, which the change must leave working throughout.
    let mut keys = Vec::new();
    for user in &users {
        for _ in 0..3 {
            keys.push(admin.create_key_for(*user, &["*"], None).await.unwrap());
        }
    }
    let steady = stack.usable_key(users[0], &["alpha"], "alpha").await;
    for key in &keys {
        stack.wait_key_allowed("alpha", &key.key).await;
        assert_insufficient_scope(&edge.initialize("beta", Some(&key.key)).await, &key.key);
    }
    let feed_version = feed(&stack, "").await["version"].as_u64().expect("version");
    let updates_before = metric_value(
        &stack.envoy.prometheus_stats().await,
        "keygate_feed_updates_total",
    );

    let hammer = Hammer::start(stack.edge(), "alpha", &steady.key);
    admin
        .update_rule(rule, &rule_name, &["alpha", "beta"], &subjects)
        .await
        .unwrap();
    let changed = Instant::now();
    for key in &keys {
        stack.wait_key_allowed("beta", &key.key).await;
    }
    let took = changed.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answers = hammer.stop().await;
    for answer in &answers {
        assert_initialized_by(answer, "alpha");
    }
    println!(
        "access change over {} keys in pages of {PAGE}: every key opens beta after {took:?}; \
         {} requests with a steady key meanwhile, all allowed",
        keys.len() + 1,
        answers.len()
    );
    // Precondition: the control plane pages this delta when asked to.
    let first = feed(
        &stack,
        &format!("?since={feed_version}&limit={PAGE}&paged=1"),
    )
    .await;
    assert_eq!(first["full"], false, "{first}");
    assert!(first["next"].is_i64(), "the delta came whole: {first}");
    // One change, applied as 13 / 3 = 5 pages (and the catch-up after them);
    // a whole delta would be one answer.
    let updates = metric_value(
        &stack.envoy.prometheus_stats().await,
        "keygate_feed_updates_total",
    ) - updates_before;
    assert!(updates >= 5.0, "the edge applied {updates} answers");
    let logs = stack.all_logs();
    assert!(
        logs.contains("writes, delta in 5 pages)"),
        "no paged delta in the edge's log:\n{}",
        stack.log_tails(40)
    );
    assert!(took < Duration::from_secs(5), "the change took {took:?}");
}
