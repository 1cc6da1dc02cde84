//! A real OpenID provider for the sign-in tests (oidc-provider-mock from the
//! project's venv, started once per test binary), and a browser stand-in
//! that walks the redirect flow with reqwest: `/auth/login` → the provider's
//! authorization form → `/auth/callback`, carrying cookies by hand.

use crate::common::TestApp;
use keygate_control_plane::config::{OidcClientConfig, OidcConfig};
use keygate_test_support::process::ManagedProcess;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// The public URL the control plane is configured with in these tests. No
/// one listens there: the tests send its requests to the app's real address
/// and name this origin in `Origin`.
pub const PUBLIC: &str = "http://keygate.test";
pub const CLIENT_ID: &str = "keygate-console";
pub const CLIENT_SECRET: &str = "console-secret";
pub const ADMIN_EMAIL: &str = "boss@example.com";
pub const ADMIN_GROUP: &str = "kg-admins";

pub struct Provider {
    pub issuer: String,
    _process: ManagedProcess,
}

static PROVIDER: OnceLock<Provider> = OnceLock::new();

/// The provider, started on first use. Its process lives as long as the
/// test binary (it dies with it). Without the venv's Python the tests fail
/// here, loudly.
pub fn provider() -> &'static Provider {
    PROVIDER.get_or_init(|| tokio::task::block_in_place(start))
}

fn start() -> Provider {
    let python = std::env::var_os("KEYGATE_PYTHON").unwrap_or_else(|| {
        panic!(
            "KEYGATE_PYTHON is not set. The sign-in tests run a real OpenID provider \
             (oidc-provider-mock, pinned in tests/requirements.txt) with the project's \
             venv: run them with `cargo xtask test`, which installs it and sets \
             KEYGATE_PYTHON (or set KEYGATE_PYTHON=<repo>/.venv/bin/python after that)."
        )
    });
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/oidc_provider.py");
    let log =
        std::env::temp_dir().join(format!("keygate_oidc_provider_{}.log", std::process::id()));
    let mut command = std::process::Command::new(python);
    command.arg(script);
    let mut process = ManagedProcess::spawn("oidc-provider-mock", command, &log)
        .unwrap_or_else(|e| panic!("{e:#}"));
    process.wait_for_log("listening on ", Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    let port: u16 = text
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the provider's log:\n{text}"));
    Provider {
        issuer: format!("http://127.0.0.1:{port}"),
        _process: process,
    }
}

/// A client that never follows redirects: each hop is looked at.
pub fn browser() -> reqwest::Client {
    keygate_test_support::ensure_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl Provider {
    /// Sets the claims the provider puts in `sub`'s ID token.
    pub async fn set_user(&self, sub: &str, claims: Value) {
        let r = browser()
            .put(format!("{}/users/{sub}", self.issuer))
            .json(&claims)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    }

    /// Submits the provider's authorization form as `sub`; returns where the
    /// provider sends the browser back to (the redirect URI with code and state).
    pub async fn authorize(&self, authorization_url: &str, sub: &str) -> String {
        assert!(
            authorization_url.starts_with(&self.issuer),
            "{authorization_url}"
        );
        let r = browser()
            .post(authorization_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("sub", sub)]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{:?}", r.text().await);
        location(r.headers())
    }

    /// The control plane's OIDC settings for this provider: sign-in for
    /// `CLIENT_ID`, admins by `ADMIN_EMAIL` (verified) or `ADMIN_GROUP`.
    pub fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer: self.issuer.clone(),
            audience: None,
            client: Some(OidcClientConfig {
                id: CLIENT_ID.to_owned(),
                secret: Some(CLIENT_SECRET.into()),
                scopes: OidcClientConfig::DEFAULT_SCOPES.map(String::from).to_vec(),
            }),
            admin_emails: vec![ADMIN_EMAIL.to_owned()],
            admin_groups: vec![ADMIN_GROUP.to_owned()],
            trust_unverified_email: false,
            jwks_refetch_interval: OidcConfig::DEFAULT_JWKS_REFETCH,
        }
    }
}

/// `application/x-www-form-urlencoded`, for a form body or a query.
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

pub fn location(h: &HeaderMap) -> String {
    h.get(LOCATION)
        .unwrap_or_else(|| panic!("no Location in {h:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The full `Set-Cookie` line for cookie `name`, if the answer sets it.
pub fn set_cookie_line(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value the answer gives cookie `name`, when it sets a non-empty one.
pub fn set_cookie_value(h: &HeaderMap, name: &str) -> Option<String> {
    let line = set_cookie_line(h, name)?;
    let value = line[name.len() + 1..].split(';').next()?.to_owned();
    (!value.is_empty()).then_some(value)
}

/// What `/auth/login` answered: the provider URL and the login cookie.
pub struct Started {
    pub authorization_url: String,
    pub login_cookie: String,
}

/// `GET /auth/login?next=…` as a browser.
pub async fn begin(app: &TestApp, next: &str) -> Started {
    let r = browser()
        .get(format!(
            "{}/auth/login?{}",
            app.base,
            form(&[("next", next)])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{:?}", r.text().await);
    let login_cookie = set_cookie_value(r.headers(), "keygate_login").expect("login cookie");
    Started {
        authorization_url: location(r.headers()),
        login_cookie,
    }
}

/// The callback as the browser reaches it: the provider's redirect, sent to
/// the app's real address, with `login_cookie` if given.
pub async fn callback(
    app: &TestApp,
    redirect: &str,
    login_cookie: Option<&str>,
) -> reqwest::Response {
    let path = redirect
        .strip_prefix(PUBLIC)
        .unwrap_or_else(|| panic!("the provider sent the browser elsewhere: {redirect}"));
    assert!(path.starts_with("/auth/callback?"), "{path}");
    let mut req = browser().get(format!("{}{path}", app.base));
    if let Some(c) = login_cookie {
        req = req.header("cookie", format!("keygate_login={c}"));
    }
    req.send().await.unwrap()
}

/// A whole sign-in as `sub`; returns the session cookie's value and where
/// the browser lands.
pub async fn sign_in(app: &TestApp, sub: &str, next: &str) -> (String, String) {
    let p = provider();
    let started = begin(app, next).await;
    let redirect = p.authorize(&started.authorization_url, sub).await;
    let r = callback(app, &redirect, Some(&started.login_cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let landed = location(r.headers());
    let cookie = set_cookie_value(r.headers(), "keygate_session")
        .unwrap_or_else(|| panic!("no session cookie; landed on {landed}"));
    (cookie, landed)
}

/// Asserts a refused callback: 303 to `/signin?error=<code>` and no session.
pub fn assert_refused(r: &reqwest::Response, code: &str) {
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(r.headers()), format!("/signin?error={code}"));
    assert_eq!(
        set_cookie_value(r.headers(), "keygate_session"),
        None,
        "a refused sign-in set a session cookie"
    );
}

/// A request with the session cookie (and no `Authorization`).
pub fn with_session(
    method: reqwest::Method,
    app: &TestApp,
    path: &str,
    cookie: &str,
) -> reqwest::RequestBuilder {
    browser()
        .request(method, format!("{}{path}", app.base))
        .header("cookie", format!("keygate_session={cookie}"))
}
