//! The on-demand read benchmark's images (benches/ondemand.sh), both printing
//! [`ONDEMAND_READY`] once their entrypoint has read its files:
//! - interp: busybox and an [`InterpBase`]; the entrypoint reads its start-up set (whole
//!   directories of small modules in tar order, then a few large libraries);
//! - scattered: busybox and a layer of files of 16 to 128 KiB of random bytes; the
//!   entrypoint reads a few hundred of them picked at random, in random order.

use super::build::{BuiltImage, ImageBuilder};
use super::busybox::busybox_layer;
use super::content::SplitMix64;
use super::fleet::busybox_size;
use super::interp::InterpBase;
use super::layer::{data_layer, DataFile};
use super::presets::PresetError;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// What both images print once their entrypoint has read its files.
pub const ONDEMAND_READY: &str = "READY";

/// Files the scattered entrypoint reads.
const SCATTERED_READS: usize = 256;

/// busybox plus the `mib` MiB / `files` files interpreter base; reads its start-up set.
pub fn interp_image(mib: usize, files: usize) -> Result<BuiltImage, PresetError> {
    let base = InterpBase::new(mib, files);
    let script = format!(
        "cat {} >/dev/null && echo {ONDEMAND_READY}",
        base.startup_words()
    );
    Ok(ImageBuilder::new()
        .layer(busybox_layer()?)
        .layer(data_layer(&base.files, 501)?)
        .cmd(&["/bin/sh", "-c", &script])
        .build()?)
}

/// The files the interp entrypoint reads, in order, with their sizes.
pub fn interp_read_set(mib: usize, files: usize) -> Vec<(String, usize)> {
    let base = InterpBase::new(mib, files);
    let mut read = vec![("bin/busybox".to_owned(), busybox_size())];
    read.extend(base.startup_files().into_iter().map(|p| {
        let size = base.size_of(&p).unwrap_or(0);
        (p, size)
    }));
    read
}

/// The scattered layer's files (about `mib` MiB) and the ones read, in reading order.
fn scattered_layer(mib: usize) -> (Vec<DataFile>, Vec<usize>) {
    let budget = mib.max(8) * MIB;
    let mut files = Vec::new();
    let mut total = 0;
    while total < budget {
        let i = files.len();
        let size = 16 * KIB + (i * 7919 * 13) % (112 * KIB);
        files.push(DataFile::new(
            &format!("data/shard{:02}/f{i:05}.bin", i / 256),
            size,
            0,
        ));
        total += size;
    }
    let mut rng = SplitMix64::new(77);
    let mut picked = Vec::new();
    while picked.len() < SCATTERED_READS.min(files.len()) {
        let bound = u64::try_from(files.len()).unwrap_or(u64::MAX);
        let i = usize::try_from(rng.below(bound)).unwrap_or(0);
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    (files, picked)
}

/// busybox plus a layer of about `mib` MiB of small random files; reads a few hundred of
/// them scattered over the layer, in random order.
pub fn scattered_image(mib: usize) -> Result<BuiltImage, PresetError> {
    let (files, picked) = scattered_layer(mib);
    let paths: Vec<String> = picked
        .iter()
        .map(|&i| format!("/{}", files[i].path))
        .collect();
    let script = format!(
        "cat {} >/dev/null && echo {ONDEMAND_READY}",
        paths.join(" ")
    );
    Ok(ImageBuilder::new()
        .layer(busybox_layer()?)
        .layer(data_layer(&files, 502)?)
        .cmd(&["/bin/sh", "-c", &script])
        .build()?)
}

/// The files the scattered entrypoint reads, in order, with their sizes.
pub fn scattered_read_set(mib: usize) -> Vec<(String, usize)> {
    let (files, picked) = scattered_layer(mib);
    let mut read = vec![("bin/busybox".to_owned(), busybox_size())];
    read.extend(
        picked
            .iter()
            .map(|&i| (files[i].path.clone(), files[i].size)),
    );
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_reads_are_distinct_and_spread_over_the_layer() {
        let (files, picked) = scattered_layer(200);
        let total: usize = files.iter().map(|f| f.size).sum();
        assert!((200 * MIB..201 * MIB).contains(&total), "{total}");
        assert_eq!(picked.len(), SCATTERED_READS);
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), SCATTERED_READS);
        assert!(sorted[0] < files.len() / 10 && sorted[SCATTERED_READS - 1] > files.len() * 9 / 10);
        assert_ne!(sorted, picked, "read in layer order");
        let read = scattered_read_set(200);
        assert_eq!(read.len(), SCATTERED_READS + 1);
    }

    #[test]
    fn interp_reads_a_few_hundred_modules_and_the_large_libraries() {
        let read = interp_read_set(300, 12_000);
        let modules = read.iter().filter(|(p, _)| p.ends_with(".py")).count();
        assert!((300..=600).contains(&modules), "{modules}");
        let large = read
            .iter()
            .filter(|(p, size)| p.contains(".so") && *size >= 2 * MIB)
            .count();
        assert_eq!(large, 3);
    }
}
