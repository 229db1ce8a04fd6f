//! What a layer has fetched and whether a reader is waiting on the network: bytes fetched
//! per [`FetchKind`], and on-demand fetches in flight or recent, so background fetching
//! can stay out of their way.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::lazy::link::FetchKind;

/// Counters of one layer.
pub(super) struct Activity {
    opened: Instant,
    fetched: [AtomicU64; 3],
    on_demand_in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last on-demand fetch ended (0: never).
    last_on_demand_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            fetched: Default::default(),
            on_demand_in_flight: AtomicUsize::new(0),
            last_on_demand_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn add_fetched(&self, kind: FetchKind, bytes: u64) {
        self.fetched[kind.slot()].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Compressed bytes fetched for `kind` since the layer was opened.
    pub(super) fn fetched(&self, kind: FetchKind) -> u64 {
        self.fetched[kind.slot()].load(Ordering::Relaxed)
    }

    /// Marks an on-demand fetch as under way until the guard drops.
    pub(super) fn on_demand(&self) -> OnDemandGuard<'_> {
        self.on_demand_in_flight.fetch_add(1, Ordering::Relaxed);
        OnDemandGuard(self)
    }

    /// Whether an on-demand fetch is under way or ended less than `quiet` ago.
    pub(super) fn busy_within(&self, quiet: Duration) -> bool {
        if self.on_demand_in_flight.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let last = self.last_on_demand_ms.load(Ordering::Relaxed);
        last != 0 && self.millis_now().saturating_sub(last) < quiet.as_millis() as u64
    }

    fn millis_now(&self) -> u64 {
        // At least 1, so that 0 keeps meaning "never".
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// See [`Activity::on_demand`].
pub(super) struct OnDemandGuard<'a>(&'a Activity);

impl Drop for OnDemandGuard<'_> {
    fn drop(&mut self) {
        let activity = self.0;
        activity
            .last_on_demand_ms
            .store(activity.millis_now(), Ordering::Relaxed);
        activity.on_demand_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_fetches_make_the_layer_busy_for_a_while() {
        let activity = Activity::new();
        assert!(!activity.busy_within(Duration::from_secs(10)), "fresh");
        let guard = activity.on_demand();
        assert!(activity.busy_within(Duration::ZERO), "in flight");
        drop(guard);
        assert!(activity.busy_within(Duration::from_secs(10)), "recent");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !activity.busy_within(Duration::from_millis(10)),
            "quiet again"
        );
        activity.add_fetched(FetchKind::Background, 7);
        assert_eq!(activity.fetched(FetchKind::Background), 7);
        assert_eq!(activity.fetched(FetchKind::OnDemand), 0);
    }
}
