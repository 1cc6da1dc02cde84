//! `GET /api/audit-events`: the audit log, newest first, a page at a time.
//! Admins see every event; anyone else sees the events about their own keys
//! (whoever made them). Paged by cursor: each page answers `nextCursor`
//! (the id of its last event, as a string), which the next request passes
//! as `cursor`; events that arrive meanwhile never shift a page.

use crate::AppState;
use crate::audit::Action;
use crate::audit::store::{self, AuditEvent, Filter};
use crate::auth::Person;
use crate::domain::{Role, parse_id};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditQuery {
    /// Events this user made, or about them, or about their keys.
    #[serde(default)]
    user_id: Option<String>,
    /// Events about this key.
    #[serde(default)]
    key_id: Option<String>,
    /// One action, e.g. `key.revoked`.
    #[serde(default)]
    action: Option<String>,
    /// RFC 3339; events at or after it.
    #[serde(default)]
    from: Option<String>,
    /// RFC 3339; events before it.
    #[serde(default)]
    to: Option<String>,
    /// 1 to 500; default 50.
    #[serde(default)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

fn id_param(name: &str, raw: Option<&str>) -> ApiResult<Option<i64>> {
    raw.map(|r| {
        parse_id(r).ok_or_else(|| ApiError::bad_request(format!("{name} must be a positive id")))
    })
    .transpose()
}

fn time_param(name: &str, raw: Option<&str>) -> ApiResult<Option<i64>> {
    raw.map(|r| {
        OffsetDateTime::parse(r, &Rfc3339)
            .map(OffsetDateTime::unix_timestamp)
            .map_err(|_| ApiError::bad_request(format!("{name} must be an RFC 3339 timestamp")))
    })
    .transpose()
}

/// The audit log: everything for an admin, the events about your own keys
/// for anyone else (without the address of anyone but themselves); newest
/// first, filtered, paged by cursor.
#[utoipa::path(get, path = "/api/audit-events", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, description = "invalid query")))]
pub async fn list(
    State(st): State<AppState>,
    Person(caller): Person,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let action = q
        .action
        .as_deref()
        .map(|a| Action::parse(a).ok_or_else(|| ApiError::bad_request("unknown action")))
        .transpose()?;
    let filter = Filter {
        key_owner: (caller.role != Role::Admin).then_some(caller.user.id),
        user_id: id_param("userId", q.user_id.as_deref())?,
        key_id: id_param("keyId", q.key_id.as_deref())?,
        action,
        from: time_param("from", q.from.as_deref())?,
        to: time_param("to", q.to.as_deref())?,
        before: id_param("cursor", q.cursor.as_deref())?,
    };
    let mut conn = st.db.conn().await?;
    let (mut items, more) = store::list(&mut conn, &filter, limit).await?;
    if caller.role != Role::Admin {
        // Someone else's address (an admin's workstation, say) is not the
        // owner's to see; what was done to their key is.
        for item in &mut items {
            if item.actor.get("userId").and_then(Value::as_i64) != Some(caller.user.id) {
                item.client_address = None;
            }
        }
    }
    let next_cursor = more
        .then(|| items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage { items, next_cursor }))
}
