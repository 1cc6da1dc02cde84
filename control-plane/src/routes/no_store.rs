//! API answers are never stored by a browser or a proxy: they carry
//! people's data, and the answer to a key's creation carries the key itself,
//! shown only once. Every `/api/…` and `/auth/…` answer gets
//! `Cache-Control: no-store` unless its handler set a policy of its own.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Middleware: adds `Cache-Control: no-store` to API and sign-in answers.
pub async fn no_store(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/auth/");
    let mut response = next.run(request).await;
    if api {
        response
            .headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    response
}
