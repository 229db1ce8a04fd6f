//! One shared [`Layer`] per blob digest, whatever image, namespace or snapshot mounts
//! it: two mounts of the same blob read through one index, one set of in-flight chunk
//! fetches, and the TOC is fetched once. The map holds layers weakly; a layer lives as
//! long as one of its mounts (or anyone else) holds it, and is dropped with the last.
//!
//! Opening is done by one caller per digest at a time: the others wait for its turn and
//! then share what it opened, or, when it failed (or gave up), open it themselves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use estargz::Digest;

use crate::lazy::layer::{Layer, WeakLayer};

/// Whether [`SharedLayers::get_or_open`] found the layer open or opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Another mount already had it: its prefetch and background fetching are under way.
    Shared,
    /// Opened now (or taken from the layers opened ahead) by this caller.
    Opened,
}

#[derive(Default)]
struct Slot {
    /// Held while a caller opens the layer.
    turn: Arc<tokio::sync::Mutex<()>>,
    layer: Option<WeakLayer>,
}

/// Live layers by blob digest.
#[derive(Default)]
pub struct SharedLayers {
    slots: Mutex<HashMap<Digest, Slot>>,
}

impl SharedLayers {
    /// The live layer of `digest`, if any mount still holds it.
    pub fn live(&self, digest: &Digest) -> Option<Layer> {
        self.lock()
            .get(digest)?
            .layer
            .as_ref()
            .and_then(WeakLayer::upgrade)
    }

    /// The live layer of `digest`, or the one `open` opens (waiting first for another
    /// caller opening the same digest). Dropping the future gives up the turn.
    pub async fn get_or_open<F, Fut, E>(
        &self,
        digest: Digest,
        open: F,
    ) -> Result<(Layer, Sharing), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Layer, E>>,
    {
        if let Some(layer) = self.live(&digest) {
            return Ok((layer, Sharing::Shared));
        }
        let turn = self.lock().entry(digest).or_default().turn.clone();
        let _turn = turn.lock().await;
        if let Some(layer) = self.live(&digest) {
            return Ok((layer, Sharing::Shared));
        }
        let layer = open().await?;
        self.lock().entry(digest).or_default().layer = Some(layer.downgrade());
        Ok((layer, Sharing::Opened))
    }

    /// How many digests have a live layer.
    pub fn len(&self) -> usize {
        let slots = self.lock();
        slots
            .values()
            .filter(|slot| slot.layer.as_ref().is_some_and(|l| l.upgrade().is_some()))
            .count()
    }

    /// Whether no layer is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map, with the slots of dropped layers nobody is opening forgotten.
    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| {
            let alive = slot.layer.as_ref().is_some_and(|l| l.upgrade().is_some());
            alive || Arc::strong_count(&slot.turn) > 1
        });
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazy::cache::{CacheConfig, ChunkCache};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn digest(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    async fn a_layer() -> Layer {
        let cache = Arc::new(ChunkCache::new(&CacheConfig::default()).expect("cache"));
        crate::testing::memory_layer(&[("a.txt", b"a")], 1 << 20, &[], cache)
            .await
            .0
    }

    #[tokio::test]
    async fn concurrent_callers_open_once_and_share() {
        let layers = SharedLayers::default();
        let opened = AtomicUsize::new(0);
        let open = || async {
            opened.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok::<_, ()>(a_layer().await)
        };
        let (one, two, three) = tokio::join!(
            layers.get_or_open(digest(1), open),
            layers.get_or_open(digest(1), open),
            layers.get_or_open(digest(1), open),
        );
        let results = [one.unwrap(), two.unwrap(), three.unwrap()];
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        let sharing: Vec<Sharing> = results.iter().map(|(_, s)| *s).collect();
        assert_eq!(sharing, [Sharing::Opened, Sharing::Shared, Sharing::Shared]);
        let first = results[0].0.downgrade();
        assert!(
            results.iter().all(|(layer, _)| first.is(layer)),
            "one layer"
        );
    }

    #[tokio::test]
    async fn a_failed_opening_is_taken_over_by_the_next_caller() {
        let layers = SharedLayers::default();
        let failing = || async { Err::<Layer, &str>("unreachable") };
        let working = || async { Ok::<_, &str>(a_layer().await) };
        let (failed, taken_over) = tokio::join!(
            layers.get_or_open(digest(2), failing),
            layers.get_or_open(digest(2), working),
        );
        assert_eq!(failed.err(), Some("unreachable"));
        assert_eq!(taken_over.unwrap().1, Sharing::Opened);
    }

    #[tokio::test]
    async fn the_layer_lives_while_a_holder_does() {
        let layers = SharedLayers::default();
        let open = || async { Ok::<_, ()>(a_layer().await) };
        let (first, _) = layers.get_or_open(digest(3), open).await.unwrap();
        let (second, sharing) = layers.get_or_open(digest(3), open).await.unwrap();
        assert_eq!(sharing, Sharing::Shared);
        drop(first);
        assert!(
            layers.live(&digest(3)).is_some(),
            "the second holder keeps it"
        );
        assert!(second.blob_size() > 0);
        drop(second);
        assert!(
            layers.live(&digest(3)).is_none(),
            "dropped with the last holder"
        );
        assert!(layers.is_empty());
        let (_, sharing) = layers.get_or_open(digest(3), open).await.unwrap();
        assert_eq!(sharing, Sharing::Opened, "opened again afterwards");
    }
}
