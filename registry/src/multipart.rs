//! Several byte ranges of a blob in one request (`Range: bytes=a-b,c-d`), and the
//! `multipart/byteranges` answer handed out as pieces tagged with their blob offset as it
//! arrives.
//!
//! Registries differ: some answer with the parts asked for, some with one range, some
//! with 200 and the whole blob (ECR), some with 400 (gcr did). Any answer other than
//! multipart parts marks the registry host as single-range for the client's lifetime:
//! the caller is told to ask range by range, and the body of such an answer is never
//! read (no whole blob for one miss).

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use estargz::Digest;
use reqwest::header::{CONTENT_TYPE, RANGE};
use reqwest::{Method, Response, StatusCode};

use crate::client::Client;
use crate::error::Error;
use crate::ranges::parse_content_range;
use crate::reference::Reference;
use crate::transport::transport_error;

/// Longest part head (boundary line and part headers) accepted.
const MAX_PART_HEAD: usize = 16 << 10;

impl Client {
    /// Whether a multi-range request to `repo`'s registry (or its mirrors) is worth
    /// trying: allowed by config and not known to be refused there.
    pub fn multi_range(&self, repo: &Reference) -> bool {
        self.inner.config.multi_range && !self.inner.single_range_hosts.contains(&repo.registry)
    }

    /// Starts one request for all of `ranges` (sorted, non-empty, not touching) of a blob.
    /// `Ok(None)` when the registry does not answer multi-range requests with parts: it
    /// is remembered, and the caller asks range by range.
    pub async fn open_blob_ranges(
        &self,
        repo: &Reference,
        digest: &Digest,
        ranges: &[Range<u64>],
    ) -> Result<Option<MultiRangeBody>, Error> {
        if !self.multi_range(repo) {
            return Ok(None);
        }
        self.read_via_mirrors(repo, |source| async move {
            self.open_blob_ranges_at(&source, digest, ranges).await
        })
        .await
    }

    async fn open_blob_ranges_at(
        &self,
        repo: &Reference,
        digest: &Digest,
        ranges: &[Range<u64>],
    ) -> Result<Option<MultiRangeBody>, Error> {
        let host = &repo.registry;
        if self.inner.single_range_hosts.contains(host) {
            return Ok(None);
        }
        let call = self
            .blob_call(Method::GET, repo, digest)?
            .header(RANGE, &ranges_header(ranges))
            .streaming();
        let response = match self.send_authorized(&call).await {
            Ok(response) => response,
            Err(Error::BadResponse {
                status: status @ (400 | 416),
                ..
            }) => return Ok(self.single_range(host, &format!("status {status}"))),
            Err(other) => return Err(other),
        };
        let boundary = (response.status() == StatusCode::PARTIAL_CONTENT)
            .then(|| multipart_boundary(&response))
            .flatten();
        let Some(boundary) = boundary else {
            let answer = format!("status {} without parts", response.status());
            // Dropped unread: a whole blob is never downloaded for a few chunks.
            drop(response);
            return Ok(self.single_range(host, &answer));
        };
        Ok(Some(MultiRangeBody {
            response,
            url: call.shown_url(),
            parser: Parser::new(&boundary),
        }))
    }

    fn single_range<T>(&self, host: &str, answer: &str) -> Option<T> {
        if self.inner.single_range_hosts.insert(host) {
            tracing::info!(%host, %answer, "registry does not serve multi-range requests; asking range by range from now on");
        }
        None
    }
}

/// `bytes=a-b,c-d,...` (HTTP ranges are inclusive).
fn ranges_header(ranges: &[Range<u64>]) -> String {
    let specs: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end.saturating_sub(1)))
        .collect();
    format!("bytes={}", specs.join(","))
}

/// The boundary of a `multipart/byteranges` answer.
fn multipart_boundary(response: &Response) -> Option<String> {
    let value = response.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let (kind, params) = value.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// The parts of a multi-range answer, as they arrive.
pub struct MultiRangeBody {
    response: Response,
    url: String,
    parser: Parser,
}

impl MultiRangeBody {
    /// The next piece of a part and the blob offset of its first byte; `None` after the
    /// last part. Which ranges came is the caller's to check (a registry may merge or
    /// leave out ranges).
    pub async fn next_piece(&mut self) -> Result<Option<(u64, Bytes)>, Error> {
        loop {
            match self.parser.next_piece() {
                Ok(Some(piece)) => return Ok(Some(piece)),
                Ok(None) if self.parser.done() => return Ok(None),
                Ok(None) => {}
                Err(problem) => return Err(self.protocol(problem)),
            }
            let next = self.response.chunk().await;
            match next.map_err(|e| transport_error(&Method::GET, &self.url, e))? {
                Some(bytes) => self.parser.push(&bytes),
                None => return Err(self.protocol("multipart body ended early".to_owned())),
            }
        }
    }

    fn protocol(&self, problem: String) -> Error {
        Error::Protocol {
            method: "GET".to_owned(),
            url: self.url.clone(),
            problem,
        }
    }
}

/// Where the parser is in the body.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before a delimiter line and the part headers after it.
    Head,
    /// In a part's data: the blob offset of the next byte and the bytes left.
    Data { at: u64, left: u64 },
    /// After the closing delimiter.
    Done,
}

/// A push parser of `multipart/byteranges` bodies.
struct Parser {
    delimiter: Vec<u8>,
    buffer: BytesMut,
    state: State,
}

impl Parser {
    fn new(boundary: &str) -> Parser {
        Parser {
            delimiter: format!("--{boundary}").into_bytes(),
            buffer: BytesMut::new(),
            state: State::Head,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The next piece of data the buffer holds, if any.
    fn next_piece(&mut self) -> Result<Option<(u64, Bytes)>, String> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Data { at, left } => {
                    if self.buffer.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buffer.len());
                    let piece = self.buffer.split_to(take).freeze();
                    let taken = piece.len() as u64;
                    self.state = match left - taken {
                        0 => State::Head,
                        left => State::Data {
                            at: at + taken,
                            left,
                        },
                    };
                    return Ok(Some((at, piece)));
                }
                State::Head => {
                    if !self.parse_head()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Consumes a delimiter and part head if the buffer holds them whole; false if not yet.
    fn parse_head(&mut self) -> Result<bool, String> {
        let Some(at) = find(&self.buffer, &self.delimiter) else {
            return self.head_fits().map(|()| false);
        };
        let after = at + self.delimiter.len();
        if self.buffer.len() < after + 2 {
            return Ok(false);
        }
        if &self.buffer[after..after + 2] == b"--" {
            self.buffer.clear();
            self.state = State::Done;
            return Ok(true);
        }
        let Some(end) = find(&self.buffer[after..], b"\r\n\r\n") else {
            return self.head_fits().map(|()| false);
        };
        let head = std::str::from_utf8(&self.buffer[after..after + end])
            .map_err(|_| "part head is not utf-8".to_owned())?;
        let range = head
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-range"))
            .and_then(|(_, value)| parse_content_range(value))
            .ok_or_else(|| format!("part without a valid Content-Range: {head:?}"))?
            .range;
        self.buffer.advance(after + end + 4);
        self.state = State::Data {
            at: range.start,
            left: range.end - range.start,
        };
        Ok(true)
    }

    fn head_fits(&self) -> Result<(), String> {
        if self.buffer.len() > MAX_PART_HEAD {
            return Err("multipart head too long".to_owned());
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(boundary: &str, parts: &[(Range<u64>, &[u8])]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for (range, data) in parts {
            out.extend_from_slice(
                format!(
                    "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                     Content-Range: bytes {}-{}/1000\r\n\r\n",
                    range.start,
                    range.end - 1
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }

    fn parse_in_pieces(bytes: &[u8], piece: usize) -> Vec<(u64, Vec<u8>)> {
        let mut parser = Parser::new("XyZ");
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for slice in bytes.chunks(piece) {
            parser.push(slice);
            while let Some((at, data)) = parser.next_piece().expect("parse") {
                match out.last_mut() {
                    Some((start, all)) if *start + all.len() as u64 == at => {
                        all.extend_from_slice(&data)
                    }
                    _ => out.push((at, data.to_vec())),
                }
            }
        }
        assert!(parser.done(), "closing delimiter seen");
        out
    }

    #[test]
    fn parts_come_out_with_their_offsets_however_the_body_is_cut() {
        // Data that looks like a delimiter must not confuse the parser.
        let first: &[u8] = b"\r\n--XyZ\r\nabc";
        let second: &[u8] = b"0123456789";
        let bytes = body("XyZ", &[(10..22, first), (500..510, second)]);
        for piece in [1, 2, 7, 64, bytes.len()] {
            let got = parse_in_pieces(&bytes, piece);
            assert_eq!(
                got,
                vec![(10, first.to_vec()), (500, second.to_vec())],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_part_without_content_range_is_an_error() {
        let mut parser = Parser::new("b");
        parser.push(b"--b\r\nContent-Type: x\r\n\r\ndata");
        assert!(parser.next_piece().is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(ranges_header(&[0..10, 20..21]), "bytes=0-9,20-20");
    }
}
