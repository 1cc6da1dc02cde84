//! Changing a key after it was made: `PATCH /api/api-keys/{id}` (the
//! caller's own) and `PATCH /api/admin-api-keys/{id}` (anyone's, admins).
//! `{"enabled": false}` turns a key off at every edge as fast as a deletion
//! (the edge drops it from its table, so it answers 401 `invalid_token`,
//! and so does `/api/me`); `{"enabled": true}` turns it on again. `name`,
//! `description` and `expiresAt` (a future time, or `null` for none) are
//! edits; an expiry change reaches the edge like any key change, and is
//! bounded by the key lifetime policy (shorter always; longer only up to
//! creation + `maxLifetimeDays`; never removed while a maximum exists). A
//! key the policy's sweep turned off may be turned on by its owner. A key's
//! scope is never edited: make a new key. Any combination in one request,
//! applied in one transaction.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::{Admin, Person};
use crate::db::keys;
use crate::domain::{MAX_DESCRIPTION, Name, Text, parse_expiry};
use crate::error::{ApiError, ApiResult};
use crate::routes::key_policy;
use crate::routes::keys::{KeyRecord, key_id, record};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateKeyBody {
    /// `false`: the key is refused everywhere (401 `invalid_token`) until
    /// turned on again; `true`: it works again.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339, in the future; `null` removes the expiry; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
}

/// A field that is present, `null` included (`Some(None)`), as opposed to
/// absent (`None`, through `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const NOT_FOUND: ApiError = ApiError::NotFound("API key not found");
const MSG_ADMIN_DISABLED: &str = "an admin turned this key off; only an admin can turn it on";
const MSG_NOTHING: &str = "nothing to change (expected enabled, name, description or expiresAt)";

/// Applies `body` to key `id` (only the owner's, with `owner`) and answers
/// the key as it now is.
async fn update_key(
    st: &AppState,
    actor: &Actor,
    id: i64,
    owner: Option<i64>,
    by: i64,
    body: UpdateKeyBody,
    with_username: bool,
) -> ApiResult<Json<KeyRecord>> {
    if body.enabled.is_none()
        && body.name.is_none()
        && body.description.is_none()
        && body.expires_at.is_none()
    {
        return Err(ApiError::bad_request(MSG_NOTHING));
    }
    let now = st.clock.now();
    // Everything is checked before anything is written.
    let edits = keys::KeyEdits {
        name: body
            .name
            .as_deref()
            .map(|n| Name::parse("name", n))
            .transpose()?
            .map(|n| n.as_str().to_owned()),
        description: body
            .description
            .map(|d| Text::parse("description", Some(d), MAX_DESCRIPTION))
            .transpose()?
            .map(|d| d.as_str().to_owned()),
        expires_at: body
            .expires_at
            .map(|e| e.as_deref().map(|s| parse_expiry(s, now)).transpose())
            .transpose()?,
    };
    let mut tx = st.db.begin_write().await?;
    let Some(current) = keys::get(&mut tx, id, owner).await? else {
        return Err(NOT_FOUND);
    };
    if let Some(new) = edits.expires_at {
        // Bounded by the key lifetime policy (read inside this transaction).
        key_policy::check_expiry_edit(
            &mut tx,
            new,
            current.head.expires_at,
            current.head.created_at,
        )
        .await?;
    }
    let toggled = match body.enabled {
        Some(enabled) => match keys::set_enabled(&mut tx, &st.db, id, owner, enabled, by, now)
            .await?
        {
            keys::Toggle::Changed | keys::Toggle::HeldByAdmin => {
                let action = Action::key_toggled(enabled);
                audit::record(&mut tx, actor, action, Target::Key(id), Value::Null).await?;
                true
            }
            keys::Toggle::Unchanged => false,
            keys::Toggle::NotFound => return Err(NOT_FOUND),
            keys::Toggle::DisabledByAdmin => return Err(ApiError::Forbidden(MSG_ADMIN_DISABLED)),
        },
        None => false,
    };
    keys::edit(&mut tx, &st.db, id, &edits).await?;
    if let Some(details) = audit::key_edit_details(&edits) {
        audit::record(&mut tx, actor, Action::KeyEdited, Target::Key(id), details).await?;
    }
    let row = keys::get(&mut tx, id, owner).await?.ok_or(NOT_FOUND)?;
    tx.commit().await?;
    if toggled {
        tracing::info!(
            key_id = id,
            user_id = row.head.user_id,
            "API key {}",
            if row.head.disabled_at.is_none() {
                "enabled"
            } else {
                "disabled"
            }
        );
    }
    if edits.name.is_some() || edits.description.is_some() || edits.expires_at.is_some() {
        tracing::info!(key_id = id, user_id = row.head.user_id, "API key edited");
    }
    Ok(Json(record(row, with_username)))
}

/// Turn one of your keys off or on, or edit its name, description or
/// expiry. Another user's key is a 404.
#[utoipa::path(patch, path = "/api/api-keys/{id}", params(("id" = i64, Path)),
    request_body = UpdateKeyBody,
    responses((status = 200, body = KeyRecord), (status = 400, description = "invalid request"),
        (status = 403, description = "an admin turned the key off"),
        (status = 404, description = "not found")))]
pub async fn update_own(
    State(st): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    body: Result<Json<UpdateKeyBody>, JsonRejection>,
) -> ApiResult<Json<KeyRecord>> {
    let id = key_id(&id)?;
    let Json(body) = body?;
    update_key(
        &st,
        &Actor::of(&caller),
        id,
        Some(caller.user.id),
        caller.user.id,
        body,
        false,
    )
    .await
}

/// Turn any key off or on, or edit it (admin).
#[utoipa::path(patch, path = "/api/admin-api-keys/{id}", params(("id" = i64, Path)),
    request_body = UpdateKeyBody,
    responses((status = 200, body = KeyRecord), (status = 400, description = "invalid request"),
        (status = 404, description = "not found")))]
pub async fn admin_update(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Result<Json<UpdateKeyBody>, JsonRejection>,
) -> ApiResult<Json<KeyRecord>> {
    let id = key_id(&id)?;
    let Json(body) = body?;
    update_key(&st, &Actor::of(&admin), id, None, admin.user.id, body, true).await
}
