//! The small indexed gzip layer the `soci` fuzz target parses hostile blobs against, and
//! its seeds are made from (`examples/soci_seeds.rs`): text and random files, small spans,
//! every resume point kept.

use std::io::Write;

use estargz::soci::{build_index, BuildOptions, BuiltIndex, Compression, SpanBlocks, Zinfo};
use estargz::testutil::{pseudo_random_bytes, TarBuilder};

// Each user reads only some fields.
#[allow(dead_code)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub zinfo: Zinfo,
    pub blocks: SpanBlocks,
    pub built: BuiltIndex,
}

pub fn build() -> Layer {
    let mut tar = TarBuilder::new();
    for i in 0..40u64 {
        let text: Vec<u8> = (0..20_000u64)
            .map(|j| b"abcdefgh ijk\n"[((j * j + i) % 13) as usize])
            .collect();
        tar.file(&format!("t/{i}"), &text);
        tar.file(&format!("r/{i}"), &pseudo_random_bytes(i, 30_000));
    }
    let tar = tar.finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip");
    let opts = BuildOptions {
        span_size: 256 << 10,
        min_span_size: 256 << 10,
        index_budget_per_mille: 1000,
        ..BuildOptions::default()
    };
    let built = build_index(&blob[..], Compression::Gzip, &opts, 4096).expect("index");
    let zinfo = Zinfo::new(&built.ztoc).expect("zinfo");
    Layer {
        blob,
        zinfo,
        blocks: built.blocks.clone(),
        built,
    }
}
