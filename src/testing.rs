//! Fixtures shared by the daemon's unit tests: an eStargz layer built in memory and
//! opened over a [`MemoryBlob`].

use std::sync::Arc;

use crate::lazy::cache::ChunkCache;
use crate::lazy::layer::{Layer, LayerConfig};
use crate::lazy::source::memory_blob::MemoryBlob;

/// Builds an eStargz blob of `files` (with `chunk_size`-byte chunks, `prioritized` files
/// first), opens it as a layer over `cache` and forgets the opening requests.
pub(crate) async fn memory_layer(
    files: &[(&str, &[u8])],
    chunk_size: u64,
    prioritized: &[&str],
    cache: Arc<ChunkCache>,
) -> (Layer, Arc<MemoryBlob>) {
    let mut tar = estargz::testutil::TarBuilder::new();
    for (path, content) in files {
        tar.file(path, content);
    }
    let options = estargz::WriterOptions {
        chunk_size,
        prioritized_files: prioritized.iter().map(|p| p.to_string()).collect(),
        ..estargz::WriterOptions::default()
    };
    let mut bytes = Vec::new();
    let written = estargz::build(&tar.finish()[..], &mut bytes, &options).expect("build");
    let blob = MemoryBlob::new(bytes);
    let source: Arc<dyn crate::lazy::source::BlobSource> = blob.clone();
    let layer = Layer::open(
        source,
        Some(written.toc_digest),
        cache,
        LayerConfig::default(),
    )
    .await
    .expect("open layer");
    blob.clear_requests();
    (layer, blob)
}
