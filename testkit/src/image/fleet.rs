//! The fleet benchmark's images (benches/fleet.sh): N application images sharing the
//! busybox layer and one large interpreter-like base layer ([`InterpBase`]), each with its
//! own data layer (a hot 3 MiB file, two directories of small files, a cold file). Every
//! app runs the same entrypoint: read the interpreter's start-up set from the base, the
//! hot file and both directories, then print [`FLEET_READY`].

use super::build::{BuildError, BuiltImage, BuiltLayer, ImageBuilder};
use super::busybox::busybox_layer;
use super::interp::InterpBase;
use super::layer::{data_layer, DataFile};
use super::presets::PresetError;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// What a fleet app prints once it has read its files.
pub const FLEET_READY: &str = "READY";

/// The busybox binary every entrypoint runs (no leading `/`).
const BUSYBOX: &str = "bin/busybox";

/// The data layer of app `app` (1-based): distinct contents per app, same paths.
pub fn fleet_app_files(app: usize) -> Vec<DataFile> {
    let mut files = vec![DataFile::new("app/hot.bin", 3 * MIB, 0)];
    files.extend((0..200).map(|i| {
        let size = KIB + (i * 7919 + app * 31) % (15 * KIB);
        DataFile::new(&format!("app/static/s{i:03}.css"), size, 60)
    }));
    files.push(DataFile::new("app/cold.bin", 8 * MIB, 10));
    files.extend((0..300).map(|i| {
        let size = 512 + (i * 104_729 + app * 17) % (3 * KIB);
        DataFile::new(&format!("app/templates/t{i:03}.html"), size, 80)
    }));
    files
}

/// The entrypoint script of every fleet app.
pub fn fleet_script(base: &InterpBase) -> String {
    format!(
        "cat {} /app/hot.bin /app/static/* /app/templates/* >/dev/null && echo {FLEET_READY}",
        base.startup_words()
    )
}

/// The files app `app` reads, in reading order (no leading `/`), with their sizes.
pub fn fleet_read_set(base: &InterpBase, app: usize) -> Vec<(String, usize)> {
    let mut read: Vec<(String, usize)> = base
        .startup_files()
        .into_iter()
        .map(|p| {
            let size = base.size_of(&p).unwrap_or(0);
            (p, size)
        })
        .collect();
    read.extend(
        fleet_app_files(app)
            .into_iter()
            .filter(|f| f.path != "app/cold.bin")
            .map(|f| (f.path, f.size)),
    );
    read.insert(0, (BUSYBOX.to_owned(), busybox_size()));
    read
}

/// Size of the host's busybox binary (what every container executes first).
pub fn busybox_size() -> usize {
    std::fs::metadata(super::busybox::HOST_BUSYBOX)
        .ok()
        .and_then(|m| usize::try_from(m.len()).ok())
        .unwrap_or(0)
}

/// The shared layers of the fleet, gzipped once.
pub struct FleetBase {
    pub interp: InterpBase,
    busybox: BuiltLayer,
    base: BuiltLayer,
}

impl FleetBase {
    /// Builds the busybox layer and the `mib` MiB / `files` files base layer.
    pub fn build(mib: usize, files: usize) -> Result<Self, PresetError> {
        let interp = InterpBase::new(mib, files);
        let builder = ImageBuilder::new();
        let busybox = builder.prebuild(busybox_layer()?)?;
        let base = builder.prebuild(data_layer(&interp.files, 301)?)?;
        Ok(Self {
            interp,
            busybox,
            base,
        })
    }

    /// App `app` (1-based): the shared layers plus its own data layer.
    pub fn app_image(&self, app: usize) -> Result<BuiltImage, PresetError> {
        let seed = 400 + u64::try_from(app).unwrap_or(0);
        let script = fleet_script(&self.interp);
        let image: Result<BuiltImage, BuildError> = ImageBuilder::new()
            .built_layer(self.busybox.clone())
            .built_layer(self.base.clone())
            .layer(data_layer(&fleet_app_files(app), seed)?)
            .cmd(&["/bin/sh", "-c", &script])
            .build();
        Ok(image?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_read_their_hot_file_and_both_directories_but_not_the_cold_file() {
        let base = InterpBase::new(64, 2_000);
        let read = fleet_read_set(&base, 3);
        let paths: Vec<&str> = read.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths[0], BUSYBOX);
        assert!(paths.contains(&"app/hot.bin"));
        assert_eq!(
            paths
                .iter()
                .filter(|p| p.starts_with("app/static/"))
                .count(),
            200
        );
        assert_eq!(
            paths
                .iter()
                .filter(|p| p.starts_with("app/templates/"))
                .count(),
            300
        );
        assert!(!paths.contains(&"app/cold.bin"));
        assert!(read.iter().all(|(_, size)| *size > 0));
        let script = fleet_script(&base);
        assert!(script.ends_with("echo READY"), "{script}");
    }

    #[test]
    fn apps_share_the_base_and_differ_in_their_own_layer() {
        if super::super::busybox::check_static_busybox().is_err() {
            eprintln!("SKIPPED apps_share_the_base: no static busybox");
            return;
        }
        let fleet = FleetBase::build(16, 400).unwrap();
        let (one, two) = (fleet.app_image(1).unwrap(), fleet.app_image(2).unwrap());
        assert_eq!(one.layers[1].blob.digest, two.layers[1].blob.digest);
        assert_ne!(one.layers[2].blob.digest, two.layers[2].blob.digest);
        assert_eq!(one.config.bytes.len(), two.config.bytes.len());
    }
}
