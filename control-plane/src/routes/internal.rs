//! The edge's endpoints, authenticated by the data-plane token: the
//! key-table feed and batched usage reports.

use crate::AppState;
use crate::auth::DataPlane;
use crate::db::keys;
use crate::domain::now_unix;
use crate::error::{ApiError, ApiResult};
use crate::feed::{self, MAX_PAGE_KEYS, MAX_WAIT_SECONDS};
use crate::metrics::FeedClientGuard;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use keygate_protocol::{KeyTable, UsageReport};
use serde::Deserialize;
use std::time::Duration;
use utoipa::IntoParams;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// The version the edge holds; omitted for a full snapshot.
    pub since: Option<u64>,
    /// Long-poll seconds (0 to 60) to wait for a change after `since`.
    pub wait: Option<u64>,
    /// Page size (1 to 50000) for a full snapshot: at most this many keys,
    /// with `next` set when more follow. Omitted: the whole snapshot at once.
    /// Deltas are never paged.
    pub limit: Option<u32>,
    /// Continue a paged full snapshot after this key id (the `next` of the
    /// previous page). Needs `limit`; not combined with `since`.
    pub after: Option<i64>,
}

/// The key table: a full snapshot, or the changes after `since` (a full
/// snapshot when the change log no longer reaches `since`). With `limit`, a
/// full snapshot comes in pages by key id: continue with `after=next`.
#[utoipa::path(get, path = "/internal/v1/key-table", params(FeedQuery),
    responses((status = 200, description = "KeyTable JSON (keygate-protocol wire format)"),
              (status = 401, description = "missing or wrong data-plane token")))]
pub async fn key_table(
    State(st): State<AppState>,
    _: DataPlane,
    q: Result<Query<FeedQuery>, QueryRejection>,
) -> ApiResult<Json<KeyTable>> {
    let Query(q) = q?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::bad_request("wait must be 0 to 60 seconds"));
    }
    if q.limit.is_some_and(|l| !(1..=MAX_PAGE_KEYS).contains(&l)) {
        return Err(ApiError::bad_request("limit must be 1 to 50000"));
    }
    if let Some(after) = q.after {
        if q.since.is_some() {
            return Err(ApiError::bad_request("after cannot be combined with since"));
        }
        if q.limit.is_none() {
            return Err(ApiError::bad_request("after needs limit"));
        }
        if after < 0 {
            return Err(ApiError::bad_request("after must be a key id (0 or more)"));
        }
        let mut conn = st.db.conn().await?;
        return Ok(Json(feed::full(&mut conn, Some(after), q.limit).await?));
    }
    let _guard =
        (wait > 0 && q.since.is_some()).then(|| FeedClientGuard::new(&st.metrics.feed_clients));
    let table = feed::poll(
        &st.db,
        &st.feed,
        q.since,
        Duration::from_secs(wait),
        st.feed_recheck,
        q.limit,
    )
    .await?;
    Ok(Json(table))
}

/// Documentation mirror of [`UsageReport`] (the protocol crate has no schema derive).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UsageReportDoc {
    items: Vec<UsageItemDoc>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct UsageItemDoc {
    keyId: i64,
    /// Unix seconds.
    lastUsedAt: i64,
}

/// Last-use times from the edge; keeps the later of stored and reported,
/// ignores unknown keys.
#[utoipa::path(post, path = "/internal/v1/usage", request_body = UsageReportDoc,
    responses((status = 204, description = "recorded"), (status = 401, description = "wrong token")))]
pub async fn usage(
    State(st): State<AppState>,
    _: DataPlane,
    body: Result<Json<UsageReport>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(report) = body?;
    // A report from the future is clamped: last use cannot be after now.
    let now = now_unix();
    let mut tx = st.db.begin_plain_write().await?;
    for item in report.items {
        if item.last_used_at > 0 {
            keys::record_use(&mut tx, item.key_id, item.last_used_at.min(now)).await?;
        }
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
