//! Ready-made images: a small demo image, a large mixed image for the conversion benchmark
//! a large image whose entrypoint reads a tenth of it for the lazy-pull benchmark, and a
//! one-file image for the lazy-read throughput benchmark.

use super::build::{BuildError, BuiltImage, ImageBuilder};
use super::busybox::{busybox_layer, BusyboxError};
use super::layer::{data_layer, DataFile, LayerError};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Errors from building a preset image.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What the demo image prints when run.
pub const DEMO_GREETING: &str = "hello from an estargz image";

/// busybox plus a small data layer; runs a shell printing [`DEMO_GREETING`] and a checksum.
pub fn demo_image() -> Result<BuiltImage, PresetError> {
    let files = [
        DataFile::new("data/readme.txt", 8 * KIB, 100),
        DataFile::new("data/blob.bin", 3 * MIB, 30),
    ];
    let script = format!("echo '{DEMO_GREETING}'; sha256sum /data/readme.txt");
    Ok(ImageBuilder::new()
        .layer(busybox_layer()?)
        .layer(data_layer(&files, 42)?)
        .cmd(&["/bin/sh", "-c", &script])
        .build()?)
}

/// The files of the benchmark image's layers, for roughly `total_mib` MiB of content:
/// many small text-heavy files, medium mixed files, and a few big mostly-binary ones.
pub fn bench_layers(total_mib: usize) -> Vec<Vec<DataFile>> {
    let budget = total_mib.max(8) * MIB;
    let small: Vec<DataFile> = (0..(budget / 10) / (6 * KIB))
        .map(|i| {
            DataFile::new(
                &format!("usr/share/doc/pkg{}/file{i}.txt", i % 97),
                1 + (i * 7919) % (12 * KIB),
                90,
            )
        })
        .collect();
    let medium: Vec<DataFile> = (0..(budget * 3 / 10) / (256 * KIB))
        .map(|i| {
            DataFile::new(
                &format!("usr/lib/lib{i}.so"),
                64 * KIB + (i * 104_729) % (384 * KIB),
                40,
            )
        })
        .collect();
    let big_count = 3;
    let big: Vec<DataFile> = (0..big_count)
        .map(|i| {
            DataFile::new(
                &format!("opt/app/model{i}.bin"),
                budget * 6 / 10 / big_count,
                15,
            )
        })
        .collect();
    vec![small, medium, big]
}

/// busybox plus the [`bench_layers`] (several layers, about `total_mib` MiB).
pub fn bench_image(total_mib: usize) -> Result<BuiltImage, PresetError> {
    let mut builder =
        ImageBuilder::new()
            .layer(busybox_layer()?)
            .cmd(&["/bin/sh", "-c", "ls /opt/app"]);
    for (seed, files) in (1u64..).zip(bench_layers(total_mib)) {
        builder = builder.layer(data_layer(&files, seed)?);
    }
    Ok(builder.build()?)
}

/// What the lazy-pull benchmark image prints once its entrypoint has read its files.
pub const LAZY_BENCH_READY: &str = "ready";

/// Data layers of the lazy-pull benchmark image.
const LAZY_BENCH_DATA_LAYERS: usize = 3;
/// Small files each data layer contributes to the entrypoint's read set.
const LAZY_BENCH_SMALL_READS: usize = 16;

/// The data layers of the lazy-pull benchmark image, for roughly `total_mib` MiB of
/// mostly incompressible content, and the paths its entrypoint reads.
///
/// Each of the three layers holds filler files the entrypoint never reads (a few 8 MiB
/// files and many of a few hundred KiB) with its share of the read set interleaved: about
/// a tenth of the layer, as one big file (half of it), one medium file (a quarter) and 16
/// small files of different sizes (the last quarter). The read set is in reading order.
pub fn lazy_bench_layers(total_mib: usize) -> (Vec<Vec<DataFile>>, Vec<String>) {
    const TEXT_PERCENT: u8 = 10;
    let layer_bytes = total_mib.max(12) * MIB / LAZY_BENCH_DATA_LAYERS;
    let read_bytes = layer_bytes / 10;
    let mut layers = Vec::new();
    let mut read_set = Vec::new();
    for layer in 1..=LAZY_BENCH_DATA_LAYERS {
        let app = format!("usr/lib/app{layer}");
        let mut reads = vec![
            DataFile::new(&format!("{app}/core.bin"), read_bytes / 2, TEXT_PERCENT),
            DataFile::new(&format!("{app}/plugin.bin"), read_bytes / 4, TEXT_PERCENT),
        ];
        // Small files from 1/4 to 7/4 of the average size, summing to about read_bytes / 4.
        let average = read_bytes / 4 / LAZY_BENCH_SMALL_READS;
        reads.extend((0..LAZY_BENCH_SMALL_READS).map(|i| {
            let size = average / 4 + average * ((i * 5) % LAZY_BENCH_SMALL_READS) / 10;
            DataFile::new(&format!("{app}/mods/m{i:02}.so"), size, TEXT_PERCENT)
        }));
        read_set.extend(reads.iter().map(|f| f.path.clone()));

        let filler_bytes = layer_bytes - read_bytes;
        let big_count = filler_bytes / 2 / (8 * MIB);
        let mut fillers: Vec<DataFile> = (0..big_count)
            .map(|i| {
                let path = format!("usr/share/data{layer}/big{i:02}.bin");
                DataFile::new(&path, 8 * MIB, TEXT_PERCENT)
            })
            .collect();
        let medium_bytes = filler_bytes - big_count * 8 * MIB;
        let medium_count = medium_bytes / (320 * KIB);
        fillers.extend((0..medium_count).map(|i| {
            let path = format!("usr/share/data{layer}/blob{i:03}.bin");
            // 64 KiB to 576 KiB in 32 KiB steps, 320 KiB on average.
            DataFile::new(&path, 64 * KIB + (i * 37) % 17 * 32 * KIB, TEXT_PERCENT)
        }));

        // Interleave: one read file after every `stride` fillers, so without prioritized
        // files the reads are scattered over the layer.
        let stride = (fillers.len() / reads.len()).max(1);
        let mut files = Vec::with_capacity(fillers.len() + reads.len());
        let mut reads = reads.into_iter();
        for (i, filler) in fillers.into_iter().enumerate() {
            files.push(filler);
            if i % stride == stride - 1 {
                files.extend(reads.next());
            }
        }
        files.extend(reads);
        layers.push(files);
    }
    (layers, read_set)
}

/// The files the lazy-pull benchmark image's entrypoint reads, in order: the busybox
/// binary (the shell), then the data files it `cat`s. Paths without a leading `/`.
pub fn lazy_bench_read_set(total_mib: usize) -> Vec<String> {
    let mut paths = vec!["bin/busybox".to_string()];
    paths.extend(lazy_bench_layers(total_mib).1);
    paths
}

/// busybox plus three large data layers (about `total_mib` MiB, mostly incompressible);
/// the entrypoint reads [`lazy_bench_read_set`] (about a tenth of the content) and then
/// prints [`LAZY_BENCH_READY`].
pub fn lazy_bench_image(total_mib: usize) -> Result<BuiltImage, PresetError> {
    let (layers, read_set) = lazy_bench_layers(total_mib);
    let files: Vec<String> = read_set.iter().map(|p| format!("/{p}")).collect();
    let script = format!(
        "cat {} >/dev/null && echo {LAZY_BENCH_READY}",
        files.join(" ")
    );
    let mut builder = ImageBuilder::new()
        .layer(busybox_layer()?)
        .cmd(&["/bin/sh", "-c", &script]);
    for (seed, files) in (101u64..).zip(layers) {
        builder = builder.layer(data_layer(&files, seed)?);
    }
    Ok(builder.build()?)
}

/// The one file of the read-throughput benchmark image (no leading `/`).
pub const READ_BENCH_FILE: &str = "data/big.bin";

/// One layer holding [`READ_BENCH_FILE`]: `mib` MiB of incompressible bytes. The layer blob
/// is gzip level 0 (stored blocks) so that building a GiB stays quick; the converter
/// recompresses it anyway, and random bytes do not compress at any level.
pub fn read_bench_image(mib: usize) -> Result<BuiltImage, PresetError> {
    let file = DataFile::new(READ_BENCH_FILE, mib.max(1) * MIB, 0);
    Ok(ImageBuilder::new()
        .gzip_level(0)
        .layer(data_layer(&[file], 7)?)
        .cmd(&["/bin/true"])
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_layers_add_up_to_about_the_budget() {
        let layers = bench_layers(100);
        let total: usize = layers.iter().flatten().map(|f| f.size).sum();
        assert!(total > 90 * MIB && total < 110 * MIB, "{total}");
        assert!(
            layers[0].len() > 1000,
            "few small files: {}",
            layers[0].len()
        );
        assert_eq!(layers[2].len(), 3);
    }

    #[test]
    fn read_bench_is_one_incompressible_file() {
        let image = read_bench_image(2).unwrap();
        assert_eq!(image.layers.len(), 1);
        let mut archive = tar::Archive::new(image.layers[0].tar.as_slice());
        let files: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type() == tar::EntryType::Regular)
            .map(|e| (e.path().unwrap().display().to_string(), e.size()))
            .collect();
        assert_eq!(files, [(READ_BENCH_FILE.to_owned(), 2 * MIB as u64)]);
        let blob = image.layers[0].blob.bytes.len();
        assert!(blob > 2 * MIB, "stored, not compressed: {blob}");
    }

    #[test]
    fn lazy_bench_reads_a_tenth_spread_over_the_layers() {
        let (layers, read_set) = lazy_bench_layers(300);
        assert_eq!(layers.len(), LAZY_BENCH_DATA_LAYERS);
        let files: Vec<&DataFile> = layers.iter().flatten().collect();
        let total: usize = files.iter().map(|f| f.size).sum();
        let read: usize = files
            .iter()
            .filter(|f| read_set.contains(&f.path))
            .map(|f| f.size)
            .sum();
        assert!(total > 280 * MIB && total < 310 * MIB, "{total}");
        assert!(read > 25 * MIB && read < 35 * MIB, "{read}");
        assert_eq!(
            read_set.len(),
            LAZY_BENCH_DATA_LAYERS * (2 + LAZY_BENCH_SMALL_READS)
        );
        for (layer, files) in layers.iter().enumerate() {
            let first_read = files.iter().position(|f| read_set.contains(&f.path));
            assert!(
                first_read > Some(0),
                "layer {layer} starts with a read file"
            );
        }
        assert_eq!(lazy_bench_read_set(300)[0], "bin/busybox");
    }
}
