//! An in-memory [`BlobSource`] for tests: records every range asked for and can fail,
//! stall, delay or corrupt reads, or stream them in pieces and break or stall part way.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use estargz::Digest;
use futures::future::BoxFuture;
use futures::stream::StreamExt;

use super::{BlobSource, PartStream, RangeStream, RemoteError};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Serve,
    Fail,
    Stall,
    /// A streamed read hands out this many bytes, then fails; the next read is served.
    BreakAfter(u64),
    /// A streamed read hands out this many bytes, then never sends more.
    StallAfter(u64),
}

/// How a [`MemoryBlob`] answers multi-range reads.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Parts {
    /// Not offered: readers ask range by range.
    Off,
    /// Every range asked for, in one response.
    Serve,
    /// Offered, but the first such request is answered otherwise (as a registry that
    /// sends one range, the whole blob or 400): from then on `Off`.
    Refuse,
}

/// An eStargz blob in memory that records every range it is asked for.
pub(crate) struct MemoryBlob {
    bytes: Mutex<Vec<u8>>,
    digest: Digest,
    requests: Mutex<Vec<Range<u64>>>,
    mode: Mutex<Mode>,
    delay: Duration,
    /// Bytes per piece of a streamed read.
    piece: usize,
    /// How many of the blob's last bytes `take_tail` hands out (once), as opening does.
    tail: Mutex<usize>,
    parts: Mutex<Parts>,
    /// The ranges of each multi-range request.
    part_requests: Mutex<Vec<Vec<Range<u64>>>>,
}

impl MemoryBlob {
    pub(crate) fn new(bytes: Vec<u8>) -> Arc<MemoryBlob> {
        Arc::new(MemoryBlob {
            digest: Digest::sha256(&bytes),
            bytes: Mutex::new(bytes),
            requests: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Serve),
            delay: Duration::ZERO,
            piece: usize::MAX,
            tail: Mutex::new(0),
            parts: Mutex::new(Parts::Off),
            part_requests: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn with_delay(bytes: Vec<u8>, delay: Duration) -> Arc<MemoryBlob> {
        let mut blob = MemoryBlob::new(bytes);
        Arc::get_mut(&mut blob).expect("unique").delay = delay;
        blob
    }

    /// Streamed reads come in pieces of `piece` bytes.
    pub(crate) fn in_pieces(bytes: Vec<u8>, piece: usize) -> Arc<MemoryBlob> {
        let mut blob = MemoryBlob::new(bytes);
        Arc::get_mut(&mut blob).expect("unique").piece = piece.max(1);
        blob
    }

    /// The next `take_tail` hands out the blob's last `len` bytes, as if opening the
    /// blob had fetched them.
    pub(crate) fn set_tail(&self, len: usize) {
        *self.tail.lock().expect("lock") = len;
    }

    pub(crate) fn requests(&self) -> Vec<Range<u64>> {
        self.requests.lock().expect("lock").clone()
    }

    pub(crate) fn set_parts(&self, parts: Parts) {
        *self.parts.lock().expect("lock") = parts;
    }

    /// The ranges of each multi-range request so far.
    pub(crate) fn part_requests(&self) -> Vec<Vec<Range<u64>>> {
        self.part_requests.lock().expect("lock").clone()
    }

    pub(crate) fn clear_requests(&self) {
        self.requests.lock().expect("lock").clear();
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    pub(crate) fn flip_byte(&self, at: u64) {
        let mut bytes = self.bytes.lock().expect("lock");
        bytes[at as usize] ^= 0xff;
    }
}

impl BlobSource for MemoryBlob {
    fn digest(&self) -> Digest {
        self.digest
    }

    fn size(&self) -> u64 {
        self.bytes.lock().expect("lock").len() as u64
    }

    fn take_tail(&self) -> Option<Bytes> {
        let len = std::mem::take(&mut *self.tail.lock().expect("lock"));
        let bytes = self.bytes.lock().expect("lock");
        (len > 0).then(|| Bytes::copy_from_slice(&bytes[bytes.len().saturating_sub(len)..]))
    }

    fn read_ranges<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RemoteError>> {
        Box::pin(async move {
            self.requests
                .lock()
                .expect("lock")
                .extend_from_slice(ranges);
            let mode = *self.mode.lock().expect("lock");
            match mode {
                Mode::Fail => {
                    return Err(RemoteError::Unavailable {
                        digest: self.digest,
                        reason: "test source is down",
                    })
                }
                Mode::Stall => futures::future::pending::<()>().await,
                Mode::Serve | Mode::BreakAfter(_) | Mode::StallAfter(_) => {}
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let bytes = self.bytes.lock().expect("lock");
            Ok(ranges
                .iter()
                .map(|r| Bytes::copy_from_slice(&bytes[r.start as usize..r.end as usize]))
                .collect())
        })
    }

    fn multi_range(&self) -> bool {
        *self.parts.lock().expect("lock") != Parts::Off
    }

    fn read_parts<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Option<PartStream>, RemoteError>> {
        Box::pin(async move {
            let parts = *self.parts.lock().expect("lock");
            if parts == Parts::Off {
                return Ok(None);
            }
            self.part_requests
                .lock()
                .expect("lock")
                .push(ranges.to_vec());
            if parts == Parts::Refuse {
                self.set_parts(Parts::Off);
                return Ok(None);
            }
            // Served like one read of each range, in one response.
            let bytes = self.read_ranges(ranges).await?;
            let pieces: Vec<Result<(u64, Bytes), RemoteError>> = ranges
                .iter()
                .zip(bytes)
                .flat_map(|(range, bytes)| {
                    self.pieces(bytes)
                        .into_iter()
                        .scan(range.start, |at, piece| {
                            let piece = piece.map(|p| {
                                let start = *at;
                                *at += p.len() as u64;
                                (start, p)
                            });
                            Some(piece)
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            Ok(Some(futures::stream::iter(pieces).boxed()))
        })
    }

    fn read_stream(&self, range: Range<u64>) -> BoxFuture<'_, Result<RangeStream, RemoteError>> {
        Box::pin(async move {
            let mode = *self.mode.lock().expect("lock");
            let (Mode::BreakAfter(cut) | Mode::StallAfter(cut)) = mode else {
                let bytes = self.read(range).await?;
                return Ok(futures::stream::iter(self.pieces(bytes)).boxed());
            };
            self.requests.lock().expect("lock").push(range.clone());
            if let Mode::BreakAfter(_) = mode {
                self.set_mode(Mode::Serve);
            }
            let end = range.end.min(range.start + cut);
            let sent = Bytes::copy_from_slice(
                &self.bytes.lock().expect("lock")[range.start as usize..end as usize],
            );
            let digest = self.digest;
            let after = async move {
                if let Mode::StallAfter(_) = mode {
                    futures::future::pending::<()>().await;
                }
                Err(RemoteError::Unavailable {
                    digest,
                    reason: "test source broke mid-body",
                })
            };
            let cut_short = futures::stream::once(after).take(usize::from(end < range.end));
            Ok(futures::stream::iter(self.pieces(sent))
                .chain(cut_short)
                .boxed())
        })
    }
}

impl MemoryBlob {
    fn pieces(&self, bytes: Bytes) -> Vec<Result<Bytes, RemoteError>> {
        (0..bytes.len())
            .step_by(self.piece)
            .map(|at| Ok(bytes.slice(at..bytes.len().min(at.saturating_add(self.piece)))))
            .collect()
    }
}
