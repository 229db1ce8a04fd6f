//! `BlobStream`: a whole-blob download that verifies the sha256 at the end and resumes
//! with a `Range` request when the connection breaks part way.

use bytes::Bytes;
use estargz::{Digest, Hasher};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, Response, StatusCode};

use crate::client::Client;
use crate::error::Error;
use crate::range_answer::len_u64;
use crate::ranges::parse_content_range;
use crate::reference::Reference;
use crate::retry::backoff;
use crate::transport::transport_error;

/// A blob body being received; `next_chunk` verifies the digest when the stream ends.
pub struct BlobStream {
    client: Client,
    repo: Reference,
    expected: Digest,
    response: Response,
    hasher: Hasher,
    /// Bytes handed out so far (and hashed).
    received: u64,
    /// Bytes still to drop from the current response (a resume answered with 200).
    skip: u64,
    size: Option<u64>,
    url: String,
    resumes: u32,
    finished: bool,
}

impl BlobStream {
    pub(crate) fn new(
        client: Client,
        repo: &Reference,
        digest: &Digest,
        url: String,
        response: Response,
    ) -> Self {
        BlobStream {
            client,
            repo: repo.clone(),
            expected: *digest,
            size: response.content_length(),
            response,
            hasher: Hasher::new(),
            received: 0,
            skip: 0,
            url,
            resumes: 0,
            finished: false,
        }
    }

    /// The blob size announced by the registry, when it sent `Content-Length`.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Bytes returned so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next piece of the blob; `None` at the end, after the digest has been checked.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        while !self.finished {
            let next = self.response.chunk().await;
            match next.map_err(|e| transport_error(&Method::GET, &self.url, e)) {
                Ok(Some(chunk)) => {
                    let chunk = self.drop_skipped(chunk);
                    if chunk.is_empty() {
                        continue;
                    }
                    self.hasher.update(&chunk);
                    self.received = self.received.saturating_add(len_u64(&chunk));
                    return Ok(Some(chunk));
                }
                Ok(None) => self.finish()?,
                Err(error)
                    if error.is_transient() && self.resumes < self.client.config().retries =>
                {
                    self.resume(error).await?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    fn drop_skipped(&mut self, mut chunk: Bytes) -> Bytes {
        if self.skip == 0 {
            return chunk;
        }
        let dropped = self.skip.min(len_u64(&chunk));
        self.skip -= dropped;
        chunk.split_off(usize::try_from(dropped).unwrap_or(chunk.len()))
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.finished = true;
        if self.skip > 0 {
            return Err(Error::Protocol {
                method: "GET".to_owned(),
                url: self.url.clone(),
                problem: format!("resumed body ended before offset {}", self.received),
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                url: self.url.clone(),
                expected: self.expected,
                actual,
            });
        }
        Ok(())
    }

    /// Asks again for the bytes from `received` on, after `cause` broke the body.
    async fn resume(&mut self, cause: Error) -> Result<(), Error> {
        self.resumes += 1;
        let delay = backoff(&self.client.inner.config.retry_policy(), self.resumes);
        tracing::debug!(error = %cause, offset = self.received, ?delay, "{}: resuming download", self.url);
        tokio::time::sleep(delay).await;
        let call = self
            .client
            .blob_call(Method::GET, &self.repo, &self.expected)?
            .header(RANGE, &format!("bytes={}-", self.received))
            .streaming();
        let response = self.client.send(&call).await?;
        self.skip = match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let header = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                match parse_content_range(header) {
                    Some(parsed) if parsed.range.start == self.received => 0,
                    _ => return Err(self.resume_error(format!("Content-Range {header:?}"))),
                }
            }
            StatusCode::OK => self.received,
            other => return Err(self.resume_error(format!("status {other}"))),
        };
        self.response = response;
        Ok(())
    }

    fn resume_error(&self, what: String) -> Error {
        Error::Protocol {
            method: "GET".to_owned(),
            url: self.url.clone(),
            problem: format!("{what} resuming at offset {}", self.received),
        }
    }
}
