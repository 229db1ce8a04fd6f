//! The disk budget of the cache directory: how many bytes its files (chunk files and the
//! `files/` passthrough copies) take, and which files to delete, least recently used
//! first, so that a new file fits under `max_bytes`.
//!
//! Files are named by a key `K` (the daemon uses [`super::disk::DiskName`]: a chunk's
//! [`super::CacheKey`] or a passthrough copy's name). Usage is tracked in memory only: the startup scan
//! ([`DiskLimit::restore`]) adds the files a previous run left, older than anything
//! touched since. The caller deletes the files this module picks, outside its lock; a
//! write racing the deletion of the same name can leave the count a file off until the
//! next restart, which only moves eviction a little earlier or later.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// Bytes a file of `len` bytes is charged: whole 4 KiB blocks, as a filesystem stores it.
pub(super) fn charged(len: u64) -> u64 {
    len.div_ceil(4096).saturating_mul(4096)
}

/// A file found by the startup scan.
pub(super) struct Found<K> {
    pub(super) name: K,
    pub(super) len: u64,
    /// Last access or modification, whichever is later.
    pub(super) used: SystemTime,
}

/// Byte budget and recency of the cache directory's files; `max_bytes` 0 is unlimited
/// (nothing is tracked then).
pub(super) struct DiskLimit<K> {
    max_bytes: u64,
    usage: Mutex<Usage<K>>,
}

struct Usage<K> {
    used_bytes: u64,
    /// Live ticks count up from 0; files restored by the startup scan get negative
    /// ticks, so all of them are older than anything written or read since.
    next_tick: i64,
    entries: HashMap<K, (u64, i64)>,
    by_age: BTreeMap<i64, K>,
}

impl<K: Hash + Eq + Clone> DiskLimit<K> {
    pub(super) fn new(max_bytes: u64) -> DiskLimit<K> {
        DiskLimit {
            max_bytes,
            usage: Mutex::new(Usage {
                used_bytes: 0,
                next_tick: 0,
                entries: HashMap::new(),
                by_age: BTreeMap::new(),
            }),
        }
    }

    /// Bytes charged for the tracked files.
    pub(super) fn used_bytes(&self) -> u64 {
        self.lock().used_bytes
    }

    /// Makes room for `name` of `len` bytes and counts it as the newest file; the files
    /// to delete, or None when it can never fit (then nothing changes).
    pub(super) fn reserve(&self, name: K, len: u64) -> Option<Vec<K>> {
        if self.max_bytes == 0 {
            return Some(Vec::new());
        }
        let size = charged(len);
        if size > self.max_bytes {
            return None;
        }
        let mut usage = self.lock();
        usage.remove(&name);
        let tick = usage.tick();
        usage.insert(name, size, tick);
        Some(usage.evict(self.max_bytes))
    }

    /// Marks `name` as just used.
    pub(super) fn touch(&self, name: &K) {
        if self.max_bytes == 0 {
            return;
        }
        let mut guard = self.lock();
        let usage = &mut *guard;
        let tick = usage.tick();
        let Some((_, age)) = usage.entries.get_mut(name) else {
            return;
        };
        let old = std::mem::replace(age, tick);
        usage.by_age.remove(&old);
        usage.by_age.insert(tick, name.clone());
    }

    /// Stops counting `name` (its write failed, or it is gone).
    pub(super) fn forget(&self, name: &K) {
        self.lock().remove(name);
    }

    /// Adds the files a previous run left (those not already counted), oldest use
    /// first; the files to delete to get back under the budget.
    pub(super) fn restore(&self, mut found: Vec<Found<K>>) -> Vec<K> {
        if self.max_bytes == 0 {
            return Vec::new();
        }
        found.sort_by_key(|f| f.used);
        let mut usage = self.lock();
        let mut tick = i64::try_from(found.len()).map_or(i64::MIN, |n| -n);
        for file in found {
            if !usage.entries.contains_key(&file.name) {
                usage.insert(file.name, charged(file.len), tick);
            }
            tick = tick.saturating_add(1);
        }
        usage.evict(self.max_bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Usage<K>> {
        // Every method leaves the maps consistent at each step, even if a holder panicked.
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> Usage<K> {
    fn tick(&mut self) -> i64 {
        let tick = self.next_tick;
        self.next_tick = self.next_tick.saturating_add(1);
        tick
    }

    fn insert(&mut self, name: K, size: u64, tick: i64) {
        self.used_bytes = self.used_bytes.saturating_add(size);
        self.by_age.insert(tick, name.clone());
        self.entries.insert(name, (size, tick));
    }

    fn remove(&mut self, name: &K) -> Option<(u64, i64)> {
        let (size, tick) = self.entries.remove(name)?;
        self.by_age.remove(&tick);
        self.used_bytes = self.used_bytes.saturating_sub(size);
        Some((size, tick))
    }

    /// Drops the oldest files until the rest fit in `max_bytes`; returns them.
    fn evict(&mut self, max_bytes: u64) -> Vec<K> {
        let mut victims = Vec::new();
        while self.used_bytes > max_bytes {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((size, _)) = self.entries.remove(&oldest) {
                self.used_bytes = self.used_bytes.saturating_sub(size);
            }
            victims.push(oldest);
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KIB: u64 = 4096;

    type Limit = DiskLimit<&'static str>;

    fn names(victims: Option<Vec<&str>>) -> Vec<&str> {
        victims.expect("fits")
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let limit = Limit::new(3 * KIB);
        assert!(names(limit.reserve("a", 100)).is_empty());
        assert!(names(limit.reserve("b", 100)).is_empty());
        assert!(names(limit.reserve("c", 100)).is_empty());
        limit.touch(&"a");
        assert_eq!(names(limit.reserve("d", 100)), ["b"], "b is the oldest");
        assert_eq!(names(limit.reserve("e", KIB + 1)), ["c", "a"], "two blocks");
        assert_eq!(limit.used_bytes(), 3 * KIB);
    }

    #[test]
    fn cases_of_sizes() {
        let cases: &[(&str, u64, u64, bool)] = &[
            ("empty file", 0, 0, true),
            ("one byte is one block", 1, KIB, true),
            ("exactly the budget", 4 * KIB, 4 * KIB, true),
            ("larger than the budget never fits", 4 * KIB + 1, 0, false),
        ];
        for (name, len, used, fits) in cases {
            let limit = Limit::new(4 * KIB);
            assert_eq!(limit.reserve("x", *len).is_some(), *fits, "{name}");
            assert_eq!(limit.used_bytes(), *used, "{name}");
        }
    }

    #[test]
    fn replacing_and_forgetting_count_once() {
        let limit = Limit::new(10 * KIB);
        limit.reserve("a", KIB);
        limit.reserve("a", 2 * KIB);
        assert_eq!(limit.used_bytes(), 2 * KIB);
        limit.forget(&"a");
        limit.forget(&"never-there");
        assert_eq!(limit.used_bytes(), 0);
    }

    #[test]
    fn limit_holds_after_many_reserves() {
        let limit = DiskLimit::<u64>::new(64 * KIB);
        let mut evicted = 0;
        for i in 0..1000u64 {
            let victims = limit.reserve(i, 1 + i % (3 * KIB));
            evicted += victims.expect("fits").len();
            assert!(limit.used_bytes() <= 64 * KIB, "after {i}");
        }
        assert!(evicted > 900, "evicted {evicted}");
    }

    #[test]
    fn restored_files_are_older_than_live_ones() {
        let limit = Limit::new(3 * KIB);
        limit.reserve("live", 1);
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let found = vec![
            Found {
                name: "new",
                len: 1,
                used: at(20),
            },
            Found {
                name: "old",
                len: 1,
                used: at(10),
            },
            Found {
                name: "live",
                len: 1,
                used: at(5),
            },
            Found {
                name: "older",
                len: 1,
                used: at(1),
            },
        ];
        assert_eq!(
            limit.restore(found),
            ["older"],
            "over by one: the oldest scanned file"
        );
        assert_eq!(names(limit.reserve("next", 1)), ["old"]);
        assert_eq!(names(limit.reserve("next2", 1)), ["new"]);
        assert_eq!(names(limit.reserve("next3", 1)), ["live"]);
    }

    #[test]
    fn unlimited_tracks_nothing() {
        let limit = Limit::new(0);
        assert!(names(limit.reserve("a", u64::MAX)).is_empty());
        assert_eq!(limit.used_bytes(), 0);
    }
}
