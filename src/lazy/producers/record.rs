//! Recording which files a workload opens at start, per image, so that
//! `estargz-convert --record-from` can put exactly those files first in an optimized image.
//!
//! With `[record] enable = true`, each lazily mounted layer appends, for every regular
//! file first opened within `window` after the mount, one JSON line
//! `{"path", "manifestDigest", "layerIndex"}` (ctr-remote's record format) to
//! `<dir>/<manifest digest hex>.jsonl`. The manifest and the layer's index in it are
//! looked up in the registry at mount time.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use estargz::{EntryId, Index};
use serde::Deserialize;

pub use crate::lazy::source::image_manifest::LayerPlace;

/// Access recording settings (the `[record]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RecordConfig {
    /// Record the files each image opens after its layers are mounted. Default false.
    pub enable: bool,
    /// Directory of the record files; unset means `<root>/record`.
    pub dir: Option<PathBuf>,
    /// How long after a layer's mount opened files are recorded, in seconds (fractions
    /// allowed). Default 60.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub window: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enable: false,
            dir: None,
            window: Duration::from_secs(60),
        }
    }
}

/// Records the files of one mounted layer opened within the window.
pub struct Recorder {
    path: PathBuf,
    place: LayerPlace,
    until: Instant,
    seen: Mutex<HashSet<EntryId>>,
}

impl Recorder {
    /// Records into `<dir>/<manifest hex>.jsonl` until `window` from now.
    pub fn new(dir: &std::path::Path, place: LayerPlace, window: Duration) -> Recorder {
        Recorder {
            path: dir.join(format!("{}.jsonl", place.manifest.hex())),
            place,
            until: Instant::now() + window,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Notes that `file` was opened; the first open of each file in the window is written.
    pub fn opened(&self, index: &Index, file: EntryId) {
        if Instant::now() > self.until {
            return;
        }
        let first = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(file);
        let Some(entry) = index.entry(file).filter(|_| first) else {
            return;
        };
        let line = serde_json::json!({
            "path": entry.path,
            "manifestDigest": self.place.manifest.to_string(),
            "layerIndex": self.place.layer_index,
        });
        if let Err(error) = self.append(&format!("{line}\n")) {
            tracing::warn!(path = %self.path.display(), %error, "record opened file");
        }
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            crate::private_fs::create_dir_all(dir)?;
        }
        let mut file = crate::private_fs::append_file(&self.path)?;
        // One write per line: concurrent layers of an image never interleave a line.
        file.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz::Digest;

    #[test]
    fn records_first_opens_within_the_window_as_ctr_remote_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = estargz::testutil::TarBuilder::new()
            .file("bin/sh", b"#!")
            .file("etc/hosts", b"localhost")
            .finish();
        let mut blob = Vec::new();
        estargz::build(&tar[..], &mut blob, &estargz::WriterOptions::default()).expect("build");
        let reader = estargz::Reader::open(blob.as_slice(), None).expect("open");
        let index = reader.index();
        let place = LayerPlace {
            manifest: Digest::sha256(b"manifest"),
            layer_index: 2,
        };
        let recorder = Recorder::new(dir.path(), place, Duration::from_secs(60));
        let sh = index.lookup("bin/sh").expect("sh");
        let hosts = index.lookup("etc/hosts").expect("hosts");
        for file in [sh, hosts, sh] {
            recorder.opened(index, file);
        }
        let text =
            std::fs::read_to_string(dir.path().join(format!("{}.jsonl", place.manifest.hex())))
                .expect("record file");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["path"], "bin/sh");
        assert_eq!(lines[1]["path"], "etc/hosts");
        assert_eq!(lines[1]["manifestDigest"], place.manifest.to_string());
        assert_eq!(lines[1]["layerIndex"], 2);

        let closed = Recorder::new(dir.path(), place, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        closed.opened(index, hosts);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(format!("{}.jsonl", place.manifest.hex())))
                .expect("record file")
                .lines()
                .count(),
            2,
            "nothing after the window"
        );
    }
}
