//! Whether the cache writes to disk right now. A failed write (a full disk, an I/O
//! error, a vanished directory) pauses disk writes for a while, then the next write
//! tries again; reads never wait on this. One warning is logged per episode (from the
//! first failure to the next successful write), not one per chunk.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long disk writes pause after a failed one.
pub const DISK_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The disk write state shared by every writer of one cache.
pub(super) struct WriteHealth {
    retry_after: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A write failed and none has succeeded since.
    failing: bool,
    /// No write is tried before this instant.
    paused_until: Option<Instant>,
    /// Failed writes so far.
    failures: u64,
}

impl WriteHealth {
    pub(super) fn new(retry_after: Duration) -> WriteHealth {
        WriteHealth {
            retry_after,
            state: Mutex::default(),
        }
    }

    /// Whether a write may be tried now.
    pub(super) fn writable(&self) -> bool {
        self.lock()
            .paused_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Records a failed write: pauses writes and logs the start of an episode.
    pub(super) fn failed(&self, error: &io::Error) {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        state.paused_until = Some(Instant::now() + self.retry_after);
        crate::lazy::observe::observer().cache_disk_write_failure();
        if state.failing {
            tracing::debug!(%error, "chunk cache disk write failed again");
        } else {
            state.failing = true;
            tracing::warn!(
                %error,
                retry_after = ?self.retry_after,
                "chunk cache disk write failed; caching in memory only until a retry succeeds"
            );
        }
    }

    /// Records a successful write, ending an episode of failures.
    pub(super) fn succeeded(&self) {
        let mut state = self.lock();
        state.paused_until = None;
        if state.failing {
            state.failing = false;
            tracing::info!("chunk cache disk writes work again");
        }
    }

    /// Failed writes so far.
    pub(super) fn failures(&self) -> u64 {
        self.lock().failures
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_pauses_writes_until_the_retry() {
        let health = WriteHealth::new(Duration::from_millis(50));
        assert!(health.writable());
        health.failed(&io::Error::from(io::ErrorKind::StorageFull));
        assert!(!health.writable(), "paused");
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.writable(), "retry allowed");
        health.failed(&io::Error::from(io::ErrorKind::StorageFull));
        assert!(!health.writable(), "paused again");
        assert_eq!(health.failures(), 2);
        health.succeeded();
        assert!(health.writable());
    }
}
