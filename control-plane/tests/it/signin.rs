//! Console sign-in against a real OpenID provider (oidc-provider-mock), the
//! whole redirect flow driven over HTTP: success, every refusal (state,
//! reused code and state, nonce, provider error), `next`, the admin token,
//! and sessions across replicas. Each test runs on SQLite and PostgreSQL.

use crate::common::*;
use crate::provider::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A subject no other test (or run against the shared provider) uses.
pub fn subject(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{name}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// An app with console sign-in through the test provider.
pub async fn app_with_signin(b: Backend) -> TestApp {
    let oidc = provider().config();
    TestApp::start_with(b, move |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.oidc = Some(oidc);
    })
    .await
}

both_backends!(
    signin_success,
    signin_admin_by_claims,
    signin_refusals,
    signin_next_is_local,
    signin_across_replicas,
    signin_provider_down,
    signin_pending_cap,
    signin_without_client,
    signin_issuer_migration
);

async fn signin_success(b: Backend) {
    let app = app_with_signin(b).await;
    let p = provider();
    let sub = subject("grace");
    let name = format!("grace-{}", &sub[sub.len() - 6..]);
    p.set_user(
        &sub,
        json!({"preferred_username": name, "email": "grace@example.com", "email_verified": true}),
    )
    .await;

    let r = app.call(Method::GET, "/auth/options", None, None).await;
    assert_eq!(r.body, json!({"oidc": true}), "{}", r.text);

    let started = begin(&app, "/api-keys").await;
    // The login cookie goes only to the callback, for a few minutes.
    let r = browser()
        .get(format!("{}/auth/login?next=/x", app.base))
        .send()
        .await
        .unwrap();
    let login_line = set_cookie_line(r.headers(), "keygate_login").unwrap();
    assert!(
        login_line.ends_with("; Max-Age=600; HttpOnly; SameSite=Lax; Path=/auth/callback"),
        "{login_line}"
    );
    // The authorization request: code flow, PKCE S256, state, nonce, our
    // client and redirect URI.
    let url = reqwest::Url::parse(&started.authorization_url).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{PUBLIC}/auth/callback"));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"], started.login_cookie);
    assert!(q["nonce"].len() >= 16);
    assert!(
        q["scope"].split(' ').any(|s| s == "openid"),
        "{}",
        q["scope"]
    );

    let redirect = p.authorize(&started.authorization_url, &sub).await;
    let r = callback(&app, &redirect, Some(&started.login_cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(r.headers()), "/api-keys");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let line = set_cookie_line(r.headers(), "keygate_session").unwrap();
    assert!(
        line.ends_with("; HttpOnly; SameSite=Lax; Path=/"),
        "no Secure over http, no Max-Age: {line}"
    );
    // The login cookie is cleared.
    let cleared = set_cookie_line(r.headers(), "keygate_login").unwrap();
    assert!(
        cleared.starts_with("keygate_login=; Max-Age=0"),
        "{cleared}"
    );
    let cookie = set_cookie_value(r.headers(), "keygate_session").unwrap();
    assert!(cookie.len() >= 43, "{cookie}");

    // The cookie is a credential: the person, created on first sight.
    let me: serde_json::Value = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], name.as_str(), "{me}");
    assert_eq!(me["email"], "grace@example.com");
    assert_eq!(me["role"], "user");
    let id = me["id"].as_i64().unwrap();
    let r = with_session(Method::GET, &app, "/api/users", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The database holds the cookie's SHA-256, never the cookie.
    let db = &app.server.as_ref().unwrap().state.db;
    let ids: Vec<(String, String)> = sqlx::query_as("SELECT id, credential FROM sessions")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].0, cookie);
    assert_eq!(
        ids[0].0,
        keygate_control_plane::session::digest_hex(&cookie)
    );
    assert_eq!(ids[0].1, "oidc");
    // The user records its issuer and subject.
    let (issuer, stored_sub): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT oidc_issuer, oidc_subject FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(issuer.as_deref(), Some(p.issuer.as_str()));
    assert_eq!(stored_sub.as_deref(), Some(sub.as_str()));

    // Signing in again is the same person, in a new session (the one the
    // browser brought ends: no fixation, no pile of sessions).
    let started = begin(&app, "/").await;
    let redirect = p.authorize(&started.authorization_url, &sub).await;
    let r = browser()
        .get(format!(
            "{}{}",
            app.base,
            redirect.strip_prefix(PUBLIC).unwrap()
        ))
        .header(
            "cookie",
            format!(
                "keygate_login={}; keygate_session={cookie}",
                started.login_cookie
            ),
        )
        .send()
        .await
        .unwrap();
    let second = set_cookie_value(r.headers(), "keygate_session").unwrap();
    assert_ne!(second, cookie);
    let r = with_session(Method::GET, &app, "/api/me", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], id);
    let r = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn signin_admin_by_claims(b: Backend) {
    let app = app_with_signin(b).await;
    let p = provider();
    // Verified admin email: admin. The same email unverified: not.
    let boss = subject("boss");
    p.set_user(&boss, json!({"email": ADMIN_EMAIL, "email_verified": true}))
        .await;
    let (cookie, _) = sign_in(&app, &boss, "/").await;
    let r = with_session(Method::GET, &app, "/api/users", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let pretender = subject("pretender");
    p.set_user(
        &pretender,
        json!({"email": ADMIN_EMAIL, "email_verified": false}),
    )
    .await;
    let (cookie, _) = sign_in(&app, &pretender, "/").await;
    let me: serde_json::Value = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "user", "{me}");

    // The admin group makes an admin.
    let grouped = subject("grouped");
    p.set_user(&grouped, json!({"groups": [ADMIN_GROUP, "other"]}))
        .await;
    let (cookie, _) = sign_in(&app, &grouped, "/").await;
    let me: serde_json::Value = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin", "{me}");

    // Out of the group at the provider: the next sign-in demotes.
    p.set_user(&grouped, json!({"groups": ["other"]})).await;
    let (cookie, _) = sign_in(&app, &grouped, "/").await;
    let me: serde_json::Value = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "user", "{me}");
}

async fn signin_refusals(b: Backend) {
    let app = app_with_signin(b).await;
    let p = provider();
    let sub = subject("mallory");

    // No state, an unknown state (with a matching cookie), a state that is
    // not this browser's (no login cookie, or another one).
    let started = begin(&app, "/").await;
    let redirect = p.authorize(&started.authorization_url, &sub).await;
    let code = reqwest::Url::parse(&redirect)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let no_state = format!("{PUBLIC}/auth/callback?code={code}");
    assert_refused(
        &callback(&app, &no_state, Some(&started.login_cookie)).await,
        "state",
    );
    let forged = format!("{PUBLIC}/auth/callback?code={code}&state=forged");
    assert_refused(&callback(&app, &forged, Some("forged")).await, "state");
    assert_refused(&callback(&app, &redirect, None).await, "state");
    assert_refused(&callback(&app, &redirect, Some("another")).await, "state");
    // None of that spent the login: the real callback still works once.
    let r = callback(&app, &redirect, Some(&started.login_cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie_value(r.headers(), "keygate_session").is_some());
    // Replayed: the state is spent.
    assert_refused(
        &callback(&app, &redirect, Some(&started.login_cookie)).await,
        "state",
    );

    // A reused code under a fresh state: the provider refuses it.
    let fresh = begin(&app, "/").await;
    let reused = format!(
        "{PUBLIC}/auth/callback?code={code}&state={}",
        fresh.login_cookie
    );
    assert_refused(
        &callback(&app, &reused, Some(&fresh.login_cookie)).await,
        "code",
    );

    // A code from one login delivered with another login's state (code
    // injection): the ID token carries the first login's nonce.
    let first = begin(&app, "/").await;
    let second = begin(&app, "/").await;
    let first_redirect = p.authorize(&first.authorization_url, &sub).await;
    let first_code = reqwest::Url::parse(&first_redirect)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let injected = format!(
        "{PUBLIC}/auth/callback?code={first_code}&state={}",
        second.login_cookie
    );
    assert_refused(
        &callback(&app, &injected, Some(&second.login_cookie)).await,
        "nonce",
    );

    // The provider's own error (the person declined): no code, the state
    // is spent all the same.
    let declined = begin(&app, "/").await;
    let redirect = format!(
        "{PUBLIC}/auth/callback?error=access_denied&state={}",
        declined.login_cookie
    );
    assert_refused(
        &callback(&app, &redirect, Some(&declined.login_cookie)).await,
        "provider",
    );
    // …which spent that state too.
    let late = format!(
        "{PUBLIC}/auth/callback?code=x&state={}",
        declined.login_cookie
    );
    assert_refused(
        &callback(&app, &late, Some(&declined.login_cookie)).await,
        "state",
    );

    // Only the one successful sign-in opened a session.
    let db = &app.server.as_ref().unwrap().state.db;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn signin_next_is_local(b: Backend) {
    let app = app_with_signin(b).await;
    let sub = subject("nextie");
    for (next, landing) in [
        ("/admin/users?page=2", "/admin/users?page=2"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\t/evil.example", "/"),
    ] {
        let (_, landed) = sign_in(&app, &sub, next).await;
        assert_eq!(landed, landing, "next {next:?}");
    }
}

/// A login started on one replica finishes on another; a session opened on
/// one is honoured by the other, and ended by either.
async fn signin_across_replicas(b: Backend) {
    let one = app_with_signin(b).await;
    let oidc = provider().config();
    let two = TestApp::start_on(one.db.clone(), move |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.oidc = Some(oidc);
    })
    .await;
    let p = provider();
    let sub = subject("roamer");
    let started = begin(&one, "/servers").await;
    let redirect = p.authorize(&started.authorization_url, &sub).await;
    let r = callback(&two, &redirect, Some(&started.login_cookie)).await;
    assert_eq!(location(r.headers()), "/servers");
    let cookie = set_cookie_value(r.headers(), "keygate_session").unwrap();
    for app in [&one, &two] {
        let r = with_session(Method::GET, app, "/api/me", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = with_session(Method::POST, &two, "/auth/logout", &cookie)
        .header("origin", PUBLIC)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = with_session(Method::GET, &one, "/api/me", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn signin_provider_down(b: Backend) {
    let dead = format!(
        "http://127.0.0.1:{}",
        keygate_test_support::ports::free_port()
    );
    let mut oidc = provider().config();
    oidc.issuer = dead;
    let app = TestApp::start_with(b, move |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.oidc = Some(oidc);
    })
    .await;
    let r = browser()
        .get(format!("{}/auth/login?next=/x", app.base))
        .send()
        .await
        .unwrap();
    assert_refused(&r, "provider");
}

/// `/auth/login` needs no credential, so the unfinished logins it records
/// are capped; at the cap the oldest make room, so a flood of unfinished
/// logins never locks people out of signing in.
async fn signin_pending_cap(b: Backend) {
    let app = app_with_signin(b).await;
    let pool = app.server.as_ref().unwrap().state.db.pool.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fill = |created_at: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO pending_logins (id, nonce, pkce_verifier, next_path, created_at) \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
                 SELECT 'filler-' || i, 'n', 'v', '/', $1 FROM n",
            )
            .bind(created_at)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    fill(now).await;
    let (_, landed) = sign_in(&app, &subject("patient"), "/after").await;
    assert_eq!(landed, "/after");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_logins")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The login made room for itself (one filler out) and then finished.
    assert_eq!(count, MAX_PENDING - 1);
}

const MAX_PENDING: i64 = keygate_control_plane::login::MAX_PENDING_LOGINS;

/// Without a client id there is no OIDC sign-in, only the admin token.
async fn signin_without_client(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app.call(Method::GET, "/auth/options", None, None).await;
    assert_eq!(r.body, json!({"oidc": false}));
    for path in ["/auth/login?next=/", "/auth/callback?code=c&state=s"] {
        let r = app.call(Method::GET, path, None, None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "OIDC sign-in is not configured");
    }
}

/// An OIDC user from before issuers were stored (subject only) is the same
/// person when they sign in through the browser.
async fn signin_issuer_migration(b: Backend) {
    let p = provider();
    let sub = subject("veteran");
    let db = std::sync::Arc::new(TestDb::new(b).await);
    {
        // The schema as migration 0002 left it, with an OIDC user.
        let app = TestApp::start_on(db.clone(), |_| {}).await;
        let pool = &app.server.as_ref().unwrap().state.db.pool;
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 3")
            .execute(pool)
            .await
            .unwrap();
        for stmt in [
            "DROP TABLE sessions",
            "DROP TABLE pending_logins",
            "DROP INDEX api_keys_by_age",
            "DROP INDEX api_keys_by_user_age",
            "ALTER TABLE users DROP COLUMN oidc_issuer",
        ] {
            sqlx::query(stmt).execute(pool).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO users (username, email, role, role_source, oidc_subject, created_at) \
             VALUES ('veteran', NULL, 'user', 'oidc', $1, 0)",
        )
        .bind(&sub)
        .execute(pool)
        .await
        .unwrap();
    }
    let oidc = p.config();
    let app = TestApp::start_on(db, move |c| {
        c.public_url = Some(PUBLIC.to_owned());
        c.oidc = Some(oidc);
    })
    .await;
    let (cookie, _) = sign_in(&app, &sub, "/").await;
    let me: serde_json::Value = with_session(Method::GET, &app, "/api/me", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "veteran", "{me}");
}
