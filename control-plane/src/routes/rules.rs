//! Access rules (admin): which subjects (users, or everyone) reach which
//! servers (named, or all). A user's access is the union of their rules.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::Admin;
use crate::db::{Tx, rules, servers, users};
use crate::domain::{Name, ServerSelection, Subjects, format_time, parse_id};
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
pub struct RuleBody {
    pub name: String,
    /// Server names, or `["*"]` for all servers, now and later.
    pub mcp_server_ids: Vec<String>,
    /// `["user:<id>", ...]`, or `["*"]` for everyone. `group:<name>` is reserved.
    pub subjects: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleRecord {
    pub id: i64,
    pub name: String,
    pub mcp_server_ids: Vec<String>,
    pub subjects: Vec<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct RuleList {
    pub items: Vec<RuleRecord>,
}

fn record(r: rules::RuleRow) -> RuleRecord {
    RuleRecord {
        id: r.id,
        name: r.name,
        mcp_server_ids: r.servers.to_ids(),
        subjects: r.subjects.to_strings(),
        created_at: format_time(r.created_at),
    }
}

/// What a rule's audit event says of it: its servers and subjects.
fn rule_details(r: &rules::RuleRow) -> serde_json::Value {
    serde_json::json!({"mcpServerIds": r.servers.to_ids(), "subjects": r.subjects.to_strings()})
}

const NOT_FOUND: ApiError = ApiError::NotFound("access rule not found");

fn rule_id(raw: &str) -> ApiResult<i64> {
    parse_id(raw).ok_or(NOT_FOUND)
}

struct ValidRule {
    name: Name,
    servers: ServerSelection,
    subjects: Subjects,
}

fn parse_body(b: RuleBody) -> ApiResult<ValidRule> {
    Ok(ValidRule {
        name: Name::parse("name", &b.name)?,
        servers: ServerSelection::parse(&b.mcp_server_ids)
            .map_err(|e| ApiError::bad_request(e.to_string().replace(" or unreachable", "")))?,
        subjects: Subjects::parse(&b.subjects)?,
    })
}

/// Checks, inside the write transaction, that every named server and user exists.
async fn check_refs(tx: &mut Tx, r: &ValidRule) -> ApiResult<()> {
    if let ServerSelection::Named(names) = &r.servers {
        for n in names {
            if !servers::exists(tx, n.as_str()).await? {
                return Err(ApiError::bad_request(format!("unknown MCP server: {n}")));
            }
        }
    }
    if let Subjects::Users(ids) = &r.subjects {
        for id in ids {
            if users::get(tx, *id).await?.is_none() {
                return Err(ApiError::bad_request(format!("unknown user: user:{id}")));
            }
        }
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/access-rules", responses((status = 200, body = RuleList)))]
pub async fn list(State(st): State<AppState>, _admin: Admin) -> ApiResult<Json<RuleList>> {
    let mut conn = st.db.conn().await?;
    let rows = rules::list(&mut conn).await?;
    Ok(Json(RuleList {
        items: rows.into_iter().map(record).collect(),
    }))
}

#[utoipa::path(post, path = "/api/access-rules", request_body = RuleBody,
    responses((status = 201, body = RuleRecord), (status = 400, description = "invalid rule")))]
pub async fn create(
    State(st): State<AppState>,
    Admin(admin): Admin,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RuleRecord>)> {
    let Json(b) = body?;
    let r = parse_body(b)?;
    let mut tx = st.db.begin_write().await?;
    check_refs(&mut tx, &r).await?;
    let row = rules::create(&mut tx, &st.db, r.name.as_str(), &r.servers, &r.subjects).await?;
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::RuleCreated,
        Target::Rule(row.id),
        rule_details(&row),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(record(row))))
}

#[utoipa::path(get, path = "/api/access-rules/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = RuleRecord), (status = 404, description = "not found")))]
pub async fn get(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RuleRecord>> {
    let id = rule_id(&id)?;
    let mut conn = st.db.conn().await?;
    let row = rules::get(&mut conn, id).await?.ok_or(NOT_FOUND)?;
    Ok(Json(record(row)))
}

/// Replace a rule.
#[utoipa::path(put, path = "/api/access-rules/{id}", params(("id" = i64, Path)), request_body = RuleBody,
    responses((status = 200, body = RuleRecord), (status = 404, description = "not found")))]
pub async fn update(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> ApiResult<Json<RuleRecord>> {
    let id = rule_id(&id)?;
    let Json(b) = body?;
    let r = parse_body(b)?;
    let mut tx = st.db.begin_write().await?;
    check_refs(&mut tx, &r).await?;
    let row = rules::update(
        &mut tx,
        &st.db,
        id,
        r.name.as_str(),
        &r.servers,
        &r.subjects,
    )
    .await?
    .ok_or(NOT_FOUND)?;
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::RuleChanged,
        Target::Rule(id),
        rule_details(&row),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(record(row)))
}

#[utoipa::path(delete, path = "/api/access-rules/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Deleted), (status = 404, description = "not found")))]
pub async fn delete(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let id = rule_id(&id)?;
    let mut tx = st.db.begin_write().await?;
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::RuleDeleted,
        Target::Rule(id),
        serde_json::Value::Null,
    )
    .await?;
    if !rules::delete(&mut tx, &st.db, id).await? {
        return Err(NOT_FOUND);
    }
    tx.commit().await?;
    Ok(Json(Deleted { deleted: true }))
}
