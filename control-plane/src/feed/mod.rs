//! The key-table feed the edge polls: snapshots, deltas and long polls,
//! answered once per version and shared by every edge that asks the same.
//!
//! - [`FeedNotifier`]: the signal a local commit sends (and, on PostgreSQL,
//!   [`listen::listen_postgres`] relays from other replicas).
//! - [`hub::Hub`]: one per replica. A single follower task owns the version;
//!   parked long polls hold only a receiver of its published state, and every
//!   answer is built and encoded once per version and `since` (deltas) or
//!   page (snapshots), then served to every asker as the same bytes.
//! - [`build`]: the database reads behind an answer.

pub mod build;
pub mod hub;
pub mod listen;

pub use hub::Hub;
pub use listen::listen_postgres;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// Wakes this replica's feed follower. Cheap to clone. Its value counts the
/// local commits announced so far, so a request can tell whether the
/// follower has already seen every commit that finished before it arrived.
#[derive(Clone)]
pub struct FeedNotifier {
    tx: watch::Sender<u64>,
    closing: Arc<AtomicBool>,
}

impl Default for FeedNotifier {
    fn default() -> Self {
        Self {
            tx: watch::channel(0).0,
            closing: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl FeedNotifier {
    /// Ends every waiting long poll (with what it has), for a prompt shutdown.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.changed();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Announces a committed change. [`crate::db::FeedTx::commit`] calls it
    /// after each commit; PostgreSQL notifications from other replicas call
    /// it too.
    pub fn changed(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many changes have been announced so far.
    pub fn generation(&self) -> u64 {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
