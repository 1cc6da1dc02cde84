//! Test stand-ins for Envoy's shared data: [`MemoryStore`] copies its
//! compare-and-swap behaviour, [`Spy`] lets a test look at the store around
//! every write, [`RefusesReads`] is a host that refuses every read.

use super::{SharedStore, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;

/// An in-memory [`SharedStore`] with Envoy's CAS semantics; counts reads so
/// tests can price a request.
#[derive(Default)]
pub struct MemoryStore {
    pub data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
    pub reads: RefCell<usize>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        *self.reads.borrow_mut() += 1;
        Ok(match self.data.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut data = self.data.borrow_mut();
        // Envoy checks the CAS only when the key exists and cas != 0.
        if let (Some((_, current)), Some(cas)) = (data.get(key), cas)
            && *current != cas
        {
            return Err(StoreError::CasMismatch);
        }
        let mut next = self.next_cas.borrow_mut();
        *next += 1;
        data.insert(key.to_owned(), (value.to_vec(), *next));
        Ok(())
    }
}

/// A store that lets a test look at the table before and after every
/// write.
pub struct Spy<'a> {
    pub inner: &'a MemoryStore,
    pub on_set: &'a dyn Fn(&MemoryStore),
}

impl SharedStore for Spy<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        (self.on_set)(self.inner);
        let r = self.inner.set(key, value, cas);
        (self.on_set)(self.inner);
        r
    }
}

/// A host that refuses reads of the keys starting with `prefix` while `on`
/// (and allows every write): what a writer must never take for "absent",
/// since it would then write without a CAS, and a reader must not cache.
pub struct RefusesReads<'a> {
    pub inner: &'a MemoryStore,
    pub prefix: &'static str,
    pub on: std::cell::Cell<bool>,
}

impl<'a> RefusesReads<'a> {
    pub fn of(inner: &'a MemoryStore, prefix: &'static str) -> Self {
        Self {
            inner,
            prefix,
            on: std::cell::Cell::new(true),
        }
    }
}

impl SharedStore for RefusesReads<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        if self.on.get() && key.starts_with(self.prefix) {
            return Err(StoreError::Host);
        }
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.inner.set(key, value, cas)
    }
}
