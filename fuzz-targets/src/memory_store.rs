//! An in-memory stand-in for Envoy's shared data, for the targets that let
//! the filter write its key table: values with compare-and-swap tokens from
//! one counter bumped on every write, checked only when the key exists and
//! the token is not 0, as in Envoy.

use keygate_filter::store::{SharedStore, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
pub struct MemoryStore {
    values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    last_cas: RefCell<u32>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key and value, for checks over the whole table.
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.values
            .borrow()
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(match self.values.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut values = self.values.borrow_mut();
        let current = values.get(key).map(|(_, c)| *c);
        if let Some(want) = cas
            && want != 0
            && current.is_some_and(|c| c != want)
        {
            return Err(StoreError::CasMismatch);
        }
        let mut last = self.last_cas.borrow_mut();
        *last = last.wrapping_add(1).max(1);
        values.insert(key.to_owned(), (value.to_vec(), *last));
        Ok(())
    }
}
