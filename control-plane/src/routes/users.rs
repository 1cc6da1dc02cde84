//! Users (admin) and `GET /api/me` (any credential, API keys included).

use crate::AppState;
use crate::auth::{Admin, AnyCaller};
use crate::db::users;
use crate::domain::{Email, Role, Username, format_time, parse_id};
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
    #[serde(default)]
    pub role: Option<Role>,
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
    pub created_at: String,
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

fn record(u: users::UserRow) -> UserRecord {
    UserRecord {
        role: u.role(),
        id: u.id,
        username: u.username,
        email: u.email,
        created_at: format_time(u.created_at),
    }
}

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
    _admin: Admin,
    body: Result<Json<CreateUserBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<UserRecord>)> {
    let Json(b) = body?;
    let username = Username::parse(&b.username)?;
    let email = b.email.as_deref().map(Email::parse).transpose()?;
    let mut conn = st.db.conn().await?;
    let row = users::create(
        &mut conn,
        username.as_str(),
        email.as_ref().map(Email::as_str),
        b.role.unwrap_or(Role::User),
        None,
    )
    .await?;
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
    responses((status = 200, body = UserRecord), (status = 404, description = "not found")))]
pub async fn update(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    body: Result<Json<UpdateUserBody>, JsonRejection>,
) -> ApiResult<Json<UserRecord>> {
    let id = user_id(&id)?;
    let Json(b) = body?;
    let email = b.email.as_deref().map(Email::parse).transpose()?;
    let mut conn = st.db.conn().await?;
    let row = users::update(&mut conn, id, b.role, email.as_ref().map(Email::as_str))
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    Ok(Json(record(row)))
}

/// Delete a user and all their keys.
#[utoipa::path(delete, path = "/api/users/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Deleted), (status = 404, description = "not found")))]
pub async fn delete(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let id = user_id(&id)?;
    let mut tx = st.db.begin_write().await?;
    if !users::delete(&mut tx, &st.db, id).await? {
        return Err(ApiError::NotFound("user not found"));
    }
    tx.commit().await?;
    st.feed.changed();
    tracing::info!(user_id = id, "user deleted");
    Ok(Json(Deleted { deleted: true }))
}
