//! The edge's endpoints, authenticated by the data-plane token: the
//! key-table feed and batched usage reports.

use crate::AppState;
use crate::auth::DataPlane;
use crate::db::{key_rotation, keys};
use crate::error::ApiResult;
use crate::feed::hub::Ask;
use crate::metrics::FeedClientGuard;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_protocol::feed::{KEY_TABLE_PATH, USAGE_PATH};
use keygate_protocol::{FeedQuery, UsageReport};
use std::time::Duration;
use utoipa::IntoParams;

/// Documentation mirror of [`FeedQuery`], whose parser (in the protocol
/// crate, shared with the edge) is what the handler actually uses.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FeedQueryDoc {
    /// The version the edge holds; omitted for a full snapshot.
    since: Option<u64>,
    /// Long-poll seconds (0 to 60) to wait for a change after `since`.
    wait: Option<u64>,
    /// Page size (1 to 50000) for a full snapshot: at most this many keys,
    /// with `next` set when more follow. Omitted: the whole snapshot at once.
    /// Deltas are paged by it only with `paged=1`.
    limit: Option<u32>,
    /// Continue a paged answer after this key id (the `next` of the previous
    /// page): a snapshot without `since`, the delta from `since` with it.
    /// Needs `limit`.
    after: Option<i64>,
    /// `1`: page the delta by `limit` too (needs `since` and `limit`).
    /// Without it a delta comes whole, as edges that ignore `next` expect.
    paged: Option<u8>,
}

/// The key table: a full snapshot, or the changes after `since` (a full
/// snapshot when the change log no longer reaches `since`). Every answer
/// carries `registeredServers`, the names the edge opens at all. With `limit`, a
/// full snapshot (and with `paged=1` a delta) comes in pages by key id:
/// continue with `after=next`.
#[utoipa::path(get, path = KEY_TABLE_PATH, params(FeedQueryDoc),
    responses((status = 200, description = "KeyTable JSON (keygate-protocol wire format)"),
              (status = 400, description = "a query the feed does not take"),
              (status = 401, description = "missing or wrong data-plane token")))]
pub async fn key_table(
    State(st): State<AppState>,
    _: DataPlane,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let ask = match FeedQuery::parse(query.as_deref().unwrap_or_default())? {
        FeedQuery::Page { after, page } => Ask::Snapshot {
            after: Some(after),
            limit: Some(page.get()),
        },
        FeedQuery::Snapshot { page } => Ask::Snapshot {
            after: None,
            limit: page.map(|p| p.get()),
        },
        FeedQuery::Since {
            version,
            wait,
            page,
            paged_deltas,
        } => Ask::Since {
            since: version,
            wait: Duration::from_secs(wait.get()),
            limit: page.map(|p| p.get()),
            paged_deltas,
        },
        FeedQuery::DeltaPage { since, after, page } => Ask::DeltaPage {
            since,
            after,
            limit: page.get(),
        },
    };
    let _guard = matches!(ask, Ask::Since { wait, .. } if !wait.is_zero())
        .then(|| FeedClientGuard::new(&st.metrics.feed_clients));
    // The same encoded bytes go to every edge asking the same at one
    // version (see `feed::hub`); they are a `KeyTable`, as `Json` would send.
    let body = st.feed_hub.answer(ask).await?;
    Ok(([(header::CONTENT_TYPE, JSON)], body).into_response())
}

/// The content type of a feed answer (what `axum::Json` sets).
const JSON: HeaderValue = HeaderValue::from_static("application/json");

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
    /// Unix seconds: the latest use with either secret.
    lastUsedAt: i64,
    /// Unix seconds: the latest use with the secret a rotation replaced
    /// (sent only for keys whose entry carries one).
    previousSecretUsedAt: Option<i64>,
}

/// Last-use times from the edge; keeps the later of stored and reported,
/// ignores unknown keys. Fields this version does not know are ignored, so
/// a newer edge's report is still read.
#[utoipa::path(post, path = USAGE_PATH, request_body = UsageReportDoc,
    responses((status = 204, description = "recorded"), (status = 401, description = "wrong token")))]
pub async fn usage(
    State(st): State<AppState>,
    _: DataPlane,
    body: Result<Json<UsageReport>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(report) = body?;
    // A report from the future is clamped: last use cannot be after now
    // (the app's clock, which the key policy's unused-key sweep also reads).
    let now = st.clock.now();
    let mut tx = st.db.begin_plain_write().await?;
    for item in report.items {
        if item.last_used_at > 0 {
            keys::record_use(&mut tx, item.key_id, item.last_used_at.min(now)).await?;
        }
        if let Some(at) = item.previous_secret_used_at.filter(|at| *at > 0) {
            key_rotation::record_previous_use(&mut tx, item.key_id, at.min(now)).await?;
        }
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
