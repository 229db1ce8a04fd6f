//! An in-memory [`BlobSource`] for tests: records every range asked for and can fail,
//! stall, delay or corrupt reads.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use estargz::Digest;
use futures::future::BoxFuture;

use super::{BlobSource, RemoteError};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Serve,
    Fail,
    Stall,
}

/// An eStargz blob in memory that records every range it is asked for.
pub(crate) struct MemoryBlob {
    bytes: Mutex<Vec<u8>>,
    digest: Digest,
    requests: Mutex<Vec<Range<u64>>>,
    mode: Mutex<Mode>,
    delay: Duration,
}

impl MemoryBlob {
    pub(crate) fn new(bytes: Vec<u8>) -> Arc<MemoryBlob> {
        Arc::new(MemoryBlob {
            digest: Digest::sha256(&bytes),
            bytes: Mutex::new(bytes),
            requests: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Serve),
            delay: Duration::ZERO,
        })
    }

    pub(crate) fn with_delay(bytes: Vec<u8>, delay: Duration) -> Arc<MemoryBlob> {
        let mut blob = MemoryBlob::new(bytes);
        Arc::get_mut(&mut blob).expect("unique").delay = delay;
        blob
    }

    pub(crate) fn requests(&self) -> Vec<Range<u64>> {
        self.requests.lock().expect("lock").clone()
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
                Mode::Serve => {}
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
}
