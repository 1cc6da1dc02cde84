//! Browser sessions: opening one at sign-in, resolving the cookie on every
//! request, ending it at sign-out; the cookies themselves; and the
//! same-origin check that cookie-authenticated writes must pass (CSRF).
//!
//! The cookie holds 32 random bytes (base64url); the database holds only
//! their SHA-256, so a copy of the database opens no session. Sessions live
//! in the database, so every replica honours them and ending one (sign-out,
//! deleting the user) ends it everywhere. The user's role is read with the
//! session on every request, so a demotion takes effect at once. A session
//! opened with the admin token carries a fingerprint of that token and ends
//! when the configured token changes.

use crate::auth::StaticToken;
use crate::config::{Config, SessionConfig};
use crate::db::sessions::{self as store, NewSession, SessionKind, SessionRow};
use crate::db::{Db, users::UserRow};
use crate::domain::now_unix;
use crate::error::ApiError;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, Method};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name (the console contract).
pub const SESSION_COOKIE: &str = "keygate_session";
/// The cookie binding an OIDC login to the browser that started it.
pub const LOGIN_COOKIE: &str = "keygate_login";
/// Where the login cookie is sent: only to the callback.
pub const CALLBACK_PATH: &str = "/auth/callback";

/// `last_seen_at` is written at most this often per session, not on every
/// request; the idle lifetime is enforced to this precision.
const TOUCH_EVERY_SECS: i64 = 60;

/// How sessions behave here: their lifetimes, the cookie's `Secure` flag and
/// the console's origin.
#[derive(Debug, Clone)]
pub struct Sessions {
    idle_secs: i64,
    max_secs: i64,
    /// Set on every cookie when the public URL is https.
    secure: bool,
    /// The console's origin (`https://host[:port]`) from `--public-url`;
    /// `None`: `http://` + the request's `Host`.
    origin: Option<String>,
}

/// A random secret as base64url, and the hex SHA-256 the database keys it by.
pub fn new_secret() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("OS random source failed: {e}")))?;
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let id = digest_hex(&value);
    Ok((value, id))
}

/// The hex SHA-256 of a browser-held secret: the database key of a session
/// (cookie value) or a pending login (`state`).
pub fn digest_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// True for methods that change nothing (no same-origin check needed).
pub fn is_safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The values of the cookie `name` in the request's `Cookie` headers.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
        .collect()
}

/// What a request says about one cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieValue<'a> {
    Absent,
    One(&'a str),
    /// Sent more than once (one planted by a sibling site for a narrower
    /// path, say): refused rather than guessed between.
    Ambiguous,
}

/// The value of cookie `name`, if the request sends exactly one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> CookieValue<'a> {
    match cookie_values(headers, name).as_slice() {
        [] => CookieValue::Absent,
        [one] => CookieValue::One(one),
        _ => CookieValue::Ambiguous,
    }
}

impl Sessions {
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let SessionConfig { idle, max } = c.sessions;
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let (secure, origin) = match &c.public_url {
            Some(u) => {
                let url = public_url(u)?;
                (
                    url.scheme() == "https",
                    Some(url.origin().ascii_serialization()),
                )
            }
            None => (false, None),
        };
        Ok(Self {
            idle_secs: secs(idle).max(1),
            max_secs: secs(max).max(1),
            secure,
            origin,
        })
    }

    fn cookie_attrs(&self, path: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("HttpOnly; SameSite=Lax; Path={path}{secure}")
    }

    /// `Set-Cookie` for a new session. No `Max-Age`: the browser forgets it
    /// when it closes; the server's lifetimes apply either way.
    pub fn session_cookie(&self, value: &str) -> HeaderValue {
        header(format!(
            "{SESSION_COOKIE}={value}; {}",
            self.cookie_attrs("/")
        ))
    }

    pub fn clear_session_cookie(&self) -> HeaderValue {
        header(format!(
            "{SESSION_COOKIE}=; Max-Age=0; {}",
            self.cookie_attrs("/")
        ))
    }

    /// `Set-Cookie` binding a login's `state` to this browser until the callback.
    pub fn login_cookie(&self, state: &str, max_age_secs: i64) -> HeaderValue {
        header(format!(
            "{LOGIN_COOKIE}={state}; Max-Age={max_age_secs}; {}",
            self.cookie_attrs(CALLBACK_PATH)
        ))
    }

    pub fn clear_login_cookie(&self) -> HeaderValue {
        header(format!(
            "{LOGIN_COOKIE}=; Max-Age=0; {}",
            self.cookie_attrs(CALLBACK_PATH)
        ))
    }

    /// The CSRF rule: `Origin` must be the console's origin; with no
    /// `Origin`, `Sec-Fetch-Site` must say `same-origin`. Anything else, a
    /// missing `Host` or `Origin: null` included, is cross-site.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        let expected = match &self.origin {
            Some(o) => o.clone(),
            None => match headers.get(HOST).and_then(|h| h.to_str().ok()) {
                Some(host) => format!("http://{host}"),
                None => return false,
            },
        };
        match headers.get(ORIGIN) {
            Some(origin) => origin
                .to_str()
                .is_ok_and(|o| o.eq_ignore_ascii_case(&expected)),
            None => headers
                .get("sec-fetch-site")
                .is_some_and(|s| s.as_bytes() == b"same-origin"),
        }
    }

    /// Opens a session for `user` and returns the cookie value. With the
    /// admin token, the session is bound to it (`admin_token`).
    pub async fn open(
        &self,
        db: &Db,
        user: &UserRow,
        kind: SessionKind,
        admin_token: Option<&StaticToken>,
    ) -> Result<String, ApiError> {
        let (value, id) = new_secret()?;
        let fingerprint = match (kind, admin_token) {
            (SessionKind::AdminToken, Some(t)) => Some(t.fingerprint(&id)),
            (SessionKind::AdminToken, None) => {
                return Err(ApiError::Internal(
                    "admin-token session without an admin token".into(),
                ));
            }
            (SessionKind::Oidc, _) => None,
        };
        let now = now_unix();
        let mut conn = db.conn().await?;
        store::prune(
            &mut conn,
            now.saturating_sub(self.max_secs),
            now.saturating_sub(self.idle_secs),
        )
        .await?;
        store::insert(
            &mut conn,
            NewSession {
                id: &id,
                user_id: user.id,
                kind,
                admin_token_fingerprint: fingerprint.as_deref(),
                now,
            },
        )
        .await?;
        tracing::info!(
            user_id = user.id,
            credential = kind.as_str(),
            "session opened"
        );
        Ok(value)
    }

    /// The live session a cookie value names, with its user as of now. A
    /// session past a lifetime, opened with an admin token that is no longer
    /// the configured one, or opened through OIDC sign-in that is no longer
    /// configured, is deleted and refused.
    pub async fn resolve(
        &self,
        db: &Db,
        value: &str,
        admin_token: Option<&StaticToken>,
        oidc_sign_in: bool,
    ) -> Result<(UserRow, SessionKind), ApiError> {
        let id = digest_hex(value);
        let mut conn = db.conn().await?;
        let row = store::get(&mut conn, &id)
            .await?
            .ok_or(ApiError::InvalidToken)?;
        let now = now_unix();
        match self.check(&row, &id, now, admin_token, oidc_sign_in) {
            Some(kind) => {
                if now - row.last_seen_at >= TOUCH_EVERY_SECS {
                    store::touch(&mut conn, &id, now).await?;
                }
                Ok((row.user, kind))
            }
            None => {
                store::delete(&mut conn, &id).await?;
                Err(ApiError::InvalidToken)
            }
        }
    }

    fn check(
        &self,
        row: &SessionRow,
        id: &str,
        now: i64,
        admin_token: Option<&StaticToken>,
        oidc_sign_in: bool,
    ) -> Option<SessionKind> {
        if now - row.session_created_at >= self.max_secs || now - row.last_seen_at >= self.idle_secs
        {
            return None;
        }
        match row.kind()? {
            SessionKind::AdminToken => {
                let stored = row.admin_token_fingerprint.as_deref()?;
                let current = admin_token?.fingerprint(id);
                let same: bool = stored.as_bytes().ct_eq(current.as_bytes()).into();
                (same && row.user.role_source() == crate::domain::RoleSource::Builtin)
                    .then_some(SessionKind::AdminToken)
            }
            SessionKind::Oidc => oidc_sign_in.then_some(SessionKind::Oidc),
        }
    }

    /// Ends the session a cookie value names, if any.
    pub async fn end(&self, db: &Db, value: &str) -> Result<(), ApiError> {
        let mut conn = db.conn().await?;
        store::delete(&mut conn, &digest_hex(value)).await?;
        Ok(())
    }
}

/// Parses `--public-url`: absolute http(s), no credentials, query or fragment.
pub fn public_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("--public-url {raw:?}: {e}"))?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if ok {
        Ok(url)
    } else {
        Err(format!(
            "--public-url {raw:?} must be an http(s) URL without credentials, query or fragment"
        ))
    }
}

/// Every value built here is ASCII without control characters (base64url
/// secrets, fixed attributes), so this cannot fail; an empty value is the
/// harmless fallback.
fn header(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sessions(public: Option<&str>) -> Sessions {
        let mut c = Config::new("sqlite::memory:");
        c.public_url = public.map(str::to_owned);
        Sessions::from_config(&c).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_rule() {
        let s = sessions(Some("https://keys.example.com/"));
        assert!(s.same_origin(&headers(&[("origin", "https://keys.example.com")])));
        assert!(!s.same_origin(&headers(&[("origin", "http://keys.example.com")])));
        assert!(!s.same_origin(&headers(&[("origin", "https://evil.example")])));
        assert!(!s.same_origin(&headers(&[("origin", "null")])));
        assert!(s.same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!s.same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!s.same_origin(&headers(&[])));
        // An Origin decides even when Sec-Fetch-Site claims otherwise.
        assert!(!s.same_origin(&headers(&[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin")
        ])));
        let by_host = sessions(None);
        assert!(by_host.same_origin(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081")
        ])));
        assert!(!by_host.same_origin(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:9999")
        ])));
        assert!(!by_host.same_origin(&headers(&[("origin", "http://x")])));
    }

    #[test]
    fn cookies() {
        let h = headers(&[("cookie", "a=1; keygate_session=abc; b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), CookieValue::One("abc"));
        assert_eq!(cookie(&headers(&[]), SESSION_COOKIE), CookieValue::Absent);
        let twice = headers(&[("cookie", "keygate_session=abc; keygate_session=def")]);
        assert_eq!(cookie(&twice, SESSION_COOKIE), CookieValue::Ambiguous);
        let s = sessions(Some("https://k.example"));
        let set = s.session_cookie("v");
        assert_eq!(
            set.to_str().unwrap(),
            "keygate_session=v; HttpOnly; SameSite=Lax; Path=/; Secure"
        );
        let plain = sessions(Some("http://localhost:8080"));
        assert!(
            !plain
                .session_cookie("v")
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    #[test]
    fn public_urls() {
        assert!(public_url("https://k.example").is_ok());
        assert!(public_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "ftp://k",
            "https://u:p@k",
            "https://k/?a",
            "k.example",
            "https://k/#x",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }
}
