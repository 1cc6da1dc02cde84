//! MCP servers (admin; the list also for anyone, filtered to what they reach). The name is the `<server-name>` of `/mcp-connect/<server-name>/mcp`.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::{Admin, Person};
use crate::db::{self, servers};
use crate::domain::{MAX_DESCRIPTION, MAX_DISPLAY_NAME, Role, Text, format_time};
use crate::error::{ApiError, ApiResult};
use crate::routes::keys::Deleted;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_protocol::ServerName;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateServerBody {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Replaces displayName and description; `name`, if given, must match the path.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateServerBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerRecord {
    /// Same as `name`: keys list servers by this id.
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServerList {
    pub items: Vec<ServerRecord>,
}

fn record(s: servers::ServerRow) -> ServerRecord {
    ServerRecord {
        id: s.name.clone(),
        name: s.name,
        display_name: s.display_name,
        description: s.description,
        created_at: format_time(s.created_at),
    }
}

const NOT_FOUND: ApiError = ApiError::NotFound("MCP server not found");

/// A server name from the path: anything that is not a valid name names no
/// server (and never reaches the database, where PostgreSQL refuses a NUL).
fn path_name(name: &str) -> Result<&str, ApiError> {
    if keygate_protocol::server_name::is_valid_server_name(name.as_bytes()) {
        Ok(name)
    } else {
        Err(NOT_FOUND)
    }
}

fn texts(name: &str, display: Option<String>, desc: Option<String>) -> ApiResult<(Text, Text)> {
    let display = Text::parse(
        "displayName",
        Some(display.unwrap_or_else(|| name.to_owned())),
        MAX_DISPLAY_NAME,
    )?;
    let desc = Text::parse("description", desc, MAX_DESCRIPTION)?;
    Ok((display, desc))
}

/// MCP servers: every one for an admin; for anyone else, the ones their
/// access rules let them reach (what a key of theirs may name).
#[utoipa::path(get, path = "/api/mcp-servers", responses((status = 200, body = ServerList)))]
pub async fn list(
    State(st): State<AppState>,
    Person(caller): Person,
) -> ApiResult<Json<ServerList>> {
    let mut conn = st.db.conn().await?;
    let rows = servers::list(&mut conn).await?;
    let rows = if caller.role == Role::Admin {
        rows
    } else {
        let access = db::feed::user_access(&mut conn, caller.user.id).await?;
        rows.into_iter()
            .filter(|s| access.contains(s.name.as_str()))
            .collect()
    };
    Ok(Json(ServerList {
        items: rows.into_iter().map(record).collect(),
    }))
}

#[utoipa::path(post, path = "/api/mcp-servers", request_body = CreateServerBody,
    responses((status = 201, body = ServerRecord), (status = 409, description = "name taken")))]
pub async fn create(
    State(st): State<AppState>,
    Admin(admin): Admin,
    body: Result<Json<CreateServerBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ServerRecord>)> {
    let Json(b) = body?;
    let name = ServerName::parse(&b.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (display, desc) = texts(name.as_str(), b.display_name, b.description)?;
    // A new version, so long polls answer at once and every edge learns the
    // name (the feed's list of registered servers) without waiting.
    let mut tx = st.db.begin_write().await?;
    let row = servers::create(&mut tx, name.as_str(), display.as_str(), desc.as_str()).await?;
    db::feed::bump(&mut tx, &st.db).await?;
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::ServerCreated,
        Target::Server(row.name.clone()),
        serde_json::json!({"displayName": row.display_name}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(record(row))))
}

#[utoipa::path(get, path = "/api/mcp-servers/{name}", params(("name" = String, Path)),
    responses((status = 200, body = ServerRecord), (status = 404, description = "not found")))]
pub async fn get(
    State(st): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<ServerRecord>> {
    let name = path_name(&name)?;
    let mut conn = st.db.conn().await?;
    let row = servers::get(&mut conn, name).await?.ok_or(NOT_FOUND)?;
    Ok(Json(record(row)))
}

#[utoipa::path(put, path = "/api/mcp-servers/{name}", params(("name" = String, Path)), request_body = UpdateServerBody,
    responses((status = 200, body = ServerRecord), (status = 404, description = "not found")))]
pub async fn update(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    body: Result<Json<UpdateServerBody>, JsonRejection>,
) -> ApiResult<Json<ServerRecord>> {
    let name = path_name(&name)?;
    let Json(b) = body?;
    if b.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad_request("an MCP server cannot be renamed"));
    }
    let (display, desc) = texts(name, b.display_name, b.description)?;
    let mut tx = st.db.begin_plain_write().await?;
    let row = servers::update(&mut tx, name, display.as_str(), desc.as_str())
        .await?
        .ok_or(NOT_FOUND)?;
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::ServerChanged,
        Target::Server(row.name.clone()),
        serde_json::json!({"displayName": row.display_name}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(record(row)))
}

/// Delete a server; it leaves every key scope and access rule.
#[utoipa::path(delete, path = "/api/mcp-servers/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, description = "not found")))]
pub async fn delete(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let name = path_name(&name)?;
    let mut tx = st.db.begin_write().await?;
    if !servers::delete(&mut tx, &st.db, name).await? {
        return Err(NOT_FOUND);
    }
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::ServerDeleted,
        Target::Server(name.to_owned()),
        serde_json::Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Deleted { deleted: true }))
}
