//! The API reads the console needs: the servers a person reaches
//! (`GET /api/mcp-servers` for non-admins), the admin key list paged and
//! filtered on the server, and a key's servers with whether each is
//! reachable now. Each test runs on SQLite and PostgreSQL.

use crate::common::*;
use crate::provider::*;
use crate::signin::{app_with_signin, subject};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn read(app: &TestApp, path: &str, cookie: &str) -> Value {
    let r = with_session(Method::GET, app, path, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

both_backends!(
    console_servers_reached,
    console_admin_key_pages,
    console_key_servers,
    every_answer_carries_the_safe_headers
);

async fn console_servers_reached(b: Backend) {
    let app = app_with_signin(b).await;
    for s in ["alpha", "beta", "gamma"] {
        app.server(s).await;
    }
    let (cookie, _) = sign_in(&app, &subject("reader"), "/").await;
    let me = read(&app, "/api/me", &cookie).await;
    let id = me["id"].as_i64().unwrap();
    // No rule: nothing.
    assert!(names(&read(&app, "/api/mcp-servers", &cookie).await).is_empty());
    // Rules add up; the admin still sees every server.
    app.rule(&["beta"], &[&format!("user:{id}")]).await;
    app.rule(&["alpha"], &["*"]).await;
    let list = read(&app, "/api/mcp-servers", &cookie).await;
    assert_eq!(names(&list), ["alpha", "beta"]);
    assert_eq!(list["items"][0]["displayName"], "alpha");
    let r = app.get("/api/mcp-servers", ADMIN).await;
    assert_eq!(names(&r.body), ["alpha", "beta", "gamma"]);
    // All servers for this person: all of them.
    app.rule(&["*"], &[&format!("user:{id}")]).await;
    assert_eq!(
        names(&read(&app, "/api/mcp-servers", &cookie).await),
        ["alpha", "beta", "gamma"]
    );
    // One server's record stays admin-only.
    let r = with_session(Method::GET, &app, "/api/mcp-servers/alpha", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

async fn console_admin_key_pages(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let mut ann_keys = Vec::new();
    for _ in 0..5 {
        ann_keys.push(app.key_for(ann, &["alpha"]).await.0);
    }
    let bob_key = app.key_for(bob, &["*"]).await.0;

    // Default: everything, newest first, with the total and usernames.
    let r = app.get("/api/admin-api-keys", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["total"], 6);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(items[0]["id"], bob_key);
    assert_eq!(items[0]["username"], "bob");
    assert_eq!(items[0]["mcpServerIds"], json!(["*"]));
    assert_eq!(items[1]["mcpServerIds"], json!(["alpha"]));

    // Pages of two for ann: newest first, total counts only hers.
    let mut seen = Vec::new();
    for offset in [0, 2, 4, 6] {
        let r = app
            .get(
                &format!("/api/admin-api-keys?userId={ann}&limit=2&offset={offset}"),
                ADMIN,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["total"], 5);
        for item in r.body["items"].as_array().unwrap() {
            assert_eq!(item["username"], "ann");
            assert_eq!(item["mcpServerIds"], json!(["alpha"]));
            seen.push(item["id"].as_i64().unwrap());
        }
    }
    ann_keys.reverse();
    assert_eq!(seen, ann_keys);
    // A user with no keys, or none at all: an empty page.
    let r = app
        .get(&format!("/api/admin-api-keys?userId={}", bob + 100), ADMIN)
        .await;
    assert_eq!(
        (
            r.body["total"].as_i64(),
            r.body["items"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );

    // Bad paging: 400 with a readable message, never 500.
    for (q, msg) in [
        ("limit=0", "limit must be 1 to 1000"),
        ("limit=1001", "limit must be 1 to 1000"),
        ("offset=-1", "offset must be 0 or more"),
        ("userId=0", "userId must be a positive id"),
    ] {
        let r = app.get(&format!("/api/admin-api-keys?{q}"), ADMIN).await;
        assert_error(&r, StatusCode::BAD_REQUEST, msg);
    }
    for q in ["limit=ten", "userId=x", "sort=name"] {
        let r = app.get(&format!("/api/admin-api-keys?{q}"), ADMIN).await;
        assert_error_contains(&r, StatusCode::BAD_REQUEST, "invalid query");
    }
    // The user's own list is unchanged: no total.
    let r = app.get("/api/api-keys", ADMIN).await;
    assert!(r.body.get("total").is_none(), "{}", r.text);
}

async fn console_key_servers(b: Backend) {
    let app = TestApp::start(b).await;
    for s in ["alpha", "beta", "gamma"] {
        app.server(s).await;
    }
    let ann = app.user("ann").await;
    let rule = app
        .rule(&["alpha", "beta"], &[&format!("user:{ann}")])
        .await;
    let (named, _) = app.key_for(ann, &["alpha", "beta"]).await;
    let (star, _) = app.key_for(ann, &["*"]).await;
    let r = app
        .get(&format!("/api/admin-api-keys/{named}"), ADMIN)
        .await;
    assert_eq!(
        r.body["servers"],
        json!([{"name": "alpha", "reachable": true}, {"name": "beta", "reachable": true}]),
        "{}",
        r.text
    );
    let r = app.get(&format!("/api/admin-api-keys/{star}"), ADMIN).await;
    assert_eq!(
        r.body["servers"],
        json!([{"name": "alpha", "reachable": true}, {"name": "beta", "reachable": true}])
    );
    // Ann loses beta: the named key keeps it in scope, unreachable; the `*`
    // key simply reaches less.
    let r = app
        .put(
            &format!("/api/access-rules/{rule}"),
            ADMIN,
            json!({"name": "rule", "mcpServerIds": ["alpha"], "subjects": [format!("user:{ann}")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .get(&format!("/api/admin-api-keys/{named}"), ADMIN)
        .await;
    assert_eq!(
        r.body["servers"],
        json!([{"name": "alpha", "reachable": true}, {"name": "beta", "reachable": false}])
    );
    assert_eq!(r.body["mcpServerIds"], json!(["alpha", "beta"]));
    let r = app.get(&format!("/api/admin-api-keys/{star}"), ADMIN).await;
    assert_eq!(
        r.body["servers"],
        json!([{"name": "alpha", "reachable": true}])
    );
    // The owner's own view says the same; lists leave `servers` out.
    let (mine, _) = app.admin_key(&["*"]).await;
    let r = app.get(&format!("/api/api-keys/{mine}"), ADMIN).await;
    assert_eq!(
        r.body["servers"],
        json!([]),
        "admin reaches no rule: {}",
        r.text
    );
    let r = app.get("/api/admin-api-keys", ADMIN).await;
    assert!(r.body["items"][0].get("servers").is_none());
}

/// JSON answers, errors and redirects are never sniffed, framed or allowed
/// to load anything; the console's pages keep their own policy.
async fn every_answer_carries_the_safe_headers(b: Backend) {
    let app = TestApp::start(b).await;
    for (path, token) in [
        ("/api/me", Some(ADMIN)),
        ("/api/me", None),
        ("/api/nope", None),
        ("/nope", None),
        ("/openapi.json", None),
        ("/healthz", None),
    ] {
        let r = app.call(Method::GET, path, token, None).await;
        let h = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            h("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{path}");
        let csp = h("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let page = app.call(Method::GET, "/signin", None, None).await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") || csp.contains("default-src 'self'"),
        "{csp}"
    );
}
