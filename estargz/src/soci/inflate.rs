//! Raw deflate decoding that can stop at block ends and resume from a saved point: the
//! zran idea behind zTOC checkpoints, on miniz_oxide's block-boundary support.
//!
//! Output goes to a ring buffer whose size is a power of two above the 32 KiB deflate
//! window, so the window at any point is the 32 KiB before the write position.

use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY,
};
use miniz_oxide::inflate::core::{decompress_with_limit, BlockBoundaryState, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The deflate window, and the size of each checkpoint's saved window.
pub const WINDOW: usize = 32 * 1024;
const RING: usize = 256 * 1024;

/// What one decoding step did.
pub struct Step {
    pub status: TINFLStatus,
    /// Input bytes consumed (whole bytes; leftover bits stay in the decoder).
    pub consumed: usize,
    /// Output produced, as a range of [`Inflater::ring`].
    pub out: std::ops::Range<usize>,
}

/// A raw-deflate decoder with its output history.
pub struct Inflater {
    decoder: Box<DecompressorOxide>,
    ring: Vec<u8>,
    pos: usize,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// A decoder at the start of a deflate stream, with an all-zero history.
    pub fn new() -> Self {
        Self {
            decoder: Box::default(),
            ring: vec![0; RING],
            pos: 0,
        }
    }

    /// A decoder resumed at a checkpoint: `bits` (0..=7) leftover bits taken from the high
    /// end of `byte`, and the 32 KiB of output before the checkpoint.
    pub fn resume(bits: u8, byte: u8, window: &[u8]) -> Self {
        let state = BlockBoundaryState {
            num_bits: bits,
            bit_buf: if bits == 0 { 0 } else { byte >> (8 - bits) },
            ..BlockBoundaryState::default()
        };
        let mut ring = vec![0; RING];
        let n = window.len().min(WINDOW);
        ring[WINDOW - n..WINDOW].copy_from_slice(&window[window.len() - n..]);
        Self {
            decoder: Box::new(DecompressorOxide::from_block_boundary_state(&state)),
            ring,
            pos: WINDOW,
        }
    }

    /// Starts the next gzip member's deflate stream; history is kept (it is not referenced).
    pub fn next_member(&mut self) {
        *self.decoder = DecompressorOxide::default();
    }

    /// Decodes from `input`, producing at most `limit` bytes. `more` says whether input
    /// may follow `input`; `stop_at_blocks` returns at every block end.
    pub fn step(&mut self, input: &[u8], more: bool, stop_at_blocks: bool, limit: usize) -> Step {
        let mut flags = 0;
        if more {
            flags |= TINFL_FLAG_HAS_MORE_INPUT;
        }
        if stop_at_blocks {
            flags |= TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY;
        }
        let (status, consumed, written) = decompress_with_limit(
            &mut self.decoder,
            input,
            &mut self.ring,
            self.pos,
            limit,
            flags,
        );
        let out = self.pos..self.pos + written;
        self.pos = (self.pos + written) & (RING - 1);
        Step {
            status,
            consumed,
            out,
        }
    }

    pub fn ring(&self) -> &[u8] {
        &self.ring
    }

    /// Leftover bits at a block end (0..=7), `None` when not at one.
    pub fn boundary_bits(&self) -> Option<u8> {
        self.decoder.block_boundary_state().map(|s| s.num_bits)
    }

    /// Appends the 32 KiB of output before the current position to `out`.
    pub fn window_into(&self, out: &mut Vec<u8>) {
        let start = (self.pos + RING - WINDOW) & (RING - 1);
        if start + WINDOW <= RING {
            out.extend_from_slice(&self.ring[start..start + WINDOW]);
        } else {
            out.extend_from_slice(&self.ring[start..]);
            out.extend_from_slice(&self.ring[..self.pos]);
        }
    }
}
