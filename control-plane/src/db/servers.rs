//! Queries on MCP servers. Deleting a server removes it from every key scope
//! and access rule, and tells the feed about the keys that could include it.

use super::{Conn, Db, Tx, feed, is_unique_violation};
use crate::domain::now_unix;
use crate::error::ApiError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerRow {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub created_at: i64,
}

pub async fn list(conn: &mut Conn) -> Result<Vec<ServerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, display_name, description, created_at FROM mcp_servers ORDER BY name",
    )
    .fetch_all(conn)
    .await
}

pub async fn get(conn: &mut Conn, name: &str) -> Result<Option<ServerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, display_name, description, created_at FROM mcp_servers WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

pub async fn exists(conn: &mut Conn, name: &str) -> Result<bool, sqlx::Error> {
    Ok(get(conn, name).await?.is_some())
}

pub async fn create(
    conn: &mut Conn,
    name: &str,
    display_name: &str,
    description: &str,
) -> Result<ServerRow, ApiError> {
    let res = sqlx::query_as(
        "INSERT INTO mcp_servers (name, display_name, description, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING name, display_name, description, created_at",
    )
    .bind(name)
    .bind(display_name)
    .bind(description)
    .bind(now_unix())
    .fetch_one(conn)
    .await;
    match res {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict("MCP server already exists")),
        Err(e) => Err(e.into()),
    }
}

pub async fn update(
    conn: &mut Conn,
    name: &str,
    display_name: &str,
    description: &str,
) -> Result<Option<ServerRow>, sqlx::Error> {
    sqlx::query("UPDATE mcp_servers SET display_name = $1, description = $2 WHERE name = $3")
        .bind(display_name)
        .bind(description)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    get(conn, name).await
}

pub async fn delete(tx: &mut Tx, db: &Db, name: &str) -> Result<bool, sqlx::Error> {
    if get(tx, name).await?.is_none() {
        return Ok(false);
    }
    let version = feed::bump(tx, db).await?;
    // Keys that could reach this server: those naming it, and every `*` key.
    sqlx::query(
        "INSERT INTO key_changes (version, key_id) \
         SELECT $1, key_id FROM api_key_servers WHERE server_name = $2 \
         UNION SELECT $1, id FROM api_keys WHERE all_servers = 1",
    )
    .bind(version)
    .bind(name)
    .execute(&mut **tx)
    .await?;
    for stmt in [
        "DELETE FROM api_key_servers WHERE server_name = $1",
        "DELETE FROM access_rule_servers WHERE server_name = $1",
        "DELETE FROM mcp_servers WHERE name = $1",
    ] {
        sqlx::query(stmt).bind(name).execute(&mut **tx).await?;
    }
    Ok(true)
}
