//! The audit log: every change writes exactly one event with the right
//! actor, credential, client address and target; refused admin-token
//! sign-ins are counted per address and minute and capped; people see the
//! events about their own keys and admins everything; filters and cursor
//! paging; no key or secret ever lands in the table; retention pruning with
//! the time given by the test. Each test runs on SQLite and PostgreSQL.

use crate::common::*;
use crate::oidc::{app_with_oidc, issuer};
use crate::provider::*;
use crate::signin::{app_with_signin, subject};
use keygate_control_plane::audit::{self, ClientAddr};
use keygate_control_plane::db::Db;
use keygate_control_plane::domain::now_unix;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    audit_every_change,
    audit_people_and_sessions,
    audit_oidc_bearer,
    audit_client_address,
    audit_refused_sign_ins,
    audit_filters_and_paging,
    audit_never_holds_secrets,
    audit_retention
);

fn db(app: &TestApp) -> Db {
    app.server.as_ref().unwrap().state.db.clone()
}

/// One page of `GET /api/audit-events{query}` as `token`.
async fn page(app: &TestApp, token: &str, query: &str) -> Value {
    let r = app.get(&format!("/api/audit-events{query}"), token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

/// Every event, oldest first, read page by page (as the admin).
async fn all_events(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=500&cursor={c}"),
            None => "?limit=500".to_owned(),
        };
        let p = page(app, ADMIN, &q).await;
        out.extend(p["items"].as_array().unwrap().iter().cloned());
        match p["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    out.reverse();
    out
}

/// Follows the log: the events written since the last call, oldest first.
struct Tail {
    last: i64,
}

impl Tail {
    fn new() -> Self {
        Self { last: 0 }
    }

    async fn new_events(&mut self, app: &TestApp) -> Vec<Value> {
        let evs: Vec<Value> = all_events(app)
            .await
            .into_iter()
            .filter(|e| e["id"].as_i64().unwrap() > self.last)
            .collect();
        if let Some(e) = evs.last() {
            self.last = e["id"].as_i64().unwrap();
        }
        evs
    }

    /// Asserts exactly one new event, of `action`, and returns it.
    async fn one(&mut self, app: &TestApp, action: &str) -> Value {
        let evs = self.new_events(app).await;
        assert_eq!(evs.len(), 1, "expected one {action} event, got {evs:#?}");
        assert_eq!(evs[0]["action"], action, "{:#}", evs[0]);
        evs[0].clone()
    }

    async fn none(&mut self, app: &TestApp) {
        let evs = self.new_events(app).await;
        assert!(evs.is_empty(), "expected no event, got {evs:#?}");
    }
}

fn actor(user_id: i64, credential: &str) -> Value {
    json!({"userId": user_id, "credential": credential})
}

async fn admin_id(app: &TestApp) -> i64 {
    app.get("/api/me", ADMIN).await.body["id"].as_i64().unwrap()
}

async fn audit_every_change(b: Backend) {
    let app = TestApp::start(b).await;
    let admin = admin_id(&app).await;
    let me = actor(admin, "admin-token");
    let mut tail = Tail::new();

    app.server("echo").await;
    let e = tail.one(&app, "server.created").await;
    assert_eq!(e["actor"], me);
    assert_eq!(e["target"], json!({"type": "server", "id": "echo"}));
    assert_eq!(e["clientAddress"], "127.0.0.1");
    assert_eq!(e["count"], 1);
    assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    let r = app
        .put(
            "/api/mcp-servers/echo",
            ADMIN,
            json!({"displayName": "Echo!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let e = tail.one(&app, "server.changed").await;
    assert_eq!(e["details"]["displayName"], "Echo!");

    let ada = app.user("ada").await;
    let e = tail.one(&app, "user.created").await;
    assert_eq!(e["target"], json!({"type": "user", "id": ada}));
    assert_eq!(e["details"]["username"], "ada");
    let r = app
        .patch(
            &format!("/api/users/{ada}"),
            ADMIN,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let e = tail.one(&app, "user.changed").await;
    assert_eq!(e["details"]["changed"], json!(["role"]));
    assert_eq!(e["details"]["roleSource"], "api");
    assert_eq!(e["details"]["role"], "admin");
    // Setting what is already there changes nothing, and records nothing.
    app.patch(
        &format!("/api/users/{ada}"),
        ADMIN,
        json!({"role": "admin"}),
    )
    .await;
    tail.none(&app).await;

    let rule = app.rule(&["echo"], &[&format!("user:{ada}")]).await;
    let e = tail.one(&app, "rule.created").await;
    assert_eq!(e["target"], json!({"type": "rule", "id": rule}));
    assert_eq!(e["details"]["mcpServerIds"], json!(["echo"]));
    let r = app
        .put(
            &format!("/api/access-rules/{rule}"),
            ADMIN,
            json!({"name": "r2", "mcpServerIds": ["*"], "subjects": [format!("user:{ada}")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let e = tail.one(&app, "rule.changed").await;
    assert_eq!(e["details"]["name"], "r2");

    let (key, _) = app.key_for(ada, &["echo"]).await;
    let e = tail.one(&app, "key.created").await;
    assert_eq!(e["actor"], me);
    assert_eq!(
        e["target"],
        json!({"type": "key", "id": key, "ownerId": ada})
    );
    assert_eq!(e["details"]["name"], "k");
    assert_eq!(e["details"]["mcpServerIds"], json!(["echo"]));

    let path = format!("/api/admin-api-keys/{key}");
    app.patch(&path, ADMIN, json!({"enabled": false})).await;
    let e = tail.one(&app, "key.disabled").await;
    assert_eq!(e["target"]["ownerId"], ada);
    // Already off: no change, no event.
    app.patch(&path, ADMIN, json!({"enabled": false})).await;
    tail.none(&app).await;
    app.patch(&path, ADMIN, json!({"enabled": true})).await;
    tail.one(&app, "key.enabled").await;
    let r = app
        .patch(
            &path,
            ADMIN,
            json!({"name": "laptop", "expiresAt": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = tail.one(&app, "key.edited").await;
    assert_eq!(e["details"]["name"], "laptop");
    assert_eq!(e["details"]["changed"], json!(["name", "expiresAt"]));
    assert_eq!(e["details"]["expiresAt"], "2099-01-01T00:00:00Z");
    // A refused change writes nothing: the event is in its transaction.
    let r = app
        .patch(&path, ADMIN, json!({"expiresAt": "2000-01-01T00:00:00Z"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .patch(
            "/api/admin-api-keys/999999",
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    tail.none(&app).await;

    let r = app
        .call(
            Method::DELETE,
            &path,
            Some(ADMIN),
            Some(json!({"reason": "lost laptop"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = tail.one(&app, "key.revoked").await;
    assert_eq!(
        e["target"],
        json!({"type": "key", "id": key, "ownerId": ada})
    );
    assert_eq!(e["details"]["reason"], "lost laptop");
    assert_eq!(e["details"]["name"], "laptop");
    assert_eq!(app.delete(&path, ADMIN).await.status, StatusCode::NOT_FOUND);
    tail.none(&app).await;

    app.post(&format!("/api/users/{ada}/suspend"), ADMIN, json!({}))
        .await;
    let e = tail.one(&app, "user.suspended").await;
    assert_eq!(e["target"], json!({"type": "user", "id": ada}));
    app.post(&format!("/api/users/{ada}/unsuspend"), ADMIN, json!({}))
        .await;
    tail.one(&app, "user.unsuspended").await;

    // Revoke-all: each key gets its own key.revoked, then one summary.
    let (k1, _) = app.key_for(ada, &["echo"]).await;
    let (k2, _) = app.key_for(ada, &["*"]).await;
    tail.new_events(&app).await;
    let r = app
        .post(
            &format!("/api/users/{ada}/revoke-keys"),
            ADMIN,
            json!({"reason": "left"}),
        )
        .await;
    assert_eq!(r.body["revoked"], 2);
    let evs = tail.new_events(&app).await;
    let actions: Vec<&str> = evs.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["key.revoked", "key.revoked", "user.keys_revoked"],
        "{evs:#?}"
    );
    assert_eq!(evs[0]["target"]["id"], k1);
    assert_eq!(evs[1]["target"]["id"], k2);
    assert_eq!(evs[0]["details"]["via"], "user.keys_revoked");
    assert_eq!(
        evs[2]["details"],
        json!({"count": 2, "reason": "left", "username": "ada"})
    );

    // Deleting a user: its key's revocation, then the deletion, naming it.
    let (k3, _) = app.key_for(ada, &["echo"]).await;
    tail.new_events(&app).await;
    assert_eq!(
        app.delete(&format!("/api/users/{ada}"), ADMIN).await.status,
        StatusCode::OK
    );
    let evs = tail.new_events(&app).await;
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!(evs[0]["action"], "key.revoked");
    assert_eq!(evs[0]["target"]["id"], k3);
    assert_eq!(evs[0]["details"]["via"], "user.deleted");
    assert_eq!(evs[1]["action"], "user.deleted");
    assert_eq!(evs[1]["details"]["username"], "ada");
    assert_eq!(
        app.delete(&format!("/api/users/{ada}"), ADMIN).await.status,
        StatusCode::NOT_FOUND
    );
    tail.none(&app).await;

    assert_eq!(
        app.delete(&format!("/api/access-rules/{rule}"), ADMIN)
            .await
            .status,
        StatusCode::OK
    );
    let e = tail.one(&app, "rule.deleted").await;
    assert_eq!(e["details"]["name"], "r2");
    assert_eq!(
        app.delete("/api/mcp-servers/echo", ADMIN).await.status,
        StatusCode::OK
    );
    let e = tail.one(&app, "server.deleted").await;
    assert_eq!(e["target"], json!({"type": "server", "id": "echo"}));

    // The admin's own key, through the user route.
    let (own, _) = app.admin_key(&["*"]).await;
    let e = tail.one(&app, "key.created").await;
    assert_eq!(e["target"]["ownerId"], admin);
    app.delete(&format!("/api/api-keys/{own}?reason=done"), ADMIN)
        .await;
    let e = tail.one(&app, "key.revoked").await;
    assert_eq!(e["details"]["reason"], "done");
}

/// Sign-ins (OIDC and admin token), a person's session as the credential,
/// and what a person who is not an admin may read.
async fn audit_people_and_sessions(b: Backend) {
    let app = app_with_signin(b).await;
    let admin = admin_id(&app).await;
    let p = provider();
    let sub = subject("ivy");
    p.set_user(
        &sub,
        json!({"preferred_username": sub, "email": "ivy@example.com"}),
    )
    .await;
    let mut tail = Tail::new();

    let (cookie, _) = sign_in(&app, &sub, "/").await;
    let me = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let ivy = me["id"].as_i64().unwrap();
    let e = tail.one(&app, "session.created").await;
    assert_eq!(e["actor"], actor(ivy, "oidc-sign-in"));
    assert_eq!(e["target"], json!({"type": "session", "id": null}));
    assert_eq!(e["clientAddress"], "127.0.0.1");

    // Ivy makes a key with her session.
    let r = with_session(Method::POST, &app, "/api/api-keys", &cookie)
        .header("origin", PUBLIC)
        .json(&json!({"name": "ivy-key", "mcpServerIds": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let ivy_key = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let e = tail.one(&app, "key.created").await;
    assert_eq!(e["actor"], actor(ivy, "session"));
    assert_eq!(e["target"]["ownerId"], ivy);

    // The admin signs in with the token and disables Ivy's key.
    let r = browser()
        .post(format!("{}/auth/token", app.base))
        .header("origin", PUBLIC)
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let admin_cookie = set_cookie_value(r.headers(), "keygate_session").unwrap();
    let e = tail.one(&app, "session.created").await;
    assert_eq!(e["actor"], actor(admin, "admin-token"));
    let r = with_session(
        Method::PATCH,
        &app,
        &format!("/api/admin-api-keys/{ivy_key}"),
        &admin_cookie,
    )
    .header("origin", PUBLIC)
    .json(&json!({"enabled": false}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let e = tail.one(&app, "key.disabled").await;
    assert_eq!(e["actor"], actor(admin, "session"));
    // And makes keys of its own and a user: none of Ivy's business.
    app.admin_key(&["*"]).await;
    app.user("someone").await;

    // Ivy sees the events about her keys, whoever made them; nothing else.
    let r = with_session(Method::GET, &app, "/api/audit-events", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mine: Value = r.json().await.unwrap();
    let actions: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.disabled", "key.created"], "{mine:#}");
    for e in mine["items"].as_array().unwrap() {
        assert_eq!(e["target"]["ownerId"], ivy);
    }
    // Her own address, but not the admin's.
    assert_eq!(mine["items"][0]["actor"]["userId"], admin);
    assert!(mine["items"][0]["clientAddress"].is_null(), "{mine:#}");
    assert_eq!(mine["items"][1]["clientAddress"], "127.0.0.1", "{mine:#}");
    // A filter cannot widen it: userId of the admin still only shows Ivy's keys.
    let r = with_session(
        Method::GET,
        &app,
        &format!("/api/audit-events?userId={admin}"),
        &cookie,
    )
    .send()
    .await
    .unwrap();
    let filtered: Value = r.json().await.unwrap();
    assert_eq!(
        filtered["items"].as_array().unwrap().len(),
        1,
        "{filtered:#}"
    );
    assert_eq!(filtered["items"][0]["action"], "key.disabled");
    // The admin sees everything.
    let all = all_events(&app).await;
    assert!(all.len() >= 6, "{all:#?}");
    assert!(all.iter().any(|e| e["action"] == "user.created"));
}

async fn audit_oidc_bearer(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let token = iss.mint(&iss.claims("sub-bearer"));
    let r = app
        .post(
            "/api/api-keys",
            &token,
            json!({"name": "jwt-key", "mcpServerIds": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let user = r.body["userId"].as_i64().unwrap();
    let evs = all_events(&app).await;
    let created: Vec<&Value> = evs
        .iter()
        .filter(|e| e["action"] == "key.created")
        .collect();
    assert_eq!(created.len(), 1, "{evs:#?}");
    assert_eq!(created[0]["actor"], actor(user, "oidc-bearer"));
    // The person reads their own key's events with the same bearer.
    let mine = page(&app, &token, "").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine:#}");
}

/// Creates a server with `X-Forwarded-For: xff` and answers the client
/// address its event recorded.
async fn address_seen(app: &TestApp, name: &str, xff: Option<&str>) -> Value {
    let mut req = app
        .api
        .request(Method::POST, "/api/mcp-servers", Some(ADMIN))
        .json(&json!({"name": name}));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::CREATED);
    let p = page(app, ADMIN, "?action=server.created&limit=1").await;
    assert_eq!(p["items"][0]["target"]["id"], name);
    p["items"][0]["clientAddress"].clone()
}

async fn audit_client_address(b: Backend) {
    // 0 hops (the default): the socket peer; a client's header is ignored.
    let app = TestApp::start(b).await;
    assert_eq!(address_seen(&app, "a", None).await, "127.0.0.1");
    assert_eq!(
        address_seen(&app, "b", Some("203.0.113.9")).await,
        "127.0.0.1"
    );
    drop(app);

    // 1 hop: the address the proxy appended, never what the client wrote.
    let app = TestApp::start_with(b, |c| c.trusted_proxy_hops = 1).await;
    assert_eq!(
        address_seen(&app, "a", Some("203.0.113.9")).await,
        "203.0.113.9"
    );
    assert_eq!(
        address_seen(&app, "b", Some("6.6.6.6, 203.0.113.10")).await,
        "203.0.113.10"
    );
    assert_eq!(
        address_seen(&app, "c", Some("2001:db8::7")).await,
        "2001:db8::7"
    );
    // No header, or junk: not through the proxy; the socket peer.
    assert_eq!(address_seen(&app, "d", None).await, "127.0.0.1");
    assert_eq!(address_seen(&app, "e", Some("nonsense")).await, "127.0.0.1");
}

/// `POST /auth/token` with a wrong token from `xff`.
async fn refused(app: &TestApp, xff: &str) {
    let r = browser()
        .post(format!("{}/auth/token", app.base))
        .header("x-forwarded-for", xff)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"token": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn audit_refused_sign_ins(b: Backend) {
    let app = TestApp::start_with(b, |c| c.trusted_proxy_hops = 1).await;
    // All in one minute: start early in one.
    while now_unix() % 60 > 45 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for _ in 0..5 {
        refused(&app, "198.51.100.7").await;
    }
    for _ in 0..3 {
        refused(&app, "198.51.100.8").await;
    }
    let p = page(&app, ADMIN, "?action=session.admin_token_refused").await;
    let items = p["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{p:#}");
    assert_eq!(items[0]["clientAddress"], "198.51.100.8");
    assert_eq!(items[0]["count"], 3);
    assert_eq!(items[1]["clientAddress"], "198.51.100.7");
    assert_eq!(items[1]["count"], 5);
    assert_eq!(items[1]["actor"], Value::Null);
    assert_eq!(items[1]["target"], json!({"type": "session", "id": null}));

    // The per-minute cap: 150 addresses in one minute take 100 rows, the
    // last one counting the 51 past the cap.
    let db = db(&app);
    let minute_start = 1_700_000_040;
    for i in 0..150u32 {
        let addr = std::net::IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
        audit::store::count_refused_sign_in(&db, ClientAddr(Some(addr)), minute_start + 7)
            .await
            .unwrap();
    }
    let q = "?action=session.admin_token_refused&limit=500\
             &from=2023-11-14T22:14:00Z&to=2023-11-14T22:15:00Z";
    let p = page(&app, ADMIN, q).await;
    let items = p["items"].as_array().unwrap();
    assert_eq!(
        items.len() as i64,
        audit::store::REFUSED_SIGN_IN_ROWS_PER_MINUTE,
        "{p:#}"
    );
    let total: i64 = items.iter().map(|e| e["count"].as_i64().unwrap()).sum();
    assert_eq!(total, 150);
    let overflow: Vec<&Value> = items
        .iter()
        .filter(|e| e["clientAddress"].is_null())
        .collect();
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0]["count"], 51);
}

async fn audit_filters_and_paging(b: Backend) {
    let app = TestApp::start(b).await;
    app.server("echo").await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let (ka, _) = app.key_for(ada, &["*"]).await;
    let (kb, _) = app.key_for(bob, &["*"]).await;
    app.patch(
        &format!("/api/admin-api-keys/{ka}"),
        ADMIN,
        json!({"enabled": false}),
    )
    .await;
    app.delete(&format!("/api/admin-api-keys/{kb}"), ADMIN)
        .await;
    // server, 2 users, 2 keys, disable, revoke
    let all = all_events(&app).await;
    assert_eq!(all.len(), 7, "{all:#?}");

    let ids = |p: &Value| -> Vec<i64> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let by_key = page(&app, ADMIN, &format!("?keyId={ka}")).await;
    let actions: Vec<&str> = by_key["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.disabled", "key.created"]);
    // userId: about the user (created) and about their keys.
    let by_user = page(&app, ADMIN, &format!("?userId={bob}")).await;
    let actions: Vec<&str> = by_user["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoked", "key.created", "user.created"]);
    // userId of the admin: everything it did.
    let admin = admin_id(&app).await;
    assert_eq!(
        ids(&page(&app, ADMIN, &format!("?userId={admin}&limit=500")).await).len(),
        7
    );
    let by_action = page(&app, ADMIN, "?action=key.created").await;
    assert_eq!(ids(&by_action).len(), 2);
    let combined = page(&app, ADMIN, &format!("?action=key.created&userId={ada}")).await;
    assert_eq!(ids(&combined), [all[3]["id"].as_i64().unwrap()]);

    // Time range: `from` inclusive, `to` exclusive.
    assert_eq!(
        ids(&page(&app, ADMIN, "?from=2000-01-01T00:00:00Z&limit=500").await).len(),
        7
    );
    assert!(ids(&page(&app, ADMIN, "?to=2000-01-01T00:00:00Z").await).is_empty());
    assert!(ids(&page(&app, ADMIN, "?from=2999-01-01T00:00:00Z").await).is_empty());
    let t = all[0]["time"].as_str().unwrap();
    let q = format!("?from={t}&to={t}");
    assert!(ids(&page(&app, ADMIN, &q).await).is_empty());

    // Pages of 2 cover everything once, newest first, then stop.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let p = page(&app, ADMIN, &q).await;
        seen.extend(ids(&p));
        pages += 1;
        match p["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let mut expected: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    expected.reverse();
    assert_eq!(seen, expected);
    // A new event does not shift a page already being walked.
    let first = page(&app, ADMIN, "?limit=2").await;
    app.user("carol").await;
    let c = first["nextCursor"].as_str().unwrap();
    assert_eq!(
        ids(&page(&app, ADMIN, &format!("?limit=2&cursor={c}")).await),
        expected[2..4]
    );

    for (q, msg) in [
        ("?limit=0", "limit must be 1 to 500"),
        ("?limit=501", "limit must be 1 to 500"),
        ("?action=key.nope", "unknown action"),
        ("?keyId=abc", "keyId must be a positive id"),
        ("?userId=0", "userId must be a positive id"),
        ("?cursor=-1", "cursor must be a positive id"),
        ("?from=yesterday", "from must be an RFC 3339 timestamp"),
    ] {
        let r = app.get(&format!("/api/audit-events{q}"), ADMIN).await;
        assert_error(&r, StatusCode::BAD_REQUEST, msg);
    }
    let r = app.get("/api/audit-events?bogus=1", ADMIN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.call(Method::GET, "/api/audit-events", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // An API key reads nothing of it.
    let (_, key) = app.key_for(ada, &["*"]).await;
    let r = app.get("/api/audit-events", &key).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    let op = &r.body["paths"]["/api/audit-events"]["get"];
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        ["userId", "keyId", "action", "from", "to", "limit", "cursor"]
    );
}

/// Every column of every row, as text.
async fn whole_table(db: &Db) -> String {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(id AS TEXT) || '|' || CAST(at AS TEXT) || '|' || actor_kind || '|' \
         || COALESCE(CAST(actor_user_id AS TEXT), '') || '|' || COALESCE(actor_credential, '') \
         || '|' || COALESCE(client_addr, '') || '|' || action || '|' || target_type || '|' \
         || COALESCE(target_id, '') || '|' || COALESCE(CAST(target_owner_id AS TEXT), '') \
         || '|' || details || '|' || CAST(repeat_count AS TEXT) || '|' \
         || COALESCE(CAST(bucket_minute AS TEXT), '') || '|' || COALESCE(bucket_addr, '') \
         FROM audit_events",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
}

async fn audit_never_holds_secrets(b: Backend) {
    let app = TestApp::start_with(b, |c| c.public_url = Some(PUBLIC.to_owned())).await;
    let db = db(&app);
    app.server("echo").await;
    let ada = app.user("ada").await;
    app.rule(&["echo"], &[&format!("user:{ada}")]).await;
    let mut secrets: Vec<String> = vec![ADMIN.to_owned(), DATA_PLANE.to_owned()];
    let mut keys = Vec::new();
    for servers in [&["echo"][..], &["*"][..], &["echo"][..]] {
        let (id, key) = app.key_for(ada, servers).await;
        let hash: String = sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        // The key, its secret part, and the stored hash.
        secrets.push(key.splitn(4, '-').nth(3).unwrap().to_owned());
        secrets.push(key);
        secrets.push(hash);
        keys.push(id);
    }
    // Edits of every kind (as a rotation would change a key in place),
    // then revocations one by one and all at once.
    for id in &keys {
        let path = format!("/api/admin-api-keys/{id}");
        app.patch(&path, ADMIN, json!({"enabled": false})).await;
        app.patch(&path, ADMIN, json!({"enabled": true})).await;
        app.patch(
            &path,
            ADMIN,
            json!({"name": "renamed", "description": "d", "expiresAt": "2099-01-01T00:00:00Z"}),
        )
        .await;
    }
    app.delete(&format!("/api/admin-api-keys/{}", keys[0]), ADMIN)
        .await;
    app.post(&format!("/api/users/{ada}/revoke-keys"), ADMIN, json!({}))
        .await;
    // A session (its cookie value and the digest stored for it).
    let r = browser()
        .post(format!("{}/auth/token", app.base))
        .header("origin", PUBLIC)
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie_value(r.headers(), "keygate_session").unwrap();
    secrets.push(keygate_control_plane::session::digest_hex(&cookie));
    secrets.push(cookie);
    // A refused sign-in with a token that looks like a key.
    let wrong = format!("{}x", secrets[3]);
    let r = browser()
        .post(format!("{}/auth/token", app.base))
        .header("origin", PUBLIC)
        .json(&json!({"token": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    secrets.push(wrong);

    let table = whole_table(&db).await;
    assert!(table.lines().count() >= 16, "{table}");
    for s in &secrets {
        assert!(!s.is_empty());
        assert!(
            !table.contains(s.as_str()),
            "{s:?} is in the audit table:\n{table}"
        );
        // Nor in any spelling the API might show.
        assert!(
            !table.to_lowercase().contains(&s.to_lowercase()),
            "{s:?} (any case) is in the audit table"
        );
    }
}

async fn audit_retention(b: Backend) {
    let app = TestApp::start(b).await;
    let db = db(&app);
    app.server("echo").await;
    app.user("ada").await;
    let now = now_unix();
    let count = |db: Db| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_events")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    assert_eq!(count(db.clone()).await, 2);
    // Within the window: kept.
    let n = audit::retention::prune(&db, now + 364 * 86_400, 365)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // 0 days keeps everything, however old.
    let n = audit::retention::prune(&db, now + 10_000 * 86_400, 0)
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(count(db.clone()).await, 2);
    // A day past the window: gone; newer events stay.
    let n = audit::retention::prune(&db, now + 7 * 86_400 + 5, 7)
        .await
        .unwrap();
    assert_eq!(n, 2);
    app.user("bob").await;
    let n = audit::retention::prune(&db, now + 7 * 86_400 - 100, 7)
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(count(db.clone()).await, 1);
    // Two replicas pruning at once agree.
    let (a, b2) = tokio::join!(
        audit::retention::prune(&db, now + 400 * 86_400, 1),
        audit::retention::prune(&db, now + 400 * 86_400, 1)
    );
    assert_eq!(a.unwrap() + b2.unwrap(), 1);
    assert_eq!(count(db).await, 0);
}
