//! The key-table feed: snapshots, deltas, removals, stale `since`, long
//! polls (timed), concurrency, replicas sharing one PostgreSQL, answers
//! built once and shared by every edge asking the same, and edges that
//! follow the feed through concurrent changes and a lost LISTEN connection.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

both_backends!(
    snapshot_delta_removal,
    stale_since_gets_full_snapshot,
    effective_servers_follow_access,
    deltas_and_snapshots_agree_on_every_rule_shape,
    long_poll_wakes_on_change,
    long_poll_times_out_empty,
    feed_auth_and_params,
    concurrent_creates_and_deletes_stay_consistent,
    paged_snapshot_covers_every_key_once,
    paging_converges_after_the_follow_up_delta,
    paging_params_are_validated,
    paged_delta_covers_every_change_once,
    parked_waiters_share_one_build,
    snapshot_storm_builds_each_page_once,
    followers_converge_under_concurrent_changes,
);

/// Applies a table to a local copy, the way the edge does.
fn apply(local: &mut std::collections::BTreeMap<i64, Value>, t: &Value) {
    if t["full"] == true {
        local.clear();
    }
    for e in t["upserts"].as_array().unwrap() {
        local.insert(e["id"].as_i64().unwrap(), e.clone());
    }
    for r in t["removals"].as_array().unwrap() {
        local.remove(&r.as_i64().unwrap());
    }
}

async fn snapshot_delta_removal(b: Backend) {
    let app = TestApp::start(b).await;
    let t0 = app.table("").await;
    assert_eq!(t0["full"], true);
    assert_eq!(t0["upserts"], json!([]));

    app.server("alpha").await;
    app.server("beta").await;
    app.rule(&["alpha"], &["*"]).await;
    let (k1, key1) = app.admin_key(&["alpha"]).await;
    let (k2, _) = app.admin_key(&["*"]).await;
    let full = app.table("").await;
    assert_eq!(full["full"], true);
    assert_eq!(upsert_ids(&full), vec![k1, k2]);
    let e1 = entry(&full, k1).unwrap();
    assert_eq!(e1["userId"], 1);
    assert_eq!(e1["servers"], json!(["alpha"]));
    assert_eq!(e1["expiresAt"], Value::Null);
    // The hash is SHA-256 of the secret, checkable with the protocol crate.
    let token = keygate_protocol::ApiKeyToken::parse(key1.as_bytes()).unwrap();
    assert_eq!(e1["secretHash"], token.secret.hash().to_hex());
    assert!(!full.to_string().contains(&key1[key1.len() - 43..]));
    // `*` key, access limited to alpha: effective servers are alpha only.
    assert_eq!(entry(&full, k2).unwrap()["servers"], json!(["alpha"]));
    let v = full["version"].as_u64().unwrap();

    // Nothing changed: empty delta at the same version, with the
    // registered servers (every answer carries them).
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(
        d,
        json!({"version": v, "full": false, "upserts": [], "removals": [],
               "registeredServers": ["alpha", "beta"]})
    );
    assert_eq!(full["registeredServers"], json!(["alpha", "beta"]));

    // One new key: a delta with exactly that key.
    let (k3, _) = app.admin_key(&["alpha"]).await;
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(d["full"], false);
    assert_eq!(upsert_ids(&d), vec![k3]);
    assert_eq!(removal_ids(&d), Vec::<i64>::new());
    let v2 = d["version"].as_u64().unwrap();
    assert!(v2 > v);

    // A deleted key: a removal.
    app.delete(&format!("/api/api-keys/{k1}"), ADMIN).await;
    let d = app.table(&format!("?since={v2}")).await;
    assert_eq!(d["full"], false);
    assert_eq!(upsert_ids(&d), Vec::<i64>::new());
    assert_eq!(removal_ids(&d), vec![k1]);
    let v3 = d["version"].as_u64().unwrap();

    // Following deltas from the start ends where a snapshot is.
    let mut local = Default::default();
    apply(&mut local, &t0);
    apply(
        &mut local,
        &app.table(&format!("?since={}", t0["version"])).await,
    );
    let now = app.table("").await;
    assert_eq!(now["version"].as_u64().unwrap(), v3);
    let mut snap = Default::default();
    apply(&mut snap, &now);
    assert_eq!(local, snap);

    // A version from the future (e.g. a database restored from backup): full.
    let d = app.table(&format!("?since={}", v3 + 1000)).await;
    assert_eq!(d["full"], true);
    assert_eq!(upsert_ids(&d), vec![k2, k3]);
}

async fn stale_since_gets_full_snapshot(b: Backend) {
    let app = TestApp::start_with(b, |c| c.feed_log_retention = 3).await;
    app.server("alpha").await; // version 1
    app.rule(&["alpha"], &["*"]).await; // version 2
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.admin_key(&["alpha"]).await.0); // versions 3..=7
    }
    let full = app.table("").await;
    let v = full["version"].as_u64().unwrap();
    assert_eq!(v, 7);
    // The log keeps the last 3 versions: since >= v-3 is a delta, older is full.
    let d = app.table(&format!("?since={}", v - 3)).await;
    assert_eq!(d["full"], false);
    assert_eq!(upsert_ids(&d), ids[2..].to_vec());
    for stale in [0, 1, v - 4] {
        let d = app.table(&format!("?since={stale}")).await;
        assert_eq!(d["full"], true, "since={stale}");
        assert_eq!(upsert_ids(&d), ids);
    }
    // Removals that fell out of the log are implied by the full snapshot.
    app.delete(&format!("/api/api-keys/{}", ids[0]), ADMIN)
        .await;
    for _ in 0..4 {
        app.admin_key(&["alpha"]).await;
    }
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(d["full"], true);
    assert!(!upsert_ids(&d).contains(&ids[0]));
}

/// The edge's view built from deltas equals a fresh snapshot after every
/// change, for every shape of rule: both paths decide access the same way.
async fn deltas_and_snapshots_agree_on_every_rule_shape(b: Backend) {
    let app = TestApp::start(b).await;
    let base = app.table("").await;
    let mut local = std::collections::BTreeMap::new();
    apply(&mut local, &base);
    let mut version = base["version"].as_u64().unwrap();
    for s in ["a", "b", "c"] {
        app.server(s).await;
    }
    let (u1, u2, u3) = (
        app.user("u1").await,
        app.user("u2").await,
        app.user("u3").await,
    );
    let subject = |u: i64| format!("user:{u}");
    let everyone_a = app.rule(&["a"], &["*"]).await;
    let u1_b = app.rule(&["b"], &[&subject(u1)]).await;
    let u2_all = app.rule(&["*"], &[&subject(u2)]).await;
    let u1_u3_c = app.rule(&["c"], &[&subject(u1), &subject(u3)]).await;
    for (user, scope) in [
        (u1, vec!["*"]),
        (u1, vec!["a", "b"]),
        (u2, vec!["*"]),
        (u2, vec!["a", "b", "c"]),
        (u3, vec!["*"]),
        (u3, vec!["a", "c"]),
    ] {
        app.key_for(user, &scope).await;
    }
    let mut check = async |what: &str| {
        let delta = app.table(&format!("?since={version}")).await;
        apply(&mut local, &delta);
        version = delta["version"].as_u64().unwrap();
        let snapshot = app.table("").await;
        let mut fresh = std::collections::BTreeMap::new();
        apply(&mut fresh, &snapshot);
        assert_eq!(local, fresh, "after {what}: deltas and snapshot disagree");
        fresh
    };
    let view = check("creating keys").await;
    assert_eq!(view.len(), 6);
    for (what, path) in [
        (
            "deleting u2's all-servers rule",
            format!("/api/access-rules/{u2_all}"),
        ),
        (
            "deleting u1's rule for b",
            format!("/api/access-rules/{u1_b}"),
        ),
        (
            "deleting the rule for everyone",
            format!("/api/access-rules/{everyone_a}"),
        ),
        (
            "deleting the rule for u1 and u3",
            format!("/api/access-rules/{u1_u3_c}"),
        ),
    ] {
        app.delete(&path, ADMIN).await;
        check(what).await;
    }
    // Keys without access stay in the table, opening nothing.
    let left = check("every rule gone").await;
    assert_eq!(left.len(), 6);
    assert!(left.values().all(|e| e["servers"] == json!([])));
}

async fn effective_servers_follow_access(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("beta").await;
    let frank = app.user("frank").await;
    let subject = format!("user:{frank}");
    let r_alpha = app.rule(&["alpha"], &[&subject]).await;
    let (star, _) = app.key_for(frank, &["*"]).await;
    let (named, _) = app.key_for(frank, &["alpha"]).await;
    let t = app.table("").await;
    assert_eq!(entry(&t, star).unwrap()["servers"], json!(["alpha"]));
    let v = t["version"].as_u64().unwrap();

    // Access grows: the `*` key follows; the named key stays as scoped.
    let r_all = app.rule(&["*"], &[&subject]).await;
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(entry(&d, star).unwrap()["servers"], json!("*"));
    assert_eq!(entry(&d, named).unwrap()["servers"], json!(["alpha"]));
    let v = d["version"].as_u64().unwrap();

    // Access shrinks to beta only: the named key loses alpha and keeps its
    // entry with no servers (a valid key without access: 403, not 401).
    app.delete(&format!("/api/access-rules/{r_all}"), ADMIN)
        .await;
    app.put(
        &format!("/api/access-rules/{r_alpha}"),
        ADMIN,
        json!({"name": "beta only", "mcpServerIds": ["beta"], "subjects": [subject]}),
    )
    .await;
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(d["full"], false);
    assert_eq!(entry(&d, star).unwrap()["servers"], json!(["beta"]));
    assert_eq!(entry(&d, named).unwrap()["servers"], json!([]));
    assert_eq!(removal_ids(&d), Vec::<i64>::new());
    // The key record still shows its scope; the edge sees what it can reach.
    let r = app
        .get(&format!("/api/admin-api-keys/{named}"), ADMIN)
        .await;
    assert_eq!(r.body["mcpServerIds"], json!(["alpha"]));

    // Moving the rule to everyone keeps frank's access; removing it drops the `*` key.
    let v = d["version"].as_u64().unwrap();
    app.put(
        &format!("/api/access-rules/{r_alpha}"),
        ADMIN,
        json!({"name": "beta for all", "mcpServerIds": ["beta"], "subjects": ["*"]}),
    )
    .await;
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(entry(&d, star).unwrap()["servers"], json!(["beta"]));
    let v = d["version"].as_u64().unwrap();
    app.delete(&format!("/api/access-rules/{r_alpha}"), ADMIN)
        .await;
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(removal_ids(&d), Vec::<i64>::new());
    assert_eq!(entry(&d, star).unwrap()["servers"], json!([]));
    let snapshot = app.table("").await;
    assert_eq!(upsert_ids(&snapshot), vec![star, named]);
    for id in [star, named] {
        assert_eq!(entry(&snapshot, id).unwrap()["servers"], json!([]));
    }

    // A role change alters nothing the edge sees.
    let v = d["version"].as_u64().unwrap();
    app.patch(
        &format!("/api/users/{frank}"),
        ADMIN,
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(app.table("").await["version"].as_u64().unwrap(), v);
}

async fn long_poll(app: &TestApp, since: u64, wait: u64) -> (Value, Instant) {
    let r = app
        .get(
            &format!("/internal/v1/key-table?since={since}&wait={wait}"),
            DATA_PLANE,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    (r.body, Instant::now())
}

async fn long_poll_wakes_on_change(b: Backend) {
    // A recheck far longer than the test proves the wake-up is a notification.
    let app = TestApp::start_with(b, |c| c.feed_recheck = Duration::from_secs(30)).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (k, _) = app.admin_key(&["alpha"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();

    // Anything already after `since` answers at once, wait or not.
    let started = Instant::now();
    let (t, _) = long_poll(&app, v - 1, 20).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(upsert_ids(&t), vec![k]);

    let app = std::sync::Arc::new(app);
    let poller = {
        let app = app.clone();
        tokio::spawn(async move { long_poll(&app, v, 20).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert!(r.text.contains("keygate_feed_clients 1"), "{}", r.text);
    assert!(
        !poller.is_finished(),
        "long poll answered before any change"
    );
    let changed_at = Instant::now();
    app.delete(&format!("/api/api-keys/{k}"), ADMIN).await;
    let (t, answered_at) = poller.await.unwrap();
    let wake = answered_at.duration_since(changed_at);
    println!(
        "long-poll wake-up after a revocation ({b:?}): {wake:?} (includes the DELETE request)"
    );
    assert!(wake < Duration::from_millis(500), "woke after {wake:?}");
    assert_eq!(removal_ids(&t), vec![k]);
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert!(r.text.contains("keygate_feed_clients 0"), "{}", r.text);
}

async fn long_poll_times_out_empty(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    let v = app.table("").await["version"].as_u64().unwrap();
    let started = Instant::now();
    let (t, _) = long_poll(&app, v, 1).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        t,
        json!({"version": v, "full": false, "upserts": [], "removals": [],
               "registeredServers": ["alpha"]})
    );
    // wait=0 answers at once.
    let started = Instant::now();
    long_poll(&app, v, 0).await;
    assert!(started.elapsed() < Duration::from_millis(500));
}

async fn feed_auth_and_params(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app
        .call(Method::GET, "/internal/v1/key-table", None, None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "authentication required");
    let r = app.get("/internal/v1/key-table", "wrong").await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid or expired credentials",
    );
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    // The admin token is not the data-plane token.
    assert_eq!(
        app.get("/internal/v1/key-table", ADMIN).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .get("/internal/v1/key-table?since=0&wait=61", DATA_PLANE)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "wait must be 0 to 60 seconds");
    for q in ["since=abc", "since=-1", "wait=x", "bogus=1"] {
        let r = app
            .get(&format!("/internal/v1/key-table?{q}"), DATA_PLANE)
            .await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, "invalid query");
    }
}

async fn concurrent_creates_and_deletes_stay_consistent(b: Backend) {
    let app = std::sync::Arc::new(TestApp::start(b).await);
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let start = app.table("").await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = app
                .post(
                    "/api/api-keys",
                    ADMIN,
                    json!({"name": format!("k{i}"), "mcpServerIds": ["alpha"]}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let id = r.body["id"].as_i64().unwrap();
            // Delete every other key right away, racing other creates.
            if i % 2 == 0 {
                let r = app.delete(&format!("/api/api-keys/{id}"), ADMIN).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            }
            id
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.unwrap());
    }
    assert_eq!(
        created.iter().collect::<BTreeSet<_>>().len(),
        100,
        "ids are unique"
    );

    let listed: BTreeSet<i64> = app.get("/api/api-keys", ADMIN).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed.len(), 50);
    let full = app.table("").await;
    let in_table: BTreeSet<i64> = upsert_ids(&full).into_iter().collect();
    assert_eq!(in_table, listed);
    // 100 creates + 50 deletes, each its own version.
    assert_eq!(
        full["version"].as_u64().unwrap(),
        start["version"].as_u64().unwrap() + 150
    );
    // An edge that followed by delta from the start agrees with the snapshot.
    let mut local = Default::default();
    apply(&mut local, &start);
    apply(
        &mut local,
        &app.table(&format!("?since={}", start["version"])).await,
    );
    assert_eq!(local.keys().copied().collect::<BTreeSet<_>>(), listed);
}

/// Two replicas on one PostgreSQL: a change through one wakes a long poll on
/// the other, through LISTEN/NOTIFY (the fallback recheck is set far beyond
/// the assertion, so only a notification can explain a fast answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_versions_and_wake_each_other_postgres() {
    let slow =
        |c: &mut keygate_control_plane::config::Config| c.feed_recheck = Duration::from_secs(30);
    let a = TestApp::start_with(Backend::Postgres, slow).await;
    let b = std::sync::Arc::new(TestApp::start_on(a.db.clone(), slow).await);
    // Give B's listener a moment to LISTEN.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.server("alpha").await;
    a.rule(&["alpha"], &["*"]).await;
    let v = b.table("").await["version"].as_u64().unwrap();
    assert_eq!(v, a.table("").await["version"].as_u64().unwrap());

    let poller = {
        let b = b.clone();
        tokio::spawn(async move { long_poll(&b, v, 20).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poller.is_finished());
    let changed_at = Instant::now();
    let (k, _) = a.admin_key(&["alpha"]).await;
    let (t, answered_at) = poller.await.unwrap();
    let wake = answered_at.duration_since(changed_at);
    println!(
        "cross-replica long-poll wake-up (PostgreSQL NOTIFY): {wake:?} (includes the create request)"
    );
    assert!(wake < Duration::from_millis(800), "woke after {wake:?}");
    assert_eq!(upsert_ids(&t), vec![k]);
    assert!(t["version"].as_u64().unwrap() > v);

    // Versions stay monotonic across replicas and restarts.
    let (k2, _) = b.admin_key(&["alpha"]).await;
    let d = a.table(&format!("?since={}", t["version"])).await;
    assert_eq!(upsert_ids(&d), vec![k2]);
    drop(b);
    let c = TestApp::start_on(a.db.clone(), |_| {}).await;
    let d = c.table(&format!("?since={}", t["version"])).await;
    assert_eq!(d["full"], false);
    assert_eq!(upsert_ids(&d), vec![k2]);
}

/// Versions survive a restart on SQLite too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_survives_restart_sqlite() {
    let a = TestApp::start(Backend::Sqlite).await;
    a.server("alpha").await;
    a.rule(&["alpha"], &["*"]).await;
    let (k, _) = a.admin_key(&["alpha"]).await;
    let v = a.table("").await["version"].as_u64().unwrap();
    let db = a.db.clone();
    drop(a); // stops the server and closes its pool
    let b = TestApp::start_on(db, |_| {}).await;
    let t = b.table(&format!("?since={}", v - 1)).await;
    assert_eq!(t["full"], false);
    assert_eq!(t["version"].as_u64().unwrap(), v);
    assert_eq!(upsert_ids(&t), vec![k]);
}

/// Fetches a paged snapshot from its first page (`first_query`) to the last;
/// returns the pages in order.
async fn all_pages(app: &TestApp, first_query: &str, limit: u32) -> Vec<Value> {
    let mut pages = vec![app.table(first_query).await];
    while let Some(next) = pages.last().unwrap().get("next").and_then(Value::as_i64) {
        assert!(pages.len() < 100, "paging does not end");
        pages.push(app.table(&format!("?after={next}&limit={limit}")).await);
    }
    pages
}

async fn paged_snapshot_covers_every_key_once(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("beta").await;
    app.rule(&["alpha", "beta"], &["*"]).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let servers: &[&str] = if i % 2 == 0 { &["alpha"] } else { &["*"] };
        ids.push(app.admin_key(servers).await.0);
    }
    let whole = app.table("").await;
    assert_eq!(upsert_ids(&whole), ids);
    assert!(whole.get("next").is_none(), "unpaged snapshot has no next");

    for limit in [1, 2, 3, 6, 7, 50_000] {
        let pages = all_pages(&app, &format!("?limit={limit}"), limit).await;
        assert_eq!(
            pages.len(),
            ids.len().div_ceil(limit as usize),
            "limit {limit}"
        );
        let mut seen = Vec::new();
        for (i, page) in pages.iter().enumerate() {
            assert_eq!(page["full"], true);
            let got = upsert_ids(page);
            assert!(got.len() <= limit as usize);
            let last = i + 1 == pages.len();
            // `next` is the last id of a page that has a successor, absent on the last.
            if last {
                assert!(page.get("next").is_none(), "limit {limit}: {page}");
            } else {
                assert_eq!(page["next"].as_i64(), got.last().copied(), "limit {limit}");
            }
            seen.extend(got);
        }
        // Every key exactly once, in id order, with the same entry as unpaged.
        assert_eq!(seen, ids, "limit {limit}");
        for page in &pages {
            for e in page["upserts"].as_array().unwrap() {
                assert_eq!(Some(e), entry(&whole, e["id"].as_i64().unwrap()));
            }
        }
    }

    // A `since` that needs a full snapshot is paged too.
    let v = whole["version"].as_u64().unwrap();
    let first = app.table(&format!("?since={}&limit=3", v + 1000)).await;
    assert_eq!(first["full"], true);
    assert_eq!(upsert_ids(&first), ids[..3].to_vec());
    assert_eq!(first["next"].as_i64(), Some(ids[2]));
    // A delta is paged only when asked for with `paged=1`.
    let d = app.table(&format!("?since={}&limit=1", v - 3)).await;
    assert_eq!(d["full"], false);
    assert_eq!(upsert_ids(&d), ids[4..].to_vec());
    assert!(d.get("next").is_none());
    // After the last key: an empty last page at the current version.
    let end = app
        .table(&format!("?after={}&limit=5", ids.last().unwrap()))
        .await;
    assert_eq!(
        end,
        json!({"version": v, "full": true, "upserts": [], "removals": [],
               "registeredServers": ["alpha", "beta"]})
    );
}

/// Servers `alpha` and `beta`, one rule giving everyone `alpha`, and nine
/// `*` keys (so each opens `alpha` only); returns the rule and the key ids.
async fn nine_keys_on_alpha(app: &TestApp) -> (i64, Vec<i64>) {
    app.server("alpha").await;
    app.server("beta").await;
    let rule = app.rule(&["alpha"], &["*"]).await;
    let mut ids = Vec::new();
    for _ in 0..9 {
        ids.push(app.admin_key(&["*"]).await.0);
    }
    (rule, ids)
}

/// One access change that alters every key's servers.
async fn widen_to_beta(app: &TestApp, rule: i64) {
    app.put(
        &format!("/api/access-rules/{rule}"),
        ADMIN,
        json!({"name": "both", "mcpServerIds": ["alpha", "beta"], "subjects": ["*"]}),
    )
    .await;
}

async fn paging_converges_after_the_follow_up_delta(b: Backend) {
    let app = TestApp::start(b).await;
    let (rule, ids) = nine_keys_on_alpha(&app).await;
    let first = app.table("?limit=3").await;
    let v1 = first["version"].as_u64().unwrap();
    let mut local = std::collections::BTreeMap::new();
    apply(&mut local, &first);

    // While the edge is paging: a key already shipped and one not yet
    // shipped are deleted, a key is created, and an access change alters
    // every key's servers (shipped or not).
    app.delete(&format!("/api/api-keys/{}", ids[0]), ADMIN)
        .await;
    app.delete(&format!("/api/api-keys/{}", ids[5]), ADMIN)
        .await;
    let (created, _) = app.admin_key(&["*"]).await;
    widen_to_beta(&app, rule).await;

    let mut next = first["next"].as_i64();
    while let Some(after) = next {
        let page = app.table(&format!("?after={after}&limit=3")).await;
        assert_eq!(page["full"], true);
        // A continuation page must not clear what earlier pages delivered.
        for e in page["upserts"].as_array().unwrap() {
            local.insert(e["id"].as_i64().unwrap(), e.clone());
        }
        next = page["next"].as_i64();
    }
    let truth = {
        let mut t = std::collections::BTreeMap::new();
        apply(&mut t, &app.table("").await);
        t
    };
    // Pages alone are a mix of versions: the deleted, already shipped key is
    // still there and the first page still has the old servers.
    assert!(local.contains_key(&ids[0]));
    assert_ne!(local, truth);
    assert!(!local.contains_key(&ids[5]));
    assert!(local.contains_key(&created));

    // The delta since the FIRST page's version repairs all of it.
    let d = app.table(&format!("?since={v1}&limit=3")).await;
    assert_eq!(d["full"], false);
    apply(&mut local, &d);
    assert_eq!(local, truth);
    assert!(!local.contains_key(&ids[0]));
    assert_eq!(local[&ids[1]]["servers"], json!(["alpha", "beta"]));
}

async fn paging_params_are_validated(b: Backend) {
    let app = TestApp::start(b).await;
    for (q, msg) in [
        ("limit=0", "limit must be 1 to 50000"),
        ("limit=50001", "limit must be 1 to 50000"),
        ("since=0&limit=0", "limit must be 1 to 50000"),
        ("limit=99999999999", "limit must be 1 to 50000"),
        ("after=3", "after needs limit"),
        ("after=3&since=1", "after needs limit"),
        ("after=-1&limit=2", "after must be a key id (0 or more)"),
        ("since=1&limit=2&paged=2", "paged must be 0 or 1"),
        ("since=1&paged=1", "paged needs since and limit"),
    ] {
        let r = app
            .get(&format!("/internal/v1/key-table?{q}"), DATA_PLANE)
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, msg);
    }
    for q in ["limit=x", "limit=-1", "after=x&limit=2", "limit=2&limit=3"] {
        let r = app
            .get(&format!("/internal/v1/key-table?{q}"), DATA_PLANE)
            .await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, "invalid query");
    }
    // Paging needs the data-plane token like the rest of the feed.
    let r = app.get("/internal/v1/key-table?limit=2", ADMIN).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // `after=0` starts from the first key.
    let t = app.table("?after=0&limit=2").await;
    assert_eq!(t["full"], true);
}

/// A change touching more keys than a page (an access rule over every user,
/// deletions) comes, when the edge asks with `paged=1`, as pages of at most
/// `limit` keys in id order, which together say exactly what the whole delta
/// says; a continuation read after further changes is a superset, and the
/// delta since the first page's version completes it.
async fn paged_delta_covers_every_change_once(b: Backend) {
    let app = TestApp::start(b).await;
    let (rule, ids) = nine_keys_on_alpha(&app).await;
    let v0 = app.table("").await["version"].as_u64().unwrap();
    app.delete(&format!("/api/api-keys/{}", ids[1]), ADMIN)
        .await;
    app.delete(&format!("/api/api-keys/{}", ids[6]), ADMIN)
        .await;
    widen_to_beta(&app, rule).await;
    let whole = app.table(&format!("?since={v0}")).await;
    assert_eq!(whole["full"], false);
    assert!(whole.get("next").is_none());
    let v1 = whole["version"].as_u64().unwrap();
    let removed = |t: &Value| -> Vec<i64> {
        t["removals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_i64().unwrap())
            .collect()
    };
    assert_eq!(removed(&whole), vec![ids[1], ids[6]]);
    assert_eq!(upsert_ids(&whole).len(), 7);

    for limit in [1u32, 2, 3, 8, 9, 50] {
        let mut pages = vec![
            app.table(&format!("?since={v0}&wait=0&limit={limit}&paged=1"))
                .await,
        ];
        while let Some(next) = pages.last().unwrap().get("next").and_then(Value::as_i64) {
            assert!(pages.len() < 20, "paging does not end");
            pages.push(
                app.table(&format!("?since={v0}&after={next}&limit={limit}"))
                    .await,
            );
        }
        let (mut upserts, mut removals, mut named) = (Vec::new(), Vec::new(), Vec::new());
        for (i, page) in pages.iter().enumerate() {
            assert_eq!(page["full"], false, "limit {limit}, page {i}");
            assert_eq!(page["version"].as_u64(), Some(v1));
            assert_eq!(page["registeredServers"], json!(["alpha", "beta"]));
            let mut here = upsert_ids(page);
            here.extend(removed(page));
            here.sort_unstable();
            assert!(here.len() <= limit as usize, "limit {limit}: {page}");
            // `next` is the page's last key, so no key is named twice.
            if let Some(next) = page.get("next").and_then(Value::as_i64) {
                assert_eq!(here.last(), Some(&next));
            }
            named.extend(here);
            upserts.extend(page["upserts"].as_array().unwrap().iter().cloned());
            removals.extend(removed(page));
        }
        assert!(
            named.windows(2).all(|w| w[0] < w[1]),
            "limit {limit}: {named:?}"
        );
        assert_eq!(Value::from(upserts), whole["upserts"], "limit {limit}");
        assert_eq!(removals, removed(&whole), "limit {limit}");
        assert_eq!(
            pages.len(),
            9usize.div_ceil(limit as usize),
            "limit {limit}"
        );
    }

    // A change while paging: the next page is read at the new version and
    // names whatever changed after `since` above its cursor, the new key
    // included; the delta since the first page's version ships it again.
    let first = app
        .table(&format!("?since={v0}&wait=0&limit=4&paged=1"))
        .await;
    let next = first["next"].as_i64().unwrap();
    let (created, _) = app.admin_key(&["*"]).await;
    let rest = app
        .table(&format!("?since={v0}&after={next}&limit=50"))
        .await;
    assert!(rest["version"].as_u64().unwrap() > v1);
    assert!(upsert_ids(&rest).contains(&created));
    assert!(rest.get("next").is_none());
    let follow_up = app.table(&format!("?since={v1}&wait=0")).await;
    assert_eq!(upsert_ids(&follow_up), vec![created]);

    // A continuation the log no longer reaches is answered with a snapshot.
    let app = TestApp::start_with(b, |c| c.feed_log_retention = 2).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    for _ in 0..4 {
        app.admin_key(&["alpha"]).await;
    }
    let t = app.table("?since=1&after=1&limit=2").await;
    assert_eq!(t["full"], true);
    assert_eq!(upsert_ids(&t).len(), 2);
}

/// A counter or gauge from `/metrics` (0 when absent).
async fn metric(app: &TestApp, name: &str) -> u64 {
    let r = app.call(Method::GET, "/metrics", None, None).await;
    r.text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The feed's cost counters, in one read.
#[derive(Debug, Clone, Copy)]
struct FeedCost {
    version_reads: u64,
    delta_builds: u64,
    snapshot_builds: u64,
    encodes: u64,
    shared: u64,
}

async fn feed_cost(app: &TestApp) -> FeedCost {
    FeedCost {
        version_reads: metric(app, "keygate_feed_version_reads_total").await,
        delta_builds: metric(app, "keygate_feed_delta_builds_total").await,
        snapshot_builds: metric(app, "keygate_feed_snapshot_builds_total").await,
        encodes: metric(app, "keygate_feed_encodes_total").await,
        shared: metric(app, "keygate_feed_shared_answers_total").await,
    }
}

/// Waits until `n` long polls are parked on `app`.
async fn until_parked(app: &TestApp, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(app, "keygate_feed_clients").await < n {
        assert!(Instant::now() < deadline, "{n} long polls never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// N edges parked at one version cost one delta build and one encode when a
/// change lands, and none at all while they wait: they all get the same bytes.
async fn parked_waiters_share_one_build(b: Backend) {
    const N: usize = 40;
    // A recheck far beyond the test: only the commit's wake-up counts.
    let app = std::sync::Arc::new(
        TestApp::start_with(b, |c| c.feed_recheck = Duration::from_secs(60)).await,
    );
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();
    let mut polls = Vec::new();
    for i in 0..N {
        let app = app.clone();
        // Edges that take whole deltas and edges that page them (at the
        // default size or a small one) all get the follower's one answer.
        let paging = ["", "&limit=50000&paged=1", "&limit=2&paged=1"][i % 3];
        polls.push(tokio::spawn(async move {
            app.get(
                &format!("/internal/v1/key-table?since={v}&wait=30{paging}"),
                DATA_PLANE,
            )
            .await
        }));
    }
    until_parked(&app, N as u64).await;
    let before = feed_cost(&app).await;
    // Parked, nobody reads the database.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = feed_cost(&app).await;
    assert_eq!(idle.version_reads, before.version_reads, "{idle:?}");
    assert_eq!(idle.encodes, before.encodes, "{idle:?}");

    let (k, _) = app.admin_key(&["alpha"]).await;
    let mut bodies = BTreeSet::new();
    for p in polls {
        let r = p.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(upsert_ids(&r.body), vec![k]);
        bodies.insert(r.text);
    }
    assert_eq!(bodies.len(), 1, "every waiter got the same answer");
    let after = feed_cost(&app).await;
    assert_eq!(after.delta_builds - before.delta_builds, 1, "{after:?}");
    assert_eq!(after.encodes - before.encodes, 1, "{after:?}");
    assert_eq!(after.snapshot_builds, before.snapshot_builds, "{after:?}");
    assert!(after.shared - before.shared >= N as u64 - 1, "{after:?}");
    // One read for the commit (PostgreSQL's own NOTIFY may add one).
    assert!(
        after.version_reads - before.version_reads <= 3,
        "{before:?} → {after:?}"
    );
    // Edges that were further behind get theirs built once per `since`.
    let query = format!("?since={}", v - 1);
    let older: Vec<_> = (0..5).map(|_| app.table(&query)).collect();
    let mut texts = BTreeSet::new();
    for t in older {
        texts.insert(t.await.to_string());
    }
    assert_eq!(texts.len(), 1);
    let last = feed_cost(&app).await;
    assert_eq!(last.delta_builds - after.delta_builds, 1, "{last:?}");
}

/// A fleet restarting at once: every edge pages through the snapshot, and
/// each page is read and encoded once at that version, not once per edge.
async fn snapshot_storm_builds_each_page_once(b: Backend) {
    const EDGES: usize = 24;
    let app = std::sync::Arc::new(TestApp::start(b).await);
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(app.admin_key(&["alpha"]).await.0);
    }
    let whole = app.table("").await;
    let before = feed_cost(&app).await;
    let mut edges = Vec::new();
    for _ in 0..EDGES {
        let app = app.clone();
        edges.push(tokio::spawn(async move {
            let pages = all_pages(&app, "?limit=3", 3).await;
            pages.iter().flat_map(upsert_ids).collect::<Vec<i64>>()
        }));
    }
    for e in edges {
        assert_eq!(e.await.unwrap(), ids);
    }
    let after = feed_cost(&app).await;
    // 7 keys in pages of 3: three pages, each built and encoded once.
    assert_eq!(
        after.snapshot_builds - before.snapshot_builds,
        3,
        "{after:?}"
    );
    assert_eq!(after.encodes - before.encodes, 3, "{after:?}");
    assert_eq!(
        after.shared - before.shared,
        (EDGES as u64 - 1) * 3,
        "{after:?}"
    );
    // A first page costs at most a version read (shared by requests that
    // overlap); continuation pages cost none.
    assert!(
        after.version_reads - before.version_reads <= EDGES as u64,
        "{before:?} → {after:?}"
    );
    // The answer is the same JSON a single edge gets.
    assert_eq!(all_pages(&app, "?limit=50000", 50_000).await[0], whole);
}

/// A miniature edge: follows the feed by long poll from `start`, applying
/// every answer, until its version reaches `target` (0: not known yet).
async fn follow(
    app: std::sync::Arc<TestApp>,
    start: Value,
    target: std::sync::Arc<std::sync::atomic::AtomicU64>,
    timeout: Duration,
) -> (u64, std::collections::BTreeMap<i64, Value>) {
    use std::sync::atomic::Ordering;
    let deadline = Instant::now() + timeout;
    let mut local = std::collections::BTreeMap::new();
    apply(&mut local, &start);
    let mut version = start["version"].as_u64().unwrap();
    loop {
        let goal = target.load(Ordering::SeqCst);
        if goal != 0 && version >= goal {
            return (version, local);
        }
        assert!(
            Instant::now() < deadline,
            "follower stuck at {version}, goal {goal}"
        );
        let t = app.table(&format!("?since={version}&wait=2")).await;
        let v = t["version"].as_u64().unwrap();
        assert!(v >= version, "version went back from {version} to {v}");
        apply(&mut local, &t);
        version = v;
    }
}

/// Edges parked through 60 concurrent creates and deletes all end with the
/// table a fresh snapshot shows, having seen every change.
async fn followers_converge_under_concurrent_changes(b: Backend) {
    let app = std::sync::Arc::new(TestApp::start(b).await);
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let start = app.table("").await;
    let target = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let followers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(follow(
                app.clone(),
                start.clone(),
                target.clone(),
                Duration::from_secs(60),
            ))
        })
        .collect();
    churn(std::slice::from_ref(&app), 60).await;
    let truth = app.table("").await;
    target.store(
        truth["version"].as_u64().unwrap(),
        std::sync::atomic::Ordering::SeqCst,
    );
    let mut fresh = std::collections::BTreeMap::new();
    apply(&mut fresh, &truth);
    for f in followers {
        let (v, local) = f.await.unwrap();
        assert_eq!(v, truth["version"].as_u64().unwrap());
        assert_eq!(local, fresh);
    }
}

/// `n` keys created concurrently through the given replicas (in turn),
/// every other one deleted right away.
async fn churn(apps: &[std::sync::Arc<TestApp>], n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let app = apps[i % apps.len()].clone();
        tasks.push(tokio::spawn(async move {
            let r = app
                .post(
                    "/api/api-keys",
                    ADMIN,
                    json!({"name": format!("k{i}"), "mcpServerIds": ["alpha"]}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            if i % 2 == 0 {
                let id = r.body["id"].as_i64().unwrap();
                let r = app.delete(&format!("/api/api-keys/{id}"), ADMIN).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Ends every LISTEN connection on the test's database (both replicas');
/// returns how many.
async fn drop_listen_connections(url: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND query ILIKE 'LISTEN%') t",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    ended
}

/// The fleet's view of two replicas under a fault: edges parked on both,
/// changes made through either, and both replicas' LISTEN connections
/// ended mid-run. Every edge still ends with every change; a change made
/// right after the drop reaches an edge on the other replica within the
/// re-check interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_survive_a_lost_listen_connection_postgres() {
    let recheck = Duration::from_secs(2);
    let tweak = move |c: &mut keygate_control_plane::config::Config| c.feed_recheck = recheck;
    let a = std::sync::Arc::new(TestApp::start_with(Backend::Postgres, tweak).await);
    let b = std::sync::Arc::new(TestApp::start_on(a.db.clone(), tweak).await);
    a.server("alpha").await;
    a.rule(&["alpha"], &["*"]).await;
    let start = b.table("").await;
    let target = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let followers: Vec<_> = (0..8)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(follow(
                app,
                start.clone(),
                target.clone(),
                Duration::from_secs(90),
            ))
        })
        .collect();
    churn(&[a.clone(), b.clone()], 20).await;

    // Drop the LISTEN connections while edges are parked on both replicas.
    until_parked(&a, 4).await;
    until_parked(&b, 4).await;
    let ended = drop_listen_connections(&a.db.url).await;
    assert!(
        ended >= 2,
        "ended {ended} LISTEN connections, expected both"
    );
    let v = b.table("").await["version"].as_u64().unwrap();
    let poll = {
        let b = b.clone();
        tokio::spawn(async move { long_poll(&b, v, 30).await })
    };
    until_parked(&b, 5).await;
    let changed_at = Instant::now();
    let (k, _) = a.admin_key(&["alpha"]).await;
    let (t, answered_at) = poll.await.unwrap();
    let took = answered_at.duration_since(changed_at);
    println!("change through A after the LISTEN drop reached an edge on B in {took:?}");
    assert!(
        took < recheck + Duration::from_secs(1),
        "took {took:?}, re-check is {recheck:?}"
    );
    assert_eq!(upsert_ids(&t), vec![k]);

    churn(&[a.clone(), b.clone()], 20).await;
    let truth = a.table("").await;
    target.store(
        truth["version"].as_u64().unwrap(),
        std::sync::atomic::Ordering::SeqCst,
    );
    let mut fresh = std::collections::BTreeMap::new();
    apply(&mut fresh, &truth);
    for f in followers {
        let (v, local) = f.await.unwrap();
        assert_eq!(v, truth["version"].as_u64().unwrap());
        assert_eq!(local, fresh);
    }
    // The listeners came back: a change through B wakes an edge on A at
    // notification speed again.
    let v = a.table("").await["version"].as_u64().unwrap();
    let poll = {
        let a = a.clone();
        tokio::spawn(async move { long_poll(&a, v, 30).await })
    };
    until_parked(&a, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed_at = Instant::now();
    b.admin_key(&["alpha"]).await;
    let (_, answered_at) = poll.await.unwrap();
    let took = answered_at.duration_since(changed_at);
    println!("after the listeners reconnected, B → A took {took:?}");
    assert!(took < Duration::from_millis(800), "took {took:?}");
}

/// Two replicas on one SQLite file hear nothing of each other's commits:
/// only the follower's periodic re-check can wake an edge parked on the
/// other one, and it does, within the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_covers_a_missing_notification_sqlite() {
    let recheck = Duration::from_secs(1);
    let tweak = move |c: &mut keygate_control_plane::config::Config| c.feed_recheck = recheck;
    let a = TestApp::start_with(Backend::Sqlite, tweak).await;
    let b = std::sync::Arc::new(TestApp::start_on(a.db.clone(), tweak).await);
    a.server("alpha").await;
    a.rule(&["alpha"], &["*"]).await;
    let v = b.table("").await["version"].as_u64().unwrap();
    let poll = {
        let b = b.clone();
        tokio::spawn(async move { long_poll(&b, v, 20).await })
    };
    until_parked(&b, 1).await;
    let reads = metric(&b, "keygate_feed_version_reads_total").await;
    let changed_at = Instant::now();
    let (k, _) = a.admin_key(&["alpha"]).await;
    let (t, answered_at) = poll.await.unwrap();
    let took = answered_at.duration_since(changed_at);
    assert!(took < recheck + Duration::from_millis(800), "took {took:?}");
    assert_eq!(upsert_ids(&t), vec![k]);
    // The re-check is the replica's, not the waiter's: about one read a
    // second while parked, however long.
    let after = metric(&b, "keygate_feed_version_reads_total").await;
    assert!(after - reads <= 4, "{reads} → {after}");
}
