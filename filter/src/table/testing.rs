//! Test fixtures for the key table: entries, snapshot answers, and a whole
//! snapshot written the way production writes one (through
//! [`SnapshotWriter`], in one page).

use super::{Applied, ApplyError, SnapshotWriter};
use crate::store::SharedStore;
use keygate_protocol::{KeyEntry, KeyTable, Secret, ServerScope};
use std::collections::BTreeSet;

/// Key `id` of user 1, scoped to `server`; its secret is `[id; 32]`.
pub fn entry(id: i64, server: &str) -> KeyEntry {
    KeyEntry {
        id,
        user_id: 1,
        secret_hash: Secret::from_bytes([id as u8; 32]).hash(),
        expires_at: None,
        servers: ServerScope::Named(vec![server.to_owned()]),
        previous_secret: None,
    }
}

/// A one-page snapshot answer holding `ids`, scoped to `alpha`.
pub fn snapshot(version: u64, ids: &[i64]) -> KeyTable {
    KeyTable {
        version,
        full: true,
        upserts: ids.iter().map(|i| entry(*i, "alpha")).collect(),
        removals: vec![],
        next: None,
        registered_servers: None,
    }
}

/// A delta answer.
pub fn delta(version: u64, upserts: Vec<KeyEntry>, removals: Vec<i64>) -> KeyTable {
    KeyTable {
        version,
        full: false,
        upserts,
        removals,
        next: None,
        registered_servers: None,
    }
}

/// Writes `table` as a whole snapshot: begin, one page, flip.
pub fn write_snapshot(
    store: &dyn SharedStore,
    table: &KeyTable,
    now_ms: u64,
    known_ids: &mut BTreeSet<i64>,
) -> Result<Applied, ApplyError> {
    let mut writer = SnapshotWriter::begin(store, table.version, now_ms)?;
    writer.write_page(store, table)?;
    writer.finish(store, known_ids)
}
