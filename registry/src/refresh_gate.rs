//! `RefreshGate`: keeps refusals from turning into a storm of credential refreshes. Per
//! registry host, one refresh runs at a time and refusals arriving meanwhile wait for it
//! instead of starting their own; after a refresh finishes, none runs again for that host
//! until `min_interval` has passed (a registry that keeps refusing, e.g. a revoked grant,
//! costs the credential source one request per interval, not one per chunk read).
//! The hook a keychain registers to refresh credentials is typed here too.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::credentials::Credentials;

/// The shortest time between two hook calls for one registry host.
pub(crate) const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// What a refresh hook returns: every credential its source now has, by host.
pub(crate) type RefreshFuture = Pin<Box<dyn Future<Output = Credentials> + Send>>;

/// A keychain's way to fetch credentials anew, given the refusing registry's host.
pub(crate) type RefreshHook = Arc<dyn Fn(String) -> RefreshFuture + Send + Sync>;

/// Per host: when its last refresh finished. The async lock is held while one runs.
type Slot = Arc<tokio::sync::Mutex<Option<Instant>>>;

pub(crate) struct RefreshGate {
    min_interval: Duration,
    hosts: Mutex<HashMap<String, Slot>>,
}

impl RefreshGate {
    pub(crate) fn new(min_interval: Duration) -> RefreshGate {
        RefreshGate {
            min_interval,
            hosts: Mutex::default(),
        }
    }

    /// Runs `refresh` for `host` unless one finished less than `min_interval` ago; while
    /// another caller's refresh for `host` is under way, waits for it instead. Returns
    /// whether this call ran `refresh`. Either way, when it returns, any refresh that was
    /// under way for `host` at the call has finished.
    pub(crate) async fn run<F, Fut>(&self, host: &str, refresh: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let slot = self.slot(host);
        let mut finished = slot.lock().await;
        if finished.is_some_and(|at| at.elapsed() < self.min_interval) {
            return false;
        }
        refresh().await;
        // Stamped at the end, so that callers that waited for this one do not start
        // another when the refresh itself took longer than the interval.
        *finished = Some(Instant::now());
        true
    }

    fn slot(&self, host: &str) -> Slot {
        let mut hosts = match self.hosts.lock() {
            Ok(hosts) => hosts,
            Err(poisoned) => poisoned.into_inner(),
        };
        hosts.entry(host.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const INTERVAL: Duration = Duration::from_secs(5);

    /// A refresh that takes `took` and counts its runs.
    fn counted(
        runs: &Arc<AtomicUsize>,
        took: Duration,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let runs = runs.clone();
        move || {
            Box::pin(async move {
                tokio::time::sleep(took).await;
                runs.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_refusals_share_one_refresh() {
        let gate = Arc::new(RefreshGate::new(INTERVAL));
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (gate, refresh) = (gate.clone(), counted(&runs, Duration::from_secs(1)));
                tokio::spawn(async move { gate.run("r.io", refresh).await })
            })
            .collect();
        let mut ran = 0;
        for task in tasks {
            if task.await.unwrap() {
                ran += 1;
            }
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "one refresh for eight refusals"
        );
        assert_eq!(ran, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_refreshes_at_most_once_per_interval() {
        let gate = RefreshGate::new(INTERVAL);
        let runs = Arc::new(AtomicUsize::new(0));
        let quick = Duration::from_millis(10);
        let cases = [
            ("first refusal", Duration::ZERO, "r.io", true),
            ("right after", Duration::from_secs(1), "r.io", false),
            ("another host", Duration::ZERO, "other.io", true),
            (
                "still inside the interval",
                Duration::from_secs(3),
                "r.io",
                false,
            ),
            ("interval over", Duration::from_secs(2), "r.io", true),
        ];
        for (name, wait, host, want) in cases {
            tokio::time::advance(wait).await;
            assert_eq!(gate.run(host, counted(&runs, quick)).await, want, "{name}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_refresh_leaves_the_next_refusal_free_to_refresh() {
        let gate = RefreshGate::new(INTERVAL);
        let runs = Arc::new(AtomicUsize::new(0));
        let slow = counted(&runs, Duration::from_secs(60));
        let cancelled = tokio::time::timeout(Duration::from_secs(1), gate.run("r.io", slow));
        assert!(cancelled.await.is_err());
        let quick = counted(&runs, Duration::from_millis(10));
        assert!(
            gate.run("r.io", quick).await,
            "no stamp from a refresh that never ended"
        );
    }
}
