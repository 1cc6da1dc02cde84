//! One changed key costs O(1) to ship: with many keys in the table, a delta
//! carrying one change stays small and fast while a snapshot grows with the
//! table. Prints the measured times.

use crate::common::*;
use std::time::{Duration, Instant};

const BULK_KEYS: i64 = 50_000;

both_backends!(delta_cost_does_not_grow_with_table);

/// Inserts `BULK_KEYS` `*` keys for user 1 straight into the database.
async fn bulk_insert(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let hash = keygate_protocol::Secret::from_bytes([7; 32])
        .hash()
        .to_hex();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO api_keys (user_id, name, description, secret_hash, all_servers, created_at) \
         SELECT 1, 'bulk', '', $2, 1, 0 FROM n",
    )
    .bind(BULK_KEYS)
    .bind(hash)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

async fn timed(app: &TestApp, query: &str) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let r = app
        .http
        .get(format!("{}/internal/v1/key-table{query}", app.base))
        .bearer_auth(DATA_PLANE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let took = started.elapsed();
    (serde_json::from_slice(&bytes).unwrap(), took)
}

async fn delta_cost_does_not_grow_with_table(b: Backend) {
    // The bulk keys all belong to user 1, far beyond the default per-user limit.
    let app = TestApp::start_with(b, |c| c.max_keys_per_user = u32::MAX).await;
    app.server("alpha").await;
    app.rule(&["*"], &["*"]).await;
    bulk_insert(&app.db.url).await;

    // Server time plus transfer, without the test's own JSON parsing.
    let started = Instant::now();
    let bytes = app
        .http
        .get(format!("{}/internal/v1/key-table", app.base))
        .bearer_auth(DATA_PLANE)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let snapshot_time = started.elapsed();
    let full: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(full["upserts"].as_array().unwrap().len() as i64, BULK_KEYS);
    let v = full["version"].as_u64().unwrap();

    let (k, _) = app.admin_key(&["alpha"]).await;
    // Best of a few runs, to measure the work rather than scheduling noise.
    let mut delta_time = Duration::MAX;
    for _ in 0..5 {
        let (d, took) = timed(&app, &format!("?since={v}")).await;
        assert_eq!(d["full"], false);
        assert_eq!(upsert_ids(&d), vec![k]);
        delta_time = delta_time.min(took);
    }
    println!(
        "{b:?}: {BULK_KEYS} keys: full snapshot {snapshot_time:?}, one-key delta {delta_time:?}"
    );
    assert!(
        delta_time * 20 < snapshot_time,
        "delta {delta_time:?} is not small next to snapshot {snapshot_time:?}"
    );
    assert!(
        delta_time < Duration::from_millis(100),
        "delta took {delta_time:?}"
    );
}
