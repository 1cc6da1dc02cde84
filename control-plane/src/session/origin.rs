//! The same-origin rule (CSRF): a cookie-authenticated request that can
//! change state, and sign-in and sign-out themselves, must show it comes from
//! the console's own origin. `SameSite=Lax` keeps the cookie off cross-site
//! posts in current browsers; this check does not depend on that.

use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};

/// True for methods that change nothing (no same-origin check needed).
pub fn is_safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The console's origin.
#[derive(Debug, Clone)]
pub struct ConsoleOrigin {
    /// `https://host[:port]` from `--public-url`; `None`: `http://` + the
    /// request's `Host`.
    pub configured: Option<String>,
}

impl ConsoleOrigin {
    /// The CSRF rule: `Origin` must be the console's origin; with no
    /// `Origin`, `Sec-Fetch-Site` must say `same-origin`. Anything else, a
    /// missing `Host` or `Origin: null` included, is cross-site.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let expected = match &self.configured {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn origin(public: Option<&str>) -> ConsoleOrigin {
        ConsoleOrigin {
            configured: public.map(|p| public_url(p).unwrap().origin().ascii_serialization()),
        }
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
        let s = origin(Some("https://keys.example.com/"));
        assert!(s.allows(&headers(&[("origin", "https://keys.example.com")])));
        assert!(!s.allows(&headers(&[("origin", "http://keys.example.com")])));
        assert!(!s.allows(&headers(&[("origin", "https://evil.example")])));
        assert!(!s.allows(&headers(&[("origin", "null")])));
        assert!(s.allows(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!s.allows(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!s.allows(&headers(&[])));
        // An Origin decides even when Sec-Fetch-Site claims otherwise.
        assert!(!s.allows(&headers(&[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin")
        ])));
        let by_host = origin(None);
        assert!(by_host.allows(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081")
        ])));
        assert!(!by_host.allows(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:9999")
        ])));
        assert!(!by_host.allows(&headers(&[("origin", "http://x")])));
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
