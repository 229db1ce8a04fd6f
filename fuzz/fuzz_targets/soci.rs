//! Our SOCI blobs from a registry, hostile: the span blocks blob (with resume points), a
//! resume window entry, the lite zTOC, the prefetch artifact and the learned ranges, each
//! parsed against a real index of a small layer built once; what parses is then used as
//! the daemon would (decoding from every resume point, and every learned range's start,
//! over the real blob), which may fail but never panic.
//! Input: byte 0 picks the blob; the rest is its bytes (seeds: `cargo run --example
//! soci_seeds` in `fuzz/`).
#![no_main]

use std::sync::OnceLock;

use estargz::soci::prefetch::PrefetchArtifact;
use estargz::soci::{from_lite, sparse_window, LearnedRanges, PrefixDecoder, SpanBlocks, Zinfo};
use libfuzzer_sys::fuzz_target;

#[path = "soci_layer.rs"]
mod soci_layer;
use soci_layer::Layer;

/// The layer, built once.
fn layer() -> &'static Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER.get_or_init(soci_layer::build)
}

/// Decodes from every resume point of `blocks` with `window`, over the real blob.
fn decode_points(layer: &Layer, blocks: &SpanBlocks, window: &[u8]) {
    for point in blocks.points() {
        let Ok(mut decoder) = PrefixDecoder::at_point(&layer.zinfo, blocks, point, window.to_vec())
        else {
            continue;
        };
        let span = point.span as usize;
        let mut out = Vec::new();
        for block in point.block as usize..blocks.count(span).min(point.block as usize + 4) {
            let Some(r) = blocks.compressed_range(&layer.zinfo, span, block) else {
                break;
            };
            let Some(bytes) = layer.blob.get(r.start as usize..r.end as usize) else {
                break;
            };
            if decoder.feed(bytes, &mut out).is_err() {
                break;
            }
        }
    }
}

/// Decodes every learned range from its start over the real blob (the digest unchecked,
/// so hostile starts reach the decoder), then one block further.
fn decode_learned(layer: &Layer, learned: &LearnedRanges) {
    let (zinfo, blocks) = (&layer.zinfo, &layer.blocks);
    for range in &learned.ranges {
        let Ok((mut decoder, _)) = range.decoder(zinfo, blocks) else {
            continue;
        };
        let (a, b) = (range.compressed.start as usize, range.compressed.end as usize);
        let Some(bytes) = layer.blob.get(a..b.min(a.saturating_add(1 << 20))) else {
            continue;
        };
        let mut out = Vec::new();
        if decoder.feed_exact(zinfo, blocks, bytes, &mut out).is_err() {
            continue;
        }
        let next = blocks.compressed_range(zinfo, range.span, decoder.next_block());
        if let Some(block) = next.and_then(|r| layer.blob.get(r.start as usize..r.end as usize)) {
            let _ = decoder.feed(block, &mut out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let layer = layer();
    match pick % 5 {
        0 => {
            if let Ok(blocks) = SpanBlocks::from_bytes(bytes, &layer.zinfo) {
                decode_points(layer, &blocks, &vec![0; 32 << 10]);
            }
        }
        1 => {
            if let Ok(window) = sparse_window::decode(bytes) {
                assert_eq!(window.len(), 32 << 10);
                decode_points(layer, &layer.blocks, &window);
            }
        }
        2 => {
            if let Ok(ztoc) = from_lite(bytes) {
                let _ = Zinfo::new(&ztoc);
            }
        }
        4 => {
            if let Ok(learned) = LearnedRanges::from_bytes(bytes, &layer.zinfo, &layer.blocks) {
                decode_learned(layer, &learned);
            }
        }
        _ => {
            if let Ok(artifact) = PrefetchArtifact::from_bytes(bytes, layer.zinfo.span_count()) {
                let _ = artifact.span_ends();
                let _ = artifact.ranges_within(layer.zinfo.uncompressed_size());
            }
        }
    }
});
