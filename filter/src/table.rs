//! The key table in Envoy's shared data: one copy per Envoy process, shared
//! by every worker's VM (shared data is keyed by `vm_id`). This file holds
//! the layout; [`reader`] is what a request does with it, [`writer`] what the
//! lease holder does with the feed's answers.
//!
//! Layout (the `4` is the layout version: filter builds with different
//! layouts that share a `vm_id` during an upgrade keep separate tables and
//! leases instead of misreading each other's):
//! - `kg4/meta` = [`Meta`] (small JSON): generation, table version, last
//!   sync, key count, reserved generation, registered-servers stamp.
//! - `kg4/k/<keyId>` = [`StoredEntry`] in the compact binary form of
//!   [`crate::slot`]: generation, version, and the entry or a tombstone for a
//!   removed key.
//! - `kg4/servers` = the MCP servers registered at the control plane (see
//!   [`servers`]), present when the control plane sends them.
//!
//! Layout 3 added the registered servers: a layout-2 build would drop the
//! stamp from meta whenever it wrote it, turning the check off unseen.
//! Layout 4 added a rotated key's previous secret to the slot: a layout-3
//! build could not read a layout-4 slot (it would fail closed on every key).
//!
//! A request reads `kg4/k/<keyId>`, one O(1) lookup, never a decode of the
//! whole table, and each VM keeps what it read for a few milliseconds (see
//! [`TableCache`]). A delta of k changes writes k entries and meta (a
//! paged delta writes its pages' entries as they come, then meta).
//! A full snapshot first reserves generation G+1 in meta (`reserved`), then
//! writes every entry, page by page, with generation G+1 while meta still
//! says G (readers accept `entry.generation >= meta.generation`), then flips
//! meta to G+1, which kills the entries the snapshot did not rewrite: there
//! is no moment where a valid key is missing. The reservation means an
//! aborted snapshot's entries are never reused by the next one (which takes
//! G+2), so they die at its flip. A meta with generation 0 is only a
//! reservation: no table yet. Entries carry the table version they were
//! written at and are written with compare-and-swap, so a slower writer (a
//! lease holder that just lost its lease) never overwrites a newer entry with
//! an older one.

pub mod reader;
pub mod servers;
#[cfg(test)]
pub(crate) mod testing;
pub mod writer;

pub use reader::{CACHE_MAX_ENTRIES, TableCache, TableReader};
pub use writer::{Applied, ApplyError, DeltaWriter, SnapshotWriter, apply_delta};

use crate::slot;
use crate::store::SharedStore;
use keygate_protocol::KeyEntry;
use serde::{Deserialize, Serialize};

pub const META_KEY: &str = "kg4/meta";
pub const ENTRY_PREFIX: &str = "kg4/k/";

/// The table's header. Stored as JSON with one-letter field names: every
/// request may read it, so it stays a few dozen bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Snapshot generation: entries older than this are dead.
    #[serde(rename = "g")]
    pub generation: u64,
    /// Control-plane table version the table is at.
    #[serde(rename = "v")]
    pub version: u64,
    /// Unix milliseconds when the table was last known complete and current:
    /// the last applied delta or flipped snapshot (a snapshot page is not a
    /// sync).
    #[serde(rename = "s")]
    pub synced_at_ms: u64,
    /// Live keys.
    #[serde(rename = "n")]
    pub key_count: u64,
    /// Generation reserved by a snapshot being written (see [`SnapshotWriter`]).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u64>,
    /// Moves whenever [`servers::SERVERS_KEY`] is rewritten, so each VM
    /// reads the registered servers again at its next meta read; `None`
    /// while the control plane sends none (an older one): no server check.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub servers_stamp: Option<u64>,
}

impl Meta {
    pub fn last_sync_unix(&self) -> i64 {
        i64::try_from(self.synced_at_ms / 1000).unwrap_or(i64::MAX)
    }
}

/// One key's slot (stored as [`crate::slot`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The generation it was written under: dead once meta moves past it.
    pub generation: u64,
    /// The table version it was written at: an older write never replaces it.
    pub version: u64,
    /// `None` is a tombstone.
    pub entry: Option<KeyEntry>,
}

fn entry_key(id: i64) -> String {
    format!("{ENTRY_PREFIX}{id}")
}

/// Reads and decodes meta with its CAS token; a refused read is an error,
/// so a writer never writes meta without its CAS.
pub fn read_meta(store: &dyn SharedStore) -> Result<(Option<Meta>, Option<u32>), ApplyError> {
    let (bytes, cas) = store.get(META_KEY).map_err(|_| ApplyError::Store)?;
    let meta = bytes
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
    Ok((meta, cas))
}

/// Meta of a table that exists (a flipped snapshot), not a bare reservation;
/// `None` too when the host refused the read (requests then fail closed).
pub fn read_table_meta(store: &dyn SharedStore) -> Option<Meta> {
    read_meta(store).ok()?.0.filter(|m| m.generation > 0)
}

/// Reads and decodes one slot with its CAS token; garbage reads as absent,
/// a refused read is an error.
fn read_entry(
    store: &dyn SharedStore,
    id: i64,
) -> Result<(Option<StoredEntry>, Option<u32>), ApplyError> {
    let (bytes, cas) = store.get(&entry_key(id)).map_err(|_| ApplyError::Store)?;
    let stored = bytes.and_then(|b| slot::decode(&b));
    Ok((stored, cas))
}
