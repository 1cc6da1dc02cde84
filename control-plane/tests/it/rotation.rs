//! Rotating a key's secret with overlap, at the API and in the feed, on
//! SQLite and PostgreSQL: the new key is shown once, the old secret works
//! until its deadline (and the feed tells the edge that deadline), at most
//! two secrets work, only active keys rotate, and the usage report is read
//! in its older and newer shapes.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

both_backends!(
    rotation_gives_a_new_secret_and_keeps_everything_else,
    at_most_two_secrets_work,
    only_active_keys_rotate,
    usage_reports_old_and_new_shapes,
);

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn unix(rfc3339: &Value) -> i64 {
    time::OffsetDateTime::parse(
        rfc3339.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp()
}

/// Rotates `id` on `route` (`api-keys` or `admin-api-keys`); asserts 200.
async fn rotate(app: &TestApp, route: &str, id: i64, body: Option<Value>) -> Value {
    let r = app
        .call(
            Method::POST,
            &format!("/api/{route}/{id}/rotate"),
            Some(ADMIN),
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

async fn me(app: &TestApp, key: &str) -> StatusCode {
    app.get("/api/me", key).await.status
}

async fn rotation_gives_a_new_secret_and_keeps_everything_else(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("beta").await;
    app.rule(&["alpha", "beta"], &["*"]).await;
    let created = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "laptop", "description": "d", "mcpServerIds": ["alpha"],
                   "expiresAt": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let kid = created.body["id"].as_i64().unwrap();
    let old = created.body["key"].as_str().unwrap().to_owned();
    let before = app.table("").await;
    let old_hash = entry(&before, kid).unwrap()["secretHash"].clone();
    let v = before["version"].as_u64().unwrap();

    let t0 = now();
    let rotated = rotate(&app, "api-keys", kid, Some(json!({"overlapSeconds": 3600}))).await;
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with(&format!("ok1-1-{kid}-")), "{new}");
    // Same id, owner, name, description, scope and expiry.
    for field in [
        "id",
        "userId",
        "name",
        "description",
        "mcpServerIds",
        "expiresAt",
        "createdAt",
    ] {
        assert_eq!(rotated[field], created.body[field], "{field}");
    }
    assert_eq!(rotated["status"], "active");
    assert!((t0..=now()).contains(&unix(&rotated["rotatedAt"])));
    let ends = unix(&rotated["previousSecretExpiresAt"]);
    assert!((t0 + 3600..=now() + 3600).contains(&ends), "{ends}");
    assert_eq!(rotated["previousSecretLastUsedAt"], Value::Null);

    // Both secrets authenticate during the overlap.
    assert_eq!(me(&app, &old).await, StatusCode::OK);
    assert_eq!(me(&app, &new).await, StatusCode::OK);

    // The edge learns in a delta: a new hash, the old one with its deadline,
    // the same servers.
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(upsert_ids(&d), vec![kid]);
    let e = entry(&d, kid).unwrap();
    assert_ne!(e["secretHash"], old_hash);
    assert_eq!(
        e["previousSecret"],
        json!({"hash": old_hash, "expiresAt": ends})
    );
    assert_eq!(e["servers"], json!(["alpha"]));
    assert_eq!(e["expiresAt"], entry(&before, kid).unwrap()["expiresAt"]);

    // Shown once: no read shows the key or its secret again.
    let secret = &new[new.len() - 43..];
    for path in [
        format!("/api/api-keys/{kid}"),
        "/api/api-keys".to_owned(),
        format!("/api/admin-api-keys/{kid}"),
        "/api/admin-api-keys".to_owned(),
    ] {
        let r = app.get(&path, ADMIN).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(!r.text.contains(secret), "{path}");
        assert!(!r.text.contains("\"key\""), "{path}");
    }
    let listed = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(listed["rotatedAt"], rotated["rotatedAt"]);
    assert_eq!(
        listed["previousSecretExpiresAt"],
        rotated["previousSecretExpiresAt"]
    );

    // The admin route rotates too, and a short overlap ends by the clock.
    let again = rotate(
        &app,
        "admin-api-keys",
        kid,
        Some(json!({"overlapSeconds": 1})),
    )
    .await;
    assert_eq!(again["username"], "admin");
    assert_eq!(again["mcpServerIds"], json!(["alpha"]));
    let newest = again["key"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &new).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(me(&app, &new).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &newest).await, StatusCode::OK);
    let listed = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(listed["previousSecretExpiresAt"], Value::Null);
    // A snapshot no longer sends an ended old secret.
    assert!(entry(&app.table("").await, kid).unwrap()["previousSecret"].is_null());
}

async fn at_most_two_secrets_work(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, a) = app.admin_key(&["alpha"]).await;

    // Without an overlap (the default) the old secret stops at once.
    let b_key = rotate(&app, "api-keys", kid, None).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(&app, &a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &b_key).await, StatusCode::OK);
    let e = app.table("").await;
    assert!(entry(&e, kid).unwrap()["previousSecret"].is_null());

    // A second rotation during an overlap ends the older secret at once.
    let c_key = rotate(
        &app,
        "api-keys",
        kid,
        Some(json!({"overlapSeconds": 604800})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(&app, &b_key).await, StatusCode::OK);
    let d_key = rotate(&app, "api-keys", kid, Some(json!({"overlapSeconds": 60}))).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(&app, &b_key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &c_key).await, StatusCode::OK);
    assert_eq!(me(&app, &d_key).await, StatusCode::OK);
    let table = app.table("").await;
    let prev = &entry(&table, kid).unwrap()["previousSecret"];
    assert!(prev["expiresAt"].as_i64().unwrap() <= now() + 60);
    // A rotation with overlap 0 during an overlap ends it too.
    let e_key = rotate(&app, "api-keys", kid, Some(json!({"overlapSeconds": 0}))).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for old in [&b_key, &c_key, &d_key] {
        assert_eq!(me(&app, old).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(me(&app, &e_key).await, StatusCode::OK);
}

async fn only_active_keys_rotate(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, key) = app.admin_key(&["alpha"]).await;
    let path = format!("/api/api-keys/{kid}/rotate");

    // Disabled: 409, and nothing changes.
    let r = app
        .patch(
            &format!("/api/api-keys/{kid}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = app.table("").await["version"].clone();
    for route in ["api-keys", "admin-api-keys"] {
        assert_error(
            &app.post(&format!("/api/{route}/{kid}/rotate"), ADMIN, json!({}))
                .await,
            StatusCode::CONFLICT,
            "API key is disabled; enable it before rotating",
        );
    }
    assert_eq!(app.table("").await["version"], v);
    app.patch(
        &format!("/api/api-keys/{kid}"),
        ADMIN,
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(me(&app, &key).await, StatusCode::OK);

    // Expired: 409.
    let soon = time::OffsetDateTime::from_unix_timestamp(now() + 2)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "short", "mcpServerIds": ["alpha"], "expiresAt": soon}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let short = r.body["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_error(
        &app.post(&format!("/api/api-keys/{short}/rotate"), ADMIN, json!({}))
            .await,
        StatusCode::CONFLICT,
        "API key has expired; expired keys cannot be rotated",
    );

    // Revoked: 409 (it is known, and can never come back).
    let (gone, _) = app.admin_key(&["alpha"]).await;
    app.delete(&format!("/api/api-keys/{gone}"), ADMIN).await;
    for route in ["api-keys", "admin-api-keys"] {
        assert_error(
            &app.post(&format!("/api/{route}/{gone}/rotate"), ADMIN, json!({}))
                .await,
            StatusCode::CONFLICT,
            "API key is revoked; revoked keys cannot be rotated",
        );
    }

    // Unknown keys, and another user's key on the own-keys route: 404,
    // revoked or not (the owner's route never says what others have).
    let bob = app.user("bob").await;
    let (bobs, bobs_key) = app.key_for(bob, &["alpha"]).await;
    let (bobs_gone, _) = app.key_for(bob, &["alpha"]).await;
    app.delete(&format!("/api/admin-api-keys/{bobs_gone}"), ADMIN)
        .await;
    for missing in [
        "/api/api-keys/999999/rotate".to_owned(),
        "/api/api-keys/nope/rotate".to_owned(),
        "/api/admin-api-keys/999999/rotate".to_owned(),
        format!("/api/api-keys/{bobs}/rotate"),
        format!("/api/api-keys/{bobs_gone}/rotate"),
    ] {
        assert_error(
            &app.post(&missing, ADMIN, json!({})).await,
            StatusCode::NOT_FOUND,
            "API key not found",
        );
    }
    assert_eq!(me(&app, &bobs_key).await, StatusCode::OK);
    // The admin rotates bob's key; it stays bob's.
    let r = rotate(&app, "admin-api-keys", bobs, None).await;
    assert_eq!(r["userId"], bob);
    assert_eq!(r["username"], "bob");
    assert!(
        r["key"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ok1-{bob}-{bobs}-"))
    );
    assert_eq!(me(&app, &bobs_key).await, StatusCode::UNAUTHORIZED);

    // Bad overlaps are 400 with a JSON error.
    for body in [
        json!({"overlapSeconds": 604801}),
        json!({"overlapSeconds": -1}),
    ] {
        assert_error(
            &app.post(&path, ADMIN, body).await,
            StatusCode::BAD_REQUEST,
            "overlapSeconds must be 0 to 604800",
        );
    }
    for body in [json!({"overlapSeconds": "1h"}), json!({"overlap": 60})] {
        assert_error_contains(
            &app.post(&path, ADMIN, body).await,
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        );
    }
    // A key cannot rotate itself: keys open MCP servers and /api/me only.
    let r = app.post(&path, &key, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // The key is unchanged by all of that.
    assert_eq!(me(&app, &key).await, StatusCode::OK);

    // Both routes are in the OpenAPI document.
    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    for p in [
        "/api/api-keys/{id}/rotate",
        "/api/admin-api-keys/{id}/rotate",
    ] {
        assert!(
            doc["paths"][p]["post"].is_object(),
            "openapi lacks POST {p}"
        );
    }
}

/// An edge before rotation sends `{keyId, lastUsedAt}`; a newer one adds
/// `previousSecretUsedAt` for keys in an overlap; a future one may add
/// more. All are read.
async fn usage_reports_old_and_new_shapes(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, _) = app.admin_key(&["alpha"]).await;
    let (plain, _) = app.admin_key(&["alpha"]).await;
    rotate(&app, "api-keys", kid, Some(json!({"overlapSeconds": 3600}))).await;
    // Uses reported below happen after the rotation (older ones are of an
    // older secret, see the end).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t = now();

    // The older shape: last use only.
    let r = app
        .post(
            "/internal/v1/usage",
            DATA_PLANE,
            json!({"items": [{"keyId": kid, "lastUsedAt": t - 5}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let rec = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(unix(&rec["lastUsedAt"]), t - 5);
    assert_eq!(rec["previousSecretLastUsedAt"], Value::Null);

    // The newer shape: the old secret is still in use.
    let r = app
        .post(
            "/internal/v1/usage",
            DATA_PLANE,
            json!({"items": [
                {"keyId": kid, "lastUsedAt": t - 1, "previousSecretUsedAt": t - 1},
                // A key without an old secret: the field is ignored.
                {"keyId": plain, "lastUsedAt": t - 1, "previousSecretUsedAt": t - 1},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let rec = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(unix(&rec["lastUsedAt"]), t - 1);
    assert_eq!(unix(&rec["previousSecretLastUsedAt"]), t - 1);
    let rec = app.get(&format!("/api/api-keys/{plain}"), ADMIN).await.body;
    assert_eq!(rec["previousSecretLastUsedAt"], Value::Null);
    assert_eq!(unix(&rec["lastUsedAt"]), t - 1);

    // Fields a future edge may add are ignored, not refused.
    let r = app
        .post(
            "/internal/v1/usage",
            DATA_PLANE,
            json!({"items": [{"keyId": kid, "lastUsedAt": t, "worker": 3}], "edge": "e1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let rec = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(unix(&rec["lastUsedAt"]), t);

    // A use of a secret from before the last rotation does not count for
    // the new old secret; the next rotation starts the record afresh.
    rotate(&app, "api-keys", kid, Some(json!({"overlapSeconds": 3600}))).await;
    let rec = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(rec["previousSecretLastUsedAt"], Value::Null);
    app.post(
        "/internal/v1/usage",
        DATA_PLANE,
        json!({"items": [{"keyId": kid, "lastUsedAt": t - 100, "previousSecretUsedAt": t - 100}]}),
    )
    .await;
    let rec = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await.body;
    assert_eq!(rec["previousSecretLastUsedAt"], Value::Null);
}
