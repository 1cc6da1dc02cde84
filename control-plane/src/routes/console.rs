//! The web console: static pages, one stylesheet and small plain-JavaScript
//! modules from `control-plane/console/`, compiled into the binary with
//! `include_bytes!`, so there is no second web server and no front-end build
//! step. The pages hold no data: their scripts read the API with the session
//! cookie, so a page needs no authentication of its own (the API decides).
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's
//! scripts, styles and connections; no inline script; no framing),
//! `X-Content-Type-Options: nosniff` and an ETag, and is revalidated on each
//! use (`Cache-Control: no-cache`) so an upgraded binary is never mixed with
//! cached scripts of the previous one.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// The one policy for every console answer. `style-src 'self'` only: the
/// scripts set no inline `style` attributes either.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: where it is served, its type and its bytes.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file of the console, by the path it is served at.
pub static ASSETS: &[Asset] = &[
    asset!(
        "/console/console.css",
        "console.css",
        "text/css; charset=utf-8"
    ),
    asset!("/console/favicon.svg", "favicon.svg", "image/svg+xml"),
    asset!("/console/access.js", "access.js", JS),
    asset!("/console/api.js", "api.js", JS),
    asset!("/console/app.js", "app.js", JS),
    asset!("/console/dialog.js", "dialog.js", JS),
    asset!("/console/dom.js", "dom.js", JS),
    asset!("/console/format.js", "format.js", JS),
    asset!("/console/keys.js", "keys.js", JS),
    asset!("/console/key-create.js", "key-create.js", JS),
    asset!("/console/key-actions.js", "key-actions.js", JS),
    asset!("/console/connect.js", "connect.js", JS),
    asset!("/console/servers.js", "servers.js", JS),
    asset!("/console/admin.js", "admin.js", JS),
    asset!("/console/audit.js", "audit.js", JS),
    asset!("/console/key-policy.js", "key-policy.js", JS),
    asset!("/console/signin.js", "signin.js", JS),
    asset!(
        "/console/snippets/snippets.json",
        "snippets/snippets.json",
        "application/json"
    ),
    asset!(
        "/console/snippets/vscode.json",
        "snippets/vscode.json",
        TEXT
    ),
    asset!(
        "/console/snippets/langchain.py",
        "snippets/langchain.py",
        TEXT
    ),
    asset!("/console/snippets/agno.py", "snippets/agno.py", TEXT),
    asset!("/console/snippets/curl.sh", "snippets/curl.sh", TEXT),
];

/// The shell of every signed-in page; its script draws the page the path names.
static APP_PAGE: Asset = asset!("/api-keys", "app.html", "text/html; charset=utf-8");
static SIGNIN_PAGE: Asset = asset!("/signin", "signin.html", "text/html; charset=utf-8");

/// The pages served by [`APP_PAGE`].
pub const APP_PATHS: &[&str] = &[
    "/api-keys",
    "/servers",
    "/admin/api-keys",
    "/admin/users",
    "/admin/mcp-servers",
    "/admin/access-rules",
    "/audit-log",
    "/admin/key-policy",
];

/// The console's routes: `/` (to `/api-keys`), `/signin`, the pages of
/// [`APP_PATHS`] and the files of [`ASSETS`].
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/api-keys") }))
        .route(
            "/signin",
            get(|headers: HeaderMap| async move { serve(&headers, &SIGNIN_PAGE) }),
        );
    for path in APP_PATHS {
        router = router.route(
            path,
            get(|headers: HeaderMap| async move { serve(&headers, &APP_PAGE) }),
        );
    }
    for a in ASSETS {
        router = router.route(
            a.path,
            get(move |headers: HeaderMap| async move { serve(&headers, a) }),
        );
    }
    if let Some(icon) = ASSETS.iter().find(|a| a.path == "/console/favicon.svg") {
        router = router.route(
            "/favicon.ico",
            get(move |headers: HeaderMap| async move { serve(&headers, icon) }),
        );
    }
    router
}

/// A strong ETag: the start of the content's SHA-256, computed once per file.
fn etag(file: &'static Asset) -> HeaderValue {
    static TAGS: LazyLock<Mutex<HashMap<usize, HeaderValue>>> = LazyLock::new(Default::default);
    let mut tags = TAGS.lock().unwrap_or_else(|e| e.into_inner());
    tags.entry(std::ptr::from_ref(file) as usize)
        .or_insert_with(|| {
            let digest = Sha256::digest(file.body);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .clone()
}

fn serve(request: &HeaderMap, file: &'static Asset) -> Response {
    let tag = etag(file);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(file.content_type),
            )],
            file.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, tag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers);
    response
}

/// The headers every console answer carries.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
    }

    fn files_under(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read console dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path, out);
            } else {
                let relative = path.strip_prefix(console_dir()).expect("under console/");
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_console_file_is_served() {
        let mut files = Vec::new();
        files_under(&console_dir(), &mut files);
        for file in files {
            let served = ASSETS.iter().any(|a| a.path == format!("/console/{file}"))
                || file == "app.html"
                || file == "signin.html";
            assert!(served, "control-plane/console/{file} is not in ASSETS");
        }
    }

    /// What the Content-Security-Policy forbids must not be needed: no
    /// inline scripts, styles or event handlers; no HTML built from strings;
    /// nothing loaded from another host (operators run air-gapped).
    #[test]
    fn pages_and_scripts_need_nothing_the_policy_forbids() {
        let pages = [&APP_PAGE, &SIGNIN_PAGE];
        for file in ASSETS.iter().chain(pages) {
            let text = std::str::from_utf8(file.body).expect("utf-8");
            for banned in [
                "innerHTML",
                "outerHTML =",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", file.path);
            }
            if file.content_type.starts_with("text/html") {
                assert!(!text.contains("<script>"), "{}: inline script", file.path);
                assert!(!text.contains("style="), "{}: inline style", file.path);
                assert!(!text.contains(" onclick"), "{}: inline handler", file.path);
            }
            if !file.path.starts_with("/console/snippets/") && file.path != "/console/favicon.svg" {
                for scheme in ["http://", "https://", "//fonts.", "@import"] {
                    assert!(!text.contains(scheme), "{} refers to {scheme}", file.path);
                }
            }
        }
    }

    #[test]
    fn the_policy_is_strict() {
        assert!(CONTENT_SECURITY_POLICY.contains("default-src 'self'"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
