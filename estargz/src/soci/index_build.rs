//! A layer's whole index in one pass: soci's zTOC ([`super::ztoc_build`]) and, ours, the
//! span blocks with the resume points that fit in the index budget, their windows blob
//! and the lite zTOC.

use std::io::Read;

use super::blocks::{BlockRecorder, SpanBlocks};
use super::lite::lite_bytes;
use super::resume;
use super::ztoc::{Compression, Ztoc};
use super::ztoc_build::{build, BuildError, BuildOptions};

/// A layer's index as `estargz-convert index` pushes it.
pub struct BuiltIndex {
    /// soci's zTOC.
    pub ztoc: Ztoc,
    /// Ours: span blocks and resume points ([`super::blocks`], [`super::resume`]).
    pub blocks: SpanBlocks,
    /// Ours: the resume points' sparse windows (empty when none needs one).
    pub windows: Vec<u8>,
    /// Ours: the lite zTOC ([`super::lite`]).
    pub lite: Vec<u8>,
}

/// Builds the zTOC and, in the same pass, the verification blocks of its spans
/// ([`super::blocks`]), `block_size` compressed bytes each, with the resume points
/// ([`super::resume`]) that fit in the index budget left by the zTOC, the blocks and the
/// lite zTOC. Returns the zTOC, the blocks and the windows blob of the points.
pub fn build_ztoc_with_blocks(
    reader: impl Read,
    compression: Compression,
    opts: &BuildOptions,
    block_size: u64,
) -> Result<(Ztoc, SpanBlocks, Vec<u8>), BuildError> {
    let built = build_index(reader, compression, opts, block_size)?;
    Ok((built.ztoc, built.blocks, built.windows))
}

/// [`build_ztoc_with_blocks`] with the lite zTOC too.
pub fn build_index(
    reader: impl Read,
    compression: Compression,
    opts: &BuildOptions,
    block_size: u64,
) -> Result<BuiltIndex, BuildError> {
    let mut candidates = Vec::new();
    let (ztoc, blocks) = build(
        reader,
        compression,
        opts,
        Some(BlockRecorder::new(block_size)),
        Some(&mut candidates),
    )?;
    let mut blocks = blocks
        .unwrap_or_else(|| BlockRecorder::new(block_size))
        .finish();
    let (candidates, checkpoint_windows) = resume::split(candidates);
    let lite = lite_bytes(&ztoc, &checkpoint_windows);
    let index = (ztoc.to_bytes().len() + blocks.to_bytes().len() + lite.len()) as u64;
    let budget = (ztoc
        .compressed_archive_size
        .saturating_mul(opts.index_budget_per_mille)
        / 1000)
        .saturating_sub(index);
    let (points, windows) = resume::select(candidates, budget);
    blocks.set_points(points);
    Ok(BuiltIndex {
        ztoc,
        blocks,
        windows,
        lite,
    })
}
