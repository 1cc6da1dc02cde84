//! Queries on users. Deleting a user also deletes their keys and tells the feed.

use super::{Conn, Db, Tx, feed, is_unique_violation};
use crate::domain::{Role, now_unix};
use crate::error::ApiError;

/// Username of the built-in user the admin token acts as.
pub const BUILTIN_ADMIN: &str = "admin";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub created_at: i64,
}

impl UserRow {
    pub fn role(&self) -> Role {
        Role::from_db(&self.role)
    }
}

pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, username, email, role, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn get_by_username(conn: &mut Conn, name: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, username, email, role, created_at FROM users WHERE username = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

pub async fn get_by_oidc_subject(
    conn: &mut Conn,
    subject: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, email, role, created_at FROM users WHERE oidc_subject = $1",
    )
    .bind(subject)
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut Conn) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, username, email, role, created_at FROM users ORDER BY id")
        .fetch_all(conn)
        .await
}

/// Inserts a user; a taken username (or OIDC subject) is a 409.
pub async fn create(
    conn: &mut Conn,
    username: &str,
    email: Option<&str>,
    role: Role,
    oidc_subject: Option<&str>,
) -> Result<UserRow, ApiError> {
    let res = sqlx::query_as(
        "INSERT INTO users (username, email, role, oidc_subject, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id, username, email, role, created_at",
    )
    .bind(username)
    .bind(email)
    .bind(role.as_str())
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
    match create(&mut conn, BUILTIN_ADMIN, None, Role::Admin, None).await {
        Ok(u) => Ok(u),
        // Another request created it first.
        Err(ApiError::Conflict(_)) => get_by_username(&mut conn, BUILTIN_ADMIN)
            .await?
            .ok_or_else(|| ApiError::Internal("built-in admin vanished".into())),
        Err(e) => Err(e),
    }
}

pub async fn update(
    conn: &mut Conn,
    id: i64,
    role: Option<Role>,
    email: Option<&str>,
) -> Result<Option<UserRow>, sqlx::Error> {
    if let Some(role) = role {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(email) = email {
        sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
            .bind(email)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    get(conn, id).await
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
