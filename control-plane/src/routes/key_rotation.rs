//! Rotating a key: `POST /api/api-keys/{id}/rotate` (the caller's own) and
//! `POST /api/admin-api-keys/{id}/rotate` (anyone's, admins), with an
//! optional `{"overlapSeconds": N}` (0 to 7 days, default 0). The answer is
//! the key with a new secret, shown this once: same id, owner, name, scope
//! and expiry. The old secret keeps working until the overlap ends, then
//! every edge refuses it by its own clock (see [`crate::db::key_rotation`]).
//! Only an active key rotates: a disabled, expired or revoked one is a 409.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::{Admin, Person};
use crate::db::keys::KeyHead;
use crate::db::{key_rotation, keys, revocations};
use crate::domain::format_time;
use crate::domain::key_status::KeyStatus;
use crate::error::{ApiError, ApiResult};
use crate::routes::keys::{CreatedKey, key_id, new_secret, record};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use keygate_protocol::ApiKeyToken;
use serde::Deserialize;
use utoipa::ToSchema;

/// The longest overlap: 7 days. Long enough to roll a key out to every
/// client over a week; short enough that a leaked old secret dies soon.
pub const MAX_OVERLAP_SECONDS: i64 = 7 * 24 * 3600;

const NOT_FOUND: ApiError = ApiError::NotFound("API key not found");
const MSG_DISABLED: &str = "API key is disabled; enable it before rotating";
const MSG_EXPIRED: &str = "API key has expired; expired keys cannot be rotated";
const MSG_REVOKED: &str = "API key is revoked; revoked keys cannot be rotated";

/// The optional body of a rotation.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateKeyBody {
    /// How long the old secret keeps working, in seconds (0 to 604800;
    /// default 0: it stops at once).
    #[serde(default)]
    pub overlap_seconds: Option<i64>,
}

/// A key's rotation overlap as lists show it: both `None` unless the old
/// secret still works at `now`.
pub struct Overlap {
    pub ends_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl Overlap {
    pub fn of(head: &KeyHead, now: i64) -> Self {
        match head.previous_secret_expires_at {
            Some(end) if now < end => Overlap {
                ends_at: Some(format_time(end)),
                last_used_at: head.previous_secret_used_at.map(format_time),
            },
            _ => Overlap {
                ends_at: None,
                last_used_at: None,
            },
        }
    }
}

/// The overlap asked for: an empty body means none.
fn overlap_seconds(body: &Bytes) -> ApiResult<i64> {
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        RotateKeyBody::default()
    } else {
        serde_json::from_slice::<RotateKeyBody>(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let seconds = parsed.overlap_seconds.unwrap_or(0);
    if !(0..=MAX_OVERLAP_SECONDS).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "overlapSeconds must be 0 to {MAX_OVERLAP_SECONDS}"
        )));
    }
    Ok(seconds)
}

/// Rotates key `id` (only `owner`'s, with `owner`) and answers it with its
/// new full key.
async fn rotate_key(
    st: &AppState,
    actor: &Actor,
    id: i64,
    owner: Option<i64>,
    overlap_seconds: i64,
    with_username: bool,
) -> ApiResult<Json<CreatedKey>> {
    let secret = new_secret()?;
    let now = st.clock.now();
    let mut tx = st.db.begin_write().await?;
    let Some(row) = keys::get(&mut tx, id, owner).await? else {
        // A revoked key is known, and says so; anything else is not found.
        return Err(match revocations::get(&mut tx, id, owner).await? {
            Some(_) => ApiError::Conflict(MSG_REVOKED),
            None => NOT_FOUND,
        });
    };
    match KeyStatus::of(row.head.disabled_at, row.head.expires_at, now) {
        KeyStatus::Active => {}
        KeyStatus::Disabled => return Err(ApiError::Conflict(MSG_DISABLED)),
        KeyStatus::Expired => return Err(ApiError::Conflict(MSG_EXPIRED)),
        KeyStatus::Revoked => return Err(ApiError::Conflict(MSG_REVOKED)),
    }
    key_rotation::rotate(
        &mut tx,
        &st.db,
        key_rotation::Rotation {
            key_id: id,
            new_secret_hash_hex: secret.hash().to_hex(),
            overlap_seconds,
            now,
        },
    )
    .await?;
    let details = serde_json::json!({ "overlapSeconds": overlap_seconds });
    audit::record(&mut tx, actor, Action::KeyRotated, Target::Key(id), details).await?;
    let row = keys::get(&mut tx, id, owner).await?.ok_or(NOT_FOUND)?;
    tx.commit().await?;
    let user_id = row.head.user_id;
    tracing::info!(key_id = id, user_id, overlap_seconds, "API key rotated");
    let key = ApiKeyToken {
        user_id,
        key_id: id,
        secret,
    }
    .encode();
    Ok(Json(CreatedKey {
        record: record(row, with_username),
        key,
    }))
}

/// Give one of your keys a new secret, shown once. The old secret keeps
/// working for `overlapSeconds` (default 0: it stops at once). Another
/// user's key is a 404.
#[utoipa::path(post, path = "/api/api-keys/{id}/rotate", params(("id" = i64, Path)),
    request_body(content = RotateKeyBody, description = "optional: {\"overlapSeconds\": N}"),
    responses((status = 200, body = CreatedKey), (status = 400, description = "invalid overlap"),
        (status = 404, description = "not found"),
        (status = 409, description = "the key is disabled, expired or revoked")))]
pub async fn rotate_own(
    State(st): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<CreatedKey>> {
    let id = key_id(&id)?;
    let overlap = overlap_seconds(&body)?;
    let actor = Actor::of(&caller);
    rotate_key(&st, &actor, id, Some(caller.user.id), overlap, false).await
}

/// Give any key a new secret (admin); the new key is shown once, to the admin.
#[utoipa::path(post, path = "/api/admin-api-keys/{id}/rotate", params(("id" = i64, Path)),
    request_body(content = RotateKeyBody, description = "optional: {\"overlapSeconds\": N}"),
    responses((status = 200, body = CreatedKey), (status = 400, description = "invalid overlap"),
        (status = 404, description = "not found"),
        (status = 409, description = "the key is disabled, expired or revoked")))]
pub async fn admin_rotate(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<CreatedKey>> {
    let id = key_id(&id)?;
    let overlap = overlap_seconds(&body)?;
    rotate_key(&st, &Actor::of(&admin), id, None, overlap, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_bounds() {
        let of = |s: &str| overlap_seconds(&Bytes::from(s.to_owned()));
        assert_eq!(of("").unwrap(), 0);
        assert_eq!(of("  \n").unwrap(), 0);
        assert_eq!(of("{}").unwrap(), 0);
        assert_eq!(of(r#"{"overlapSeconds":0}"#).unwrap(), 0);
        assert_eq!(of(r#"{"overlapSeconds":604800}"#).unwrap(), 604_800);
        for bad in [
            r#"{"overlapSeconds":604801}"#,
            r#"{"overlapSeconds":-1}"#,
            r#"{"overlapSeconds":"1h"}"#,
            r#"{"overlap":60}"#,
            "not json",
        ] {
            assert!(of(bad).is_err(), "{bad}");
        }
    }
}
