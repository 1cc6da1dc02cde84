//! Queries on access rules. A rule grants its servers (or all) to its
//! subjects (or everyone). Any change logs the keys of every subject before
//! and after the change, since their effective servers may differ.

use super::{Conn, Db, Tx, feed, flag};
use crate::domain::{ServerSelection, Subjects, now_unix};

#[derive(Debug, Clone)]
pub struct RuleRow {
    pub id: i64,
    pub name: String,
    pub servers: ServerSelection,
    pub subjects: Subjects,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct RuleHead {
    id: i64,
    name: String,
    all_servers: i64,
    all_subjects: i64,
    created_at: i64,
}

async fn complete(conn: &mut Conn, h: RuleHead) -> Result<RuleRow, sqlx::Error> {
    let servers = if h.all_servers == 1 {
        ServerSelection::All
    } else {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT server_name FROM access_rule_servers WHERE rule_id = $1 ORDER BY server_name",
        )
        .bind(h.id)
        .fetch_all(&mut *conn)
        .await?;
        // Stored names were validated on the way in.
        ServerSelection::Named(
            names
                .iter()
                .filter_map(|n| keygate_protocol::ServerName::parse(n).ok())
                .collect(),
        )
    };
    let subjects = if h.all_subjects == 1 {
        Subjects::Everyone
    } else {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM access_rule_subjects WHERE rule_id = $1 ORDER BY user_id",
        )
        .bind(h.id)
        .fetch_all(&mut *conn)
        .await?;
        Subjects::Users(ids)
    };
    Ok(RuleRow {
        id: h.id,
        name: h.name,
        servers,
        subjects,
        created_at: h.created_at,
    })
}

pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<RuleRow>, sqlx::Error> {
    let head: Option<RuleHead> = sqlx::query_as(
        "SELECT id, name, all_servers, all_subjects, created_at FROM access_rules WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match head {
        Some(h) => Ok(Some(complete(conn, h).await?)),
        None => Ok(None),
    }
}

pub async fn list(conn: &mut Conn) -> Result<Vec<RuleRow>, sqlx::Error> {
    let heads: Vec<RuleHead> = sqlx::query_as(
        "SELECT id, name, all_servers, all_subjects, created_at FROM access_rules ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(heads.len());
    for h in heads {
        out.push(complete(conn, h).await?);
    }
    Ok(out)
}

async fn write_members(
    tx: &mut Tx,
    id: i64,
    servers: &ServerSelection,
    subjects: &Subjects,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM access_rule_servers WHERE rule_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM access_rule_subjects WHERE rule_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if let ServerSelection::Named(names) = servers {
        for n in names {
            sqlx::query("INSERT INTO access_rule_servers (rule_id, server_name) VALUES ($1, $2)")
                .bind(id)
                .bind(n.as_str())
                .execute(&mut **tx)
                .await?;
        }
    }
    if let Subjects::Users(ids) = subjects {
        for u in ids {
            sqlx::query("INSERT INTO access_rule_subjects (rule_id, user_id) VALUES ($1, $2)")
                .bind(id)
                .bind(*u)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

async fn log_subjects(tx: &mut Tx, version: i64, subjects: &Subjects) -> Result<(), sqlx::Error> {
    match subjects {
        Subjects::Everyone => feed::log_all_keys(tx, version).await,
        Subjects::Users(ids) => {
            for u in ids {
                feed::log_user_keys(tx, version, *u).await?;
            }
            Ok(())
        }
    }
}

/// Callers validate that named servers and users exist first.
pub async fn create(
    tx: &mut Tx,
    db: &Db,
    name: &str,
    servers: &ServerSelection,
    subjects: &Subjects,
) -> Result<RuleRow, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO access_rules (name, all_servers, all_subjects, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name)
    .bind(flag(*servers == ServerSelection::All))
    .bind(flag(*subjects == Subjects::Everyone))
    .bind(now_unix())
    .fetch_one(&mut **tx)
    .await?;
    write_members(tx, id, servers, subjects).await?;
    let version = feed::bump(tx, db).await?;
    log_subjects(tx, version, subjects).await?;
    get(tx, id).await?.ok_or(sqlx::Error::RowNotFound)
}

pub async fn update(
    tx: &mut Tx,
    db: &Db,
    id: i64,
    name: &str,
    servers: &ServerSelection,
    subjects: &Subjects,
) -> Result<Option<RuleRow>, sqlx::Error> {
    let Some(before) = get(tx, id).await? else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE access_rules SET name = $1, all_servers = $2, all_subjects = $3 WHERE id = $4",
    )
    .bind(name)
    .bind(flag(*servers == ServerSelection::All))
    .bind(flag(*subjects == Subjects::Everyone))
    .bind(id)
    .execute(&mut **tx)
    .await?;
    write_members(tx, id, servers, subjects).await?;
    let version = feed::bump(tx, db).await?;
    log_subjects(tx, version, &before.subjects).await?;
    log_subjects(tx, version, subjects).await?;
    get(tx, id).await
}

pub async fn delete(tx: &mut Tx, db: &Db, id: i64) -> Result<bool, sqlx::Error> {
    let Some(before) = get(tx, id).await? else {
        return Ok(false);
    };
    let version = feed::bump(tx, db).await?;
    log_subjects(tx, version, &before.subjects).await?;
    for stmt in [
        "DELETE FROM access_rule_servers WHERE rule_id = $1",
        "DELETE FROM access_rule_subjects WHERE rule_id = $1",
        "DELETE FROM access_rules WHERE id = $1",
    ] {
        sqlx::query(stmt).bind(id).execute(&mut **tx).await?;
    }
    Ok(true)
}
