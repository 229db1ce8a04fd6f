//! `RangeBody`: the answer to a range request, handed out piece by piece as it arrives,
//! so a caller can check and use the front of a big range while the rest is on the wire.
//!
//! A registry that ignores `Range` and answers 200 with the whole blob is handled here
//! too: the bytes before the range are dropped as they stream by and the body is not read
//! past the range, so the whole blob is never held.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use estargz::Digest;
use reqwest::{Response, StatusCode};

use crate::error::Error;
use crate::range_answer::{check_content_range, len_u64, not_satisfiable, protocol};
use crate::transport::{transport_error, Call};

/// Buffers for collected bodies start at most this big; they grow as bytes arrive.
const MAX_PREALLOCATION: u64 = 16 * 1024 * 1024;

/// The body of one range request, positioned at the first byte of the range.
pub struct RangeBody {
    /// `None` for an empty range: nothing was requested.
    response: Option<Response>,
    method: String,
    url: String,
    digest: Digest,
    range: Range<u64>,
    /// Bytes still to drop before the range starts (a 200 answer with the whole blob).
    skip: u64,
    whole_blob: bool,
    /// Bytes of the range handed out so far.
    received: u64,
}

impl RangeBody {
    /// Takes a registry's answer to a request for `range`: 206 with that range, or 200
    /// with the whole blob (then the range must lie inside it).
    pub(crate) fn for_range(
        call: &Call<'_>,
        digest: &Digest,
        range: &Range<u64>,
        response: Response,
    ) -> Result<RangeBody, Error> {
        let skip = match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                check_content_range(call, digest, range, &response)?;
                0
            }
            StatusCode::OK => {
                if response.content_length().is_some_and(|len| len < range.end) {
                    return Err(not_satisfiable(call, digest, range));
                }
                range.start
            }
            other => {
                return Err(protocol(call, format!("status {other} to a range request")));
            }
        };
        Ok(Self::positioned(
            call,
            digest,
            range.clone(),
            skip,
            response,
        ))
    }

    /// A body whose bytes from `skip` on are `range` of the blob.
    pub(crate) fn positioned(
        call: &Call<'_>,
        digest: &Digest,
        range: Range<u64>,
        skip: u64,
        response: Response,
    ) -> RangeBody {
        RangeBody {
            whole_blob: response.status() == StatusCode::OK,
            response: Some(response),
            method: call.method.to_string(),
            url: call.shown_url(),
            digest: *digest,
            range,
            skip,
            received: 0,
        }
    }

    /// A body for an empty range (no request is made for one).
    pub(crate) fn empty(call: &Call<'_>, digest: &Digest, at: u64) -> RangeBody {
        RangeBody {
            response: None,
            method: call.method.to_string(),
            url: call.shown_url(),
            digest: *digest,
            range: at..at,
            skip: 0,
            whole_blob: false,
            received: 0,
        }
    }

    /// The blob range this body carries.
    pub fn range(&self) -> &Range<u64> {
        &self.range
    }

    /// Bytes of the range handed out so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next piece of the range, in order; `None` once the whole range was handed out.
    /// A body that ends or breaks early is an error (transient for a broken connection,
    /// so the caller may resume from `range().start + received()`).
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, Error> {
        let wanted = self.range.end - self.range.start;
        loop {
            if self.received >= wanted {
                return Ok(None);
            }
            let Some(response) = self.response.as_mut() else {
                return Ok(None);
            };
            let next = response.chunk().await;
            let next = next.map_err(|e| transport_error(&reqwest::Method::GET, &self.url, e))?;
            let Some(mut piece) = next else {
                return Err(self.ended_early());
            };
            if self.skip > 0 {
                let dropped = self.skip.min(len_u64(&piece));
                self.skip -= dropped;
                let _ = piece.split_to(usize::try_from(dropped).unwrap_or(piece.len()));
            }
            let room = wanted - self.received;
            piece.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            if piece.is_empty() {
                continue;
            }
            self.received += len_u64(&piece);
            return Ok(Some(piece));
        }
    }

    /// The whole range in one buffer.
    pub async fn collect(mut self) -> Result<Bytes, Error> {
        let wanted = self.range.end - self.range.start;
        let capacity = usize::try_from(wanted.min(MAX_PREALLOCATION)).unwrap_or(0);
        let mut all = BytesMut::with_capacity(capacity);
        while let Some(piece) = self.next_piece().await? {
            all.extend_from_slice(&piece);
        }
        Ok(all.freeze())
    }

    fn ended_early(&self) -> Error {
        if self.whole_blob {
            // The whole blob came back and it is shorter than the range.
            return Error::RangeNotSatisfied {
                method: self.method.clone(),
                url: self.url.clone(),
                digest: self.digest,
                range: self.range.clone(),
            };
        }
        Error::Protocol {
            method: self.method.clone(),
            url: self.url.clone(),
            problem: format!(
                "body ended after {} of {} bytes of {}..{}",
                self.received,
                self.range.end - self.range.start,
                self.range.start,
                self.range.end
            ),
        }
    }
}
