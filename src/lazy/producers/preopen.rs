//! Opening an image's other layers ahead of their Prepare.
//!
//! containerd prepares an image's layers one at a time, bottom up, and each lazy mount
//! costs a round trip for its TOC plus its prefetch. The labels of the first Prepare
//! list the layers above it (`cri.image-layers`, or ctr-remote's `stargz.layers`), so
//! those are opened (TOC fetched, decoded and indexed, prioritized range prefetching)
//! in parallel at once; each one's own Prepare then takes the opened layer and checks
//! its TOC against the digest label it brings. What nobody takes within [`PREOPEN_TTL`]
//! is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use estargz::Digest;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::runtime::Handle;

use crate::lazy::layer::Layer;
use crate::snapshot::Labels;

/// CRI plugin / nerdctl: digests of this layer and the ones above it, comma-separated.
pub const CRI_IMAGE_LAYERS_LABEL: &str = "containerd.io/snapshot/cri.image-layers";
/// ctr-remote: the same list.
pub const STARGZ_LAYERS_LABEL: &str = "containerd.io/snapshot/remote/stargz.layers";
/// How long a pre-opened layer waits for its Prepare.
pub const PREOPEN_TTL: Duration = Duration::from_secs(120);

/// A layer being opened ahead; any number of waiters share the outcome.
pub type Opening = Shared<BoxFuture<'static, Result<Layer, Arc<String>>>>;

/// The layers digests listed in the labels (CRI family first), invalid entries skipped.
pub fn listed_layers(labels: &Labels) -> Vec<Digest> {
    let list = labels
        .get(CRI_IMAGE_LAYERS_LABEL)
        .or_else(|| labels.get(STARGZ_LAYERS_LABEL));
    list.map(|text| {
        text.split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Layers opened ahead of their Prepare, by blob digest.
#[derive(Default)]
pub struct Preopened {
    layers: Mutex<HashMap<Digest, (Instant, Opening)>>,
}

impl Preopened {
    /// Starts `opening` for `digest` on `runtime` unless one is already under way. The
    /// task runs whether or not anyone waits for it.
    pub fn start<F>(&self, digest: Digest, opening: F, runtime: &Handle)
    where
        F: Future<Output = Result<Layer, String>> + Send + 'static,
    {
        let mut layers = self.lock();
        layers.retain(|_, (started, _)| started.elapsed() < PREOPEN_TTL);
        if layers.contains_key(&digest) {
            return;
        }
        let task = runtime.spawn(opening);
        let shared = async move {
            match task.await {
                Ok(result) => result.map_err(Arc::new),
                Err(error) => Err(Arc::new(format!("pre-open task failed: {error}"))),
            }
        }
        .boxed()
        .shared();
        layers.insert(digest, (Instant::now(), shared));
    }

    /// The opening of `digest`, when one was started (and not expired); it is handed out
    /// once.
    pub fn take(&self, digest: &Digest) -> Option<Opening> {
        let (started, opening) = self.lock().remove(digest)?;
        (started.elapsed() < PREOPEN_TTL).then_some(opening)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, (Instant, Opening)>> {
        self.layers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_layers_from_either_label_family() {
        let d = |n: u8| Digest::from_bytes([n; 32]);
        let labels = |key: &str, value: String| -> Labels { [(key.to_owned(), value)].into() };
        let both: Labels = [
            (CRI_IMAGE_LAYERS_LABEL.to_owned(), d(1).to_string()),
            (STARGZ_LAYERS_LABEL.to_owned(), d(2).to_string()),
        ]
        .into();
        let cases = [
            (
                "cri",
                labels(CRI_IMAGE_LAYERS_LABEL, format!("{},{}", d(1), d(2))),
                vec![d(1), d(2)],
            ),
            (
                "ctr-remote",
                labels(STARGZ_LAYERS_LABEL, format!("{}, {}", d(3), d(4))),
                vec![d(3), d(4)],
            ),
            ("cri first", both, vec![d(1)]),
            (
                "bad entries skipped",
                labels(STARGZ_LAYERS_LABEL, format!("x,{},", d(5))),
                vec![d(5)],
            ),
            ("none", Labels::new(), vec![]),
        ];
        for (name, labels, want) in cases {
            assert_eq!(listed_layers(&labels), want, "{name}");
        }
    }
}
