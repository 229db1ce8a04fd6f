//! What a chunk fetch hands back, shared by the code that starts fetches (`fetch.rs`)
//! and the code that receives their bytes (`receive.rs`): the error every reader waiting
//! on a fetch gets, the chunk handle readers await, how long a failed fetch's error is
//! kept, and range arithmetic both sides use.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use estargz::{ChunkError, Digest};
use futures::future::{BoxFuture, Shared};

use crate::lazy::cache::ChunkBytes;
use crate::lazy::source::RemoteError;

/// Errors of one fetch, shared by every reader waiting on it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetch blob bytes {}..{}: {source}", range.start, range.end)]
    Remote {
        range: Range<u64>,
        #[source]
        source: RemoteError,
    },
    #[error("layer {blob}: fetch of blob bytes {}..{} timed out after {timeout:?}", range.start, range.end)]
    TimedOut {
        blob: Digest,
        range: Range<u64>,
        timeout: Duration,
    },
    #[error("layer {blob}: chunk at blob bytes {}..{}: {source}", range.start, range.end)]
    Chunk {
        blob: Digest,
        range: Range<u64>,
        #[source]
        source: Box<ChunkError>,
    },
    #[error("layer {blob}: chunk at blob byte {offset} missing from the fetch that covers it")]
    Lost { blob: Digest, offset: u64 },
    #[error("layer {blob}: fetch task failed: {source}")]
    Task {
        blob: Digest,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A fetched chunk's verified bytes, or why it could not be had.
pub(super) type ChunkResult = Result<ChunkBytes, Arc<FetchError>>;
/// One chunk of a fetch under way, which any number of readers can await; it resolves
/// as soon as that chunk is verified, before the rest of its range request has arrived.
pub(super) type SharedChunk = Shared<BoxFuture<'static, ChunkResult>>;

/// How long a failed fetch stays joinable. The kernel answers a failed read by reading the
/// same page again at once (well within a millisecond); that retry gets the same error
/// instead of waiting out a second fetch, which would double the time to EIO. Short, so
/// a registry that is back is used at once.
pub(super) const FAILED_FETCH_HOLD: Duration = Duration::from_millis(20);

/// The smallest range covering all `ranges`.
pub(super) fn span<'a>(ranges: impl Iterator<Item = &'a Range<u64>>) -> Range<u64> {
    ranges
        .fold(None, |acc: Option<Range<u64>>, r| match acc {
            None => Some(r.clone()),
            Some(acc) => Some(acc.start.min(r.start)..acc.end.max(r.end)),
        })
        .unwrap_or(0..0)
}
