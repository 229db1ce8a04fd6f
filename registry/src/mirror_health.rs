//! Which registry mirrors failed recently: a failed mirror is left out for
//! [`MIRROR_PENALTY`], so a dead mirror costs one failed attempt, not one per read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a mirror that failed is left out before it is tried again.
pub const MIRROR_PENALTY: Duration = Duration::from_secs(15);

/// Mirrors that failed recently, by host.
#[derive(Default)]
pub(crate) struct MirrorHealth {
    down_until: Mutex<HashMap<String, Instant>>,
}

impl MirrorHealth {
    pub(crate) fn is_down(&self, host: &str) -> bool {
        let Ok(map) = self.down_until.lock() else {
            return false;
        };
        map.get(host).is_some_and(|until| Instant::now() < *until)
    }

    pub(crate) fn mark_down(&self, host: &str) {
        if let Ok(mut map) = self.down_until.lock() {
            map.insert(host.to_owned(), Instant::now() + MIRROR_PENALTY);
        }
    }

    pub(crate) fn mark_up(&self, host: &str) {
        if let Ok(mut map) = self.down_until.lock() {
            map.remove(host);
        }
    }
}
