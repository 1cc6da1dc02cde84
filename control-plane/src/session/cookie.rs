//! The console's cookies: the session cookie and the login cookie that
//! binds an OIDC login to the browser that started it, how they are set
//! (`HttpOnly; SameSite=Lax`, `Secure` when the public URL is https) and
//! read (exactly one value, or none).

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

/// The session cookie's name (the console contract).
pub const SESSION_COOKIE: &str = "keygate_session";
/// The cookie binding an OIDC login to the browser that started it.
pub const LOGIN_COOKIE: &str = "keygate_login";
/// Where the login cookie is sent: only to the callback.
pub const CALLBACK_PATH: &str = "/auth/callback";

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

/// How this deployment sets cookies.
#[derive(Debug, Clone, Copy)]
pub struct Cookies {
    /// Set on every cookie when the public URL is https.
    pub secure: bool,
}

impl Cookies {
    fn cookie_attrs(&self, path: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("HttpOnly; SameSite=Lax; Path={path}{secure}")
    }

    /// `Set-Cookie` for a new session. No `Max-Age`: the browser forgets it
    /// when it closes; the server's lifetimes apply either way.
    pub fn session(&self, value: &str) -> HeaderValue {
        header(format!(
            "{SESSION_COOKIE}={value}; {}",
            self.cookie_attrs("/")
        ))
    }

    pub fn clear_session(&self) -> HeaderValue {
        header(format!(
            "{SESSION_COOKIE}=; Max-Age=0; {}",
            self.cookie_attrs("/")
        ))
    }

    /// `Set-Cookie` binding a login's `state` to this browser until the callback.
    pub fn login(&self, state: &str, max_age_secs: i64) -> HeaderValue {
        header(format!(
            "{LOGIN_COOKIE}={state}; Max-Age={max_age_secs}; {}",
            self.cookie_attrs(CALLBACK_PATH)
        ))
    }

    pub fn clear_login(&self) -> HeaderValue {
        header(format!(
            "{LOGIN_COOKIE}=; Max-Age=0; {}",
            self.cookie_attrs(CALLBACK_PATH)
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies() {
        let h = headers(&[("cookie", "a=1; keygate_session=abc; b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), CookieValue::One("abc"));
        assert_eq!(cookie(&headers(&[]), SESSION_COOKIE), CookieValue::Absent);
        let twice = headers(&[("cookie", "keygate_session=abc; keygate_session=def")]);
        assert_eq!(cookie(&twice, SESSION_COOKIE), CookieValue::Ambiguous);
        let s = Cookies { secure: true };
        let set = s.session("v");
        assert_eq!(
            set.to_str().unwrap(),
            "keygate_session=v; HttpOnly; SameSite=Lax; Path=/; Secure"
        );
        let plain = Cookies { secure: false };
        assert!(!plain.session("v").to_str().unwrap().contains("Secure"));
    }
}
