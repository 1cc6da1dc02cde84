//! Queries on users. Deleting a user also deletes their keys and tells the feed.
//! Each user records where their role comes from (`role_source`, see
//! [`RoleSource`]); role writes here keep that record in step.

use super::{Conn, Db, Tx, feed, is_unique_violation};
use crate::domain::{Role, RoleSource, now_unix};
use crate::error::ApiError;

/// The columns every query returns, in [`UserRow`] order.
macro_rules! columns {
    () => {
        "id, username, email, role, role_source, oidc_subject, created_at"
    };
}

/// Username of the built-in user the admin token acts as.
pub const BUILTIN_ADMIN: &str = "admin";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub role_source: String,
    pub oidc_subject: Option<String>,
    pub created_at: i64,
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

pub async fn get_by_username(conn: &mut Conn, name: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE username = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await
}

pub async fn get_by_oidc_subject(
    conn: &mut Conn,
    subject: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE oidc_subject = $1"
    ))
    .bind(subject)
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut Conn) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM users ORDER BY id"))
        .fetch_all(conn)
        .await
}

/// Inserts a user; a taken username (or OIDC subject) is a 409.
pub async fn create(
    conn: &mut Conn,
    username: &str,
    email: Option<&str>,
    role: Role,
    role_source: RoleSource,
    oidc_subject: Option<&str>,
) -> Result<UserRow, ApiError> {
    let res = sqlx::query_as(concat!(
        "INSERT INTO users (username, email, role, role_source, oidc_subject, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        columns!()
    ))
    .bind(username)
    .bind(email)
    .bind(role.as_str())
    .bind(role_source.as_str())
    .bind(oidc_subject)
    .bind(now_unix())
    .fetch_one(conn)
    .await;
    match res {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict("username already exists")),
        Err(e) => Err(e.into()),
    }
}

/// The built-in admin user, created on first use (and again if deleted).
pub async fn ensure_builtin_admin(db: &Db) -> Result<UserRow, ApiError> {
    let mut conn = db.conn().await?;
    if let Some(u) = get_by_username(&mut conn, BUILTIN_ADMIN).await? {
        return Ok(u);
    }
    match create(
        &mut conn,
        BUILTIN_ADMIN,
        None,
        Role::Admin,
        RoleSource::Builtin,
        None,
    )
    .await
    {
        Ok(u) => Ok(u),
        // Another request created it first.
        Err(ApiError::Conflict(_)) => get_by_username(&mut conn, BUILTIN_ADMIN)
            .await?
            .ok_or_else(|| ApiError::Internal("built-in admin vanished".into())),
        Err(e) => Err(e),
    }
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

/// Deletes a user with their keys and rule memberships. Returns false if absent.
pub async fn delete(tx: &mut Tx, db: &Db, id: i64) -> Result<bool, sqlx::Error> {
    if get(tx, id).await?.is_none() {
        return Ok(false);
    }
    let version = feed::bump(tx, db).await?;
    feed::log_user_keys(tx, version, id).await?;
    sqlx::query(
        "DELETE FROM api_key_servers WHERE key_id IN (SELECT id FROM api_keys WHERE user_id = $1)",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM api_keys WHERE user_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM access_rule_subjects WHERE user_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}
