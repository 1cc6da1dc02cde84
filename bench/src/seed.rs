//! A control plane holding a table of a chosen size, ready to measure.
//!
//! The fixture every section uses goes through the real admin API: a user
//! `bench`, an MCP server `alpha`, an access rule opening `alpha` to the
//! user, and one key scoped to `alpha` (the key the load uses).
//!
//! The bulk of a large table does not go through the API: a million keys at
//! the API's creation rate would take many minutes, and the control plane
//! has no bulk import. Instead [`bulk_insert`] writes the rows straight into
//! the control plane's SQLite database while it is stopped, then starts it
//! again. This couples the bench to the schema of
//! `control-plane/migrations/sqlite` (tables `api_keys`, `api_key_servers`,
//! `feed_state`) — the database itself is always created by the control
//! plane's own migrations, and the bench only adds rows of the same shape the
//! control plane's `db::keys::create` writes. If that schema changes, this
//! module is the one place to follow it.

use crate::controlplane::ControlPlane;
use crate::keys::BenchKey;
use crate::settings::Parts;
use anyhow::Result;
use std::path::Path;
use std::sync::Arc;

pub struct Seeded {
    pub cp: Arc<ControlPlane>,
    pub user_id: i64,
    /// The fixture key (scoped to `alpha`), as shown once by the API.
    pub key: String,
    /// Additional keys of the same user, scoped to `alpha`.
    pub extra: Vec<BenchKey>,
}

/// Starts a control plane on a fresh database in `dir` holding the fixture
/// plus `extra` keys.
pub async fn prepare(parts: &Parts, dir: &Path, name: &str, extra: usize) -> Result<Seeded> {
    let bin = parts
        .control_plane
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("KEYGATE_CONTROL_PLANE_BIN is needed"))?;
    let db = dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&db);
    let cp = ControlPlane::start(bin, dir, name, &db).await?;
    cp.api.create_server("alpha").await?;
    let user_id = cp.api.create_user("bench").await?;
    cp.api.grant_user(user_id, &["alpha"]).await?;
    let key = cp.api.create_key_for(user_id, &["alpha"], None).await?.key;
    let (cp, extra) = if extra == 0 {
        (cp, vec![])
    } else {
        cp.stop().await;
        let keys = bulk_insert(&db, user_id, extra).await?;
        (ControlPlane::start(bin, dir, name, &db).await?, keys)
    };
    let cp = Arc::new(cp);
    Ok(Seeded {
        cp,
        user_id,
        key,
        extra,
    })
}

/// Inserts `n` keys of `user_id` scoped to `alpha` into a stopped control
/// plane's database, then moves the feed to a new version whose change log
/// starts there, so every edge asks for (and gets) a full snapshot.
async fn bulk_insert(db: &Path, user_id: i64, n: usize) -> Result<Vec<BenchKey>> {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    let max_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM api_keys")
        .fetch_one(&mut conn)
        .await?;
    let keys = crate::keys::generate(user_id, max_id + 1, n, 0x006b_6579_6761_7465);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tx = conn.begin().await?;
    for chunk in keys.chunks(2000) {
        // Values are integers and hex the bench made itself: no quoting issues.
        let mut sql = String::from(
            "INSERT INTO api_keys (id, user_id, name, description, secret_hash, all_servers, created_at) VALUES ",
        );
        for (i, k) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({}, {}, 'bulk-{}', '', '{}', 0, {now})",
                k.id,
                k.user_id,
                k.id,
                k.hash.to_hex()
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    let last = max_id + n as i64;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_key_servers (key_id, server_name) SELECT id, 'alpha' FROM api_keys WHERE id > {max_id} AND id <= {last}"
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE feed_state SET version = version + 1, log_floor = version + 1 WHERE id = 1",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    conn.close().await?;
    Ok(keys)
}
