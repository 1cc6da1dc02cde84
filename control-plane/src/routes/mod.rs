//! The HTTP routes, one module per resource, assembled into one router.

pub mod audit;
pub mod auth;
pub mod console;
pub mod health;
pub mod internal;
pub mod key_edits;
pub mod key_policy;
pub mod key_rotation;
pub mod keys;
pub mod no_store;
pub mod offboarding;
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
        .route("/auth/options", get(auth::options))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/token", post(auth::token))
        .route("/auth/logout", post(auth::logout))
        .route("/api/me", get(users::me))
        .route("/api/api-keys", post(keys::create_own).get(keys::list_own))
        .route(
            "/api/api-keys/{id}",
            get(keys::get_own)
                .patch(key_edits::update_own)
                .delete(keys::delete_own),
        )
        .route("/api/api-keys/{id}/rotate", post(key_rotation::rotate_own))
        .route(
            "/api/admin-api-keys/{id}/rotate",
            post(key_rotation::admin_rotate),
        )
        .route(
            "/api/admin-api-keys",
            post(keys::admin_create).get(keys::admin_list),
        )
        .route(
            "/api/admin-api-keys/{id}",
            get(keys::admin_get)
                .patch(key_edits::admin_update)
                .delete(keys::admin_delete),
        )
        .route(
            "/api/settings/key-policy",
            get(key_policy::get).put(key_policy::put),
        )
        .route("/api/users", get(users::list).post(users::create))
        .route(
            "/api/users/{id}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route("/api/users/{id}/suspend", post(offboarding::suspend))
        .route("/api/users/{id}/unsuspend", post(offboarding::unsuspend))
        .route(
            "/api/users/{id}/revoke-keys",
            post(offboarding::revoke_keys),
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
        .route("/api/audit-events", get(audit::list))
        .route(KEY_TABLE_PATH, get(internal::key_table))
        .route(USAGE_PATH, post(internal::usage))
        .merge(console::router())
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(axum::middleware::from_fn(no_store::no_store))
        // Router::layer wraps each route, so `MatchedPath` is set when it runs.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        // Outermost: an extractor's plain-text rejection still reads as JSON.
        .layer(axum::middleware::from_fn(crate::json_errors::json_errors))
        .with_state(state)
}
