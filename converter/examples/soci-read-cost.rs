//! What a workload's reads cost in registry bytes through a SOCI index, per layer of
//! testkit's interp image (the `benches/soci.sh` image) and its entrypoint's reads:
//!
//! - `files`: the compressed bytes the read files take (their share of the layer's
//!   compression), about what an eStargz image fetches;
//! - `spans`: whole spans, as without span blocks;
//! - `prefixes`: span blocks from each span's start through the block that reaches the
//!   farthest read in it (what the daemon fetches with span blocks);
//! - `touched`: only the blocks whose output overlaps a read, a bound for what ending the
//!   wasted head of a span (closer checkpoints) could reach;
//! - `spans` and `index`: how many, and the index size (zTOC, blocks, windows, lite zTOC;
//!   the sizes of each and the resume points are printed on stderr).
//!
//! Usage: `cargo run --release -p estargz-convert --example soci-read-cost [MIB FILES
//! [SPAN MIN_SPAN]]` (default 200 8000, as the benchmark, and the default span sizes).

use std::collections::{BTreeMap, HashMap};

use estargz::soci::{build_index, BuildOptions, Compression, Zinfo, DEFAULT_BLOCK_SIZE};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("MIB FILES are numbers"))
        .collect();
    let (mib, files) = match args[..] {
        [mib, files, ..] => (mib, files),
        _ => (200, 8000),
    };
    let mut build = BuildOptions::default();
    if let [_, _, span, min] = args[..] {
        (build.span_size, build.min_span_size) = (span as u64, min as u64);
    }
    let image = testkit::image::interp_image(mib, files).expect("interp image");
    let reads: Vec<(String, usize)> = testkit::image::interp_read_set(mib, files);
    println!(
        "| layer | MB | spans | index MB | read MB | files MB | spans MB | prefixes MB | touched MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    for (i, layer) in image.layers.iter().enumerate() {
        let blob = &layer.blob.bytes[..];
        let built = build_index(blob, Compression::Gzip, &build, DEFAULT_BLOCK_SIZE)
            .expect("index the layer");
        let (ztoc, blocks, windows) = (built.ztoc, built.blocks, built.windows);
        let with_window = blocks.points().iter().filter(|p| p.window.len > 0).count();
        eprintln!(
            "layer {i}: zTOC {} B, blocks {} B, {} resume points ({with_window} with a window, windows {} B), lite zTOC {} B",
            ztoc.to_bytes().len(),
            blocks.to_bytes().len(),
            blocks.points().len(),
            windows.len(),
            built.lite.len()
        );
        let zinfo = Zinfo::new(&ztoc).expect("checkpoints");
        let index =
            ztoc.to_bytes().len() + blocks.to_bytes().len() + windows.len() + built.lite.len();
        let offsets: HashMap<&str, (u64, u64)> = ztoc
            .files
            .iter()
            .map(|f| {
                let name = f.name.trim_start_matches("./").trim_end_matches('/');
                (name, (f.uncompressed_offset, f.uncompressed_size))
            })
            .collect();
        let ranges: Vec<(u64, u64)> = reads
            .iter()
            .filter_map(|(path, _)| offsets.get(path.trim_start_matches('/')).copied())
            .filter(|&(_, size)| size > 0)
            .map(|(at, size)| (at, at + size))
            .collect();
        let ratio = blob.len() as f64 / ztoc.uncompressed_archive_size.max(1) as f64;
        let read: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        // Per span, the farthest read end, and the blocks any read overlaps.
        let mut farthest: BTreeMap<usize, u64> = BTreeMap::new();
        let mut touched: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        for &(a, b) in &ranges {
            for span in zinfo.spans_for(a..b) {
                let u = zinfo.uncompressed_range(span).expect("span");
                let end = b.min(u.end);
                let e = farthest.entry(span).or_insert(0);
                *e = (*e).max(end);
                let mut start = u.start;
                for block in 0..blocks.count(span) {
                    let info = blocks.block(span, block).expect("block");
                    if info.uncompressed_end > a.max(u.start) && start < end {
                        let r = blocks.compressed_range(&zinfo, span, block).expect("range");
                        touched.insert((span, block), r.end - r.start);
                    }
                    start = info.uncompressed_end;
                }
            }
        }
        let spans: u64 = farthest
            .keys()
            .map(|&s| zinfo.compressed_range(s).map_or(0, |r| r.end - r.start))
            .sum();
        let prefixes: u64 = farthest
            .iter()
            .map(|(&s, &end)| {
                let n = blocks.needed(s, end);
                let start = zinfo.compressed_range(s).map_or(0, |r| r.start);
                blocks
                    .compressed_range(&zinfo, s, n - 1)
                    .map_or(0, |r| r.end - start)
            })
            .sum();
        println!(
            "| {i} | {} | {} | {} ({:.2} %) | {} | {} | {} | {} | {} |",
            mb(blob.len() as u64),
            zinfo.span_count(),
            mb(index as u64),
            index as f64 * 100.0 / blob.len() as f64,
            mb(read),
            mb((read as f64 * ratio) as u64),
            mb(spans),
            mb(prefixes),
            mb(touched.values().sum()),
        );
    }
}
