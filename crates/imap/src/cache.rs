//! Header blocks of stored messages, by blob hash, for SEARCH on header keys. Blobs are
//! addressed by their SHA-256 and never change, so an entry is never stale; the cache only
//! has to stay within its budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Bytes of header blocks kept at most.
const BUDGET: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub struct HeaderCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Arc<[u8]>>,
    /// Insertion order, oldest first: the oldest go when the budget is exceeded.
    order: VecDeque<String>,
    bytes: usize,
}

impl HeaderCache {
    pub fn get(&self, hash: &str) -> Option<Arc<[u8]>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(hash).cloned()
    }

    pub fn put(&self, hash: &str, header: &[u8]) -> Arc<[u8]> {
        let value: Arc<[u8]> = Arc::from(header);
        if header.len() > BUDGET / 64 {
            return value;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.map.contains_key(hash) {
            return value;
        }
        inner.bytes += header.len();
        inner.map.insert(hash.to_owned(), value.clone());
        inner.order.push_back(hash.to_owned());
        while inner.bytes > BUDGET {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(v) = inner.map.remove(&old) {
                inner.bytes -= v.len();
            }
        }
        value
    }
}
