//! The last guard of "every error is a JSON body": an error answer that a
//! framework extractor wrote on its own, as plain text, before any handler
//! could map it through [`crate::error::ApiError`] (a path segment whose
//! percent-decoding is not UTF-8, for one), is rewritten as
//! `{"error": "<its text>"}` with the same status and headers.
//!
//! Errors of the HTTP parser itself (a malformed request line, a header
//! section over hyper's limits) are answered by hyper before any route runs,
//! with no body; docs/reliability.md lists them.

use crate::error::json_error;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// Longest extractor text passed on as the message; longer ones give the
/// status's reason phrase instead.
const MAX_MESSAGE: usize = 200;

pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE * 4)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && t.chars().count() <= MAX_MESSAGE && !t.contains('\n'));
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_ascii_lowercase()
    });
    let mut rewritten = json_error(status, &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt as _;

    async fn answer(router: Router, uri: &str) -> (StatusCode, String, String) {
        let router = router.layer(axum::middleware::from_fn(json_errors));
        let response = router
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let ct = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn plain_text_rejections_become_json() {
        let router = Router::new().route(
            "/u/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move { id }),
        );
        let (status, ct, body) = answer(router.clone(), "/u/%FF").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ct, "application/json");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["error"], "Invalid URL: Invalid UTF-8 in `id`");
        // Successes and JSON errors pass untouched.
        assert_eq!(answer(router, "/u/ok").await.2, "ok");
        let json = Router::new().route(
            "/e",
            get(|| async { json_error(StatusCode::CONFLICT, "taken") }),
        );
        assert_eq!(answer(json, "/e").await.2, r#"{"error":"taken"}"#);
    }

    #[tokio::test]
    async fn long_or_empty_texts_give_the_reason_phrase() {
        let long = "x".repeat(MAX_MESSAGE + 1);
        let router = Router::new()
            .route(
                "/long",
                get(move || async move { (StatusCode::BAD_REQUEST, long) }),
            )
            .route("/empty", get(|| async { StatusCode::IM_A_TEAPOT }));
        assert_eq!(
            answer(router.clone(), "/long").await.2,
            r#"{"error":"bad request"}"#
        );
        assert_eq!(
            answer(router, "/empty").await.2,
            r#"{"error":"i'm a teapot"}"#
        );
    }
}
