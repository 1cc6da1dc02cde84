//! Users (admin) and `GET /api/me` (any credential, API keys included).
//! A role set here pins it (`roleSource: "api"`); `{"roleSource":"oidc"}`
//! hands it back to the identity provider.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::{Admin, AnyCaller};
use crate::db::users;
use crate::domain::{Email, Role, RoleSource, Username, format_time, parse_id};
use crate::error::{ApiError, ApiResult};
use crate::routes::keys::Deleted;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserBody {
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserBody {
    /// Sets the role and pins it (`roleSource` becomes `api`).
    #[serde(default)]
    pub role: Option<Role>,
    /// `oidc` hands the role back to the identity provider (the next token
    /// decides); `api` pins the current role.
    #[serde(default)]
    pub role_source: Option<RoleSource>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
    /// `oidc`: follows the identity provider; `api`: set through the API;
    /// `builtin`: the built-in admin.
    pub role_source: RoleSource,
    pub created_at: String,
    /// When an admin suspended the user; `null` unless suspended.
    pub suspended_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserRecord>,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
}

pub(crate) fn record(u: users::UserRow) -> UserRecord {
    UserRecord {
        suspended_at: u.suspended_at.map(format_time),
        role: u.role(),
        role_source: u.role_source(),
        id: u.id,
        username: u.username,
        email: u.email,
        created_at: format_time(u.created_at),
    }
}

const MSG_ROLE_AND_OIDC: &str = "role cannot be set while handing it to the identity provider";
const MSG_BUILTIN_ROLE: &str = "the built-in admin's role cannot be changed";

fn user_id(raw: &str) -> ApiResult<i64> {
    parse_id(raw).ok_or(ApiError::NotFound("user not found"))
}

/// The caller. Works with every credential, an API key included.
#[utoipa::path(get, path = "/api/me", responses((status = 200, body = Me), (status = 401, description = "not authenticated")))]
pub async fn me(AnyCaller(caller): AnyCaller) -> Json<Me> {
    Json(Me {
        id: caller.user.id,
        username: caller.user.username,
        email: caller.user.email,
        role: caller.role,
    })
}

#[utoipa::path(get, path = "/api/users", responses((status = 200, body = UserList)))]
pub async fn list(State(st): State<AppState>, _admin: Admin) -> ApiResult<Json<UserList>> {
    let mut conn = st.db.conn().await?;
    let rows = users::list(&mut conn).await?;
    Ok(Json(UserList {
        items: rows.into_iter().map(record).collect(),
    }))
}

#[utoipa::path(post, path = "/api/users", request_body = CreateUserBody,
    responses((status = 201, body = UserRecord), (status = 409, description = "username taken")))]
pub async fn create(
    State(st): State<AppState>,
    Admin(admin): Admin,
    body: Result<Json<CreateUserBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<UserRecord>)> {
    let Json(b) = body?;
    let username = Username::parse(&b.username)?;
    if users::is_reserved_name(username.as_str()) {
        return Err(ApiError::Conflict(
            "username is reserved for the built-in admin",
        ));
    }
    let email = b.email.as_deref().map(Email::parse).transpose()?;
    let mut tx = st.db.begin_plain_write().await?;
    let row = users::create(
        &mut tx,
        username.as_str(),
        email.as_ref().map(Email::as_str),
        b.role.unwrap_or(Role::User),
        RoleSource::Api,
        None,
    )
    .await?;
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::UserCreated,
        Target::User(row.id),
        serde_json::json!({"role": row.role}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(record(row))))
}

#[utoipa::path(get, path = "/api/users/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = UserRecord), (status = 404, description = "not found")))]
pub async fn get(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<UserRecord>> {
    let id = user_id(&id)?;
    let mut conn = st.db.conn().await?;
    let row = users::get(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    Ok(Json(record(row)))
}

/// Change a user's role (or email). Access, and so the key table, is unaffected.
#[utoipa::path(patch, path = "/api/users/{id}", params(("id" = i64, Path)), request_body = UpdateUserBody,
    responses((status = 200, body = UserRecord), (status = 404, description = "not found"),
        (status = 409, description = "built-in admin, or no OIDC identity to follow")))]
pub async fn update(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Result<Json<UpdateUserBody>, JsonRejection>,
) -> ApiResult<Json<UserRecord>> {
    let id = user_id(&id)?;
    let Json(b) = body?;
    let email = b.email.as_deref().map(Email::parse).transpose()?;
    let source = match (b.role, b.role_source) {
        (_, Some(RoleSource::Builtin)) => {
            return Err(ApiError::bad_request(
                "roleSource must be \"oidc\" or \"api\"",
            ));
        }
        (Some(_), Some(RoleSource::Oidc)) => {
            return Err(ApiError::bad_request(MSG_ROLE_AND_OIDC));
        }
        (Some(_), _) => Some(RoleSource::Api),
        (None, s) => s,
    };
    let mut tx = st.db.begin_plain_write().await?;
    let before = users::get(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    let row = before.clone();
    if let Some(source) = source {
        if row.role_source() == RoleSource::Builtin {
            return Err(ApiError::Conflict(MSG_BUILTIN_ROLE));
        }
        if source == RoleSource::Oidc && row.oidc_subject.is_none() {
            return Err(ApiError::Conflict("user has no OIDC identity"));
        }
        // Handing back to the provider keeps the role until the next token.
        let role = b.role.unwrap_or(row.role());
        if !users::set_role(&mut tx, id, role, source).await? {
            return Err(ApiError::NotFound("user not found"));
        }
        if role != row.role() || source != row.role_source() {
            tracing::info!(
                user_id = id,
                old_role = row.role().as_str(),
                new_role = role.as_str(),
                old_source = row.role_source().as_str(),
                source = source.as_str(),
                "user role changed"
            );
        }
    }
    if let Some(email) = &email {
        users::set_email(&mut tx, id, email.as_str()).await?;
    }
    let row = users::get(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    if let Some(details) = audit::user_change_details(&before, &row) {
        audit::record(
            &mut tx,
            &Actor::of(&admin),
            Action::UserChanged,
            Target::User(id),
            details,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(record(row)))
}

/// Delete a user; their keys are revoked (kept on record, `?include=revoked`).
#[utoipa::path(delete, path = "/api/users/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Deleted), (status = 404, description = "not found"),
        (status = 409, description = "the built-in admin cannot be deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let id = user_id(&id)?;
    let mut tx = st.db.begin_write().await?;
    audit::record_user_deletion(&mut tx, &Actor::of(&admin), id).await?;
    match users::delete(&mut tx, &st.db, id, admin.user.id).await? {
        users::DeleteOutcome::Deleted => {}
        users::DeleteOutcome::NotFound => return Err(ApiError::NotFound("user not found")),
        users::DeleteOutcome::Builtin => {
            return Err(ApiError::Conflict("the built-in admin cannot be deleted"));
        }
    }
    tx.commit().await?;
    tracing::info!(user_id = id, "user deleted");
    Ok(Json(Deleted { deleted: true }))
}
