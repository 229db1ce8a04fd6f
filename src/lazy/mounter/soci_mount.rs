//! Mounting a layer without eStargz labels through its image's SOCI index.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::{soci_ahead, FuseMounter};
use crate::lazy::recorded::Recorded;
use crate::lazy::source::BlobLocation;
use crate::lazy::LazyError;
use crate::snapshot::Labels;

impl FuseMounter {
    /// Mounts a layer without eStargz labels through its image's SOCI index; gives
    /// `adopted` back when the image has none (the caller goes on as for any other layer).
    pub(super) fn mount_soci(
        &self,
        mountpoint: &Path,
        location: &BlobLocation,
        labels: &Labels,
        adopted: Option<OwnedFd>,
    ) -> Result<Result<(), Option<OwnedFd>>, LazyError> {
        let digest = location.digest;
        let timeout = self.fuse.mount_timeout;
        let params = soci_ahead::OpenParams {
            client: &self.client,
            cache: &self.cache,
            labels,
            readahead: self.layer.readahead_bounds(),
        };
        if self.prefetch.open_layers_ahead && adopted.is_none() {
            let prefetch = self.prefetch.enable;
            (self.soci_ahead).start(&self.soci, &self.runtime, location, &params, prefetch);
        }
        let open = self.soci_ahead.open(&self.soci, location, &params);
        let opening = async { tokio::time::timeout(timeout, open).await };
        let opened = self
            .runtime
            .block_on(opening)
            .map_err(|_| LazyError::Timeout { digest, timeout })??;
        let Some(soci_ahead::Opened { layer, prefetch }) = opened else {
            return Ok(Err(adopted));
        };
        let recorder = self.recorder_for(location, labels);
        // Containers wait on an adopted mount: it serves at once.
        if self.prefetch.enable && layer.has_prefetch() && adopted.is_none() {
            // Like the eStargz landmark: the learned spans come before ready, bounded; a
            // layer opened ahead has had its prefetch under way since.
            let timeout = self.prefetch.timeout;
            let prefetch =
                prefetch.unwrap_or_else(|| soci_ahead::start_prefetch(&layer, &self.runtime));
            let prefetching = async { tokio::time::timeout(timeout, prefetch).await };
            if self.runtime.block_on(prefetching).is_err() {
                tracing::info!(%digest, ?timeout, "soci prefetch still running at its timeout; mounting");
            }
        }
        if let Some(background) = &self.background {
            // With background fetching on, the whole blob comes anyway: check the index.
            crate::lazy::soci::spawn_check(&self.runtime, &layer, background.config());
        }
        let files = Arc::new(Recorded {
            content: layer,
            recorder,
        });
        let handle = self.attach(mountpoint, files, adopted)?;
        tracing::info!(%digest, mountpoint = %mountpoint.display(), adopted = handle.adopted(), "layer mounted lazily through its soci index");
        self.lock().insert(mountpoint.to_path_buf(), handle);
        Ok(Ok(()))
    }
}
