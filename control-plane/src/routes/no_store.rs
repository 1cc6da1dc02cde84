//! API answers are never stored by a browser or a proxy: they carry
//! people's data, and the answer to a key's creation carries the key itself,
//! shown only once. Every `/api/…` and `/auth/…` answer gets
//! `Cache-Control: no-store` unless its handler set a policy of its own.
//! Every answer (JSON and redirects too, not only the console's pages) is
//! also never sniffed as another type, never framed, and may load nothing:
//! the console's pages set their own, wider policy, which is kept.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Middleware: `Cache-Control: no-store` on API and sign-in answers, and
/// the safe defaults above on every answer.
pub async fn no_store(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/auth/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if api {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    response
}
