//! Offboarding (admin): suspend a user and lift it, and revoke all of a
//! user's keys in one action.
//!
//! - `POST /api/users/{id}/suspend`: every key of theirs leaves every edge's
//!   table in one feed change (401 `invalid_token`, as fast as a deletion),
//!   and every credential of theirs is refused at the control plane.
//! - `POST /api/users/{id}/unsuspend`: the same keys work again, unchanged.
//! - `POST /api/users/{id}/revoke-keys`: revokes every key of theirs (kept on
//!   record), with an optional `{"reason": "..."}`.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::Admin;
use crate::db::{revocations, users};
use crate::domain::{MAX_DESCRIPTION, Text, parse_id};
use crate::error::{ApiError, ApiResult};
use crate::routes::users::{UserRecord, record};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const NOT_FOUND: ApiError = ApiError::NotFound("user not found");
const MSG_BUILTIN: &str = "the built-in admin cannot be suspended";

fn user_id(raw: &str) -> ApiResult<i64> {
    parse_id(raw).ok_or(NOT_FOUND)
}

async fn set_suspended(
    st: &AppState,
    actor: &Actor,
    raw_id: &str,
    suspended: bool,
) -> ApiResult<Json<UserRecord>> {
    let id = user_id(raw_id)?;
    let mut tx = st.db.begin_write().await?;
    let Some(changed) = users::set_suspended(&mut tx, &st.db, id, suspended).await? else {
        return match users::get(&mut tx, id).await? {
            Some(_) => Err(ApiError::Conflict(MSG_BUILTIN)),
            None => Err(NOT_FOUND),
        };
    };
    let row = users::get(&mut tx, id).await?.ok_or(NOT_FOUND)?;
    if changed {
        let action = if suspended {
            Action::UserSuspended
        } else {
            Action::UserUnsuspended
        };
        audit::record(
            &mut tx,
            actor,
            action,
            Target::User(id),
            serde_json::Value::Null,
        )
        .await?;
    }
    tx.commit().await?;
    if changed {
        tracing::info!(
            user_id = id,
            "user {}",
            if suspended {
                "suspended"
            } else {
                "unsuspended"
            }
        );
    }
    Ok(Json(record(row)))
}

/// Suspend a user: their keys stop at every edge, their credentials are refused.
#[utoipa::path(post, path = "/api/users/{id}/suspend", params(("id" = i64, Path)),
    responses((status = 200, body = UserRecord), (status = 404, description = "not found"),
        (status = 409, description = "the built-in admin cannot be suspended")))]
pub async fn suspend(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<UserRecord>> {
    set_suspended(&st, &Actor::of(&admin), &id, true).await
}

/// Lift a suspension: the user's keys and sign-ins work again.
#[utoipa::path(post, path = "/api/users/{id}/unsuspend", params(("id" = i64, Path)),
    responses((status = 200, body = UserRecord), (status = 404, description = "not found"),
        (status = 409, description = "the built-in admin cannot be suspended")))]
pub async fn unsuspend(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<UserRecord>> {
    set_suspended(&st, &Actor::of(&admin), &id, false).await
}

/// The optional body of revoke-all: `{"reason": "..."}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedCount {
    /// Keys revoked by this call.
    pub revoked: usize,
}

/// Revoke every key of a user at once (kept on record).
#[utoipa::path(post, path = "/api/users/{id}/revoke-keys", params(("id" = i64, Path)),
    request_body(content = RevokeAllBody, description = "optional: {\"reason\": \"...\"}"),
    responses((status = 200, body = RevokedCount), (status = 400, description = "invalid reason"),
        (status = 404, description = "not found")))]
pub async fn revoke_keys(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RevokedCount>> {
    let id = user_id(&id)?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RevokeAllBody>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            .reason
    };
    let reason = reason
        .map(|r| Text::parse("reason", Some(r), MAX_DESCRIPTION))
        .transpose()?;
    let how = revocations::Revocation {
        by: admin.user.id,
        reason: reason.as_ref().map(Text::as_str),
    };
    let mut tx = st.db.begin_write().await?;
    if users::get(&mut tx, id).await?.is_none() {
        return Err(NOT_FOUND);
    }
    audit::record_bulk_revocation(&mut tx, &Actor::of(&admin), id, how.reason).await?;
    let revoked = revocations::revoke_all_of(&mut tx, &st.db, id, how).await?;
    tx.commit().await?;
    tracing::info!(
        user_id = id,
        revoked,
        revoked_by = admin.user.id,
        "all keys of a user revoked"
    );
    Ok(Json(RevokedCount { revoked }))
}
