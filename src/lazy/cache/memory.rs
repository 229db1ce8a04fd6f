//! A byte-bounded least-recently-used map of chunks.

use std::collections::{BTreeMap, HashMap};

use super::{CacheKey, ChunkBytes};

/// LRU keyed by [`CacheKey`]; evicts the oldest chunks once `max_bytes` is exceeded.
pub(super) struct MemoryLru {
    max_bytes: u64,
    used_bytes: u64,
    next_tick: u64,
    entries: HashMap<CacheKey, (ChunkBytes, u64)>,
    by_age: BTreeMap<u64, CacheKey>,
}

impl MemoryLru {
    pub(super) fn new(max_bytes: u64) -> MemoryLru {
        MemoryLru {
            max_bytes,
            used_bytes: 0,
            next_tick: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    pub(super) fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    pub(super) fn get(&mut self, key: &CacheKey) -> Option<ChunkBytes> {
        let tick = self.tick();
        let (bytes, age) = self.entries.get_mut(key)?;
        self.by_age.remove(age);
        *age = tick;
        self.by_age.insert(tick, *key);
        Some(bytes.clone())
    }

    /// Inserts a chunk; one larger than the whole budget is not kept.
    pub(super) fn insert(&mut self, key: CacheKey, bytes: ChunkBytes) {
        self.remove(&key);
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return;
        }
        let tick = self.tick();
        self.used_bytes += len;
        self.entries.insert(key, (bytes, tick));
        self.by_age.insert(tick, key);
        self.evict();
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some((bytes, age)) = self.entries.remove(key) {
            self.by_age.remove(&age);
            self.used_bytes -= bytes.len() as u64;
        }
    }

    fn evict(&mut self) {
        while self.used_bytes > self.max_bytes {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                return;
            };
            if let Some((bytes, _)) = self.entries.remove(&oldest) {
                self.used_bytes -= bytes.len() as u64;
            }
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz::Digest;

    fn key(n: u8) -> CacheKey {
        CacheKey::Content(Digest::from_bytes([n; 32]))
    }

    fn chunk(len: usize) -> ChunkBytes {
        vec![0u8; len].into()
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let mut lru = MemoryLru::new(10);
        lru.insert(key(1), chunk(4));
        lru.insert(key(2), chunk(4));
        assert!(lru.get(&key(1)).is_some(), "touch 1 so 2 is oldest");
        lru.insert(key(3), chunk(4));
        assert!(lru.get(&key(2)).is_none(), "2 evicted");
        assert!(lru.get(&key(1)).is_some());
        assert!(lru.get(&key(3)).is_some());
        assert_eq!(lru.used_bytes(), 8);
    }

    #[test]
    fn oversized_and_replaced_entries() {
        let mut lru = MemoryLru::new(10);
        lru.insert(key(1), chunk(11));
        assert!(lru.get(&key(1)).is_none(), "larger than the budget");
        lru.insert(key(2), chunk(3));
        lru.insert(key(2), chunk(5));
        assert_eq!(lru.used_bytes(), 5, "replacement counted once");
    }
}
