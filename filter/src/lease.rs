//! Which worker fetches the key table: a lease in shared data.
//!
//! Every worker's root context calls [`hold`] on each tick. The holder renews
//! the lease by compare-and-swap; anyone else takes it only once it has
//! expired, also by compare-and-swap, so one worker wins. Envoy does not check
//! the CAS token when a key does not exist yet, so a brand-new lease is only
//! *written* on one tick and *used* from the next one, after a CAS renewal
//! has confirmed that this worker's write is the one that stuck.

use crate::store::{SharedStore, StoreError};
use serde::{Deserialize, Serialize};

/// Versioned with the table layout (see [`crate::table`]).
pub const LEASE_KEY: &str = "kg4/lease";

/// Who may fetch the key table, and until when. Stored as JSON with
/// one-letter field names, like the table's meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder's random id.
    #[serde(rename = "o")]
    pub owner: u64,
    /// Unix milliseconds after which anyone may take the lease.
    #[serde(rename = "x")]
    pub expires_at_ms: u64,
}

/// The lease and its CAS token; an error when the host refused the read
/// (then nobody is taken to hold it, and nothing is written).
fn read(store: &dyn SharedStore) -> Result<(Option<Lease>, Option<u32>), StoreError> {
    let (bytes, cas) = store.get(LEASE_KEY)?;
    let lease = bytes
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice::<Lease>(&b).ok());
    Ok((lease, cas))
}

fn write(store: &dyn SharedStore, lease: Lease, cas: Option<u32>) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(&lease).map_err(|_| StoreError::Host)?;
    store.set(LEASE_KEY, &bytes, cas)
}

/// Takes or renews the lease for `me`; true when `me` may fetch now.
pub fn hold(store: &dyn SharedStore, me: u64, now_ms: u64, ttl_ms: u64) -> bool {
    let Ok((lease, cas)) = read(store) else {
        return false;
    };
    let renewed = Lease {
        owner: me,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    };
    match (lease, cas) {
        // Ours, or free to take: compare-and-swap so only one worker wins.
        (Some(l), Some(cas)) if l.owner == me || l.expires_at_ms <= now_ms => {
            write(store, renewed, Some(cas)).is_ok()
        }
        // Someone else holds a live lease.
        (Some(_), _) => false,
        // Absent (or unreadable): stake a claim; it counts from the next tick.
        (None, cas) => {
            let _ = write(store, renewed, cas);
            false
        }
    }
}

/// True when `me` holds the lease and it has not expired. Checked before
/// applying an answer that was in flight (a long poll lasts seconds): if the
/// lease moved on meanwhile, another VM is writing the table and this answer
/// may be older than what it wrote.
pub fn is_held_by(store: &dyn SharedStore, me: u64, now_ms: u64) -> bool {
    matches!(read(store), Ok((Some(l), _)) if l.owner == me && l.expires_at_ms > now_ms)
}

/// Gives the lease up (on VM shutdown) so another worker need not wait for
/// it to expire.
pub fn release(store: &dyn SharedStore, me: u64) {
    if let Ok((Some(l), Some(cas))) = read(store)
        && l.owner == me
    {
        let _ = write(
            store,
            Lease {
                owner: me,
                expires_at_ms: 0,
            },
            Some(cas),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    const TTL: u64 = 3_000;

    #[test]
    fn first_claim_is_confirmed_on_the_next_tick() {
        let s = MemoryStore::default();
        assert!(!hold(&s, 1, 0, TTL));
        assert!(hold(&s, 1, 200, TTL));
        assert!(!hold(&s, 2, 400, TTL));
        assert!(hold(&s, 1, 400, TTL));
    }

    #[test]
    fn racing_first_claims_leave_one_holder() {
        let s = MemoryStore::default();
        // Both saw "absent" and wrote; the later write stuck.
        assert!(!hold(&s, 1, 0, TTL));
        assert!(!hold(&s, 2, 0, TTL));
        let a = hold(&s, 1, 200, TTL);
        let b = hold(&s, 2, 200, TTL);
        assert!(a ^ b, "exactly one holder: {a} {b}");
    }

    #[test]
    fn dead_holder_is_replaced_after_expiry() {
        let s = MemoryStore::default();
        hold(&s, 1, 0, TTL);
        assert!(hold(&s, 1, 100, TTL)); // expires at 3100
        // Holder 1 stops ticking.
        assert!(!hold(&s, 2, 1_000, TTL));
        assert!(!hold(&s, 2, 3_099, TTL));
        assert!(hold(&s, 2, 3_100, TTL));
        // The old holder, if it comes back, does not get it back.
        assert!(!hold(&s, 1, 3_200, TTL));
        assert!(hold(&s, 2, 3_300, TTL));
    }

    #[test]
    fn only_one_taker_of_an_expired_lease() {
        let s = MemoryStore::default();
        hold(&s, 1, 0, TTL);
        hold(&s, 1, 0, TTL);
        // Workers 2 and 3 both read the expired lease before either writes.
        let (lease, cas) = read(&s).unwrap();
        assert!(lease.unwrap().expires_at_ms <= 5_000);
        let lease = |owner| Lease {
            owner,
            expires_at_ms: 8_000,
        };
        let w2 = write(&s, lease(2), cas);
        let w3 = write(&s, lease(3), cas);
        assert!(w2.is_ok());
        assert_eq!(w3, Err(StoreError::CasMismatch));
        assert!(hold(&s, 2, 5_100, TTL));
        assert!(!hold(&s, 3, 5_100, TTL));
    }

    #[test]
    fn a_refused_read_takes_nothing() {
        let s = MemoryStore::default();
        hold(&s, 1, 0, TTL);
        assert!(hold(&s, 1, 10, TTL));
        let before = s.data.borrow().clone();
        let refusing = crate::store::memory::RefusesReads::of(&s, LEASE_KEY);
        // Long after expiry: still no claim without reading the lease.
        assert!(!hold(&refusing, 2, 1_000_000, TTL));
        assert!(!is_held_by(&refusing, 1, 20));
        release(&refusing, 1);
        assert_eq!(*s.data.borrow(), before);
    }

    #[test]
    fn release_hands_over_at_once() {
        let s = MemoryStore::default();
        hold(&s, 1, 0, TTL);
        assert!(hold(&s, 1, 10, TTL));
        release(&s, 2); // not the holder: no effect
        assert!(!hold(&s, 2, 20, TTL));
        release(&s, 1);
        assert!(hold(&s, 2, 30, TTL));
    }

    #[test]
    fn lease_keeps_its_compact_field_names() {
        let lease = Lease {
            owner: 7,
            expires_at_ms: 9,
        };
        let json = serde_json::to_string(&lease).unwrap();
        assert_eq!(json, r#"{"o":7,"x":9}"#);
    }
}
