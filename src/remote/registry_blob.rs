//! [`RegistryBlob`]: a layer blob read with HTTP range requests through `registry::Client`.

use std::ops::Range;

use bytes::Bytes;
use estargz::Digest;
use futures::future::BoxFuture;
use registry::{Client, Reference};

use super::{check_length, BlobLocation, BlobSource, RemoteError};

/// One layer blob in a registry repository, with its size known.
#[derive(Clone)]
pub struct RegistryBlob {
    client: Client,
    repository: Reference,
    digest: Digest,
    size: u64,
}

impl RegistryBlob {
    /// Looks the blob up (a HEAD request for its size).
    pub async fn open(client: Client, location: BlobLocation) -> Result<RegistryBlob, RemoteError> {
        let size = client
            .blob_size(&location.reference, &location.digest)
            .await?;
        Ok(RegistryBlob {
            client,
            repository: location.reference,
            digest: location.digest,
            size,
        })
    }

    /// The repository the blob is read from.
    pub fn repository(&self) -> &Reference {
        &self.repository
    }

    fn check_ranges(&self, ranges: &[Range<u64>]) -> Result<(), RemoteError> {
        match ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            Some(bad) => Err(RemoteError::OutOfRange {
                digest: self.digest,
                range: bad.clone(),
                size: self.size,
            }),
            None => Ok(()),
        }
    }
}

impl BlobSource for RegistryBlob {
    fn digest(&self) -> Digest {
        self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_ranges<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RemoteError>> {
        Box::pin(async move {
            self.check_ranges(ranges)?;
            // One request per range: the layer already coalesces adjacent chunks.
            let reads = ranges.iter().map(|range| {
                self.client
                    .read_blob_range(&self.repository, &self.digest, range.clone())
            });
            let parts = futures::future::try_join_all(reads).await?;
            for (range, bytes) in ranges.iter().zip(&parts) {
                check_length(self.digest, range, bytes)?;
            }
            Ok(parts)
        })
    }
}
