//! `/api/settings/key-policy`: the key lifetime policy. Every signed-in
//! person reads it (the console's Create API Key dialog shows the default
//! and the maximum); admins set it. API keys read nothing here: a key opens
//! only MCP servers and `/api/me`. What the policy does is decided in
//! [`crate::domain::key_policy`]; it is stored by [`crate::db::settings`].

use crate::AppState;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::{Admin, Person};
use crate::db::settings::{self, StoredKeyPolicy};
use crate::domain::format_time;
use crate::domain::key_policy::KeyPolicy;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Serialize;
use utoipa::ToSchema;

/// The policy as the API shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyRecord {
    #[serde(flatten)]
    pub policy: KeyPolicy,
    /// When an admin last set it; `null` if never.
    pub updated_at: Option<String>,
    /// The user who last set it; `null` if never.
    pub updated_by: Option<i64>,
}

/// The body of `PUT`: each limit a whole number of days from 1 to 3650, or
/// `null` (or left out) for no limit; `defaultLifetimeDays` at most
/// `maxLifetimeDays`.
/// (A documentation mirror: the handler parses the body with
/// [`KeyPolicy::from_json`], for messages that name the field.)
#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct KeyPolicyBody {
    maxLifetimeDays: Option<u32>,
    defaultLifetimeDays: Option<u32>,
    maxUnusedDays: Option<u32>,
}

/// The expiry of a key created at `now` under the stored policy (see
/// [`KeyPolicy::new_key_expiry`]).
pub(crate) async fn new_key_expiry(
    conn: &mut crate::db::Conn,
    requested: Option<i64>,
    now: i64,
) -> ApiResult<Option<i64>> {
    let policy = settings::key_policy(conn).await?.policy;
    policy.new_key_expiry(requested, now)
}

/// Refuses an expiry edit the stored policy does not allow (see
/// [`KeyPolicy::check_expiry_edit`]).
pub(crate) async fn check_expiry_edit(
    conn: &mut crate::db::Conn,
    new: Option<i64>,
    current: Option<i64>,
    created_at: i64,
) -> ApiResult<()> {
    let policy = settings::key_policy(conn).await?.policy;
    policy.check_expiry_edit(new, current, created_at)
}

fn record(stored: StoredKeyPolicy) -> KeyPolicyRecord {
    KeyPolicyRecord {
        policy: stored.policy,
        updated_at: stored.updated_at.map(format_time),
        updated_by: stored.updated_by,
    }
}

/// The key lifetime policy (any signed-in person; not an API key).
#[utoipa::path(get, path = "/api/settings/key-policy",
    responses((status = 200, body = KeyPolicyRecord), (status = 401, description = "not signed in"),
        (status = 403, description = "an API key")))]
pub async fn get(State(st): State<AppState>, _caller: Person) -> ApiResult<Json<KeyPolicyRecord>> {
    let mut conn = st.db.conn().await?;
    Ok(Json(record(settings::key_policy(&mut conn).await?)))
}

/// Set the key lifetime policy (admin). It replaces the whole policy: a
/// limit left out is no limit. Keys that exist keep their expiry;
/// `maxUnusedDays` applies to them at the next sweep.
#[utoipa::path(put, path = "/api/settings/key-policy", request_body = KeyPolicyBody,
    responses((status = 200, body = KeyPolicyRecord), (status = 400, description = "invalid policy"),
        (status = 403, description = "not an admin")))]
pub async fn put(
    State(st): State<AppState>,
    Admin(admin): Admin,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<Json<KeyPolicyRecord>> {
    let Json(body) = body?;
    let policy = KeyPolicy::from_json(&body)?;
    // The change and its audit event commit together.
    let mut tx = st.db.begin_plain_write().await?;
    settings::set_key_policy(&mut tx, &policy, st.clock.now(), admin.user.id).await?;
    let stored = settings::key_policy(&mut tx).await?;
    if stored.policy != policy {
        return Err(ApiError::Internal("key policy not stored as set".into()));
    }
    let details = serde_json::to_value(record(stored))
        .map_err(|e| ApiError::Internal(format!("key policy as JSON: {e}")))?;
    let target = Target::Settings(audit::KEY_POLICY);
    audit::record(
        &mut tx,
        &Actor::of(&admin),
        Action::KeyPolicyChanged,
        target,
        details,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        user_id = admin.user.id,
        max_lifetime_days = ?policy.max_lifetime_days,
        default_lifetime_days = ?policy.default_lifetime_days,
        max_unused_days = ?policy.max_unused_days,
        "key policy set"
    );
    Ok(Json(record(stored)))
}
