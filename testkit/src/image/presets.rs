//! Ready-made images: a small demo image and a large mixed image for benchmarks.

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
}
