//! The key lifetime policy (`/api/settings/key-policy`) on SQLite and
//! PostgreSQL: who reads and sets it, what it refuses, the default and the
//! maximum on create and on expiry edits, and the unused-key sweep run by
//! two replicas of one database at once. Time moves through the app's own
//! clock ([`ManualClock`] in `Config::clock`), never through a flag.

use crate::common::*;
use crate::provider::*;
use crate::signin::{app_with_signin, subject};
use keygate_control_plane::clock::ManualClock;
use keygate_control_plane::config::Config;
use keygate_control_plane::domain::format_time;
use keygate_control_plane::key_sweep::sweep_once;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

both_backends!(
    policy_read_by_everyone_set_by_admins,
    policy_bounds_new_keys_and_expiry_edits,
    policy_sweep_by_two_replicas_disables_each_unused_key_once,
    policy_owner_turns_a_swept_key_on_again,
);

const PATH: &str = "/api/settings/key-policy";
const DAY: i64 = 86_400;

/// A clock standing at the system's now, and a config that uses it (the
/// background sweep pushed out of the way: the tests sweep by hand).
fn with_clock(clock: &Arc<ManualClock>) -> impl FnOnce(&mut Config) + use<> {
    let clock = clock.clone();
    move |c: &mut Config| {
        c.clock = clock;
        c.key_policy_sweep = Duration::from_secs(3600);
    }
}

fn rfc3339(secs: i64) -> String {
    format_time(secs)
}

async fn set_policy(app: &TestApp, body: Value) -> Resp {
    app.put(PATH, ADMIN, body).await
}

/// The policy as `GET` shows it, without the bookkeeping fields.
fn limits(body: &Value) -> Value {
    json!({
        "maxLifetimeDays": body["maxLifetimeDays"],
        "defaultLifetimeDays": body["defaultLifetimeDays"],
        "maxUnusedDays": body["maxUnusedDays"],
    })
}

async fn session_status(
    app: &TestApp,
    method: Method,
    cookie: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = with_session(method, app, PATH, cookie).header("origin", PUBLIC);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn policy_read_by_everyone_set_by_admins(b: Backend) {
    let app = app_with_signin(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;

    // Never set: no limits.
    let r = app.get(PATH, ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"maxLifetimeDays": null, "defaultLifetimeDays": null, "maxUnusedDays": null,
               "updatedAt": null, "updatedBy": null})
    );

    // A signed-in user reads it; setting it needs the admin role.
    let (cookie, _) = sign_in(&app, &subject("reader"), "/").await;
    let (s, body) = session_status(&app, Method::GET, &cookie, None).await;
    assert_eq!((s, limits(&body)), (StatusCode::OK, limits(&r.body)));
    let (s, body) = session_status(
        &app,
        Method::PUT,
        &cookie,
        Some(json!({"maxLifetimeDays": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"error": "admin role required"}));
    // An API key opens only MCP servers and /api/me; nobody is not anybody.
    let (_, key) = app.admin_key(&["alpha"]).await;
    assert_error(
        &app.get(PATH, &key).await,
        StatusCode::FORBIDDEN,
        "API keys can only be used for MCP servers and /api/me",
    );
    let r = app.call(Method::GET, PATH, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // The admin sets it; everyone reads the new values.
    let r = set_policy(
        &app,
        json!({"maxLifetimeDays": 90, "defaultLifetimeDays": 30, "maxUnusedDays": 60}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let set = json!({"maxLifetimeDays": 90, "defaultLifetimeDays": 30, "maxUnusedDays": 60});
    assert_eq!(limits(&r.body), set);
    assert_eq!(r.body["updatedBy"], 1);
    assert!(r.body["updatedAt"].as_str().unwrap().ends_with('Z'));
    let (s, body) = session_status(&app, Method::GET, &cookie, None).await;
    assert_eq!((s, limits(&body)), (StatusCode::OK, set.clone()));

    // Invalid bodies: 400 with a message naming the field; nothing changes.
    let range = "must be a whole number of days from 1 to 3650, or null";
    for (body, message) in [
        (
            json!({"maxLifetimeDays": 0}),
            format!("maxLifetimeDays {range}"),
        ),
        (
            json!({"maxUnusedDays": -3}),
            format!("maxUnusedDays {range}"),
        ),
        (
            json!({"defaultLifetimeDays": 3651}),
            format!("defaultLifetimeDays {range}"),
        ),
        (
            json!({"maxLifetimeDays": 1.5}),
            format!("maxLifetimeDays {range}"),
        ),
        (
            json!({"maxLifetimeDays": "90"}),
            format!("maxLifetimeDays {range}"),
        ),
        (
            json!({"maxLifetimeDays": 10, "defaultLifetimeDays": 11}),
            "defaultLifetimeDays (11) must not be more than maxLifetimeDays (10)".to_owned(),
        ),
        (
            json!({"maxLifetime": 10}),
            "unknown field: maxLifetime (expected maxLifetimeDays, defaultLifetimeDays or \
             maxUnusedDays)"
                .to_owned(),
        ),
        (
            json!([90]),
            "the key policy must be a JSON object".to_owned(),
        ),
    ] {
        assert_error(
            &set_policy(&app, body).await,
            StatusCode::BAD_REQUEST,
            &message,
        );
    }
    let raw = app
        .api
        .request(Method::PUT, PATH, Some(ADMIN))
        .header("content-type", "application/json")
        .body("{\"maxLifetimeDays\": ")
        .send()
        .await
        .unwrap();
    let r = keygate_test_support::api::Answer::read(raw).await.unwrap();
    assert_error_contains(&r, StatusCode::BAD_REQUEST, "invalid JSON body");
    assert_eq!(limits(&app.get(PATH, ADMIN).await.body), set);

    // PUT replaces the whole policy: left out or null is no limit.
    let r = set_policy(&app, json!({"maxUnusedDays": 7, "maxLifetimeDays": null})).await;
    assert_eq!(
        limits(&r.body),
        json!({"maxLifetimeDays": null, "defaultLifetimeDays": null, "maxUnusedDays": 7})
    );
    let r = set_policy(&app, json!({})).await;
    assert_eq!(
        limits(&r.body),
        json!({"maxLifetimeDays": null, "defaultLifetimeDays": null, "maxUnusedDays": null})
    );

    // Both methods are in the OpenAPI document.
    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let route = &doc["paths"][PATH];
    assert!(
        route["get"].is_object() && route["put"].is_object(),
        "{route}"
    );
}

/// Creates a key for the admin with an optional expiry (unix seconds).
async fn create_key(app: &TestApp, expires_at: Option<i64>) -> Resp {
    let mut body = json!({"name": "k", "mcpServerIds": ["alpha"]});
    if let Some(at) = expires_at {
        body["expiresAt"] = json!(rfc3339(at));
    }
    app.post("/api/api-keys", ADMIN, body).await
}

async fn patch_expiry(app: &TestApp, id: i64, expires_at: Option<i64>) -> Resp {
    app.patch(
        &format!("/api/api-keys/{id}"),
        ADMIN,
        json!({"expiresAt": expires_at.map(rfc3339)}),
    )
    .await
}

async fn policy_bounds_new_keys_and_expiry_edits(b: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::start_with(b, with_clock(&clock)).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let start = clock_now(&clock);

    // Made before any limit: no expiry, and it keeps none afterwards.
    let old = create_key(&app, None).await;
    assert_eq!(old.status, StatusCode::CREATED, "{}", old.text);
    assert_eq!(old.body["expiresAt"], Value::Null);
    let old_id = old.body["id"].as_i64().unwrap();
    let far = create_key(&app, Some(start + 400 * DAY)).await;
    assert_eq!(far.status, StatusCode::CREATED, "{}", far.text);
    let far_id = far.body["id"].as_i64().unwrap();

    let r = set_policy(
        &app,
        json!({"maxLifetimeDays": 90, "defaultLifetimeDays": 30}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let listed = app.get(&format!("/api/api-keys/{old_id}"), ADMIN).await;
    assert_eq!(
        listed.body["expiresAt"],
        Value::Null,
        "an old key was shortened"
    );
    let listed = app.get(&format!("/api/api-keys/{far_id}"), ADMIN).await;
    assert_eq!(listed.body["expiresAt"], json!(rfc3339(start + 400 * DAY)));

    // No expiry asked: the default, from the clock's now.
    let r = create_key(&app, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["expiresAt"], json!(rfc3339(start + 30 * DAY)));
    let id = r.body["id"].as_i64().unwrap();
    let created_at = start; // the key's createdAt (system time) is within a second of it
    // Up to the maximum, yes; a second past it, no (both create routes).
    let r = create_key(&app, Some(start + 90 * DAY)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let beyond = "expiresAt is beyond the key policy's maximum lifetime of 90 days";
    assert_error(
        &create_key(&app, Some(start + 90 * DAY + 1)).await,
        StatusCode::BAD_REQUEST,
        beyond,
    );
    let r = app
        .post(
            "/api/admin-api-keys",
            ADMIN,
            json!({"userId": 1, "name": "k", "mcpServerIds": ["alpha"],
                   "expiresAt": rfc3339(start + 365 * DAY)}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, beyond);
    let r = app
        .post(
            "/api/admin-api-keys",
            ADMIN,
            json!({"userId": 1, "name": "k", "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_eq!(
        r.body["expiresAt"],
        json!(rfc3339(start + 30 * DAY)),
        "{}",
        r.text
    );

    // Expiry edits: longer up to creation + maximum, not past it, never removed.
    let r = patch_expiry(&app, id, Some(created_at + 60 * DAY)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["expiresAt"], json!(rfc3339(created_at + 60 * DAY)));
    let r = patch_expiry(&app, id, Some(created_at + 91 * DAY)).await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, beyond);
    assert_error(
        &patch_expiry(&app, id, None).await,
        StatusCode::BAD_REQUEST,
        "expiresAt cannot be removed: the key policy's maximum lifetime is 90 days",
    );
    // The admin route is bound the same way.
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{id}"),
            ADMIN,
            json!({"expiresAt": rfc3339(created_at + 200 * DAY)}),
        )
        .await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, beyond);
    // A refused edit changes nothing, not even the fields sent with it.
    let r = app
        .patch(
            &format!("/api/api-keys/{id}"),
            ADMIN,
            json!({"name": "renamed", "expiresAt": null}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let now = app.get(&format!("/api/api-keys/{id}"), ADMIN).await;
    assert_eq!(now.body["name"], "k");
    assert_eq!(now.body["expiresAt"], json!(rfc3339(created_at + 60 * DAY)));

    // Lifetime counts from creation: 80 days on, the key cannot get 30 more.
    clock.advance(80 * DAY);
    let r = patch_expiry(&app, id, Some(created_at + 110 * DAY)).await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, beyond);
    let r = patch_expiry(&app, id, Some(created_at + 85 * DAY)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Old keys may be shortened, never lengthened past their bound or cleared.
    let r = patch_expiry(&app, old_id, Some(created_at + 100 * DAY)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = patch_expiry(&app, old_id, Some(created_at + 101 * DAY)).await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, beyond);
    let r = patch_expiry(&app, far_id, Some(created_at + 300 * DAY)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Name and description edits never meet the policy.
    let r = app
        .patch(
            &format!("/api/api-keys/{far_id}"),
            ADMIN,
            json!({"name": "still mine"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A maximum without a default: a key without an expiry gets the maximum.
    set_policy(&app, json!({"maxLifetimeDays": 7})).await;
    let r = create_key(&app, None).await;
    assert_eq!(
        r.body["expiresAt"],
        json!(rfc3339(clock_now(&clock) + 7 * DAY)),
        "{}",
        r.text
    );
    assert_error(
        &create_key(&app, Some(clock_now(&clock) + 8 * DAY)).await,
        StatusCode::BAD_REQUEST,
        "expiresAt is beyond the key policy's maximum lifetime of 7 days",
    );
    // No policy: as before.
    set_policy(&app, json!({})).await;
    let r = create_key(&app, None).await;
    assert_eq!(r.body["expiresAt"], Value::Null, "{}", r.text);
    let r = patch_expiry(&app, id, None).await;
    assert_eq!(r.body["expiresAt"], Value::Null, "{}", r.text);
}

fn clock_now(clock: &ManualClock) -> i64 {
    use keygate_control_plane::clock::Clock;
    clock.now()
}

/// Reports a use of `key_id` at `at` as the edge would.
async fn report_use(app: &TestApp, key_id: i64, at: i64) {
    let r = app
        .post(
            "/internal/v1/usage",
            DATA_PLANE,
            json!({"items": [{"keyId": key_id, "lastUsedAt": at}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

async fn feed_changes_after(app: &TestApp, version: i64) -> Vec<(i64, i64)> {
    let pool = &app.server.as_ref().unwrap().state.db.pool;
    sqlx::query_as(
        "SELECT key_id, COUNT(*) FROM key_changes WHERE version > $1 GROUP BY key_id ORDER BY key_id",
    )
    .bind(version)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn policy_sweep_by_two_replicas_disables_each_unused_key_once(b: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let one = TestApp::start_with(b, with_clock(&clock)).await;
    let two = TestApp::start_on(one.db.clone(), with_clock(&clock)).await;
    one.server("alpha").await;
    one.rule(&["alpha"], &["*"]).await;
    let start = clock_now(&clock);

    // Never used; used on day 0; used on day 20; turned off by an admin;
    // expiring on day 10 (expired, so refused already: left as it is).
    let mut never = Vec::new();
    for _ in 0..12 {
        never.push(one.admin_key(&["alpha"]).await.0);
    }
    let (used_early, early_key) = one.admin_key(&["alpha"]).await;
    let (used_late, late_key) = one.admin_key(&["alpha"]).await;
    let (off, _) = one.admin_key(&["*"]).await;
    let r = one
        .patch(
            &format!("/api/api-keys/{off}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let expiring = create_key(&one, Some(start + 10 * DAY)).await.body["id"]
        .as_i64()
        .unwrap();
    report_use(&one, used_early, start).await;
    clock.advance(20 * DAY);
    report_use(&two, used_late, clock_now(&clock)).await;

    // No maxUnusedDays: a sweep does nothing.
    assert_eq!(
        sweep_once(&one.server.as_ref().unwrap().state.db, clock.as_ref())
            .await
            .unwrap(),
        0
    );
    let r = set_policy(&one, json!({"maxUnusedDays": 30})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Day 29: nothing is 30 days unused yet.
    clock.advance(9 * DAY);
    assert_eq!(
        sweep_once(&one.server.as_ref().unwrap().state.db, clock.as_ref())
            .await
            .unwrap(),
        0
    );

    // Day 31: the never-used keys and the one used on day 0, not the one
    // used on day 20, the one already off, or the expired one. Both
    // replicas sweep at once.
    clock.advance(2 * DAY);
    let before = one.table("").await["version"].as_i64().unwrap();
    let db_one = one.server.as_ref().unwrap().state.db.clone();
    let db_two = two.server.as_ref().unwrap().state.db.clone();
    let (a, c) = tokio::join!(
        sweep_once(&db_one, clock.as_ref()),
        sweep_once(&db_two, clock.as_ref())
    );
    let (a, c) = (a.unwrap(), c.unwrap());
    let mut swept = never.clone();
    swept.push(used_early);
    swept.sort_unstable();
    assert_eq!(
        a + c,
        swept.len() as u64,
        "replica one {a}, replica two {c}"
    );
    // Exactly one feed change per key, and one version each.
    let changes = feed_changes_after(&one, before).await;
    assert_eq!(
        changes,
        swept.iter().map(|k| (*k, 1)).collect::<Vec<_>>(),
        "feed changes per key"
    );
    let delta = two.table(&format!("?since={before}")).await;
    assert_eq!(
        delta["version"].as_i64().unwrap(),
        before + swept.len() as i64
    );
    assert_eq!(removal_ids(&delta), swept);
    assert!(upsert_ids(&delta).is_empty(), "{delta}");
    // Again: nothing left to do, nothing logged.
    assert_eq!(sweep_once(&db_two, clock.as_ref()).await.unwrap(), 0);
    assert_eq!(
        one.table("").await["version"].as_i64().unwrap(),
        before + swept.len() as i64
    );

    // Lists say why; the key is refused like any disabled key.
    let list = one.get("/api/api-keys", ADMIN).await.body;
    let status_of = |id: i64| -> (String, Value) {
        let k = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap();
        (
            k["status"].as_str().unwrap().to_owned(),
            k["disabledReason"].clone(),
        )
    };
    let reason = json!("unused for 30 days (key policy)");
    for k in &swept {
        assert_eq!(status_of(*k), ("disabled".to_owned(), reason.clone()));
    }
    assert_eq!(status_of(used_late), ("active".to_owned(), Value::Null));
    assert_eq!(status_of(off), ("disabled".to_owned(), Value::Null));
    assert_eq!(status_of(expiring).1, Value::Null);
    assert_eq!(
        one.get("/api/me", &early_key).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(two.get("/api/me", &late_key).await.status, StatusCode::OK);
}

async fn policy_owner_turns_a_swept_key_on_again(b: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let oidc = provider().config();
    let tweak = with_clock(&clock);
    let app = TestApp::start_with(b, move |c| {
        tweak(c);
        c.public_url = Some(PUBLIC.to_owned());
        c.oidc = Some(oidc);
    })
    .await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (cookie, _) = sign_in(&app, &subject("owner"), "/").await;
    let me: Value = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (kid, key) = app.key_for(me["id"].as_i64().unwrap(), &["alpha"]).await;
    set_policy(&app, json!({"maxUnusedDays": 30})).await;
    let db = app.server.as_ref().unwrap().state.db.clone();

    clock.advance(31 * DAY);
    assert_eq!(sweep_once(&db, clock.as_ref()).await.unwrap(), 1);
    assert_eq!(
        app.get("/api/me", &key).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The owner may turn it on again (the policy, not a person, turned it
    // off); that restarts its unused clock.
    let enable = || {
        with_session(
            Method::PATCH,
            &app,
            &format!("/api/api-keys/{kid}"),
            &cookie,
        )
        .header("origin", PUBLIC)
        .json(&json!({"enabled": true}))
        .send()
    };
    let r = enable().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "active");
    assert_eq!(body["disabledReason"], Value::Null);
    assert_eq!(app.get("/api/me", &key).await.status, StatusCode::OK);
    assert_eq!(sweep_once(&db, clock.as_ref()).await.unwrap(), 0);
    clock.advance(29 * DAY);
    assert_eq!(sweep_once(&db, clock.as_ref()).await.unwrap(), 0);
    // Used meanwhile: counted from that use.
    report_use(&app, kid, clock_now(&clock)).await;
    clock.advance(29 * DAY);
    assert_eq!(sweep_once(&db, clock.as_ref()).await.unwrap(), 0);
    clock.advance(DAY);
    assert_eq!(sweep_once(&db, clock.as_ref()).await.unwrap(), 1);

    // Had an admin turned it off, the owner could not undo that.
    let r = enable().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{kid}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["disabledReason"], Value::Null);
    let r = enable().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
