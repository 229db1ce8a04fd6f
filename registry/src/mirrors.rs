//! Registry mirrors: reads (manifests, blob sizes, blob bytes) of a repository go first
//! to the mirrors configured for its registry, in order, then to the registry itself.
//!
//! A mirror is any host serving the distribution API for the same repository names (a
//! pull-through cache, a node-local or peer-to-peer mirror such as Spegel or Dragonfly).
//! A mirror that fails (other than not having the content) is skipped for
//! [`MIRROR_PENALTY`], so a dead mirror costs one failed attempt, not one per read. Writes
//! never go to mirrors. Mirror hosts follow the same `plain_http`, `insecure_tls` and
//! credential settings as any registry host.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::Error;
use crate::reference::Reference;

/// How long a mirror that failed is left out before it is tried again.
pub const MIRROR_PENALTY: Duration = Duration::from_secs(15);

/// Mirrors that failed recently, by host.
#[derive(Default)]
pub(crate) struct MirrorHealth {
    down_until: Mutex<HashMap<String, Instant>>,
}

impl MirrorHealth {
    fn is_down(&self, host: &str) -> bool {
        let Ok(map) = self.down_until.lock() else {
            return false;
        };
        map.get(host).is_some_and(|until| Instant::now() < *until)
    }

    fn mark_down(&self, host: &str) {
        if let Ok(mut map) = self.down_until.lock() {
            map.insert(host.to_owned(), Instant::now() + MIRROR_PENALTY);
        }
    }

    fn mark_up(&self, host: &str) {
        if let Ok(mut map) = self.down_until.lock() {
            map.remove(host);
        }
    }
}

impl Client {
    /// The mirrors configured for `repo`'s registry that are not resting after a failure,
    /// each as the same repository on the mirror host.
    fn live_mirrors(&self, repo: &Reference) -> Vec<Reference> {
        let Some(hosts) = self.inner.config.mirrors.get(&repo.registry) else {
            return Vec::new();
        };
        hosts
            .iter()
            .filter(|host| !self.inner.mirror_health.is_down(host))
            .map(|host| Reference {
                registry: host.clone(),
                ..repo.clone()
            })
            .collect()
    }

    /// Runs the read `op` against each live mirror of `repo`'s registry in turn, then
    /// against the registry itself; the first success wins. Only the registry's own error
    /// is returned: a mirror's failure is logged and the mirror rested.
    pub(crate) async fn read_via_mirrors<T, F, Fut>(
        &self,
        repo: &Reference,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Reference) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        for mirror in self.live_mirrors(repo) {
            let host = mirror.registry.clone();
            match op(mirror).await {
                Ok(value) => {
                    self.inner.mirror_health.mark_up(&host);
                    return Ok(value);
                }
                // A mirror without the content (a peer-to-peer mirror whose peers lack
                // it) is healthy; only a failing one is rested.
                Err(error) if error.is_not_found() => {
                    tracing::debug!(mirror = %host, %error, "not on mirror; trying the next source");
                }
                Err(error) => {
                    tracing::warn!(mirror = %host, registry = %repo.registry, %error,
                        "mirror failed; trying the next source");
                    self.inner.mirror_health.mark_down(&host);
                }
            }
        }
        op(repo.clone()).await
    }
}
