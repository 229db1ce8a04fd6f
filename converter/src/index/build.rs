//! Building one layer's zTOC and span blocks from its downloaded blob: one streaming
//! pass (checking the blob against its digest when it came from an OCI layout), and with
//! recorded reads, where the budget left no resume points, a second pass whose spans
//! start just before the runs they read; and the exact compressed ranges of those reads.

use std::path::PathBuf;

use estargz::soci::{
    build_index, BuildError, BuildOptions, BuiltIndex, Compression, LearnedRanges,
    DEFAULT_BLOCK_SIZE,
};
use estargz::{Digest, Hasher};

use super::{prefetch, IndexError};
use crate::store::BlobFile;

/// The zTOC, span blocks, resume-point windows and lite zTOC of the layer `digest` in `blob`;
/// `paths` are its recorded files (none: one pass).
pub(super) fn build_layer(
    blob: &BlobFile,
    compression: Compression,
    build: BuildOptions,
    verify: bool,
    digest: Digest,
    paths: &[String],
) -> Result<(BuiltIndex, Option<LearnedRanges>), IndexError> {
    let mut built = build_from_file(blob, compression, &build, verify, digest)?;
    let hints = prefetch::cut_hints(&built.ztoc, paths);
    // Resume points already start reads near each recorded run (the prefetch artifact
    // lists exact ranges), and checkpoints for the runs would take their budget.
    if !hints.is_empty() && compression == Compression::Gzip && built.blocks.points().is_empty() {
        let build = BuildOptions {
            cut_before: hints,
            ..build
        };
        built = build_from_file(blob, compression, &build, false, digest)?;
    }
    let learned = prefetch::learned_for(&built, paths, blob.path()).map_err(|source| {
        IndexError::Learned {
            digest,
            source: Box::new(source),
        }
    })?;
    Ok((built, learned))
}

fn build_from_file(
    blob: &BlobFile,
    compression: Compression,
    build: &BuildOptions,
    verify: bool,
    digest: Digest,
) -> Result<BuiltIndex, IndexError> {
    let path: PathBuf = blob.path().to_owned();
    let file = std::fs::File::open(&path).map_err(|e| IndexError::Build {
        digest,
        source: BuildError::Read(e),
    })?;
    let mut reader = HashingReader {
        inner: file,
        hasher: verify.then(Hasher::new),
    };
    let ztoc = build_index(&mut reader, compression, build, DEFAULT_BLOCK_SIZE)
        .map_err(|source| IndexError::Build { digest, source })?;
    if let Some(hasher) = reader.hasher {
        let actual = hasher.finish();
        if actual != digest {
            return Err(IndexError::LayerDigest { digest, actual });
        }
    }
    Ok(ztoc)
}

struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}
