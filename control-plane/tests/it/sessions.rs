//! Console sessions: admin-token sign-in, the same-origin (CSRF) rule,
//! sign-out, and what ends a session — deleting its user, a demotion (at
//! once), a changed admin token, the idle and absolute lifetimes. An API key
//! never opens one. Each test runs on SQLite and PostgreSQL.

use crate::common::*;
use crate::provider::*;
use crate::signin::{app_with_signin, subject};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// `POST /auth/token` as the console sends it (from `origin`).
async fn token_sign_in(app: &TestApp, token: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = browser()
        .post(format!("{}/auth/token", app.base))
        .json(&json!({"token": token}));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

/// Signs in with the admin token; returns the session cookie value.
async fn admin_session(app: &TestApp) -> String {
    let r = token_sign_in(app, ADMIN, Some(PUBLIC)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    set_cookie_value(r.headers(), "keygate_session").expect("session cookie")
}

async fn status(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.unwrap();
    let s = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    (s, body)
}

both_backends!(
    session_admin_token,
    session_csrf,
    session_csrf_by_host,
    session_logout,
    session_user_deleted,
    session_demotion,
    session_admin_token_changed,
    session_api_key_never,
    session_lifetimes,
    session_owner_cannot_undo_an_admins_disable
);

async fn session_admin_token(b: Backend) {
    let app = TestApp::start_with(b, |c| c.public_url = Some(PUBLIC.to_owned())).await;
    let r = token_sign_in(&app, ADMIN, Some(PUBLIC)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let line = set_cookie_line(r.headers(), "keygate_session").unwrap();
    assert!(line.ends_with("; HttpOnly; SameSite=Lax; Path=/"), "{line}");
    let cookie = set_cookie_value(r.headers(), "keygate_session").unwrap();
    let (s, me) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");
    let (s, _) = status(with_session(Method::GET, &app, "/api/users", &cookie)).await;
    assert_eq!(s, StatusCode::OK);

    // A wrong token: 401 with the stable message and no cookie.
    for wrong in ["nope", "", &format!("{ADMIN}x")] {
        let r = token_sign_in(&app, wrong, Some(PUBLIC)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(set_cookie_line(r.headers(), "keygate_session").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"error": "invalid admin token"}));
    }
    // Bad bodies are a 400, never a 500.
    let r = browser()
        .post(format!("{}/auth/token", app.base))
        .header("origin", PUBLIC)
        .header("content-type", "application/json")
        .body("{\"token\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // From another site: refused before the token is looked at.
    let r = token_sign_in(&app, ADMIN, Some("http://evil.example")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "cross-site request refused"})
    );
    let r = token_sign_in(&app, ADMIN, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An https public URL makes the cookie Secure, under a `__Host-` name
    // (a sibling subdomain can neither plant nor shadow it), and only that
    // name is read.
    let secure = TestApp::start_on(app.db.clone(), |c| {
        c.public_url = Some("https://keys.example.com".to_owned())
    })
    .await;
    let r = token_sign_in(&secure, ADMIN, Some("https://keys.example.com")).await;
    assert!(set_cookie_line(r.headers(), "keygate_session").is_none());
    let line = set_cookie_line(r.headers(), "__Host-keygate_session").unwrap();
    assert!(line.ends_with("; Path=/; Secure"), "{line}");
    let value = set_cookie_value(r.headers(), "__Host-keygate_session").unwrap();
    let me = |name: &str| {
        browser()
            .get(format!("{}/api/me", secure.base))
            .header("cookie", format!("{name}={value}"))
            .send()
    };
    assert_eq!(
        me("__Host-keygate_session").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        me("keygate_session").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the unprefixed name is not the session over https"
    );
}

async fn session_csrf(b: Backend) {
    let app = TestApp::start_with(b, |c| c.public_url = Some(PUBLIC.to_owned())).await;
    let cookie = admin_session(&app).await;
    let post = |name: &str| {
        with_session(Method::POST, &app, "/api/mcp-servers", &cookie).json(&json!({"name": name}))
    };
    // Cross-site, by Origin or Sec-Fetch-Site, or with neither: 403.
    for req in [
        post("a").header("origin", "http://evil.example"),
        post("a").header("origin", "null"),
        post("a").header("origin", "https://keygate.test"),
        post("a").header("sec-fetch-site", "cross-site"),
        post("a").header("sec-fetch-site", "same-site"),
        post("a"),
        // An Origin decides even beside a same-origin Sec-Fetch-Site.
        post("a")
            .header("origin", "http://evil.example")
            .header("sec-fetch-site", "same-origin"),
    ] {
        let (s, body) = status(req).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body, json!({"error": "cross-site request refused"}));
    }
    let (s, body) = status(with_session(Method::GET, &app, "/api/mcp-servers", &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["items"], json!([]), "nothing was created");
    // The same origin: allowed, by Origin or by Sec-Fetch-Site.
    let (s, _) = status(post("alpha").header("origin", PUBLIC)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = status(post("beta").header("sec-fetch-site", "same-origin")).await;
    assert_eq!(s, StatusCode::CREATED);
    // Every unsafe method is checked; reads are not.
    for (m, path) in [
        (Method::PUT, "/api/mcp-servers/alpha"),
        (Method::DELETE, "/api/mcp-servers/alpha"),
        (Method::PATCH, "/api/users/1"),
    ] {
        let (s, _) = status(
            with_session(m.clone(), &app, path, &cookie)
                .header("origin", "http://evil.example")
                .json(&json!({})),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m}");
    }
    let (s, _) = status(
        with_session(Method::GET, &app, "/api/mcp-servers/alpha", &cookie)
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Bearer requests are not cookie requests: no origin rule.
    let (s, _) = status(
        browser()
            .post(format!("{}/api/mcp-servers", app.base))
            .bearer_auth(ADMIN)
            .header("origin", "http://evil.example")
            .json(&json!({"name": "gamma"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // A bearer that fails never falls back to the cookie.
    let (s, _) =
        status(with_session(Method::GET, &app, "/api/me", &cookie).bearer_auth("not-a-token"))
            .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Sign-out from another site is refused too, and the session lives on.
    let (s, _) = status(
        with_session(Method::POST, &app, "/auth/logout", &cookie)
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::OK);
}

/// Without `--public-url` the console's origin is `http://` + `Host`.
async fn session_csrf_by_host(b: Backend) {
    let app = TestApp::start(b).await;
    let own = app.base.clone();
    let r = token_sign_in(&app, ADMIN, Some(&own)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cookie = set_cookie_value(r.headers(), "keygate_session").unwrap();
    let (s, _) = status(
        with_session(Method::POST, &app, "/api/mcp-servers", &cookie)
            .header("origin", PUBLIC)
            .json(&json!({"name": "a"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = status(
        with_session(Method::POST, &app, "/api/mcp-servers", &cookie)
            .header("origin", &own)
            .json(&json!({"name": "a"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}

async fn session_logout(b: Backend) {
    let app = TestApp::start_with(b, |c| c.public_url = Some(PUBLIC.to_owned())).await;
    let cookie = admin_session(&app).await;
    let other = admin_session(&app).await;
    let r = with_session(Method::POST, &app, "/auth/logout", &cookie)
        .header("origin", PUBLIC)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookie_line(r.headers(), "keygate_session").unwrap();
    assert!(
        cleared.starts_with("keygate_session=; Max-Age=0;"),
        "{cleared}"
    );
    let (s, body) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "invalid or expired credentials"}));
    // Only that browser's session ended.
    let (s, _) = status(with_session(Method::GET, &app, "/api/me", &other)).await;
    assert_eq!(s, StatusCode::OK);
    // Signing out without a session is fine.
    let r = browser()
        .post(format!("{}/auth/logout", app.base))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

async fn session_user_deleted(b: Backend) {
    let app = app_with_signin(b).await;
    let sub = subject("leaver");
    let (first, _) = sign_in(&app, &sub, "/").await;
    let (second, _) = sign_in(&app, &sub, "/").await;
    let me: Value = with_session(Method::GET, &app, "/api/me", &second)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = me["id"].as_i64().unwrap();
    let r = app.delete(&format!("/api/users/{id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for cookie in [&first, &second] {
        let (s, _) = status(with_session(Method::GET, &app, "/api/me", cookie)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let db = &app.server.as_ref().unwrap().state.db;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

async fn session_demotion(b: Backend) {
    let app = app_with_signin(b).await;
    let boss = subject("boss");
    provider()
        .set_user(&boss, json!({"email": ADMIN_EMAIL, "email_verified": true}))
        .await;
    let (cookie, _) = sign_in(&app, &boss, "/").await;
    let (s, me) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!((s, me["role"].as_str()), (StatusCode::OK, Some("admin")));
    let id = me["id"].as_i64().unwrap();
    let (s, _) = status(with_session(Method::GET, &app, "/api/users", &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    let r = app
        .patch(&format!("/api/users/{id}"), ADMIN, json!({"role": "user"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The very next request sees the new role.
    let (s, body) = status(with_session(Method::GET, &app, "/api/users", &cookie)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"error": "admin role required"}));
    let (_, me) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(me["role"], "user");
}

async fn session_admin_token_changed(b: Backend) {
    let app = TestApp::start_with(b, |c| c.public_url = Some(PUBLIC.to_owned())).await;
    let cookie = admin_session(&app).await;
    // Another replica with the same token honours it.
    let same = TestApp::start_on(app.db.clone(), |c| c.public_url = Some(PUBLIC.to_owned())).await;
    let (s, _) = status(with_session(Method::GET, &same, "/api/users", &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    // Restarted with another token: the session is over, everywhere.
    drop(same);
    let changed = TestApp::start_on(app.db.clone(), |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.admin_token = Some("a-new-admin-token".into());
    })
    .await;
    let (s, body) = status(with_session(Method::GET, &changed, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Without any admin token, too.
    let cookie = admin_session(&app).await;
    let none = TestApp::start_on(app.db.clone(), |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.admin_token = None;
    })
    .await;
    let (s, _) = status(with_session(Method::GET, &none, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn session_api_key_never(b: Backend) {
    let app = TestApp::start_with(b, |c| c.public_url = Some(PUBLIC.to_owned())).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let (_, key) = app.admin_key(&["alpha"]).await;
    // Not the admin token, so no session.
    let r = token_sign_in(&app, &key, Some(PUBLIC)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_line(r.headers(), "keygate_session").is_none());
    // Nor is a key in the cookie a session.
    for req in [
        with_session(Method::GET, &app, "/api/me", &key),
        with_session(Method::GET, &app, "/api/api-keys", &key),
    ] {
        let (s, body) = status(req).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    }
    // Two session cookies are refused rather than guessed between.
    let cookie = admin_session(&app).await;
    let (s, _) = status(browser().get(format!("{}/api/me", app.base)).header(
        "cookie",
        format!("keygate_session={cookie}; keygate_session=x"),
    ))
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn session_lifetimes(b: Backend) {
    // Idle: two seconds without a request ends it.
    let app = TestApp::start_with(b, |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.sessions.idle = Duration::from_secs(2);
    })
    .await;
    let cookie = admin_session(&app).await;
    let (s, _) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (s, _) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Absolute: four seconds after sign-in, however busy (times are whole
    // seconds, so the margins are a second wide).
    let app = TestApp::start_on(app.db.clone(), |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.sessions.max = Duration::from_secs(4);
    })
    .await;
    let cookie = admin_session(&app).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2000) {
        let (s, _) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
        assert_eq!(s, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(5100) - started.elapsed()).await;
    let (s, _) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// A key an admin turned off stays off for its owner (whose login may be the
/// very thing that was taken over); a key the owner turned off, the owner
/// turns on again.
async fn session_owner_cannot_undo_an_admins_disable(b: Backend) {
    let app = app_with_signin(b).await;
    app.server("alpha").await;
    app.rule(&["alpha"], &["*"]).await;
    let eve = subject("eve");
    provider()
        .set_user(
            &eve,
            json!({"email": "eve@example.com", "email_verified": true}),
        )
        .await;
    let (cookie, _) = sign_in(&app, &eve, "/").await;
    let (_, me) = status(with_session(Method::GET, &app, "/api/me", &cookie)).await;
    let eve_id = me["id"].as_i64().unwrap();
    let (kid, _) = app.key_for(eve_id, &["alpha"]).await;
    let own = |enabled: bool| {
        with_session(
            Method::PATCH,
            &app,
            &format!("/api/api-keys/{kid}"),
            &cookie,
        )
        .header("origin", PUBLIC)
        .json(&json!({ "enabled": enabled }))
    };

    // The owner's own off and on.
    assert_eq!(status(own(false)).await.0, StatusCode::OK);
    let (s, body) = status(own(true)).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );

    let admin_path = format!("/api/admin-api-keys/{kid}");
    let admin = |enabled: bool| app.patch(&admin_path, ADMIN, json!({ "enabled": enabled }));
    // The owner is refused and the key stays off: only an admin turns it on.
    let refused_to_owner = || async {
        let (s, body) = status(own(true)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            body,
            json!({"error": "an admin turned this key off; only an admin can turn it on"})
        );
        let r = app.get(&admin_path, ADMIN).await;
        assert_eq!(r.body["status"], "disabled");
    };

    // An admin's off.
    let r = admin(false).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    refused_to_owner().await;
    let r = admin(true).await;
    assert_eq!(r.body["status"], "active", "{}", r.text);

    // The owner (or whoever holds their login) turns the key off first; an
    // admin then turns it off too: the admin now holds it.
    assert_eq!(status(own(false)).await.0, StatusCode::OK);
    let r = admin(false).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    refused_to_owner().await;
    let r = app
        .get(
            &format!("/api/audit-events?keyId={kid}&action=key.disabled"),
            ADMIN,
        )
        .await;
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(4),
        "two turn-offs by the owner, two by the admin (the last one the hold): {}",
        r.text
    );
}
