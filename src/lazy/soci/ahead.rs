//! Opening an image's other SOCI layers ahead of their Prepare.
//!
//! containerd prepares an image's layers one at a time, bottom up, and a SOCI mount costs
//! the round trip for its index blobs plus its prefetch, which comes before ready. As for
//! eStargz layers ([`crate::lazy::producers::preopen`]), the labels of a Prepare list the
//! layers above it: each of those is opened at once, in parallel, and its prefetch
//! started, so its own Prepare finds the layer open and waits only for what is left of
//! its prefetch. A pre-opened layer is keyed by image reference and blob digest (another
//! image's index may carry another prefetch for the same blob); what nobody takes within
//! [`PREOPEN_TTL`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::runtime::Handle;

use super::{SociError, SociIndexes, SociLayer};
use crate::lazy::cache::ChunkCache;
use crate::lazy::producers::preopen::{listed_layers, PREOPEN_TTL};
use crate::lazy::source::BlobLocation;
use crate::snapshot::Labels;

/// A prefetch under way; any number of waiters share its end.
pub type Prefetching = Shared<BoxFuture<'static, ()>>;

/// A SOCI layer opened for a mount, with its prefetch when one was started already.
pub struct Opened {
    pub layer: SociLayer,
    pub prefetch: Option<Prefetching>,
}

/// An opening under way: the layer and its prefetch, or `None` when the image's index
/// does not list the layer.
type Opening =
    Shared<BoxFuture<'static, Result<Option<(SociLayer, Option<Prefetching>)>, Arc<String>>>>;

/// What opening a layer needs besides its location.
pub struct OpenParams<'a> {
    pub client: &'a registry::Client,
    pub cache: &'a Arc<ChunkCache>,
    pub labels: &'a Labels,
    pub readahead: Option<(u64, u64)>,
}

/// SOCI layers opened ahead of their Prepare.
#[derive(Default)]
pub struct SociAhead {
    layers: Mutex<HashMap<(String, estargz::Digest), (Instant, Opening)>>,
}

/// Starts `layer`'s prefetch as a task of its own (it runs whether or not anyone waits).
pub fn start_prefetch(layer: &SociLayer, runtime: &Handle) -> Prefetching {
    let task = runtime.spawn(layer.clone().prefetch());
    async move {
        // A prefetch that failed only costs its time: reads fetch what they need.
        let _ = task.await;
    }
    .boxed()
    .shared()
}

impl SociAhead {
    /// Starts opening, each with its prefetch when `prefetch`, the layers `params.labels`
    /// lists besides `location`'s own (those of the same image not started already).
    pub fn start(
        &self,
        indexes: &Arc<SociIndexes>,
        runtime: &Handle,
        location: &BlobLocation,
        params: &OpenParams<'_>,
        prefetch: bool,
    ) {
        let mut layers = self.lock();
        layers.retain(|_, (started, _)| started.elapsed() < PREOPEN_TTL);
        for digest in listed_layers(params.labels) {
            let key = (location.reference.to_string(), digest);
            if digest == location.digest || layers.contains_key(&key) {
                continue;
            }
            let neighbour = BlobLocation {
                reference: location.reference.clone(),
                digest,
            };
            let (indexes, client, cache) =
                (indexes.clone(), params.client.clone(), params.cache.clone());
            let (labels, readahead, spawner) =
                (params.labels.clone(), params.readahead, runtime.clone());
            let task = runtime.spawn(async move {
                let layer = indexes
                    .open(&client, &cache, &neighbour, &labels, readahead)
                    .await
                    .map_err(|e| Arc::new(e.to_string()))?;
                Ok(layer.map(|layer| {
                    let started = (prefetch && layer.has_prefetch())
                        .then(|| start_prefetch(&layer, &spawner));
                    (layer, started)
                }))
            });
            let opening = async move {
                match task.await {
                    Ok(result) => result,
                    Err(error) => Err(Arc::new(format!("soci pre-open task failed: {error}"))),
                }
            }
            .boxed()
            .shared();
            layers.insert(key, (Instant::now(), opening));
        }
    }

    /// The layer at `location` for its mount: the one opened ahead when there is one (and
    /// it opened), else opened now; `None` when the image's index does not list it.
    pub async fn open(
        &self,
        indexes: &SociIndexes,
        location: &BlobLocation,
        params: &OpenParams<'_>,
    ) -> Result<Option<Opened>, SociError> {
        let key = (location.reference.to_string(), location.digest);
        let taken = self.lock().remove(&key);
        if let Some((started, opening)) = taken.filter(|(s, _)| s.elapsed() < PREOPEN_TTL) {
            match opening.await {
                Ok(opened) => {
                    tracing::debug!(layer = %location.digest, ahead_ms = started.elapsed().as_millis() as u64, "using the soci layer opened ahead");
                    return Ok(opened.map(|(layer, prefetch)| Opened { layer, prefetch }));
                }
                Err(error) => {
                    tracing::debug!(layer = %location.digest, %error, "soci opening ahead failed; opening again");
                }
            }
        }
        let layer = indexes
            .open(
                params.client,
                params.cache,
                location,
                params.labels,
                params.readahead,
            )
            .await?;
        Ok(layer.map(|layer| Opened {
            layer,
            prefetch: None,
        }))
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, estargz::Digest), (Instant, Opening)>> {
        self.layers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
