//! Ranges of a SOCI layer's blob that lie apart (the learned prefetch's reads, scattered
//! over the layer) in one request, multi-range for runs apart, each range handed out as
//! soon as its last byte is in. On a link where a request costs more than its bytes (loopback: the
//! registry's time per request), tens of ranges in one request instead of one each.
//! A registry that does not answer with parts, a body that breaks, or a part left out:
//! what was not handed out is asked for range by range.

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;
use registry::{MultiRangeBody, RangeBody};

use super::span_fetch::{SpanFetchError, SpanSource};
use crate::lazy::cache::ChunkBytes;
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// Metrics kind label of these fetches (as span fetches).
const SOCI_KIND: &str = "soci";

/// Single-range requests in flight at once when the registry takes no multi-range ones.
const SINGLES_PARALLEL: usize = 8;

/// The disjoint, sorted byte runs covering `ranges` (overlapping or touching ones merged:
/// a multi-range request asks for runs apart from each other).
pub fn covering_runs(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut runs: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match runs.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => runs.push(range),
        }
    }
    runs
}

/// A run being received: its bytes so far, from its start.
struct Run {
    range: Range<u64>,
    bytes: Vec<u8>,
}

impl Run {
    fn have(&self) -> u64 {
        self.range.start + self.bytes.len() as u64
    }

    /// Appends the part of `piece` (whose first byte is at `at`) that continues the run;
    /// pieces before it are ignored, a gap ends the run here.
    fn feed(&mut self, at: u64, piece: &[u8]) {
        let have = self.have();
        let end = at.saturating_add(piece.len() as u64).min(self.range.end);
        if at > have || end <= have {
            return;
        }
        let from = (have - at) as usize;
        let to = (end - at) as usize;
        self.bytes.extend_from_slice(&piece[from..to]);
    }
}

impl SpanSource {
    /// Fetches `ranges` (any order; apart, overlapping or adjacent) of class `kind`,
    /// handing each to `piece(i, bytes)` once its last byte is in: in one request (a
    /// multi-range one for runs apart, where the registry serves those), else one request
    /// per range. Every range is handed out once, or an error is returned.
    pub async fn fetch_apart(
        &self,
        ranges: &[Range<u64>],
        kind: FetchKind,
        mut piece: impl FnMut(usize, ChunkBytes),
    ) -> Result<(), SpanFetchError> {
        let mut handed = vec![false; ranges.len()];
        let runs = covering_runs(ranges);
        let one_request = match runs.len() {
            0 => false,
            1 => true,
            _ => self.client.multi_range(&self.location.reference),
        };
        if one_request {
            if let Err(error) = self
                .receive_apart(ranges, runs, kind, &mut handed, &mut piece)
                .await
            {
                let blob = self.location.digest;
                tracing::debug!(%blob, %error, "soci request for ranges apart failed; asking range by range");
            }
        }
        let rest: Vec<usize> = (0..ranges.len()).filter(|&i| !handed[i]).collect();
        let mut singles = futures::stream::iter(rest)
            .map(|i| async move {
                let bytes = self.fetch_one_streamed(ranges[i].clone(), kind).await;
                (i, bytes)
            })
            .buffer_unordered(SINGLES_PARALLEL);
        while let Some((i, bytes)) = singles.next().await {
            piece(i, bytes?);
        }
        Ok(())
    }

    /// One range through [`SpanSource::fetch_pieces_streamed`] (which measures the link).
    async fn fetch_one_streamed(
        &self,
        range: Range<u64>,
        kind: FetchKind,
    ) -> Result<ChunkBytes, SpanFetchError> {
        let mut got = None;
        self.fetch_pieces_streamed(std::slice::from_ref(&range), kind, |_, bytes| {
            got = Some(bytes)
        })
        .await?;
        got.ok_or(SpanFetchError::Short {
            blob: self.location.digest,
            range,
            got: 0,
        })
    }

    /// The request for all of `ranges`, whose [`covering_runs`] are `runs` (a plain range
    /// request for one run): marks in `handed` what it handed out. `Ok` also when the
    /// registry answered a multi-range request without parts (nothing handed, now known
    /// single-range).
    async fn receive_apart(
        &self,
        ranges: &[Range<u64>],
        runs: Vec<Range<u64>>,
        kind: FetchKind,
        handed: &mut [bool],
        piece: &mut impl FnMut(usize, ChunkBytes),
    ) -> Result<(), SpanFetchError> {
        let mut runs: Vec<Run> = runs
            .into_iter()
            .map(|range| Run {
                bytes: Vec::with_capacity((range.end - range.start) as usize),
                range,
            })
            .collect();
        let wanted: Vec<Range<u64>> = runs.iter().map(|r| r.range.clone()).collect();
        let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
            return Ok(());
        };
        let blob = self.location.digest;
        let remote = |source| SpanFetchError::Remote {
            blob,
            range: first.start..last.end,
            source: Box::new(source),
        };
        let total = wanted.iter().map(|r| r.end - r.start).sum();
        let asked = std::time::Instant::now();
        let ticket = self.cache.link().admit_sized(kind, total).await;
        let queued = asked.elapsed();
        let Some(mut body) = observe::range_request(SOCI_KIND, self.open(&wanted))
            .await
            .map_err(remote)?
        else {
            return Ok(());
        };
        let mut first_byte = None;
        let mut received = 0u64;
        let streamed = async {
            while let Some((at, bytes)) = body.next_piece().await.map_err(remote)? {
                first_byte.get_or_insert_with(|| asked.elapsed() - queued);
                received += bytes.len() as u64;
                // Runs are sorted and apart: the one holding `at` is the last starting there or before.
                let Some(r) = runs
                    .partition_point(|run| run.range.start <= at)
                    .checked_sub(1)
                else {
                    continue;
                };
                runs[r].feed(at, &bytes);
                hand_out(ranges, &runs[r], handed, piece);
            }
            Ok::<(), SpanFetchError>(())
        }
        .await;
        drop(ticket);
        tracing::debug!(
            %blob, ranges = ranges.len(), runs = wanted.len(), bytes = received, ?kind,
            queued_ms = queued.as_millis() as u64, total_ms = asked.elapsed().as_millis() as u64,
            "soci request for ranges apart"
        );
        observe::observer().fetched(SOCI_KIND, received);
        if let (Ok(()), Some(first_byte)) = (&streamed, first_byte) {
            let link = self.cache.link();
            link.record(received, first_byte, asked.elapsed() - queued);
        }
        streamed
    }

    /// Opens the request for `runs` (sorted, apart, at least one): a plain range request
    /// for one run (a multi-range request of one range is answered without parts).
    async fn open(&self, runs: &[Range<u64>]) -> Result<Option<Body>, registry::Error> {
        let (reference, blob) = (&self.location.reference, &self.location.digest);
        match runs {
            [one] => {
                let body = self
                    .client
                    .open_blob_range(reference, blob, one.clone())
                    .await?;
                Ok(Some(Body::One {
                    body,
                    at: one.start,
                }))
            }
            _ => Ok(self
                .client
                .open_blob_ranges(reference, blob, runs)
                .await?
                .map(Body::Parts)),
        }
    }
}

/// The answer being read: one range's body, or a multi-range answer's parts.
enum Body {
    One { body: RangeBody, at: u64 },
    Parts(MultiRangeBody),
}

impl Body {
    /// The next piece and the blob offset of its first byte; `None` at the end.
    async fn next_piece(&mut self) -> Result<Option<(u64, Bytes)>, registry::Error> {
        match self {
            Body::Parts(parts) => parts.next_piece().await,
            Body::One { body, at } => {
                let piece = body.next_piece().await?;
                Ok(piece.map(|bytes| {
                    let start = *at;
                    *at += bytes.len() as u64;
                    (start, bytes)
                }))
            }
        }
    }
}

/// Hands out every range not yet handed whose bytes `run` now holds.
fn hand_out(
    ranges: &[Range<u64>],
    run: &Run,
    handed: &mut [bool],
    piece: &mut impl FnMut(usize, ChunkBytes),
) {
    let have = run.have();
    for (i, range) in ranges.iter().enumerate() {
        let inside = run.range.start <= range.start && range.end <= have;
        if handed[i] || !inside {
            continue;
        }
        let (a, b) = (
            (range.start - run.range.start) as usize,
            (range.end - run.range.start) as usize,
        );
        handed[i] = true;
        piece(i, ChunkBytes::from(&run.bytes[a..b]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_runs_merge_what_overlaps_or_touches_and_sort() {
        let runs = covering_runs(&[50..60, 0..10, 10..20, 15..18, 30..40, 5..5]);
        assert_eq!(runs, vec![0..20, 30..40, 50..60]);
    }

    #[test]
    fn a_run_takes_only_the_bytes_that_continue_it() {
        let mut run = Run {
            range: 10..20,
            bytes: Vec::new(),
        };
        run.feed(12, &[9; 4]); // a gap: ignored
        assert_eq!(run.have(), 10);
        run.feed(8, &[1, 2, 3, 4, 5]); // starts before the run
        assert_eq!(run.bytes, vec![3, 4, 5]);
        run.feed(12, &[5, 6, 7]); // overlaps what is there
        assert_eq!(run.bytes, vec![3, 4, 5, 6, 7]);
        run.feed(15, &[8; 10]); // runs past the end
        assert_eq!(run.have(), 20);
        assert_eq!(run.bytes.len(), 10);
    }
}
