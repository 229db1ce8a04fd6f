//! The readahead window of a SOCI layer: the eStargz read path's window
//! ([`crate::lazy::layer::window`]) run in tar offsets (a SOCI layer's index chunks start
//! at tar offsets). A miss fetches, past the read, what runs after a jump typically reach
//! and, while misses follow each other, a window growing to a few round trips of the link;
//! a read entering the second half of the window fetches the next one. Windows never go
//! past the files of the directory being read; within the file being read they may end
//! anywhere. The link's byte figures are scaled by the
//! layer's compression ratio, since the window counts uncompressed bytes.

use std::ops::Range;

use estargz::soci::Zinfo;
use estargz::Index;

use crate::lazy::layer::window::{BlobOrder, Bounds, Window};

/// How much of a file a read at its first byte fetches at least: the chunk an eStargz
/// layer converted with the default chunk size would fetch for the same miss (its files
/// are cut into chunks of this many uncompressed bytes).
const WHOLE_FILE_BYTES: u64 = estargz::writer::DEFAULT_CHUNK_SIZE;

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
        let bounds = self.bounds(round_trip_bytes);
        let range = self.window.on_miss(at, end, bounds);
        let window = self.within_dir(index, range, at).unwrap_or(end).max(end);
        let whole_file_max = bounds.max.max(WHOLE_FILE_BYTES);
        window.max(self.whole_file(index, at, whole_file_max))
    }

    /// A read at a file's first byte is mostly the start of reading the file whole
    /// (`cat`, exec, an import): as an eStargz miss fetches the file's chunk, the miss
    /// fetches the file, up to `max` past `at` ([`WHOLE_FILE_BYTES`], or the largest
    /// window the link allows when that is more). Blocks are checked and served as they
    /// arrive, so the reader waits for its own bytes only, not the file's end.
    fn whole_file(&self, index: &Index, at: u64, max: u64) -> u64 {
        (self.order.chunk_around(index, at))
            .filter(|c| c.compressed.start == at)
            .map_or(at, |c| {
                c.compressed
                    .start
                    .saturating_add(c.size)
                    .min(at.saturating_add(max))
            })
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

    /// How far into `range` the window may go: to the end of the last file lying whole
    /// in it among the files of the directory of the file read at `at`, and at least as
    /// far as the window reaches into that file itself. Unlike an eStargz chunk, a file
    /// here need not be fetched whole: a window may end inside it, so reading a large
    /// file runs ahead of the reader as a sequence of windows.
    fn within_dir(&self, index: &Index, range: Range<u64>, at: u64) -> Option<u64> {
        let dir = self.order.dir_around(at)?;
        let whole = (self.order.within(index, range.clone(), dir))
            .map(|c| c.compressed.start.saturating_add(c.size))
            .max();
        let in_file = (self.order.chunk_around(index, at))
            .map(|c| c.compressed.start.saturating_add(c.size).min(range.end))
            .filter(|&end| end > range.start);
        whole.max(in_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz::soci::{build_ztoc, index_of, BuildOptions, Compression};
    use estargz::testutil::TarBuilder;

    /// A readahead over a tar of `d/big` (8 MiB), then `d/small`; and `d/big`'s offset.
    fn layer() -> (Index, Readahead, u64) {
        let mut t = TarBuilder::new();
        t.file("d/big", &vec![7u8; 8 << 20]);
        t.file("d/small", b"small");
        let tar = t.finish();
        let ztoc = build_ztoc(
            &tar[..],
            Compression::Uncompressed,
            &BuildOptions::default(),
        )
        .expect("ztoc");
        let (index, zinfo) = (
            index_of(&ztoc).expect("index"),
            Zinfo::new(&ztoc).expect("zinfo"),
        );
        let readahead = Readahead::new(&index, &zinfo, (256 << 10, 1 << 20));
        let big = ztoc.files.iter().find(|f| f.name == "d/big").expect("big");
        (index, readahead, big.uncompressed_offset)
    }

    #[test]
    fn sequential_misses_in_a_large_file_read_ahead_inside_it() {
        let (index, readahead, start) = layer();
        let step = 128 << 10;
        // A read from the file's first byte fetches the file up to an eStargz chunk's
        // worth, more than the largest window (1 MiB here).
        let first = readahead.on_miss(&index, start, start + step, None);
        assert_eq!(first, start + WHOLE_FILE_BYTES);
        // A jump into the middle of the file: nothing learned yet, no window.
        let (index, readahead, start) = layer();
        let start = start + step;
        let first = readahead.on_miss(&index, start, start + step, None);
        assert_eq!(first, start + step);
        // The next one follows it: the window goes on inside the file (it used to stop at
        // the read, since the file does not lie whole in the window).
        let second = readahead.on_miss(&index, start + step, start + 2 * step, None);
        assert!(
            second > start + 2 * step,
            "no window past the read: {second}"
        );
        assert!(second <= start + (8 << 20), "the window stays in the file");
        // A read in the second half of that window asks for the next one, in the file.
        let next = readahead
            .on_hit(&index, second - 1, None)
            .expect("next window");
        assert!(
            next.start == second && next.end > second,
            "{next:?} after {second}"
        );
        assert!(next.end <= start + (8 << 20), "{next:?}");
    }
}
