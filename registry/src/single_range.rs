//! Registry hosts known to answer multi-range requests with something else than
//! `multipart/byteranges` parts: the client asks them range by range from then on.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Registry hosts known to answer multi-range requests with something else than parts.
#[derive(Debug, Default)]
pub(crate) struct SingleRangeHosts(Mutex<HashSet<String>>);

impl SingleRangeHosts {
    pub(crate) fn contains(&self, host: &str) -> bool {
        self.lock().contains(host)
    }

    pub(crate) fn insert(&self, host: &str) -> bool {
        self.lock().insert(host.to_owned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
