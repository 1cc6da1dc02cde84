//! OIDC bearer JWTs against a loopback issuer (discovery + JWKS served by a
//! tiny axum app), with tokens minted here from a test-only RSA key: the real
//! verification path runs. Each test runs on SQLite and PostgreSQL.

use crate::common::*;
use axum::Json;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keygate_control_plane::config::OidcConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUDIENCE: &str = "keygate-test";
const KID: &str = "test-key-1";
const PEM: &[u8] = include_bytes!("fixtures/oidc-test-rsa.pem");

pub(crate) struct Issuer {
    url: String,
    key: EncodingKey,
    /// The JWKS being served; tests may add keys (rotation).
    jwks: Arc<Mutex<Value>>,
    /// How many times the JWKS was fetched.
    fetches: Arc<AtomicUsize>,
    /// While set, JWKS requests hang (up to 30 s) before answering.
    hang: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

fn public_jwk(key: &EncodingKey, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

/// Serves discovery and a JWKS with the fixture key's public half.
pub(crate) async fn issuer() -> Issuer {
    let key = EncodingKey::from_rsa_pem(PEM).unwrap();
    let jwks = Arc::new(Mutex::new(json!({"keys": [public_jwk(&key, KID)]})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let hang = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { Json(d) }
            }),
        )
        .route("/jwks", {
            let (jwks, fetches, hang) = (jwks.clone(), fetches.clone(), hang.clone());
            get(move || {
                fetches.fetch_add(1, Ordering::SeqCst);
                let j = jwks.lock().unwrap().clone();
                let hang = hang.clone();
                async move {
                    let until = Instant::now() + Duration::from_secs(30);
                    while hang.load(Ordering::SeqCst) && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Json(j)
                }
            })
        });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Issuer {
        url,
        key,
        jwks,
        fetches,
        hang,
        _task: task,
    }
}

impl Issuer {
    pub(crate) fn claims(&self, sub: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
    }

    pub(crate) fn mint(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

pub(crate) async fn app_with_oidc(b: Backend, iss: &Issuer) -> TestApp {
    app_with_refetch(b, iss, OidcConfig::DEFAULT_JWKS_REFETCH).await
}

async fn app_with_refetch(b: Backend, iss: &Issuer, refetch: Duration) -> TestApp {
    app_with(b, iss, |o| o.jwks_refetch_interval = refetch).await
}

/// The test OIDC configuration, adjusted by `tweak`.
async fn app_with(b: Backend, iss: &Issuer, tweak: impl FnOnce(&mut OidcConfig)) -> TestApp {
    let mut oidc = oidc_config(iss.url.clone());
    tweak(&mut oidc);
    TestApp::start_with(b, move |c| c.oidc = Some(oidc)).await
}

fn oidc_config(issuer: String) -> OidcConfig {
    OidcConfig {
        issuer,
        audience: Some(AUDIENCE.to_owned()),
        client: None,
        admin_emails: vec!["boss@example.com".to_owned()],
        admin_groups: vec!["kg-admins".to_owned()],
        trust_unverified_email: false,
        jwks_refetch_interval: OidcConfig::DEFAULT_JWKS_REFETCH,
    }
}

both_backends!(
    oidc_user_lifecycle,
    oidc_admins,
    oidc_rejections,
    oidc_key_rotation,
    oidc_email_verified,
    oidc_role_follows_claims,
    oidc_builtin_admin_fixed,
    oidc_builtin_admin_migration,
    oidc_jwk_alg_binding,
    oidc_jwks_hang,
    oidc_no_audience_no_bearer
);

/// With console sign-in only (no `--oidc-audience`), no bearer JWT is
/// accepted, however well signed: an ID token meant for the console must
/// not work as an API token.
async fn oidc_no_audience_no_bearer(b: Backend) {
    let iss = issuer().await;
    let app = app_with(b, &iss, |o| o.audience = None).await;
    let mut c = iss.claims("sub-id-token");
    c["aud"] = json!("keygate-console");
    for token in [iss.mint(&c), iss.mint(&iss.claims("sub-api"))] {
        let r = app.get("/api/me", &token).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "invalid or expired credentials",
        );
    }
    assert_eq!(
        app.get("/api/users", ADMIN).await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

async fn oidc_user_lifecycle(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let mut c = iss.claims("sub-grace");
    c["preferred_username"] = json!("grace");
    c["email"] = json!("grace@example.com");
    let grace = iss.mint(&c);

    // Created on first sight; the same user on the next request.
    let r = app.get("/api/me", &grace).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["username"], "grace");
    assert_eq!(r.body["email"], "grace@example.com");
    assert_eq!(r.body["role"], "user");
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(app.get("/api/me", &grace).await.body["id"], id);
    let users = app.get("/api/users", ADMIN).await;
    assert_eq!(users.body["items"].as_array().unwrap().len(), 2);

    // A non-admin on admin routes: 403. (The server list is hers too, cut
    // to what she reaches: nothing yet.)
    assert_eq!(
        app.get("/api/mcp-servers", &grace).await.body["items"],
        json!([])
    );
    for p in [
        "/api/users",
        "/api/mcp-servers/alpha",
        "/api/access-rules",
        "/api/admin-api-keys",
    ] {
        assert_error(
            &app.get(p, &grace).await,
            StatusCode::FORBIDDEN,
            "admin role required",
        );
    }
    let r = app
        .post("/api/users", &grace, json!({"username": "x"}))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "admin role required");

    // Her own keys work, within her access.
    app.server("alpha").await;
    app.server("beta").await;
    let r = app
        .post(
            "/api/api-keys",
            &grace,
            json!({"name": "k", "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "unknown or unreachable MCP server: alpha",
    );
    app.rule(&["alpha"], &[&format!("user:{id}")]).await;
    let r = app
        .post(
            "/api/api-keys",
            &grace,
            json!({"name": "k", "mcpServerIds": ["alpha"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["userId"], id);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let kid = r.body["id"].as_i64().unwrap();
    let r = app
        .post(
            "/api/api-keys",
            &grace,
            json!({"name": "k", "mcpServerIds": ["beta"]}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "unknown or unreachable MCP server: beta",
    );
    assert_eq!(app.get("/api/me", &key).await.body["username"], "grace");
    let r = app.get("/api/api-keys", &grace).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // The admin's keys are not hers, and hers are not the admin's.
    let (admins, _) = app.admin_key(&["*"]).await;
    assert_error(
        &app.get(&format!("/api/api-keys/{admins}"), &grace).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.delete(&format!("/api/api-keys/{admins}"), &grace).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    assert_error(
        &app.get(&format!("/api/api-keys/{kid}"), ADMIN).await,
        StatusCode::NOT_FOUND,
        "API key not found",
    );
    let r = app.delete(&format!("/api/api-keys/{kid}"), &grace).await;
    assert_eq!(r.body, json!({"deleted": true}));

    // No preferred_username: the email is the username.
    let mut c = iss.claims("sub-henry");
    c["email"] = json!("henry@example.com");
    let r = app.get("/api/me", &iss.mint(&c)).await;
    assert_eq!(r.body["username"], "henry@example.com");
    // A taken username falls back to one derived from the subject.
    let mut c = iss.claims("sub-other-grace");
    c["preferred_username"] = json!("grace");
    let r = app.get("/api/me", &iss.mint(&c)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["username"], "oidc-sub-other-grace");
}

async fn oidc_admins(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let mut c = iss.claims("sub-boss");
    c["email"] = json!("Boss@Example.com");
    c["email_verified"] = json!(true);
    let boss = iss.mint(&c);
    assert_eq!(app.get("/api/me", &boss).await.body["role"], "admin");
    assert_eq!(app.get("/api/users", &boss).await.status, StatusCode::OK);

    let mut c = iss.claims("sub-ivy");
    c["preferred_username"] = json!("ivy");
    c["groups"] = json!(["staff", "kg-admins"]);
    let ivy = iss.mint(&c);
    assert_eq!(app.get("/api/me", &ivy).await.body["role"], "admin");
    let r = app
        .post("/api/mcp-servers", &ivy, json!({"name": "gamma"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let mut c = iss.claims("sub-jo");
    c["groups"] = json!(["staff"]);
    assert_eq!(app.get("/api/me", &iss.mint(&c)).await.body["role"], "user");
}

async fn oidc_rejections(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let good = iss.claims("sub-k");
    assert_eq!(
        app.get("/api/me", &iss.mint(&good)).await.status,
        StatusCode::OK
    );

    let mut bad: Vec<(&str, String)> = Vec::new();
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    bad.push(("audience", iss.mint(&c)));
    let mut c = good.clone();
    c["iss"] = json!("http://evil.example");
    bad.push(("issuer", iss.mint(&c)));
    let mut c = good.clone();
    c["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 3600);
    bad.push(("expired", iss.mint(&c)));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("sub");
    bad.push(("no sub", iss.mint(&c)));
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("unknown-kid".to_owned());
    bad.push((
        "unknown kid",
        jsonwebtoken::encode(&h, &good, &iss.key).unwrap(),
    ));
    let mut h = Header::new(Algorithm::RS256);
    h.kid = None;
    bad.push(("no kid", jsonwebtoken::encode(&h, &good, &iss.key).unwrap()));
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(KID.to_owned());
    bad.push((
        "hmac",
        jsonwebtoken::encode(
            &h,
            &good,
            &EncodingKey::from_secret(b"guess-a-long-enough-hmac-secret-0123456789").unwrap(),
        )
        .unwrap(),
    ));
    let token = iss.mint(&good);
    let (head, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    bad.push((
        "tampered signature",
        format!("{head}.{flipped}{}", &sig[1..]),
    ));
    let mut c = good.clone();
    c["sub"] = json!("someone-else");
    let other = iss.mint(&c);
    let (_, other_payload_sig) = other.split_once('.').unwrap();
    let (good_head, _) = token.split_once('.').unwrap();
    let (other_payload, _) = other_payload_sig.split_once('.').unwrap();
    let (_, good_sig) = token.rsplit_once('.').unwrap();
    bad.push((
        "swapped payload",
        format!("{good_head}.{other_payload}.{good_sig}"),
    ));
    bad.push(("garbage", "a.b.c".to_owned()));

    for (why, token) in bad {
        let r = app.get("/api/me", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: {}", r.text);
        assert_eq!(
            r.headers["www-authenticate"], "Bearer error=\"invalid_token\"",
            "{why}"
        );
        assert_eq!(r.body["error"], "invalid or expired credentials", "{why}");
    }
    // None of them created a user.
    let r = app.get("/api/users", ADMIN).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{}", r.text);
}

/// A new signing key is picked up on its first unknown `kid`, but unknown
/// `kid`s refetch the JWKS at most once per interval.
async fn oidc_key_rotation(b: Backend) {
    let iss = issuer().await;
    let interval = Duration::from_secs(2);
    let app = app_with_refetch(b, &iss, interval).await;
    assert_eq!(
        app.get("/api/me", &iss.mint(&iss.claims("sub-r")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 1);
    let fetched_at = std::time::Instant::now();

    // The issuer rotates in a second key.
    let key2 = EncodingKey::from_rsa_pem(include_bytes!("fixtures/oidc-test-rsa-2.pem")).unwrap();
    iss.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(public_jwk(&key2, "test-key-2"));
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("test-key-2".to_owned());
    let token2 = jsonwebtoken::encode(&h, &iss.claims("sub-r"), &key2).unwrap();

    // Within the interval, unknown kids do not refetch (checked only while
    // the interval has surely not passed).
    for _ in 0..5 {
        let r = app.get("/api/me", &token2).await;
        if fetched_at.elapsed() < interval {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
    }
    if fetched_at.elapsed() < interval {
        assert_eq!(iss.fetches.load(Ordering::SeqCst), 1, "rate limit");
    }
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let r = app.get("/api/me", &token2).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 2);
    // The old key still works (still published); known kids never refetch.
    assert_eq!(
        app.get("/api/me", &iss.mint(&iss.claims("sub-r")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 2);
}

/// An admin email grants admin only when the provider vouches for it:
/// `email_verified` true (a JSON bool, or the string "true"); missing is false.
async fn oidc_email_verified(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let cases = [
        ("missing", None, "user"),
        ("false", Some(json!(false)), "user"),
        ("string-false", Some(json!("false")), "user"),
        ("null", Some(Value::Null), "user"),
        ("number", Some(json!(1)), "user"),
        ("true", Some(json!(true)), "admin"),
        ("string-true", Some(json!("true")), "admin"),
    ];
    for (why, verified, want) in cases {
        let mut c = iss.claims(&format!("sub-verified-{why}"));
        c["email"] = json!("boss@example.com");
        if let Some(v) = verified {
            c["email_verified"] = v;
        }
        let r = app.get("/api/me", &iss.mint(&c)).await;
        assert_eq!(r.status, StatusCode::OK, "{why}: {}", r.text);
        assert_eq!(r.body["role"], want, "email_verified {why}");
    }

    // The operator's explicit opt-out, for providers that omit the claim.
    let trusting = app_with(b, &iss, |o| o.trust_unverified_email = true).await;
    let mut c = iss.claims("sub-trusted");
    c["email"] = json!("boss@example.com");
    let r = trusting.get("/api/me", &iss.mint(&c)).await;
    assert_eq!(r.body["role"], "admin", "{}", r.text);
    c["sub"] = json!("sub-trusted-other");
    c["email"] = json!("someone@example.com");
    assert_eq!(
        trusting.get("/api/me", &iss.mint(&c)).await.body["role"],
        "user"
    );
}

/// Role from `claims` for a token of `sub` (groups decide).
fn group_claims(iss: &Issuer, sub: &str, admin: bool) -> Value {
    let mut c = iss.claims(sub);
    c["preferred_username"] = json!(sub);
    c["groups"] = if admin {
        json!(["staff", "kg-admins"])
    } else {
        json!(["staff"])
    };
    c
}

/// An OIDC user's role follows the current token both ways; a role set
/// through the API pins it until an admin hands it back to the provider.
async fn oidc_role_follows_claims(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let as_admin = iss.mint(&group_claims(&iss, "sub-liz", true));
    let as_user = iss.mint(&group_claims(&iss, "sub-liz", false));

    let r = app.get("/api/me", &as_admin).await;
    assert_eq!(r.body["role"], "admin", "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    let user_path = format!("/api/users/{id}");
    // Removed from the admin group at the provider: demoted on the next request.
    let r = app.get("/api/me", &as_user).await;
    assert_eq!(r.body["role"], "user", "demotion: {}", r.text);
    assert_eq!(app.get(&user_path, ADMIN).await.body["roleSource"], "oidc");
    assert_error(
        &app.get("/api/users", &as_user).await,
        StatusCode::FORBIDDEN,
        "admin role required",
    );
    assert_eq!(app.get(&user_path, ADMIN).await.body["role"], "user");
    // Back in the group: promoted again.
    assert_eq!(app.get("/api/me", &as_admin).await.body["role"], "admin");

    // An admin pins the role through the API: the token no longer decides.
    let r = app.patch(&user_path, ADMIN, json!({"role": "user"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["role"], "user");
    assert_eq!(r.body["roleSource"], "api");
    assert_eq!(app.get("/api/me", &as_admin).await.body["role"], "user");
    let r = app.patch(&user_path, ADMIN, json!({"role": "admin"})).await;
    assert_eq!(r.body["roleSource"], "api", "{}", r.text);
    assert_eq!(app.get("/api/me", &as_user).await.body["role"], "admin");

    // Handed back to the provider: the next token decides again.
    let r = app
        .patch(&user_path, ADMIN, json!({"roleSource": "oidc"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["roleSource"], "oidc");
    assert_eq!(app.get("/api/me", &as_user).await.body["role"], "user");
    assert_eq!(app.get("/api/me", &as_admin).await.body["role"], "admin");
    // Pinning without changing the role keeps the current one.
    let r = app
        .patch(&user_path, ADMIN, json!({"roleSource": "api"}))
        .await;
    assert_eq!(
        (r.body["role"].clone(), r.body["roleSource"].clone()),
        (json!("admin"), json!("api"))
    );
    assert_eq!(app.get("/api/me", &as_user).await.body["role"], "admin");

    // Contradictions and impossible sources are refused.
    assert_error(
        &app.patch(
            &user_path,
            ADMIN,
            json!({"role": "user", "roleSource": "oidc"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "role cannot be set while handing it to the identity provider",
    );
    assert_error_contains(
        &app.patch(&user_path, ADMIN, json!({"roleSource": "builtin"}))
            .await,
        StatusCode::BAD_REQUEST,
        "roleSource",
    );
    let api_user = app.user("mona").await;
    let r = app.get(&format!("/api/users/{api_user}"), ADMIN).await;
    assert_eq!(r.body["roleSource"], "api", "{}", r.text);
    assert_error(
        &app.patch(
            &format!("/api/users/{api_user}"),
            ADMIN,
            json!({"roleSource": "oidc"}),
        )
        .await,
        StatusCode::CONFLICT,
        "user has no OIDC identity",
    );
}

/// The built-in admin is a fixed identity: it cannot be deleted, its role
/// cannot be changed, and no OIDC sign-in takes its name or is mapped to it.
async fn oidc_builtin_admin_fixed(b: Backend) {
    let iss = issuer().await;
    let app = app_with_oidc(b, &iss).await;
    let admin_id = app.get("/api/me", ADMIN).await.body["id"].as_i64().unwrap();
    let path = format!("/api/users/{admin_id}");
    let r = app.get(&path, ADMIN).await;
    assert_eq!(r.body["username"], "admin", "{}", r.text);

    // Neither the admin token nor an OIDC admin can delete or re-role it.
    let oidc_admin = iss.mint(&group_claims(&iss, "sub-nora", true));
    for token in [ADMIN, oidc_admin.as_str()] {
        assert_error(
            &app.delete(&path, token).await,
            StatusCode::CONFLICT,
            "the built-in admin cannot be deleted",
        );
        for body in [
            json!({"role": "user"}),
            json!({"role": "admin"}),
            json!({"roleSource": "oidc"}),
            json!({"roleSource": "api"}),
        ] {
            assert_error(
                &app.patch(&path, token, body).await,
                StatusCode::CONFLICT,
                "the built-in admin's role cannot be changed",
            );
        }
    }
    let r = app.get(&path, ADMIN).await;
    assert_eq!(r.body["role"], "admin", "{}", r.text);
    assert_eq!(r.body["roleSource"], "builtin");

    // Sign-ins asking for the built-in admin's names get their own user.
    for (sub, name) in [
        ("sub-squat-1", "admin"),
        ("sub-squat-2", "ADMIN"),
        ("sub-squat-3", "keygate-admin"),
        // Names that only look like it (found by an attacker's review).
        ("sub-squat-4", "admin\u{200b}"),
        ("sub-squat-5", "admin\u{feff}"),
        ("sub-squat-6", "\u{430}dmin"),
        ("sub-squat-7", "\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}"),
        ("sub-squat-8", "\u{202e}nimda"),
        ("sub-squat-9", "adrnin"),
    ] {
        let mut c = group_claims(&iss, sub, true);
        c["preferred_username"] = json!(name);
        let r = app.get("/api/me", &iss.mint(&c)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_ne!(r.body["id"], admin_id, "{name}");
        assert_eq!(r.body["username"], format!("oidc-{sub}"), "{name}");
    }

    // An admin cannot create one through the API either.
    for name in ["\u{430}dmin", "Keygate-\u{430}dmin-2"] {
        let r = app
            .post("/api/users", ADMIN, json!({"username": name}))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{name}: {}", r.text);
    }
    // Invisible characters make no username.
    let r = app
        .post("/api/users", ADMIN, json!({"username": "bob\u{200b}"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // The admin token still acts as the built-in admin, and its keys are its own.
    let (kid, key) = app.admin_key(&["*"]).await;
    assert!(key.starts_with(&format!("ok1-{admin_id}-{kid}-")), "{key}");
    assert_eq!(app.get("/api/me", &key).await.body["id"], admin_id);
    // So on another replica of the same database.
    let url = iss.url.clone();
    let other = TestApp::start_on(app.db.clone(), |c| c.oidc = Some(oidc_config(url))).await;
    let r = other.get("/api/me", ADMIN).await;
    assert_eq!(
        (r.body["id"].as_i64(), r.body["username"].as_str()),
        (Some(admin_id), Some("admin"))
    );
}

/// A database from before the built-in mark: the `admin` user without an
/// OIDC subject becomes the built-in admin; an `admin` that came from an OIDC
/// sign-in (a squatter) stays an OIDC user, and the built-in admin is created
/// anew as `keygate-admin`.
async fn oidc_builtin_admin_migration(b: Backend) {
    for squatted in [false, true] {
        let db = Arc::new(TestDb::new(b).await);
        let pool = schema_0001(b, &db.url).await;
        let (role, subject) = if squatted {
            ("user", Some("sub-squatter"))
        } else {
            ("admin", None)
        };
        let old: (i64,) = sqlx::query_as(
            "INSERT INTO users (username, email, role, oidc_subject, created_at) \
             VALUES ('admin', NULL, $1, $2, 0) RETURNING id",
        )
        .bind(role)
        .bind(subject)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;

        let iss = issuer().await;
        let url = iss.url.clone();
        let app = TestApp::start_on(db, |c| c.oidc = Some(oidc_config(url))).await;
        let me = app.get("/api/me", ADMIN).await;
        let admin_id = me.body["id"].as_i64().unwrap();
        let r = app.get(&format!("/api/users/{admin_id}"), ADMIN).await;
        assert_eq!(r.body["roleSource"], "builtin", "{}", r.text);
        assert_eq!(r.body["role"], "admin");
        if !squatted {
            assert_eq!(admin_id, old.0);
            assert_eq!(r.body["username"], "admin");
            continue;
        }
        assert_ne!(admin_id, old.0, "the squatter is not the built-in admin");
        assert_eq!(r.body["username"], "keygate-admin");
        // The squatter signs in as itself, an ordinary OIDC user.
        let mut c = iss.claims("sub-squatter");
        c["preferred_username"] = json!("admin");
        let r = app.get("/api/me", &iss.mint(&c)).await;
        assert_eq!(r.body["id"], old.0, "{}", r.text);
        assert_eq!(r.body["role"], "user");
        let r = app.get(&format!("/api/users/{}", old.0), ADMIN).await;
        assert_eq!(r.body["roleSource"], "oidc", "{}", r.text);
        let r = app.delete(&format!("/api/users/{}", old.0), ADMIN).await;
        assert_eq!(r.body, json!({"deleted": true}), "{}", r.text);
        assert_eq!(app.get("/api/me", ADMIN).await.body["id"], admin_id);
    }
}

/// Creates the schema as the first migration left it (an upgraded install).
async fn schema_0001(b: Backend, url: &str) -> sqlx::AnyPool {
    use sqlx::migrate::{MigrateDatabase, Migrator};
    sqlx::any::install_default_drivers();
    let folder = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = std::env::temp_dir().join(format!(
        "keygate_0001_{folder}_{}_{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder)
        .join("0001_initial.sql");
    std::fs::copy(&src, dir.join("0001_initial.sql")).unwrap();
    if b == Backend::Sqlite {
        sqlx::Any::create_database(url).await.unwrap();
    }
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    pool
}

/// A JWK's `alg`, when present, binds its key to that algorithm; a key of
/// the wrong type for the token's algorithm is refused too.
async fn oidc_jwk_alg_binding(b: Backend) {
    let iss = issuer().await;
    // The same RSA key published again without `alg`.
    let mut loose = public_jwk(&iss.key, "no-alg");
    loose.as_object_mut().unwrap().remove("alg");
    // And once more, marked as an encryption key.
    let mut enc = loose.clone();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    iss.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .extend([loose, enc]);
    let app = app_with_oidc(b, &iss).await;
    let claims = iss.claims("sub-alg");
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, &claims, key).unwrap()
    };

    let r = app
        .get("/api/me", &sign(Algorithm::RS256, KID, &iss.key))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The JWK says RS256: other algorithms with the same key are refused.
    for alg in [
        Algorithm::PS256,
        Algorithm::RS512,
        Algorithm::RS384,
        Algorithm::PS512,
    ] {
        let r = app.get("/api/me", &sign(alg, KID, &iss.key)).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{alg:?} token against an RS256 JWK: {}",
            r.text
        );
        assert_eq!(r.body["error"], "invalid or expired credentials");
    }
    // A JWK without `alg` takes any RSA algorithm.
    for alg in [Algorithm::RS256, Algorithm::PS256, Algorithm::RS512] {
        let r = app.get("/api/me", &sign(alg, "no-alg", &iss.key)).await;
        assert_eq!(r.status, StatusCode::OK, "{alg:?}: {}", r.text);
    }
    // An encryption key never verifies a signature.
    let r = app
        .get("/api/me", &sign(Algorithm::RS256, "enc", &iss.key))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "use=enc: {}", r.text);
    // An ES256 token naming an RSA key: the key type does not fit.
    let ec = EncodingKey::from_ec_pem(include_bytes!("fixtures/oidc-test-ec.pem")).unwrap();
    for kid in ["no-alg", KID] {
        let r = app.get("/api/me", &sign(Algorithm::ES256, kid, &ec)).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "invalid or expired credentials",
        );
    }
}

/// `GET /api/me` with `token`, in its own task.
fn spawn_me(app: &TestApp, token: String) -> tokio::task::JoinHandle<StatusCode> {
    let rb = app
        .http
        .get(format!("{}/api/me", app.base))
        .bearer_auth(token);
    tokio::spawn(async move { rb.send().await.expect("request").status() })
}

/// While a JWKS fetch hangs, requests whose `kid` is cached answer at once,
/// and other unknown `kid`s fail fast instead of queueing behind it.
async fn oidc_jwks_hang(b: Backend) {
    let iss = issuer().await;
    let app = app_with_refetch(b, &iss, Duration::from_millis(100)).await;
    let cached = iss.mint(&iss.claims("sub-h"));
    assert_eq!(app.get("/api/me", &cached).await.status, StatusCode::OK);
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The issuer now hangs; an unknown kid starts a fetch that hangs.
    iss.hang.store(true, Ordering::SeqCst);
    let unknown = |n: usize| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(format!("unknown-{n}"));
        jsonwebtoken::encode(&h, &iss.claims("sub-h"), &iss.key).unwrap()
    };
    let stuck = spawn_me(&app, unknown(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while iss.fetches.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the unknown kid never fetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A cached kid does not wait on it.
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = app.get("/api/me", &cached).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "a cached kid waited {:?} on a hanging JWKS fetch",
            t0.elapsed()
        );
    }

    // Other unknown kids, concurrently: 401 soon, not one 10 s fetch each.
    let t0 = Instant::now();
    let waiters: Vec<_> = (1..=4).map(|n| spawn_me(&app, unknown(n))).collect();
    for w in waiters {
        let left = Duration::from_secs(3).saturating_sub(t0.elapsed());
        let status = tokio::time::timeout(left, w)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "an unknown kid still waited after {:?} behind a hanging JWKS fetch",
                    t0.elapsed()
                )
            })
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 2, "one fetch in flight");
    assert!(!stuck.is_finished(), "the first fetch should still hang");

    // The issuer recovers: the stuck request ends (still an unknown kid).
    iss.hang.store(false, Ordering::SeqCst);
    let status = tokio::time::timeout(Duration::from_secs(15), stuck)
        .await
        .expect("the stuck request ends")
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
