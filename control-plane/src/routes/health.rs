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

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
