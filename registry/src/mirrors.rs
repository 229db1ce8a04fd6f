//! Registry mirrors: reads (manifests, blob sizes, blob bytes) of a repository go first
//! to the mirrors configured for its registry, in order, then to the registry itself.
//!
//! A mirror is any host serving the distribution API for the same repository names (a
//! pull-through cache, a node-local or peer-to-peer mirror such as Spegel or Dragonfly).
//! A mirror that fails (other than not having the content) is skipped for
//! [`MIRROR_PENALTY`](crate::MIRROR_PENALTY), so a dead mirror costs one failed attempt, not one per read,
//! unless the registry fails too: then the resting mirrors are the last resort. Writes
//! never go to mirrors. The mirrors are the registry's endpoints before its server, as
//! `hosts.rs` resolves them (`[remote] mirrors`, then hosts.toml `[host]` entries); a
//! mirror host's credentials are looked up under its own host name, as containerd does.

use std::future::Future;

use crate::client::Client;
use crate::error::Error;
use crate::reference::Reference;

impl Client {
    /// The endpoints of `repo`'s registry other than its server that may serve this read
    /// (`pull`, and `resolve` too when `resolving` a tag) and are not resting after a
    /// failure, each as the same repository on that host; then the server's reference;
    /// then the mirrors that are resting.
    fn read_sources(&self, repo: &Reference, resolving: bool) -> Result<Sources, Error> {
        let endpoints = self
            .inner
            .endpoints
            .resolve(&self.inner.config, &repo.registry)?;
        let Some((server, mirrors)) = endpoints.split_last() else {
            return Ok(Sources {
                live: Vec::new(),
                primary: repo.clone(),
                resting: Vec::new(),
            });
        };
        let on = |host: &str| Reference {
            registry: host.to_owned(),
            ..repo.clone()
        };
        let (resting, live): (Vec<_>, Vec<_>) = mirrors
            .iter()
            .filter(|m| m.capabilities.pull && (!resolving || m.capabilities.resolve))
            .partition(|m| self.inner.mirror_health.is_down(&m.host));
        // The registry itself keeps its name (credentials are stored under it) unless
        // hosts.toml sends it elsewhere.
        let primary = if server.host == repo.api_host() {
            repo.clone()
        } else {
            on(&server.host)
        };
        Ok(Sources {
            live: live.iter().map(|m| on(&m.host)).collect(),
            primary,
            resting: resting.iter().map(|m| on(&m.host)).collect(),
        })
    }

    /// Runs the blob read `op` against each live mirror of `repo`'s registry in turn, then
    /// against the registry itself; the first success wins. Only the registry's own error
    /// is returned: a mirror's failure is logged and the mirror rested.
    pub(crate) async fn read_via_mirrors<T, F, Fut>(
        &self,
        repo: &Reference,
        op: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Reference) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.read_via_hosts(repo, false, op).await
    }

    /// [`Client::read_via_mirrors`] for reads that may resolve a tag (`resolving`): then
    /// only mirrors with the `resolve` capability are asked.
    pub(crate) async fn read_via_hosts<T, F, Fut>(
        &self,
        repo: &Reference,
        resolving: bool,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Reference) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let sources = self.read_sources(repo, resolving)?;
        for mirror in sources.live {
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
        let error = match op(sources.primary).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        // The registry failed too (e.g. it is down while a mirror only had a hiccup, or
        // failed a read it could not serve): a resting mirror may still have the content.
        if error.is_not_found() {
            return Err(error);
        }
        for mirror in sources.resting {
            let host = mirror.registry.clone();
            if let Ok(value) = op(mirror).await {
                tracing::info!(mirror = %host, "resting mirror served while the registry failed");
                self.inner.mirror_health.mark_up(&host);
                return Ok(value);
            }
        }
        Err(error)
    }
}

/// Where a read may go, in order: live mirrors, the registry, resting mirrors.
struct Sources {
    live: Vec<Reference>,
    primary: Reference,
    resting: Vec<Reference>,
}
