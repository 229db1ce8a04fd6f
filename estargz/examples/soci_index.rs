//! Builds the index of one layer blob file as `estargz-convert index` does (zTOC, span
//! blocks with resume points, windows, lite zTOC) and prints how long it took and how big
//! the index is, as one JSON line (used by `benches/soci_index.sh`).
//!
//! Usage: `soci_index LAYER.tar.gz [gzip|tar] [MIN_SPAN_SIZE]`

use std::time::Instant;

use estargz::soci::{build_index, BuildOptions, Compression, DEFAULT_BLOCK_SIZE};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: soci_index LAYER [gzip|tar]");
        std::process::exit(2);
    };
    let compression = match args.next().as_deref() {
        Some("tar") => Compression::Uncompressed,
        _ => Compression::Gzip,
    };
    let mut options = BuildOptions::default();
    if let Some(min) = args.next().and_then(|m| m.parse().ok()) {
        options.min_span_size = min;
    }
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("open {path}: {e}");
            std::process::exit(1);
        }
    };
    let layer_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let built = match build_index(file, compression, &options, DEFAULT_BLOCK_SIZE) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("index {path}: {e}");
            std::process::exit(1);
        }
    };
    let ztoc = &built.ztoc;
    let bytes = ztoc.to_bytes();
    let ours = built.blocks.to_bytes().len() + built.windows.len() + built.lite.len();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"seconds\": {seconds:.3}, \"layer_bytes\": {layer_bytes}, \"ztoc_bytes\": {}, \"index_bytes\": {}, \"points\": {}, \"spans\": {}, \"files\": {}}}",
        bytes.len(),
        bytes.len() + ours,
        built.blocks.points().len(),
        ztoc.max_span_id + 1,
        ztoc.files.len()
    );
}
