//! The HTTP routes, one module per resource, assembled into one router.

pub mod health;
pub mod internal;
pub mod keys;
pub mod rules;
pub mod servers;
pub mod users;

use crate::AppState;
use crate::error::json_error;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use keygate_protocol::feed::{KEY_TABLE_PATH, USAGE_PATH};

pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/api/me", get(users::me))
        .route("/api/api-keys", post(keys::create_own).get(keys::list_own))
        .route(
            "/api/api-keys/{id}",
            get(keys::get_own).delete(keys::delete_own),
        )
        .route(
            "/api/admin-api-keys",
            post(keys::admin_create).get(keys::admin_list),
        )
        .route(
            "/api/admin-api-keys/{id}",
            get(keys::admin_get).delete(keys::admin_delete),
        )
        .route("/api/users", get(users::list).post(users::create))
        .route(
            "/api/users/{id}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route("/api/mcp-servers", get(servers::list).post(servers::create))
        .route(
            "/api/mcp-servers/{name}",
            get(servers::get)
                .put(servers::update)
                .delete(servers::delete),
        )
        .route("/api/access-rules", get(rules::list).post(rules::create))
        .route(
            "/api/access-rules/{id}",
            get(rules::get).put(rules::update).delete(rules::delete),
        )
        .route(KEY_TABLE_PATH, get(internal::key_table))
        .route(USAGE_PATH, post(internal::usage))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        // Router::layer wraps each route, so `MatchedPath` is set when it runs.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        // Outermost: an extractor's plain-text rejection still reads as JSON.
        .layer(axum::middleware::from_fn(crate::json_errors::json_errors))
        .with_state(state)
}
