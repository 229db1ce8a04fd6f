//! Blob reads: existence and size (HEAD), verified whole downloads, and byte-range reads.
//!
//! Range reads expect 206; a registry that ignores `Range` and answers 200 is handled by
//! skipping to the range while streaming, so the whole blob is never held in memory.

use std::ops::Range;

use bytes::Bytes;
use estargz::Digest;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::error::Error;
use crate::range_answer::{content_range, not_satisfiable, protocol};
use crate::range_body::RangeBody;
use crate::ranges::{merge_ranges, range_header};
use crate::reference::Reference;
use crate::retry::with_retries;
use crate::stream::BlobStream;
use crate::transport::{pull_scope, Call};

/// Ranges closer than this share one request in `read_blob_ranges`.
const MERGE_GAP: u64 = 64 * 1024;
/// Requests in flight at once in `read_blob_ranges`.
const PARALLEL_RANGE_REQUESTS: usize = 4;

impl Client {
    /// The blob's size from a HEAD request (mirrors first).
    pub async fn blob_size(&self, repo: &Reference, digest: &Digest) -> Result<u64, Error> {
        self.read_via_mirrors(repo, |source| async move {
            self.blob_size_at(&source, digest).await
        })
        .await
    }

    async fn blob_size_at(&self, repo: &Reference, digest: &Digest) -> Result<u64, Error> {
        let call = self.blob_call(Method::HEAD, repo, digest)?;
        let response = self.send(&call).await?;
        // HEAD bodies are empty, so read the header rather than the body's length.
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        length.ok_or_else(|| Error::Protocol {
            method: "HEAD".to_owned(),
            url: call.shown_url(),
            problem: "no valid Content-Length".to_owned(),
        })
    }

    /// Whether the repository has the blob (HEAD; 404 is `false`).
    pub async fn blob_exists(&self, repo: &Reference, digest: &Digest) -> Result<bool, Error> {
        let call = self.blob_call(Method::HEAD, repo, digest)?;
        match self.send(&call).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Streams a blob into `dest`, verifying its sha256; returns the byte count. A broken
    /// connection is resumed with a `Range` request (up to `retries` times). On a digest
    /// mismatch the bytes were written anyway: the caller discards them.
    pub async fn download_blob<W>(
        &self,
        repo: &Reference,
        digest: &Digest,
        dest: &mut W,
    ) -> Result<u64, Error>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut stream = self.blob_stream(repo, digest).await?;
        let write_error = |e| Error::io(format!("write blob {digest}"), e);
        while let Some(chunk) = stream.next_chunk().await? {
            dest.write_all(&chunk).await.map_err(write_error)?;
        }
        dest.flush().await.map_err(write_error)?;
        Ok(stream.received())
    }

    /// Starts a verified streaming download of a blob (mirrors first; a resumed
    /// download stays on the source it started from).
    pub async fn blob_stream(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<BlobStream, Error> {
        self.read_via_mirrors(repo, |source| async move {
            self.blob_stream_at(&source, digest).await
        })
        .await
    }

    async fn blob_stream_at(&self, repo: &Reference, digest: &Digest) -> Result<BlobStream, Error> {
        let call = self.blob_call(Method::GET, repo, digest)?.streaming();
        let response = self.send(&call).await?;
        Ok(BlobStream::new(
            self.clone(),
            repo,
            digest,
            call.shown_url(),
            response,
        ))
    }

    /// Reads `range` of a blob (not verified: the caller checks chunk digests), from a
    /// mirror when one is configured and serves it.
    pub async fn read_blob_range(
        &self,
        repo: &Reference,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<Bytes, Error> {
        self.read_via_mirrors(repo, |source| {
            let range = range.clone();
            async move { self.read_blob_range_at(&source, digest, range).await }
        })
        .await
    }

    async fn read_blob_range_at(
        &self,
        repo: &Reference,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<Bytes, Error> {
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        let call = self.range_call(repo, digest, &range)?;
        let (call, range) = (&call, &range);
        // A body that breaks part way is read again from the start.
        with_retries(
            self.inner.config.retry_policy(),
            &call.shown_url(),
            || async move { self.send_range(call, digest, range).await?.collect().await },
        )
        .await
    }

    /// Starts a range read of a blob whose bytes the caller takes piece by piece as they
    /// arrive (mirrors first). The request is retried like [`Client::read_blob_range`]'s;
    /// a body that breaks part way is the caller's to resume from where it broke.
    pub async fn open_blob_range(
        &self,
        repo: &Reference,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<RangeBody, Error> {
        self.read_via_mirrors(repo, |source| {
            let range = range.clone();
            async move { self.open_blob_range_at(&source, digest, range).await }
        })
        .await
    }

    async fn open_blob_range_at(
        &self,
        repo: &Reference,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<RangeBody, Error> {
        let call = self.range_call(repo, digest, &range)?;
        if range.start == range.end {
            return Ok(RangeBody::empty(&call, digest, range.start));
        }
        let (call, range) = (&call, &range);
        with_retries(
            self.inner.config.retry_policy(),
            &call.shown_url(),
            || async move { self.send_range(call, digest, range).await },
        )
        .await
    }

    fn range_call<'a>(
        &self,
        repo: &'a Reference,
        digest: &Digest,
        range: &Range<u64>,
    ) -> Result<Call<'a>, Error> {
        let call = self
            .blob_call(Method::GET, repo, digest)?
            .header(RANGE, &range_header(range))
            .streaming();
        if range.start > range.end {
            return Err(not_satisfiable(&call, digest, range));
        }
        Ok(call)
    }

    /// One request for `range`; its body is not read yet.
    async fn send_range(
        &self,
        call: &Call<'_>,
        digest: &Digest,
        range: &Range<u64>,
    ) -> Result<RangeBody, Error> {
        let response = match self.send_authorized(call).await {
            Err(Error::BadResponse { status: 416, .. }) => {
                return Err(not_satisfiable(call, digest, range))
            }
            other => other?,
        };
        RangeBody::for_range(call, digest, range, response)
    }

    /// Reads the last `len` bytes of a blob (all of it when shorter) with one suffix-range
    /// request, learning its size on the way: opening a lazy layer (footer and TOC) costs
    /// one round trip instead of a HEAD and two range reads. Mirrors first.
    pub async fn read_blob_tail(
        &self,
        repo: &Reference,
        digest: &Digest,
        len: u64,
    ) -> Result<BlobTail, Error> {
        self.read_via_mirrors(repo, |source| async move {
            self.read_blob_tail_at(&source, digest, len).await
        })
        .await
    }

    async fn read_blob_tail_at(
        &self,
        repo: &Reference,
        digest: &Digest,
        len: u64,
    ) -> Result<BlobTail, Error> {
        let call = self
            .blob_call(Method::GET, repo, digest)?
            .header(RANGE, &format!("bytes=-{}", len.max(1)))
            .streaming();
        let call = &call;
        let retries = self.inner.config.retry_policy();
        with_retries(retries, &call.shown_url(), || async move {
            let response = self.send_authorized(call).await?;
            receive_tail(call, digest, len, response).await
        })
        .await
    }

    /// Reads several ranges of a blob, merging close ones into fewer requests sent in
    /// parallel; the result is in the order of `ranges`. One range per request, so
    /// registries that reject multi-range requests work.
    pub async fn read_blob_ranges(
        &self,
        repo: &Reference,
        digest: &Digest,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>, Error> {
        if let Some(bad) = ranges.iter().find(|r| r.start > r.end) {
            let call = self.blob_call(Method::GET, repo, digest)?;
            return Err(not_satisfiable(&call, digest, bad));
        }
        let merged = merge_ranges(ranges, MERGE_GAP);
        let fetched: Vec<(usize, Bytes)> = futures_util::stream::iter(merged.iter().enumerate())
            .map(|(i, group)| async move {
                let bytes = self
                    .read_blob_range(repo, digest, group.range.clone())
                    .await?;
                Ok::<_, Error>((i, bytes))
            })
            .buffer_unordered(PARALLEL_RANGE_REQUESTS)
            .try_collect()
            .await?;
        let mut results = vec![Bytes::new(); ranges.len()];
        for (group_index, bytes) in fetched {
            let group = &merged[group_index];
            for &member in &group.members {
                let wanted = &ranges[member];
                let start = offset_in(group.range.start, wanted.start);
                let end = offset_in(group.range.start, wanted.end);
                results[member] = bytes.slice(start..end);
            }
        }
        Ok(results)
    }

    pub(crate) fn blob_call<'a>(
        &self,
        method: Method,
        repo: &'a Reference,
        digest: &Digest,
    ) -> Result<Call<'a>, Error> {
        let url = self.repository_url(repo, &format!("blobs/{digest}"))?;
        Ok(Call::new(method, url, repo, vec![pull_scope(repo)]))
    }
}

/// The end of a blob and the blob's size.
#[derive(Debug, Clone)]
pub struct BlobTail {
    /// The last `bytes.len()` bytes of the blob.
    pub bytes: Bytes,
    /// Size of the whole blob.
    pub size: u64,
}

/// Collects the tail from a 206 (suffix) or 200 (whole blob) answer to a suffix request.
async fn receive_tail(
    call: &Call<'_>,
    digest: &Digest,
    len: u64,
    response: Response,
) -> Result<BlobTail, Error> {
    let (range, size) = match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            let parsed = content_range(call, &response)?;
            match parsed.total {
                Some(total) if parsed.range.end == total => (parsed.range, total),
                _ => {
                    return Err(protocol(
                        call,
                        format!("Content-Range {parsed:?} is not the end of the blob"),
                    ))
                }
            }
        }
        StatusCode::OK => {
            let total = response
                .content_length()
                .ok_or_else(|| protocol(call, "no Content-Length on a whole-blob answer".into()))?;
            (total.saturating_sub(len)..total, total)
        }
        other => return Err(protocol(call, format!("status {other} to a range request"))),
    };
    let skip = if response.status() == StatusCode::OK {
        range.start
    } else {
        0
    };
    let bytes = RangeBody::positioned(call, digest, range, skip, response)
        .collect()
        .await?;
    Ok(BlobTail { bytes, size })
}

/// `absolute - base` as an index into a buffer that starts at `base` (merge_ranges
/// guarantees `base <= absolute` and that the buffer covers it).
fn offset_in(base: u64, absolute: u64) -> usize {
    usize::try_from(absolute.saturating_sub(base)).unwrap_or(usize::MAX)
}
