//! The readahead window of a SOCI layer: the eStargz read path's window
//! ([`crate::lazy::layer::window`]) run in tar offsets (a SOCI layer's index chunks start
//! at tar offsets). A miss fetches, past the read, what runs after a jump typically reach
//! and, while misses follow each other, a window growing to a few round trips of the link;
//! a read entering the second half of the window fetches the next one. Windows never go
//! past the files of the directory being read. The link's byte figures are scaled by the
//! layer's compression ratio, since the window counts uncompressed bytes.

use std::ops::Range;

use estargz::soci::Zinfo;
use estargz::Index;

use crate::lazy::layer::window::{BlobOrder, Bounds, Window};

/// One SOCI layer's window and the tar-order list of its files' chunks.
pub struct Readahead {
    window: Window,
    order: BlobOrder,
    min: u64,
    max: u64,
    /// Uncompressed bytes per compressed byte of the layer (at least 1).
    ratio: f64,
}

impl Readahead {
    /// A window of at least `min` and at most `max` compressed bytes.
    pub fn new(index: &Index, zinfo: &Zinfo, (min, max): (u64, u64)) -> Self {
        let compressed = zinfo
            .compressed_range(zinfo.span_count().saturating_sub(1))
            .map_or(1, |r| r.end.max(1));
        let ratio = (zinfo.uncompressed_size() as f64 / compressed as f64).max(1.0);
        Self {
            window: Window::default(),
            order: BlobOrder::new(index),
            min,
            max,
            ratio,
        }
    }

    fn bounds(&self, round_trip_bytes: Option<u64>) -> Bounds {
        let scale = |b: u64| (b as f64 * self.ratio) as u64;
        Bounds::new(scale(self.min), scale(self.max)).for_link(round_trip_bytes.map(scale))
    }

    /// A read of tar `[at, end)` missed: how far to fetch (at least `end`).
    pub fn on_miss(&self, index: &Index, at: u64, end: u64, round_trip_bytes: Option<u64>) -> u64 {
        let range = self.window.on_miss(at, end, self.bounds(round_trip_bytes));
        self.within_dir(index, range, at).unwrap_or(end).max(end)
    }

    /// A read at tar offset `at` found its bytes: the next window to fetch now, if the
    /// read entered the second half of the current one.
    pub fn on_hit(
        &self,
        index: &Index,
        at: u64,
        round_trip_bytes: Option<u64>,
    ) -> Option<Range<u64>> {
        let range = self.window.on_read(at, self.bounds(round_trip_bytes))?;
        let end = self.within_dir(index, range.clone(), at)?;
        (end > range.start).then_some(range.start..end)
    }

    /// The end of the last chunk lying whole in `range` among the files of the directory
    /// of the file read at `at`.
    fn within_dir(&self, index: &Index, range: Range<u64>, at: u64) -> Option<u64> {
        let dir = self.order.dir_around(at)?;
        self.order
            .within(index, range, dir)
            .map(|c| c.compressed.start.saturating_add(c.size))
            .max()
    }
}
