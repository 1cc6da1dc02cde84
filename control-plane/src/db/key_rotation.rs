//! Rotating a key's secret: a new secret under the same id, with the old one
//! kept working for an overlap the caller chooses (or not at all).
//!
//! The old secret's hash and its deadline live on the key's row and go to
//! the edge in the key's entry ([`keygate_protocol::PreviousSecret`]), so
//! every edge stops it at the deadline by its own clock. There is one slot
//! for an old secret: a second rotation overwrites it, so at most two
//! secrets are ever valid and an older one ends at once.

use super::{Db, Tx, feed};

/// What a rotation writes.
pub struct Rotation {
    pub key_id: i64,
    /// SHA-256 of the new secret, hex.
    pub new_secret_hash_hex: String,
    /// How long the replaced secret keeps working; 0 ends it now.
    pub overlap_seconds: i64,
    pub now: i64,
}

/// Gives key `r.key_id` (already checked to exist, be the caller's and be
/// active) its new secret, keeps the replaced one until the overlap ends,
/// and logs the change for the feed like any key change, so the edge learns
/// within the usual revocation time.
pub async fn rotate(tx: &mut Tx, db: &Db, r: Rotation) -> Result<(), sqlx::Error> {
    let overlap = r.overlap_seconds > 0;
    sqlx::query(
        "UPDATE api_keys SET \
         previous_secret_hash = CASE WHEN $1 = 1 THEN secret_hash ELSE NULL END, \
         previous_secret_expires_at = $2, previous_secret_used_at = NULL, \
         secret_hash = $3, rotated_at = $4 WHERE id = $5",
    )
    .bind(i64::from(overlap))
    .bind(overlap.then(|| r.now.saturating_add(r.overlap_seconds)))
    .bind(r.new_secret_hash_hex)
    .bind(r.now)
    .bind(r.key_id)
    .execute(&mut **tx)
    .await?;
    let version = feed::bump(tx, db).await?;
    feed::log_key(tx, version, r.key_id).await
}

/// Keeps the later of the stored and reported use of a key's previous
/// secret. A report about a secret replaced before the key's last rotation
/// (its use is older than that rotation) matches no row, nor does a key
/// that has no previous secret.
pub async fn record_previous_use(
    conn: &mut super::Conn,
    id: i64,
    used_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET previous_secret_used_at = $1 \
         WHERE id = $2 AND previous_secret_hash IS NOT NULL AND rotated_at <= $1 \
         AND (previous_secret_used_at IS NULL OR previous_secret_used_at < $1)",
    )
    .bind(used_at)
    .bind(id)
    .execute(conn)
    .await
    .map(|_| ())
}
