//! An interpreter-like base layer for the fleet and on-demand benchmarks (benches/fleet.sh,
//! benches/ondemand.sh): many package directories of small modules, shared libraries (a few
//! of them large), and big data files no one reads between the packages; and the start-up
//! set an interpreter reads from it: whole package directories in tar order plus the large
//! libraries.

use super::layer::DataFile;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Small files per package directory.
const MODULES_PER_PACKAGE: usize = 40;
/// Every this-many-th package is imported at start-up (a few % of the files).
const STARTUP_EVERY: usize = 25;
/// Size of the big data files that fill the rest of the budget.
const BIG_FILE: usize = 16 * MIB;
/// Where the modules live.
const PACKAGES_DIR: &str = "usr/lib/python3";
/// Where the libraries live.
const LIBS_DIR: &str = "usr/lib/x86_64-linux-gnu";
/// The large libraries read at start-up: (name, size); placed at a quarter, a half and
/// three quarters of the library directory.
const CORE_LIBS: [(&str, usize); 3] = [
    ("libinterp.so.3", 6 * MIB),
    ("libcrypto.so.3", 4 * MIB),
    ("libffi.so.8", 2 * MIB),
];

/// The base layer's files (in tar order) and what the interpreter reads from them.
#[derive(Debug, Clone)]
pub struct InterpBase {
    pub files: Vec<DataFile>,
    /// Package directories read whole at start-up, in tar order (no leading `/`).
    pub startup_dirs: Vec<String>,
    /// Large libraries read at start-up (no leading `/`).
    pub startup_libs: Vec<String>,
}

impl InterpBase {
    /// About `mib` MiB of content in about `files` files: the modules (a few KiB each,
    /// half text) take what `files` needs, libraries an eighth of the budget, and 16 MiB
    /// files of random bytes the rest.
    pub fn new(mib: usize, files: usize) -> Self {
        let budget = mib.max(16) * MIB;
        let packages = (files / MODULES_PER_PACKAGE).max(1);
        let modules = module_dirs(packages);
        let module_bytes: usize = modules.iter().flatten().map(|f| f.size).sum();
        let libs = libraries(budget / 8);
        let lib_bytes: usize = libs.iter().map(|f| f.size).sum();
        let big_count = budget.saturating_sub(module_bytes + lib_bytes) / BIG_FILE;

        // Big files after every `stride`-th package, so unread data lies between packages.
        let stride = (packages / big_count.max(1)).max(1);
        let mut out = Vec::new();
        let mut big = 0;
        let mut startup_dirs = Vec::new();
        for (p, dir) in modules.into_iter().enumerate() {
            if p % STARTUP_EVERY == STARTUP_EVERY / 2 {
                startup_dirs.push(package_dir(p));
            }
            out.extend(dir);
            if p % stride == stride - 1 && big < big_count {
                let path = format!("{}_data/blob.bin", package_dir(p));
                out.push(DataFile::new(&path, BIG_FILE, 2));
                big += 1;
            }
        }
        out.extend(
            (big..big_count)
                .map(|i| DataFile::new(&format!("usr/share/interp/blob{i:03}.bin"), BIG_FILE, 2)),
        );
        let startup_libs = CORE_LIBS
            .iter()
            .map(|(name, _)| format!("{LIBS_DIR}/{name}"))
            .collect();
        out.extend(libs);
        Self {
            files: out,
            startup_dirs,
            startup_libs,
        }
    }

    /// The files read at start-up, in reading order (no leading `/`).
    pub fn startup_files(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .startup_dirs
            .iter()
            .flat_map(|dir| {
                let prefix = format!("{dir}/");
                self.files
                    .iter()
                    .filter(move |f| f.path.starts_with(&prefix))
                    .map(|f| f.path.clone())
            })
            .collect();
        paths.extend(self.startup_libs.iter().cloned());
        paths
    }

    /// The shell words that read the start-up set: one glob per directory (the shell
    /// sorts its matches, which is tar order here), then the libraries.
    pub fn startup_words(&self) -> String {
        let dirs = self.startup_dirs.iter().map(|d| format!("/{d}/*"));
        let libs = self.startup_libs.iter().map(|l| format!("/{l}"));
        dirs.chain(libs).collect::<Vec<_>>().join(" ")
    }

    /// Size of the file at `path`, if the layer has it.
    pub fn size_of(&self, path: &str) -> Option<usize> {
        self.files.iter().find(|f| f.path == path).map(|f| f.size)
    }
}

fn package_dir(p: usize) -> String {
    format!("{PACKAGES_DIR}/pkg{p:04}")
}

/// `packages` directories of modules from 256 B to 8 KiB, half of the blocks text.
fn module_dirs(packages: usize) -> Vec<Vec<DataFile>> {
    (0..packages)
        .map(|p| {
            (0..MODULES_PER_PACKAGE)
                .map(|m| {
                    let i = p * MODULES_PER_PACKAGE + m;
                    let size = 256 + (i * 7919) % (8 * KIB);
                    DataFile::new(&format!("{}/mod{m:02}.py", package_dir(p)), size, 50)
                })
                .collect()
        })
        .collect()
}

/// Libraries of 64 KiB to 1 MiB adding up to about `bytes`, with [`CORE_LIBS`] among them.
fn libraries(bytes: usize) -> Vec<DataFile> {
    let core: usize = CORE_LIBS.iter().map(|(_, size)| size).sum();
    let count = bytes.saturating_sub(core) / (576 * KIB);
    let mut libs: Vec<DataFile> = (0..count)
        .map(|i| {
            let size = 64 * KIB + (i * 104_729) % MIB;
            DataFile::new(&format!("{LIBS_DIR}/lib{i:04}.so"), size, 20)
        })
        .collect();
    for (k, (name, size)) in CORE_LIBS.iter().enumerate() {
        let at = (libs.len() * (k + 1) / (CORE_LIBS.len() + 1)).min(libs.len());
        libs.insert(at, DataFile::new(&format!("{LIBS_DIR}/{name}"), *size, 20));
    }
    libs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_has_the_budget_and_a_few_percent_startup() {
        let base = InterpBase::new(400, 24_000);
        let total: usize = base.files.iter().map(|f| f.size).sum();
        assert!(total > 380 * MIB && total < 420 * MIB, "{total}");
        assert!(base.files.len() > 24_000, "{}", base.files.len());
        let startup = base.startup_files();
        let share = startup.len() * 100 / base.files.len();
        assert!(
            (2..=6).contains(&share),
            "{share}% of the files at start-up"
        );
        for path in &startup {
            assert!(base.size_of(path).is_some(), "{path} is not in the layer");
        }
    }

    #[test]
    fn startup_dirs_come_in_tar_order_and_big_files_lie_between_packages() {
        let base = InterpBase::new(200, 8_000);
        let position = |path: &str| base.files.iter().position(|f| f.path == path).unwrap();
        let firsts: Vec<usize> = base
            .startup_dirs
            .iter()
            .map(|d| position(&format!("{d}/mod00.py")))
            .collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
        let first_big = base.files.iter().position(|f| f.size == BIG_FILE).unwrap();
        let last_module = base
            .files
            .iter()
            .rposition(|f| f.path.ends_with(".py"))
            .unwrap();
        assert!(first_big < last_module, "big files only after the modules");
        assert_eq!(
            base.startup_words().matches('*').count(),
            base.startup_dirs.len()
        );
    }
}
