//! A key's life beyond create and delete, at the API and in the feed, on
//! SQLite and PostgreSQL: turning keys off and on, and the registered
//! servers every feed answer carries.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

both_backends!(
    disabled_keys_leave_the_feed_and_come_back,
    key_edits_are_validated_and_owned,
    registering_a_server_wakes_long_polls_with_the_new_list,
    revoked_keys_are_kept_on_record,
    deleting_a_user_revokes_their_keys_and_keeps_the_records,
    suspension_stops_every_key_and_credential_of_a_user,
    revoke_all_and_edits,
);

const NOTHING: &str = "nothing to change (expected enabled, name, description or expiresAt)";

/// The item with `id` in a key list answer.
fn item(list: &Value, id: i64) -> Option<Value> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
}

async fn revoked_keys_are_kept_on_record(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, key) = app.admin_key(&["alpha"]).await;
    let (other, _) = app.admin_key(&["*"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();

    let r = app
        .call(
            Method::DELETE,
            &format!("/api/api-keys/{kid}"),
            Some(ADMIN),
            Some(json!({"reason": "laptop stolen"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"deleted": true}));
    // Off the edge like before.
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(removal_ids(&d), vec![kid]);
    assert_eq!(
        app.get("/api/me", &key).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Hidden by default, shown with ?include=revoked.
    assert!(item(&app.get("/api/api-keys", ADMIN).await.body, kid).is_none());
    assert_error(
        &app.get(&format!("/api/api-keys/{kid}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    let listed = app.get("/api/api-keys?include=revoked", ADMIN).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let rec = item(&listed.body, kid).unwrap();
    assert_eq!(rec["status"], "revoked");
    assert_eq!(rec["revokeReason"], "laptop stolen");
    assert_eq!(rec["revokedBy"], 1);
    assert!(rec["revokedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rec["mcpServerIds"], json!(["alpha"]));
    assert!(!rec.to_string().contains(&key[key.len() - 43..]));
    assert_eq!(item(&listed.body, other).unwrap()["status"], "active");
    assert_eq!(item(&listed.body, other).unwrap()["revokedAt"], Value::Null);
    let admin_view = app.get("/api/admin-api-keys?include=revoked", ADMIN).await;
    assert_eq!(item(&admin_view.body, kid).unwrap()["username"], "admin");
    let one = app
        .get(&format!("/api/admin-api-keys/{kid}?include=revoked"), ADMIN)
        .await;
    assert_eq!(one.body["status"], "revoked", "{}", one.text);
    // A revoked key never comes back: not deleted twice, not enabled.
    assert_error(
        &app.delete(&format!("/api/api-keys/{kid}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.patch(
            &format!("/api/admin-api-keys/{kid}"),
            ADMIN,
            json!({"enabled": true}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    // ?reason= works too; bad reasons and includes are 400.
    let r = app
        .delete(
            &format!("/api/admin-api-keys/{other}?reason=rotation"),
            ADMIN,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rec = app
        .get(
            &format!("/api/admin-api-keys/{other}?include=revoked"),
            ADMIN,
        )
        .await;
    assert_eq!(rec.body["revokeReason"], "rotation");
    let (third, _) = app.admin_key(&["alpha"]).await;
    for (path, body) in [
        (
            format!("/api/api-keys/{third}?reason=a"),
            Some(json!({"reason": "b"})),
        ),
        (
            format!("/api/api-keys/{third}"),
            Some(json!({"reason": "x\ny"})),
        ),
        (format!("/api/api-keys/{third}"), Some(json!({"why": "x"}))),
        (format!("/api/api-keys/{third}?because=x"), None),
    ] {
        let r = app.call(Method::DELETE, &path, Some(ADMIN), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert!(r.body["error"].is_string());
    }
    let r = app.get("/api/api-keys?include=everything", ADMIN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // The key is still there after the refused revocations.
    assert!(item(&app.get("/api/api-keys", ADMIN).await.body, third).is_some());
}

async fn deleting_a_user_revokes_their_keys_and_keeps_the_records(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let carol = app.user("carol").await;
    let (k1, _) = app.key_for(carol, &["alpha"]).await;
    let (k2, _) = app.key_for(carol, &["*"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();
    assert_eq!(
        app.delete(&format!("/api/users/{carol}"), ADMIN)
            .await
            .status,
        StatusCode::OK
    );
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(removal_ids(&d), vec![k1, k2]);
    let listed = app.get("/api/admin-api-keys?include=revoked", ADMIN).await;
    for k in [k1, k2] {
        let rec = item(&listed.body, k).unwrap();
        assert_eq!(rec["status"], "revoked");
        assert_eq!(rec["userId"], carol);
        assert_eq!(rec["username"], "carol");
        assert_eq!(rec["revokeReason"], "user deleted");
    }
    assert!(item(&app.get("/api/admin-api-keys", ADMIN).await.body, k1).is_none());
}

async fn suspension_stops_every_key_and_credential_of_a_user(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let dan = app.user("dan").await;
    let (k1, key1) = app.key_for(dan, &["alpha"]).await;
    let (k2, _) = app.key_for(dan, &["*"]).await;
    let (mine, _) = app.admin_key(&["alpha"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();

    let r = app
        .post(&format!("/api/users/{dan}/suspend"), ADMIN, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["suspendedAt"].as_str().unwrap().ends_with('Z'));
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(removal_ids(&d), vec![k1, k2]);
    let snapshot = app.table("").await;
    assert!(entry(&snapshot, k1).is_none() && entry(&snapshot, mine).is_some());
    assert_eq!(
        app.get("/api/me", &key1).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The keys themselves are unchanged, and listed as they were.
    let rec = app.get(&format!("/api/admin-api-keys/{k1}"), ADMIN).await;
    assert_eq!(rec.body["status"], "active");
    // Suspending twice changes nothing the edge sees.
    let v = snapshot["version"].as_u64().unwrap();
    app.post(&format!("/api/users/{dan}/suspend"), ADMIN, json!({}))
        .await;
    assert_eq!(app.table("").await["version"].as_u64().unwrap(), v);

    let r = app
        .post(&format!("/api/users/{dan}/unsuspend"), ADMIN, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["suspendedAt"], Value::Null);
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(upsert_ids(&d), vec![k1, k2]);
    assert_eq!(app.get("/api/me", &key1).await.status, StatusCode::OK);

    // The built-in admin is never suspended; unknown users are 404; only admins.
    let builtin = app.get("/api/me", ADMIN).await.body["id"].as_i64().unwrap();
    assert_error(
        &app.post(&format!("/api/users/{builtin}/suspend"), ADMIN, json!({}))
            .await,
        StatusCode::CONFLICT,
        "the built-in admin cannot be suspended",
    );
    assert_error(
        &app.post("/api/users/999999/suspend", ADMIN, json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "user not found",
    );
    let r = app
        .post(&format!("/api/users/{dan}/suspend"), &key1, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

async fn revoke_all_and_edits(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let erin = app.user("erin").await;
    let (k1, _) = app.key_for(erin, &["alpha"]).await;
    let (k2, _) = app.key_for(erin, &["*"]).await;
    let (mine, _) = app.admin_key(&["alpha"]).await;

    // Edits: name, description and expiry; the expiry reaches the feed.
    let v = app.table("").await["version"].as_u64().unwrap();
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{k1}"),
            ADMIN,
            json!({"name": "renamed", "description": "new words", "expiresAt": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "renamed");
    assert_eq!(r.body["description"], "new words");
    assert_eq!(r.body["expiresAt"], "2099-01-01T00:00:00Z");
    assert_eq!(r.body["mcpServerIds"], json!(["alpha"]));
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(entry(&d, k1).unwrap()["expiresAt"], 4_070_908_800_i64);
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{k1}"),
            ADMIN,
            json!({"expiresAt": null}),
        )
        .await;
    assert_eq!(r.body["expiresAt"], Value::Null, "{}", r.text);
    // A name-only edit changes nothing at the edge.
    let v = app.table("").await["version"].as_u64().unwrap();
    app.patch(
        &format!("/api/admin-api-keys/{k1}"),
        ADMIN,
        json!({"name": "again"}),
    )
    .await;
    assert_eq!(app.table("").await["version"].as_u64().unwrap(), v);
    // Scope is not an edit.
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{k1}"),
            ADMIN,
            json!({"mcpServerIds": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Revoke all of erin's keys at once; mine stay.
    let r = app
        .post(
            &format!("/api/users/{erin}/revoke-keys"),
            ADMIN,
            json!({"reason": "left the company"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"revoked": 2}));
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(removal_ids(&d), vec![k1, k2]);
    let listed = app.get("/api/admin-api-keys?include=revoked", ADMIN).await;
    assert_eq!(
        item(&listed.body, k2).unwrap()["revokeReason"],
        "left the company"
    );
    assert_eq!(item(&listed.body, k1).unwrap()["name"], "again");
    assert_eq!(item(&listed.body, mine).unwrap()["status"], "active");
    let r = app
        .post(&format!("/api/users/{erin}/revoke-keys"), ADMIN, json!({}))
        .await;
    assert_eq!(r.body, json!({"revoked": 0}), "{}", r.text);
    assert_error(
        &app.post("/api/users/999999/revoke-keys", ADMIN, json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "user not found",
    );
}

async fn disabled_keys_leave_the_feed_and_come_back(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, key) = app.admin_key(&["alpha"]).await;
    let (other, _) = app.admin_key(&["alpha"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();
    assert_eq!(app.get("/api/me", &key).await.status, StatusCode::OK);
    let r = app.get(&format!("/api/api-keys/{kid}"), ADMIN).await;
    assert_eq!(r.body["status"], "active", "{}", r.text);
    assert_eq!(r.body["disabledAt"], Value::Null);

    let r = app
        .patch(
            &format!("/api/api-keys/{kid}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "disabled");
    assert!(r.body["disabledAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.body["id"], kid);
    // Gone from the edge's view like a deleted key, and refused by /api/me.
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(removal_ids(&d), vec![kid]);
    assert!(entry(&app.table("").await, kid).is_none());
    assert!(entry(&app.table("").await, other).is_some());
    assert_error(
        &app.get("/api/me", &key).await,
        StatusCode::UNAUTHORIZED,
        "invalid or expired credentials",
    );
    // Listed with its status, by owner and admin views.
    for path in ["/api/api-keys", "/api/admin-api-keys"] {
        let r = app.get(path, ADMIN).await;
        let item = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == kid)
            .cloned()
            .unwrap();
        assert_eq!(item["status"], "disabled", "{path}");
    }
    // Disabling again changes nothing the edge sees.
    let v = app.table("").await["version"].as_u64().unwrap();
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{kid}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["username"], "admin");
    assert_eq!(app.table("").await["version"].as_u64().unwrap(), v);

    // On again: back in the feed with the same scope, and /api/me works.
    let r = app
        .patch(
            &format!("/api/admin-api-keys/{kid}"),
            ADMIN,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["disabledAt"], Value::Null);
    let d = app.table(&format!("?since={v}")).await;
    assert_eq!(entry(&d, kid).unwrap()["servers"], json!(["alpha"]));
    assert_eq!(app.get("/api/me", &key).await.status, StatusCode::OK);
}

async fn key_edits_are_validated_and_owned(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, key) = app.admin_key(&["alpha"]).await;
    let path = format!("/api/api-keys/{kid}");
    for (body, message) in [
        (json!({}), NOTHING),
        (json!({"enabled": null}), NOTHING),
        (json!({"name": ""}), "name must be 1 to 100 characters"),
        (
            json!({"expiresAt": "2001-01-01T00:00:00Z"}),
            "expiresAt must be in the future",
        ),
        (
            json!({"expiresAt": "soon"}),
            "expiresAt must be an RFC 3339 timestamp",
        ),
    ] {
        assert_error(
            &app.patch(&path, ADMIN, body).await,
            StatusCode::BAD_REQUEST,
            message,
        );
    }
    for body in [json!({"enabled": "no"}), json!({"enabled": true, "x": 1})] {
        let r = app.patch(&path, ADMIN, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body")
        );
    }
    for missing in [
        "/api/api-keys/999999",
        "/api/api-keys/nope",
        "/api/admin-api-keys/999999",
    ] {
        assert_error(
            &app.patch(missing, ADMIN, json!({"enabled": false})).await,
            StatusCode::NOT_FOUND,
            "API key not found",
        );
    }
    // Another user's key is a 404 on the own-keys route.
    let bob = app.user("bob").await;
    let (bobs, _) = app.key_for(bob, &["alpha"]).await;
    assert_error(
        &app.patch(
            &format!("/api/api-keys/{bobs}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    // A key cannot edit itself (or anything): keys are for MCP and /api/me.
    let r = app.patch(&path, &key, json!({"enabled": false})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Both routes are in the OpenAPI document.
    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    for p in ["/api/api-keys/{id}", "/api/admin-api-keys/{id}"] {
        assert!(
            doc["paths"][p]["patch"].is_object(),
            "openapi lacks PATCH {p}"
        );
    }
    for p in [
        "/api/users/{id}/suspend",
        "/api/users/{id}/unsuspend",
        "/api/users/{id}/revoke-keys",
    ] {
        assert!(
            doc["paths"][p]["post"].is_object(),
            "openapi lacks POST {p}"
        );
    }
    let params = doc["paths"]["/api/api-keys"]["get"]["parameters"].to_string();
    assert!(
        params.contains("include"),
        "openapi lacks ?include: {params}"
    );
}

async fn registering_a_server_wakes_long_polls_with_the_new_list(b: Backend) {
    // A recheck far longer than the test proves the wake-up is a notification.
    let app = TestApp::start_with(b, |c| c.feed_recheck = Duration::from_secs(30)).await;
    app.server("alpha").await;
    let t = app.table("").await;
    assert_eq!(t["registeredServers"], json!(["alpha"]));
    let v = t["version"].as_u64().unwrap();
    let started = Instant::now();
    let path = format!("/internal/v1/key-table?since={v}&wait=20");
    let poll = app.get(&path, DATA_PLANE);
    let create = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.server("beta").await;
    };
    let (r, ()) = tokio::join!(poll, create);
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        took < Duration::from_secs(5),
        "long poll answered after {took:?}"
    );
    assert!(r.body["version"].as_u64().unwrap() > v, "{}", r.text);
    assert_eq!(r.body["registeredServers"], json!(["alpha", "beta"]));
    assert_eq!(upsert_ids(&r.body), Vec::<i64>::new());
    // Deleting it: every answer from then on leaves it out.
    app.delete("/api/mcp-servers/beta", ADMIN).await;
    let t = app.table(&format!("?since={v}")).await;
    assert_eq!(t["registeredServers"], json!(["alpha"]));
}
