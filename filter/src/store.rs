//! The few shared-data calls the filter makes, as a trait: Envoy's shared
//! data in the adapter, an in-memory map in tests (`memory`). The key table
//! ([`crate::table`]) and the fetch lease ([`crate::lease`]) are both written
//! through it.

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the key since we read it.
    CasMismatch,
    /// The host refused the call.
    Host,
}

/// Envoy's shared data as the filter uses it: values with compare-and-swap
/// tokens, shared by every VM of one `vm_id`.
pub trait SharedStore {
    /// The value and its CAS token; `(None, None)` when absent. An error
    /// when the host refused the read, which a writer must never take for
    /// "absent" (it would then write without a CAS).
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes `value`; with `cas`, only if the key is still at that token.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

#[cfg(test)]
pub mod memory;
