//! One lazy attempt per layer at a time. Images (or pulls) that share a layer Prepare it
//! at the same moment with the same target chain id; were each to mount it, only the
//! first commit could win and the others would fall back to a full pull. So a Prepare of
//! a target waits for the turn of any other Prepare (or Remove) of the same target in the
//! same namespace, and then sees its outcome: committed (answer AlreadyExists), or not
//! (try the lazy mount itself).
//!
//! The wait is bounded: a caller that does not get its turn in time goes on without it
//! (the store copes with a lost commit race), so nothing ever waits forever.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// (namespace, snapshot name).
type Target = (String, String);

/// The targets whose turn is taken.
#[derive(Default)]
pub(super) struct Turns {
    taken: Mutex<HashSet<Target>>,
    released: Condvar,
}

/// Holds the turn of one target until dropped.
pub(super) struct Turn<'a> {
    turns: &'a Turns,
    target: Target,
}

impl Turns {
    /// Takes the turn of `name` in `ns`, waiting at most `wait` for whoever holds it;
    /// `None` when the wait ran out.
    pub(super) fn take(&self, ns: &str, name: &str, wait: Duration) -> Option<Turn<'_>> {
        let target = (ns.to_owned(), name.to_owned());
        let deadline = Instant::now() + wait;
        let mut taken = self.lock();
        while taken.contains(&target) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            taken = self
                .released
                .wait_timeout(taken, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        taken.insert(target.clone());
        Some(Turn {
            turns: self,
            target,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<Target>> {
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.lock().remove(&self.target);
        self.turns.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_turn_per_target_at_a_time() {
        let turns = Turns::default();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let _turn = turns.take("ns", "chain", Duration::from_secs(10)).unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn other_targets_and_namespaces_do_not_wait() {
        let turns = Turns::default();
        let _held = turns.take("ns", "chain", Duration::ZERO).unwrap();
        let cases = [
            ("other chain", "ns", "chain-2"),
            ("other namespace", "ns-2", "chain"),
        ];
        for (name, ns, target) in cases {
            assert!(turns.take(ns, target, Duration::ZERO).is_some(), "{name}");
        }
    }

    #[test]
    fn the_wait_is_bounded_and_a_released_turn_is_free() {
        let turns = Turns::default();
        let held = turns.take("ns", "chain", Duration::ZERO).unwrap();
        let started = Instant::now();
        assert!(turns
            .take("ns", "chain", Duration::from_millis(50))
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert!(turns.take("ns", "chain", Duration::ZERO).is_some());
    }
}
