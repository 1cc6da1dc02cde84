//! API keys: `/api/api-keys` (the caller's own) and `/api/admin-api-keys`
//! (anyone's, for admins). The full key is returned once, by create.

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::{Admin, Person};
use crate::db::{self, keys, revocations, servers, users};
use crate::domain::key_status::KeyStatus;
use crate::domain::{
    MAX_DESCRIPTION, Name, ServerSelection, Text, format_time, now_unix, parse_expiry, parse_id,
};
use crate::error::{ApiError, ApiResult};
use crate::routes::key_policy;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use keygate_protocol::{ApiKeyToken, Secret};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyBody {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339, in the future.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Server names, or `["*"]` for every server the owner can reach.
    pub mcp_server_ids: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAdminKeyBody {
    pub user_id: i64,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    pub mcp_server_ids: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: i64,
    pub user_id: i64,
    /// Admin views only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub mcp_server_ids: Vec<String>,
    /// Single-key reads of live keys only: each server in the key's scope and
    /// whether its owner can reach it now (a `*` key: the servers its owner
    /// reaches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<ServerReach>>,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: KeyStatus,
    /// When the key was turned off; `null` unless `status` is `disabled`.
    pub disabled_at: Option<String>,
    /// Why, when the key policy turned it off (`unused for 30 days (key
    /// policy)`); `null` otherwise.
    pub disabled_reason: Option<String>,
    /// Revoked keys only (listed with `?include=revoked`): when, by which
    /// user, and the reason given (if any).
    pub revoked_at: Option<String>,
    pub revoked_by: Option<i64>,
    pub revoke_reason: Option<String>,
    /// When the key was last given a new secret; `null` if never.
    pub rotated_at: Option<String>,
    /// During a rotation's overlap only: when the old secret stops working.
    pub previous_secret_expires_at: Option<String>,
    /// During a rotation's overlap only: the latest use of the old secret
    /// an edge reported (`null`: none seen since the rotation).
    pub previous_secret_last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ServerReach {
    pub name: String,
    pub reachable: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: KeyRecord,
    /// The full key. Shown only here, once.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyRecord>,
    /// Paged lists only: how many keys match the filter in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// `GET /api/admin-api-keys` paging and filter.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminListQuery {
    #[serde(default)]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
    /// `revoked` to include revoked keys.
    #[serde(default)]
    pub include: Option<String>,
}

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: bool,
}

pub(crate) fn record(row: keys::KeyRow, with_username: bool) -> KeyRecord {
    let h = row.head;
    let overlap = crate::routes::key_rotation::Overlap::of(&h, now_unix());
    KeyRecord {
        rotated_at: h.rotated_at.map(format_time),
        previous_secret_expires_at: overlap.ends_at,
        previous_secret_last_used_at: overlap.last_used_at,
        status: KeyStatus::of(h.disabled_at, h.expires_at, now_unix()),
        disabled_at: h.disabled_at.map(format_time),
        disabled_reason: h.disabled_reason,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        id: h.id,
        user_id: h.user_id,
        username: with_username.then_some(h.username),
        name: h.name,
        description: h.description,
        created_at: format_time(h.created_at),
        last_used_at: h.last_used_at.map(format_time),
        expires_at: h.expires_at.map(format_time),
        mcp_server_ids: row.server_ids,
        servers: None,
    }
}

/// A key record with `servers`: its scope against its owner's access now
/// ([`crate::domain::access`] decides, through [`db::feed::user_access`]).
async fn detail(
    conn: &mut db::Conn,
    row: keys::KeyRow,
    with_username: bool,
) -> ApiResult<KeyRecord> {
    let access = db::feed::user_access(conn, row.head.user_id).await?;
    let reach = if row.head.all_servers == 1 {
        let all = servers::list(conn).await?;
        all.into_iter()
            .filter(|s| access.contains(&s.name))
            .map(|s| ServerReach {
                name: s.name,
                reachable: true,
            })
            .collect()
    } else {
        row.server_ids
            .iter()
            .map(|n| ServerReach {
                name: n.clone(),
                reachable: access.contains(n),
            })
            .collect()
    };
    let mut r = record(row, with_username);
    r.servers = Some(reach);
    Ok(r)
}

/// A revoked key's record, as lists with `?include=revoked` show it.
fn revoked_record(r: revocations::RevokedRow, with_username: bool) -> KeyRecord {
    KeyRecord {
        mcp_server_ids: r.server_ids(),
        id: r.id,
        user_id: r.user_id,
        username: with_username.then_some(r.username),
        name: r.name,
        description: r.description,
        created_at: format_time(r.created_at),
        last_used_at: r.last_used_at.map(format_time),
        expires_at: r.expires_at.map(format_time),
        status: KeyStatus::Revoked,
        disabled_at: None,
        disabled_reason: None,
        revoked_at: Some(format_time(r.revoked_at)),
        revoked_by: Some(r.revoked_by),
        revoke_reason: r.reason,
        rotated_at: None,
        previous_secret_expires_at: None,
        previous_secret_last_used_at: None,
        servers: None,
    }
}

/// `?include=revoked`: lists and details show revoked keys too (hidden by default).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncludeQuery {
    /// `revoked` to include revoked keys.
    include: Option<String>,
}

impl IncludeQuery {
    fn revoked(&self) -> ApiResult<bool> {
        include_revoked(self.include.as_deref())
    }
}

fn include_revoked(include: Option<&str>) -> ApiResult<bool> {
    match include {
        None => Ok(false),
        Some("revoked") => Ok(true),
        Some(_) => Err(ApiError::bad_request("include must be \"revoked\"")),
    }
}

/// Keys (of `owner`, or everyone's) newest first, revoked ones too when asked.
async fn list_keys(
    st: &AppState,
    owner: Option<i64>,
    with_username: bool,
    with_revoked: bool,
) -> ApiResult<Vec<KeyRecord>> {
    let mut conn = st.db.conn().await?;
    let mut rows: Vec<(i64, i64, KeyRecord)> = keys::list(&mut conn, owner)
        .await?
        .into_iter()
        .map(|r| (r.head.created_at, r.head.id, record(r, with_username)))
        .collect();
    if with_revoked {
        rows.extend(
            revocations::list(&mut conn, owner)
                .await?
                .into_iter()
                .map(|r| (r.created_at, r.id, revoked_record(r, with_username))),
        );
        rows.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
    }
    Ok(rows.into_iter().map(|(_, _, r)| r).collect())
}

/// One key (only `owner`'s, with `owner`); a revoked one only when asked.
async fn get_key(
    st: &AppState,
    id: i64,
    owner: Option<i64>,
    include: Result<Query<IncludeQuery>, QueryRejection>,
) -> ApiResult<Json<KeyRecord>> {
    let Query(include) = include?;
    let with_revoked = include.revoked()?;
    let with_username = owner.is_none();
    let mut conn = st.db.conn().await?;
    if let Some(row) = keys::get(&mut conn, id, owner).await? {
        return Ok(Json(detail(&mut conn, row, with_username).await?));
    }
    if with_revoked && let Some(row) = revocations::get(&mut conn, id, owner).await? {
        return Ok(Json(revoked_record(row, with_username)));
    }
    Err(ApiError::NotFound("API key not found"))
}

/// `?reason=` on a revocation.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Why the key is revoked (kept in its record; at most 500 characters).
    reason: Option<String>,
}

/// The optional body of a revocation: `{"reason": "..."}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The reason of a revocation, from `?reason=` or the JSON body (not both).
fn revoke_reason(
    query: Result<Query<RevokeQuery>, QueryRejection>,
    body: &Bytes,
) -> ApiResult<Option<String>> {
    let Query(query) = query?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RevokeBody>(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            .reason
    };
    let reason = match (query.reason, from_body) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("reason given twice (query and body)"));
        }
        (a, b) => a.or(b),
    };
    reason
        .map(|r| Text::parse("reason", Some(r), MAX_DESCRIPTION).map(|t| t.as_str().to_owned()))
        .transpose()
}

pub(crate) fn new_secret() -> ApiResult<Secret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("OS random source failed: {e}")))?;
    Ok(Secret::from_bytes(bytes))
}

struct KeyRequest {
    name: String,
    description: Option<String>,
    expires_at: Option<String>,
    mcp_server_ids: Vec<String>,
}

/// Validates and creates a key for `owner`; returns the record and the full key.
async fn create_key(
    st: &AppState,
    actor: &Actor,
    owner: &users::UserRow,
    req: KeyRequest,
    with_username: bool,
) -> ApiResult<CreatedKey> {
    let name = Name::parse("name", &req.name)?;
    let description = Text::parse("description", req.description, MAX_DESCRIPTION)?;
    let scope = ServerSelection::parse(&req.mcp_server_ids)?;
    let now = st.clock.now();
    let requested = req
        .expires_at
        .as_deref()
        .map(|s| parse_expiry(s, now))
        .transpose()?;
    let secret = new_secret()?;
    let secret_hash_hex = secret.hash().to_hex();

    let mut tx = st.db.begin_write().await?;
    let expires_at = key_policy::new_key_expiry(&mut tx, requested, now).await?;
    // Counted under the write lock, so a concurrent burst cannot overshoot.
    let limit = st.max_keys_per_user;
    if keys::count_active(&mut tx, owner.id).await? >= i64::from(limit) {
        return Err(ApiError::LimitReached(format!(
            "key limit reached ({limit})"
        )));
    }
    if let ServerSelection::Named(names) = &scope {
        let access = db::feed::user_access(&mut tx, owner.id).await?;
        for n in names {
            // One message for unknown and unreachable: names are not an oracle.
            if !access.contains(n.as_str()) || !servers::exists(&mut tx, n.as_str()).await? {
                return Err(ApiError::bad_request(format!(
                    "unknown or unreachable MCP server: {n}"
                )));
            }
        }
    }
    let key_id = keys::create(
        &mut tx,
        &st.db,
        keys::NewKey {
            user_id: owner.id,
            name: name.as_str(),
            description: description.as_str(),
            secret_hash_hex,
            scope: &scope,
            expires_at,
        },
    )
    .await?;
    let details = audit::key_created_details(&scope, expires_at);
    audit::record(
        &mut tx,
        actor,
        Action::KeyCreated,
        Target::Key(key_id),
        details,
    )
    .await?;
    let row = keys::get(&mut tx, key_id, None)
        .await?
        .ok_or_else(|| ApiError::Internal("created key vanished".into()))?;
    tx.commit().await?;
    st.metrics.keys_created.inc();
    tracing::info!(key_id, user_id = owner.id, "API key created");
    let key = ApiKeyToken {
        user_id: owner.id,
        key_id,
        secret,
    }
    .encode();
    Ok(CreatedKey {
        record: record(row, with_username),
        key,
    })
}

/// Revokes a key (only `owner`'s, with `owner`) on behalf of `by`: it leaves
/// every edge like a deletion, and its record stays.
async fn delete_key(
    st: &AppState,
    actor: &Actor,
    id: i64,
    owner: Option<i64>,
    by: i64,
    reason: Option<String>,
) -> ApiResult<Json<Deleted>> {
    let how = revocations::Revocation {
        by,
        reason: reason.as_deref(),
    };
    let mut tx = st.db.begin_write().await?;
    if !revocations::revoke(&mut tx, &st.db, id, owner, how).await? {
        return Err(ApiError::NotFound("API key not found"));
    }
    audit::record(
        &mut tx,
        actor,
        Action::KeyRevoked,
        Target::Key(id),
        serde_json::json!({"reason": reason}),
    )
    .await?;
    tx.commit().await?;
    st.metrics.keys_deleted.inc();
    tracing::info!(key_id = id, revoked_by = by, "API key revoked");
    Ok(Json(Deleted { deleted: true }))
}

pub(crate) fn key_id(raw: &str) -> ApiResult<i64> {
    parse_id(raw).ok_or(ApiError::NotFound("API key not found"))
}

/// Create a key for yourself.
#[utoipa::path(post, path = "/api/api-keys", request_body = CreateKeyBody,
    responses((status = 201, body = CreatedKey), (status = 400, description = "invalid request"),
        (status = 409, description = "key limit reached")))]
pub async fn create_own(
    State(st): State<AppState>,
    Person(caller): Person,
    body: Result<Json<CreateKeyBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let Json(b) = body?;
    let req = KeyRequest {
        name: b.name,
        description: b.description,
        expires_at: b.expires_at,
        mcp_server_ids: b.mcp_server_ids,
    };
    let created = create_key(&st, &Actor::of(&caller), &caller.user, req, false).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Your keys, newest first; revoked ones only with `?include=revoked`.
#[utoipa::path(get, path = "/api/api-keys", params(IncludeQuery),
    responses((status = 200, body = KeyList), (status = 400, description = "bad include")))]
pub async fn list_own(
    State(st): State<AppState>,
    Person(caller): Person,
    include: Result<Query<IncludeQuery>, QueryRejection>,
) -> ApiResult<Json<KeyList>> {
    let Query(include) = include?;
    let items = list_keys(&st, Some(caller.user.id), false, include.revoked()?).await?;
    Ok(Json(KeyList { items, total: None }))
}

/// One of your keys; another user's key is a 404, and so is a revoked one
/// unless asked for with `?include=revoked`.
#[utoipa::path(get, path = "/api/api-keys/{id}", params(("id" = i64, Path), IncludeQuery),
    responses((status = 200, body = KeyRecord), (status = 404, description = "not found")))]
pub async fn get_own(
    State(st): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    include: Result<Query<IncludeQuery>, QueryRejection>,
) -> ApiResult<Json<KeyRecord>> {
    get_key(&st, key_id(&id)?, Some(caller.user.id), include).await
}

/// Revoke one of your keys: it stops at every edge at once and is kept on
/// record (`?include=revoked`), with an optional reason (`?reason=` or
/// `{"reason": "..."}`).
#[utoipa::path(delete, path = "/api/api-keys/{id}", params(("id" = i64, Path), RevokeQuery),
    request_body(content = RevokeBody, description = "optional: {\"reason\": \"...\"}"),
    responses((status = 200, body = Deleted), (status = 400, description = "invalid reason"),
        (status = 404, description = "not found")))]
pub async fn delete_own(
    State(st): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    query: Result<Query<RevokeQuery>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Json<Deleted>> {
    let id = key_id(&id)?;
    let reason = revoke_reason(query, &body)?;
    let me = caller.user.id;
    delete_key(&st, &Actor::of(&caller), id, Some(me), me, reason).await
}

/// Create a key on a user's behalf (admin). The key is shown once, to the admin.
#[utoipa::path(post, path = "/api/admin-api-keys", request_body = CreateAdminKeyBody,
    responses((status = 201, body = CreatedKey), (status = 400, description = "invalid request"),
        (status = 409, description = "key limit reached")))]
pub async fn admin_create(
    State(st): State<AppState>,
    Admin(admin): Admin,
    body: Result<Json<CreateAdminKeyBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let Json(b) = body?;
    let owner = {
        let mut conn = st.db.conn().await?;
        users::get(&mut conn, b.user_id)
            .await?
            .ok_or_else(|| ApiError::bad_request(format!("unknown user: {}", b.user_id)))?
    };
    let req = KeyRequest {
        name: b.name,
        description: b.description,
        expires_at: b.expires_at,
        mcp_server_ids: b.mcp_server_ids,
    };
    let created = create_key(&st, &Actor::of(&admin), &owner, req, true).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Keys of every user (or of `userId`), newest first, a page at a time
/// (`limit` 1–1000, default 100; `offset` from 0), with their owners'
/// usernames and the number matching in all (`total`) (admin); revoked
/// ones only with `?include=revoked`.
#[utoipa::path(get, path = "/api/admin-api-keys",
    params(("userId" = Option<i64>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query),
        ("include" = Option<String>, Query, description = "`revoked` to include revoked keys")),
    responses((status = 200, body = KeyList), (status = 400, description = "invalid query")))]
pub async fn admin_list(
    State(st): State<AppState>,
    _admin: Admin,
    query: Result<Query<AdminListQuery>, QueryRejection>,
) -> ApiResult<Json<KeyList>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("offset must be 0 or more"));
    }
    if q.user_id.is_some_and(|u| u <= 0) {
        return Err(ApiError::bad_request("userId must be a positive id"));
    }
    if include_revoked(q.include.as_deref())? {
        // Live keys and revocation records live in two tables: merged in
        // memory, then paged (revoked records are only asked for on purpose).
        let all = list_keys(&st, q.user_id, true, true).await?;
        let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(0);
        return Ok(Json(KeyList {
            items: all.into_iter().skip(start).take(take).collect(),
            total: Some(total),
        }));
    }
    let mut conn = st.db.conn().await?;
    let (rows, total) = keys::list_page(&mut conn, q.user_id, limit, offset).await?;
    Ok(Json(KeyList {
        items: rows.into_iter().map(|r| record(r, true)).collect(),
        total: Some(total),
    }))
}

/// Any key (admin); a revoked one only with `?include=revoked`.
#[utoipa::path(get, path = "/api/admin-api-keys/{id}", params(("id" = i64, Path), IncludeQuery),
    responses((status = 200, body = KeyRecord), (status = 404, description = "not found")))]
pub async fn admin_get(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    include: Result<Query<IncludeQuery>, QueryRejection>,
) -> ApiResult<Json<KeyRecord>> {
    get_key(&st, key_id(&id)?, None, include).await
}

/// Revoke any key (admin), kept on record, with an optional reason.
#[utoipa::path(delete, path = "/api/admin-api-keys/{id}", params(("id" = i64, Path), RevokeQuery),
    request_body(content = RevokeBody, description = "optional: {\"reason\": \"...\"}"),
    responses((status = 200, body = Deleted), (status = 400, description = "invalid reason"),
        (status = 404, description = "not found")))]
pub async fn admin_delete(
    State(st): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    query: Result<Query<RevokeQuery>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Json<Deleted>> {
    let id = key_id(&id)?;
    let reason = revoke_reason(query, &body)?;
    delete_key(&st, &Actor::of(&admin), id, None, admin.user.id, reason).await
}
