//! The console's cookies: the session cookie and the login cookie that
//! binds an OIDC login to the browser that started it, how they are set
//! (`HttpOnly; SameSite=Lax`, `Secure` when the public URL is https) and
//! read (exactly one value, or none).
//!
//! Over https the names carry the browser's prefixes, `__Host-` for the
//! session and `__Secure-` for the login cookie (which lives on the
//! callback path, so it cannot be `__Host-`): a sibling subdomain then
//! cannot plant or shadow them. Plain HTTP (the quickstart) cannot use the
//! prefixes, which require `Secure`.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

/// The session cookie's name over plain HTTP ([`Cookies::session_name`]).
pub const SESSION_COOKIE: &str = "keygate_session";
/// The session cookie's name over https.
pub const SECURE_SESSION_COOKIE: &str = "__Host-keygate_session";
/// The cookie binding an OIDC login to the browser that started it, over
/// plain HTTP ([`Cookies::login_name`]).
pub const LOGIN_COOKIE: &str = "keygate_login";
/// The login cookie's name over https.
pub const SECURE_LOGIN_COOKIE: &str = "__Secure-keygate_login";
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
    /// The session cookie's name in this deployment.
    pub fn session_name(&self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// The login cookie's name in this deployment.
    pub fn login_name(&self) -> &'static str {
        if self.secure {
            SECURE_LOGIN_COOKIE
        } else {
            LOGIN_COOKIE
        }
    }

    fn cookie_attrs(&self, path: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("HttpOnly; SameSite=Lax; Path={path}{secure}")
    }

    /// `Set-Cookie` for a new session. No `Max-Age`: the browser forgets it
    /// when it closes; the server's lifetimes apply either way.
    pub fn session(&self, value: &str) -> HeaderValue {
        header(format!(
            "{}={value}; {}",
            self.session_name(),
            self.cookie_attrs("/")
        ))
    }

    pub fn clear_session(&self) -> HeaderValue {
        header(format!(
            "{}=; Max-Age=0; {}",
            self.session_name(),
            self.cookie_attrs("/")
        ))
    }

    /// `Set-Cookie` binding a login's `state` to this browser until the callback.
    pub fn login(&self, state: &str, max_age_secs: i64) -> HeaderValue {
        header(format!(
            "{}={state}; Max-Age={max_age_secs}; {}",
            self.login_name(),
            self.cookie_attrs(CALLBACK_PATH)
        ))
    }

    pub fn clear_login(&self) -> HeaderValue {
        header(format!(
            "{}=; Max-Age=0; {}",
            self.login_name(),
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
            "__Host-keygate_session=v; HttpOnly; SameSite=Lax; Path=/; Secure"
        );
        assert_eq!(
            s.clear_session().to_str().unwrap(),
            "__Host-keygate_session=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/; Secure"
        );
        assert_eq!(
            s.login("st", 60).to_str().unwrap(),
            "__Secure-keygate_login=st; Max-Age=60; HttpOnly; SameSite=Lax; \
             Path=/auth/callback; Secure"
        );
        // Over https only the prefixed name is read: a plain one planted by
        // a sibling subdomain is not the session.
        let planted = headers(&[("cookie", "keygate_session=evil")]);
        assert_eq!(cookie(&planted, s.session_name()), CookieValue::Absent);
        let plain = Cookies { secure: false };
        assert_eq!(
            plain.session("v").to_str().unwrap(),
            "keygate_session=v; HttpOnly; SameSite=Lax; Path=/"
        );
        assert_eq!(plain.login_name(), "keygate_login");
    }
}
