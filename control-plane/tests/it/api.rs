//! The user and admin APIs, `/api/me`, auth rules, health, metrics and
//! OpenAPI, each run against SQLite and PostgreSQL.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(
    health_metrics_openapi,
    credentials_and_auth_errors,
    bearer_spelling_is_strict,
    own_keys_crud,
    key_validation_errors,
    admin_keys,
    users_admin,
    servers_admin,
    access_rules_admin,
    server_delete_leaves_no_dangling_scope,
    expired_key_is_refused,
    usage_reports,
    unknown_routes_are_json,
);

async fn health_metrics_openapi(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ready");

    app.server("alpha").await;
    let (id, _) = app.admin_key(&["*"]).await;
    app.delete(&format!("/api/api-keys/{id}"), ADMIN).await;
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains(
            r#"keygate_http_requests_total{method="POST",route="/api/mcp-servers",status="201"} 1"#
        ),
        "{}",
        r.text
    );
    // Route templates, never ids.
    assert!(
        r.text.contains(r#"route="/api/api-keys/{id}""#),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("keygate_api_keys_created_total 1"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("keygate_api_keys_deleted_total 1"),
        "{}",
        r.text
    );
    assert!(r.text.contains("keygate_feed_clients 0"), "{}", r.text);
    assert!(!r.text.contains(ADMIN));

    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/auth/options",
        "/auth/login",
        "/auth/callback",
        "/auth/token",
        "/auth/logout",
        "/api/me",
        "/api/api-keys",
        "/api/api-keys/{id}",
        "/api/admin-api-keys",
        "/api/admin-api-keys/{id}",
        "/api/users",
        "/api/users/{id}",
        "/api/mcp-servers",
        "/api/mcp-servers/{name}",
        "/api/access-rules",
        "/api/access-rules/{id}",
        "/internal/v1/key-table",
        "/internal/v1/usage",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
}

async fn credentials_and_auth_errors(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;

    // No credential: 401 with a plain Bearer challenge.
    let r = app.call(Method::GET, "/api/me", None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "authentication required");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = app.call(Method::GET, "/api/users", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Unknown bearer, malformed key: invalid_token.
    for bad in [
        "nope",
        "ok1-1-1-short",
        "ok1-01-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = app.get("/api/me", bad).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "invalid or expired credentials",
        );
        assert_eq!(
            r.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }

    // The admin token is the built-in admin user.
    let r = app.get("/api/me", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["username"], "admin");
    assert_eq!(r.body["role"], "admin");
    let admin_id = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body.as_object().unwrap().len(), 4, "{}", r.text);

    // A key authenticates /api/me and nothing else.
    let (key_id, key) = app.admin_key(&["alpha"]).await;
    assert!(key.starts_with(&format!("ok1-{admin_id}-{key_id}-")));
    let r = app.get("/api/me", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["id"], admin_id);
    assert_eq!(r.body["username"], "admin");
    for (m, p) in [
        (Method::GET, "/api/api-keys"),
        (Method::POST, "/api/api-keys"),
        (Method::GET, "/api/users"),
        (Method::GET, "/api/mcp-servers"),
        (Method::GET, "/api/access-rules"),
        (Method::GET, "/api/admin-api-keys"),
    ] {
        let r = app.call(m, p, Some(&key), Some(json!({}))).await;
        assert_error(
            &r,
            StatusCode::FORBIDDEN,
            "API keys can only be used for MCP servers and /api/me",
        );
    }
    // A key is no data-plane token either.
    let r = app.get("/internal/v1/key-table", &key).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Wrong secret, wrong user id, unknown key id: all 401 invalid_token.
    let secret = &key[key.len() - 43..];
    let other_secret = flip_first_char(secret);
    for forged in [
        format!("ok1-{admin_id}-{key_id}-{other_secret}"),
        format!("ok1-{}-{key_id}-{secret}", admin_id + 100),
        format!("ok1-{admin_id}-{}-{secret}", key_id + 100),
    ] {
        let r = app.get("/api/me", &forged).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "invalid or expired credentials",
        );
        assert_eq!(
            r.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }

    // A deleted key stops working.
    let r = app.delete(&format!("/api/api-keys/{key_id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get("/api/me", &key).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid or expired credentials",
    );
}

/// `GET path` with this exact `Authorization` value.
async fn with_authorization(app: &TestApp, path: &str, value: &str) -> Resp {
    let r = app
        .http
        .get(format!("{}{path}", app.base))
        .header("authorization", value)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

/// Every bearer the control plane takes (API key, admin token, data-plane
/// token; OIDC JWTs go through the same reader) is read with the edge's
/// strict rule: `Bearer` in any case, one space, a credential without
/// whitespace. Any other spelling is no credential, as at the edge.
async fn bearer_spelling_is_strict(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (_, key) = app.admin_key(&["alpha"]).await;
    for (path, token) in [
        ("/api/me", ADMIN),
        ("/api/me", key.as_str()),
        ("/internal/v1/key-table", DATA_PLANE),
    ] {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let r = with_authorization(&app, path, &format!("{scheme} {token}")).await;
            assert_eq!(r.status, StatusCode::OK, "{scheme} on {path}: {}", r.text);
        }
        for value in [
            format!("Bearer  {token}"),
            format!("Bearer\t{token}"),
            format!("Bearer {token} extra"),
            format!("Bearer {token}\tx"),
            format!("Basic {token}"),
            format!("Bearer:{token}"),
            token.to_owned(),
        ] {
            let r = with_authorization(&app, path, &value).await;
            assert_error(&r, StatusCode::UNAUTHORIZED, "authentication required");
            assert_eq!(r.headers["www-authenticate"], "Bearer", "{value:?}");
        }
    }
}

async fn own_keys_crud(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("beta").await;
    app.rule(&["alpha", "beta"], &["*"]).await;

    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "laptop", "description": "for VS Code", "expiresAt": "2099-01-01T00:00:00Z", "mcpServerIds": ["beta", "alpha"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let first = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["name"], "laptop");
    assert_eq!(r.body["description"], "for VS Code");
    assert_eq!(r.body["expiresAt"], "2099-01-01T00:00:00Z");
    assert_eq!(r.body["mcpServerIds"], json!(["alpha", "beta"]));
    assert_eq!(r.body["lastUsedAt"], serde_json::Value::Null);
    assert!(r.body["createdAt"].as_str().unwrap().ends_with('Z'));
    let key = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), "ok1-1-1-".len() + 43);
    assert!(r.body.get("secretHash").is_none());

    let (second, _) = app.admin_key(&["*"]).await;

    let r = app.get("/api/api-keys", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![second, first], "newest first");
    assert_eq!(items[0]["mcpServerIds"], json!(["*"]));
    for item in items {
        let o = item.as_object().unwrap();
        assert!(
            !o.contains_key("key") && !o.contains_key("secretHash") && !o.contains_key("username")
        );
        assert!(!item.to_string().contains(&key[key.len() - 43..]));
    }

    let r = app.get(&format!("/api/api-keys/{first}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "laptop");
    assert!(r.body.get("key").is_none());

    // Another user's key is a 404 here.
    let bob = app.user("bob").await;
    let (bobs, _) = app.key_for(bob, &["alpha"]).await;
    assert_error(
        &app.get(&format!("/api/api-keys/{bobs}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.delete(&format!("/api/api-keys/{bobs}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.get("/api/api-keys/nope", ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );

    let r = app.delete(&format!("/api/api-keys/{first}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error(
        &app.delete(&format!("/api/api-keys/{first}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.get(&format!("/api/api-keys/{first}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    let r = app.get("/api/api-keys", ADMIN).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
}

async fn key_validation_errors(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("hidden").await; // exists, but no rule grants it
    app.rule(&["alpha"], &["*"]).await;
    let unreachable = "unknown or unreachable MCP server: ";
    let cases = [
        (
            json!({"name": "", "mcpServerIds": ["alpha"]}),
            "name must be 1 to 100 characters",
        ),
        (
            json!({"name": "x".repeat(101), "mcpServerIds": ["alpha"]}),
            "name must be 1 to 100 characters",
        ),
        (
            json!({"name": "k", "description": "d".repeat(501), "mcpServerIds": ["alpha"]}),
            "description must be at most 500 characters",
        ),
        (
            json!({"name": "k", "mcpServerIds": []}),
            "mcpServerIds must list at least one MCP server",
        ),
        (
            json!({"name": "k", "mcpServerIds": ["*", "alpha"]}),
            "\"*\" cannot be combined",
        ),
        (
            json!({"name": "k", "mcpServerIds": ["nosuch"]}),
            unreachable,
        ),
        (
            json!({"name": "k", "mcpServerIds": ["hidden"]}),
            unreachable,
        ),
        (
            json!({"name": "k", "mcpServerIds": ["Bad Name"]}),
            unreachable,
        ),
        (
            json!({"name": "k", "mcpServerIds": ["alpha"], "expiresAt": "2001-01-01T00:00:00Z"}),
            "expiresAt must be in the future",
        ),
        (
            json!({"name": "k", "mcpServerIds": ["alpha"], "expiresAt": "next week"}),
            "expiresAt must be an RFC 3339 timestamp",
        ),
        (
            json!({"name": "k", "mcpServerIds": ["alpha"], "color": "red"}),
            "unknown field",
        ),
        (json!({"name": "k"}), "mcpServerIds"),
    ];
    for (body, msg) in cases {
        let r = app.post("/api/api-keys", ADMIN, body.clone()).await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, msg);
    }
    // Unknown and unreachable read the same, bar the name.
    let a = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "k", "mcpServerIds": ["nosuch"]}),
        )
        .await;
    let h = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "k", "mcpServerIds": ["hidden"]}),
        )
        .await;
    assert_eq!(
        a.body["error"].as_str().unwrap().replace("nosuch", "X"),
        h.body["error"].as_str().unwrap().replace("hidden", "X")
    );
    let r = app.post_raw("/api/api-keys", ADMIN, "{\"name\": ").await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, "invalid JSON body");
    // Nothing was created.
    let r = app.get("/api/api-keys", ADMIN).await;
    assert_eq!(r.body["items"], json!([]));
    // 100 characters (not bytes) is fine.
    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "é".repeat(100), "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

async fn admin_keys(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    let carol = app.user("carol").await;
    // Carol cannot reach alpha yet: the admin cannot give her a key for it.
    let r = app
        .post(
            "/api/admin-api-keys",
            ADMIN,
            json!({"userId": carol, "name": "k", "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "unknown or unreachable MCP server: alpha",
    );
    app.rule(&["alpha"], &[&format!("user:{carol}")]).await;

    let r = app
        .post(
            "/api/admin-api-keys",
            ADMIN,
            json!({"userId": carol, "name": "ci", "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["userId"], carol);
    assert_eq!(r.body["username"], "carol");
    let id = r.body["id"].as_i64().unwrap();
    let key = r.body["key"].as_str().unwrap().to_owned();
    let r = app.get("/api/me", &key).await;
    assert_eq!(r.body["username"], "carol");
    assert_eq!(r.body["role"], "user");

    let r = app
        .post(
            "/api/admin-api-keys",
            ADMIN,
            json!({"userId": 9999, "name": "k", "mcpServerIds": ["*"]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown user: 9999");
    let r = app
        .post(
            "/api/admin-api-keys",
            ADMIN,
            json!({"name": "k", "mcpServerIds": ["*"]}),
        )
        .await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, "userId");

    let (own, _) = app.admin_key(&["*"]).await;
    let r = app.get("/api/admin-api-keys", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], own);
    assert_eq!(items[0]["username"], "admin");
    assert_eq!(items[1]["username"], "carol");
    assert!(items.iter().all(|i| i.get("key").is_none()));

    let r = app.get(&format!("/api/admin-api-keys/{id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["username"], "carol");
    let r = app
        .delete(&format!("/api/admin-api-keys/{id}"), ADMIN)
        .await;
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error(
        &app.get(&format!("/api/admin-api-keys/{id}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.delete(&format!("/api/admin-api-keys/{id}"), ADMIN)
            .await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_eq!(
        app.get("/api/me", &key).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn users_admin(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app
        .post(
            "/api/users",
            ADMIN,
            json!({"username": "dave", "email": "dave@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let dave = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["username"], "dave");
    assert_eq!(r.body["email"], "dave@example.com");
    assert_eq!(r.body["role"], "admin");
    assert!(r.body["createdAt"].is_string());

    assert_error(
        &app.post("/api/users", ADMIN, json!({"username": "dave"}))
            .await,
        StatusCode::CONFLICT,
        "username already exists",
    );
    assert_error_contains(
        &app.post("/api/users", ADMIN, json!({"username": ""})).await,
        StatusCode::BAD_REQUEST,
        "username",
    );
    assert_error_contains(
        &app.post("/api/users", ADMIN, json!({"username": "a b"}))
            .await,
        StatusCode::BAD_REQUEST,
        "username",
    );
    assert_error_contains(
        &app.post(
            "/api/users",
            ADMIN,
            json!({"username": "e", "role": "root"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid JSON body",
    );
    assert_error_contains(
        &app.post(
            "/api/users",
            ADMIN,
            json!({"username": "e", "email": "nope"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "email",
    );

    let r = app.get("/api/users", ADMIN).await;
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "dave"]);

    let r = app
        .patch(
            &format!("/api/users/{dave}"),
            ADMIN,
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["role"], "user");
    assert_eq!(
        app.get(&format!("/api/users/{dave}"), ADMIN).await.body["role"],
        "user"
    );
    assert_error(
        &app.patch("/api/users/999", ADMIN, json!({"role": "user"}))
            .await,
        StatusCode::NOT_FOUND,
        "user not found",
    );
    assert_error(
        &app.get("/api/users/999", ADMIN).await,
        StatusCode::NOT_FOUND,
        "user not found",
    );

    // Deleting a user deletes their keys, in the API and in the feed.
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (kid, key) = app.key_for(dave, &["alpha"]).await;
    let before = app.table("").await;
    assert!(entry(&before, kid).is_some());
    let v = before["version"].as_u64().unwrap();
    let r = app.delete(&format!("/api/users/{dave}"), ADMIN).await;
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error(
        &app.delete(&format!("/api/users/{dave}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "user not found",
    );
    assert_eq!(
        app.get("/api/me", &key).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_error(
        &app.get(&format!("/api/admin-api-keys/{kid}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    let delta = app.table(&format!("?since={v}")).await;
    assert_eq!(delta["full"], false);
    assert_eq!(removal_ids(&delta), vec![kid]);
}

async fn servers_admin(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app
        .post(
            "/api/mcp-servers",
            ADMIN,
            json!({"name": "alpha", "displayName": "Alpha", "description": "first"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["name"], "alpha");
    assert_eq!(r.body["displayName"], "Alpha");
    assert_eq!(r.body["description"], "first");
    assert_error(
        &app.post("/api/mcp-servers", ADMIN, json!({"name": "alpha"}))
            .await,
        StatusCode::CONFLICT,
        "MCP server already exists",
    );
    for bad in ["", "Alpha", "-a", "a_b", "a/b", &"a".repeat(64)] {
        let r = app
            .post("/api/mcp-servers", ADMIN, json!({"name": bad}))
            .await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, "server name must be");
    }
    assert_error_contains(
        &app.post(
            "/api/mcp-servers",
            ADMIN,
            json!({"name": "b", "description": "d".repeat(501)}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "description",
    );
    app.server("beta").await;
    let r = app.get("/api/mcp-servers", ADMIN).await;
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);

    let r = app
        .put(
            "/api/mcp-servers/alpha",
            ADMIN,
            json!({"displayName": "A", "description": "changed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["displayName"], "A");
    assert_eq!(
        app.get("/api/mcp-servers/alpha", ADMIN).await.body["description"],
        "changed"
    );
    assert_error(
        &app.put("/api/mcp-servers/alpha", ADMIN, json!({"name": "other"}))
            .await,
        StatusCode::BAD_REQUEST,
        "an MCP server cannot be renamed",
    );
    assert_error(
        &app.put("/api/mcp-servers/zeta", ADMIN, json!({})).await,
        StatusCode::NOT_FOUND,
        "MCP server not found",
    );
    assert_error(
        &app.get("/api/mcp-servers/zeta", ADMIN).await,
        StatusCode::NOT_FOUND,
        "MCP server not found",
    );

    let r = app.delete("/api/mcp-servers/beta", ADMIN).await;
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error(
        &app.delete("/api/mcp-servers/beta", ADMIN).await,
        StatusCode::NOT_FOUND,
        "MCP server not found",
    );
}

async fn access_rules_admin(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("beta").await;
    let erin = app.user("erin").await;
    let r = app
        .post("/api/access-rules", ADMIN, json!({"name": "devs", "mcpServerIds": ["alpha"], "subjects": [format!("user:{erin}")]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["name"], "devs");
    assert_eq!(r.body["mcpServerIds"], json!(["alpha"]));
    assert_eq!(r.body["subjects"], json!([format!("user:{erin}")]));

    let bad = [
        (
            json!({"name": "r", "mcpServerIds": ["alpha"], "subjects": ["group:eng"]}),
            "group subjects are not supported yet",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["alpha"], "subjects": ["bob"]}),
            "invalid subject: bob",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["alpha"], "subjects": ["user:0"]}),
            "invalid subject: user:0",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["alpha"], "subjects": []}),
            "subjects must list at least one subject",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["alpha"], "subjects": ["*", "user:1"]}),
            "\"*\" cannot be combined with other subjects",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["alpha"], "subjects": ["user:9999"]}),
            "unknown user: user:9999",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["nosuch"], "subjects": ["*"]}),
            "unknown MCP server: nosuch",
        ),
        (
            json!({"name": "r", "mcpServerIds": [], "subjects": ["*"]}),
            "mcpServerIds must list at least one MCP server",
        ),
        (
            json!({"name": "", "mcpServerIds": ["*"], "subjects": ["*"]}),
            "name must be 1 to 100 characters",
        ),
        (
            json!({"name": "r", "mcpServerIds": ["*"], "subjects": ["*"], "x": 1}),
            "unknown field",
        ),
    ];
    for (body, msg) in bad {
        assert_error_contains(
            &app.post("/api/access-rules", ADMIN, body).await,
            StatusCode::BAD_REQUEST,
            msg,
        );
    }

    let r = app
        .put(
            &format!("/api/access-rules/{id}"),
            ADMIN,
            json!({"name": "all", "mcpServerIds": ["*"], "subjects": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["mcpServerIds"], json!(["*"]));
    assert_eq!(r.body["subjects"], json!(["*"]));
    let r = app.get(&format!("/api/access-rules/{id}"), ADMIN).await;
    assert_eq!(r.body["name"], "all");
    let r = app.get("/api/access-rules", ADMIN).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_error(
        &app.put(
            "/api/access-rules/999",
            ADMIN,
            json!({"name": "x", "mcpServerIds": ["*"], "subjects": ["*"]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "access rule not found",
    );
    assert_error(
        &app.get("/api/access-rules/999", ADMIN).await,
        StatusCode::NOT_FOUND,
        "access rule not found",
    );
    let r = app.delete(&format!("/api/access-rules/{id}"), ADMIN).await;
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error(
        &app.delete(&format!("/api/access-rules/{id}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "access rule not found",
    );
}

async fn server_delete_leaves_no_dangling_scope(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.server("beta").await;
    let rule = app.rule(&["alpha", "beta"], &["*"]).await;
    let (both, _) = app.admin_key(&["alpha", "beta"]).await;
    let (only_beta, _) = app.admin_key(&["beta"]).await;
    let (star, _) = app.admin_key(&["*"]).await;
    let v = app.table("").await["version"].as_u64().unwrap();

    assert_eq!(
        app.delete("/api/mcp-servers/beta", ADMIN).await.status,
        StatusCode::OK
    );
    let r = app.get(&format!("/api/api-keys/{both}"), ADMIN).await;
    assert_eq!(r.body["mcpServerIds"], json!(["alpha"]));
    let r = app.get(&format!("/api/api-keys/{only_beta}"), ADMIN).await;
    assert_eq!(r.body["mcpServerIds"], json!([]));
    let r = app.get(&format!("/api/access-rules/{rule}"), ADMIN).await;
    assert_eq!(r.body["mcpServerIds"], json!(["alpha"]));

    let delta = app.table(&format!("?since={v}")).await;
    assert_eq!(delta["full"], false);
    assert_eq!(entry(&delta, both).unwrap()["servers"], json!(["alpha"]));
    assert_eq!(entry(&delta, star).unwrap()["servers"], json!(["alpha"]));
    assert_eq!(removal_ids(&delta), vec![only_beta]);
    // Recreating the server does not revive the old scope.
    app.server("beta").await;
    let full = app.table("").await;
    assert_eq!(entry(&full, both).unwrap()["servers"], json!(["alpha"]));
    assert!(entry(&full, only_beta).is_none());
}

async fn expired_key_is_refused(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = app
        .post(
            "/api/api-keys",
            ADMIN,
            json!({"name": "brief", "expiresAt": soon, "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    let key = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/api/me", &key).await.status, StatusCode::OK);
    // The edge gets the expiry to enforce it itself.
    let t = app.table("").await;
    let exp = entry(&t, id).unwrap()["expiresAt"].as_i64().unwrap();
    assert!(exp > time::OffsetDateTime::now_utc().unix_timestamp());
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = app.get("/api/me", &key).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid or expired credentials",
    );
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}

async fn usage_reports(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (id, _) = app.admin_key(&["alpha"]).await;
    let t1 = 1_800_000_000i64.min(time::OffsetDateTime::now_utc().unix_timestamp() - 100);
    let r = app
        .post("/internal/v1/usage", DATA_PLANE, json!({"items": [{"keyId": id, "lastUsedAt": t1}, {"keyId": 999999, "lastUsedAt": t1}]}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let last = |r: &Resp| r.body["lastUsedAt"].as_str().unwrap().to_owned();
    let r = app.get(&format!("/api/api-keys/{id}"), ADMIN).await;
    let first = last(&r);
    assert_eq!(
        time::OffsetDateTime::parse(&first, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp(),
        t1
    );
    // An older report does not move it back; a newer one moves it forward.
    app.post(
        "/internal/v1/usage",
        DATA_PLANE,
        json!({"items": [{"keyId": id, "lastUsedAt": t1 - 50}]}),
    )
    .await;
    assert_eq!(
        last(&app.get(&format!("/api/api-keys/{id}"), ADMIN).await),
        first
    );
    app.post(
        "/internal/v1/usage",
        DATA_PLANE,
        json!({"items": [{"keyId": id, "lastUsedAt": t1 + 50}]}),
    )
    .await;
    assert_ne!(
        last(&app.get(&format!("/api/api-keys/{id}"), ADMIN).await),
        first
    );

    let r = app
        .post("/internal/v1/usage", ADMIN, json!({"items": []}))
        .await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid or expired credentials",
    );
    let r = app
        .call(
            Method::POST,
            "/internal/v1/usage",
            None,
            Some(json!({"items": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post("/internal/v1/usage", DATA_PLANE, json!({"items": "nope"}))
        .await;
    assert_error_contains(&r, StatusCode::BAD_REQUEST, "invalid JSON body");
}

async fn unknown_routes_are_json(b: Backend) {
    let app = TestApp::start(b).await;
    assert_error(
        &app.get("/api/nope", ADMIN).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    let r = app.call(Method::PUT, "/api/me", Some(ADMIN), None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
}

/// `/readyz` reports a lost database (503, JSON) while `/healthz` stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_lost_database_postgres() {
    use sqlx::Connection;
    let app = TestApp::start(Backend::Postgres).await;
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );
    let admin_url = std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap();
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let r = app.call(Method::GET, "/readyz", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    // API calls fail closed with a generic 500, never leaking details.
    let r = app.get("/api/users", ADMIN).await;
    assert_error(&r, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
}
