//! Writes seeds for the `soci` fuzz target into `corpus/soci/`: the layer's real blocks
//! blob, a window entry, lite zTOC, a prefetch artifact and learned ranges, each behind
//! its pick byte.

#[path = "../fuzz_targets/soci_layer.rs"]
mod soci_layer;

use estargz::soci::prefetch::PrefetchArtifact;
use estargz::soci::LearnedRanges;

fn main() {
    let layer = soci_layer::build();
    let built = &layer.built;
    let window = built
        .blocks
        .points()
        .iter()
        .find(|p| p.window.len > 0)
        .map(|p| built.windows[p.window.offset as usize..][..p.window.len as usize].to_vec())
        .unwrap_or_default();
    let reads = [10..5000, 300_000..330_000, 900_000..901_000];
    let artifact = PrefetchArtifact::from_reads(&layer.zinfo, reads.clone()).to_bytes();
    let learned = LearnedRanges::build(&layer.zinfo, &built.blocks, &built.windows, &reads, |r| {
        Ok(layer.blob[r.start as usize..r.end as usize].to_vec())
    })
    .expect("learned ranges")
    .to_bytes();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/soci");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (pick, name, bytes) in [
        (0u8, "blocks", built.blocks.to_bytes()),
        (1, "window", window),
        (2, "lite", built.lite.clone()),
        (3, "artifact", artifact),
        (4, "learned", learned),
    ] {
        let mut seed = vec![pick];
        seed.extend_from_slice(&bytes);
        std::fs::write(dir.join(name), seed).expect("write seed");
    }
    println!(
        "{} points, seeds in {}",
        built.blocks.points().len(),
        dir.display()
    );
}
