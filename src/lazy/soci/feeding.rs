//! Decoders fed as their blocks arrive ([`super::block_fetch::gather_unchecked`]): each
//! on a blocking thread of its own, which checks every block against its digest before it
//! decodes it. Checking and inflating the front of a long run so overlap the transfer of
//! the rest, where they used to wait for its last byte. A decoder may be handed over after
//! its first blocks (one starting at a resume point waits for its window): they queue.

use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::Arc;

use estargz::soci::{PrefixDecoder, SpanError};
use estargz::Digest;
use tokio::task::JoinHandle;

use super::block_fetch::UncheckedBlock;
use super::prefix_error::PrefixError;
use crate::lazy::cache::ChunkCache;

/// One decoder of a span and what it produced, from uncompressed offset `start` on.
pub(super) struct Segment {
    pub start: u64,
    pub decoder: PrefixDecoder,
    pub out: Vec<u8>,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.out.len() as u64)
    }
}

/// A span's decoders.
#[derive(Default)]
pub(super) struct SpanState {
    pub segments: Vec<Segment>,
}

impl SpanState {
    /// The segment holding `[from, to)`.
    pub fn covering(&self, from: u64, to: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| s.start <= from && s.end() >= to)
    }

    pub fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.out.len()).sum()
    }
}

/// What a feeder ends with: its decoder and all it produced (`None` when it was never
/// handed one), or why it stopped.
type Fed = Result<Option<Segment>, SpanError>;

/// One decoder being fed, for span `span`.
struct Feeder {
    span: usize,
    start: SyncSender<Segment>,
    blocks: Sender<UncheckedBlock>,
    task: JoinHandle<Fed>,
}

/// Decoders being fed, one per plan of a span fetch.
pub(super) struct Feeders {
    feeders: Vec<Feeder>,
}

impl Feeders {
    /// A feeder for each of `spans` (a span may come more than once: one decoder each);
    /// fetched blocks are cached in `cache` once checked, mismatches logged for `layer`.
    pub fn new(spans: impl Iterator<Item = usize>, cache: &Arc<ChunkCache>, layer: Digest) -> Self {
        let feeders = spans
            .map(|span| {
                let (start, started) = sync_channel::<Segment>(1);
                let (blocks, arriving) = channel::<UncheckedBlock>();
                let cache = cache.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let Ok(mut segment) = started.recv() else {
                        return Ok(None);
                    };
                    for block in arriving {
                        let bytes = block.check(&cache, &layer)?;
                        segment.decoder.feed(&bytes, &mut segment.out)?;
                    }
                    Ok(Some(segment))
                });
                Feeder {
                    span,
                    start,
                    blocks,
                    task,
                }
            })
            .collect();
        Self { feeders }
    }

    /// Hands feeder `i` its decoder.
    pub fn start(&self, i: usize, segment: Segment) {
        if let Some(feeder) = self.feeders.get(i) {
            // A feeder that stopped early has dropped its end; its error comes from finish.
            let _ = feeder.start.try_send(segment);
        }
    }

    /// Hands feeder `i` its next block.
    pub fn block(&self, i: usize, block: UncheckedBlock) {
        if let Some(feeder) = self.feeders.get(i) {
            let _ = feeder.blocks.send(block);
        }
    }

    /// Ends the feeding once the feeders decoded all they were handed: each span with
    /// what its feeder ended with.
    pub async fn finish(self) -> Result<Vec<(usize, Fed)>, PrefixError> {
        let mut out = Vec::with_capacity(self.feeders.len());
        for feeder in self.feeders {
            drop((feeder.start, feeder.blocks));
            out.push((feeder.span, feeder.task.await?));
        }
        Ok(out)
    }
}
