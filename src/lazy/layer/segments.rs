//! Cutting the bytes of one range request into segments as they arrive: a segment is
//! handed out as soon as every chunk in it is complete, so chunks at the front of a big
//! range are verified (and answered) while the rest of the range is still on the wire.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Arrived bytes of a run of chunks, starting at blob offset `base`.
#[derive(Debug)]
pub(super) struct Segment {
    pub base: u64,
    pub bytes: Bytes,
    /// Indices (into the ranges given to [`Segmenter::new`]) of the chunks it holds whole.
    pub chunks: Range<usize>,
}

/// Buffers a range's bytes and cuts them into [`Segment`]s at chunk boundaries.
pub(super) struct Segmenter {
    /// Blob offset of `buffer[0]`.
    base: u64,
    buffer: BytesMut,
    /// Compressed ranges of the chunks, sorted by start, all at or after the first base.
    chunks: Vec<Range<u64>>,
    /// The first chunk not yet handed out.
    next: usize,
}

impl Segmenter {
    /// For bytes arriving from blob offset `start` on, carrying `chunks` (sorted by start).
    pub fn new(start: u64, chunks: Vec<Range<u64>>) -> Segmenter {
        debug_assert!(chunks.windows(2).all(|w| w[0].start <= w[1].start));
        debug_assert!(chunks.iter().all(|c| c.start >= start));
        Segmenter {
            base: start,
            buffer: BytesMut::new(),
            chunks,
            next: 0,
        }
    }

    /// The blob offset the next arriving byte belongs at.
    pub fn end(&self) -> u64 {
        self.base + self.buffer.len() as u64
    }

    /// Adds the next arrived bytes; returns the segments they completed, in order.
    pub fn push(&mut self, piece: &[u8]) -> Vec<Segment> {
        self.buffer.extend_from_slice(piece);
        std::iter::from_fn(|| self.cut()).collect()
    }

    /// Cuts off the front of the buffer when it holds the next chunks whole. A cut never
    /// splits chunks whose ranges overlap (chunks inside one compressed member).
    fn cut(&mut self) -> Option<Segment> {
        let end = self.end();
        let mut reach = self.base;
        for k in self.next..self.chunks.len() {
            let chunk = &self.chunks[k];
            if chunk.end > end {
                return None;
            }
            reach = reach.max(chunk.end);
            let next_start = self.chunks.get(k + 1).map(|next| next.start);
            if next_start.is_none_or(|start| start >= reach) {
                let len = usize::try_from(reach - self.base).ok()?;
                let segment = Segment {
                    base: self.base,
                    bytes: self.buffer.split_to(len).freeze(),
                    chunks: self.next..k + 1,
                };
                self.base = reach;
                self.next = k + 1;
                return Some(segment);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(segments: &[Segment]) -> Vec<(u64, usize, Range<usize>)> {
        segments
            .iter()
            .map(|s| (s.base, s.bytes.len(), s.chunks.clone()))
            .collect()
    }

    #[test]
    fn hands_out_each_chunk_once_it_is_complete() {
        let mut segmenter = Segmenter::new(100, vec![100..110, 110..130, 130..135]);
        assert!(
            segmenter.push(&[0; 9]).is_empty(),
            "first chunk not complete"
        );
        assert_eq!(cuts(&segmenter.push(&[0; 1])), [(100, 10, 0..1)]);
        // One piece completing two chunks and starting nothing new.
        assert_eq!(
            cuts(&segmenter.push(&[0; 25])),
            [(110, 20, 1..2), (130, 5, 2..3)]
        );
        assert_eq!(segmenter.end(), 135);
        assert!(segmenter.push(&[]).is_empty());
    }

    #[test]
    fn overlapping_chunks_stay_in_one_segment() {
        // Two chunks in one compressed member, then one of its own.
        let mut segmenter = Segmenter::new(0, vec![0..10, 0..10, 10..20]);
        let segments = segmenter.push(&[7; 12]);
        assert_eq!(cuts(&segments), [(0, 10, 0..2)]);
        assert_eq!(&segments[0].bytes[..], &[7; 10]);
        let segments = segmenter.push(&[8; 8]);
        assert_eq!(cuts(&segments), [(10, 10, 2..3)]);
        assert_eq!(&segments[0].bytes[..2], &[7; 2], "bytes carried over");
    }

    #[test]
    fn a_chunk_reaching_past_the_next_start_keeps_them_together() {
        let mut segmenter = Segmenter::new(0, vec![0..15, 10..20, 20..30]);
        assert!(segmenter.push(&[0; 15]).is_empty(), "0..15 overlaps 10..20");
        assert_eq!(cuts(&segmenter.push(&[0; 5])), [(0, 20, 0..2)]);
        assert_eq!(cuts(&segmenter.push(&[0; 10])), [(20, 10, 2..3)]);
    }
}
