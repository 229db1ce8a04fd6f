//! The readahead window of one layer, in blob order (the next files, not only the rest of
//! the file being read), adapting like the kernel's readahead: it grows while misses keep
//! landing in or right after what was fetched, falls back to just the missed chunks when
//! reads jump around, opens at what one round trip of the link carries and is capped by
//! what a few carry (and by config). A read entering the second half of the current window
//! fetches the next one while the reader is still busy with this one. A window ends where
//! the directory of the file being read ends.
//!
//! A jump (a miss far from the last fetch) fetches only its chunks at first. But the
//! window learns how far the reads after a jump went on in blob order (the run): where
//! runs typically reach (an interpreter importing a package reads its whole directory),
//! a jump fetches about that much after its chunks at once, saving the run's second round
//! trip; where reads keep jumping (random access), runs reach nowhere and nothing extra
//! is fetched.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use estargz::{ChunkInfo, EntryId, Index};

/// Round trips' worth of bytes a window may grow to: the cost of a window is then at
/// most a few round trips of transfer, while each miss it saves costs a whole one.
const ROUND_TRIPS: u64 = 4;

/// Bounds of the window, from config and the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// First size a growing window takes, and how far past the last window a miss may
    /// land and still count as sequential.
    pub min: u64,
    /// Largest window.
    pub max: u64,
    /// First size of a window once misses follow each other: `min`, or what one round
    /// trip of the link carries when that is more.
    pub first: u64,
}

impl Bounds {
    /// Bounds from config alone (the link not measured): windows open at `min`.
    pub(crate) fn new(min: u64, max: u64) -> Bounds {
        Bounds {
            min,
            max: max.max(min),
            first: min,
        }
    }

    /// The bounds with the link's estimate applied: windows open at one round trip's
    /// worth of bytes (a request's time is then still mostly its round trip, so a smaller
    /// window saves nothing and leaves the next miss a whole round trip to wait) and grow
    /// to at most [`ROUND_TRIPS`] round trips' worth; never below `min` nor above `max`.
    pub(crate) fn for_link(self, round_trip_bytes: Option<u64>) -> Bounds {
        let Some(bytes) = round_trip_bytes else {
            return self;
        };
        Bounds {
            first: bytes.clamp(self.min, self.max),
            max: bytes.saturating_mul(ROUND_TRIPS).clamp(self.min, self.max),
            ..self
        }
    }
}

/// Where the window stands.
#[derive(Debug, Default)]
struct State {
    /// Blob range of the last fetch the window decided (missed chunks and the window).
    last: Range<u64>,
    /// Size of the window after the missed chunks in that fetch; 0: none.
    size: u64,
    /// The reads since the last jump.
    run: Option<Run>,
    /// How far runs reach past their jump's chunks: each ended run mixed in by halves.
    typical_run: Option<u64>,
}

/// The reads since a jump: where its missed chunks ended and how far reads in or right
/// after what was fetched since have reached, in blob order.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    jump_end: u64,
    reach: u64,
}

impl State {
    /// A jump from `at` to `end`: the run before it ends and is learned from; the window
    /// after the jump's chunks is what runs typically reach, with room to spare, when
    /// that is worth a request (at least `min`; at most a round trip's worth).
    fn jump(&mut self, at: u64, end: u64, bounds: Bounds) -> u64 {
        if let Some(run) = self.run {
            let reached = run.reach.saturating_sub(run.jump_end);
            self.typical_run = Some(match self.typical_run {
                None => reached,
                Some(typical) => typical / 2 + reached / 2,
            });
        }
        self.run = Some(Run {
            start: at,
            jump_end: end,
            reach: end,
        });
        let typical = self.typical_run.unwrap_or(0);
        let size = typical.saturating_add(typical / 2);
        if size < bounds.min {
            0
        } else {
            size.min(bounds.first)
        }
    }

    /// A read at blob offset `at` in or right after what was fetched extends the run.
    fn extend_run(&mut self, at: u64, bounds: Bounds) {
        let limit = self.last.end.saturating_add(bounds.min);
        if let Some(run) = self
            .run
            .as_mut()
            .filter(|run| run.start <= at && at <= limit)
        {
            run.reach = run.reach.max(at);
        }
    }
}

/// One layer's readahead window.
#[derive(Debug, Default)]
pub(crate) struct Window {
    state: Mutex<State>,
}

impl Window {
    /// A read missed chunks from blob offset `at` to `end`: the blob range to fetch after
    /// them (empty when reads jump around).
    pub(crate) fn on_miss(&self, at: u64, end: u64, bounds: Bounds) -> Range<u64> {
        let mut state = self.lock();
        let last = &state.last;
        let sequential =
            !last.is_empty() && last.start <= at && at <= last.end.saturating_add(bounds.min);
        state.size = if sequential {
            if let Some(run) = state.run.as_mut() {
                run.reach = run.reach.max(end);
            }
            state
                .size
                .saturating_mul(2)
                .max(bounds.first)
                .min(bounds.max)
        } else {
            state.jump(at, end, bounds)
        };
        let ahead = end..end.saturating_add(state.size);
        state.last = at.min(end)..ahead.end;
        ahead
    }

    /// A read of chunks starting at blob offset `at` (cached or not): when it entered the
    /// second half of the current window, the next window, which is fetched at once so
    /// that a sequential reader never waits for a miss.
    pub(crate) fn on_read(&self, at: u64, bounds: Bounds) -> Option<Range<u64>> {
        let mut state = self.lock();
        state.extend_run(at, bounds);
        let mark = state.last.end.saturating_sub(state.size / 2);
        if state.size == 0 || at < mark || at >= state.last.end {
            return None;
        }
        state.size = state.size.saturating_mul(2).min(bounds.max).max(1);
        let next = state.last.end..state.last.end.saturating_add(state.size);
        state.last = at..next.end;
        Some(next)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One chunk in blob order: where its compressed bytes start, its file, its index in the
/// file's chunks and the file's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Placed {
    start: u64,
    file: EntryId,
    chunk: u32,
    dir: EntryId,
}

/// Every chunk of a layer in blob order, to find the chunks a blob range holds.
pub(crate) struct BlobOrder {
    chunks: Vec<Placed>,
}

impl BlobOrder {
    pub(crate) fn new(index: &Index) -> BlobOrder {
        let mut chunks: Vec<Placed> = index
            .iter()
            .flat_map(|(file, entry)| {
                (0u32..)
                    .zip(entry.chunks())
                    .map(move |(chunk, info)| Placed {
                        start: info.compressed.start,
                        file,
                        chunk,
                        dir: entry.parent,
                    })
            })
            .collect();
        chunks.sort_unstable();
        // A hardlink lists its target's chunks again: one is enough.
        chunks.dedup_by_key(|placed| placed.start);
        BlobOrder { chunks }
    }

    /// The directory of the file whose chunk starts at blob offset `start`.
    pub(crate) fn dir_at(&self, start: u64) -> Option<EntryId> {
        let at = self.chunks.partition_point(|p| p.start < start);
        self.chunks
            .get(at)
            .filter(|p| p.start == start)
            .map(|p| p.dir)
    }

    /// The directory of the file whose chunk holds blob offset `offset` (a read that may
    /// start inside a chunk; SOCI layers, whose chunk offsets are tar offsets).
    pub(crate) fn dir_around(&self, offset: u64) -> Option<EntryId> {
        let at = self.chunks.partition_point(|p| p.start <= offset);
        at.checked_sub(1)
            .and_then(|i| self.chunks.get(i))
            .map(|p| p.dir)
    }

    /// The chunk holding blob offset `offset` (SOCI layers, whose chunk offsets are tar
    /// offsets and whose chunks are whole files or 64 MiB pieces of them).
    pub(crate) fn chunk_around<'a>(&self, index: &'a Index, offset: u64) -> Option<&'a ChunkInfo> {
        let at = self.chunks.partition_point(|p| p.start <= offset);
        let placed = self.chunks.get(at.checked_sub(1)?)?;
        let chunk = index
            .chunks(placed.file)
            .get(usize::try_from(placed.chunk).ok()?)?;
        (offset < chunk.compressed.start.saturating_add(chunk.size)).then_some(chunk)
    }

    /// The chunks lying whole inside `range`, in blob order, up to the first chunk of a
    /// file outside directory `dir`: files of one directory are read together (a
    /// package's modules); the next directory's are a guess that costs a whole window
    /// when wrong.
    pub(crate) fn within<'a>(
        &'a self,
        index: &'a Index,
        range: Range<u64>,
        dir: EntryId,
    ) -> impl Iterator<Item = &'a ChunkInfo> + 'a {
        let first = self.chunks.partition_point(|p| p.start < range.start);
        self.chunks[first..]
            .iter()
            .take_while(move |p| p.start < range.end && p.dir == dir)
            .filter_map(|p| index.chunks(p.file).get(usize::try_from(p.chunk).ok()?))
            .filter(move |chunk| chunk.compressed.end <= range.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        min: 100,
        max: 1000,
        first: 100,
    };

    #[test]
    fn grows_while_misses_follow_and_shrinks_when_they_jump() {
        let window = Window::default();
        assert!(window.on_miss(5000, 5010, BOUNDS).is_empty(), "first miss");
        // Right after what was fetched: sequential, the window opens and doubles.
        assert_eq!(window.on_miss(5010, 5020, BOUNDS), 5020..5120);
        assert_eq!(window.on_miss(5120, 5130, BOUNDS), 5130..5330);
        assert_eq!(window.on_miss(5330, 5340, BOUNDS), 5340..5740);
        assert_eq!(window.on_miss(5740, 5750, BOUNDS), 5750..6550);
        assert_eq!(window.on_miss(6550, 6560, BOUNDS), 6560..7560, "capped");
        // A jump: the window shrinks back to its first size (the run before reached far,
        // so a jump fetches some window; see the next test).
        assert_eq!(window.on_miss(100, 110, BOUNDS), 110..210, "jump back");
        // A small skip (a file not read) still counts as sequential.
        assert_eq!(window.on_miss(260, 270, BOUNDS), 270..470);
    }

    #[test]
    fn a_jump_fetches_what_runs_after_jumps_reached() {
        let bounds = Bounds {
            min: 100,
            max: 10_000,
            first: 1000,
        };
        let window = Window::default();
        assert!(
            window.on_miss(5000, 5010, bounds).is_empty(),
            "nothing learned"
        );
        assert_eq!(window.on_miss(5010, 5020, bounds), 5020..6020);
        // The reader goes on to 5300, then jumps: runs reach 290 bytes past their jump.
        assert_eq!(window.on_read(5300, bounds), None);
        assert_eq!(window.on_miss(50_000, 50_010, bounds), 50_010..50_445);
        // Jumps the reader does not follow halve what is expected, down to nothing.
        assert_eq!(window.on_miss(80_000, 80_010, bounds), 80_010..80_227);
        assert_eq!(window.on_miss(20_000, 20_010, bounds), 20_010..20_118);
        assert!(window.on_miss(90_000, 90_010, bounds).is_empty());

        // Random reads: no run ever reaches past its jump, so no window opens.
        let random = Window::default();
        for at in [0, 700_000, 9_000, 300_000, 40_000, 1_000_000] {
            assert!(random.on_miss(at, at + 10, bounds).is_empty(), "{at}");
            assert_eq!(random.on_read(at, bounds), None);
        }
    }

    #[test]
    fn entering_the_second_half_fetches_the_next_window() {
        let window = Window::default();
        window.on_miss(0, 10, BOUNDS);
        assert_eq!(window.on_miss(10, 20, BOUNDS), 20..120);
        assert_eq!(window.on_read(30, BOUNDS), None, "first half");
        assert_eq!(window.on_read(80, BOUNDS), Some(120..320));
        assert_eq!(window.on_read(90, BOUNDS), None, "already fetched");
        assert_eq!(window.on_read(230, BOUNDS), Some(320..720));
        // Random reads never trigger it.
        let random = Window::default();
        random.on_miss(0, 10, BOUNDS);
        assert_eq!(random.on_read(5, BOUNDS), None);
    }

    #[test]
    fn the_link_caps_the_window() {
        let bounds = Bounds::new(100, 10_000);
        assert_eq!(bounds.for_link(None), bounds, "unmeasured");
        assert_eq!(bounds.for_link(Some(500)).max, 2000, "four round trips");
        assert_eq!(bounds.for_link(Some(10)).max, 100, "at least min");
        assert_eq!(bounds.for_link(Some(1 << 40)).max, 10_000, "at most max");
        assert_eq!(Bounds::new(100, 50).max, 100, "max below min");
    }

    #[test]
    fn the_first_window_carries_a_round_trip_of_the_link() {
        let config = Bounds::new(100, 10_000);
        assert_eq!(config.for_link(None).first, 100, "unmeasured: min");
        assert_eq!(config.for_link(Some(50)).first, 100, "never below min");
        assert_eq!(config.for_link(Some(1 << 40)).first, 10_000, "at most max");
        // A link carrying 700 bytes per round trip: the window opens at 700 and doubles.
        let bounds = config.for_link(Some(700));
        assert_eq!(bounds.first, 700);
        let window = Window::default();
        assert!(window.on_miss(5000, 5010, bounds).is_empty(), "first miss");
        assert_eq!(window.on_miss(5010, 5020, bounds), 5020..5720);
        assert_eq!(window.on_miss(5720, 5730, bounds), 5730..7130);
        assert_eq!(
            window.on_miss(7130, 7140, bounds),
            7140..9940,
            "four round trips"
        );
        // Reads jumping around still fetch only their chunks on a fast link.
        let random = Window::default();
        assert!(random.on_miss(100, 110, bounds).is_empty());
        assert!(random.on_miss(90_000, 90_010, bounds).is_empty());
    }
}
