//! [`RegistryBlob`]: a layer blob read with HTTP range requests through `registry::Client`.

use std::ops::Range;

use bytes::Bytes;
use estargz::Digest;
use futures::future::BoxFuture;
use futures::stream::{StreamExt, TryStreamExt};
use registry::{Client, Reference};

use crate::lazy::observe;

use super::{check_length, BlobLocation, BlobSource, PartStream, RangeStream, RemoteError};

/// Bytes fetched from the end of a blob when it is opened: the footer and the TOC of most
/// layers (a few hundred files make a TOC of 10-20 KB), so that opening a layer is one
/// round trip; a bigger TOC costs one more request. Small, because on a slow link every
/// layer's tail is on the critical path before its prefetch can start.
pub const OPEN_TAIL_BYTES: u64 = 64 << 10;

/// One layer blob in a registry repository, with its size known.
pub struct RegistryBlob {
    client: Client,
    repository: Reference,
    digest: Digest,
    size: u64,
    tail: std::sync::Mutex<Option<Bytes>>,
}

impl RegistryBlob {
    /// Looks the blob up: one suffix-range request gives its size and its last
    /// `OPEN_TAIL_BYTES` (footer and, usually, the TOC).
    pub async fn open(client: Client, location: BlobLocation) -> Result<RegistryBlob, RemoteError> {
        let reading = client.read_blob_tail(&location.reference, &location.digest, OPEN_TAIL_BYTES);
        let tail = observe::range_request(observe::TOC_KIND, reading).await?;
        observe::observer().fetched(observe::TOC_KIND, tail.bytes.len() as u64);
        Ok(RegistryBlob {
            client,
            repository: location.reference,
            digest: location.digest,
            size: tail.size,
            tail: std::sync::Mutex::new(Some(tail.bytes)),
        })
    }

    /// A blob whose size and last bytes are already known (a saved TOC): no request is
    /// made until a range is read.
    pub fn with_tail(
        client: Client,
        location: BlobLocation,
        size: u64,
        tail: Bytes,
    ) -> RegistryBlob {
        RegistryBlob {
            client,
            repository: location.reference,
            digest: location.digest,
            size,
            tail: std::sync::Mutex::new(Some(tail)),
        }
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

    fn take_tail(&self) -> Option<Bytes> {
        self.tail.lock().ok()?.take()
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

    fn multi_range(&self) -> bool {
        self.client.multi_range(&self.repository)
    }

    fn read_parts<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Option<PartStream>, RemoteError>> {
        Box::pin(async move {
            self.check_ranges(ranges)?;
            let opened = self
                .client
                .open_blob_ranges(&self.repository, &self.digest, ranges)
                .await?;
            let Some(body) = opened else {
                return Ok(None);
            };
            let pieces = futures::stream::try_unfold(body, |mut body| async move {
                let piece = body.next_piece().await?;
                Ok::<_, registry::Error>(piece.map(|piece| (piece, body)))
            });
            Ok(Some(pieces.map_err(RemoteError::from).boxed()))
        })
    }

    fn read_stream(&self, range: Range<u64>) -> BoxFuture<'_, Result<RangeStream, RemoteError>> {
        Box::pin(async move {
            self.check_ranges(std::slice::from_ref(&range))?;
            let body = self
                .client
                .open_blob_range(&self.repository, &self.digest, range)
                .await?;
            let pieces = futures::stream::try_unfold(body, |mut body| async move {
                let piece = body.next_piece().await?;
                Ok::<_, registry::Error>(piece.map(|piece| (piece, body)))
            });
            Ok(pieces.map_err(RemoteError::from).boxed())
        })
    }
}
