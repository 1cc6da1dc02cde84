//! Queries on users. Deleting a user also revokes their keys (kept on record).
//! Each user records where their role comes from (`role_source`, see
//! [`RoleSource`]); role writes here keep that record in step.

use super::{Conn, Db, Tx, feed, is_unique_violation, revocations};
use crate::domain::{Role, RoleSource, now_unix, skeleton_of};
use crate::error::ApiError;

/// The columns every query returns, in [`UserRow`] order.
macro_rules! columns {
    () => {
        "id, username, email, role, role_source, oidc_issuer, oidc_subject, created_at, suspended_at"
    };
}

/// Username the built-in admin (the user the admin token acts as) gets when
/// created; if another user already has it (an upgraded database where an
/// OIDC sign-in took the name), `keygate-admin`, then `keygate-admin-2`, ….
/// The built-in admin is found by its mark (`role_source = 'builtin'`),
/// never by name.
pub const BUILTIN_ADMIN: &str = "admin";
const BUILTIN_ADMIN_FALLBACK: &str = "keygate-admin";

/// Names no one but the built-in admin gets, so no one can pass for it in a
/// list of users: `admin` and `keygate-admin…`, and every name that only
/// looks like them (any case, homoglyphs, fullwidth or invisible characters).
pub fn is_reserved_name(name: &str) -> bool {
    let skeleton = skeleton_of(name);
    skeleton == skeleton_of(BUILTIN_ADMIN)
        || skeleton.starts_with(&skeleton_of(BUILTIN_ADMIN_FALLBACK))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub role_source: String,
    pub oidc_issuer: Option<String>,
    pub oidc_subject: Option<String>,
    pub created_at: i64,
    /// Set while an admin has suspended the user.
    pub suspended_at: Option<i64>,
}

impl UserRow {
    pub fn role(&self) -> Role {
        Role::from_db(&self.role)
    }
    pub fn role_source(&self) -> RoleSource {
        RoleSource::from_db(&self.role_source)
    }
}

pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The built-in admin, by its mark.
pub async fn get_builtin(conn: &mut Conn) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE role_source = 'builtin'"
    ))
    .fetch_optional(conn)
    .await
}

/// The user of an OIDC identity: this subject at this issuer.
pub async fn get_by_oidc_identity(
    conn: &mut Conn,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE oidc_subject = $1 AND oidc_issuer = $2"
    ))
    .bind(subject)
    .bind(issuer)
    .fetch_optional(conn)
    .await
}

/// Gives OIDC users from before issuers were recorded (subject only) the
/// configured issuer, the one that created them. Run at start; returns how
/// many users it stamped.
pub async fn stamp_oidc_issuer(conn: &mut Conn, issuer: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET oidc_issuer = $1 WHERE oidc_subject IS NOT NULL AND oidc_issuer IS NULL",
    )
    .bind(issuer)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub async fn list(conn: &mut Conn) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM users ORDER BY id"))
        .fetch_all(conn)
        .await
}

/// Inserts a user, with its OIDC identity `(issuer, subject)` if it has
/// one; a taken username (or OIDC subject) is a 409.
pub async fn create(
    conn: &mut Conn,
    username: &str,
    email: Option<&str>,
    role: Role,
    role_source: RoleSource,
    oidc: Option<(&str, &str)>,
) -> Result<UserRow, ApiError> {
    let res = sqlx::query_as(concat!(
        "INSERT INTO users (username, email, role, role_source, oidc_issuer, oidc_subject, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        columns!()
    ))
    .bind(username)
    .bind(email)
    .bind(role.as_str())
    .bind(role_source.as_str())
    .bind(oidc.map(|(issuer, _)| issuer))
    .bind(oidc.map(|(_, subject)| subject))
    .bind(now_unix())
    .fetch_one(conn)
    .await;
    match res {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict("username already exists")),
        Err(e) => Err(e.into()),
    }
}

/// The built-in admin user, created on first use. It cannot be deleted, so
/// it is created once per database; its mark is unique, so concurrent
/// replicas agree on one.
pub async fn ensure_builtin_admin(db: &Db) -> Result<UserRow, ApiError> {
    let mut conn = db.conn().await?;
    if let Some(u) = get_builtin(&mut conn).await? {
        return Ok(u);
    }
    let names = [BUILTIN_ADMIN.to_owned(), BUILTIN_ADMIN_FALLBACK.to_owned()]
        .into_iter()
        .chain((2..=20).map(|n| format!("{BUILTIN_ADMIN_FALLBACK}-{n}")));
    for name in names {
        match create(
            &mut conn,
            &name,
            None,
            Role::Admin,
            RoleSource::Builtin,
            None,
        )
        .await
        {
            Ok(u) => {
                tracing::info!(user_id = u.id, username = %u.username, "built-in admin created");
                return Ok(u);
            }
            // Another replica created it first, or the name is taken.
            Err(ApiError::Conflict(_)) => {
                if let Some(u) = get_builtin(&mut conn).await? {
                    return Ok(u);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Internal(
        "no free username for the built-in admin".into(),
    ))
}

/// Sets a role and where it comes from; never touches the built-in admin.
/// Returns false when no such (non-built-in) user exists.
pub async fn set_role(
    conn: &mut Conn,
    id: i64,
    role: Role,
    source: RoleSource,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET role = $1, role_source = $2 WHERE id = $3 AND role_source <> 'builtin'",
    )
    .bind(role.as_str())
    .bind(source.as_str())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Applies the role an OIDC token implies, only while the user's role still
/// follows the provider (a concurrent API pin wins). True if it changed.
pub async fn follow_oidc_role(conn: &mut Conn, id: i64, role: Role) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET role = $1 WHERE id = $2 AND role_source = 'oidc' AND role <> $3",
    )
    .bind(role.as_str())
    .bind(id)
    .bind(role.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_email(conn: &mut Conn, id: i64, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
        .bind(email)
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Suspends a user (`true`) or lifts it (`false`); never the built-in admin.
/// `None` when there is no such (non-built-in) user, else whether it changed.
/// Their keys leave (or rejoin) every edge's table in the same feed change,
/// and a suspension ends their console sessions.
pub async fn set_suspended(
    tx: &mut Tx,
    db: &Db,
    id: i64,
    suspended: bool,
) -> Result<Option<bool>, sqlx::Error> {
    let user = match get(tx, id).await? {
        Some(u) if u.role_source() != RoleSource::Builtin => u,
        _ => return Ok(None),
    };
    if user.suspended_at.is_some() == suspended {
        return Ok(Some(false));
    }
    sqlx::query("UPDATE users SET suspended_at = $1 WHERE id = $2")
        .bind(suspended.then(now_unix))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if suspended {
        // Their console sessions end everywhere, not just get refused.
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let version = feed::bump(tx, db).await?;
    feed::log_user_keys(tx, version, id).await?;
    Ok(Some(true))
}

pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// The built-in admin is never deleted.
    Builtin,
}

/// Why the keys of a deleted user were revoked, in their records.
pub const REASON_USER_DELETED: &str = "user deleted";

/// Deletes a user, their rule memberships and their sessions (signed out
/// everywhere at once), on behalf of admin `by`. Their keys are revoked (off
/// every edge at once, records kept).
pub async fn delete(tx: &mut Tx, db: &Db, id: i64, by: i64) -> Result<DeleteOutcome, sqlx::Error> {
    match get(tx, id).await? {
        None => return Ok(DeleteOutcome::NotFound),
        Some(u) if u.role_source() == RoleSource::Builtin => return Ok(DeleteOutcome::Builtin),
        Some(_) => {}
    }
    let how = revocations::Revocation {
        by,
        reason: Some(REASON_USER_DELETED),
    };
    revocations::revoke_all_of(tx, db, id, how).await?;
    sqlx::query("DELETE FROM access_rule_subjects WHERE user_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1 AND role_source <> 'builtin'")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(DeleteOutcome::Deleted)
}
