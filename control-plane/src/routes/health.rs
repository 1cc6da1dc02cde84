//! Liveness, readiness (database reachable), Prometheus metrics and the OpenAPI document.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Probes must answer quickly even when the database hangs.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn readyz(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    match tokio::time::timeout(READY_TIMEOUT, st.db.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable("database unavailable"))
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            Err(ApiError::Unavailable("database unavailable"))
        }
    }
}

pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
}

/// The document never changes while the process runs: built and encoded
/// once, so a client fetching it in a loop costs a copy of bytes, not a build.
pub async fn openapi() -> impl IntoResponse {
    static ENCODED: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let body = ENCODED.get_or_init(|| {
        // Serializing plain structs to JSON cannot fail; an empty object
        // would still be valid JSON if it ever did.
        serde_json::to_vec(&crate::openapi::document())
            .unwrap_or_else(|_| b"{}".to_vec())
            .into()
    });
    ([(CONTENT_TYPE, "application/json")], body.clone())
}
