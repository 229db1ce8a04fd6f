//! The startup scan of the cache directory, run once on a background thread: lists the
//! chunk files and the `files/` passthrough copies a previous run left (size and last
//! use from their metadata) and deletes temp files (`*.tmp-<pid>-<seq>`) that a killed
//! daemon left half-written, there and among the saved TOCs (`tocs/`).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::limit::Found;
use super::{CacheKey, DiskName, FILES_DIR, TOCS_DIR};

/// What a scanned directory holds besides temp files.
#[derive(Clone, Copy)]
enum Contents {
    /// Chunk files (files whose names are no chunk key's are left alone, not counted).
    Chunks,
    /// Passthrough copies.
    Files,
    /// Saved TOCs: not counted against the disk limit, only their temps are swept.
    Tocs,
}

/// What the scan found.
#[derive(Default)]
pub(super) struct Scanned {
    /// Chunk files and passthrough copies.
    pub(super) files: Vec<Found<DiskName>>,
    /// Temp files deleted.
    pub(super) temps_removed: usize,
}

/// Scans `dir` and its `files/`. Temp files of another process, or of this one but
/// older than `started` (a previous daemon that had the same pid), are deleted; this
/// process's own temp files are writes in progress and are left alone.
pub(super) fn scan(dir: &Path, started: SystemTime) -> Scanned {
    let mut scanned = Scanned::default();
    scan_dir(dir, Contents::Chunks, started, &mut scanned);
    scan_dir(&dir.join(FILES_DIR), Contents::Files, started, &mut scanned);
    scan_dir(&dir.join(TOCS_DIR), Contents::Tocs, started, &mut scanned);
    scanned
}

/// Scans one directory holding `contents`.
fn scan_dir(dir: &Path, contents: Contents, started: SystemTime, scanned: &mut Scanned) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "scan chunk cache directory");
            return;
        }
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let used = last_use(&meta);
        match temp_owner(name) {
            Some(pid) if pid != std::process::id() || is_older(used, started) => {
                match fs::remove_file(entry.path()) {
                    Ok(()) => scanned.temps_removed += 1,
                    Err(error) => {
                        tracing::debug!(file = name, %error, "remove stale cache temp file");
                    }
                }
            }
            Some(_) => {}
            None => {
                let name = match contents {
                    Contents::Files => Some(DiskName::File(name.into())),
                    Contents::Chunks => CacheKey::from_file_name(name).map(DiskName::Chunk),
                    Contents::Tocs => None,
                };
                if let Some(name) = name {
                    scanned.files.push(Found {
                        name,
                        len: meta.len(),
                        used,
                    });
                }
            }
        }
    }
}

/// The later of the file's access and modification times.
fn last_use(meta: &fs::Metadata) -> SystemTime {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    meta.accessed()
        .map_or(modified, |accessed| accessed.max(modified))
}

/// Whether a file last used at `used` predates `started` by more than the file system's
/// coarse clock could explain: a temp file this process created just after `started` can
/// carry a timestamp a few milliseconds before it, and is a write in progress.
fn is_older(used: SystemTime, started: SystemTime) -> bool {
    const COARSE_CLOCK: Duration = Duration::from_secs(2);
    used.checked_add(COARSE_CLOCK).is_some_and(|t| t < started)
}

/// The pid in a temp file name `<name>.tmp-<pid>-<seq>`, None for any other name.
pub(super) fn temp_owner(name: &str) -> Option<u32> {
    let (_, suffix) = name.rsplit_once(".tmp-")?;
    let (pid, seq) = suffix.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seq) {
        return None;
    }
    pid.parse().ok().filter(|_| digits(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz::Digest;
    use std::time::Duration;

    #[test]
    fn temp_names() {
        let cases: &[(&str, &str, Option<u32>)] = &[
            ("chunk temp", "sha256-ab.tmp-123-4", Some(123)),
            ("passthrough temp", "blob-ab-7.tmp-9-0", Some(9)),
            ("chunk", "sha256-ab", None),
            ("no seq", "sha256-ab.tmp-123", None),
            ("letters", "sha256-ab.tmp-12x-4", None),
            ("sign", "sha256-ab.tmp-+1-4", None),
            ("empty seq", "a.tmp-1-", None),
        ];
        for (name, file, want) in cases {
            assert_eq!(temp_owner(file), *want, "{name}");
        }
    }

    #[test]
    fn lists_files_and_removes_stale_temps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path().join(FILES_DIR);
        fs::create_dir(&files).expect("files dir");
        let tocs = dir.path().join(TOCS_DIR);
        fs::create_dir(&tocs).expect("tocs dir");
        let own = std::process::id();
        let other = own.wrapping_add(1);
        let chunk = CacheKey::Content(Digest::from_bytes([0xaa; 32]));
        for (path, len) in [
            (dir.path().join(chunk.file_name()), 10),
            (dir.path().join("not-a-chunk"), 10),
            (files.join("sha256-bb"), 5000),
            (dir.path().join(format!("sha256-cc.tmp-{other}-0")), 3),
            (files.join(format!("sha256-dd.tmp-{other}-1")), 3),
            (dir.path().join(format!("sha256-ee.tmp-{own}-2")), 3),
            (tocs.join("ff"), 7),
            (tocs.join(format!("ff.tmp-{other}-0")), 3),
        ] {
            fs::write(path, vec![0u8; len]).expect("write");
        }
        fs::create_dir(dir.path().join("unrelated")).expect("subdir");

        let started = SystemTime::now() - Duration::from_secs(3600);
        let scanned = scan(dir.path(), started);
        let mut names: Vec<(String, u64)> = scanned
            .files
            .iter()
            .map(|f| (f.name.path(), f.len))
            .collect();
        names.sort();
        let want = [
            ("files/sha256-bb".to_owned(), 5000),
            (chunk.file_name(), 10),
        ];
        assert_eq!(names, want, "saved TOCs are not counted");
        assert_eq!(scanned.temps_removed, 3);
        assert!(tocs.join("ff").exists(), "a saved TOC is kept");
        assert!(
            dir.path().join(format!("sha256-ee.tmp-{own}-2")).exists(),
            "a write of this process in progress"
        );

        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(scan(dir.path(), later).temps_removed, 1, "same pid, older");
    }
}
